"""What the health monitor costs the statements: sysbench point_select through the splitting proxy
with the monitor off and on, interleaved.

Theory of operation: the monitor does nothing on a statement's path (the data plane reads the last
published snapshot), so its cost is what its checks take from the event loop the statements share:
a few round trips per server per interval, plus a new Router when a status changes. That is tiny
against tens of microseconds of proxy work per statement, so only a side-by-side run shows it: one
sandbox (primary + replica), three proxies from this tree with the same splitting config (primary in
hostgroup 0, the replica in hostgroup 1, pair 0 -> 1):

    off       [monitor] enabled = false
    default   [monitor] enabled, ProxySQL's default intervals (ping 8 s, read_only 1 s, lag 10 s,
              connect 120 s)
    fast      [monitor] enabled, every check every 100 ms (connect every 1 s): 10x-80x the defaults

and ``oltp_point_select --db-ps-mode=disable`` (autocommit text SELECTs, which the proxy sends to
the replica), ``--threads 8``. Every round runs each target once, the order rotating per round so
slow phases of a shared machine hit all alike; figures are medians over rounds. Because QPS on a
shared 2-CPU machine moves by more than the effect measured, the proxy's own CPU time
(/proc/<pid>/stat utime + stime) around each run is divided by the statements sysbench completed:
proxy CPU µs per statement, far less sensitive to what else runs on the machine. The monitor's
checks during a run are counted from the proxy's Prometheus endpoint (rwproxy_monitor_check_seconds
count), to show the monitor was really working.

Because even CPU µs per statement moves by ±10 % between rounds on a shared machine, the monitor's own
cost is also measured directly, before the sysbench rounds: the three proxies sit idle side by side
for `--idle` seconds (same window, no traffic) and their CPU time is read; (CPU of a monitoring proxy −
CPU of the `off` one) / checks run = CPU per check. Times the checks per second, divided by the
statements per second, that is the monitor's share of each statement's CPU -- a figure the noise
cannot hide.

    .venv/bin/python bench/run_monitor_cost.py --time 20 --rounds 5
    .venv/bin/python bench/run_monitor_cost.py --time 5 --rounds 1        # a quick look

Prints a markdown table (and writes it to `--out` if given). Every process it starts is stopped on
exit, Ctrl-C or SIGTERM.
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
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run_sysbench as rs  # bench/ is not a package: imported from its own directory
from run_stats_cost import cpu_seconds

from proxy.sandbox import free_port, render_proxy_config

TARGETS: dict[str, dict | None] = {
    "off": None,
    "default": {"enabled": True},
    "fast": {
        "enabled": True, "ping_interval": 100, "read_only_interval": 100, "replication_lag_interval": 100,
        "connect_interval": 1000,
    },
}  # fmt: skip


def proxy_toml(port: int, metrics_port: int, cluster, monitor: dict | None) -> str:
    return render_proxy_config(cluster, port, metrics_port=metrics_port, monitor=monitor)  # default servers and pair 0 -> 1


def checks_done(metrics_port: int) -> int:
    """rwproxy_monitor_check_seconds' count, summed over servers and checks."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return int(sum(float(m[1]) for m in re.finditer(r"^rwproxy_monitor_check_seconds_count\{[^}]*\} (\S+)$", text, re.MULTILINE)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--time", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--tables", type=int, default=4)
    ap.add_argument("--table-size", type=int, default=10000)
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"comma list from {','.join(TARGETS)}")
    ap.add_argument("--idle", type=int, default=30, help="seconds of the idle CPU-per-check measurement (0 = skip)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--base-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    if unknown := [t for t in args.targets if t not in TARGETS]:
        ap.error(f"unknown targets {unknown}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = shlex.join(["python", "bench/run_monitor_cost.py", *(sys.argv[1:] if argv is None else argv)])
    base_dir = rs.start_run(args, "rwproxy-monitorcost-")
    procs, cluster = rs.Processes(), None
    try:
        cluster, primary = rs.start_sandbox(base_dir, 1)
        info = rs.machine()
        rs.prepare(primary, args)
        cluster.wait_replicated(timeout=300)
        where: dict[str, tuple[str, int, int, int]] = {}
        for name in args.targets:
            port, mport = free_port(), free_port()
            cfg, log = base_dir / f"{name}.toml", base_dir / f"{name}.log"
            cfg.write_text(proxy_toml(port, mport, cluster, TARGETS[name]))
            argv_ = [sys.executable, "-m", "proxy", "--config", str(cfg)]
            print(f"starting {name}: {shlex.join(argv_)}", flush=True)
            proc = procs.start(name, argv_, log, cwd=rs.REPO)
            problem = rs.wait_for_port("127.0.0.1", port, proc, log, timeout=60) or rs.wait_for_port("127.0.0.1", mport, proc, log, timeout=30)
            if problem:
                sys.exit(f"{name}: {problem}")
            where[name] = ("127.0.0.1", port, proc.pid, mport)
        per_check: dict[str, float] = {}
        if args.idle and "off" in where:
            import time

            time.sleep(3)  # past startup work (first checks, connections)
            c0 = {n: cpu_seconds(w[2]) for n, w in where.items()}
            k0 = {n: checks_done(w[3]) for n, w in where.items()}
            time.sleep(args.idle)
            c1 = {n: cpu_seconds(w[2]) for n, w in where.items()}
            k1 = {n: checks_done(w[3]) for n, w in where.items()}
            base = c1["off"] - c0["off"]
            for n in where:
                if n != "off" and k1[n] > k0[n]:
                    per_check[n] = (c1[n] - c0[n] - base) / (k1[n] - k0[n]) * 1e6
            print(f"idle {args.idle}s: CPU s " + ", ".join(f"{n}={c1[n] - c0[n]:.3f} ({k1[n] - k0[n]} checks)" for n in where), flush=True)
        qps: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        checks: dict[str, list[float]] = {}
        failed: list[str] = []
        names = list(args.targets)
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[: rnd % len(names)]
            for name in order:
                host, port, pid, mport = where[name]
                cmd = rs.sysbench_argv("oltp_point_select", host, port, primary, args, "run", ps_mode="disable")
                r = rs.RunResult("point_select", name, rnd, cmd)
                c0, k0 = cpu_seconds(pid), checks_done(mport)
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.time + 120, check=False)
                c1, k1 = cpu_seconds(pid), checks_done(mport)
                r.exit_status = out.returncode
                rs.parse_sysbench(out.stdout + out.stderr, r)
                m = re.search(r"^\s*queries:\s+(\d+)", out.stdout, re.MULTILINE)
                if r.ok and m and int(m[1]):
                    qps.setdefault(name, []).append(r.qps)
                    cpu.setdefault(name, []).append((c1 - c0) / int(m[1]) * 1e6)
                    checks.setdefault(name, []).append((k1 - k0) / args.time)
                else:
                    failed.append(f"round {rnd + 1} {name}: {r.note or r.fatal[:1] or out.stderr[-300:]}")
                print(f"round {rnd + 1}/{args.rounds} {name:<8} qps={rs.fmt(r.qps, '.0f'):>7} "
                      f"cpu/stmt={rs.fmt(cpu.get(name, [None])[-1], '.2f'):>6} us checks/s={(k1 - k0) / args.time:.1f}", flush=True)

        def med(d: dict[str, list[float]], name: str) -> float | None:
            return statistics.median(d[name]) if d.get(name) else None

        base_q, base_c = med(qps, "off"), med(cpu, "off")
        lines = [
            f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {info['nproc']} CPUs ({info['cpu']}); "
            f"load average at start {info['load']}, at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
            f"- Command: `{invocation}`; sysbench oltp_point_select --db-ps-mode=disable, {args.threads} threads, "
            f"{args.time} s per run, {args.rounds} round(s), target order rotating; MariaDB primary + 1 replica (proxy.sandbox)",
            "",
            "| monitor | checks/s | QPS (median) | QPS / off | QPS / off per round | proxy CPU µs/stmt (median) | − off | per round "
            "| CPU µs per check (idle) | = µs per statement |",
            "|---|---:|---:|---:|---|---:|---:|---|---:|---:|",
        ]
        for name in names:
            q, cp = med(qps, name), med(cpu, name)
            per_round = ", ".join(f"{a / b:.3f}" for a, b in zip(qps.get(name, []), qps.get("off", []))) if name != "off" else "—"
            lines.append(
                f"| {name} | {rs.fmt(med(checks, name), '.1f')} | {rs.fmt(q, ',.0f')} | {rs.ratio(q, base_q) if name != 'off' else '1'} | {per_round} | "
                f"{rs.fmt(cp, '.2f')} | {rs.fmt(None if cp is None or base_c is None or name == 'off' else cp - base_c, '+.2f')} | "
                f"{', '.join(f'{x:.2f}' for x in cpu.get(name, []))} | {rs.fmt(per_check.get(name), '.0f')} | "
                f"{rs.fmt(None if name not in per_check or not q or med(checks, name) is None else per_check[name] * med(checks, name) / q, '.3f')} |"
            )
        if failed:
            lines += ["", "Failed runs (not in the medians): " + "; ".join(failed)]
        rs.publish("\n".join(lines), args.out)
        return 0 if not failed else 1
    finally:
        rs.cleanup(procs, cluster, args, base_dir)


if __name__ == "__main__":
    rs.run_main(main)
