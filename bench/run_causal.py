"""Consistent reads (issue 11): the acceptance measurements, through a splitting proxy.

Theory of operation: one sandbox (a MariaDB primary and two GTID replicas on 127.0.0.1, in a temp
dir) and several rwproxy processes from this tree in front of it, each with the splitting config of
the integration tests (primary in hostgroup 0, replicas in hostgroup 1, the pair 0 -> 1) and its own
admin port, differing only in `[proxy] causal_reads` (`none`, `fast`, `local`; a second `none`
proxy for the cross-proxy case). A read is *stale* when the row the INSERT just committed (looked up
by the id the INSERT returned) is not there. Parts:

- ``a``: 10 autocommit connections x N pairs of ``INSERT`` then ``SELECT ... WHERE id = <new id>``,
  over the text protocol (PyMySQL: COM_QUERY) and server-side prepared statements
  (mysql-connector-python, pure-Python, ``cursor(prepared=True)``: COM_STMT_PREPARE once, then
  COM_STMT_EXECUTE; the servers' Com_stmt_execute deltas are printed to prove it), with
  ``causal_reads = local`` and ``none`` (the baseline). Where the reads ran comes from the proxy's
  ``stats_mysql_connection_pool`` Queries per server (INSERTs are the writer's share; the rest of its
  Queries are reads that ran on the writer).
- ``b``: the same with replica1's SQL thread stopped (``--lag sql_thread``, default) or
  ``MASTER_DELAY`` (``--lag delay``): 0 stale reads with ``local``, read latency max and p99 against
  ``causal_reads_timeout`` (``--timeout``), and the ``Causal_reads_*`` counters (``stats_mysql_global``
  deltas): reads served at position, waited, timed out, sent to the writer.
- ``c``: write on connection A, ``SELECT @@last_gtid``, read on connection B with the token, N times:
  B on the same proxy with the ``/* rwproxy:min_gtid=... */`` hint, B on the same proxy after
  ``SET rwproxy_min_gtid``, B on another proxy process (hint and SET alternating), and the baselines
  without a token (same proxy, other proxy). Both proxies run ``causal_reads = none``: only the token
  protects.
- ``d``: ``sysbench oltp_read_write --skip-trx=on --db-ps-mode=disable`` (8 threads,
  ``--mysql-ignore-errors=1213,1020,1205,1062`` as bench/run_split.py) against the none / fast /
  local proxies, rounds interleaved with the order rotating: QPS, the share of reads the replicas
  served (proxy Queries in hostgroup 1 / sysbench's read count), the Causal_reads_* deltas, and the
  proxy's own CPU µs per statement (/proc/<pid>/stat utime+stime around the run / queries).
  ``local/none`` QPS is the acceptance figure (>= 0.9), given per round and of the medians.

    .venv/bin/python bench/run_causal.py                               # everything, ~10 min
    .venv/bin/python bench/run_causal.py --parts a,c --pairs 200       # a quick look
    .venv/bin/python bench/run_causal.py --parts d --sb-time 20 --sb-rounds 3 --json /tmp/causal.json

Prints markdown tables (and writes them to ``--out``, a JSON of every figure to ``--json``); no
section of docs/benchmarks.md is replaced automatically. The exit status is 1 if a causal phase saw a
stale read, an error, or a read slower than the timeout + ``--margin``, or a sysbench run failed.
Every process it starts is stopped on exit, Ctrl-C or SIGTERM; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_sysbench as rs
from run_sysbench import cpu_seconds

import mysql.connector
import pymysql

TABLE = "causal.rw"
PHASE_TIMEOUT = 600.0  # seconds a phase's worker threads may run before the phase is reported as unfinished


# --------------------------------------------------------------------------- proxies


@dataclass
class Proxy:
    name: str
    mode: str
    port: int
    admin_port: int
    pid: int

    def connect(self, cluster, **kw) -> pymysql.connections.Connection:
        return pymysql.connect(host="127.0.0.1", port=self.port, user=cluster.app_user, password=cluster.app_password,
                               autocommit=True, connect_timeout=10, read_timeout=120, **kw)

    def admin(self) -> pymysql.connections.Connection:
        return pymysql.connect(host="127.0.0.1", port=self.admin_port, user="admin", password="admin", connect_timeout=10, read_timeout=30)

    def counters(self) -> dict[str, int]:
        """Causal_reads_* from stats_mysql_global, and Queries per (hostgroup, port) of stats_mysql_connection_pool."""
        c = self.admin()
        try:
            with c.cursor() as cur:
                cur.execute("SELECT Variable_Name, Variable_Value FROM stats_mysql_global WHERE Variable_Name LIKE 'Causal_reads%'")
                out = {name: int(value) for name, value in cur.fetchall()}
                cur.execute("SELECT hostgroup, srv_port, Queries FROM stats_mysql_connection_pool")
                for hg, port, queries in cur.fetchall():
                    out[f"Queries_hg{hg}_{port}"] = int(queries)
            return out
        finally:
            c.close()


def start_proxy(name: str, mode: str, cluster, base_dir: Path, procs: rs.Processes, timeout: float, monitor: bool) -> Proxy:
    from proxy.sandbox import render_proxy_config

    port, admin_port = rs.free_port(), rs.free_port()
    data_dir = base_dir / f"{name}-admin"
    data_dir.mkdir(exist_ok=True)
    cfg, log = base_dir / f"{name}.toml", base_dir / f"{name}.log"
    cfg.write_text(render_proxy_config(
        cluster, port, proxy_settings={"causal_reads": mode, "causal_reads_timeout": timeout},
        admin_port=admin_port, admin_settings={"data_dir": str(data_dir)},
        monitor={"enabled": True} if monitor else None,
    ))  # fmt: skip
    argv = [sys.executable, "-m", "proxy", "--config", str(cfg)]
    print(f"starting {name} (causal_reads={mode}): {shlex.join(argv)}", flush=True)
    proc = procs.start(name, argv, log, cwd=rs.REPO)
    for p in (port, admin_port):
        problem = rs.wait_for_port("127.0.0.1", p, proc, log, timeout=60)
        if problem:
            raise SystemExit(f"{name}: {problem}")
    return Proxy(name, mode, port, admin_port, proc.pid)


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


# --------------------------------------------------------------------------- servers


def status(server, names: tuple[str, ...] = ("Com_select", "Com_stmt_execute", "Com_insert")) -> dict[str, int]:
    rows = server.sql("SHOW GLOBAL STATUS WHERE Variable_name IN (" + ", ".join(f"'{n}'" for n in names) + ")")
    return {k: int(v) for k, v in (line.split("\t") for line in rows.splitlines())}


def servers_status(cluster) -> dict[str, dict[str, int]]:
    return {s.name: status(s) for s in cluster.servers}


def servers_delta(after, before) -> dict[str, dict[str, int]]:
    return {name: {k: v - before[name][k] for k, v in d.items()} for name, d in after.items()}


# --------------------------------------------------------------------------- insert/select pairs


@dataclass
class PairResult:
    part: str
    protocol: str
    mode: str
    lag: str
    pairs: int = 0
    stale: int = 0
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    seconds: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    servers: dict[str, dict[str, int]] = field(default_factory=dict)
    unfinished: int = 0  # worker threads still running when the phase timed out

    def p(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("latencies_ms")
        d.update(max_ms=self.p(1.0), p99_ms=self.p(0.99), median_ms=self.p(0.5))
        return d


def _text_pairs(port: int, user: str, password: str, n: int, t: int, deadline: float) -> tuple[list[float], int, list[str]]:
    lat: list[float] = []
    stale = 0
    errors: list[str] = []
    try:
        c = pymysql.connect(host="127.0.0.1", port=port, user=user, password=password, autocommit=True, connect_timeout=10, read_timeout=120)
    except pymysql.err.MySQLError as e:
        return lat, stale, [f"connect: {e.args}"]
    try:
        with c.cursor() as cur:
            for i in range(n):
                if time.monotonic() > deadline:
                    errors.append(f"stopped after {PHASE_TIMEOUT:.0f} s")
                    break
                cur.execute(f"INSERT INTO {TABLE} (t, i) VALUES ({t}, {i})")
                new_id = cur.lastrowid
                t0 = time.perf_counter()
                cur.execute(f"SELECT i FROM {TABLE} WHERE id = {new_id}")
                row = cur.fetchone()
                lat.append((time.perf_counter() - t0) * 1e3)
                stale += row is None or row[0] != i
    except pymysql.err.MySQLError as e:
        errors.append(str(e.args))
    finally:
        c.close()
    return lat, stale, errors


def _prepared_pairs(port: int, user: str, password: str, n: int, t: int, deadline: float) -> tuple[list[float], int, list[str]]:
    lat: list[float] = []
    stale = 0
    errors: list[str] = []
    try:
        c = mysql.connector.connect(host="127.0.0.1", port=port, user=user, password=password, autocommit=True, connection_timeout=10, use_pure=True)
    except mysql.connector.Error as e:
        return lat, stale, [f"connect: {e}"]
    # The pure-Python connector leaves Nagle on, and its COM_STMT_EXECUTE goes out in two writes:
    # each then waits for the server's delayed ACK (~44 ms a statement, direct to MariaDB as well).
    c._socket.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        ins = c.cursor(prepared=True)  # MySQLCursorPrepared: COM_STMT_PREPARE once, then COM_STMT_EXECUTE
        sel = c.cursor(prepared=True)
        for i in range(n):
            if time.monotonic() > deadline:
                errors.append(f"stopped after {PHASE_TIMEOUT:.0f} s")
                break
            ins.execute(f"INSERT INTO {TABLE} (t, i) VALUES (?, ?)", (t, i))
            new_id = ins.lastrowid
            t0 = time.perf_counter()
            sel.execute(f"SELECT i FROM {TABLE} WHERE id = ?", (new_id,))
            rows = sel.fetchall()
            lat.append((time.perf_counter() - t0) * 1e3)
            stale += not rows or rows[0][0] != i
    except mysql.connector.Error as e:
        errors.append(str(e))
    finally:
        c.close()
    return lat, stale, errors


def run_pairs(part: str, protocol: str, proxy: Proxy, cluster, n: int, connections: int, lag: str) -> PairResult:
    """One client process per connection (fork): threads of one Python process would measure their
    own GIL hand-offs (5 ms each) as read latency."""
    res = PairResult(part, protocol, proxy.mode, lag)
    worker = _prepared_pairs if protocol == "prepared" else _text_pairs
    c0, s0 = proxy.counters(), servers_status(cluster)
    t0 = time.monotonic()
    deadline = t0 + PHASE_TIMEOUT
    with ProcessPoolExecutor(max_workers=connections, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(worker, proxy.port, cluster.app_user, cluster.app_password, n, t, deadline) for t in range(connections)]
        for f in futures:
            try:
                lat, stale, errors = f.result(timeout=max(deadline + 30 - time.monotonic(), 0.1))
            except Exception as e:  # noqa: BLE001 - a worker that died or hung is reported, not raised
                res.unfinished += 1
                res.errors.append(repr(e))
                continue
            res.latencies_ms += lat
            res.stale += stale
            res.pairs += len(lat)
            res.errors += errors
    res.seconds = time.monotonic() - t0
    res.counters = delta(proxy.counters(), c0)
    res.servers = servers_delta(servers_status(cluster), s0)
    return res


def where_reads_ran(res: PairResult, cluster) -> str:
    """Reads per server from the proxy's Queries: the writer's Queries minus the INSERTs are reads
    (and, for prepared statements, nothing else: the proxy counts COM_STMT_EXECUTE, not PREPARE)."""
    parts = []
    for s in cluster.servers:
        q = sum(v for k, v in res.counters.items() if k.startswith("Queries_hg") and k.endswith(f"_{s.port}"))
        if s is cluster.primary:
            q -= res.pairs
        parts.append(f"{s.name} {q}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- tokens across connections


@dataclass
class TokenResult:
    case: str
    pairs: int = 0
    stale: int = 0
    errors: list[str] = field(default_factory=list)
    max_ms: float | None = None
    p99_ms: float | None = None


def run_tokens(case: str, writer_proxy: Proxy, reader_proxy: Proxy, cluster, n: int, how: str) -> TokenResult:
    """`how`: hint | set | alternate | none (no token: the baseline)."""
    res = TokenResult(case)
    lat: list[float] = []
    w, r = writer_proxy.connect(cluster), reader_proxy.connect(cluster)
    deadline = time.monotonic() + PHASE_TIMEOUT
    try:
        with w.cursor() as wc, r.cursor() as rc:
            for i in range(n):
                if time.monotonic() > deadline:
                    res.errors.append(f"stopped after {PHASE_TIMEOUT:.0f} s")
                    break
                wc.execute(f"INSERT INTO {TABLE} (t, i) VALUES (1000, {i})")
                new_id = wc.lastrowid
                wc.execute("SELECT @@last_gtid")
                token = wc.fetchone()[0]
                mode = how if how != "alternate" else ("hint" if i % 2 == 0 else "set")
                t0 = time.perf_counter()
                if mode == "hint":
                    rc.execute(f"/* rwproxy:min_gtid={token} */ SELECT i FROM {TABLE} WHERE id = {new_id}")
                else:
                    if mode == "set":
                        rc.execute(f"SET rwproxy_min_gtid = '{token}'")
                    rc.execute(f"SELECT i FROM {TABLE} WHERE id = {new_id}")
                row = rc.fetchone()
                lat.append((time.perf_counter() - t0) * 1e3)
                res.pairs += 1
                res.stale += row is None or row[0] != i
    except pymysql.err.MySQLError as e:
        res.errors.append(str(e.args))
    finally:
        w.close()
        r.close()
    if lat:
        xs = sorted(lat)
        res.max_ms, res.p99_ms = xs[-1], xs[min(len(xs) - 1, int(0.99 * len(xs)))]
    return res


# --------------------------------------------------------------------------- lag


def lag_replica(replica, how: str, delay: int) -> None:
    if how == "sql_thread":
        replica.sql("STOP SLAVE SQL_THREAD")
    else:
        replica.sql(f"STOP SLAVE; CHANGE MASTER TO MASTER_DELAY={delay}; START SLAVE")


def unlag_replica(replica, how: str) -> None:
    if how == "sql_thread":
        replica.sql("START SLAVE SQL_THREAD")
    else:
        replica.sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY=0; START SLAVE")


# --------------------------------------------------------------------------- sysbench


@dataclass
class SbRun:
    mode: str
    round: int
    qps: float | None = None
    ok: bool = False
    note: str = ""
    reads: int | None = None
    queries: int | None = None
    replica_reads: int | None = None
    cpu_us_per_stmt: float | None = None
    counters: dict[str, int] = field(default_factory=dict)
    load: float = 0.0

    @property
    def replica_share(self) -> float | None:
        return self.replica_reads / self.reads if self.reads and self.replica_reads is not None else None


SB_EXTRA = ("--skip-trx=on", "--mysql-ignore-errors=1213,1020,1205,1062")


def run_sysbench_once(proxy: Proxy, primary: rs.Primary, args, rnd: int) -> SbRun:
    run = SbRun(proxy.mode, rnd, load=os.getloadavg()[0])
    cmd = rs.sysbench_argv("oltp_read_write", "127.0.0.1", proxy.port, primary, args, "run", ps_mode="disable", extra=SB_EXTRA)
    c0, cpu0 = proxy.counters(), cpu_seconds(proxy.pid)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.time + 120, check=False)
    except subprocess.TimeoutExpired:
        run.note = "sysbench did not finish; killed"
        return run
    cpu1, c1 = cpu_seconds(proxy.pid), proxy.counters()
    r = rs.parse_sysbench(out.stdout + out.stderr, rs.RunResult("oltp_read_write", proxy.mode, rnd, cmd, exit_status=out.returncode))
    run.qps, run.ok = r.qps, r.ok
    run.note = "" if r.ok else (r.fatal[:1] or [f"exit {out.returncode}"])[0]
    if m := re.search(r"^\s*read:\s+(\d+)", out.stdout, re.MULTILINE):
        run.reads = int(m[1])
    if m := re.search(r"^\s*queries:\s+(\d+)", out.stdout, re.MULTILINE):
        run.queries = int(m[1])
    run.counters = delta(c1, c0)
    run.replica_reads = sum(v for k, v in run.counters.items() if k.startswith("Queries_hg1_"))
    if run.queries:
        run.cpu_us_per_stmt = (cpu1 - cpu0) / run.queries * 1e6
    return run


def profile_modes(proxies: dict[str, Proxy], modes: list[str], primary: rs.Primary, args) -> dict[str, dict]:
    """One extra sysbench run per mode with py-spy recording the proxy (uncounted): which functions
    the proxy's time goes to, inclusive, per mode."""
    out: dict[str, dict] = {}
    args.py_spy.mkdir(parents=True, exist_ok=True)
    for mode in modes:
        raw = args.py_spy / f"{mode}.txt"
        spy = subprocess.Popen([shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "--format", "raw", "-r", "100", "-d", str(max(args.time - 4, 2)),
                                "-p", str(proxies[mode].pid), "-o", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run = run_sysbench_once(proxies[mode], primary, args, -1)
        try:
            spy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        inclusive: dict[str, int] = {}
        total = 0
        for line in raw.read_text().splitlines() if raw.exists() else ():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            for name in {frame.split(" (")[0] + " (" + frame.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")" if " (" in frame else frame
                         for frame in stack.split(";")}:
                inclusive[name] = inclusive.get(name, 0) + n
        shares = {k: v / total for k, v in inclusive.items()} if total else {}
        top = sorted(shares, key=lambda k: -shares[k])[:40]
        out[mode] = {"samples": total, "qps": run.qps, "inclusive": {k: shares[k] for k in top}, "top": top}
        print(f"d py-spy {mode}: {total} samples, qps={fmt(run.qps, '.0f')}", flush=True)
    return out


# --------------------------------------------------------------------------- report


def fmt(v, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)


def causal_cell(counters: dict[str, int], mode: str) -> str:
    keys = ("at_position", "waited", "timeout", "writer")
    cells = [f"{k} {counters.get(f'Causal_reads_{mode}_{k}', 0)}" for k in keys]
    wait = counters.get("Causal_reads_wait_time_us")
    if wait:
        cells.append(f"wait total {wait / 1e3:.0f} ms")
    return ", ".join(cells) if mode != "none" else "—"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="a,b,c,d", help="comma list of a,b,c,d (default all)")
    ap.add_argument("--pairs", type=int, default=1000, help="insert/select pairs per connection (a, b) and token pairs (c)")
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=1.0, help="causal_reads_timeout, seconds (default 1)")
    ap.add_argument("--margin", type=float, default=0.25, help="seconds a read may exceed the timeout (default 0.25)")
    ap.add_argument("--lag", choices=("sql_thread", "delay"), default="sql_thread", help="how part b delays replica1")
    ap.add_argument("--delay", type=int, default=30, help="MASTER_DELAY seconds with --lag delay")
    ap.add_argument("--monitor", action="store_true", help="run the proxies' monitor (default intervals): GTID positions known without waiting")
    ap.add_argument("--time", type=int, default=20, help="sysbench seconds per run (d)")
    ap.add_argument("--rounds", type=int, default=3, help="sysbench rounds (d)")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--tables", type=int, default=4)
    ap.add_argument("--table-size", type=int, default=10000)
    ap.add_argument("--py-spy", type=Path, default=None, metavar="DIR", help="also profile each proxy with py-spy during an extra sysbench run per mode (d)")
    ap.add_argument("--out", type=Path, default=None, help="also write the tables here")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here as JSON")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--base-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    invocation = shlex.join(["python", "bench/run_causal.py", *(sys.argv[1:] if argv is None else argv)])
    base_dir = rs.start_run(args, "rwproxy-causal-")
    procs, cluster = rs.Processes(), None
    failures: list[str] = []
    report: dict = {"command": invocation}
    lines: list[str] = []
    try:
        cluster, primary = rs.start_sandbox(base_dir, 2)
        info = rs.machine()
        head = subprocess.run(["git", "-C", str(rs.REPO), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=False).stdout.strip()[:90]
        lines += [
            f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {info['nproc']} CPUs ({info['cpu']}); load average at start {info['load']}",
            f"- Proxy: `{head}`; causal_reads_timeout = {args.timeout:g} s; monitor {'on (default intervals)' if args.monitor else 'off'}",
            f"- Command: `{invocation}`",
            "",
        ]
        cluster.primary.sql(f"CREATE DATABASE causal; CREATE TABLE {TABLE} (id INT AUTO_INCREMENT PRIMARY KEY, t INT, i INT)")
        if "d" in parts:
            rs.prepare(primary, args)
        cluster.wait_replicated(timeout=300)
        proxies = {m: start_proxy(m, m, cluster, base_dir, procs, args.timeout, args.monitor) for m in ("none", "local", "fast")}
        if "c" in parts:
            proxies["none2"] = start_proxy("none2", "none", cluster, base_dir, procs, args.timeout, args.monitor)
        limit_ms = (args.timeout + args.margin) * 1e3

        pair_results: list[PairResult] = []
        if "a" in parts or "b" in parts:
            phases = [("a", "none")] * ("a" in parts) + [("b", args.lag)] * ("b" in parts)
            for part, lag in phases:
                lagging = cluster.replicas[0]
                if lag != "none":
                    lag_replica(lagging, lag, args.delay)
                    time.sleep(0.2)
                try:
                    for protocol in ("text", "prepared"):
                        for mode in ("local", "none"):
                            res = run_pairs(part, protocol, proxies[mode], cluster, args.pairs, args.connections, lag)
                            pair_results.append(res)
                            s = res.summary()
                            print(f"{part} {protocol:<8} {mode:<5} lag={lag:<10} pairs={res.pairs} stale={res.stale} errors={len(res.errors)} "
                                  f"max={fmt(s['max_ms'])} ms p99={fmt(s['p99_ms'])} ms {res.seconds:.1f} s reads: {where_reads_ran(res, cluster)} "
                                  f"{causal_cell(res.counters, mode)}", flush=True)
                            if mode == "local":
                                if res.stale:
                                    failures.append(f"{part} {protocol} local: {res.stale} stale reads")
                                if part == "b" and s["max_ms"] is not None and s["max_ms"] > limit_ms:
                                    failures.append(f"{part} {protocol} local: a read took {s['max_ms']:.0f} ms > {limit_ms:.0f} ms")
                            if res.errors or res.unfinished or res.pairs < args.pairs * args.connections:
                                failures.append(f"{part} {protocol} {mode}: {len(res.errors)} errors {res.errors[:2]}, {res.pairs} pairs done, {res.unfinished} threads unfinished")
                finally:
                    if lag != "none":
                        unlag_replica(lagging, lag)
                        cluster.wait_replicated(timeout=120)
            lines += [
                f"Insert/select pairs: {args.connections} autocommit connections × {args.pairs} pairs each; text = PyMySQL (COM_QUERY), "
                "prepared = mysql-connector-python pure, cursor(prepared=True) (COM_STMT_EXECUTE); part b: replica1 "
                + ("with its SQL thread stopped" if args.lag == "sql_thread" else f"with MASTER_DELAY={args.delay}") + ".",
                "",
                "| part | replica1 | protocol | causal_reads | pairs | stale reads | read p50 ms | p99 ms | max ms | reads ran on (proxy Queries; the primary's: minus the INSERTs, with each connection's setup: SET autocommit, PREPAREs) "
                "| Causal_reads_* | servers' Com_stmt_execute | s |",
                "|---|---|---|---|---:|---:|---:|---:|---:|---|---|---|---:|",
            ]
            for res in pair_results:
                s = res.summary()
                execs = ", ".join(f"{n} {d.get('Com_stmt_execute', 0)}" for n, d in res.servers.items())
                lag_text = "in sync" if res.lag == "none" else ("SQL thread stopped" if res.lag == "sql_thread" else f"MASTER_DELAY={args.delay}")
                lines.append(f"| {res.part} | {lag_text} | {res.protocol} | {res.mode} | {res.pairs} | **{res.stale}** | {fmt(s['median_ms'], '.2f')} | "
                             f"{fmt(s['p99_ms'], '.2f')} | {fmt(s['max_ms'], '.1f')} | {where_reads_ran(res, cluster)} | {causal_cell(res.counters, res.mode)} | "
                             f"{execs} | {res.seconds:.1f} |")
                if res.errors:
                    lines.append(f"| | | | errors | {len(res.errors)} | {md(res.errors[0])} | | | | | | | |")
            lines.append("")
            report["pairs"] = [r.summary() for r in pair_results]

        if "c" in parts:
            n = args.pairs
            cases = [
                ("same proxy, other connection, hint", proxies["none"], "hint"),
                ("same proxy, other connection, SET rwproxy_min_gtid", proxies["none"], "set"),
                ("other proxy process, hint / SET alternating", proxies["none2"], "alternate"),
                ("baseline: same proxy, other connection, no token", proxies["none"], "none"),
                ("baseline: other proxy process, no token", proxies["none2"], "none"),
            ]
            token_results = []
            for case, reader, how in cases:
                res = run_tokens(case, proxies["none"], reader, cluster, n, how)
                token_results.append(res)
                print(f"c {case}: pairs={res.pairs} stale={res.stale} errors={len(res.errors)} max={fmt(res.max_ms)} ms", flush=True)
                if how != "none" and res.stale:
                    failures.append(f"c {case}: {res.stale} stale reads")
                if res.errors:
                    failures.append(f"c {case}: errors {res.errors[:2]}")
            lines += [
                f"Token across connections: {n} times INSERT on connection A (proxy 1), `SELECT @@last_gtid`, then the SELECT of the new row on "
                "connection B; both proxies causal_reads = none (only the token protects).",
                "",
                "| case | pairs | stale reads | read p99 ms | max ms | errors |",
                "|---|---:|---:|---:|---:|---|",
            ]
            for res in token_results:
                lines.append(f"| {res.case} | {res.pairs} | **{res.stale}** | {fmt(res.p99_ms, '.2f')} | {fmt(res.max_ms, '.1f')} | {md(res.errors[0]) if res.errors else 0} |")
            lines.append("")
            report["tokens"] = [asdict(r) for r in token_results]

        if "d" in parts:
            modes = ["none", "fast", "local"]
            runs: dict[str, list[SbRun]] = {m: [] for m in modes}
            for rnd in range(args.rounds):
                order = modes[rnd % 3:] + modes[: rnd % 3]
                for mode in order:
                    run = run_sysbench_once(proxies[mode], primary, args, rnd)
                    runs[mode].append(run)
                    print(f"d round {rnd + 1}/{args.rounds} {mode:<5} qps={fmt(run.qps, '.0f')} replica share={fmt(run.replica_share, '.3f')} "
                          f"cpu/stmt={fmt(run.cpu_us_per_stmt, '.1f')} us load={run.load:.2f} {causal_cell(run.counters, mode)} {'ok' if run.ok else 'FAILED ' + run.note}", flush=True)
                    if not run.ok:
                        failures.append(f"d {mode} round {rnd + 1}: {run.note}")

            def med(mode: str, attr: str) -> float | None:
                xs = [getattr(r, attr) for r in runs[mode] if r.ok and getattr(r, attr) is not None]
                return statistics.median(xs) if xs else None

            if args.py_spy:
                profiles = profile_modes(proxies, modes, primary, args)

            def split(run: SbRun) -> str:
                return " / ".join(str(sum(v for k, v in run.counters.items() if k.startswith("Queries_hg1_") and k.endswith(f"_{r.port}"))) for r in cluster.replicas)

            qn = med("none", "qps")
            sb = rs.sysbench_argv("oltp_read_write", "127.0.0.1", 0, primary, args, "run", ps_mode="disable", extra=SB_EXTRA)
            lines += [
                f"sysbench through the proxy, {args.rounds} rounds × {args.time} s, modes interleaved (order rotating): `{shlex.join(sb).replace('--mysql-port=0', '--mysql-port=<proxy>')}`",
                "",
                "| causal_reads | QPS (median) | ratio vs none | per round | reads on replicas | replica1 / replica2 (last round) | proxy CPU µs/stmt | Causal_reads_* (last round) |",
                "|---|---:|---:|---|---:|---|---:|---|",
            ]
            for mode in modes:
                q = med(mode, "qps")
                per = ", ".join(fmt(r.qps, ".0f") for r in runs[mode])
                lines.append(f"| {mode} | {fmt(q, ',.0f')} | {rs.ratio(q, qn) if mode != 'none' else '1'} | {per} | {fmt(med(mode, 'replica_share'), '.1%')} | "
                             f"{split(runs[mode][-1]) if runs[mode] else ''} | {fmt(med(mode, 'cpu_us_per_stmt'), '.1f')} | {causal_cell(runs[mode][-1].counters, mode) if runs[mode] else ''} |")
            per_round = []
            for rn, rl in zip(runs["none"], runs["local"], strict=True):
                per_round.append(f"{rl.qps / rn.qps:.3f}" if rn.ok and rl.ok else "—")
            waits = [r.counters.get("Causal_reads_wait_time_us", 0) / 1e6 / (args.time * args.threads) for r in runs["local"] if r.ok]
            lines += ["", "local: share of sysbench threads' time spent in MASTER_GTID_WAIT (Causal_reads_wait_time_us / (time × threads)) per round: "
                      + ", ".join(f"{w:.1%}" for w in waits)]
            lines += ["", f"local/none per round: {', '.join(per_round)}; loads at run start: "
                      + "; ".join(f"{m} " + ", ".join(f"{r.load:.1f}" for r in runs[m]) for m in modes), ""]
            if args.py_spy:
                lines += [f"py-spy (`py-spy record --nonblocking --format raw -r 100`) of each proxy during one extra, uncounted run per mode; "
                          f"raw profiles in {args.py_spy}. Share of the proxy's samples whose stack holds each function (inclusive), and QPS of that run:", "",
                          "| function | " + " | ".join(modes) + " |", "|---|" + "---:|" * len(modes)]
                names = sorted({n for prof in profiles.values() for n in prof["top"]}, key=lambda n: -max(p["inclusive"].get(n, 0) for p in profiles.values()))
                names = [n for n in names if min(p["inclusive"].get(n, 0) for p in profiles.values()) < 0.9]  # not the event loop's frames
                for n in names[:25]:
                    lines.append(f"| `{n}` | " + " | ".join(f"{profiles[m]['inclusive'].get(n, 0):.1%}" for m in modes) + " |")
                lines.append("| (samples; QPS) | " + " | ".join(f"{profiles[m]['samples']}; {fmt(profiles[m]['qps'], '.0f')}" for m in modes) + " |")
                lines.append("")
                report["profiles"] = profiles
            ql = med("local", "qps")
            report["sysbench"] = {m: [asdict(r) | {"replica_share": r.replica_share} for r in runs[m]] for m in modes}
            report["sysbench_local_over_none"] = ql / qn if ql and qn else None
        lines.append(f"- Load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        table = "\n".join(lines)
        print("\n" + table)
        if failures:
            print("\nFAILURES:\n" + "\n".join(f"- {f}" for f in failures))
        report["failures"] = failures
        if args.out:
            args.out.write_text(table + "\n")
        if args.json:
            args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
        return 1 if failures else 0
    finally:
        rs.cleanup(procs, cluster, args, base_dir)


def md(text: str) -> str:
    return str(text).replace("|", "\\|")[:160]


if __name__ == "__main__":
    rs.run_main(main)
