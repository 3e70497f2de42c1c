"""A minimal MySQL client over a raw socket, for tests that must send what no driver would.

It deliberately uses none of proxy.protocol, so it checks the proxy against an independent reading
of the protocol.
"""

from __future__ import annotations

import hashlib
import socket
import struct
from dataclasses import dataclass

# Capability bits (https://dev.mysql.com/doc/dev/mysql-server/latest/group__group__cs__capabilities__flags.html)
LONG_PASSWORD = 1 << 0
LONG_FLAG = 1 << 2
CONNECT_WITH_DB = 1 << 3
PROTOCOL_41 = 1 << 9
TRANSACTIONS = 1 << 13
SECURE_CONNECTION = 1 << 15
PLUGIN_AUTH = 1 << 19
IGNORE_SPACE = 1 << 8
MULTI_STATEMENTS = 1 << 16
MULTI_RESULTS = 1 << 17
SESSION_TRACK = 1 << 23
SERVER_SESSION_STATE_CHANGED = 0x4000
CLIENT_CAPS = LONG_PASSWORD | LONG_FLAG | PROTOCOL_41 | TRANSACTIONS | SECURE_CONNECTION | PLUGIN_AUTH


@dataclass
class Ok:
    affected_rows: int
    insert_id: int
    status: int
    warnings: int
    info: bytes
    state: bytes  # the session state information, as sent (b"" when none)


def _lenenc(p: bytes, pos: int) -> tuple[int, int]:
    first = p[pos]
    if first < 0xFB:
        return first, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
    return int.from_bytes(p[pos + 1 : pos + 1 + size], "little"), pos + 1 + size


def lenenc_values(row: bytes) -> list[bytes | None]:
    """The values of a text-protocol row."""
    out: list[bytes | None] = []
    pos = 0
    while pos < len(row):
        if row[pos] == 0xFB:
            out.append(None)
            pos += 1
            continue
        n, pos = _lenenc(row, pos)
        out.append(row[pos : pos + n])
        pos += n
    return out


def parse_ok(p: bytes, caps: int) -> Ok:
    """An OK packet, as a client with capabilities `caps` reads it."""
    affected, pos = _lenenc(p, 1)
    insert_id, pos = _lenenc(p, pos)
    status, warnings = struct.unpack("<HH", p[pos : pos + 4])
    pos += 4
    info = state = b""
    if caps & SESSION_TRACK:
        if pos < len(p):
            n, pos = _lenenc(p, pos)
            info, pos = p[pos : pos + n], pos + n
            if status & SERVER_SESSION_STATE_CHANGED:
                n, pos = _lenenc(p, pos)
                state = p[pos : pos + n]
    else:
        info = p[pos:]
    return Ok(affected, insert_id, status, warnings, info, state)


@dataclass
class Err:
    code: int
    sqlstate: str
    message: str


def parse_err(payload: bytes) -> Err:
    assert payload[:1] == b"\xff", f"expected an ERR packet, got {payload[:40]!r}"
    code = struct.unpack("<H", payload[1:3])[0]
    assert payload[3:4] == b"#", f"ERR without SQLSTATE marker: {payload!r}"
    return Err(code, payload[4:9].decode("ascii"), payload[9:].decode("utf-8", "replace"))


