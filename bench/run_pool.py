"""Pooling benchmark: many client connections, few server connections; storms; silent clients.

Theory of operation: our own sandbox (proxy.sandbox.start_cluster: a MariaDB primary and two
replicas), one small table, and asyncio + uvloop clients (asyncmy) in this process. A sampler thread
reads every server's own counters every 100 ms over one persistent connection per server (as the
`monitor` user, which has PROCESS): `Threads_connected`, `Connections` (connection attempts since
start) and the information_schema.PROCESSLIST rows of user `app` (what the clients or the proxy
hold). Three phases, each against a proxy of its own started cold (empty pools):

    load    N clients (default 1,000) connect, wait until all are connected, then each runs M
            (default 20) autocommit transactions, half point selects and half single-row updates.
            Once straight to the primary (the baseline: every client is a server thread) and once
            through rwproxy (primary in hostgroup 0, replicas in hostgroup 1, every server capped at
            `max_connections`, default 20).
    storm   N clients (default 2,000) connect within one second (client i starts at i/N s) and each
            runs one point select, then disconnects: errors, the servers' connection peaks, connection
            attempts per second (Connections deltas, and new `app` ids in PROCESSLIST), p50/p99 client
            time (connect + query). Then the same with all N clients at once (--storm-windows 1,0).
    idle    N clients (default 500) connect, run one query and go silent; [proxy]
            client_idle_timeout = 2: when they are closed (seen by the clients: the proxy's ERR 4031,
            then EOF) and when the pools are back to [pool] min_idle on every server.
    sysbench sysbench oltp_read_write in its default mode (BEGIN/COMMIT, server-side prepared
            statements: --db-ps-mode=auto) with many threads (default 64), straight to the primary
            (the baseline) and through a proxy that caps every server at few connections (default 8),
            interleaved over rounds: QPS and p95 ratios proxy/direct, sysbench's errors by code,
            reconnects, and the most `app` connections (and Prepared_stmt_count) each server had.
            Written to its own section (markers `pooling-sysbench`), so it can run alone.

Nothing is hidden: every client error is counted by kind and shown; a phase that could not run says
why. Every process started here is stopped on exit, also on Ctrl-C or SIGTERM. Reuses
bench/run_sysbench.py's helpers (process handling, machine facts, section writing).

    .venv/bin/python bench/run_pool.py                  # all phases, writes docs/benchmarks.md
    .venv/bin/python bench/run_pool.py --clients 200 --storm 500 --idle-clients 100 --out /tmp/pool.md
    .venv/bin/python bench/run_pool.py --phases sysbench --sb-time 30 --sb-rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import os
import random
import re
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncmy
import pymysql
import run_split as split  # its measuring helpers (sysbench's ignored error codes, other processes' CPU)
import run_sysbench as rs  # bench/ is not a package: imported from its own directory (sys.path above)
import uvloop

from proxy.sandbox import (
    default_replication_hostgroups,
    default_servers,
    render_proxy_config,
)

BEGIN, END = "<!-- BEGIN pooling -->", "<!-- END pooling -->"
SB_BEGIN, SB_END = "<!-- BEGIN pooling-sysbench -->", "<!-- END pooling-sysbench -->"
ASYNCMY_VERSION = importlib.metadata.version("asyncmy")
DB, TABLE, ROWS = "sbtest", "pool_t", 10_000
PHASES = ("load", "storm", "idle", "sysbench")
CLIENT_PHASES = ("load", "storm", "idle")  # the asyncmy phases, reported in the `pooling` section


# --------------------------------------------------------------------------- the servers' own view


@dataclass
class Sample:
    t: float  # monotonic
    threads: dict[str, int]  # Threads_connected
    attempts: dict[str, int]  # Connections (cumulative connection attempts)
    app: dict[str, int]  # PROCESSLIST rows of user app
    opened: dict[str, int]  # distinct `app` connection ids seen so far (cumulative)
    prepared: dict[str, int]  # Prepared_stmt_count (server-side prepared statements, all sessions)


class Sampler(threading.Thread):
    """Every `interval` s, each server's Threads_connected, Connections, `app` PROCESSLIST rows and
    Prepared_stmt_count."""

    QUERY = (
        "SELECT (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'THREADS_CONNECTED'), "
        "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'CONNECTIONS'), "
        "(SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app'), "
        "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'PREPARED_STMT_COUNT')"
    )

    def __init__(self, cluster: Any, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.conns = {
            s.name: pymysql.connect(host=s.host, port=s.port, user=cluster.monitor_user, password=cluster.monitor_password, autocommit=True)
            for s in cluster.servers
        }  # fmt: skip
        self.interval = interval
        self.samples: list[Sample] = []
        self.seen: dict[str, set[int]] = {name: set() for name in self.conns}
        self.halt = threading.Event()
        self.error: str | None = None
        self.skipped: list[str] = []  # samples a server refused (not a lost connection): skipped, reported

    def sample(self) -> Sample:
        threads, attempts, app, opened, prepared = {}, {}, {}, {}, {}
        for name, c in self.conns.items():
            with c.cursor() as cur:
                cur.execute(self.QUERY)
                t, a, n, ps = cur.fetchone()
                cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app'")
                self.seen[name].update(row[0] for row in cur.fetchall())
            threads[name], attempts[name], app[name], opened[name] = int(t), int(a), int(n), len(self.seen[name])
            prepared[name] = int(ps)
        return Sample(time.monotonic(), threads, attempts, app, opened, prepared)

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                try:
                    self.samples.append(self.sample())
                except pymysql.err.MySQLError as e:
                    # A server refused one reading (seen on a shared box: information_schema's
                    # temporary table under /tmp deleted by someone else's cleanup, error 6).
                    if not e.args or e.args[0] in (2006, 2013) or len(self.skipped) >= 100:
                        raise
                    self.skipped.append(repr(e.args))
                self.halt.wait(self.interval)
        except Exception as e:  # noqa: BLE001 - reported with the figures
            self.error = repr(e)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        for c in self.conns.values():
            with contextlib.suppress(Exception):  # already gone: nothing to close
                c.close()

    # -- summaries --

    def window(self, start: float, end: float, before: bool = False) -> list[Sample]:
        """Samples taken between `start` and `end`; `before`: preceded by the last one taken before
        `start` (the baseline for counters)."""
        inside = [s for s in self.samples if start <= s.t <= end]
        prior = [s for s in self.samples if s.t < start]
        return prior[-1:] + inside if before else inside

    @staticmethod
    def peak(samples: list[Sample], attr: str) -> dict[str, int]:
        names = samples[0].threads if samples else {}
        return {n: max(getattr(s, attr)[n] for s in samples) for n in names}

    @staticmethod
    def attempt_rates(samples: list[Sample], attr: str = "attempts") -> dict[str, tuple[int, float, float]]:
        """server -> (increase of the cumulative counter `attr` in the window, max increase in any
        1 s, max per-sample rate in /s)."""
        out = {}
        if len(samples) < 2:
            return out
        for n in getattr(samples[0], attr):
            series = [getattr(s, attr)[n] for s in samples]
            total = series[-1] - series[0]
            best_1s, best_rate, j = 0, 0.0, 0
            for i, s in enumerate(samples):
                # attempts between sample i and the last sample at most 1 s later
                while j + 1 < len(samples) and samples[j + 1].t - s.t <= 1.0:
                    j += 1
                j = max(j, i)
                best_1s = max(best_1s, series[j] - series[i])
                if i:
                    dt_ = s.t - samples[i - 1].t
                    if dt_ > 0:
                        best_rate = max(best_rate, (series[i] - series[i - 1]) / dt_)
            out[n] = (total, best_1s, best_rate)
        return out


# --------------------------------------------------------------------------- clients


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def kind(e: BaseException) -> str:
    args = getattr(e, "args", ())
    if args and isinstance(args[0], int):
        return f"{type(e).__name__} {args[0]}: {str(args[1])[:90] if len(args) > 1 else ''}"
    return f"{type(e).__name__}: {str(e)[:90]}"


@dataclass
class LoadResult:
    target: str
    clients: int
    connected: int = 0
    connect_s: float = 0.0  # until every client was connected (or had failed)
    run_s: float = 0.0  # from "go" until the last client finished its transactions
    statements: int = 0
    errors: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # per statement, seconds
    threads_peak: dict[str, int] = field(default_factory=dict)
    app_peak: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    opened: dict[str, tuple[int, float, float]] = field(default_factory=dict)


async def phase_load(target: str, host: str, port: int, args, sampler: Sampler) -> LoadResult:
    """N clients connected at once, then M autocommit transactions each (half selects, half updates)."""
    res = LoadResult(target, args.clients)
    gate = asyncio.Semaphore(args.connect_concurrency)  # how many connect at a time (both targets alike)
    go = asyncio.Event()
    ready = 0
    all_ready = asyncio.Event()

    async def client(i: int) -> None:
        nonlocal ready
        rnd = random.Random(i)
        conn = None
        try:
            async with gate:
                conn = await asyncmy.connect(host=host, port=port, user="app", password="app_pw", database=DB,
                                             autocommit=True, connect_timeout=60)
            res.connected += 1
        except Exception as e:  # noqa: BLE001
            res.errors["connect: " + kind(e)] += 1
        finally:
            ready += 1
            if ready == args.clients:
                all_ready.set()
        if conn is None:
            return
        try:
            await go.wait()
            async with conn.cursor() as cur:
                for n in range(args.statements):
                    key = rnd.randint(1, ROWS)
                    t = time.perf_counter()
                    try:
                        if n % 2:
                            await cur.execute(f"UPDATE {TABLE} SET v = v + 1 WHERE id = %s", (key,))
                        else:
                            await cur.execute(f"SELECT id, v FROM {TABLE} WHERE id = %s", (key,))
                            row = await cur.fetchone()
                            if row is None or row[0] != key:
                                res.errors[f"wrong row: {row!r}"] += 1
                    except Exception as e:  # noqa: BLE001
                        res.errors[kind(e)] += 1
                        if isinstance(e, (asyncmy.errors.OperationalError,)) and e.args and e.args[0] in (2006, 2013, 2014):
                            return  # connection gone
                        continue
                    res.latencies.append(time.perf_counter() - t)
                    res.statements += 1
        finally:
            try:
                await conn.ensure_closed()
            except Exception:  # noqa: BLE001
                conn.close()

    t0 = time.monotonic()
    tasks = [asyncio.create_task(client(i)) for i in range(args.clients)]
    await all_ready.wait()
    t1 = time.monotonic()
    res.connect_s = t1 - t0
    print(f"  {target}: {res.connected}/{args.clients} connected in {res.connect_s:.1f} s; go", flush=True)
    go.set()
    await asyncio.gather(*tasks)
    t2 = time.monotonic()
    res.run_s = t2 - t1
    window = sampler.window(t0, t2 + 0.2)
    res.threads_peak = Sampler.peak(window, "threads")
    res.app_peak = Sampler.peak(window, "app")
    counted = sampler.window(t0, t2 + 0.2, before=True)
    res.attempts = Sampler.attempt_rates(counted)
    res.opened = Sampler.attempt_rates(counted, "opened")
    return res


@dataclass
class StormResult:
    clients: int
    window_s: float
    ok: int = 0
    errors: Counter = field(default_factory=Counter)
    times: list[float] = field(default_factory=list)  # connect + query, seconds
    wall_s: float = 0.0
    threads_peak: dict[str, int] = field(default_factory=dict)
    app_peak: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    opened: dict[str, tuple[int, float, float]] = field(default_factory=dict)


async def phase_storm(host: str, port: int, args, sampler: Sampler, window_s: float) -> StormResult:
    res = StormResult(args.storm, window_s)
    t0 = time.monotonic()

    async def client(i: int) -> None:
        await asyncio.sleep(window_s * i / args.storm)
        t = time.monotonic()
        conn = None
        try:
            conn = await asyncmy.connect(host=host, port=port, user="app", password="app_pw", database=DB,
                                         autocommit=True, connect_timeout=60)
            async with conn.cursor() as cur:
                key = 1 + i % ROWS
                await cur.execute(f"SELECT id, v FROM {TABLE} WHERE id = %s", (key,))
                row = await cur.fetchone()
            if row is None or row[0] != key:
                res.errors[f"wrong row: {row!r}"] += 1
                return
            res.times.append(time.monotonic() - t)
            res.ok += 1
        except Exception as e:  # noqa: BLE001
            res.errors[kind(e)] += 1
        finally:
            if conn is not None:
                try:
                    await conn.ensure_closed()
                except Exception:  # noqa: BLE001
                    conn.close()

    await asyncio.gather(*(client(i) for i in range(args.storm)))
    t1 = time.monotonic()
    res.wall_s = t1 - t0
    window = sampler.window(t0 - 0.2, t1 + 0.2)
    res.threads_peak = Sampler.peak(window, "threads")
    res.app_peak = Sampler.peak(window, "app")
    counted = sampler.window(t0 - 0.2, t1 + 0.2, before=True)
    res.attempts = Sampler.attempt_rates(counted)
    res.opened = Sampler.attempt_rates(counted, "opened")
    return res


@dataclass
class IdleResult:
    clients: int
    connected: int = 0
    errors: Counter = field(default_factory=Counter)
    closed_after: list[float] = field(default_factory=list)  # per client: its last reply -> closed by the proxy
    last_query_to_all_closed: float | None = None
    not_closed: int = 0
    idle_after_close: float | None = None  # last client closed -> every server at min_idle
    idle_after_last_query: float | None = None
    app_before: dict[str, int] = field(default_factory=dict)
    app_peak: dict[str, int] = field(default_factory=dict)
    app_end: dict[str, int] = field(default_factory=dict)


async def phase_idle(host: str, port: int, args, sampler: Sampler) -> IdleResult:
    res = IdleResult(args.idle_clients)
    conns: list[tuple[Any, float]] = []
    t0 = time.monotonic()
    gate = asyncio.Semaphore(args.connect_concurrency)

    async def client(i: int) -> None:
        try:
            async with gate:
                conn = await asyncmy.connect(host=host, port=port, user="app", password="app_pw", database=DB,
                                             autocommit=True, connect_timeout=60)
            async with conn.cursor() as cur:
                await cur.execute(f"SELECT id FROM {TABLE} WHERE id = %s", (1 + i % ROWS,))
                await cur.fetchone()
            conns.append((conn, time.monotonic()))
            res.connected += 1
        except Exception as e:  # noqa: BLE001
            res.errors[kind(e)] += 1

    await asyncio.gather(*(client(i) for i in range(args.idle_clients)))
    last_query = max((t for _, t in conns), default=time.monotonic())
    # Silent from here on. A client learns it was closed when its socket reaches EOF (after the
    # proxy's unsolicited ERR 4031); asyncmy marks the stream broken then.
    pending = list(conns)
    deadline = time.monotonic() + args.client_idle_timeout + 30
    last_closed = None
    while pending and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        now = time.monotonic()
        still = []
        for conn, t in pending:
            if conn._stream_broken:
                res.closed_after.append(now - t)
                last_closed = now
            else:
                still.append((conn, t))
        pending = still
    res.not_closed = len(pending)
    if last_closed is not None and not pending:
        res.last_query_to_all_closed = last_closed - last_query
    # Pools back to min_idle: the servers' PROCESSLIST rows of `app` (the proxy's connections).
    want = args.min_idle
    deadline = time.monotonic() + args.pool_idle_timeout + 30
    while time.monotonic() < deadline:
        s = sampler.samples[-1] if sampler.samples else None
        if s is not None and s.t > (last_closed or 0) and all(n == want for n in s.app.values()):
            res.idle_after_close = s.t - (last_closed or last_query)
            res.idle_after_last_query = s.t - last_query
            break
        await asyncio.sleep(0.1)
    before = sampler.window(t0 - 1.0, t0)
    res.app_before = before[-1].app if before else {}
    window = sampler.window(t0, time.monotonic())
    res.app_peak = Sampler.peak(window, "app")
    res.app_end = sampler.samples[-1].app if sampler.samples else {}
    for conn, _ in conns:
        conn.close()
    return res


# --------------------------------------------------------------------------- sysbench through a capped pool


@dataclass
class SysbenchRun:
    """One sysbench run, and what the servers showed meanwhile (sampler window of the run)."""

    result: rs.RunResult
    ignored_codes: list[str] = field(default_factory=list)  # codes of the errors sysbench ignored (and retried)
    fatal_codes: list[str] = field(default_factory=list)  # codes named in FATAL/ALERT lines (errors that stop a thread)
    app_peak: dict[str, int] = field(default_factory=dict)  # max `app` PROCESSLIST rows per server
    opened: dict[str, int] = field(default_factory=dict)  # distinct `app` connection ids seen during the run
    prepared_peak: dict[str, int] = field(default_factory=dict)  # max Prepared_stmt_count per server
    samples: int = 0
    stmt: dict[str, dict[str, int]] = field(default_factory=dict)  # server -> Com_stmt_prepare/execute deltas
    other_cpu: dict[str, float] = field(default_factory=dict)  # CPU-seconds used meanwhile by processes not ours
    wall: float = 0.0

    def other_share(self, ncpu: int) -> float | None:
        return sum(self.other_cpu.values()) / (ncpu * self.wall) if self.wall else None


def com_stmt(cluster) -> dict[str, dict[str, int]]:
    """server -> {"prepare": Com_stmt_prepare, "execute": Com_stmt_execute} (SHOW GLOBAL STATUS via the CLI)."""
    out = {}
    for s in cluster.servers:
        rows = s.sql("SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_stmt_prepare', 'Com_stmt_execute')")
        out[s.name] = {k.lower().removeprefix("com_stmt_"): int(v) for k, v in (line.split("\t") for line in rows.splitlines())}
    return out


def sysbench_load(args) -> argparse.Namespace:
    """The `args` shape run_sysbench's helpers read (tables, table_size, threads, time)."""
    return argparse.Namespace(tables=args.sb_tables, table_size=args.sb_table_size, threads=args.sb_threads, time=args.sb_time)


