"""What TLS costs: sysbench over TLS direct vs through rwproxy (TLS front and back), interleaved.

Theory of operation: one sandbox MariaDB started with TLS (a CA and a certificate for 127.0.0.1
made here with `cryptography`), the sysbench tables prepared once, and four targets measured in
rounds whose order rotates, so a noisy phase of a shared machine hits all of them alike:

- ``direct-plain``: sysbench -> MariaDB, plaintext;
- ``direct-tls``: sysbench --mysql-ssl=on -> MariaDB (TLS);
- ``proxy-plain``: sysbench -> rwproxy -> MariaDB, plaintext both ways ([backend_tls] disabled;
  the proxy offers TLS, the client does not take it): the baseline of the proxy's own work;
- ``proxy-tls``: sysbench --mysql-ssl=on -> rwproxy (TLS, the same certificate) -> MariaDB with
  ssl_mode = verify_identity: TLS on both hops.

Each run is ``sysbench oltp_point_select`` (``--db-ps-mode`` auto by default); around it the
proxy's own CPU time is read from /proc/<pid>/stat (utime + stime) and divided by the statements
sysbench completed: proxy CPU µs per statement, far less sensitive to the machine's other load than
QPS. The figures are medians over rounds; the ratios that matter are proxy-tls / direct-tls (what
the proxy costs when everything is encrypted), proxy-tls / proxy-plain (what TLS adds to the
proxy), direct-tls / direct-plain (what TLS costs without a proxy, for scale).

sysbench 1.0 reads its TLS files from the working directory under fixed names (cacert.pem,
client-cert.pem, client-key.pem); they are written into the run's directory.

    .venv/bin/python bench/run_tls.py --time 20 --rounds 3
    .venv/bin/python bench/run_tls.py --time 5 --rounds 1 --threads 4       # a quick look

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run_sysbench as rs
from run_sysbench import cpu_seconds

TARGETS = ("direct-plain", "direct-tls", "proxy-plain", "proxy-tls")



def make_certificates(d: Path) -> tuple[Path, Path, Path]:
    """(CA, certificate, key) for 127.0.0.1, and sysbench's fixed-name files beside them."""
    from tests.tlsutil import make_ca

    ca = make_ca(d, "bench")
    server = ca.issue(d, "server", dns=("localhost",), ips=("127.0.0.1",))
    client = ca.issue(d, "client")
    (d / "cacert.pem").write_bytes(ca.cert.read_bytes())
    (d / "client-cert.pem").write_bytes(client.cert.read_bytes())
    (d / "client-key.pem").write_bytes(client.key.read_bytes())
    return ca.cert, server.cert, server.key


