"""What the stats wiring costs per statement: sysbench through two builds of rwproxy, interleaved.

Theory of operation: the hot-path cost of recording statistics (one `StatsRegistry.statement_done`
per statement, a clock read when it arrives, byte counts per relayed chunk; in passthrough mode also
the digest of every COM_QUERY) is a few hundred nanoseconds against tens of microseconds of proxy
work per statement, so it only shows when both builds run under the same conditions. This script
runs them side by side: two source trees (`--before REV`, default the commit before the wiring, and
`--after REV|worktree`), each exported with ``git archive`` into the work dir and started as
``python -m proxy`` from there (the tree's own code wins over the editable install: ``-m`` puts the
working directory first on sys.path; the script checks which file each proxy imported), plus
`direct`, against one sandbox MariaDB. Every round runs each workload against every target, the
order rotating per round, so slow phases of a shared machine hit all targets alike; the figures
are medians over rounds, and after/before is also given per round (adjacent runs). Because QPS on
a shared 2-CPU machine moves by more than the effect being measured, the script also reads each
proxy process's own CPU time (/proc/<pid>/stat utime + stime) around every run and divides it by
the statements sysbench completed: proxy CPU µs per statement, the currency that matters, and far
less sensitive to what else the machine is doing.

Workloads (sysbench, `--threads 8`, `--time` s each):

- ``point-ps``: ``oltp_point_select`` with ``--db-ps-mode=auto``, run_sysbench.py's passthrough
  figure: COM_STMT_EXECUTE relayed in passthrough mode (counted under the digest of its PREPARE).
- ``point-text``: ``oltp_point_select --db-ps-mode=disable``: COM_QUERY in passthrough mode, where
  the digest must be computed per statement (classify(): cached by raw text, else a fingerprint).
- ``split-ro``: ``oltp_read_only --skip-trx=on --db-ps-mode=disable`` through a splitting proxy
  (primary in hostgroup 0, the replica in hostgroup 1): classification is done anyway; the stats
  cost is statement_done alone. Needs ``--replicas 1`` (default).

    .venv/bin/python bench/run_stats_cost.py --before 7e04512 --after worktree --time 20 --rounds 3
    .venv/bin/python bench/run_stats_cost.py --workloads point-ps --time 10 --rounds 1

Prints a markdown table (and writes it to `--out` if given); no section of docs/benchmarks.md is
replaced automatically. Every process it starts is stopped on exit, Ctrl-C or SIGTERM.
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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_sysbench as rs
from run_sysbench import cpu_seconds

WORKLOADS = {
    "point-ps": ("oltp_point_select", "auto", (), "passthrough"),
    "point-text": ("oltp_point_select", "disable", (), "passthrough"),
    "split-ro": ("oltp_read_only", "disable", ("--skip-trx=on",), "split"),
}


@dataclass
class Tree:
    name: str  # "before" / "after"
    rev: str  # a git revision, or "worktree"
    path: Path


def export_tree(rev: str, dest: Path) -> Path:
    if rev == "worktree":
        return rs.REPO
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(rs.REPO), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def describe(rev: str) -> str:
    if rev == "worktree":
        head = subprocess.run(["git", "-C", str(rs.REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(rs.REPO), "status", "--short", "--", "proxy", "rules"], capture_output=True, text=True, check=False).stdout.split()
        return f"working tree at {head}" + (f" (modified: {' '.join(d for d in dirty if d != 'M')})" if dirty else "")
    return subprocess.run(["git", "-C", str(rs.REPO), "log", "-1", "--format=%h %s", rev], capture_output=True, text=True, check=False).stdout.strip()[:100]


def proxy_toml(port: int, cluster, mode: str) -> str:
    from proxy.sandbox import render_proxy_config

    p = cluster.primary
    servers = [{"hostgroup_id": 0, "hostname": p.host, "port": p.port, "comment": "primary"}] if mode == "passthrough" else None
    return render_proxy_config(cluster, port, servers=servers)



def start_proxy(tree: Tree, mode: str, cluster, base_dir: Path, procs: rs.Processes) -> tuple[str, int, int] | str:
    port = rs.free_port()
    name = f"{tree.name}-{mode}"
    cfg, log = base_dir / f"{name}.toml", base_dir / f"{name}.log"
    cfg.write_text(proxy_toml(port, cluster, mode))
    where = subprocess.run([sys.executable, "-c", "import proxy.config as f; print(f.__file__)"], cwd=tree.path,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not where.startswith(str(tree.path)):
        return f"{tree.name} would import {where}, not its own tree {tree.path}"
    argv = [sys.executable, "-m", "proxy", "--config", str(cfg)]
    print(f"starting {name} from {tree.path}: {shlex.join(argv)}", flush=True)
    proc = procs.start(name, argv, log, cwd=tree.path)
    problem = rs.wait_for_port("127.0.0.1", port, proc, log, timeout=60)
    return problem or ("127.0.0.1", port, proc.pid)


def ratio3(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.3f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default="7e04512", help="git revision without the wiring (default 7e04512)")
    ap.add_argument("--after", default="worktree", help="git revision with it, or 'worktree' (default)")
    ap.add_argument("--workloads", default="point-ps,point-text,split-ro", help=f"comma list from {','.join(WORKLOADS)}")
    ap.add_argument("--time", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--tables", type=int, default=4)
    ap.add_argument("--table-size", type=int, default=10000)
    ap.add_argument("--replicas", type=int, default=1, choices=(0, 1, 2))
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    ap.add_argument("--forwarder", action="store_true",
                    help="also run bench/forwarder.py (the bare L4 copy) as a target: rwproxy/forwarder ratios for both trees")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--base-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workloads {unknown}; choose from {','.join(WORKLOADS)}")
    if args.replicas == 0 and any(WORKLOADS[w][3] == "split" for w in args.workloads):
        ap.error("split-ro needs --replicas 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = shlex.join(["python", "bench/run_stats_cost.py", *(sys.argv[1:] if argv is None else argv)])
    base_dir = rs.start_run(args, "rwproxy-statscost-")
    procs, cluster = rs.Processes(), None
    try:
        trees = [Tree(n, rev, export_tree(rev, base_dir / f"tree-{n}")) for n, rev in (("before", args.before), ("after", args.after))]
        cluster, primary = rs.start_sandbox(base_dir, args.replicas)
        info = rs.machine()
        rs.prepare(primary, args)
        if args.replicas:
            cluster.wait_replicated(timeout=300)
        modes = sorted({WORKLOADS[w][3] for w in args.workloads})
        targets: dict[tuple[str, str], tuple[str, int, int] | str] = {}
        for mode in modes:
            for tree in trees:
                targets[(tree.name, mode)] = start_proxy(tree, mode, cluster, base_dir, procs)
        names = ["direct", "before", "after"]
        forwarder = None
        if args.forwarder:
            port = rs.free_port()
            argv_f = [sys.executable, str(rs.REPO / "bench" / "forwarder.py"), "--listen", f"127.0.0.1:{port}", "--target", f"{primary.host}:{primary.port}"]
            proc = procs.start("forwarder", argv_f, base_dir / "forwarder.log", cwd=rs.REPO)
            problem = rs.wait_for_port("127.0.0.1", port, proc, base_dir / "forwarder.log", timeout=30)
            forwarder = problem or ("127.0.0.1", port, proc.pid)
            names.append("forwarder")
        results: dict[tuple[str, str], list[rs.RunResult]] = {}
        cpu_us: dict[tuple[str, str], list[float]] = {}  # proxy CPU µs per statement, per run
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[: rnd % len(names)]
            for w in args.workloads:
                workload, ps_mode, extra, mode = WORKLOADS[w]
                for t in order:
                    if t == "forwarder" and mode != "passthrough":
                        continue  # the forwarder copies to the primary only
                    where = (primary.host, primary.port, 0) if t == "direct" else forwarder if t == "forwarder" else targets[(t, mode)]
                    if isinstance(where, str):
                        r = rs.RunResult(w, t, rnd, [], note=where)
                    else:
                        host, port, pid = where
                        cmd = rs.sysbench_argv(workload, host, port, primary, args, "run", ps_mode=ps_mode, extra=extra)
                        r = rs.RunResult(w, t, rnd, cmd)
                        cpu0 = cpu_seconds(pid) if pid else 0.0
                        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.time + 120, check=False)
                        cpu1 = cpu_seconds(pid) if pid else 0.0
                        r.exit_status = out.returncode
                        rs.parse_sysbench(out.stdout + out.stderr, r)
                        m = re.search(r"^\s*queries:\s+(\d+)", out.stdout, re.MULTILINE)
                        if pid and m and int(m[1]):
                            cpu_us.setdefault((w, t), []).append((cpu1 - cpu0) / int(m[1]) * 1e6)
                    results.setdefault((w, t), []).append(r)
                    cpu = cpu_us.get((w, t), [None])[-1] if t != "direct" else None
                    print(f"round {rnd + 1}/{args.rounds} {w:<10} {t:<6} qps={rs.fmt(r.qps, '.0f'):>7} "
                          f"cpu/stmt={rs.fmt(cpu, '.2f'):>6} us {'ok' if r.ok else 'FAILED ' + (r.note or str(r.fatal[:1]))}", flush=True)

        def med(w: str, t: str) -> float | None:
            q = [r.qps for r in results.get((w, t), []) if r.ok]
            return statistics.median(q) if q else None

        lines = [
            f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {info['nproc']} CPUs ({info['cpu']}); "
            f"load average at start {info['load']}, at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
            f"- before: `{args.before}` = {describe(args.before)}",
            f"- after: `{args.after}` = {describe(args.after)}",
            f"- Command: `{invocation}`; {args.threads} threads, {args.time} s per run, {args.rounds} round(s), target order rotating",
            "",
            "| workload | mode | direct QPS | before QPS | after QPS | before/direct | after/direct | after/before (medians) | after/before per round "
            "| proxy CPU µs/stmt before | after | after − before |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for w in args.workloads:
            d, b, a = med(w, "direct"), med(w, "before"), med(w, "after")
            per_round = []
            for rb, ra in zip(results[(w, "before")], results[(w, "after")], strict=True):
                per_round.append(f"{ra.qps / rb.qps:.3f}" if ra.ok and rb.ok else "-")
            cb = statistics.median(cpu_us[(w, "before")]) if cpu_us.get((w, "before")) else None
            ca = statistics.median(cpu_us[(w, "after")]) if cpu_us.get((w, "after")) else None
            diff = None if ca is None or cb is None else ca - cb
            lines.append(f"| {w} | {WORKLOADS[w][3]} | {rs.fmt(d, ',.0f')} | {rs.fmt(b, ',.0f')} | {rs.fmt(a, ',.0f')} | "
                         f"{ratio3(b, d)} | {ratio3(a, d)} | {ratio3(a, b)} | {', '.join(per_round)} | "
                         f"{rs.fmt(cb, '.2f')} | {rs.fmt(ca, '.2f')} | {rs.fmt(diff, '+.2f')} |")
        if args.forwarder:
            lines += [
                "",
                "Against the bare forwarder in the same rounds (proxy CPU µs per statement / forwarder's, and QPS ratios):",
                "",
                "| workload | forwarder QPS | forwarder CPU µs/stmt | before/forwarder CPU | after/forwarder CPU | before/forwarder QPS | after/forwarder QPS |",
                "|---|---:|---:|---:|---:|---:|---:|",
            ]
            for w in args.workloads:
                if WORKLOADS[w][3] != "passthrough":
                    continue
                f = med(w, "forwarder")
                cf = statistics.median(cpu_us[(w, "forwarder")]) if cpu_us.get((w, "forwarder")) else None
                cb = statistics.median(cpu_us[(w, "before")]) if cpu_us.get((w, "before")) else None
                ca = statistics.median(cpu_us[(w, "after")]) if cpu_us.get((w, "after")) else None
                lines.append(f"| {w} | {rs.fmt(f, ',.0f')} | {rs.fmt(cf, '.2f')} | {ratio3(cb, cf)} | {ratio3(ca, cf)} | "
                             f"{ratio3(med(w, 'before'), f)} | {ratio3(med(w, 'after'), f)} |")
        rs.publish("\n".join(lines), args.out)
        return 0 if all(r.ok for rr in results.values() for r in rr) else 1
    finally:
        rs.cleanup(procs, cluster, args, base_dir)


if __name__ == "__main__":
    rs.run_main(main)
