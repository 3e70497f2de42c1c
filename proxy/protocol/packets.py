"""Typed packets: parse_* turns a payload into a dataclass, make_* turns values into a payload.

Theory of operation: payloads only (framing is framing.py's job). Every parse_* either returns a
dataclass or raises ProtocolError — never IndexError or UnicodeDecodeError — so a hostile peer can
only ever cause a protocol error. Layouts follow
https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets.html and
https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_response_packets.html;
MariaDB differences are named where they matter.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .constants import (
    AUTH_SWITCH_HEADER,
    BINARY_COLLATION,
    EOF_HEADER,
    ERR_HEADER,
    OK_HEADER,
    SQLSTATE,
    MARIADB_SHIFT,
    UTF8MB4_COLLATION,
    Capability,
    ColumnFlag,
    ColumnType,
    MariaDBCapability,
    ServerStatus,
    SessionTrack,
)
from .framing import ProtocolError

# --------------------------------------------------------------------------------------------
# Primitive readers and writers


class Reader:
    """Cursor over a payload; every read checks bounds and raises ProtocolError on overrun."""

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: bytes | memoryview, what: str = "packet") -> None:
        self.buf = bytes(buf)
        self.pos = 0
        self.what = what

    def _need(self, n: int) -> None:
        if self.pos + n > len(self.buf):
            raise ProtocolError(f"malformed {self.what}: truncated at byte {self.pos}")

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def u8(self) -> int:
        self._need(1)
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def u16(self) -> int:
        self._need(2)
        v = int.from_bytes(self.buf[self.pos : self.pos + 2], "little")
        self.pos += 2
        return v

    def u24(self) -> int:
        self._need(3)
        v = int.from_bytes(self.buf[self.pos : self.pos + 3], "little")
        self.pos += 3
        return v

    def u32(self) -> int:
        self._need(4)
        v = int.from_bytes(self.buf[self.pos : self.pos + 4], "little")
        self.pos += 4
        return v

    def fixed(self, n: int) -> bytes:
        self._need(n)
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return v

    def lenenc_int(self) -> int:
        first = self.u8()
        if first < 0xFB:
            return first
        if first == 0xFC:
            return self.u16()
        if first == 0xFD:
            return self.u24()
        if first == 0xFE:
            self._need(8)
            v = int.from_bytes(self.buf[self.pos : self.pos + 8], "little")
            self.pos += 8
            return v
        raise ProtocolError(f"malformed {self.what}: invalid length-encoded integer 0x{first:02x}")

    def lenenc_bytes(self) -> bytes:
        return self.fixed(self.lenenc_int())

    def null_terminated(self) -> bytes:
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolError(f"malformed {self.what}: missing NUL terminator")
        v = self.buf[self.pos : end]
        self.pos = end + 1
        return v

    def null_terminated_or_rest(self) -> bytes:
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            end = len(self.buf)
            v = self.buf[self.pos :]
            self.pos = end
            return v
        v = self.buf[self.pos : end]
        self.pos = end + 1
        return v

    def rest(self) -> bytes:
        v = self.buf[self.pos :]
        self.pos = len(self.buf)
        return v


def lenenc_int(n: int) -> bytes:
    if n < 0xFB:
        return bytes((n,))
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + n.to_bytes(8, "little")


def lenenc_bytes(b: bytes) -> bytes:
    return lenenc_int(len(b)) + b


def _text(b: bytes, what: str) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"malformed {what}: not valid UTF-8") from None


# --------------------------------------------------------------------------------------------
# Connection phase


@dataclass(frozen=True, slots=True)
class HandshakeV10:
    server_version: str
    connection_id: int
    auth_data: bytes  # the scramble (20 bytes for native / caching_sha2)
    capabilities: int  # lower 32 bits
    collation: int
    status: int
    auth_plugin: str
    mariadb_capabilities: int = 0  # MariaDB extended capabilities (upper 32 bits); 0 for MySQL


def parse_handshake_v10(payload: bytes | memoryview) -> HandshakeV10:
    r = Reader(payload, "initial handshake")
    proto = r.u8()
    if proto == ERR_HEADER:
        err = parse_err(payload)
        raise ProtocolError(f"server refused connection: {err.code} {err.message}", code=err.code)
    if proto != 10:
        raise ProtocolError(f"unsupported handshake protocol version {proto}")
    version = _text(r.null_terminated(), "initial handshake")
    conn_id = r.u32()
    auth1 = r.fixed(8)
    r.u8()  # filler
    caps = r.u16()
    collation = status = 0
    auth2 = b""
    plugin = ""
    mariadb_caps = 0
    if r.remaining():
        collation = r.u8()
        status = r.u16()
        caps |= r.u16() << 16
        auth_len = r.u8()
        r.fixed(6)  # reserved
        ext = r.u32()  # MariaDB: extended capabilities; MySQL: reserved zeros
        if not caps & Capability.LONG_PASSWORD:
            mariadb_caps = ext
        if caps & Capability.SECURE_CONNECTION:
            n = max(13, auth_len - 8)
            auth2 = r.fixed(min(n, r.remaining()))
            if auth2.endswith(b"\0"):
                auth2 = auth2[:-1]
        if caps & Capability.PLUGIN_AUTH:
            plugin = _text(r.null_terminated_or_rest(), "initial handshake")
    return HandshakeV10(version, conn_id, auth1 + auth2, caps, collation, status, plugin, mariadb_caps)


def make_handshake_v10(h: HandshakeV10) -> bytes:
    caps = h.capabilities
    scramble = h.auth_data
    return b"".join(
        (
            b"\x0a",
            h.server_version.encode() + b"\0",
            struct.pack("<I", h.connection_id),
            scramble[:8],
            b"\0",
            struct.pack("<H", caps & 0xFFFF),
            bytes((h.collation,)),
            struct.pack("<H", h.status),
            struct.pack("<H", (caps >> 16) & 0xFFFF),
            bytes((len(scramble) + 1,)),
            b"\0" * 6,
            struct.pack("<I", h.mariadb_capabilities),
            scramble[8:] + b"\0",
            h.auth_plugin.encode() + b"\0",
        )
    )


@dataclass(frozen=True, slots=True)
class HandshakeResponse41:
    capabilities: int
    max_packet: int
    collation: int
    username: str
    auth_response: bytes
    database: str | None
    auth_plugin: str
    attributes: dict[str, str] = field(default_factory=dict)
    mariadb_capabilities: int = 0


SSL_REQUEST_SIZE = 32  # an SSLRequest is the fixed-size head of HandshakeResponse41, alone


def is_ssl_request(payload: bytes | memoryview) -> bool:
    """Is this first client packet an SSLRequest
    (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_ssl_request.html):
    the 32-byte head of HandshakeResponse41 (capabilities, max packet, collation, filler) with
    CLIENT_SSL set and nothing after it? The full response follows over TLS."""
    return len(payload) == SSL_REQUEST_SIZE and bool(int.from_bytes(payload[:4], "little") & Capability.SSL)


def make_ssl_request(capabilities: int, max_packet: int, collation: int, mariadb_capabilities: int = 0) -> bytes:
    """The SSLRequest a client sends in place of its HandshakeResponse41 to start TLS."""
    caps = capabilities | Capability.SSL
    ext = mariadb_capabilities if not caps & Capability.LONG_PASSWORD else 0
    return struct.pack("<IIB", caps, max_packet, collation) + b"\0" * 19 + struct.pack("<I", ext)


def parse_handshake_response(payload: bytes | memoryview, tls: bool = False) -> HandshakeResponse41:
    """`tls`: the connection was upgraded after an SSLRequest, so CLIENT_SSL is expected; without
    it a client that sets the flag would be answered in plaintext, which it never asked for."""
    r = Reader(payload, "handshake response")
    if r.remaining() < 32:
        raise ProtocolError("malformed handshake response: too short", code=1043)
    caps = r.u32()
    if not caps & Capability.PROTOCOL_41:
        raise ProtocolError("client does not speak protocol 4.1 (CLIENT_PROTOCOL_41 not set)", code=1043)
    if caps & Capability.SSL and not tls:
        raise ProtocolError("SSL was requested but the proxy did not offer it", code=1043)
    max_packet = r.u32()
    collation = r.u8()
    r.fixed(19)
    ext = r.u32()  # MariaDB extended capabilities in the last 4 filler bytes
    mariadb_caps = 0 if caps & Capability.LONG_PASSWORD else ext
    username = _text(r.null_terminated(), "handshake response")
    if caps & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth = r.lenenc_bytes()
    elif caps & Capability.SECURE_CONNECTION:
        auth = r.fixed(r.u8())
    else:
        auth = r.null_terminated()
    database = None
    if caps & Capability.CONNECT_WITH_DB and r.remaining():
        database = _text(r.null_terminated_or_rest(), "handshake response") or None
    plugin = ""
    if caps & Capability.PLUGIN_AUTH and r.remaining():
        plugin = _text(r.null_terminated_or_rest(), "handshake response")
    attrs: dict[str, str] = {}
    if caps & Capability.CONNECT_ATTRS and r.remaining():
        attrs = _parse_attrs(r)
    return HandshakeResponse41(caps, max_packet, collation, username, auth, database, plugin, attrs, mariadb_caps)


def _parse_attrs(r: Reader) -> dict[str, str]:
    total = r.lenenc_int()
    block = Reader(r.fixed(min(total, r.remaining())), "connection attributes")
    attrs = {}
    while block.remaining():
        k = block.lenenc_bytes().decode("utf-8", "replace")
        v = block.lenenc_bytes().decode("utf-8", "replace")
        attrs[k] = v
    return attrs


def make_handshake_response(resp: HandshakeResponse41) -> bytes:
    caps = resp.capabilities
    parts = [
        struct.pack("<IIB", caps, resp.max_packet, resp.collation),
        b"\0" * 19,
        struct.pack("<I", resp.mariadb_capabilities if not caps & Capability.LONG_PASSWORD else 0),
        resp.username.encode() + b"\0",
    ]
    if caps & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA:
        parts.append(lenenc_bytes(resp.auth_response))
    else:
        parts.append(bytes((len(resp.auth_response),)) + resp.auth_response)
    if caps & Capability.CONNECT_WITH_DB:
        parts.append((resp.database or "").encode() + b"\0")
    if caps & Capability.PLUGIN_AUTH:
        parts.append(resp.auth_plugin.encode() + b"\0")
    if caps & Capability.CONNECT_ATTRS:
        block = b"".join(lenenc_bytes(k.encode()) + lenenc_bytes(v.encode()) for k, v in resp.attributes.items())
        parts.append(lenenc_bytes(block))
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class AuthSwitchRequest:
    plugin: str
    auth_data: bytes


def parse_auth_switch(payload: bytes | memoryview) -> AuthSwitchRequest:
    r = Reader(payload, "auth switch request")
    if r.u8() != AUTH_SWITCH_HEADER:
        raise ProtocolError("malformed auth switch request")
    plugin = _text(r.null_terminated_or_rest(), "auth switch request")
    data = r.rest()
    if data.endswith(b"\0"):
        data = data[:-1]
    return AuthSwitchRequest(plugin, data)


def make_auth_switch(req: AuthSwitchRequest) -> bytes:
    return b"\xfe" + req.plugin.encode() + b"\0" + req.auth_data + b"\0"


@dataclass(frozen=True, slots=True)
class ComChangeUser:
    username: str
    auth_response: bytes
    database: str | None
    collation: int | None
    auth_plugin: str
    attributes: dict[str, str]


def parse_change_user(payload: bytes | memoryview, caps: int) -> ComChangeUser:
    r = Reader(payload, "COM_CHANGE_USER")
    r.u8()
    username = _text(r.null_terminated(), "COM_CHANGE_USER")
    if caps & Capability.SECURE_CONNECTION:
        auth = r.fixed(r.u8())
    else:
        auth = r.null_terminated()
    database = _text(r.null_terminated_or_rest(), "COM_CHANGE_USER") or None
    collation = None
    plugin = ""
    attrs: dict[str, str] = {}
    if r.remaining() >= 2:
        collation = r.u16() & 0xFF
    if caps & Capability.PLUGIN_AUTH and r.remaining():
        plugin = _text(r.null_terminated_or_rest(), "COM_CHANGE_USER")
    if caps & Capability.CONNECT_ATTRS and r.remaining():
        attrs = _parse_attrs(r)
    return ComChangeUser(username, auth, database, collation, plugin, attrs)


# --------------------------------------------------------------------------------------------
# Generic responses


@dataclass(frozen=True, slots=True)
class OK:
    affected_rows: int = 0
    last_insert_id: int = 0
    status: int = ServerStatus.AUTOCOMMIT
    warnings: int = 0
    info: bytes = b""
    session_state: bytes = b""


def parse_ok(payload: bytes | memoryview, caps: int = Capability.PROTOCOL_41 | Capability.SESSION_TRACK) -> OK:
    r = Reader(payload, "OK packet")
    header = r.u8()
    if header not in (OK_HEADER, EOF_HEADER):
        raise ProtocolError(f"malformed OK packet: header 0x{header:02x}")
    affected = r.lenenc_int()
    insert_id = r.lenenc_int()
    status = r.u16()
    warnings = r.u16()
    info = b""
    state = b""
    if r.remaining():
        if caps & Capability.SESSION_TRACK:
            info = r.lenenc_bytes()
            if status & ServerStatus.SESSION_STATE_CHANGED and r.remaining():
                state = r.lenenc_bytes()
        else:
            info = bytes(r.rest())
            if info and info[0] == len(info) - 1:  # length-encoded, as servers send it
                info = info[1:]
    return OK(affected, insert_id, status, warnings, info, state)


def make_ok(ok: OK, caps: int) -> bytes:
    out = b"\x00" + lenenc_int(ok.affected_rows) + lenenc_int(ok.last_insert_id)
    out += struct.pack("<HH", ok.status, ok.warnings)
    if caps & Capability.SESSION_TRACK:
        if ok.info or ok.session_state:
            out += lenenc_bytes(ok.info)
            if ok.session_state:
                out += lenenc_bytes(ok.session_state)
    elif ok.info:
        out += lenenc_bytes(ok.info)  # length-encoded either way, as MySQL and MariaDB send it
    return out


# --------------------------------------------------------------------------------------------
# Session state information (CLIENT_SESSION_TRACK): what an OK packet says changed in the session
# (https://mariadb.com/kb/en/ok_packet/, "session state info"; MySQL's page_protocol_basic_ok_packet).
# Entries are a type byte and a length-encoded data block: SYSTEM_VARIABLES (name, value, both
# length-encoded), SCHEMA (the new default schema, empty when none: MariaDB reports DROP DATABASE of
# the current schema that way), STATE_CHANGE ("1"), and the transaction entries.

# The variables MariaDB and MySQL track by default (session_track_system_variables): a client that
# negotiated CLIENT_SESSION_TRACK and changed no tracking setting sees changes of these only.
DEFAULT_TRACKED_VARIABLES = frozenset(
    ("autocommit", "character_set_client", "character_set_connection", "character_set_results", "time_zone")
)


@dataclass(frozen=True, slots=True)
class TrackingMask:
    """Which session-state changes a client's own session settings make the server report: what
    the client would see connected directly. The proxy's backend connections track more (for its
    own use); `filter_session_state` takes out the rest.

    `enabled` is False for a client that did not negotiate CLIENT_SESSION_TRACK (it gets no state
    information at all); the other fields mirror session_track_schema, session_track_state_change
    and session_track_system_variables (`variables` None: '*', every variable). Transaction entries
    (session_track_transaction_info, which the proxy leaves to the client) always pass."""

    enabled: bool = True
    schema: bool = True  # MariaDB's and MySQL's default: ON
    state_change: bool = False  # default OFF
    variables: frozenset[str] | None = DEFAULT_TRACKED_VARIABLES

    def keeps(self, kind: int, data: bytes | memoryview) -> bool:
        if not self.enabled:
            return False
        if kind == SessionTrack.SYSTEM_VARIABLES:
            if self.variables is None:
                return True
            r = Reader(data, "session state")
            return r.lenenc_bytes().decode("utf-8", "surrogateescape").lower() in self.variables
        if kind == SessionTrack.SCHEMA:
            return self.schema
        if kind == SessionTrack.STATE_CHANGE:
            return self.state_change
        return True


DEFAULT_TRACKING = TrackingMask()
NO_TRACKING = TrackingMask(enabled=False, schema=False, variables=frozenset())


def session_state_entries(state: bytes | memoryview) -> list[tuple[int, bytes]]:
    """The (type, data) entries of an OK packet's session state information; ProtocolError if it
    is malformed."""
    r = Reader(state, "session state")
    out = []
    while r.remaining():
        kind = r.u8()
        out.append((kind, r.lenenc_bytes()))
    return out


@dataclass(slots=True)
class StateChanges:
    """What the OK packets of one reply said changed, in order (the last report of each wins).

    `schema` is meaningful only when `schema_changed`: the new default schema, None for none."""

    schema_changed: bool = False
    schema: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    other: bool = False  # an entry of another kind (state change, transaction, GTIDs) was reported


def parse_state_changes(oks: Iterable[bytes | memoryview]) -> StateChanges:
    """The session state changes reported by OK packets (payloads; those without state
    information add nothing). Names and values are decoded as UTF-8 with surrogateescape (the
    server's bytes kept as they are); ProtocolError if an OK is malformed."""
    changes = StateChanges()
    for payload in oks:
        state = parse_ok(payload).session_state
        if not state:
            continue
        for kind, data in session_state_entries(state):
            r = Reader(data, "session state")
            if kind == SessionTrack.SYSTEM_VARIABLES:
                name = r.lenenc_bytes().decode("utf-8", "surrogateescape").lower()
                changes.variables[name] = r.lenenc_bytes().decode("utf-8", "surrogateescape")
            elif kind == SessionTrack.SCHEMA:
                schema = r.lenenc_bytes().decode("utf-8", "surrogateescape")
                changes.schema_changed, changes.schema = True, schema or None
            else:
                changes.other = True
    return changes


def filter_session_state(payload: bytes | memoryview, mask: TrackingMask) -> bytes:
    """An OK or EOF from a backend connection with the proxy's session tracking, as the server would
    have sent it to a client whose own settings are `mask`: only the entries it tracks, and
    SERVER_SESSION_STATE_CHANGED only when one is left (the server sets the flag exactly when it
    sends state information). The header byte (0x00, or 0xFE for an OK that ends a result under
    CLIENT_DEPRECATE_EOF), counts, status, warnings and info text are kept."""
    changed = int(ServerStatus.SESSION_STATE_CHANGED)
    if payload[0] == EOF_HEADER and len(payload) < 9:  # EOF: header, warnings(2), status(2): no room for state
        if mask.enabled and mask.state_change:
            return bytes(payload)  # (what changed is not said; a client tracking state changes gets the flag)
        eof = bytearray(payload)
        eof[4] &= ~(changed >> 8) & 0xFF
        return bytes(eof)
    ok = parse_ok(payload)
    kept = b""
    if mask.enabled and ok.session_state:
        r = Reader(ok.session_state, "session state")
        parts = []
        while r.remaining():
            start = r.pos
            kind = r.u8()
            data = r.lenenc_bytes()
            if mask.keeps(kind, data):
                parts.append(bytes(r.buf[start : r.pos]))
        kept = b"".join(parts)
    status = ok.status | changed if kept else ok.status & ~changed
    out = make_ok(OK(ok.affected_rows, ok.last_insert_id, status, ok.warnings, ok.info, kept), Capability.SESSION_TRACK)
    return bytes(payload[:1]) + out[1:]


@dataclass(frozen=True, slots=True)
class ERR:
    code: int
    sqlstate: str
    message: str


def parse_err(payload: bytes | memoryview) -> ERR:
    r = Reader(payload, "ERR packet")
    if r.u8() != ERR_HEADER:
        raise ProtocolError("malformed ERR packet")
    code = r.u16()
    sqlstate = "HY000"
    if r.remaining() and r.buf[r.pos] == 0x23:  # '#'
        r.u8()
        sqlstate = r.fixed(5).decode("ascii", "replace")
    return ERR(code, sqlstate, r.rest().decode("utf-8", "replace"))


def make_err(code: int, message: str, sqlstate: str | None = None) -> bytes:
    """An ERR packet (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_err_packet.html).

    Refuses client-library codes (2000-2999): libmariadb reports an ERR packet carrying one as
    "2027 Received malformed packet", losing the message."""
    if 2000 <= code < 3000:
        raise ValueError(f"ERR {code} is a client-library error number; the proxy must send a server-range code")
    state = sqlstate or SQLSTATE.get(code, "HY000")
    return b"\xff" + struct.pack("<H", code) + b"#" + state.encode("ascii") + message.encode("utf-8")


@dataclass(frozen=True, slots=True)
class EOF:
    warnings: int
    status: int


def parse_eof(payload: bytes | memoryview) -> EOF:
    r = Reader(payload, "EOF packet")
    if r.u8() != EOF_HEADER:
        raise ProtocolError("malformed EOF packet")
    return EOF(r.u16(), r.u16())


def make_eof(status: int, warnings: int = 0) -> bytes:
    return b"\xfe" + struct.pack("<HH", warnings, status)


# --------------------------------------------------------------------------------------------
# Result sets, text protocol (what a server sends for COM_QUERY; the proxy's admin port answers
# with these). https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_text_resultset.html


@dataclass(frozen=True, slots=True)
class ColumnDefinition:
    """ColumnDefinition41 (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response_text_resultset_column_definition.html)."""

    name: str
    type: int = ColumnType.VAR_STRING
    charset: int = UTF8MB4_COLLATION
    length: int = 0  # maximum display length of the column's values
    flags: int = 0
    decimals: int = 0
    schema: str = ""
    table: str = ""
    org_table: str = ""
    org_name: str = ""
    catalog: str = "def"


def make_column_definition(c: ColumnDefinition, extended_metadata: bool = False) -> bytes:
    """`extended_metadata`: the client negotiated MariaDB's MARIADB_CLIENT_EXTENDED_METADATA, so
    every column definition carries the extended type information field (empty here) before the
    fixed-length fields."""
    return b"".join(
        (
            lenenc_bytes(c.catalog.encode()),
            lenenc_bytes(c.schema.encode()),
            lenenc_bytes(c.table.encode()),
            lenenc_bytes(c.org_table.encode()),
            lenenc_bytes(c.name.encode()),
            lenenc_bytes(c.org_name.encode()),
            b"\x00\x0c" if extended_metadata else b"\x0c",  # length of the fixed-length fields that follow
            struct.pack("<HIBHB", c.charset, min(c.length, 0xFFFFFFFF), c.type, c.flags, c.decimals),
            b"\0\0",  # filler
        )
    )


def parse_column_definition(payload: bytes | memoryview) -> ColumnDefinition:
    r = Reader(payload, "column definition")
    catalog, schema, table, org_table, name, org_name = (_text(r.lenenc_bytes(), "column definition") for _ in range(6))
    if r.lenenc_int() != 0x0C:
        raise ProtocolError("malformed column definition: fixed-length fields are not 12 bytes")
    charset, length, ctype, flags, decimals = struct.unpack("<HIBHB", r.fixed(10))
    return ColumnDefinition(name, ctype, charset, length, flags, decimals, schema, table, org_table, org_name, catalog)


def _text_value(v: Any) -> bytes:
    """A value as a text-protocol cell (MySQL's text form: 1, 0.5, 'abc')."""
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape")  # text decoded with surrogateescape gets its bytes back
    if isinstance(v, bool):
        return b"1" if v else b"0"
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, float):
        return repr(v).encode()
    return str(v).encode("utf-8")


