"""MariaDB's own `main` test suite, directly and through rwproxy in passthrough: which outputs differ.

Not a CI test (it runs for ~20 minutes); the numbers and diagnoses go to docs/transparency.md.

    python bench/run_mtr.py                            # the tests issue 10 names, then the rest of
                                                       # main (alphabetical) until --budget runs out
    python bench/run_mtr.py --tests null,row --budget 0
    python bench/run_mtr.py --json /tmp/mtr.json       # every result, for the record

How: `mariadb-test` (Debian package mariadb-test) runs each `main/<name>.test` file twice, once
against server D directly and once through a proxy in front of server P, and the two outputs are
compared — not with the .result files, which assume mysql-test-run's own server configuration
(both servers here get the MTR defaults that matter: latin1, MyISAM, secure_file_priv, …, so most
tests run through to the end). D and P are twins that see the same tests in the same order, so
state a test leaves behind (a changed global variable) affects both alike. Before each run the
test's databases are dropped and `test` re-created; the vardir path is the same on both sides.

A run that does not finish within --timeout seconds is killed and reported as a hang. Every test
whose outputs differ is followed by fresh twins (a new D, P and proxy: a pool polluted by one
test would otherwise make every later test differ), and is then judged again on fresh servers (a new D and P from the same template,
a fresh proxy): a difference that stays there belongs to the test itself; one that disappears came
from what earlier tests left behind — on P's server (a global variable a failing test did not
restore, when that earlier test itself differed) or in the proxy (pooled connections carrying
another client's state: issue 10's defect 0) — and the first pass's diff says which. The proxy's log lines during a test's run are kept with
its result (e.g. "sent N bytes after the end of a reply").

Outputs are compared after replacing, on each side, the port the test connected to and the
server's data directory (tests print paths under @@datadir) with placeholders. Tests that shut down,
kill or restart their server (they wait for mysql-test-run to restart it) are not run; a test that
shuts its server down anyway gets it restarted.

The proxy connects to P as root over TCP (root@127.0.0.1, no password, like mysql-test-run's root)
and knows root as its only frontend user: a test that logs in as a user it created itself is
refused by the proxy (it is not configured there) — an expected difference, reported as such.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from proxy.sandbox import ProxyProcess, Role, Server, _copy_datadirs, _install, free_port, render_proxy_config  # noqa: E402

MTR_DIR = Path("/usr/share/mysql/mysql-test")
ISSUE_TESTS = [
    "handler_read_last", "join_crash", "keyread", "null", "merge", "mysqlshow", "row", "ctype_utf8",
    "mdev13607", "rownum", "mix2_myisam_ucs2", "ctype_ucs2_uca",
]  # fmt: skip
SYSTEM_DBS = {"mysql", "information_schema", "performance_schema", "sys"}
MTR_SERVER_ARGS = [  # what mysql-test-run's default my.cnf sets and the main suite's results assume
    "--character-set-server=latin1",
    "--collation-server=latin1_swedish_ci",
    "--default-storage-engine=MyISAM",
    "--local-infile=1",
    "--log-bin-trust-function-creators=1",
    "--key-buffer-size=1M",
    "--sort-buffer-size=256K",
    "--max-heap-table-size=1M",
    "--loose-performance-schema=ON",
    "--max-allowed-packet=16M",
]


class MtrServer(Server):
    """A sandbox server with the MTR defaults appended (later options win)."""

    vardir: Path = Path("/nonexistent")

    def args(self) -> list[str]:
        return super().args() + MTR_SERVER_ARGS + [f"--secure-file-priv={self.vardir}"]


@dataclass
class Side:
    """One server, and (for the proxied side) the proxy in front of it."""

    server: MtrServer
    proxy: ProxyProcess | None = None
    log_offset: int = 0

    @property
    def port(self) -> int:
        return self.proxy.port if self.proxy else self.server.port

    def proxy_log_since_last(self) -> list[str]:
        if self.proxy is None or self.proxy.log_path is None or not self.proxy.log_path.exists():
            return []
        data = self.proxy.log_path.read_bytes()
        new, self.log_offset = data[self.log_offset :], len(data)
        return [line for line in new.decode(errors="replace").splitlines() if " WARNING " in line or " ERROR " in line]

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop(timeout=5)
        self.server.stop(timeout=10)


@dataclass
class Run:
    status: str  # "ok" (mysqltest exit 0), "failed" (non-zero), "skipped" (exit 62), "hang"
    output: str
    seconds: float
    proxy_log: list[str] = field(default_factory=list)


class Lab:
    """Builds servers from one installed template; the vardir path is shared by both sides."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.template = work / "template"
        self.vardir = work / "var"
        self.count = 0
        _install(self.template, work / "install.log")

    def server(self) -> MtrServer:
        self.count += 1
        name = f"s{self.count}"
        datadir = self.work / name
        _copy_datadirs(self.template, [datadir])
        # One server_id for all: D and P must be indistinguishable (events print it as Originator).
        s = MtrServer(host="127.0.0.1", port=free_port(), server_id=1, datadir=datadir, socket=datadir / "mariadbd.sock", role=Role.PRIMARY, name=name)
        s.vardir = self.vardir
        self.vardir.mkdir(exist_ok=True)
        s.start(timeout=60)
        # root over TCP without a password, as mysql-test-run's root; the proxy logs in as it too.
        s.sql("CREATE USER IF NOT EXISTS root@'127.0.0.1'; GRANT ALL PRIVILEGES ON *.* TO root@'127.0.0.1' WITH GRANT OPTION; "
              "CREATE USER IF NOT EXISTS root@'::1'; GRANT ALL PRIVILEGES ON *.* TO root@'::1' WITH GRANT OPTION")  # fmt: skip
        return s

    def direct(self) -> Side:
        return Side(self.server())

    def proxied(self) -> Side:
        s = self.server()
        port = free_port()
        cfg = self.work / f"proxy-{s.name}.toml"
        users = [{"username": "root", "password": "", "default_hostgroup": 0}]
        servers = [{"hostgroup_id": 0, "hostname": s.host, "port": s.port, "comment": "mtr server"}]
        cfg.write_text(render_proxy_config(None, port, users=users, servers=servers, replication_hostgroups=[]))
        proxy = ProxyProcess(config_path=cfg, host="127.0.0.1", port=port, log_path=self.work / f"proxy-{s.name}.log")
        proxy.start(timeout=30)
        return Side(s, proxy)

    def reset(self, side: Side) -> None:
        """Drop what the previous test left (databases), re-create `test`, empty the vardir."""
        dbs = [d for d in side.server.sql("SHOW DATABASES").split() if d not in SYSTEM_DBS]
        side.server.sql(";".join([f"DROP DATABASE IF EXISTS `{d}`" for d in dbs] + ["CREATE DATABASE test"]))
        shutil.rmtree(self.vardir, ignore_errors=True)
        (self.vardir / "tmp").mkdir(parents=True)

    def run(self, side: Side, test: str, timeout: float) -> Run:
        if not side.server.is_running:  # a test shut it down (mysql-test-run would restart it)
            side.server.start(timeout=60)
        self.reset(side)
        side.proxy_log_since_last()
        port = side.port
        client = f"--no-defaults --host=127.0.0.1 --port={port} --user=root --protocol=tcp"
        env = dict(
            os.environ,
            MYSQL_TEST_DIR=str(MTR_DIR),
            MYSQLTEST_VARDIR=str(self.vardir),
            MYSQL_TMP_DIR=str(self.vardir / "tmp"),
            MASTER_MYPORT=str(port),
            MYSQL=f"mariadb {client}",
            MYSQL_SHOW=f"mariadb-show {client}",
            MYSQL_DUMP=f"mariadb-dump {client}",
            MYSQL_CHECK=f"mariadb-check {client}",
            MYSQL_IMPORT=f"mariadb-import {client}",
            MYSQLADMIN=f"mariadb-admin {client}",
            MYSQL_BINLOG="mariadb-binlog --no-defaults",
            MYSQL_CHARSETSDIR="/usr/share/mysql/charsets",
        )
        cmd = [
            "mariadb-test", "--no-defaults", "--host=127.0.0.1", f"--port={port}", "--user=root", "--protocol=tcp",
            "--database=test", f"--basedir={MTR_DIR}/", f"--tmpdir={self.vardir / 'tmp'}", f"--logdir={self.vardir}",
            "--max-connect-retries=2", f"--test-file=main/{test}.test",
        ]  # fmt: skip
        t0 = time.monotonic()
        try:
            res = subprocess.run(cmd, cwd=MTR_DIR, env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode(errors="replace")
            return Run("hang", out, time.monotonic() - t0, side.proxy_log_since_last())
        out = res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")
        status = {0: "ok", 62: "skipped"}.get(res.returncode, "failed")
        return Run(status, out, time.monotonic() - t0, side.proxy_log_since_last())


_PERL_TMP = re.compile(r"/tmp[A-Za-z0-9]{6}\b")  # mysqltest's --perl blocks run from mkstemp() files


def canonical(run: Run, side: Side) -> str:
    """The output without what differs between the two sides by construction: the port the test
    connected to, the server's data directory (tests print paths under @@datadir), and the random
    name of the temporary file a test's perl block runs from (printed in perl's error messages)."""
    out = _PERL_TMP.sub("/tmpXXXXXX", run.output.replace(str(side.server.datadir), "<datadir>"))
    return out.replace(str(side.port), "<port>").replace(str(side.server.port), "<port>")


def same(a: Run, b: Run, d: Side, p: Side) -> bool:
    return a.status == b.status and canonical(a, d) == canonical(b, p)


def first_difference(a: Run, b: Run, d: Side, p: Side) -> str:
    if a.status != b.status and "hang" in (a.status, b.status):
        return f"status {a.status} vs {b.status}; proxied output ends: {b.output.strip().splitlines()[-1:]!r}"
    lines = list(difflib.unified_diff(canonical(a, d).splitlines(), canonical(b, p).splitlines(), "direct", "proxied", n=0, lineterm=""))
    text = "\n".join(lines[:12]) + ("\n…" if len(lines) > 12 else "")
    if a.status != b.status:  # where the failing side stopped, and why (mysqltest's last words)
        text += f"\n[{b.status if b.status != 'ok' else a.status} side ends]: " + " | ".join((b if b.status != "ok" else a).output.strip().splitlines()[-3:])
    return text


# A test that shuts down, kills or restarts its server waits for mysql-test-run to bring it back:
# without mysql-test-run it only times out, directly as through the proxy. Not run.
NEEDS_MTR_RESTART = re.compile(r"restart_mysqld|shutdown_mysqld|kill_mysqld|shutdown_server|restart_abort|kill_and_restart")


def all_tests() -> list[str]:
    return sorted(p.stem for p in (MTR_DIR / "main").glob("*.test") if not NEEDS_MTR_RESTART.search(p.read_text(errors="replace")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", help="comma-separated test names (default: the issue's, then all of main)")
    ap.add_argument("--budget", type=float, default=20.0, help="minutes for the first pass (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds before a test run counts as a hang (default %(default)s)")
    ap.add_argument("--json", type=Path, help="write every result here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (servers' and proxy's logs)")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the servers and proxies
    if not (MTR_DIR / "main").is_dir() or shutil.which("mariadb-test") is None:
        print("needs the Debian package mariadb-test (apt-get install mariadb-test)", file=sys.stderr)
        return 2
    tests = a.tests.split(",") if a.tests else ISSUE_TESTS + [t for t in all_tests() if t not in ISSUE_TESTS]
    # The issue's tests once more after the others: what earlier tests leave in the proxy's pool
    # (defect 0: a test that drops and re-creates `test` through it) shows only in sequence.
    again = [] if a.tests else [f"{t}@again" for t in ISSUE_TESTS]
    work = Path(tempfile.mkdtemp(prefix="rwproxy-mtr-"))
    lab = Lab(work)
    results: dict[str, dict[str, Any]] = {}
    t_start = time.monotonic()
    d, p = lab.direct(), lab.proxied()
    try:
        budget_over = False
        for i, key in enumerate(tests + again):
            test = key.removesuffix("@again")
            named = test in ISSUE_TESTS
            if not named and time.monotonic() - t_start > a.budget * 60:
                budget_over = True
            if budget_over and not key.endswith("@again"):
                continue
            try:
                rd = lab.run(d, test, a.timeout)
                rp = lab.run(p, test, a.timeout)
            except Exception as exc:  # a server that would not come back: new twins, go on
                print(f"[{i + 1}/{len(tests)}] {key}: harness error {exc}", flush=True)
                results[key] = {"direct": "error", "proxied": "error", "same": True, "seconds": 0, "proxy_log": [], "error": str(exc)[:500]}
                d.stop()
                p.stop()
                d, p = lab.direct(), lab.proxied()
                continue
            equal = same(rd, rp, d, p)
            results[key] = {"direct": rd.status, "proxied": rp.status, "same": equal, "seconds": round(rd.seconds + rp.seconds, 1), "proxy_log": rp.proxy_log}
            if not equal:
                results[key]["diff"] = first_difference(rd, rp, d, p)
            if a.json:
                a.json.write_text(json.dumps({"results": results}, indent=1))
            print(f"[{i + 1}/{len(tests)}] {key}: {'same' if equal else 'DIFFERS'} ({rd.status}/{rp.status}, {rd.seconds + rp.seconds:.1f}s)", flush=True)
            if not equal:
                # Fresh twins for the next test: what this one left in the proxy's pool (defect 0:
                # another client's schema) would otherwise make every later test differ, so one
                # leak costs one victim and the victim names the leak. D is replaced with P, or
                # the two would drift apart (globals and users earlier tests left on D only).
                d.stop()
                p.stop()
                d, p = lab.direct(), lab.proxied()
    finally:
        d.stop()
        p.stop()
    differing = [t for t, r in results.items() if not r["same"]]
    print(f"\nfirst pass: {len(results)} tests in {(time.monotonic() - t_start) / 60:.1f} min; {len(differing)} differ", flush=True)
    for key in differing:  # judged again, each on fresh servers
        test = key.removesuffix("@again")
        d, p = lab.direct(), lab.proxied()
        try:
            rd, rp = lab.run(d, test, a.timeout), lab.run(p, test, a.timeout)
            fresh_same = same(rd, rp, d, p)
            results[key]["fresh"] = {"direct": rd.status, "proxied": rp.status, "same": fresh_same, "proxy_log": rp.proxy_log}
            if not fresh_same:
                results[key]["fresh"]["diff"] = first_difference(rd, rp, d, p)
        except Exception as exc:
            fresh_same = False
            results[key]["fresh"] = {"direct": "error", "proxied": "error", "same": False, "proxy_log": [], "diff": f"harness error: {exc}"[:500]}
        finally:
            d.stop()
            p.stop()
        print(f"fresh servers: {key}: {'same (the first difference came from an earlier test)' if fresh_same else 'DIFFERS'}", flush=True)
    real = [t for t in differing if not results[t]["fresh"]["same"]]
    counts = {
        "tests": len(results),
        "same": len(results) - len(differing),
        "differ_first_pass": len(differing),
        "differ_on_fresh_servers": len(real),
        "hangs": [t for t, r in results.items() if "hang" in (r["proxied"], r.get("fresh", {}).get("proxied"))],
        "skipped_both": sum(1 for r in results.values() if r["direct"] == r["proxied"] == "skipped"),
    }
    print("\n" + json.dumps(counts, indent=1))
    for t in real:
        r = results[t]["fresh"]
        print(f"\n== {t} ({r['direct']}/{r['proxied']})\n{r['diff']}")
        for line in r["proxy_log"][:5]:
            print(f"   proxy log: {line}")
    if a.json:
        a.json.write_text(json.dumps({"counts": counts, "results": results}, indent=1))
    if a.keep:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