def proxy_toml(port: int, primary: rs.Primary, cert: Path, key: Path, ca: Path, backend_tls: bool) -> str:
    server_tls = f'ssl_mode = "verify_identity"\nssl_ca = "{ca}"\n' if backend_tls else 'ssl_mode = "disabled"\n'
    return (
        f'[proxy]\nlog_level = "info"\n\n[listeners.data]\naddress = "127.0.0.1"\nport = {port}\n\n'
        f'[tls]\ncertificate = "{cert}"\nkey = "{key}"\n\n'
        f'[[users]]\nusername = "{primary.user}"\npassword = "{primary.password}"\ndefault_hostgroup = 0\n\n'
        f'[[servers]]\nhostgroup_id = 0\nhostname = "{primary.host}"\nport = {primary.port}\n{server_tls}'
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--time", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--tables", type=int, default=4)
    ap.add_argument("--table-size", type=int, default=10000)
    ap.add_argument("--ps-mode", default="auto", choices=("auto", "disable"), help="sysbench --db-ps-mode (auto: prepared statements)")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--base-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    bad = [t for t in args.targets if t not in TARGETS]
    if bad:
        ap.error(f"unknown targets {bad}; choose from {','.join(TARGETS)}")
    args.replicas = 0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = shlex.join(["python", "bench/run_tls.py", *(sys.argv[1:] if argv is None else argv)])
    base_dir = rs.start_run(args, "rwproxy-tls-")
    procs, cluster = rs.Processes(), None
    try:
        certs = base_dir / "certs"
        ca, cert, key = make_certificates(certs)
        from proxy.sandbox import start_cluster

        cluster = start_cluster(base_dir / "cluster", replicas=0, extra_args=[f"--ssl-ca={ca}", f"--ssl-cert={cert}", f"--ssl-key={key}"])
        cluster.primary.sql(f"CREATE DATABASE IF NOT EXISTS {rs.DB}")
        primary = rs.Primary(cluster.primary.host, cluster.primary.port, cluster.app_user, cluster.app_password, [])
        info = rs.machine()
        rs.prepare(primary, args)
        where: dict[str, tuple[str, int, int] | str] = {}
        for t in args.targets:
            if t.startswith("direct"):
                where[t] = (primary.host, primary.port, 0)
                continue
            port = rs.free_port()
            cfg, log = base_dir / f"{t}.toml", base_dir / f"{t}.log"
            cfg.write_text(proxy_toml(port, primary, cert, key, ca, backend_tls=t == "proxy-tls"))
            argv_p = [sys.executable, "-m", "proxy", "--config", str(cfg)]
            print(f"starting {t}: {shlex.join(argv_p)}", flush=True)
            proc = procs.start(t, argv_p, log, cwd=rs.REPO)
            problem = rs.wait_for_port("127.0.0.1", port, proc, log, timeout=60)
            where[t] = problem or ("127.0.0.1", port, proc.pid)
        results: dict[str, list[rs.RunResult]] = {t: [] for t in args.targets}
        cpu_us: dict[str, list[float]] = {}
        example = ""
        for rnd in range(args.rounds):
            order = args.targets[rnd % len(args.targets):] + args.targets[: rnd % len(args.targets)]
            for t in order:
                target = where[t]
                if isinstance(target, str):
                    results[t].append(rs.RunResult("oltp_point_select", t, rnd, [], note=target))
                    continue
                host, port, pid = target
                extra = ("--mysql-ssl=on",) if t.endswith("-tls") else ()
                cmd = rs.sysbench_argv("oltp_point_select", host, port, primary, args, "run", ps_mode=args.ps_mode, extra=extra)
                example = example or shlex.join(cmd)
                r = rs.RunResult("oltp_point_select", t, rnd, cmd)
                cpu0 = cpu_seconds(pid) if pid else 0.0
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.time + 120, check=False, cwd=certs)
                cpu1 = cpu_seconds(pid) if pid else 0.0
                r.exit_status = out.returncode
                rs.parse_sysbench(out.stdout + out.stderr, r)
                m = re.search(r"^\s*queries:\s+(\d+)", out.stdout, re.MULTILINE)
                if pid and m and int(m[1]):
                    cpu_us.setdefault(t, []).append((cpu1 - cpu0) / int(m[1]) * 1e6)
                results[t].append(r)
                cpu = cpu_us.get(t, [None])[-1] if pid else None
                print(f"round {rnd + 1}/{args.rounds} {t:<13} qps={rs.fmt(r.qps, '.0f'):>7} cpu/stmt={rs.fmt(cpu, '.2f'):>6} us "
                      f"{'ok' if r.ok else 'FAILED ' + (r.note or str(r.fatal[:1]))}", flush=True)

        def med(t: str, attr: str = "qps") -> float | None:
            v = [getattr(r, attr) for r in results.get(t, []) if r.ok and getattr(r, attr) is not None]
            return statistics.median(v) if v else None

        def cpu(t: str) -> float | None:
            return statistics.median(cpu_us[t]) if cpu_us.get(t) else None

        def per_round(a: str, b: str) -> str:
            pairs = zip(results.get(a, []), results.get(b, []), strict=False)
            return ", ".join(f"{ra.qps / rb.qps:.2f}" if ra.ok and rb.ok else "-" for ra, rb in pairs)

        lines = [
            f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {info['nproc']} CPUs ({info['cpu']}); "
            f"load average at start {info['load']}, at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}; {info['python']}; {info['sysbench']}",
            f"- Command: `{invocation}`; {args.threads} threads, {args.time} s per run, {args.rounds} round(s), target order rotating",
            f"- One run: `{example}` (with `--mysql-ssl=on` for the TLS targets, in a directory holding cacert.pem, client-cert.pem, client-key.pem)",
            "",
            "| target | client → proxy | proxy → server | QPS (median) | p95 ms | proxy CPU µs/stmt | errors |",
            "|---|---|---|---:|---:|---:|---|",
        ]
        hops = {"direct-plain": ("plaintext (direct)", "—"), "direct-tls": ("TLS (direct)", "—"),
                "proxy-plain": ("plaintext", "plaintext"), "proxy-tls": ("TLS", "TLS, verify_identity")}  # fmt: skip
        for t in args.targets:
            s = rs.Summary("oltp_point_select", t, results[t])
            lines.append(f"| {t} | {hops[t][0]} | {hops[t][1]} | {rs.fmt(med(t), ',.0f')} | {rs.fmt(med(t, 'p95_ms'), '.2f')} | "
                         f"{rs.fmt(cpu(t), '.1f')} | {s.errors_cell()} |")
        lines += ["", "| ratio | medians | per round |", "|---|---:|---|"]
        for a, b in (("proxy-tls", "direct-tls"), ("proxy-plain", "direct-plain"), ("direct-tls", "direct-plain"), ("proxy-tls", "proxy-plain")):
            if a in results and b in results:
                lines.append(f"| QPS {a} / {b} | {rs.ratio(med(a), med(b))} | {per_round(a, b)} |")
        if cpu("proxy-tls") and cpu("proxy-plain"):
            lines.append(f"| proxy CPU µs/stmt proxy-tls / proxy-plain | {cpu('proxy-tls') / cpu('proxy-plain'):.2f} | "
                         + ", ".join(f"{x / y:.2f}" for x, y in zip(cpu_us['proxy-tls'], cpu_us['proxy-plain'], strict=False)) + " |")
        rs.publish("\n".join(lines), args.out)
        return 0 if all(r.ok for rr in results.values() for r in rr) else 1
    finally:
        rs.cleanup(procs, cluster, args, base_dir)


if __name__ == "__main__":
    rs.run_main(main)
