"""Passthrough benchmark: sysbench direct vs a bare Python forwarder vs rwproxy, in one run.

Theory of operation: one MariaDB primary (our own sandbox, or --primary HOST:PORT), one `sbtest`
data set, and three ways to reach it:

    direct     sysbench -> MariaDB
    forwarder  sysbench -> bench/forwarder.py (asyncio + uvloop L4 copy) -> MariaDB
    rwproxy    sysbench -> python -m proxy (primary alone in hostgroup 0) -> MariaDB

The forwarder is the floor cost of any Python hop; "ratio vs forwarder" is therefore what the proxy's
own work costs. Each workload runs against each target once per round; the target order is rotated
every round and the figures are medians over rounds, because a shared machine is noisy.

Honesty rules: a sysbench exit status other than 0, a FATAL line, an ignored error or a reconnect is
shown in the table, never dropped; a run that failed does not contribute to the medians, and a target
that never came up is reported as such. Every process this script starts is stopped on exit, also on
Ctrl-C or SIGTERM.

    .venv/bin/python bench/run_sysbench.py                         # full run, writes docs/benchmarks.md
    .venv/bin/python bench/run_sysbench.py --targets direct,forwarder --time 10
    .venv/bin/python bench/run_sysbench.py --primary 127.0.0.1:3306 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = ("oltp_point_select", "oltp_read_write")
TARGETS = ("direct", "forwarder", "rwproxy")
BEGIN, END = "<!-- BEGIN passthrough -->", "<!-- END passthrough -->"
DB = "sbtest"


# --------------------------------------------------------------------------- sysbench output


@dataclass
class RunResult:
    workload: str
    target: str
    round: int
    command: list[str]
    exit_status: int | None = None  # None: not run to completion (timeout, target down)
    qps: float | None = None
    tps: float | None = None
    p95_ms: float | None = None
    ignored_errors: int = 0
    errors: int = 0  # an explicit `errors:` line (newer sysbench) if present
    reconnects: int = 0
    fatal: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.fatal and self.qps is not None


_NUM = r"([0-9]+(?:\.[0-9]+)?)"


def parse_sysbench(text: str, result: RunResult) -> RunResult:
    """Fill `result` from sysbench 1.0 `run` output (stdout and stderr together)."""

    def grab(pattern: str) -> re.Match | None:
        return re.search(pattern, text, re.MULTILINE)

    if m := grab(rf"^\s*queries:\s+\d+\s+\({_NUM} per sec\.\)"):
        result.qps = float(m[1])
    if m := grab(rf"^\s*transactions:\s+\d+\s+\({_NUM} per sec\.\)"):
        result.tps = float(m[1])
    if m := grab(rf"^\s*95th percentile:\s+{_NUM}"):
        result.p95_ms = float(m[1])
    if m := grab(r"^\s*ignored errors:\s+(\d+)"):
        result.ignored_errors = int(m[1])
    if m := grab(r"^\s*errors:\s+(\d+)"):
        result.errors = int(m[1])
    if m := grab(r"^\s*reconnects:\s+(\d+)"):
        result.reconnects = int(m[1])
    result.fatal = [line.strip() for line in text.splitlines() if line.startswith("FATAL:")]
    return result


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


class Processes:
    """Children we started; all of them are stopped by `stop_all`, newest first."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], log: Path, **kw) -> subprocess.Popen:
        with open(log, "wb") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
        self.procs.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    print(f"{name} (pid {proc.pid}) ignored SIGTERM; killing it", file=sys.stderr)
                    proc.kill()
                    proc.wait()
        self.procs.clear()