def run_sysbench_once(target: str, where: tuple[str, int], cluster, primary: rs.Primary, args, rnd: int, sampler: Sampler, ours: set[int]) -> SysbenchRun:
    sb = sysbench_load(args)
    # --verbosity=5 names every error sysbench ignores ("Ignoring error 1213 ..."); no other option
    # changes sysbench's defaults (transactions, --db-ps-mode=auto, its own ignore list).
    argv = rs.sysbench_argv("oltp_read_write", *where, primary, sb, "run", extra=("--verbosity=5",))
    run = SysbenchRun(rs.RunResult("oltp_read_write", target, rnd, argv))
    stmt_before = com_stmt(cluster)
    cpu_before, t0 = split.cpu_times(), time.monotonic()
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=args.sb_time + 120, check=False)
        text = out.stdout + out.stderr
        run.result.exit_status = out.returncode
    except subprocess.TimeoutExpired as exc:
        text = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        run.result.note = f"sysbench still running {args.sb_time + 120} s after start; killed"
    t1 = time.monotonic()
    run.wall = t1 - t0
    run.other_cpu = split.others_cpu(cpu_before, split.cpu_times(), ours)
    stmt_after = com_stmt(cluster)
    run.stmt = {n: {k: stmt_after[n][k] - stmt_before[n][k] for k in stmt_after[n]} for n in stmt_after}
    rs.parse_sysbench(text, run.result)
    run.ignored_codes = split.ignored_codes(text)
    run.fatal_codes = re.findall(r"^(?:FATAL|ALERT):.*?error (\d+)", text, re.MULTILINE)
    time.sleep(2 * sampler.interval)  # the sample that follows the run's end
    window = sampler.window(t0, time.monotonic())
    run.samples = len(window)
    run.app_peak = Sampler.peak(window, "app")
    run.prepared_peak = Sampler.peak(window, "prepared")
    run.opened = {k: v[0] for k, v in Sampler.attempt_rates(sampler.window(t0, time.monotonic(), before=True), "opened").items()}
    return run


