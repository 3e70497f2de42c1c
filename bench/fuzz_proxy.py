"""Long protocol fuzz run: 1,000,000 random and mutated packets against a real running proxy.

    .venv/bin/python bench/fuzz_proxy.py [--packets 1000000] [--max-seconds 7200] [--seed 1]
                                         [--json out.json]

It starts a throw-away MariaDB (a primary and one replica, proxy.sandbox) and rwproxy with the admin
port, creates a SELECT-only account for the fuzzer (a fuzzed COM_REFRESH / COM_SHUTDOWN / KILL is
refused by the server itself), then sends packets with tests/fuzz/wirefuzz.py: the data port before
and after authentication and the admin port, including the fixed seed corpus of truncated /
oversized / mis-sequenced headers. A warm-up phase first fills the proxy's bounded caches (digest
table, classifier caches: memory they take by design); then the baseline is taken and the main run
starts. Checks, printed at the end (exit status 1 when one fails):

* 0 crashes: the proxy process is alive at the end;
* 0 tracebacks (or "unexpected error" lines) in the proxy's log;
* a normal client (PyMySQL: login + SELECT 1 on the data port, a SELECT on the admin port) works
  every `--check-every` packets, from a separate thread; its worst times are reported;
* RSS back within 32 MiB of the baseline, and open file descriptors back to the baseline, once the
  fuzzer's connections are closed and pooled backend connections idled out.

Everything talks to 127.0.0.1 and stops by itself (packet count or --max-seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.sandbox import ProxyProcess, free_port, render_proxy_config, start_cluster, wait_for_port  # noqa: E402
from tests.fuzz.wirefuzz import (  # noqa: E402
    FUZZ_DB_SQL,
    FUZZ_USER,
    Endpoint,
    Fuzzer,
    FuzzStats,
    normal_client_works,
    open_fds,
    rss_mib,
    tracebacks,
)


class Checker(threading.Thread):
    """A normal client, every time it is poked, in its own thread (the fuzzer's loop never waits on it)."""

    def __init__(self, data: Endpoint, admin: Endpoint) -> None:
        super().__init__(daemon=True)
        self.data, self.admin = data, admin
        self.poke = threading.Event()
        self.stop = False
        self.times: list[tuple[float, float]] = []
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop:
            if not self.poke.wait(0.5):
                continue
            self.poke.clear()
            try:
                self.times.append(normal_client_works(self.data, self.admin, timeout=30))
            except Exception as e:  # noqa: BLE001 - recorded, reported, fails the run
                self.failures.append(f"{time.strftime('%H:%M:%S')} {type(e).__name__}: {e}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--warmup", type=int, default=50_000)
    ap.add_argument("--max-seconds", type=float, default=7200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--check-every", type=int, default=10_000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = ap.parse_args()
    logging.getLogger("asyncio").setLevel(logging.ERROR)  # the fuzzer writes to sockets the proxy closed: expected

    work = Path(tempfile.mkdtemp(prefix="rwproxy-fuzz-"))
    print(f"fuzz: working directory {work}", flush=True)
    cluster = start_cluster(work / "mariadb", replicas=1)
    proxy = None
    try:
        cluster.primary.sql(FUZZ_DB_SQL)
        cluster.wait_replicated()
        port, admin_port = free_port(), free_port()
        app_user = {"username": cluster.app_user, "password": cluster.app_password, "default_hostgroup": 0}
        (work / "admin").mkdir()
        config = work / "proxy.toml"
        config.write_text(render_proxy_config(
            cluster, port, users=[app_user, FUZZ_USER], proxy_settings={"handshake_timeout": 2.0, "log_level": "info"},
            admin_port=admin_port, admin_settings={"data_dir": str(work / "admin")}, extra_toml="[pool]\nidle_timeout = 2\n",
        ))  # fmt: skip
        proxy = ProxyProcess(config, "127.0.0.1", port, log_path=work / "proxy.log")
        proxy.start(timeout=60)
        wait_for_port("127.0.0.1", admin_port, 30)
        data = Endpoint("127.0.0.1", port, cluster.app_user, cluster.app_password)
        admin = Endpoint("127.0.0.1", admin_port, "admin", "admin")
        fuzz = Endpoint("127.0.0.1", port, "fuzz", "fuzz_pw")
        normal_client_works(data, admin)
        fuzzer = Fuzzer(fuzz, admin, seed=args.seed)
        deadline = time.monotonic() + args.max_seconds
        started = time.monotonic()

        print(f"fuzz: warm-up {args.warmup} packets", flush=True)
        asyncio.run(fuzzer.run(args.warmup, deadline, concurrency=args.concurrency))
        time.sleep(5)  # handshakes time out, pooled connections idle out
        fds_before, rss_before = open_fds(proxy.pid), rss_mib(proxy.pid)
        print(f"fuzz: baseline RSS {rss_before:.1f} MiB, {fds_before} fds; main run {args.packets} packets", flush=True)
        fuzzer.stats = FuzzStats()
        checker = Checker(data, admin)
        checker.start()
        last_report = [time.monotonic()]

        async def progress(stats: FuzzStats) -> None:
            if stats.packets >= args.check_every * (len(checker.times) + len(checker.failures) + 1) and not checker.poke.is_set():
                checker.poke.set()
            if time.monotonic() - last_report[0] > 60:
                last_report[0] = time.monotonic()
                print(f"fuzz: {stats.packets} packets, {stats.connections} connections, {time.monotonic() - started:.0f}s, "
                      f"RSS {rss_mib(proxy.pid):.1f} MiB, fds {open_fds(proxy.pid)}", flush=True)  # fmt: skip

        t_main = time.monotonic()
        stats = asyncio.run(fuzzer.run(args.packets, deadline, concurrency=args.concurrency, on_progress=progress))
        main_seconds = time.monotonic() - t_main
        checker.poke.set()
        time.sleep(2)
        checker.stop = True
        checker.join(60)

        alive = proxy.process.poll() is None
        settle = time.monotonic() + 30
        while alive and open_fds(proxy.pid) > fds_before and time.monotonic() < settle:
            time.sleep(0.5)
        fds_after = open_fds(proxy.pid) if alive else -1
        rss_after = rss_mib(proxy.pid) if alive else -1.0
        bad = tracebacks((work / "proxy.log").read_text(errors="replace"))
        data_worst = max((t[0] for t in checker.times), default=0.0)
        admin_worst = max((t[1] for t in checker.times), default=0.0)
        result = {
            "packets": stats.packets,
            "by_target": stats.by_target,
            "connections": stats.connections,
            "bytes_sent": stats.bytes_sent,
            "seconds": round(main_seconds, 1),
            "packets_per_second": round(stats.packets / main_seconds) if main_seconds else 0,
            "warmup_packets": args.warmup,
            "seed": args.seed,
            "crashed": not alive,
            "tracebacks": len(bad),
            "normal_client_checks": len(checker.times),
            "normal_client_failures": checker.failures,
            "normal_client_worst_data_ms": round(data_worst * 1000),
            "normal_client_worst_admin_ms": round(admin_worst * 1000),
            "rss_mib_before": round(rss_before, 1),
            "rss_mib_after": round(rss_after, 1),
            "fds_before": fds_before,
            "fds_after": fds_after,
        }
        print(json.dumps(result, indent=2))
        if bad:
            print("tracebacks:\n" + "\n".join(bad[:20]))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        ok = (
            alive and not bad and not checker.failures and checker.times
            and rss_after - rss_before < 32 and fds_after <= fds_before and stats.packets >= args.packets
        )
        print("fuzz: PASS" if ok else "fuzz: FAIL")
        return 0 if ok else 1
    finally:
        if proxy is not None:
            proxy.stop(timeout=10)
        cluster.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