def wait_for_port(host: str, port: int, proc: subprocess.Popen, log: Path, timeout: float) -> str | None:
    """None once `host:port` accepts a TCP connection; otherwise why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with status {proc.returncode} before listening; log tail: {tail(log)}"
        try:
            socket.create_connection((host, port), timeout=1).close()
            return None
        except OSError:
            time.sleep(0.1)
    return f"not listening on {host}:{port} after {timeout:.0f} s; log tail: {tail(log)}"


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


# --------------------------------------------------------------------------- the primary


@dataclass
class Primary:
    host: str
    port: int
    user: str
    password: str
    replicas: list[tuple[str, int]]


def mariadb_cli(primary: Primary, sql: str) -> str:
    out = subprocess.run(
        ["mariadb", f"--host={primary.host}", f"--port={primary.port}", f"--user={primary.user}",
         "--batch", "--skip-column-names", "-e", sql],
        env={**os.environ, "MYSQL_PWD": primary.password}, capture_output=True, text=True, timeout=60, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"mariadb -e {sql!r} failed: {out.stderr.strip()}")
    return out.stdout.strip()


def start_sandbox(base_dir: Path, replicas: int):
    """Our own MariaDB via proxy.sandbox (contract: start_cluster(base_dir, replicas) -> Cluster)."""
    sys.path.insert(0, str(REPO))
    try:
        from proxy.sandbox import start_cluster
    except ImportError as exc:
        sys.exit(f"proxy.sandbox is not importable ({exc}); pass --primary HOST:PORT to use a running server")
    cluster = start_cluster(base_dir / "cluster", replicas=replicas)
    cluster.primary.sql(f"CREATE DATABASE IF NOT EXISTS {DB}")  # the app user has ALL ON *.*
    primary = Primary(
        cluster.primary.host, cluster.primary.port, cluster.app_user, cluster.app_password,
        [(r.host, r.port) for r in getattr(cluster, "replicas", [])],
    )
    return cluster, primary


# --------------------------------------------------------------------------- targets


def proxy_config(listen_port: int, primary: Primary) -> str:
    lines = [
        "# Written by bench/run_sysbench.py: the primary alone in the writer hostgroup.",
        "[proxy]", 'log_level = "info"', "",
        "[listeners.data]", 'address = "127.0.0.1"', f"port = {listen_port}", "",
        "[[users]]", f'username = "{primary.user}"', f'password = "{primary.password}"',
        "default_hostgroup = 0", "",
        "[[servers]]", "hostgroup_id = 0", f'hostname = "{primary.host}"', f"port = {primary.port}",
        'comment = "primary"', "",
    ]
    for i, (host, port) in enumerate(primary.replicas, 1):
        lines += ["[[servers]]", "hostgroup_id = 1", f'hostname = "{host}"', f"port = {port}",
                  f'comment = "replica {i}"', ""]
    return "\n".join(lines)


def start_targets(names: list[str], primary: Primary, base_dir: Path, procs: Processes) -> dict[str, tuple[str, int] | str]:
    """name -> (host, port) to point sysbench at, or a string saying why the target is unavailable."""
    targets: dict[str, tuple[str, int] | str] = {}
    for name in names:
        if name == "direct":
            targets[name] = (primary.host, primary.port)
            continue
        port = free_port()
        log = base_dir / f"{name}.log"
        if name == "forwarder":
            argv = [sys.executable, str(REPO / "bench" / "forwarder.py"),
                    "--listen", f"127.0.0.1:{port}", "--target", f"{primary.host}:{primary.port}"]
        else:
            cfg = base_dir / "rwproxy.toml"
            cfg.write_text(proxy_config(port, primary))
            argv = [sys.executable, "-m", "proxy", "--config", str(cfg)]
        print(f"starting {name}: {shlex.join(argv)}", flush=True)
        proc = procs.start(name, argv, log, cwd=REPO)
        problem = wait_for_port("127.0.0.1", port, proc, log, timeout=30)
        targets[name] = problem if problem else ("127.0.0.1", port)
        if problem:
            print(f"  {name} unavailable: {problem}", file=sys.stderr)
    return targets


# --------------------------------------------------------------------------- sysbench


def sysbench_argv(workload: str, host: str, port: int, primary: Primary, args, action: str, threads: int | None = None,
                  *, ps_mode: str = "auto", extra: tuple[str, ...] = ()) -> list[str]:
    """`extra` options go after the standard ones, before the action (bench/run_split.py uses both keywords)."""
    argv = ["sysbench", workload, f"--mysql-host={host}", f"--mysql-port={port}",
            f"--mysql-user={primary.user}", f"--mysql-password={primary.password}", f"--mysql-db={DB}",
            f"--tables={args.tables}", f"--table-size={args.table_size}", f"--threads={threads or args.threads}"]
    if action == "run":
        argv += [f"--time={args.time}", "--report-interval=0", "--percentile=95", f"--db-ps-mode={ps_mode}"]
    return argv + list(extra) + [action]


def prepare(primary: Primary, args) -> None:
    threads = max(1, min(args.tables, os.cpu_count() or 1))
    for action in ("cleanup", "prepare"):
        argv = sysbench_argv("oltp_read_write", primary.host, primary.port, primary, args, action, threads)
        print(f"{action}: {shlex.join(argv)}", flush=True)
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.exit(f"sysbench {action} failed (exit {out.returncode}):\n{out.stdout}{out.stderr}")


def run_one(workload: str, target: str, where: tuple[str, int] | str, primary: Primary, args, rnd: int) -> RunResult:
    if isinstance(where, str):
        return RunResult(workload, target, rnd, [], note=f"target unavailable: {where}")
    argv = sysbench_argv(workload, *where, primary, args, "run")
    result = RunResult(workload, target, rnd, argv)
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=args.time + 120, check=False)
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        result.note = f"sysbench still running {args.time + 120} s after start; killed"
        return parse_sysbench(text, result)
    result.exit_status = out.returncode
    return parse_sysbench(out.stdout + out.stderr, result)


# --------------------------------------------------------------------------- report


@dataclass
class Summary:
    workload: str
    target: str
    runs: list[RunResult]

    @property
    def good(self) -> list[RunResult]:
        return [r for r in self.runs if r.ok]

    def median(self, attr: str) -> float | None:
        values = [getattr(r, attr) for r in self.good if getattr(r, attr) is not None]
        return statistics.median(values) if values else None

    def errors_cell(self) -> str:
        parts = []
        ignored = sum(r.ignored_errors for r in self.runs)
        explicit = sum(r.errors for r in self.runs)
        reconnects = sum(r.reconnects for r in self.runs)
        if explicit:
            parts.append(f"{explicit} errors")
        if ignored:
            parts.append(f"{ignored} ignored")
        if reconnects:
            parts.append(f"{reconnects} reconnects")
        failed = [r for r in self.runs if not r.ok]
        if failed:
            why = failed[0]
            reason = why.note or (why.fatal[0] if why.fatal else "")
            status = "no exit status" if why.exit_status is None else f"exit {why.exit_status}"
            parts.append(f"**FAILED {len(failed)}/{len(self.runs)}** ({status}{': ' + md_escape(reason[:160]) if reason else ''})")
        return "; ".join(parts) or "0"


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}"


def machine() -> dict[str, str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip() or str(os.cpu_count())
    sysbench = subprocess.run(["sysbench", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    try:
        import uvloop
        uv = f"uvloop {uvloop.__version__}"
    except ImportError:
        uv = "no uvloop"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {"nproc": nproc, "cpu": cpu, "kernel": platform.release(), "sysbench": sysbench,
            "python": f"Python {platform.python_version()}, {uv}", "load": load}


def render(summaries: list[Summary], args, info: dict[str, str], example: list[str], invocation: str) -> str:
    by_key = {(s.workload, s.target): s for s in summaries}
    rows = ["| workload | target | QPS | p95 ms | errors | QPS ratio vs direct | QPS ratio vs forwarder |",
            "|---|---|---:|---:|---|---:|---:|"]
    for s in summaries:
        qps = s.median("qps")
        direct = by_key.get((s.workload, "direct"))
        fwd = by_key.get((s.workload, "forwarder"))
        rows.append(
            f"| {s.workload} | {s.target} | {fmt(qps, ',.0f')} | {fmt(s.median('p95_ms'), '.2f')} | {s.errors_cell()} "
            f"| {ratio(qps, direct.median('qps')) if direct else '—'} | {ratio(qps, fwd.median('qps')) if fwd else '—'} |"
        )
    per_round = [
        f"- {s.workload} / {s.target}: "
        + ", ".join(f"{r.qps:,.0f}" if r.qps is not None else "—" for r in sorted(s.runs, key=lambda r: r.round))
        for s in summaries
    ]
    # The sandbox password is public; any other one is masked.
    safe_example = [a if not a.startswith("--mysql-password=") or a == "--mysql-password=app_pw"
                    else "--mysql-password=…" for a in example]
    return "\n".join([
        BEGIN,
        "## Passthrough (issue 2)",
        "",
        "What a hop costs before any routing work: the same sysbench load straight to MariaDB (`direct`),",
        "through `bench/forwarder.py` — a bare asyncio + uvloop L4 byte copier, the floor cost of any Python",
        "hop (`forwarder`) — and through rwproxy with the primary alone in hostgroup 0 (`rwproxy`).",
        "QPS and p95 are medians over the rounds that completed cleanly; target order rotates every round.",
        "Any failed run, FATAL line, ignored error or reconnect is listed in the errors column.",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        (f"- Machine: {info['nproc']} CPUs (nproc), {info['cpu']}, Linux {info['kernel']}; "
         f"load average at start {info['load']} (shared machine: expect noise)"),
        f"- Server: MariaDB {info['mariadb']}; {info['sysbench']}; {info['python']}",
        (f"- Load: {args.tables} tables × {args.table_size} rows, {args.threads} threads, {args.time} s per run, "
         f"{args.rounds} round(s); sysbench, the targets and MariaDB all share this machine"),
        "",
        "Command:",
        "",
        "```sh",
        invocation,
        "```",
        "",
        "One of the sysbench runs it made (host/port vary by target):",
        "",
        "```sh",
        shlex.join(safe_example),
        "```",
        "",
        *rows,
        "",
        "QPS per round (in round order):",
        "",
        *per_round,
        END,
    ])


def write_section(out: Path, section: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the text between the `begin` and `end` markers of `out` (append if absent)."""
    text = out.read_text() if out.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail_ = rest.split(end, 1)
        text = head + section + tail_
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    csv = lambda allowed: lambda s: check_subset(s, allowed)
    ap.add_argument("--time", type=int, default=20, help="seconds per sysbench run (default 20)")
    ap.add_argument("--threads", type=int, default=8, help="sysbench threads (default 8)")
    ap.add_argument("--tables", type=int, default=4)
    ap.add_argument("--table-size", type=int, default=10000)
    ap.add_argument("--workloads", type=csv(WORKLOADS), default=list(WORKLOADS),
                    help=f"comma list, from {','.join(WORKLOADS)}")
    ap.add_argument("--targets", type=csv(TARGETS), default=list(TARGETS), help=f"comma list, from {','.join(TARGETS)}")
    ap.add_argument("--rounds", type=int, default=1, help="rounds; medians are reported (default 1)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (data, logs, proxy config)")
    ap.add_argument("--base-dir", type=Path, help="work dir (default: a new temp dir)")
    ap.add_argument("--replicas", type=int, default=0, choices=(0, 1),
                    help="sandbox replicas, put in hostgroup 1 of the proxy config (default 0)")
    ap.add_argument("--primary", type=host_port, metavar="HOST:PORT",
                    help="use this running server instead of starting a sandbox; --user must be able "
                         f"to create database {DB}")
    ap.add_argument("--user", default="app", help="with --primary (default app)")
    ap.add_argument("--password", default="app_pw", help="with --primary (default app_pw)")
    ap.add_argument("--skip-prepare", action="store_true", help=f"reuse an existing {DB} data set")
    return ap.parse_args(argv)


