"""Splitting benchmark: sysbench direct vs rwproxy in passthrough vs rwproxy splitting reads, in one run.

Theory of operation: our own sandbox (proxy.sandbox.start_cluster: a MariaDB primary and two
replicas, GTID replication), one `sbtest` data set prepared straight on the primary and replicated,
and three ways to reach it:

    direct       sysbench -> primary
    passthrough  sysbench -> rwproxy (only the primary in [[servers]], no pair: no classification)
    split        sysbench -> rwproxy (primary in hostgroup 0, replicas in hostgroup 1, pair 0 -> 1,
                 writer_is_also_reader = false: the proxy's default split) -> primary / replicas

Three workloads, because where reads may go depends on how sysbench sends them:

    ro-trx        oltp_read_only, sysbench's default: BEGIN ... COMMIT around each transaction and
                  server-side prepared statements. Everything stays on the primary by design
                  (transactions wholly on the writer, COM_STMT_* on the writer).
    ro-autocommit oltp_read_only --skip-trx=on --db-ps-mode=disable: autocommit text-protocol
                  SELECTs, which split sends to the replicas.
    rw-autocommit oltp_read_write --skip-trx=on --db-ps-mode=disable: reads to the replicas, writes
                  to the primary. Without transactions, two threads can delete and re-insert the same
                  id at once, so duplicate-key errors (1062) are part of this workload (direct too;
                  akopytov/sysbench#23, #253): 1062 is added to sysbench's ignored errors, and every
                  ignored error is listed by code (sysbench runs with --verbosity=5, which names them).

Each workload runs against each of its targets once per round; the target order rotates every round
and the figures are medians over rounds. Around every run the servers' own Com_select counters are
read (SHOW GLOBAL STATUS, which itself costs no Com_select) to report where the SELECTs executed.
Before each run the replicas are caught up (MASTER_GTID_WAIT), outside the counted window.

Reuses bench/run_sysbench.py's helpers (sysbench output parsing, process handling, machine facts,
section writing). Same honesty rules: a failed run, FATAL line, ignored error or reconnect is shown,
never dropped, and failed runs do not count in the medians. Every process started here is stopped on
exit, also on Ctrl-C or SIGTERM.

    .venv/bin/python bench/run_split.py --time 20 --rounds 3        # full run, writes docs/benchmarks.md
    .venv/bin/python bench/run_split.py --time 5 --rounds 1 --out /tmp/split.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run_sysbench as rs  # bench/ is not a package: imported from its own directory

from proxy.sandbox import render_proxy_config

BEGIN, END = "<!-- BEGIN splitting -->", "<!-- END splitting -->"
TARGETS = ("direct", "passthrough", "split")
AUTOCOMMIT = ("--skip-trx=on",)
RW_IGNORE = "--mysql-ignore-errors=1213,1020,1205,1062"  # sysbench's default list + duplicate key


@dataclass(frozen=True)
class Workload:
    key: str
    script: str
    mode: str  # as shown in the table
    ps_mode: str
    extra: tuple[str, ...]
    targets: tuple[str, ...]


WORKLOADS = {
    w.key: w
    for w in (
        Workload("ro-trx", "oltp_read_only", "default (BEGIN/COMMIT, prepared statements)", "auto", (), TARGETS),
        Workload("ro-autocommit", "oltp_read_only", "--skip-trx=on --db-ps-mode=disable", "disable", AUTOCOMMIT, TARGETS),
        Workload("rw-autocommit", "oltp_read_write", "--skip-trx=on --db-ps-mode=disable", "disable",
                 (*AUTOCOMMIT, RW_IGNORE), ("passthrough", "split")),
    )
}


@dataclass
class Run:
    """One sysbench run, plus what the servers counted while it ran."""

    result: rs.RunResult
    reads: int | None = None  # sysbench's own `read:` count (SELECTs sent)
    selects: dict[str, int] = field(default_factory=dict)  # server name -> Com_select delta
    ignored_codes: list[str] = field(default_factory=list)
    other_cpu: dict[str, float] = field(default_factory=dict)  # CPU-seconds used meanwhile by processes not ours
    wall: float = 0.0  # seconds the run took

    def other_share(self, ncpu: int) -> float | None:
        """CPU the rest of the machine used during the run, as a share of its capacity."""
        return sum(self.other_cpu.values()) / (ncpu * self.wall) if self.wall else None

    def on(self, names: list[str]) -> int:
        return sum(self.selects.get(n, 0) for n in names)


# --------------------------------------------------------------------------- measuring


def cpu_times() -> dict[int, tuple[int, str, float]]:
    """pid -> (ppid, label, CPU-seconds so far), for every process (all its threads), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    procs = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        # rest[0] is field 3 (state): ppid is field 4, utime and stime are fields 14 and 15.
        words = [a.decode(errors="replace") for a in argv if a]
        label = f"[{comm}]" if not words else os.path.basename(words[0])
        if label.startswith("python") and len(words) > 2 and words[1] == "-m":
            label = f"python -m {words[2]}"
        procs[int(d.name)] = (int(rest[1]), label, (int(rest[11]) + int(rest[12])) / tick)
    return procs


