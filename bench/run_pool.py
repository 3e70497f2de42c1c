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

Nothing is hidden: every client error is counted by kind and shown; a phase that could not run says
why. Every process started here is stopped on exit, also on Ctrl-C or SIGTERM. Reuses
bench/run_sysbench.py's helpers (process handling, machine facts, section writing).

    .venv/bin/python bench/run_pool.py                  # all phases, writes docs/benchmarks.md
    .venv/bin/python bench/run_pool.py --clients 200 --storm 500 --idle-clients 100 --out /tmp/pool.md
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata
import os
import random
import resource
import shlex
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
import run_sysbench as rs  # bench/ is not a package: imported from its own directory (sys.path above)
import uvloop

from proxy.sandbox import (
    default_replication_hostgroups,
    default_servers,
    render_proxy_config,
)

BEGIN, END = "<!-- BEGIN pooling -->", "<!-- END pooling -->"
ASYNCMY_VERSION = importlib.metadata.version("asyncmy")
DB, TABLE, ROWS = "sbtest", "pool_t", 10_000
PHASES = ("load", "storm", "idle")


# --------------------------------------------------------------------------- the servers' own view


@dataclass
class Sample:
    t: float  # monotonic
    threads: dict[str, int]  # Threads_connected
    attempts: dict[str, int]  # Connections (cumulative connection attempts)
    app: dict[str, int]  # PROCESSLIST rows of user app
    opened: dict[str, int]  # distinct `app` connection ids seen so far (cumulative)


class Sampler(threading.Thread):
    """Every `interval` s, each server's Threads_connected, Connections and `app` PROCESSLIST rows."""

    QUERY = (
        "SELECT (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'THREADS_CONNECTED'), "
        "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'CONNECTIONS'), "
        "(SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app')"
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

    def sample(self) -> Sample:
        threads, attempts, app, opened = {}, {}, {}, {}
        for name, c in self.conns.items():
            with c.cursor() as cur:
                cur.execute(self.QUERY)
                t, a, n = cur.fetchone()
                cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app'")
                self.seen[name].update(row[0] for row in cur.fetchall())
            threads[name], attempts[name], app[name], opened[name] = int(t), int(a), int(n), len(self.seen[name])
        return Sample(time.monotonic(), threads, attempts, app, opened)

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                self.samples.append(self.sample())
                self.halt.wait(self.interval)
        except Exception as e:  # noqa: BLE001 - reported with the figures
            self.error = repr(e)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        for c in self.conns.values():
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

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


def start_proxy(name: str, cluster, args, base_dir: Path, procs: rs.Processes, proxy_settings: dict[str, Any] | None = None) -> tuple[tuple[str, int] | str, str]:
    """A cold rwproxy: every server capped at args.max_connections. Returns ((host, port) or why not, config text)."""
    port = rs.free_port()
    servers = default_servers(cluster)
    for s in servers:
        s["max_connections"] = args.max_connections
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
                f"- Server connection attempts ([pool] connect_rate = {args.connect_rate:g}/s per server, connect_concurrency = {args.pool_connect_concurrency}; "
                f"the token bucket holds `connect_rate` tokens, so a cold pool may open that many at once, then `connect_rate` per second):",
                "",
                "| server | `Connections` delta | max in any 1 s | max rate over one 100 ms sample (/s) | new `app` connections in PROCESSLIST | max in any 1 s |",
                "|---|---:|---:|---:|---:|---:|",
                *(f"| {k} | {v[0]} | {v[1]} | {v[2]:.0f} | {storm.opened.get(k, ('—', '—'))[0]} | {storm.opened.get(k, ('—', '—'))[1]} |"
                  for k, v in storm.attempts.items()),
                "",
            ]
    idle = results.get("idle")
    if idle:
        out += [f"### c. Silent clients: {args.idle_clients:,} clients run one query and go silent "
                f"(client_idle_timeout = {args.client_idle_timeout:g} s, [pool] min_idle = {args.min_idle}, idle_timeout = {args.pool_idle_timeout:g} s)", ""]
        if isinstance(idle, str):
            out += [f"**not run**: {idle}", ""]
        else:
            c = idle.closed_after
            out += [
                f"- Connected and queried: {idle.connected:,}/{idle.clients:,}; errors: {errs(idle.errors)}",
                f"- Closed by the proxy (seen by the client: ERR 4031 then EOF), after the client's last reply: "
                f"p50 {f(pct(c, 50))} s, max {f(max(c) if c else None)} s; last client closed {f(idle.last_query_to_all_closed)} s after the last query; "
                f"not closed: {idle.not_closed}",
                f"- Pools back to min_idle ({args.min_idle} per server) {f(idle.idle_after_close)} s after the last client was closed, "
                f"{f(idle.idle_after_last_query)} s after the last query (the connections are idle from then on: expected "
                f"idle_timeout + up to one maintenance interval, min(1, idle_timeout/4) s)",
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
        results = asyncio.run(run_phases(cluster, args, base_dir, procs, sampler, configs, notes))
        sampler.stop()
        if sampler.error:
            notes.append(f"sampler stopped early: {sampler.error}")
        info["load_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        section = render(args, info, invocation, results, configs, notes)
        rs.write_section(args.out, section, BEGIN, END)
        print(f"\nwrote section to {args.out}\n")
        print(section)
        clean = all(
            not r.errors for ph in results.values() for r in (ph.values() if isinstance(ph, dict) else [ph]) if not isinstance(r, str)
        ) and not any(isinstance(r, str) for ph in results.values() for r in (ph.values() if isinstance(ph, dict) else [ph]))
        return 0 if clean else 1
    finally:
        if sampler is not None:
            sampler.stop()
        rs.cleanup(procs, cluster, args, base_dir)


if __name__ == "__main__":
    rs.run_main(main)