class Raw:
    """A minimal MySQL client over a raw socket."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, source: str | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.connection_id = 0
        self.scramble = b""
        self.caps = CLIENT_CAPS

    # -- bytes ---------------------------------------------------------------------------------

    def _fill(self, n: int) -> bool:
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return False
            self.buf += chunk
        return True

    def read_packet(self) -> tuple[int, bytes] | None:
        """(seq, payload), or None when the peer closed the connection cleanly between packets."""
        if not self._fill(4):
            assert not self.buf, f"connection closed mid-header: {self.buf!r}"
            return None
        n = int.from_bytes(self.buf[:3], "little")
        seq = self.buf[3]
        assert self._fill(4 + n), f"connection closed mid-packet ({len(self.buf) - 4} of {n} bytes)"
        payload = self.buf[4 : 4 + n]
        self.buf = self.buf[4 + n :]
        return seq, payload

    def expect_packet(self) -> tuple[int, bytes]:
        pkt = self.read_packet()
        assert pkt is not None, "the proxy closed the connection"
        return pkt

    def expect_closed(self, timeout: float = 5.0) -> None:
        self.sock.settimeout(timeout)
        pkt = self.read_packet()
        assert pkt is None, f"expected the connection to be closed, got packet {pkt!r}"

    def send_packet(self, payload: bytes, seq: int) -> None:
        self.sock.sendall(len(payload).to_bytes(3, "little") + bytes((seq,)) + payload)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    # -- protocol ------------------------------------------------------------------------------

    def greeting(self) -> None:
        seq, g = self.expect_packet()
        assert seq == 0 and g[0] == 10, g
        p = g.index(b"\0", 1) + 1
        self.connection_id = struct.unpack("<I", g[p : p + 4])[0]
        p += 4
        self.scramble = g[p : p + 8]
        p += 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10
        self.scramble += g[p : p + 12]

    def handshake_response(self, user: str, password: str, database: str | None = None, *, caps: int = 0, collation: int = 45) -> bytes:
        """HandshakeResponse41 with CLIENT_CAPS plus `caps`, and the connection `collation` id."""
        s1 = hashlib.sha1(password.encode()).digest()
        token = bytes(a ^ b for a, b in zip(s1, hashlib.sha1(self.scramble + hashlib.sha1(s1).digest()).digest(), strict=True))
        caps |= CLIENT_CAPS | (CONNECT_WITH_DB if database else 0)
        self.caps = caps
        payload = struct.pack("<IIB", caps, 1 << 24, collation) + b"\0" * 23 + user.encode() + b"\0"
        payload += bytes((len(token),)) + token
        if database:
            payload += database.encode() + b"\0"
        return payload + b"mysql_native_password\0"

    def login(self, user: str = "app", password: str = "app_pw", database: str | None = None, *, caps: int = 0, collation: int = 45) -> None:
        self.greeting()
        self.send_packet(self.handshake_response(user, password, database, caps=caps, collation=collation), 1)
        _, reply = self.expect_packet()
        assert reply[0] == 0, f"login failed: {parse_err(reply) if reply[0] == 0xFF else reply!r}"

    def ok(self, sql: str) -> Ok:
        """COM_QUERY of a statement answered by one OK packet: that OK, read field by field."""
        self.send_packet(b"\x03" + sql.encode(), 0)
        _, p = self.expect_packet()
        assert p[0] == 0x00, f"expected an OK for {sql!r}, got {parse_err(p) if p[0] == 0xFF else p!r}"
        return parse_ok(p, self.caps)

    def value(self, sql: str) -> bytes | None:
        """The first column of the first row of a query's result (None for NULL)."""
        rows = self.query(sql)
        assert rows, f"{sql!r} returned no row"
        return lenenc_values(rows[0])[0]

    def query(self, sql: str) -> list[bytes]:
        """COM_QUERY; the rows' raw payloads (no DEPRECATE_EOF: column defs, EOF, rows, EOF)."""
        self.send_packet(b"\x03" + sql.encode(), 0)
        _, first = self.expect_packet()
        if first[0] == 0xFF:
            raise AssertionError(f"query failed: {parse_err(first)}")
        if first[0] == 0x00:
            return []
        for _ in range(first[0]):
            self.expect_packet()
        _, eof = self.expect_packet()
        assert eof[0] == 0xFE
        rows = []
        while True:
            _, p = self.expect_packet()
            if p[0] == 0xFE and len(p) < 9:
                return rows
            assert p[0] != 0xFF, parse_err(p)
            rows.append(p)
