"""Admin statements cannot hurt the data port (issue 12, admin isolation), against a real proxy and
MariaDB: while an admin client runs heavy SELECTs over the stats tables back to back and one-second
recursive CTEs, the data port's SELECT 1 keeps its p99 under 10 ms; unsafe SQLite functions are
refused and a 200 MB randomblob costs the proxy no memory.

The admin load runs in a separate process at the lowest CPU priority: PyMySQL fetching 10,000 rows
in this process would hold its GIL and delay the measuring thread, and on this shared 2-core
machine the load generator's own CPU would be charged to the proxy (an operator's admin client runs
on another machine, not on the proxy's cores)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pymysql
import pytest

from .test_admin import admin_cli

DIGESTS = 10_000
WINDOWS = 4

ADMIN_LOAD = textwrap.dedent(
    """
    import os, sys, time, pymysql
    os.nice(19)
    port, user, password, seconds = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
    c = pymysql.connect(host="127.0.0.1", port=port, user=user, password=password, read_timeout=30)
    cur = c.cursor()
    heavy = ctes = rows = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(3):
            cur.execute("SELECT * FROM stats_mysql_query_digest ORDER BY digest_text DESC")
            rows += len(cur.fetchall())
            cur.execute("SELECT hostgroup, count(*), sum(count_star) FROM stats.stats_mysql_query_digest GROUP BY hostgroup")
            heavy += 2
        try:
            cur.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
        except pymysql.MySQLError as e:
            assert e.args[0] == 3024, e
            ctes += 1
    print(heavy, ctes, rows)
    """
)


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _select_1_latencies(conn: Any, seconds: float) -> list[float]:
    out = []
    end = time.monotonic() + seconds
    with conn.cursor() as cur:
        while time.monotonic() < end:
            t = time.perf_counter()
            cur.execute("SELECT 1")
            cur.fetchall()
            out.append(time.perf_counter() - t)
            time.sleep(0.001)  # an application's pace, not a benchmark's
    return out


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_admin_statements_do_not_raise_the_data_ports_p99(cluster, start_proxy):
    """Windows with the admin load running and windows with it stopped (SIGSTOP, after its statement
    in flight ended), interleaved, so both see the same machine. On a quiet machine the p99 with the
    admin load must stay under 10 ms. This 2-core machine is shared: when the windows *without* admin
    load already have a p99 above 5 ms, the machine, not the proxy, sets the latency, and the test
    asserts what the admin load adds instead: at most 5 ms to the p99. Beyond 4 runnable tasks per CPU
    (other test suites on the same machine) no latency can be measured, and the test says so."""
    load_per_cpu = os.getloadavg()[0] / (os.cpu_count() or 1)
    if load_per_cpu > 4:
        pytest.skip(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: too loaded to measure a 10 ms p99")
    proxy = start_proxy(admin=True, proxy_settings={"log_level": "warning"}, extra_toml="[stats]\nmax_digests = 20000\n")
    with proxy.connect() as c, c.cursor() as cur:
        for i in range(DIGESTS):  # distinct digests: the digest table the admin load reads
            cur.execute(f"SELECT 1 AS c{i}")
    assert int(admin_cli(proxy, "SELECT count(*) FROM stats_mysql_query_digest").stdout.split()[-1]) >= DIGESTS

    on: list[float] = []
    off: list[float] = []
    with proxy.connect() as data:
        load = subprocess.Popen(
            [sys.executable, "-c", ADMIN_LOAD, str(proxy.admin_port), proxy.admin_user, proxy.admin_password, str(WINDOWS * 4.0)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            time.sleep(0.5)  # the load is running
            for _ in range(WINDOWS):
                on += _select_1_latencies(data, 1.5)
                os.kill(load.pid, signal.SIGSTOP)
                time.sleep(1.2)  # the statement in flight ends (CTEs stop at 1 s)
                off += _select_1_latencies(data, 1.0)
                os.kill(load.pid, signal.SIGCONT)
            out, err = load.communicate(timeout=60)
        finally:
            if load.poll() is None:
                os.kill(load.pid, signal.SIGCONT)
                load.kill()
    assert load.returncode == 0, err.decode()
    heavy, ctes, rows = map(int, out.split())
    # the load really ran: heavy statements back to back, and one-second CTEs stopped at the timeout
    assert heavy >= 6 and ctes >= 2 and rows >= 3 * DIGESTS, (heavy, ctes, rows)
    p99_on, p99_off = _p(on, 0.99), _p(off, 0.99)
    print(
        f"SELECT 1 through the proxy, {WINDOWS} interleaved windows: with admin load ({heavy} heavy stats SELECTs, {ctes} "
        f"one-second CTEs, {rows} rows) p50 {_p(on, 0.5) * 1000:.2f} ms p99 {p99_on * 1000:.2f} ms max {max(on) * 1000:.1f} ms "
        f"over {len(on)}; without p50 {_p(off, 0.5) * 1000:.2f} ms p99 {p99_off * 1000:.2f} ms over {len(off)}"
    )
    assert len(on) >= 500 and len(off) >= 300
    load_per_cpu = os.getloadavg()[0] / (os.cpu_count() or 1)
    if load_per_cpu > 4 and p99_on >= 0.010:
        pytest.skip(f"load average rose to {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs during the measurement: too loaded to measure a 10 ms p99")
    if p99_off <= 0.005:
        assert p99_on < 0.010, f"SELECT 1 p99 {p99_on * 1000:.1f} ms while admin statements ran (limit 10 ms)"
    else:  # a loaded machine: what the admin load adds
        assert p99_on - p99_off < 0.005, f"admin statements raised SELECT 1 p99 from {p99_off * 1000:.1f} to {p99_on * 1000:.1f} ms"


def test_unsafe_sqlite_functions_are_refused_and_cost_no_memory(cluster, start_proxy):
    proxy = start_proxy(admin=True)
    with proxy.admin_connect() as c, c.cursor() as cur:
        cur.execute("SELECT 1")
        before = _rss_kib(proxy.pid)
        with pytest.raises(pymysql.MySQLError) as e:
            cur.execute("SELECT randomblob(200000000)")
        assert e.value.args[0] == 1301 and "limit of 16777216 bytes" in e.value.args[1]
        with pytest.raises(pymysql.MySQLError) as e:
            cur.execute("SELECT length(zeroblob(200000000))")
        assert e.value.args[0] == 1301
        assert _rss_kib(proxy.pid) - before < 20 * 1024, "the proxy's RSS grew by more than 20 MiB"
    p = admin_cli(proxy, "SELECT fts3_tokenizer('simple')")
    assert p.returncode == 1
    assert "ERROR 1305 (42000)" in p.stderr.decode() and "FUNCTION fts3_tokenizer is not available on the admin port" in p.stderr.decode()
    p = admin_cli(proxy, "SELECT load_extension('/lib/x86_64-linux-gnu/libc.so.6')")
    assert "ERROR 1305 (42000)" in p.stderr.decode()