def phase_sysbench(cluster, primary: rs.Primary, args, base_dir: Path, procs: rs.Processes, sampler: Sampler) -> dict[str, Any]:
    """sysbench oltp_read_write with args.sb_threads threads, direct and through a proxy capping every
    server at args.sb_max_connections, interleaved over args.sb_rounds rounds. Each proxy run gets a
    proxy of its own, started cold and stopped after the run, so no proxy connection is open during
    a direct run (its `app` rows are sysbench's alone) and every proxy run starts from empty pools."""
    out: dict[str, Any] = {"runs": [], "config": "", "log": []}
    sb = sysbench_load(args)
    rs.prepare(primary, sb)
    cluster.wait_replicated(timeout=300)
    order = ["direct", "rwproxy"]
    log: Counter = Counter()
    for rnd in range(args.sb_rounds):
        for target in order[rnd % 2:] + order[:rnd % 2]:
            if target == "direct":
                where: tuple[str, int] | str = (primary.host, primary.port)
            else:
                name = f"sysbench{rnd + 1}"
                where, out["config"] = start_proxy(name, cluster, args, base_dir, procs, max_connections=args.sb_max_connections)
                if isinstance(where, str):
                    out["problem"] = f"proxy did not start: {where}"
                    return out
            time.sleep(2)  # the previous run's server threads gone, the new proxy settled
            ours = {os.getpid(), *(p.pid for _, p in procs.procs), *(s.pid for s in cluster.servers if s.pid)}
            argv = rs.sysbench_argv("oltp_read_write", *where, primary, sb, "run", extra=("--verbosity=5",))
            print(f"phase sysbench: round {rnd + 1}/{args.sb_rounds} {target}: {shlex.join(argv)}", flush=True)
            run = run_sysbench_once(target, where, cluster, primary, args, rnd, sampler, ours)
            out["runs"].append(run)
            if target == "rwproxy":
                stop_last(procs)
                for w in log_warnings(base_dir / f"{name}.log", limit=20):
                    n, text = w.split("× ", 1)
                    log[text] += int(n)
            r = run.result
            status = "ok" if r.ok else f"FAILED ({r.note or (r.fatal[0] if r.fatal else f'exit {r.exit_status}')})"
            print(f"  qps={rs.fmt(r.qps, ',.0f')} p95={rs.fmt(r.p95_ms, '.2f')} ms ignored={r.ignored_errors} {dict(Counter(run.ignored_codes)) or ''} "
                  f"reconnects={r.reconnects} fatal={dict(Counter(run.fatal_codes)) or len(r.fatal)} max app connections {run.app_peak} "
                  f"max Prepared_stmt_count {run.prepared_peak} COM_STMT {run.stmt} others_cpu={sum(run.other_cpu.values()):.1f}s {status}", flush=True)
    out["log"] = [f"{n}× {text}" for text, n in log.most_common(20)]
    return out