def check_subset(text: str, allowed: tuple[str, ...]) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(allowed)}")
    return [x for x in allowed if x in items]  # canonical order


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = shlex.join(["python", "bench/run_sysbench.py", *(sys.argv[1:] if argv is None else argv)])
    base_dir = start_run(args, "rwproxy-bench-")
    procs, cluster = Processes(), None
    try:
        if args.primary:
            primary = Primary(*args.primary, args.user, args.password, [])
            mariadb_cli(primary, f"CREATE DATABASE IF NOT EXISTS {DB}")
        else:
            cluster, primary = start_sandbox(base_dir, args.replicas)
        info = machine()
        info["mariadb"] = mariadb_cli(primary, "SELECT VERSION()")
        print(f"primary {primary.host}:{primary.port}: MariaDB {info['mariadb']}; work dir {base_dir}", flush=True)
        if not args.skip_prepare:
            prepare(primary, args)
        targets = start_targets(args.targets, primary, base_dir, procs)

        results: list[RunResult] = []
        for rnd in range(args.rounds):
            order = args.targets[rnd % len(args.targets):] + args.targets[:rnd % len(args.targets)]
            for workload in args.workloads:
                for target in order:
                    r = run_one(workload, target, targets[target], primary, args, rnd)
                    results.append(r)
                    status = "ok" if r.ok else f"FAILED ({r.note or (r.fatal[0] if r.fatal else f'exit {r.exit_status}')})"
                    print(f"round {rnd + 1}/{args.rounds} {workload:<18} {target:<9} qps={fmt(r.qps, '.0f'):>7} "
                          f"p95={fmt(r.p95_ms, '.2f'):>6} ms ignored={r.ignored_errors} {status}", flush=True)

        summaries = [Summary(w, t, [r for r in results if (r.workload, r.target) == (w, t)])
                     for w in args.workloads for t in args.targets]
        example = next((r.command for r in results if r.command), sysbench_argv(
            args.workloads[0], primary.host, primary.port, primary, args, "run"))
        section = render(summaries, args, info, example, invocation)
        write_section(args.out, section)
        print(f"\nwrote section to {args.out}\n")
        print(section)
        return 0 if all(r.ok for r in results) else 1
    finally:
        cleanup(procs, cluster, args, base_dir)