def make_text_row(values: Iterable[Any]) -> bytes:
    """A ResultsetRow: NULL as 0xFB, anything else length-encoded in its text form."""
    return b"".join(b"\xfb" if v is None else lenenc_bytes(_text_value(v)) for v in values)


def parse_text_row(payload: bytes | memoryview, columns: int) -> list[bytes | None]:
    r = Reader(payload, "text row")
    out: list[bytes | None] = []
    for _ in range(columns):
        if r.remaining() and r.buf[r.pos] == 0xFB:
            r.u8()
            out.append(None)
        else:
            out.append(r.lenenc_bytes())
    if r.remaining():
        raise ProtocolError(f"malformed text row: {r.remaining()} byte(s) after {columns} column(s)")
    return out


def column_definitions(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[ColumnDefinition]:
    """Column definitions for Python values: a column of ints (bools) is LONGLONG, of numbers DOUBLE,
    of bytes BLOB (binary), anything else (text, or only NULLs) VAR_STRING in utf8mb4. Drivers
    convert by these types (PyMySQL returns int for LONGLONG)."""
    sniffer = ColumnSniffer(len(names))
    for row in rows:
        sniffer.observe(row)
    return sniffer.definitions(names)


class ColumnSniffer:
    """What `column_definitions` learns from rows, one row at a time: for a result set encoded as
    its rows arrive (make_text_row each), with the definitions built once all were seen."""

    __slots__ = ("kinds", "widths")

    def __init__(self, columns: int) -> None:
        self.kinds: list[set[type]] = [set() for _ in range(columns)]
        self.widths = [0] * columns

    def observe(self, row: Sequence[Any]) -> None:
        self.encode(row)

    def encode(self, row: Sequence[Any]) -> bytes:
        """Learn from `row` and return it as a text ResultsetRow (make_text_row), each value's text
        form computed once: what a result set encoded as its rows arrive costs per row."""
        kinds, widths = self.kinds, self.widths
        parts = []
        for i, v in enumerate(row):
            if v is None:
                parts.append(b"\xfb")
                continue
            t = type(v)
            if t is str:
                b = v.encode("utf-8", "surrogateescape")
                kind: type = str
            elif t is int:
                b = str(v).encode()
                kind = int
            elif t is bytes:
                b = v
                kind = bytes
            else:
                b = _text_value(v)
                kind = bytes if isinstance(v, (bytearray, memoryview)) else int if isinstance(v, int) else float if isinstance(v, float) else str
            kinds[i].add(kind)
            n = len(b)
            if n > widths[i]:
                widths[i] = n
            parts.append((bytes((n,)) if n < 251 else lenenc_int(n)) + b)
        return b"".join(parts)

    def definitions(self, names: Sequence[str]) -> list[ColumnDefinition]:
        out = []
        for name, kinds, width in zip(names, self.kinds, self.widths, strict=True):
            if kinds and kinds <= {int}:
                c = ColumnDefinition(name, ColumnType.LONGLONG, BINARY_COLLATION, max(width, 1), ColumnFlag.NUM | ColumnFlag.BINARY)
            elif kinds and kinds <= {int, float}:
                c = ColumnDefinition(name, ColumnType.DOUBLE, BINARY_COLLATION, max(width, 1), ColumnFlag.NUM | ColumnFlag.BINARY, 31)
            elif kinds == {bytes}:
                c = ColumnDefinition(name, ColumnType.BLOB, BINARY_COLLATION, max(width, 1), ColumnFlag.BLOB | ColumnFlag.BINARY)
            else:
                # utf8mb4: up to 4 bytes a character, as servers report the length
                c = ColumnDefinition(name, ColumnType.VAR_STRING, UTF8MB4_COLLATION, max(width, 1) * 4)
            out.append(c)
        return out


def make_result_terminator(caps: int, status: int, warnings: int = 0) -> bytes:
    """What ends a result set's rows (and a COM_FIELD_LIST reply): an EOF packet, or with
    CLIENT_DEPRECATE_EOF an OK packet with the 0xFE header."""
    if caps & Capability.DEPRECATE_EOF:
        return b"\xfe" + make_ok(OK(status=status, warnings=warnings), caps & ~Capability.SESSION_TRACK)[1:]
    return make_eof(status, warnings)


def make_result_set(columns: Sequence[ColumnDefinition], rows: Iterable[Sequence[Any]], caps: int, status: int) -> list[bytes]:
    """A whole text-protocol result set as payloads, in order (frame them with consecutive sequence
    ids): column count, column definitions, EOF (not with CLIENT_DEPRECATE_EOF), rows, terminator.
    `caps` may carry MariaDB's extended capabilities in bits 32..63 (MARIADB_SHIFT)."""
    out = [lenenc_int(len(columns))]
    extended = bool(caps >> MARIADB_SHIFT & MariaDBCapability.EXTENDED_METADATA)
    out.extend(make_column_definition(c, extended) for c in columns)
    if not caps & Capability.DEPRECATE_EOF:
        out.append(make_eof(status))
    out.extend(make_text_row(r) for r in rows)
    out.append(make_result_terminator(caps, status))
    return out