# --------------------------------------------------------------------------- the proxy


def pool_toml(args, extra: dict[str, Any] | None = None) -> str:
    values = {
        "min_idle": args.min_idle,
        "idle_timeout": args.pool_idle_timeout,
        "connect_concurrency": args.pool_connect_concurrency,
        "connect_rate": args.connect_rate,
        **(extra or {}),
    }
    return "[pool]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())


def start_proxy(name: str, cluster, args, base_dir: Path, procs: rs.Processes, proxy_settings: dict[str, Any] | None = None,
                max_connections: int | None = None) -> tuple[tuple[str, int] | str, str]:
    """A cold rwproxy: every server capped at `max_connections` (default args.max_connections).
    Returns ((host, port) or why not, config text)."""
    port = rs.free_port()
    servers = default_servers(cluster)
    for s in servers:
        s["max_connections"] = max_connections or args.max_connections
    settings = {"max_connections": 4096, **(proxy_settings or {})}
    text = render_proxy_config(cluster, port, servers=servers, replication_hostgroups=default_replication_hostgroups(cluster),
                               proxy_settings=settings, extra_toml=pool_toml(args))
    cfg, log = base_dir / f"{name}.toml", base_dir / f"{name}.log"
    cfg.write_text(text)
    argv = [sys.executable, "-m", "proxy", "--config", str(cfg)]
    print(f"starting {name}: {shlex.join(argv)}", flush=True)
    proc = procs.start(name, argv, log, cwd=rs.REPO)
    problem = rs.wait_for_port("127.0.0.1", port, proc, log, timeout=30)
    return (problem if problem else ("127.0.0.1", port)), text


def stop_last(procs: rs.Processes) -> None:
    """Stop the most recently started process (the phase's proxy), so its pools do not linger."""
    _, proc = procs.procs.pop()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except Exception:  # noqa: BLE001
            proc.kill()
            proc.wait()


def log_warnings(path: Path, limit: int = 8) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    bad = [ln for ln in lines if " WARNING " in ln or " ERROR " in ln or "Traceback" in ln]
    counts = Counter(ln.split(" ", 3)[-1][:160] for ln in bad)
    return [f"{n}× {text}" for text, n in counts.most_common(limit)]


# --------------------------------------------------------------------------- report