def others_cpu(before: dict, after: dict, ours: set[int]) -> dict[str, float]:
    """label -> CPU-seconds used between two `cpu_times` by user processes that are neither ours nor
    children of ours (a process that started and ended in between is not seen)."""
    used: dict[str, float] = {}
    for pid, (ppid, label, cpu) in after.items():
        if pid in ours or ppid in ours or pid == 2 or ppid == 2:  # kernel threads work for everyone, us included
            continue
        delta = cpu - (before[pid][2] if pid in before and before[pid][1] == label else 0.0)
        if delta > 0:
            used[label] = used.get(label, 0.0) + delta
    return used


def com_select(cluster) -> dict[str, int]:
    """server name -> Com_select. SHOW GLOBAL STATUS through the CLI in batch mode costs none."""
    return {s.name: int(s.value("SHOW GLOBAL STATUS LIKE 'Com_select'").split("\t")[1]) for s in cluster.servers}


def ignored_codes(text: str) -> list[str]:
    """Codes of the errors sysbench ignored, from its debug log ("Ignoring error 1062 ..."); its
    logger folds repeats into "(last message repeated N times)"."""
    codes: list[str] = []
    previous = None
    for line in text.splitlines():
        if m := re.search(r"Ignoring error (\d+)", line):
            codes.append(previous := m[1])
        elif (m := re.fullmatch(r"\s*\(last message repeated (\d+) times\)\s*", line)) and previous:
            codes += [previous] * int(m[1])
        else:
            previous = None
    return codes


def run_measured(w: Workload, target: str, where: tuple[str, int] | str, cluster, primary, args, rnd: int,
                 ours: set[int]) -> Run:
    if isinstance(where, str):
        return Run(rs.RunResult(w.key, target, rnd, [], note=f"target unavailable: {where}"))
    argv = rs.sysbench_argv(w.script, *where, primary, args, "run", ps_mode=w.ps_mode, extra=(*w.extra, "--verbosity=5"))
    run = Run(rs.RunResult(w.key, target, rnd, argv))
    cluster.wait_replicated(timeout=300)  # the replicas start every run caught up (outside the window)
    before = com_select(cluster)
    cpu_before, t0 = cpu_times(), time.monotonic()
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=args.time + 120, check=False)
        text = out.stdout + out.stderr
        run.result.exit_status = out.returncode
    except subprocess.TimeoutExpired as exc:
        text = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        run.result.note = f"sysbench still running {args.time + 120} s after start; killed"
    run.wall = time.monotonic() - t0
    run.other_cpu = others_cpu(cpu_before, cpu_times(), ours)
    after = com_select(cluster)
    rs.parse_sysbench(text, run.result)
    if m := re.search(r"^\s*read:\s+(\d+)", text, re.MULTILINE):
        run.reads = int(m[1])
    run.selects = {n: after[n] - before[n] for n in before}
    run.ignored_codes = ignored_codes(text)
    if run.result.ignored_errors != len(run.ignored_codes):
        run.result.note = (f"sysbench counted {run.result.ignored_errors} ignored errors but named "
                           f"{len(run.ignored_codes)}: {run.result.note}")
    return run


# --------------------------------------------------------------------------- targets


