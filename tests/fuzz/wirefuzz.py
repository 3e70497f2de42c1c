"""A protocol fuzzer for a running proxy: random and mutated MySQL packets over real sockets.

Theory of operation
-------------------
`Fuzzer(target, rng)` opens connections to the proxy and sends each a handful of packets, then
reads what comes back for a moment and closes (sometimes mid-packet). Three targets:

* ``pre``  -- the data port before authentication: after the greeting, a (mutated) handshake
  response or anything else, then more packets.
* ``post`` -- the data port after a real mysql_native_password login: command packets.
* ``admin`` -- the admin port, half before and half after logging in.

Packets come from three sources, in proportions that favour the ones that reach deep code:
mutations of valid templates (a handshake response, COM_QUERY, COM_STMT_PREPARE / EXECUTE /
SEND_LONG_DATA / FETCH / CLOSE / RESET, COM_CHANGE_USER, COM_INIT_DB, COM_FIELD_LIST, COM_SET_OPTION,
admin statements...) by bit flips, byte writes, truncation, insertion, duplication and splicing;
random bytes; and a fixed seed corpus of framing abuse (`SEED_CORPUS`: truncated headers,
oversized and max-length headers with short bodies, zero-length packets, mis-sequenced ids, a
16 MB continuation with a wrong next sequence id). Headers are usually well-formed around a
mutated payload (so the payload reaches the parsers); sometimes the header is mutated too.

Safety: the ``post`` target must log in as an account with no privileges beyond reading one
schema (a fuzzed COM_REFRESH, COM_SHUTDOWN or KILL is then refused by the server itself); the
admin templates are read-only statements. Everything talks to 127.0.0.1 only, and every run is
bounded by a packet count and a deadline.

The fuzzer checks nothing about the proxy itself: callers check that the proxy is alive, its log
has no traceback, a normal client still works, and its memory and file descriptors come back.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
import time
from dataclasses import dataclass, field

__all__ = ["SEED_CORPUS", "Fuzzer", "FuzzStats", "frame", "native_token"]

# -- wire helpers (independent of proxy.protocol, on purpose) ----------------------------------------

PROTOCOL_41 = 1 << 9
SECURE_CONNECTION = 1 << 15
PLUGIN_AUTH = 1 << 19
CONNECT_WITH_DB = 1 << 3
CONNECT_ATTRS = 1 << 20
DEPRECATE_EOF = 1 << 24
MULTI_STATEMENTS = 1 << 16
CAPS = 1 | 4 | PROTOCOL_41 | (1 << 13) | SECURE_CONNECTION | PLUGIN_AUTH


def frame(payload: bytes, seq: int) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload


def native_token(password: str, scramble: bytes) -> bytes:
    if not password:
        return b""
    s1 = hashlib.sha1(password.encode()).digest()
    s2 = hashlib.sha1(s1).digest()
    return bytes(a ^ b for a, b in zip(s1, hashlib.sha1(scramble[:20] + s2).digest()))


def handshake_response(user: str, token: bytes, caps: int = CAPS, db: str | None = None, plugin: str = "mysql_native_password", attrs: bytes = b"") -> bytes:
    if db is not None:
        caps |= CONNECT_WITH_DB
    if attrs:
        caps |= CONNECT_ATTRS
    out = struct.pack("<IIB", caps, 1 << 24, 45) + b"\0" * 23 + user.encode() + b"\0" + bytes([len(token)]) + token
    if db is not None:
        out += db.encode() + b"\0"
    out += plugin.encode() + b"\0"
    if attrs:
        out += bytes([len(attrs)]) + attrs
    return out


def _scramble_of(greeting: bytes) -> bytes:
    """The 20-byte scramble of a HandshakeV10 payload (or b'' when it is not one)."""
    try:
        if greeting[:1] != b"\x0a":
            return b""
        end = greeting.index(b"\0", 1)
        p = end + 1 + 4
        part1 = greeting[p:p + 8]
        p += 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10
        part2 = greeting[p:p + 12]
        return part1 + part2
    except (ValueError, IndexError):
        return b""


# -- corpus -------------------------------------------------------------------------------------------

def _lenenc(n: int) -> bytes:
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n)
    if n < 1 << 24:
        return b"\xfd" + struct.pack("<I", n)[:3]
    return b"\xfe" + struct.pack("<Q", n)


def _execute(stmt_id: int, params: list[tuple[int, bytes]], flags: int = 0) -> bytes:
    out = b"\x17" + struct.pack("<IBI", stmt_id, flags, 1)
    if params:
        out += bytes((len(params) + 7) // 8) + b"\x01" + b"".join(struct.pack("<H", t) for t, _ in params) + b"".join(v for _, v in params)
    return out


COMMAND_TEMPLATES: list[bytes] = [
    b"\x03SELECT 1",
    b"\x03SELECT @@version_comment LIMIT 1",
    b"\x03SELECT * FROM fuzzdb.t WHERE id = 1",
    b"\x03SELECT CONCAT('a', ?) /* comment */",
    b"\x03SET NAMES utf8mb4",
    b"\x03SET @x = 1",
    b"\x03SELECT 1; SELECT 2",
    b"\x03BEGIN",
    b"\x03COMMIT",
    b"\x16SELECT ? + ?",
    b"\x16SELECT * FROM fuzzdb.t WHERE id = ?",
    _execute(1, [(0x08, struct.pack("<q", 7)), (0xFE, _lenenc(3) + b"abc")]),
    _execute(1, [(0x0F, _lenenc(5) + b"hello")], flags=1),
    _execute(2, []),
    b"\x18" + struct.pack("<IH", 1, 0) + b"long data",
    b"\x1c" + struct.pack("<II", 1, 10),
    b"\x19" + struct.pack("<I", 1),
    b"\x1a" + struct.pack("<I", 1),
    b"\x02fuzzdb",
    b"\x04t\0",
    b"\x0e",
    b"\x09",
    b"\x1b\x00\x00",
    b"\x1b\x01\x00",
    b"\x1f",
    b"\x11fuzz\0\x14" + b"\x01" * 20 + b"fuzzdb\0\x2d\x00mysql_native_password\0",
    b"\x11" + b"x" * 300,
    b"\x0c" + struct.pack("<I", 999999),
    b"\x07\x00",
    b"\x0d",
]
ADMIN_TEMPLATES: list[bytes] = [
    b"\x03SELECT * FROM mysql_servers",
    b"\x03SELECT * FROM runtime_mysql_users",
    b"\x03SELECT * FROM stats_mysql_query_digest ORDER BY count_star DESC LIMIT 5",
    b"\x03SELECT * FROM stats.stats_mysql_global",
    b"\x03SHOW TABLES FROM stats",
    b"\x03SHOW CREATE TABLE mysql_query_rules",
    b"\x03SHOW VARIABLES LIKE 'mysql-%'",
    b"\x03SHOW PROCESSLIST",
    b"\x03DIFF MYSQL ALL",
    b"\x03EXPLAIN ROUTE SELECT * FROM t WHERE id = 1 FOR UPDATE",
    b"\x03SELECT @@version_comment LIMIT 1",
    b"\x03WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) SELECT sum(x) FROM c",
    b"\x03SELECT hex(randomblob(64)), printf('%10s', 'x'), json_extract('{\"a\":1}', '$.a')",
    b"\x03SELECT fts3_tokenizer('simple')",
    b"\x03SET mysql-max_connections = 2048",
    b"\x03USE stats",
    b"\x0e",
    b"\x02main",
    b"\x04mysql_servers\0",
    b"\x09",
]

# Framing abuse, sent as raw bytes (not framed again).
SEED_CORPUS: list[bytes] = [
    b"",
    b"\x01",
    b"\x01\x00",
    b"\x01\x00\x00",  # a header cut short
    b"\x00\x00\x00\x00",  # an empty packet
    b"\x00\x00\x00\x07",  # empty, wrong sequence id
    b"\x05\x00\x00\x00\x03SEL",  # shorter than announced
    b"\xff\xff\xff\x00" + b"\x03" + b"A" * 1000,  # 16 MB announced, 1 KB sent
    b"\xff\xff\xff\x01" + b"\x03" + b"A" * 0xFFFFFE + b"\x05\x00\x00\x09SELEC",  # continuation with the wrong sequence id
    b"\xff\xff\xff\x00",  # header only, maximal length
    b"\x10\x00\x00\xff" + b"\x03SELECT 1      1",  # sequence id 255
    b"\x01\x00\x00\x00\x03" * 50,  # 50 empty COM_QUERYs in one write
    b"\x09\x00\x00\x05\x03SELECT 1",  # mis-sequenced
    b"\x09\x00\x00\x00\x03SELECT 1\x09\x00\x00\x00\x03SELECT 2",  # pipelined
    b"\x02\x00\x00\x01\x0a\x00",  # a greeting-shaped packet sent to the server
    b"\xff" * 64,
    b"\x00" * 64,
    frame(b"\x03" + "é".encode() * 10 + b"\xff\xfe", 0),  # invalid UTF-8 in a statement
    frame(b"\x03SELECT '" + b"x" * 70000 + b"'", 0),
    frame(b"\x16", 0),
    frame(b"\x17", 0),
    frame(b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00\xff\xff\xff", 0),
    frame(b"\x18\xff\xff\xff\xff", 0),
    frame(b"\x11", 0),
    frame(b"\x11\0\xff", 0),
    frame(b"\xfe", 0),
    frame(bytes(range(256)), 0),
]


# -- mutation -------------------------------------------------------------------------------------------

INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF]


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        op = rng.randrange(8)
        if op == 0 and b:  # bit flip
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # interesting byte
            b[rng.randrange(len(b))] = rng.choice(INTERESTING)
        elif op == 2 and b:  # truncate
            del b[rng.randrange(len(b)):]
        elif op == 3:  # insert random bytes
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randrange(1, 16))
        elif op == 4 and b:  # duplicate a slice
            i = rng.randrange(len(b))
            j = min(len(b), i + rng.randrange(1, 32))
            b[j:j] = b[i:j] * rng.randrange(1, 4)
        elif op == 5:  # splice with another template
            other = rng.choice(pool)
            i, j = rng.randrange(len(b) + 1), rng.randrange(len(other) + 1)
            b = b[:i] + other[j:]
        elif op == 6 and len(b) >= 4:  # an interesting little-endian integer somewhere
            i = rng.randrange(len(b) - 3)
            b[i:i + 4] = struct.pack("<I", rng.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFF, len(b))))
        else:  # a random byte
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


# -- the fuzzer ------------------------------------------------------------------------------------------


@dataclass
class FuzzStats:
    packets: int = 0
    connections: int = 0
    logins_failed: int = 0  # a post-auth connection whose login did not succeed (counted, skipped)
    bytes_sent: int = 0
    replies: int = 0  # connections that got any bytes after ours
    by_target: dict[str, int] = field(default_factory=dict)


@dataclass
class Endpoint:
    host: str
    port: int
    user: str
    password: str


class Fuzzer:
    """Random and mutated packets against `data` (pre/post-auth) and `admin` endpoints."""

    def __init__(self, data: Endpoint, admin: Endpoint | None, seed: int, read_timeout: float = 0.05) -> None:
        self.data = data
        self.admin = admin
        self.rng = random.Random(seed)
        self.read_timeout = read_timeout
        self.stats = FuzzStats()

    # one connection ---------------------------------------------------------------------------------

    def _payload(self, templates: list[bytes]) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.65:
            return mutate(rng, rng.choice(templates), templates)
        if r < 0.8:
            return rng.choice(templates)
        return rng.randbytes(rng.choice((0, 1, 2, 5, 17, 64, 200, 1000)))

    def _packet(self, templates: list[bytes], seq: int) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.04:
            return rng.choice(SEED_CORPUS)
        payload = self._payload(templates)
        data = frame(payload, seq if rng.random() < 0.9 else rng.randrange(256))
        if r < 0.1:  # the header itself mutated
            data = mutate(rng, data[:4], [data[:4]]) + data[4:]
        return data

    async def _read_some(self, reader: asyncio.StreamReader, timeout: float) -> bytes:
        got = b""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return got
            try:
                chunk = await asyncio.wait_for(reader.read(65536), left)
            except (TimeoutError, ConnectionError, OSError):
                return got
            if not chunk:
                return got
            got += chunk

    async def _login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ep: Endpoint) -> bool:
        greeting = await self._read_packet(reader)
        scramble = _scramble_of(greeting or b"")
        if not scramble:
            return False
        writer.write(frame(handshake_response(ep.user, native_token(ep.password, scramble)), 1))
        reply = await self._read_packet(reader)
        return reply is not None and reply[:1] == b"\x00"

    async def _read_packet(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await asyncio.wait_for(reader.readexactly(4), 5)
            n = int.from_bytes(head[:3], "little")
            return await asyncio.wait_for(reader.readexactly(n), 5)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            return None

    async def one(self, target: str) -> int:
        """One connection against `target` ('pre', 'post' or 'admin'); returns packets sent."""
        rng = self.rng
        ep = self.admin if target == "admin" else self.data
        assert ep is not None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(ep.host, ep.port), 5)
        except (TimeoutError, OSError):
            return 0
        sent = 0
        try:
            logged_in = target == "post" or (target == "admin" and rng.random() < 0.5)
            if logged_in:
                if not await self._login(reader, writer, ep):
                    self.stats.logins_failed += 1
                    return 0
                templates = ADMIN_TEMPLATES if target == "admin" else COMMAND_TEMPLATES
                seq = 0
            else:
                await self._read_packet(reader)  # the greeting (or an ERR)
                good = handshake_response(ep.user, b"\x01" * 20, db=rng.choice((None, "fuzzdb", "x" * 70)), attrs=rng.choice((b"", b"\x03_os\x05Linux")))
                templates = [good, handshake_response("root", b""), handshake_response(ep.user, b"", plugin="caching_sha2_password"), *COMMAND_TEMPLATES[:4]]
                seq = 1
            for _ in range(rng.choice((1, 1, 2, 3, 5, 10, 20))):
                data = self._packet(templates, seq)
                if rng.random() < 0.05 and len(data) > 1:  # cut mid-packet, then close
                    data = data[: rng.randrange(1, len(data))]
                writer.write(data)
                self.stats.bytes_sent += len(data)
                sent += 1
                if rng.random() < 0.3:
                    await writer.drain()
                    if await self._read_some(reader, self.read_timeout / 5):
                        self.stats.replies += 1
            await writer.drain()
            if await self._read_some(reader, self.read_timeout):
                self.stats.replies += 1
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            writer.transport.abort() if rng.random() < 0.3 else writer.close()
        self.stats.packets += sent
        self.stats.connections += 1
        self.stats.by_target[target] = self.stats.by_target.get(target, 0) + sent
        return sent

    async def run(self, packets: int, deadline: float, concurrency: int = 8, targets: tuple[str, ...] = ("pre", "post", "admin"), on_progress=None) -> FuzzStats:
        """Fuzz until `packets` are sent or time.monotonic() passes `deadline`."""
        if self.admin is None:
            targets = tuple(t for t in targets if t != "admin")

        async def worker() -> None:
            while self.stats.packets < packets and time.monotonic() < deadline:
                await self.one(self.rng.choice(targets))
                if on_progress is not None:
                    await on_progress(self.stats)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return self.stats


# -- what callers check ------------------------------------------------------------------------------


def open_fds(pid: int) -> int:
    import os

    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def normal_client_works(data: Endpoint, admin: Endpoint | None, timeout: float = 10.0) -> tuple[float, float]:
    """A normal client logs in and runs SELECT 1 on the data port, and one on the admin port;
    returns the seconds each took (admin: 0 without one). Raises whatever a client raised. (The
    admin port runs one statement at a time, so a fuzzer's slow admin statements delay it.)"""
    import pymysql

    t = time.perf_counter()
    with pymysql.connect(host=data.host, port=data.port, user=data.user, password=data.password, connect_timeout=timeout, read_timeout=timeout) as c, c.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    t_data = time.perf_counter() - t
    if admin is None:
        return t_data, 0.0
    t = time.perf_counter()
    with pymysql.connect(host=admin.host, port=admin.port, user=admin.user, password=admin.password, connect_timeout=timeout, read_timeout=timeout) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM mysql_servers")
        assert cur.fetchone()[0] >= 1
    return t_data, time.perf_counter() - t


def tracebacks(log_text: str) -> list[str]:
    """Lines of the proxy's log that show a traceback or an unexpected error (with one line of context)."""
    lines = log_text.splitlines()
    return [" / ".join(lines[i:i + 2]) for i, line in enumerate(lines) if "Traceback" in line or "unexpected error" in line]


FUZZ_DB_SQL = (
    "CREATE DATABASE IF NOT EXISTS fuzzdb; CREATE TABLE IF NOT EXISTS fuzzdb.t (id INT PRIMARY KEY, v VARCHAR(20));"
    "INSERT IGNORE INTO fuzzdb.t VALUES (1, 'one'), (2, 'two');"
    "CREATE USER IF NOT EXISTS 'fuzz'@'%' IDENTIFIED BY 'fuzz_pw'; CREATE USER IF NOT EXISTS 'fuzz'@'localhost' IDENTIFIED BY 'fuzz_pw';"
    # SELECT on one schema only: a fuzzed COM_REFRESH, COM_SHUTDOWN, COM_DEBUG, KILL or write is refused by the server
    "GRANT SELECT ON fuzzdb.* TO 'fuzz'@'%', 'fuzz'@'localhost';"
)
FUZZ_USER = {"username": "fuzz", "password": "fuzz_pw", "default_hostgroup": 0}
