"""A short protocol fuzz run against a real proxy and MariaDB (the long run is bench/fuzz_proxy.py):
20,000 random and mutated packets on the data port before and after authentication and on the admin
port, plus the seed corpus of framing abuse. The proxy must not crash or log a traceback, a normal
client must keep working throughout, and its file descriptors and memory must come back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pymysql
import pytest

from .wirefuzz import FUZZ_DB_SQL, FUZZ_USER, Endpoint, Fuzzer, normal_client_works, open_fds, rss_mib, tracebacks

PACKETS = 20_000
WARMUP = 5_000
SECONDS = 50


@pytest.fixture(scope="module")
def fuzz_account(cluster: Any) -> None:
    cluster.primary.sql(FUZZ_DB_SQL)
    cluster.wait_replicated()


def test_fuzz_20000_packets(cluster, start_proxy, fuzz_account):
    app_user = {"username": cluster.app_user, "password": cluster.app_password, "default_hostgroup": 0}
    proxy = start_proxy(
        users=[app_user, FUZZ_USER], admin=True,
        proxy_settings={"handshake_timeout": 1.0, "log_level": "info"},
        extra_toml="[pool]\nidle_timeout = 2\n",
    )  # fmt: skip
    data = Endpoint("127.0.0.1", proxy.port, cluster.app_user, cluster.app_password)
    admin = Endpoint("127.0.0.1", proxy.admin_port, proxy.admin_user, proxy.admin_password)
    fuzz = Endpoint("127.0.0.1", proxy.port, "fuzz", "fuzz_pw")
    normal_client_works(data, admin)
    fuzzer = Fuzzer(fuzz, admin, seed=12)
    # Warm-up: the proxy's bounded caches (digest table, classifier caches) fill as new statement
    # texts arrive; what they take is by design. The baseline is taken after a first fuzz phase.
    asyncio.run(fuzzer.run(WARMUP, time.monotonic() + SECONDS / 4))
    time.sleep(3)  # pooled connections of the warm-up idle out, handshakes time out
    fds_before, rss_before = open_fds(proxy.pid), rss_mib(proxy.pid)
    fuzzer.stats = type(fuzzer.stats)()

    checks: list[tuple[float, float]] = []

    async def progress(stats: Any) -> None:
        if stats.packets >= 2000 * (len(checks) + 1):
            checks.append(await asyncio.to_thread(normal_client_works, data, admin))

    async def main() -> Any:
        return await fuzzer.run(PACKETS, time.monotonic() + SECONDS, on_progress=progress)

    started = time.monotonic()
    stats = asyncio.run(main())
    took = time.monotonic() - started
    assert proxy.process.poll() is None, f"the proxy exited: {proxy.log_tail()}"
    checks.append(normal_client_works(data, admin))
    print(f"fuzz: {stats.packets} packets, {stats.connections} connections in {took:.1f}s, by target {stats.by_target}; "
          f"normal client checks {len(checks)} (data port max {max(c[0] for c in checks) * 1000:.0f} ms, "
          f"admin port max {max(c[1] for c in checks) * 1000:.0f} ms)")  # fmt: skip
    assert stats.packets >= PACKETS or took >= SECONDS - 1
    assert stats.packets >= 5000 and all(stats.by_target.get(t, 0) > 500 for t in ("pre", "post", "admin")), stats
    assert stats.logins_failed < stats.connections / 10, stats

    deadline = time.monotonic() + 15  # handshake timeouts, idle pooled connections
    while open_fds(proxy.pid) > fds_before and time.monotonic() < deadline:
        time.sleep(0.25)
    assert open_fds(proxy.pid) <= fds_before, f"file descriptors {fds_before} before, {open_fds(proxy.pid)} after"
    assert rss_mib(proxy.pid) - rss_before < 32, f"RSS {rss_before:.0f} MiB before, {rss_mib(proxy.pid):.0f} MiB after"
    with pymysql.connect(host="127.0.0.1", port=proxy.admin_port, user=proxy.admin_user, password=proxy.admin_password) as c, c.cursor() as cur:
        cur.execute("SHOW MYSQL STATUS")
        status = dict(cur.fetchall())
    print(f"RSS {rss_before:.1f} -> {rss_mib(proxy.pid):.1f} MiB, fds {fds_before} -> {open_fds(proxy.pid)}, "
          f"digests {status['Query_digest_entries']}, classifier misses {status['Classifier_cache_misses']}")
    bad = tracebacks(proxy.log_path.read_text(errors="replace"))
    assert not bad, "\n".join(bad[:10])