def start_proxies(cluster, base_dir: Path, procs: rs.Processes) -> dict[str, tuple[str, int] | str]:
    """direct, passthrough and split: (host, port) for sysbench, or why the target is unavailable."""
    p = cluster.primary
    targets: dict[str, tuple[str, int] | str] = {"direct": (p.host, p.port)}
    primary_only = [{"hostgroup_id": 0, "hostname": p.host, "port": p.port, "comment": "primary"}]
    for name, servers in (("passthrough", primary_only), ("split", None)):
        port = rs.free_port()
        cfg, log = base_dir / f"{name}.toml", base_dir / f"{name}.log"
        # servers=None: proxy.sandbox's defaults (primary hg 0, replicas hg 1, pair 0 -> 1,
        # writer_is_also_reader = false), the same config as the integration tests' `proxy` fixture.
        cfg.write_text(render_proxy_config(cluster, port, servers=servers))
        argv = [sys.executable, "-m", "proxy", "--config", str(cfg)]
        print(f"starting {name}: {shlex.join(argv)}", flush=True)
        proc = procs.start(name, argv, log, cwd=rs.REPO)
        problem = rs.wait_for_port("127.0.0.1", port, proc, log, timeout=30)
        targets[name] = problem if problem else ("127.0.0.1", port)
        if problem:
            print(f"  {name} unavailable: {problem}", file=sys.stderr)
    return targets


def proxy_revision() -> str:
    """The commit the proxies ran, and which of their files differed from it (others edit them)."""
    def git(*a: str) -> str:
        out = subprocess.run(["git", "-C", str(rs.REPO), *a], capture_output=True, text=True, check=False)
        return out.stdout.rstrip("\n") if out.returncode == 0 else ""  # keep porcelain's leading blanks

    head = git("log", "-1", "--format=%h (%s)")
    if not head:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--", "proxy", "rules").splitlines()
    files = ", ".join(line[3:] for line in dirty)
    head = head if len(head) <= 90 else head[:88] + "…)"
    return f"commit {head}" + (f", with uncommitted changes in {files}" if dirty else " (proxy/ and rules/ clean)")


