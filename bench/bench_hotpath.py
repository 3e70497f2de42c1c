"""The proxy's per-statement work in-process, counted in instructions: a noise-free before/after.

Theory of operation: a ClientSession is driven with whole command packets and its backend
connections get a fake transport that answers every command at once with canned reply bytes, so a
statement runs the real hot path (CommandLoop._dispatch -> classify/route -> run -> start ->
BackendConnection.relay/data_received -> reply_done) with no socket, no event loop and no syscall.
That is the proxy's own Python work per statement, and only that.

On a shared 2-CPU machine, wall-clock or even CPU-time figures move by more than a few hundred
nanoseconds from run to run, so the comparison is made in instructions: each source tree (a git
revision exported with ``git archive``) runs the harness under ``valgrind --tool=callgrind`` twice,
with P and 2P statements, and (I(2P) - I(P)) / P is the instructions per statement, setup excluded.
Instruction counts are deterministic, but they are not time: they ignore cache misses, and the real
proxy also spends kernel time per statement (recv/send), which this leaves out, so a difference here
is a larger share than in the running proxy.

Workloads: ``pass-ps`` (passthrough, COM_STMT_EXECUTE of one prepared statement, as sysbench's
default --db-ps-mode=auto), ``pass-text`` (passthrough, COM_QUERY of sysbench point selects over 4
tables x 10,000 ids: 40,000 distinct texts), ``split-text`` (the same texts through a splitting proxy:
classified, routed to the reader hostgroup, pooled connection per statement).

    .venv/bin/python bench/bench_hotpath.py --before 674de55 --after HEAD          # callgrind, ~6 min
    .venv/bin/python bench/bench_hotpath.py --time --before 674de55 --after HEAD   # best-of ns/statement instead
    .venv/bin/python bench/bench_hotpath.py --run split-text --packets 50000       # the harness itself (cwd's tree)
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODES = ("pass-ps", "pass-text", "split-text")


def pkt(payload: bytes, seq: int) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes((seq,)) + payload


EOF_PKT = b"\xfe\x00\x00\x02\x00"
COLDEF = b"\x03def\x06sbtest\x07sbtest1\x07sbtest1\x01c\x01c\x0c\x2d\x00\x78\x00\x00\x00\xfe\x00\x00\x00\x00\x00"
ROW = bytes((120,)) + b"x" * 120
REPLY = b"".join(pkt(p, i + 1) for i, p in enumerate([b"\x01", COLDEF, EOF_PKT, ROW, EOF_PKT]))  # 1 column, 1 row
PARAM = b"\x03def\x00\x00\x00\x01?\x00\x0c\x3f\x00\x00\x00\x00\x00\xfd\x80\x00\x00\x00\x00"
PREPARED = pkt(b"\x00" + (7).to_bytes(4, "little") + b"\x01\x00\x01\x00\x00\x00\x00", 1) + b"".join(
    pkt(p, i + 2) for i, p in enumerate([PARAM, EOF_PKT, COLDEF, EOF_PKT])
)


def harness(mode: str, packets: int, repeat: int) -> None:
    """Run `packets` statements `repeat` times (after one warm-up pass) with the tree in the cwd."""
    sys.path.insert(0, os.getcwd())
    from proxy.app import ProxyApp
    from proxy.backend import BackendConnection
    from proxy.config import parse_config
    try:
        from proxy.client import ClientSession
    except ImportError:  # a tree from before the data plane's reshape: one class in proxy/frontend.py
        from proxy.frontend import ClientSession
    from proxy.protocol.constants import MIRRORED_CAPABILITIES, PROXY_CAPABILITIES, Capability
    import dataclasses

    from proxy.session import ConnState, SessionState

    if "set_up" in {f.name for f in dataclasses.fields(ConnState)}:  # login state learned from the server
        def new_state():
            return SessionState("sbtest", 45)

        def new_conn_state():
            return ConnState(login_collation=45, set_up=True)
    else:  # a tree from before: the login charset as replay text, `tracking` for set up
        from proxy.session import charset_entry

        def new_state():
            return SessionState("sbtest", charset_entry(45))

        def new_conn_state():
            return ConnState(login_charset=charset_entry(45), tracking=True)

    class Transport:
        def __init__(self, conn=None) -> None:
            self.conn, self.next = conn, REPLY

        def write(self, data) -> None:
            if self.conn is not None:  # a backend: answer at once
                reply, self.next = self.next, REPLY
                self.conn.data_received(reply)

        def get_extra_info(self, name, default=None):
            return default

        def pause_reading(self) -> None: ...
        def resume_reading(self) -> None: ...
        def close(self) -> None: ...

    servers = [{"hostgroup_id": 0, "hostname": "127.0.0.1", "port": 3306}]
    raw = {"proxy": {}, "listeners": {"data": {"port": 6033}}, "users": [{"username": "app", "password": "pw"}], "servers": servers}
    if mode.startswith("split"):
        raw["servers"] = servers + [{"hostgroup_id": 1, "hostname": "127.0.0.2", "port": 3306}]
        raw["replication_hostgroups"] = [{"writer_hostgroup": 0, "reader_hostgroup": 1, "writer_is_also_reader": False}]
    app = ProxyApp(parse_config(raw))
    sess = ClientSession(app)
    sess.transport = Transport()
    sess.user, sess.username, sess.writer_hg = app.config.users["app"], "app", 0
    sess.capabilities = PROXY_CAPABILITIES & ~Capability.DEPRECATE_EOF
    sess.collation = 45
    wire = (sess.capabilities & MIRRORED_CAPABILITIES, 45)
    if hasattr(sess, "lending"):  # the backend-lending room (proxy/lending.py)
        sess.lending.wire, pool_of, take = wire, sess.lending.pool, sess.lending.take
    else:
        sess._wire, pool_of, take = wire, sess._pool, sess._take
    sess.state = new_state()
    sess.busy, sess.logged_in = False, True
    for server in app.config.servers:
        conn = BackendConnection(server)
        conn.transport = Transport(conn)
        conn.cstate = new_conn_state()
        sess.state.mark_synced(conn.cstate)
        pool = pool_of(server)
        conn.pool, conn.born, conn.lifetime = pool, time.monotonic(), 1e9
        pool.budget.open += 1
        if sess.multiplexing:
            pool.idle.append((conn, time.monotonic() + 1e6))
        else:
            pool.lent += 1
            take(conn, server.hostgroup_id)
    rnd = random.Random(1)
    if mode.endswith("text"):
        texts = [f"SELECT c FROM sbtest{t} WHERE id={i}".encode() for t in range(1, 5) for i in range(1, 10001)]
        stream = [pkt(b"\x03" + rnd.choice(texts), 0) for _ in range(packets)]
    else:
        sess.conns[0].transport.next = PREPARED
        sess.data_received(pkt(b"\x16SELECT c FROM sbtest1 WHERE id=?", 0))
        head = b"\x17" + (7).to_bytes(4, "little") + b"\x00\x01\x00\x00\x00\x00\x01\x08\x00"
        stream = [pkt(head + rnd.randint(1, 10000).to_bytes(8, "little"), 0) for _ in range(packets)]

    def run() -> None:
        feed = sess.data_received
        for p in stream:
            feed(p)
        assert not sess.busy and not sess.closed

    run()  # warm-up (and the only pass when counting instructions)
    best = None
    for _ in range(repeat):
        t0 = time.process_time_ns()
        run()
        ns = (time.process_time_ns() - t0) / packets
        best = ns if best is None else min(best, ns)
    if best is not None:
        print(f"{best:.0f} ns/statement")


def export(rev: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def instructions(tree: Path, mode: str, packets: int) -> float:
    def total(n: int) -> int:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, str(Path(__file__).resolve()),
             "--run", mode, "--packets", str(n), "--repeat", "0"],
            cwd=tree, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return int(re.search(r"Collected : (\d+)", out.stderr)[1])

    return (total(2 * packets) - total(packets)) / packets


def timed(tree: Path, mode: str, packets: int) -> float:
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--run", mode, "--packets", str(packets), "--repeat", "5"],
                         cwd=tree, capture_output=True, text=True, check=True).stdout
    return float(out.split()[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", choices=MODES, help="run the harness itself with the tree in the cwd")
    ap.add_argument("--before", default="HEAD~1")
    ap.add_argument("--after", default="HEAD")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--packets", type=int, default=None, help="statements per pass (default 2,000 with callgrind, 50,000 timed)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--time", action="store_true", help="best-of process CPU ns/statement instead of callgrind instructions")
    args = ap.parse_args()
    if args.run:
        harness(args.run, args.packets or 50_000, args.repeat)
        return 0
    packets = args.packets or (50_000 if args.time else 2_000)
    unit = "ns" if args.time else "instructions"
    with tempfile.TemporaryDirectory(prefix="rwproxy-hotpath-") as tmp:
        trees = {name: export(rev, Path(tmp) / name) for name, rev in (("before", args.before), ("after", args.after))}
        print(f"before = {args.before}, after = {args.after}; {unit} per statement ({packets:,} statements per pass)")
        print("| workload | before | after | after - before | after / before |\n|---|---:|---:|---:|---:|")
        for mode in args.modes.split(","):
            b, a = ((timed if args.time else instructions)(trees[t], mode, packets) for t in ("before", "after"))
            print(f"| {mode} | {b:,.0f} | {a:,.0f} | {a - b:+,.0f} | {a / b:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