def f(v: float | None, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def errs(c: Counter) -> str:
    if not c:
        return "0"
    return f"**{sum(c.values())}**: " + "; ".join(f"{n}× {rs.md_escape(k)}" for k, n in c.most_common(4))


def per_server(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "—"


def render(args, info: dict[str, str], invocation: str, results: dict[str, Any], configs: dict[str, str], notes: list[str]) -> str:
    out = [
        BEGIN,
        "## Pooling (multiplexing, storm protection, silent clients)",
        "",
        "Many client connections over few server connections. asyncio + uvloop clients (asyncmy) in one",
        "process; a sampler thread reads every server's own counters every 100 ms (`Threads_connected`,",
        "`Connections` = connection attempts, and the information_schema.PROCESSLIST rows of user `app`).",
        "Each phase runs against a proxy of its own started cold (empty pools): primary in hostgroup 0,",
        f"both replicas in hostgroup 1, every server `max_connections = {args.max_connections}`; point selects go",
        "to the replicas, updates to the primary. `Threads_connected` on the primary includes the two",
        "replicas' binlog dump threads and the sampler; on each server it includes the sampler.",
        "",
        f"- Date: {info['date']}",
        (f"- Machine: {info['nproc']} CPUs (nproc), {info['cpu']}, Linux {info['kernel']}; load average at start "
         f"{info['load']}, at end {info.get('load_end', '?')} (shared machine: clients, proxy and three servers share it)"),
        f"- Server: MariaDB {info['mariadb']}; {info['python']}; asyncmy {ASYNCMY_VERSION}; open files limit {info['nofile']}",
        "",
        "Command:",
        "",
        "```sh",
        invocation,
        "```",
        "",
    ]
    load = results.get("load")
    if load:
        direct, proxied = load.get("direct"), load.get("rwproxy")
        out += [
            f"### a. {args.clients:,} clients × {args.statements} autocommit transactions (half point selects, half updates)",
            "",
            f"All clients connect first ({args.connect_concurrency} at a time), then all start together.",
            "",
            "| target | connected | connect phase s | run s | statements/s | p50 ms | p99 ms | errors | max Threads_connected per server | max `app` PROCESSLIST rows per server |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
        ]
        for r in (direct, proxied):
            if isinstance(r, str):
                out.append(f"| — | — | — | — | — | — | — | **not run**: {rs.md_escape(r)} | — | — |")
                continue
            if r is None:
                continue
            lat = [x * 1000 for x in r.latencies]
            out.append(
                f"| {r.target} | {r.connected:,}/{r.clients:,} | {r.connect_s:.1f} | {r.run_s:.1f} | {f(r.statements / r.run_s if r.run_s else None, ',.0f')} "
                f"| {f(pct(lat, 50))} | {f(pct(lat, 99))} | {errs(r.errors)} | {per_server(r.threads_peak)} | {per_server(r.app_peak)} |"
            )
        if isinstance(proxied, LoadResult):
            out += ["", "Server connections opened by the proxy during its run: "
                    + per_server({k: v[0] for k, v in proxied.opened.items()}) + " (distinct `app` connection ids seen in PROCESSLIST); "
                    "`Connections` counter deltas: " + per_server({k: v[0] for k, v in proxied.attempts.items()})
                    + ". (On a MariaDB replica `Connections` also counts the server's own background threads, which the "
                    "replicated updates start: a replica's counter grows by about 50 per 3,000 replicated single-row updates "
                    "with no client connecting at all, so the PROCESSLIST figure is the one to read there.)"]
        out.append("")
    for key, storm in results.items():
        if not key.startswith("storm"):
            continue
        window_s = float(key.split(":")[1])
        when = f"within {window_s:g} s (client i starts at i/{args.storm} s)" if window_s else "all at once"
        out += [f"### b. Storm: {args.storm:,} clients connect {when}, one point select each, against a cold proxy", ""]
        if isinstance(storm, str):
            out += [f"**not run**: {storm}", ""]
        else:
            t = [x * 1000 for x in storm.times]
            out += [
                f"- Errors: {errs(storm.errors)}; {storm.ok:,} clients done in {storm.wall_s:.1f} s",
                f"- Client time (connect + query): p50 {f(pct(t, 50), '.0f')} ms, p99 {f(pct(t, 99), '.0f')} ms, max {f(max(t) if t else None, '.0f')} ms",
                f"- Max `app` PROCESSLIST rows per server: {per_server(storm.app_peak)} (configured max {args.max_connections})",
                f"- Max Threads_connected per server: {per_server(storm.threads_peak)}",
                (f"- Server connection attempts ([pool] connect_rate = {args.connect_rate:g}/s per server, connect_concurrency = {args.pool_connect_concurrency}; "
                f"the token bucket holds `connect_rate` tokens, so a cold pool may open that many at once, then `connect_rate` per second):"),
                "",
                "| server | `Connections` delta | max in any 1 s | max rate over one 100 ms sample (/s) | new `app` connections in PROCESSLIST | max in any 1 s |",
                "|---|---:|---:|---:|---:|---:|",
                *(f"| {k} | {v[0]} | {v[1]} | {v[2]:.0f} | {storm.opened.get(k, ('—', '—'))[0]} | {storm.opened.get(k, ('—', '—'))[1]} |"
                  for k, v in storm.attempts.items()),
                "",
            ]
    idle = results.get("idle")
    if idle:
        out += [(f"### c. Silent clients: {args.idle_clients:,} clients run one query and go silent "
                f"(client_idle_timeout = {args.client_idle_timeout:g} s, [pool] min_idle = {args.min_idle}, idle_timeout = {args.pool_idle_timeout:g} s)"), ""]
        if isinstance(idle, str):
            out += [f"**not run**: {idle}", ""]
        else:
            c = idle.closed_after
            out += [
                f"- Connected and queried: {idle.connected:,}/{idle.clients:,}; errors: {errs(idle.errors)}",
                (f"- Closed by the proxy (seen by the client: ERR 4031 then EOF), after the client's last reply: "
                f"p50 {f(pct(c, 50))} s, max {f(max(c) if c else None)} s; last client closed {f(idle.last_query_to_all_closed)} s after the last query; "
                f"not closed: {idle.not_closed}"),
                (f"- Pools back to min_idle ({args.min_idle} per server) {f(idle.idle_after_close)} s after the last client was closed, "
                f"{f(idle.idle_after_last_query)} s after the last query (the connections are idle from then on: expected "
                f"idle_timeout + up to one maintenance interval, min(1, idle_timeout/4) s)"),
                f"- `app` PROCESSLIST rows per server: before {per_server(idle.app_before)}; max during {per_server(idle.app_peak)}; at the end {per_server(idle.app_end)}",
                "",
            ]
    out += ["Proxy configurations (as written; `[pool]` identical in every phase):", ""]
    for name, text in configs.items():
        proxy_sec = text[text.index("[proxy]"):text.index("[listeners")].strip()
        out += [f"- {name}: `" + " ".join(proxy_sec.split("\n")[1:]) + "`"]
    if configs:
        text = next(iter(configs.values()))
        out += ["", "```toml", text[text.index("[pool]"):].strip(), "```"]
    if notes:
        out += ["", "Notes:", "", *(f"- {n}" for n in notes)]
    out.append(END)
    return "\n".join(out)


def errors_text(runs: list[SysbenchRun], reconnects: bool = True) -> str:
    """sysbench's errors over `runs`: ignored (retried) ones by code, reconnects, FATAL lines by code, failed runs."""
    parts = []
    ignored = Counter(c for r in runs for c in r.ignored_codes)
    counted = sum(r.result.ignored_errors for r in runs)
    if counted:
        parts.append(f"{counted} ignored (" + ", ".join(f"{code} ×{n}" for code, n in sorted(ignored.items())) + ")"
                     if ignored else f"{counted} ignored")
    n = sum(r.result.reconnects for r in runs)
    if n and reconnects:
        parts.append(f"{n} reconnects")
    fatal = Counter(c for r in runs for c in r.fatal_codes)
    lines = sum(len(r.result.fatal) for r in runs)
    if lines:
        parts.append(f"**{lines} FATAL lines** (" + (", ".join(f"error {c} ×{n}" for c, n in sorted(fatal.items())) or "no code") + ")")
    failed = [r for r in runs if not r.result.ok]
    if failed:
        why = failed[0].result
        parts.append(f"**FAILED {len(failed)}/{len(runs)}** ({rs.md_escape((why.note or (why.fatal[0] if why.fatal else f'exit {why.exit_status}'))[:160])})")
    return "; ".join(parts) or "0"


def render_sysbench(args, info: dict[str, str], invocation: str, sb: dict[str, Any]) -> str:
    runs: list[SysbenchRun] = sb.get("runs", [])
    cap = args.sb_max_connections
    head = [
        SB_BEGIN,
        f"### d. sysbench oltp_read_write, {args.sb_threads} threads, through the proxy capped at {cap} backend connections per server",
        "",
        "sysbench in its default mode (BEGIN … COMMIT around every transaction, server-side prepared statements:",
        f"`--db-ps-mode=auto`) with {args.sb_threads} threads, straight to the primary (`direct`: {args.sb_threads} server",
        "connections) and through rwproxy splitting (primary in hostgroup 0, both replicas in hostgroup 1,",
        f"`[[replication_hostgroups]]` 0 → 1) with every `[[servers]]` `max_connections = {cap}`, the two targets",
        "alternating over the rounds; each proxy run has a proxy of its own, started cold and stopped after it.",
        "Every transaction runs wholly on the writer, so the proxy multiplexes",
        f"{args.sb_threads} client sessions over at most {cap} primary connections, each lent for one transaction.",
        "",
        "Server connections are counted by the servers: a sampler thread (logged in as `monitor`) reads every",
        "100 ms each server's information_schema.PROCESSLIST rows of user `app` (and Prepared_stmt_count).",
        "During a proxy run sysbench talks only to the proxy, so `app` rows are exactly the proxy's backend",
        "connections; `Threads_connected` minus a baseline would also count the sampler and the replicas'",
        "binlog dump threads, and could not tell a stray client from the proxy.",
        "",
        f"- Date: {info['date']}",
        (f"- Machine: {info['nproc']} CPUs (nproc), {info['cpu']}, Linux {info['kernel']}; load average at start "
         f"{info['load']}, at end {info.get('load_end', '?')} (shared machine; sysbench, the proxy and three servers share it)"),
        f"- rwproxy: {info['revision']}",
        f"- Server: MariaDB {info['mariadb']} (primary + 2 replicas, GTID, ROW binlog); {info['sysbench']}; {info['python']}",
        f"- Load: {args.sb_tables} tables × {args.sb_table_size:,} rows, {args.sb_threads} threads, {args.sb_time} s per run, {args.sb_rounds} round(s)",
        "",
        "Command:",
        "",
        "```sh",
        invocation,
        "```",
        "",
    ]
    if sb.get("problem"):
        return "\n".join([*head, f"**not run**: {rs.md_escape(sb['problem'])}", SB_END])
    examples = {r.result.target: r.result.command for r in runs}
    ncpu = int(info["nproc"]) if info["nproc"].isdigit() else (os.cpu_count() or 1)
    by = {t: [r for r in runs if r.result.target == t] for t in ("direct", "rwproxy")}
    summ = {t: rs.Summary("oltp_read_write", t, [r.result for r in rr]) for t, rr in by.items()}
    qps = {t: s.median("qps") for t, s in summ.items()}
    p95 = {t: s.median("p95_ms") for t, s in summ.items()}
    peak = {t: {n: max(r.app_peak.get(n, 0) for r in rr) for n in (rr[0].app_peak if rr else {})} for t, rr in by.items()}
    prepared = {t: {n: max(r.prepared_peak.get(n, 0) for r in rr) for n in (rr[0].prepared_peak if rr else {})} for t, rr in by.items()}
    held = bool(by["rwproxy"]) and all(n <= cap for n in peak["rwproxy"].values())
    # Per round: proxy/direct of that round (both ran within a minute of each other).
    paired = []
    for rnd in range(args.sb_rounds):
        d = next((r for r in by["direct"] if r.result.round == rnd and r.result.ok), None)
        x = next((r for r in by["rwproxy"] if r.result.round == rnd and r.result.ok), None)
        if d and x:
            paired.append((rnd, x.result.qps / d.result.qps, x.result.p95_ms / d.result.p95_ms if d.result.p95_ms else None))
    qps_ratios = [q for _, q, _ in paired]
    quiet = []  # rounds in which other processes used under 10% of the CPUs during both runs
    for rnd, q, p in paired:
        shares = [r.other_share(ncpu) for r in runs if r.result.round == rnd]
        if all(x is not None and x < 0.10 for x in shares):
            quiet.append((rnd, q, p))
    out = head + [
        "The sysbench runs (host/port vary by target):",
        "",
        "```sh",
        *(shlex.join(examples[t]) for t in ("direct", "rwproxy") if t in examples),
        "```",
        "",
        "| target | QPS | TPS | p95 ms | sysbench errors | reconnects | max `app` connections per server | `app` connections opened per server (most in one run) | max Prepared_stmt_count per server | QPS ratio vs direct | p95 ratio vs direct |",
        "|---|---:|---:|---:|---|---:|---|---|---|---:|---:|",
    ]
    for t in ("direct", "rwproxy"):
        opened = {n: max(r.opened.get(n, 0) for r in by[t]) for n in (by[t][0].opened if by[t] else {})}
        out.append(
            f"| {t} | {rs.fmt(qps[t], ',.0f')} | {rs.fmt(summ[t].median('tps'), ',.0f')} | {rs.fmt(p95[t], '.2f')} | {errors_text(by[t], reconnects=False)} "
            f"| {sum(r.result.reconnects for r in by[t])} | {per_server(peak[t])} | {per_server(opened)} | {per_server(prepared[t])} "
            f"| {rs.ratio(qps[t], qps['direct'])} | {rs.ratio(p95[t], p95['direct'])} |"
        )
    out += [
        "",
        (f"- **Cap {'held' if held else 'NOT held'}**: at most {per_server(peak['rwproxy'])} `app` connections per server during the proxy runs "
         f"(configured `max_connections = {cap}`; {sum(r.samples for r in by['rwproxy'])} samples)."),
        (f"- QPS proxy/direct: {rs.ratio(qps['rwproxy'], qps['direct'])} (medians); per round "
         + ", ".join(f"{q:.2f}" for q in qps_ratios) + (f", median {statistics.median(qps_ratios):.2f}" if qps_ratios else "")
         + f". p95 proxy/direct: {rs.ratio(p95['rwproxy'], p95['direct'])} (medians); per round "
         + ", ".join(f"{p:.2f}" if p is not None else "—" for _, _, p in paired) + "."),
        (f"- Rounds in which other processes used under 10% of the CPUs during both runs ({len(quiet)} of {len(paired)}): QPS ratio "
         + (", ".join(f"{q:.2f}" for _, q, _ in quiet) + f" (median {statistics.median(q for _, q, _ in quiet):.2f}), p95 ratio "
            + ", ".join(f"{p:.2f}" if p is not None else "—" for _, _, p in quiet) if quiet else "—")
         + ". On a shared box these are the comparable ones; every round is listed below."),
        ("- Where the statements ran (Com_stmt_* deltas, summed over the runs of each target): "
         + "; ".join(f"{t}: " + ", ".join(f"{n} {sum(r.stmt.get(n, {}).get('prepare', 0) for r in by[t]):,} PREPARE / "
                                          f"{sum(r.stmt.get(n, {}).get('execute', 0) for r in by[t]):,} EXECUTE"
                                          for n in (by[t][0].stmt if by[t] else {}))
                     for t in ("direct", "rwproxy"))
         + ". Through the proxy the replicas' connections and statements come from sysbench's PREPAREs of its SELECTs, "
           "which arrive outside a transaction and are routed as reads; every EXECUTE runs inside BEGIN … COMMIT on the "
           "primary, which prepares the statement there too on first use."),
        ("- sysbench errors: *ignored* errors are the ones sysbench retries by default (`--mysql-ignore-errors` "
        "1213, 1020, 1205: deadlock, record changed, lock wait timeout), listed by code; any other error is a "
        "FATAL line that stops its thread and fails the run."),
        "",
        "Per run (in run order; [others N%]: CPU that processes other than the benchmark's used during that run):",
        "",
    ]
    for r in sorted(runs, key=lambda r: (r.result.round, runs.index(r))):
        res = r.result
        share = r.other_share(ncpu)
        out.append(f"- round {res.round + 1} {res.target}: {rs.fmt(res.qps, ',.0f')} QPS, p95 {rs.fmt(res.p95_ms, '.2f')} ms, "
                   f"errors {errors_text([r])}, max `app` connections {per_server(r.app_peak)}"
                   + (f" [others {share:.0%}]" if share is not None else ""))
    if sb.get("skipped"):
        out += ["", f"Sampler: {len(sb['skipped'])} sample(s) refused by a server and skipped (over the whole benchmark), e.g. `{sb['skipped'][0]}`."]
    log = sb.get("log", [])
    out += ["", "Proxy logs (all proxy runs): " + ("no WARNING/ERROR lines" if not log else f"{len(log)} distinct WARNING/ERROR line(s):")]
    if log:
        out += ["", *(f"- `{rs.md_escape(line).replace('`', chr(39))}`" for line in log)]
    text = sb.get("config", "")
    if "[pool]" in text:
        servers = [ln for ln in text.splitlines() if ln.startswith("max_connections")]
        out += ["", f"Proxy config: every `[[servers]]` has `{servers[-1] if servers else '?'}`; `[pool]`:", "",
                "```toml", text[text.index("[pool]"):].strip(), "```"]
    out.append(SB_END)
    return "\n".join(out)


def write_sysbench_section(out: Path, section: str) -> None:
    """Replace the `pooling-sysbench` section; the first time, put it right after the pooling section
    (it is that section's part d), else where run_sysbench.write_section puts a new one (the end)."""
    text = out.read_text() if out.exists() else ""
    if SB_BEGIN not in text and END in text:
        head, tail_ = text.split(END, 1)
        out.write_text(head + END + "\n\n" + section + tail_)
        return
    rs.write_section(out, section, SB_BEGIN, SB_END)


# --------------------------------------------------------------------------- main


def wait_for_quiet(max_load: float, patience: float) -> None:
    deadline = time.monotonic() + patience
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        print(f"load average {os.getloadavg()[0]:.1f} > {max_load:g}: waiting (up to {patience:.0f} s in all)", flush=True)
        time.sleep(60)


def raise_nofile() -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children (proxy, servers) inherit it
    return str(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", default=",".join(PHASES), type=lambda s: rs.check_subset(s, PHASES), help=f"comma list, from {','.join(PHASES)}")
    ap.add_argument("--clients", type=int, default=1000, help="phase load: concurrent clients (default 1000)")
    ap.add_argument("--statements", type=int, default=20, help="phase load: autocommit transactions per client (default 20)")
    ap.add_argument("--connect-concurrency", type=int, default=100, help="phase load/idle: clients connecting at once (default 100)")
    ap.add_argument("--storm", type=int, default=2000, help="phase storm: clients (default 2000)")
    ap.add_argument("--storm-windows", default="1,0", type=lambda t: [float(x) for x in t.split(",") if x.strip()],
                    help="phase storm: seconds over which the clients arrive, one storm per value (default 1,0: within one "
                         "second, then all at once)")
    ap.add_argument("--idle-clients", type=int, default=500, help="phase idle: clients (default 500)")
    ap.add_argument("--client-idle-timeout", type=float, default=2.0, help="phase idle: [proxy] client_idle_timeout (default 2)")
    ap.add_argument("--max-connections", type=int, default=20, help="every server's max_connections in the proxy config (default 20)")
    ap.add_argument("--connect-rate", type=float, default=10.0, help="[pool] connect_rate (default 10 per second per server)")
    ap.add_argument("--pool-connect-concurrency", type=int, default=4, help="[pool] connect_concurrency (default 4)")
    ap.add_argument("--min-idle", type=int, default=2, help="[pool] min_idle (default 2)")
    ap.add_argument("--pool-idle-timeout", type=float, default=5.0, help="[pool] idle_timeout (default 5)")
    ap.add_argument("--sb-time", type=int, default=30, help="phase sysbench: seconds per run (default 30)")
    ap.add_argument("--sb-threads", type=int, default=64, help="phase sysbench: sysbench threads (default 64)")
    ap.add_argument("--sb-rounds", type=int, default=3, help="phase sysbench: rounds of direct + rwproxy, order alternating (default 3)")
    ap.add_argument("--sb-max-connections", type=int, default=8, help="phase sysbench: every server's max_connections in the proxy config (default 8)")
    ap.add_argument("--sb-tables", type=int, default=4, help="phase sysbench: sysbench tables (default 4)")
    ap.add_argument("--sb-table-size", type=int, default=25_000,
                    help="phase sysbench: rows per table (default 25000, as tests/sysbench.py: fewer InnoDB deadlocks among 64 threads)")
    ap.add_argument("--max-load", type=float, default=4.0, help="wait while the 1-min load average is above this (default 4)")
    ap.add_argument("--wait-load", type=float, default=600.0, help="...for at most this many seconds (default 600)")
    ap.add_argument("--out", type=Path, default=rs.REPO / "docs" / "benchmarks.md")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (data, logs, proxy configs)")
    ap.add_argument("--base-dir", type=Path, help="work dir (default: a new temp dir)")
    return ap.parse_args(argv)


async def run_phases(cluster, args, base_dir: Path, procs: rs.Processes, sampler: Sampler, configs: dict[str, str], notes: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    p = cluster.primary
    if "load" in args.phases:
        load: dict[str, Any] = {}
        print(f"phase load: {args.clients} clients direct to the primary", flush=True)
        load["direct"] = await phase_load("direct (primary)", p.host, p.port, args, sampler)
        await asyncio.sleep(2)  # let the server reap its threads before the next run
        where, configs["load"] = start_proxy("load", cluster, args, base_dir, procs)
        if isinstance(where, str):
            load["rwproxy"] = f"proxy did not start: {where}"
        else:
            print(f"phase load: {args.clients} clients through rwproxy", flush=True)
            load["rwproxy"] = await phase_load("rwproxy", *where, args, sampler)
            stop_last(procs)
            notes += [f"load proxy log: {w}" for w in log_warnings(base_dir / "load.log")]
        results["load"] = load
        await asyncio.sleep(2)
    for window_s in args.storm_windows if "storm" in args.phases else []:
        name = f"storm{window_s:g}s"
        where, configs[name] = start_proxy(name, cluster, args, base_dir, procs)
        key = f"storm:{window_s:g}"
        if isinstance(where, str):
            results[key] = f"proxy did not start: {where}"
        else:
            await asyncio.sleep(1)
            print(f"phase storm: {args.storm} clients within {window_s:g} s", flush=True)
            results[key] = await phase_storm(*where, args, sampler, window_s)
            stop_last(procs)
            notes += [f"{name} proxy log: {w}" for w in log_warnings(base_dir / f"{name}.log")]
        await asyncio.sleep(2)
    if "idle" in args.phases:
        where, configs["idle"] = start_proxy("idle", cluster, args, base_dir, procs, {"client_idle_timeout": args.client_idle_timeout})
        if isinstance(where, str):
            results["idle"] = f"proxy did not start: {where}"
        else:
            await asyncio.sleep(1)
            print(f"phase idle: {args.idle_clients} clients go silent", flush=True)
            results["idle"] = await phase_idle(*where, args, sampler)
            stop_last(procs)
            notes += [f"idle proxy log: {w}" for w in log_warnings(base_dir / "idle.log") if "closed: no command" not in w]
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = shlex.join(["python", "bench/run_pool.py", *(sys.argv[1:] if argv is None else argv)])
    wait_for_quiet(args.max_load, args.wait_load)
    nofile = raise_nofile()

    base_dir = rs.start_run(args, "rwproxy-pool-")
    procs, cluster, sampler = rs.Processes(), None, None
    try:
        info = rs.machine()  # load average before our own servers start
        info["date"] = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
        info["nofile"] = nofile
        info["revision"] = split.proxy_revision()  # what the proxies will import
        cluster, primary = rs.start_sandbox(base_dir, replicas=2)
        info["mariadb"] = rs.mariadb_cli(primary, "SELECT VERSION()")
        print(f"primary {primary.host}:{primary.port}, replicas {primary.replicas}: MariaDB {info['mariadb']}; work dir {base_dir}", flush=True)
        cluster.primary.sql(
            f"CREATE TABLE {DB}.{TABLE} (id INT PRIMARY KEY, v INT NOT NULL DEFAULT 0);"
            f"INSERT INTO {DB}.{TABLE} (id) SELECT seq FROM {DB}.seq_1_to_{ROWS}"
        )
        cluster.wait_replicated(timeout=120)
        sampler = Sampler(cluster)
        sampler.start()
        configs: dict[str, str] = {}
        notes: list[str] = []
        uvloop.install()
        clean = True
        if any(ph in args.phases for ph in CLIENT_PHASES):
            results = asyncio.run(run_phases(cluster, args, base_dir, procs, sampler, configs, notes))
            if sampler.error:
                notes.append(f"sampler stopped early: {sampler.error}")
            if sampler.skipped:
                notes.append(f"sampler: {len(sampler.skipped)} sample(s) refused by a server and skipped, e.g. {sampler.skipped[0]}")
            info["load_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            section = render(args, info, invocation, results, configs, notes)
            rs.write_section(args.out, section, BEGIN, END)
            print(f"\nwrote section to {args.out}\n")
            print(section)
            clean = all(
                not r.errors for ph in results.values() for r in (ph.values() if isinstance(ph, dict) else [ph]) if not isinstance(r, str)
            ) and not any(isinstance(r, str) for ph in results.values() for r in (ph.values() if isinstance(ph, dict) else [ph]))
        if "sysbench" in args.phases:
            sb = phase_sysbench(cluster, primary, args, base_dir, procs, sampler)
            info["load_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            if sampler.error:
                sb["problem"] = f"sampler stopped early: {sampler.error}"
            sb["skipped"] = list(sampler.skipped)
            section = render_sysbench(args, info, invocation, sb)
            write_sysbench_section(args.out, section)
            print(f"\nwrote section to {args.out}\n")
            print(section)
            runs = sb.get("runs", [])
            held = all(n <= args.sb_max_connections for r in runs if r.result.target == "rwproxy" for n in r.app_peak.values())
            clean = clean and not sb.get("problem") and bool(runs) and held and all(
                r.result.ok and not r.result.reconnects for r in runs)
        sampler.stop()
        return 0 if clean else 1
    finally:
        if sampler is not None:
            sampler.stop()
        rs.cleanup(procs, cluster, args, base_dir)


if __name__ == "__main__":
    rs.run_main(main)