def log_problems(path: Path, limit: int = 20) -> list[str]:
    """WARNING/ERROR/CRITICAL lines and tracebacks of a proxy log."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", line)][:limit]


# --------------------------------------------------------------------------- report


def errors_cell(s: rs.Summary, runs: list[Run]) -> str:
    cell = s.errors_cell()
    codes = Counter(c for r in runs for c in r.ignored_codes)
    if codes:
        cell += " (" + ", ".join(f"{code} ×{n}" for code, n in sorted(codes.items())) + ")"
    return cell


def render(runs: list[Run], cluster, args, info: dict[str, str], examples: dict[str, list[str]],
           invocation: str, proxy_logs: dict[str, list[str]]) -> str:
    workloads = [WORKLOADS[k] for k in args.workloads]
    groups = {(w.key, t): [r for r in runs if (r.result.workload, r.result.target) == (w.key, t)]
              for w in workloads for t in w.targets}
    summaries = {k: rs.Summary(k[0], k[1], [r.result for r in v]) for k, v in groups.items()}
    primary, replicas = cluster.primary.name, [r.name for r in cluster.replicas]
    ncpu = int(info["nproc"]) if info["nproc"].isdigit() else (os.cpu_count() or 1)
    shares = [s for r in runs if (s := r.other_share(ncpu)) is not None]
    totals: dict[str, float] = {}
    for r in runs:
        for label, cpu in r.other_cpu.items():
            totals[label] = totals.get(label, 0.0) + cpu
    top = ", ".join(f"`{label}` {cpu:,.1f} CPU-s" for label, cpu in sorted(totals.items(), key=lambda kv: -kv[1])[:4])
    others = (f"median {statistics.median(shares):.0%}, max {max(shares):.0%} of the {ncpu} CPUs"
              + (f" (over all runs: {top})" if top else "")) if shares else "not measured"

    rows = ["| workload | mode | target | QPS | p95 ms | errors | ratio vs direct | ratio split/passthrough |",
            "|---|---|---|---:|---:|---|---:|---:|"]
    for w in workloads:
        for t in w.targets:
            s = summaries[(w.key, t)]
            qps = s.median("qps")
            direct = summaries.get((w.key, "direct"))
            passthrough = summaries.get((w.key, "passthrough"))
            vs_direct = rs.ratio(qps, direct.median("qps")) if direct else "—"
            vs_pass = rs.ratio(qps, passthrough.median("qps")) if t == "split" and passthrough else "—"
            rows.append(f"| {w.script} | {w.mode} | {t} | {rs.fmt(qps, ',.0f')} | {rs.fmt(s.median('p95_ms'), '.2f')} "
                        f"| {errors_cell(s, groups[(w.key, t)])} | {vs_direct} | {vs_pass} |")

    where = ["| workload | mode | target | SELECTs sent (sysbench) | Com_select primary | "
             + " | ".join(f"Com_select {n}" for n in replicas) + " | on replicas |",
             "|---|---|---|---:|---:|" + "---:|" * len(replicas) + "---:|"]
    for w in workloads:
        for t in w.targets:
            if t == "direct":
                continue
            rr = [r for r in groups[(w.key, t)] if r.reads is not None]
            sent = sum(r.reads for r in rr)
            on_p, on_r = sum(r.on([primary]) for r in rr), sum(r.on(replicas) for r in rr)
            share = f"{on_r / (on_p + on_r):.1%}" if on_p + on_r else "—"
            per_replica = " | ".join(f"{sum(r.on([n]) for r in rr):,}" for n in replicas)
            where.append(f"| {w.script} | {w.mode} | {t} | {sent:,} | {on_p:,} | {per_replica} | {share} |")

    per_round = []
    for w in workloads:
        for t in w.targets:
            rr = sorted(groups[(w.key, t)], key=lambda r: r.result.round)
            qps = ", ".join((f"{r.result.qps:,.0f}" if r.result.qps is not None else "—")
                            + (f" [others {s:.0%}]" if (s := r.other_share(ncpu)) is not None else "") for r in rr)
            extra = ""
            if t == "split":
                shares = [f"{r.on(replicas) / (r.on([primary]) + r.on(replicas)):.0%}" if r.on([primary]) + r.on(replicas) else "—" for r in rr]
                extra = f" (SELECTs on replicas: {', '.join(shares)})"
            per_round.append(f"- {w.script} {w.mode} / {t}: {qps}{extra}")

    def safe(argv: list[str]) -> str:  # the sandbox password is public; any other is masked
        return shlex.join([a if not a.startswith("--mysql-password=") or a == "--mysql-password=app_pw"
                           else "--mysql-password=…" for a in argv])

    commands = []
    for w in workloads:
        if w.key in examples:
            commands += [f"# {w.script}, {w.mode}", safe(examples[w.key])]
    problems = []
    for name, lines in proxy_logs.items():
        problems.append(f"- {name}: " + (f"{len(lines)} WARNING/ERROR line(s):" if lines else "no WARNING/ERROR lines"))
        # Without the timestamp; one line per distinct message.
        distinct = dict.fromkeys(re.sub(r"^\S+ \S+ ", "", line) for line in lines)
        problems += ["  - `" + rs.md_escape(line[:240]).replace("`", "'") + "`" for line in list(distinct)[:5]]

    return "\n".join([
        BEGIN,
        "## Read/write splitting (issue 4)",
        "",
        "The same sysbench load straight to the primary (`direct`), through rwproxy with only the primary",
        "configured (`passthrough`: one hostgroup, no pair, no rules, so no statement is classified) and",
        "through rwproxy splitting (`split`: primary in hostgroup 0, both replicas in hostgroup 1,",
        "`[[replication_hostgroups]]` 0 → 1 with `writer_is_also_reader = false`).",
        "",
        "- sysbench's default mode wraps every transaction in BEGIN … COMMIT and uses server-side prepared",
        "  statements: a transaction runs wholly on the writer and COM_STMT_* go to the writer, so `split`",
        "  sends *all* of it to the primary (by design) and only adds the cost of classifying.",
        "- With `--skip-trx=on --db-ps-mode=disable` every SELECT is an autocommit text query that `split`",
        "  can prove is a read, and sends to a replica.",
        "- `oltp_read_write --skip-trx=on` has duplicate-key errors (1062) by design, direct as well: two",
        "  threads delete and re-insert the same id with no transaction around it (akopytov/sysbench#23).",
        f"  They are ignored (`{RW_IGNORE}`) and listed by code in the errors column; 1290",
        "  (a write refused by a read_only replica) is not in the list and would fail the run.",
        "",
        "QPS and p95 are medians over the rounds that completed cleanly; target order rotates every round.",
        "Where the SELECTs ran is counted by the servers themselves (Com_select deltas around each run).",
        "",
        "**Caveat:** on this 2-CPU box the primary, both replicas, the proxy and sysbench all share the same",
        "2 CPUs, so spreading reads over replicas cannot add capacity here; the figures measure the cost of",
        "the proxy's routing (and of running three servers' worth of work on one machine), not read scaling.",
        "",
        f"- Date: {info['date']}",
        (f"- Machine: {info['nproc']} CPUs (nproc), {info['cpu']}, Linux {info['kernel']}; load average "
         f"at start {info['load']}, at end {info['load_end']} (the benchmark's own 8 sysbench threads and 3 "
         f"servers count in it)"),
        (f"- Shared machine: CPU used during the runs by processes other than this benchmark's "
         f"(other people's test suites, ...): {others}; per run in the list below"),
        f"- rwproxy: {info['revision']}",
        f"- Server: MariaDB {info['mariadb']} (primary + 2 replicas, GTID, ROW binlog); {info['sysbench']}; {info['python']}",
        (f"- Load: {args.tables} tables × {args.table_size} rows, {args.threads} threads, {args.time} s per run, "
         f"{args.rounds} round(s)"),
        "",
        "Command:",
        "",
        "```sh",
        invocation,
        "```",
        "",
        "The sysbench runs it made (host/port vary by target):",
        "",
        "```sh",
        *commands,
        "```",
        "",
        *rows,
        "",
        "Where the SELECTs ran (Com_select deltas, summed over the rounds):",
        "",
        *where,
        "",
        "QPS per round (in round order; [others N%]: CPU that processes other than the benchmark's used during that run):",
        "",
        *per_round,
        "",
        "Proxy logs:",
        "",
        *problems,
        END,
    ])


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    keys = tuple(WORKLOADS)
    ap.add_argument("--time", type=int, default=20, help="seconds per sysbench run (default 20)")
    ap.add_argument("--threads", type=int, default=8, help="sysbench threads (default 8)")
    ap.add_argument("--tables", type=int, default=4)
    ap.add_argument("--table-size", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (default 3)")
    ap.add_argument("--workloads", type=lambda s: rs.check_subset(s, keys), default=list(keys),
                    help=f"comma list, from {','.join(keys)}")
    ap.add_argument("--out", type=Path, default=rs.REPO / "docs" / "benchmarks.md")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (data, logs, proxy configs)")
    ap.add_argument("--base-dir", type=Path, help="work dir (default: a new temp dir)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = shlex.join(["python", "bench/run_split.py", *(sys.argv[1:] if argv is None else argv)])

    base_dir = rs.start_run(args, "rwproxy-split-")
    procs, cluster = rs.Processes(), None
    try:
        info = rs.machine()  # load average before our own servers start
        info["date"] = f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
        info["revision"] = proxy_revision()  # what the proxies will import
        cluster, primary = rs.start_sandbox(base_dir, replicas=2)
        info["mariadb"] = rs.mariadb_cli(primary, "SELECT VERSION()")
        print(f"primary {primary.host}:{primary.port}, replicas {primary.replicas}: MariaDB {info['mariadb']}; "
              f"work dir {base_dir}", flush=True)
        rs.prepare(primary, args)
        cluster.wait_replicated(timeout=300)
        targets = start_proxies(cluster, base_dir, procs)

        runs: list[Run] = []
        examples: dict[str, list[str]] = {}
        for rnd in range(args.rounds):
            for key in args.workloads:
                w = WORKLOADS[key]
                n = rnd % len(w.targets)
                for target in w.targets[n:] + w.targets[:n]:
                    ours = {os.getpid(), *(p.pid for _, p in procs.procs), *(s.pid for s in cluster.servers if s.pid)}
                    run = run_measured(w, target, targets[target], cluster, primary, args, rnd, ours)
                    runs.append(run)
                    if run.result.command and target == "split":
                        examples.setdefault(key, run.result.command)
                    r = run.result
                    status = "ok" if r.ok else f"FAILED ({r.note or (r.fatal[0] if r.fatal else f'exit {r.exit_status}')})"
                    where = " ".join(f"{k}={v}" for k, v in run.selects.items())
                    print(f"round {rnd + 1}/{args.rounds} {w.key:<14} {target:<11} qps={rs.fmt(r.qps, '.0f'):>7} "
                          f"p95={rs.fmt(r.p95_ms, '.2f'):>6} ms ignored={r.ignored_errors}"
                          f"{' ' + str(dict(Counter(run.ignored_codes))) if run.ignored_codes else ''} "
                          f"reads={run.reads} Com_select: {where} others_cpu={sum(run.other_cpu.values()):.1f}s "
                          f"{status}", flush=True)

        info["load_end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        proxy_logs = {name: log_problems(base_dir / f"{name}.log") for name in ("passthrough", "split")}
        for name, lines in proxy_logs.items():
            for line in lines:
                print(f"{name} log: {line}", file=sys.stderr)
        section = render(runs, cluster, args, info, examples, invocation, proxy_logs)
        rs.write_section(args.out, section, BEGIN, END)
        print(f"\nwrote section to {args.out}\n")
        print(section)
        return 0 if all(r.result.ok for r in runs) else 1
    finally:
        rs.cleanup(procs, cluster, args, base_dir)


if __name__ == "__main__":
    rs.run_main(main)