def start_run(args, prefix: str) -> Path:
    """Start of a bench run: make SIGTERM a SystemExit and SIGINT a KeyboardInterrupt (even if the
    parent shell ignored it, as shells do for background jobs), so the caller's `finally` always
    stops what the run started; return the work dir (created)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    base_dir = args.base_dir or Path(tempfile.mkdtemp(prefix=prefix))
    base_dir.mkdir(parents=True, exist_ok=True)
    return base_dir


def cleanup(procs, cluster, args, base_dir) -> None:
    """Stop what a bench run started; keep or remove its work dir (shared by the bench scripts)."""
    procs.stop_all()
    if cluster is not None:
        cluster.stop(keep=args.keep)
    if args.keep:
        print(f"kept work dir {base_dir}", file=sys.stderr)
    elif args.base_dir is None:
        shutil.rmtree(base_dir, ignore_errors=True)


def run_main(main) -> None:
    """Entry point of a bench script: exit with main()'s status; Ctrl-C exits 130 after cleanup."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process this run started has been stopped", file=sys.stderr)
        sys.exit(130)




def publish(table: str, out: Path | None) -> None:
    """Print a run's markdown table, and write it to `out` (--out) when given."""
    print("\n" + table)
    if out:
        out.write_text(table + "\n")

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (/proc/<pid>/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

if __name__ == "__main__":
    run_main(main)
