"""The digest table under 1,000,000 distinct digests, through a real proxy: its bound and the proxy's memory.

Theory of operation: one sandbox MariaDB primary, and for each `--bounds` value a fresh rwproxy
(passthrough: the primary alone in hostgroup 0, so every statement is still digested, see
proxy.frontend) with ``[stats] max_digests`` set to it and ``[listeners.metrics]`` on a free port.
Each proxy gets a warm-up (`--warmup` statements of one shape, so imports, pools and caches are
settled) and then `--statements` statements of distinct shapes::

    SELECT <n> AS c<n>, 'x' AS payload_column_name, 2 AS another_column_name_for_length

whose normalized texts (rules.digest: literals become ``?``, the alias stays) are all different:
``SELECT ? AS C<n>,? AS PAYLOAD_COLUMN_NAME,? AS ANOTHER_COLUMN_NAME_FOR_LENGTH``, ~75 characters,
a typical digest text length. They are sent over `--connections` asyncio connections (a minimal
client in this file: mysql_native_password login, COM_QUERY), each keeping `--pipeline` statements
in flight (the proxy reads pipelined commands and answers them in order), so the proxy, not the
client, is the bottleneck.

Reported per bound: digest entries at the end and evictions (from the metrics endpoint: the same
registry numbers the admin port's stats_mysql_query_digest shows), statements counted, the proxy's
resident set (VmRSS from /proc/<pid>/status) after the warm-up and at the end, its peak (VmHWM),
statements per second and the proxy's CPU µs per statement (/proc/<pid>/stat). Each new digest is a
classifier cache miss too (a full sqlglot parse): that, not the digest table, is most of the CPU.

    .venv/bin/python bench/run_digests.py                                   # 1,000,000 x bounds 1000,10000,1000000
    .venv/bin/python bench/run_digests.py --statements 100000 --bounds 10000

Every process it starts is stopped on exit, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import os
import shlex
import struct
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_sysbench as rs
from run_sysbench import cpu_seconds

SHAPE = "SELECT {n} AS c{n}, 'x' AS payload_column_name, 2 AS another_column_name_for_length"
WARM = "SELECT {n} AS warm, 'x' AS payload_column_name, 2 AS another_column_name_for_length"  # one digest

# Capability bits the client announces: 4.1 protocol, secure connection, plugin auth, transactions.
_CAPS = (1 << 0) | (1 << 2) | (1 << 9) | (1 << 13) | (1 << 15) | (1 << 19)


# ---- a minimal asyncio MySQL client ---------------------------------------------------------------


def _native_scramble(password: str, salt: bytes) -> bytes:
    h1 = hashlib.sha1(password.encode()).digest()
    h2 = hashlib.sha1(h1).digest()
    h3 = hashlib.sha1(salt + h2).digest()
    return bytes(a ^ b for a, b in zip(h1, h3, strict=True))


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(4)
    n = head[0] | head[1] << 8 | head[2] << 16
    return head[3], await reader.readexactly(n)


def _packet(payload: bytes, seq: int) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes((seq,)) + payload


async def login(host: str, port: int, user: str, password: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    _, greeting = await _read_packet(reader)
    if greeting[:1] == b"\xff":
        raise RuntimeError(f"server refused: {greeting[3:]!r}")
    p = greeting.index(b"\0", 1) + 1  # protocol version, server version
    p += 4  # connection id
    salt = greeting[p : p + 8]
    p += 8 + 1 + 2 + 1 + 2 + 2  # filler, caps low, charset, status, caps high
    salt_len = greeting[p]
    p += 1 + 10
    salt += greeting[p : p + max(13, salt_len - 8) - 1]
    token = _native_scramble(password, salt)
    resp = struct.pack("<IIB23x", _CAPS, 1 << 24, 45) + user.encode() + b"\0" + bytes((len(token),)) + token + b"mysql_native_password\0"
    writer.write(_packet(resp, 1))
    seq, reply = await _read_packet(reader)
    if reply[:1] == b"\xfe":  # auth switch request
        plugin_end = reply.index(b"\0", 1)
        salt = reply[plugin_end + 1 :].rstrip(b"\0")
        writer.write(_packet(_native_scramble(password, salt), seq + 1))
        seq, reply = await _read_packet(reader)
    if reply[:1] != b"\x00":
        raise RuntimeError(f"login failed: {reply!r}")
    return reader, writer


class Replies:
    """Counts complete text-protocol replies in a byte stream (no DEPRECATE_EOF: a result set ends
    with its second EOF; an OK or ERR first packet ends it at once)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.done = 0
        self.errors = 0
        self._eofs = 0
        self._first = True

    def feed(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        n = len(buf)
        while pos + 4 <= n:
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            if pos + 4 + length > n:
                break
            head = buf[pos + 4] if length else 0
            if self._first:
                self._first = False
                if head in (0x00, 0xFF):
                    self.done += 1
                    self.errors += head == 0xFF
                    self._first = True
            elif head == 0xFE and length < 9:
                self._eofs += 1
                if self._eofs == 2:
                    self.done += 1
                    self._eofs = 0
                    self._first = True
            elif head == 0xFF:
                self.done += 1
                self.errors += 1
                self._eofs = 0
                self._first = True
            pos += 4 + length
        del buf[:pos]


async def send_statements(host: str, port: int, user: str, password: str, numbers: range, pipeline: int, shape: str) -> tuple[int, int]:
    """Send `shape` for every n in `numbers` with up to `pipeline` in flight; (replies, errors)."""
    reader, writer = await login(host, port, user, password)
    replies = Replies()
    sent = 0
    it = iter(numbers)
    total = len(numbers)

    def send(k: int) -> int:
        out = []
        for _ in range(k):
            n = next(it, None)
            if n is None:
                break
            out.append(_packet(b"\x03" + shape.format(n=n).encode(), 0))
        writer.write(b"".join(out))
        return len(out)

    sent += send(pipeline)
    while replies.done < total:
        data = await reader.read(1 << 16)
        if not data:
            raise RuntimeError(f"connection closed after {replies.done} replies")
        before = replies.done
        replies.feed(data)
        if replies.done > before and sent < total:
            sent += send(replies.done - before)
    writer.write(_packet(b"\x01", 0))  # COM_QUIT
    writer.close()
    return replies.done, replies.errors


async def drive(host: str, port: int, user: str, password: str, start: int, count: int, connections: int, pipeline: int,
                shape: str = SHAPE) -> tuple[int, int]:
    per = [range(start + i, start + count, connections) for i in range(connections)]
    results = await asyncio.gather(*(send_statements(host, port, user, password, r, pipeline, shape) for r in per))
    return sum(r[0] for r in results), sum(r[1] for r in results)


# ---- measuring ------------------------------------------------------------------------------------


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])  # kB
    return 0



def scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


@dataclass
class Result:
    bound: int
    statements: int
    errors: int
    seconds: float
    entries: float
    evictions: float
    counted: float
    rss_before_kib: int
    rss_after_kib: int
    hwm_kib: int
    cpu_us: float
    classifier_entries: float

    @property
    def growth_mib(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / 1024


def proxy_toml(port: int, metrics_port: int, cluster, bound: int) -> str:
    from proxy.sandbox import render_proxy_config

    p = cluster.primary
    servers = [{"hostgroup_id": 0, "hostname": p.host, "port": p.port, "comment": "primary"}]
    extra = f'[listeners.metrics]\naddress = "127.0.0.1"\nport = {metrics_port}\n\n[stats]\nmax_digests = {bound}\n'
    return render_proxy_config(cluster, port, servers=servers, extra_toml=extra)


def run_bound(bound: int, cluster, primary, args, base_dir: Path, procs: rs.Processes) -> Result | str:
    port, mport = rs.free_port(), rs.free_port()
    cfg, log = base_dir / f"proxy-{bound}.toml", base_dir / f"proxy-{bound}.log"
    cfg.write_text(proxy_toml(port, mport, cluster, bound))
    argv = [sys.executable, "-m", "proxy", "--config", str(cfg)]
    print(f"max_digests = {bound:,}: starting {shlex.join(argv)}", flush=True)
    proc = procs.start(f"proxy-{bound}", argv, log, cwd=rs.REPO)
    problem = rs.wait_for_port("127.0.0.1", port, proc, log, timeout=60)
    if problem:
        return problem
    try:
        # Warm-up: one shape, so what the run adds is the digest table's and the caches' growth.
        asyncio.run(drive("127.0.0.1", port, primary.user, primary.password, 0, args.warmup, args.connections, args.pipeline, WARM))
        m0 = scrape(mport)
        rss0, cpu0 = proc_status(proc.pid, "VmRSS"), cpu_seconds(proc.pid)
        t0 = time.monotonic()
        done, errors = asyncio.run(
            drive("127.0.0.1", port, primary.user, primary.password, args.warmup, args.statements, args.connections, args.pipeline)
        )
        seconds = time.monotonic() - t0
        cpu1, rss1, hwm = cpu_seconds(proc.pid), proc_status(proc.pid, "VmRSS"), proc_status(proc.pid, "VmHWM")
        m1 = scrape(mport)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return Result(
        bound, done, errors, seconds, m1.get("rwproxy_query_digest_entries", -1), m1.get("rwproxy_query_digest_evictions_total", -1),
        m1.get("rwproxy_statements_total", 0) - m0.get("rwproxy_statements_total", 0), rss0, rss1, hwm,
        (cpu1 - cpu0) / max(done, 1) * 1e6, m1.get("rwproxy_classifier_cache_entries", 0),
    )  # fmt: skip


def render(results: list[Result | str], args, info: dict[str, str], invocation: str) -> str:
    lines = [
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {info['nproc']} CPUs ({info['cpu']}); load average at start {info['load']}, "
        f"at end {', '.join(f'{x:.2f}' for x in os.getloadavg())}; {info['python']}; MariaDB {info.get('mariadb', '?')}",
        f"- Command: `{invocation}`",
        f"- Statements: {args.statements:,} distinct shapes after a warm-up of {args.warmup:,} (one shape, literals varying), over "
        f"{args.connections} connections with {args.pipeline} in flight each; digest text "
        f"`{SHAPE.format(n='<n>')}`, normalized to ~75 characters; the classifier's own caches (bounded: "
        f"10,000 texts + 10,000 digests) fill up in every run",
        "",
        "| max_digests | entries at end | evictions | statements counted | errors | statements/s | proxy CPU µs/stmt "
        "| RSS after warm-up MiB | RSS at end MiB | RSS growth MiB | peak RSS (VmHWM) MiB | classifier cache entries at end |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if isinstance(r, str):
            lines.append(f"| FAILED: {rs.md_escape(r)} |")
            continue
        lines.append(
            f"| {r.bound:,} | {r.entries:,.0f} | {r.evictions:,.0f} | {r.counted:,.0f} | {r.errors} | {r.statements / r.seconds:,.0f} | "
            f"{r.cpu_us:.1f} | {r.rss_before_kib / 1024:.1f} | {r.rss_after_kib / 1024:.1f} | {r.growth_mib:+.1f} | {r.hwm_kib / 1024:.1f} | "
            f"{r.classifier_entries:,.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--statements", type=int, default=1_000_000)
    ap.add_argument("--bounds", default="1000,10000,1000000", help="comma list of [stats] max_digests values, one proxy each")
    ap.add_argument("--warmup", type=int, default=20_000)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--pipeline", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--base-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    args.bounds = [int(b) for b in args.bounds.split(",") if b]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    invocation = shlex.join(["python", "bench/run_digests.py", *(sys.argv[1:] if argv is None else argv)])
    base_dir = rs.start_run(args, "rwproxy-digests-")
    procs, cluster = rs.Processes(), None
    try:
        cluster, primary = rs.start_sandbox(base_dir, 0)
        info = rs.machine()
        info["mariadb"] = rs.mariadb_cli(primary, "SELECT VERSION()")
        results: list[Result | str] = []
        for bound in args.bounds:
            r = run_bound(bound, cluster, primary, args, base_dir, procs)
            results.append(r)
            print(r if isinstance(r, str) else f"  {r}", flush=True)
        rs.publish(render(results, args, info, invocation), args.out)
        ok = all(not isinstance(r, str) and not r.errors and r.statements == args.statements and r.entries <= r.bound for r in results)
        return 0 if ok else 1
    finally:
        rs.cleanup(procs, cluster, args, base_dir)


if __name__ == "__main__":
    rs.run_main(main)
