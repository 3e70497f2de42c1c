"""Backend connections: dial a server, authenticate, send a command, relay its reply.

Theory of operation: a BackendConnection is an asyncio.Protocol with two modes.
- Packet mode (connecting, authenticating, commands the proxy issues itself): bytes go through a
  PacketFramer and `read_packet()` hands out whole packets to a coroutine.
- Relay mode (`relay(command, scanner, sink)`): each chunk the server sends is fed to a
  ResultScanner and written to the sink as-is, so a reply costs one header walk and no copy; when the
  scanner reports the end of the reply the sink's `reply_done` is called. A slow client pauses
  reading from the server (backpressure), so a reply never accumulates in the proxy.

Bytes are counted per relayed chunk (never per row) into the `stats` handle (proxy.stats.ServerStats)
of the (hostgroup, server) the connection serves, which the session sets when it takes the connection.

It must never parse rows, buffer a whole reply, or decide routing. Failures to connect raise
BackendError with the server and the cause; the caller turns them into a MySQL ERR for the client.

TLS (the server's BackendTLS, proxy.tls): after the server's greeting, when the server's ssl_mode
wants it, an SSLRequest and the TLS handshake (the connection's transport becomes the TLS one), then
the login inside. A server whose certificate fails verification is refused with one warning naming
why (rate-limited per server). caching_sha2_password full authentication sends the password in
clear over TLS; without TLS it is RSA-encrypted with the server's public key, which is pinned
(server_public_key) or, only with get_server_public_key, asked of the server.

Losing track of a reply is never silent: bytes after the end the scanner found, or bytes the server
sends while no command is in flight, mean the proxy no longer knows where replies begin and end. The
client then gets an ERR (with the sequence id it expects next) and the connection is dropped, which
ends the client's session (`backend_lost` mid-reply) instead of leaving the client waiting.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
from typing import Protocol as TypingProtocol

from . import tls
from .config import Server
from .logsafe import LogLimiter
from .protocol import auth
from .protocol.constants import (
    BACKEND_REQUIRED,
    CACHING_SHA2_FAST_AUTH_OK,
    CACHING_SHA2_FULL_AUTH,
    CACHING_SHA2_PASSWORD,
    CACHING_SHA2_REQUEST_PUBLIC_KEY,
    ERR_HEADER,
    MIRRORED_CAPABILITIES,
    NATIVE_PASSWORD,
    OK_HEADER,
    Capability,
    ErrorCode,
    MARIADB_SHIFT,
)
from .protocol.framing import Packet, PacketFramer, ProtocolError, make_packet
from .protocol.packets import (
    ERR,
    HandshakeResponse41,
    HandshakeV10,
    make_err,
    make_handshake_response,
    make_ssl_request,
    parse_auth_switch,
    parse_err,
    parse_handshake_v10,
    parse_text_row,
)
from .protocol.results import ResultScanner, apply_rewrites
from .stats import ServerStats

# Where connections no session has taken yet count their bytes (never read).
UNCOUNTED = ServerStats(-2, "")

log = logging.getLogger("rwproxy.backend")
# Per-connection warnings that a misbehaving server (or a flood of them) could repeat endlessly.
_limited = LogLimiter(log)


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Small packets go out at once: a request/response protocol must not wait for Nagle."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class BackendError(Exception):
    """A backend could not be used. `err` is the server's own ERR when it sent one."""

    def __init__(self, server: Server, cause: str, err: ERR | None = None) -> None:
        super().__init__(f"{server.address}: {cause}")
        self.server, self.cause, self.err = server, cause, err


class ReplySink(TypingProtocol):
    def relay(self, data: bytes) -> None: ...
    def reply_done(self, scanner: ResultScanner) -> None: ...
    def infile_requested(self) -> None: ...
    def backend_lost(self, backend: "BackendConnection", exc: Exception | None) -> None: ...
    def backend_write_paused(self, paused: bool) -> None: ...


class BackendConnection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.framer = PacketFramer()
        self._waiter: asyncio.Future | None = None
        self._closed_exc: Exception | None = None
        self.closed = False
        self.handshake: HandshakeV10 | None = None
        self.capabilities = 0
        self.mariadb_capabilities = 0  # MariaDB extended capabilities negotiated (proxy.protocol.constants.MariaDBCapability)
        self.scanner: ResultScanner | None = None
        self._held = b""  # the start of a packet cut by the end of the last chunk (see ResultScanner.hold)
        self.sink: ReplySink | None = None
        self._sink_owner: ReplySink | None = None
        self.hostgroup = server.hostgroup_id  # the hostgroup it serves (a writer may serve a reader hostgroup)
        self.cstate = None  # proxy.session.ConnState: what this connection's session state is
        self.reading_paused = False
        # Statements prepared on this connection: (schema, COM_STMT_PREPARE payload) -> [backend id, param types sent]
        # (least recently used first). Cleared whenever the connection is reset.
        self.prepared: collections.OrderedDict[tuple, list] = collections.OrderedDict()
        # The stats handle (proxy.stats.ServerStats) of the (hostgroup, server) this connection
        # serves now, set by the session that takes it (ClientSession._take); the bytes it relays
        # are counted into it per chunk. Until then a shared sink nobody reads.
        self.stats: ServerStats = UNCOUNTED
        self._abort_reason: str | None = None
        self.secure = False  # TLS to the server
        self.lost_sync = False  # dropped because the proxy lost track of its replies (see _lost_sync)

    # ---- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        scanner = self.scanner
        if scanner is None:
            if self._waiter is None and self._sink_owner is not None and not (len(data) > 4 and data[3] == 0 and data[4] == ERR_HEADER):
                # Nothing asked for these (no reply in flight, no command of the proxy's own), and
                # they are not a server's goodbye (an ERR with sequence id 0, before it closes the
                # connection): the end of the last reply was misread.
                self._lost_sync(data, 0, "bytes while no command was in flight")
                return
            self.framer.feed(data)
            self._wake()
            return
        self.stats.bytes_recv += len(data)  # per chunk, never per row
        held = self._held
        if held:
            data = held + data
            self._held = b""
        end = scanner.feed(data)
        sink = self.sink
        if end < 0:
            hold = scanner.hold
            if hold:  # a packet that matters is cut: it is relayed whole, with the next chunk
                self._held = data[-hold:]
                data = data[:-hold]
            if scanner.rewrites:
                data = apply_rewrites(data, scanner.rewrites, scanner.mask)
            if data:
                sink.relay(data)
            return
        if end < len(data):
            if scanner.rewrites:  # (all before `end`)
                n = len(data)
                data = apply_rewrites(data, scanner.rewrites, scanner.mask)
                end += len(data) - n
            self._lost_sync(data, end, "bytes after the end of a reply")
            return
        if scanner.rewrites:
            data = apply_rewrites(data, scanner.rewrites, scanner.mask)
        if data:
            sink.relay(data)
        if scanner.local_infile:
            sink.infile_requested()
            return
        self.scanner = None
        sink.reply_done(scanner)

    def _lost_sync(self, data: bytes, end: int, what: str) -> None:
        """The server sent `data[end:]` where no packet was expected: relay what belonged to the reply
        (`data[:end]`), tell the client with an ERR and drop the connection (its session ends:
        nothing after this can be trusted to be where the client expects it)."""
        extra = len(data) - end
        _limited.log(
            logging.ERROR, ("lost sync", self.server.address),
            "server %s sent %d %s (first bytes %r); the connection is dropped and its client told", self.server.address, extra, what, bytes(data[end : end + 16]),
        )  # fmt: skip
        sink = self.sink
        if sink is not None:
            if end:
                sink.relay(data[:end])
            # The sequence id the client expects next is the one the server's next packet has.
            seq = data[end + 3] if extra >= 4 else 1
            sink.relay(make_packet(make_err(
                ErrorCode.MALFORMED_PACKET,
                f"rwproxy lost track of the reply of server {self.server.address} ({what}); this session is closed: reconnect "
                "(please report this with the statement that caused it)",
            ), seq))  # fmt: skip
        self.lost_sync = True
        self.abort(f"rwproxy lost track of the server's reply ({what})")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is None and self._abort_reason is not None:
            exc = ConnectionAbortedError(self._abort_reason)
        self._closed_exc = exc or ConnectionResetError("server closed the connection")
        self._wake()
        owner = self._sink_owner
        if owner is not None:
            owner.backend_lost(self, exc)

    def pause_writing(self) -> None:
        if self._sink_owner is not None:
            self._sink_owner.backend_write_paused(True)

    def resume_writing(self) -> None:
        if self._sink_owner is not None:
            self._sink_owner.backend_write_paused(False)

    # ---- packet mode --------------------------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read_packet(self) -> Packet:
        while True:
            pkt = self.framer.next_packet()
            if pkt is not None:
                return pkt
            if self.closed:
                raise ConnectionResetError(str(self._closed_exc))
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def write(self, data: bytes) -> None:
        """Client data for the server outside a relayed command (LOAD DATA file, long data,
        COM_STMT_CLOSE): counted as sent, like the commands."""
        self.stats.bytes_sent += len(data)
        self.transport.write(data)

    async def replay(self, payloads: list[bytes]) -> ERR | None:
        """Send commands that each answer one OK/ERR (COM_INIT_DB, SET), pipelined: one round trip.

        Returns the first ERR, or None when all succeeded.
        """
        self.transport.write(b"".join(make_packet(p, 0) for p in payloads))
        first_err = None
        for _ in payloads:
            pkt = await self.read_packet()
            if pkt.payload and pkt.payload[0] == ERR_HEADER and first_err is None:
                first_err = parse_err(pkt.payload)
        return first_err

    async def query_rows(self, sql: str) -> list[list[bytes | None]] | ERR:
        """A COM_QUERY issued by the proxy itself with a small result: its rows (of text values, None
        for NULL), or the server's ERR."""
        self.transport.write(make_packet(b"\x03" + sql.encode(), 0))
        p = (await self.read_packet()).payload
        if p and p[0] == ERR_HEADER:
            return parse_err(p)
        if not p or p[0] == OK_HEADER:
            return []
        columns = p[0]
        for _ in range(columns + (0 if self.capabilities & Capability.DEPRECATE_EOF else 1)):
            await self.read_packet()  # column definitions (and their EOF)
        rows: list[list[bytes | None]] = []
        while True:
            p = bytes((await self.read_packet()).payload)
            if p and p[0] in (0xFE, ERR_HEADER) and len(p) < 0xFFFFFF:
                return parse_err(p) if p[0] == ERR_HEADER else rows
            rows.append(parse_text_row(p, columns))

    # ---- relay mode ---------------------------------------------------------------------------

    def attach(self, owner: ReplySink) -> None:
        """The session that receives relayed replies and connection events."""
        self._sink_owner = owner
        self.sink = owner

    async def prepare(self, payload: bytes) -> tuple[int, int, int] | ERR:
        """COM_STMT_PREPARE issued by the proxy itself: (statement id, params, columns) or the ERR.

        The parameter and column definitions that follow are read and dropped."""
        self.transport.write(make_packet(payload, 0))
        pkt = await self.read_packet()
        p = pkt.payload
        if not p or p[0] != OK_HEADER or len(p) < 9:
            return parse_err(p) if p and p[0] == ERR_HEADER else ERR(1835, "HY000", "malformed COM_STMT_PREPARE reply")
        stmt_id = int.from_bytes(p[1:5], "little")
        columns = p[5] | p[6] << 8
        params = p[7] | p[8] << 8
        eofs = 0 if self.capabilities & Capability.DEPRECATE_EOF else (params > 0) + (columns > 0)
        for _ in range(params + columns + eofs):
            await self.read_packet()
        return stmt_id, params, columns

    async def query_value(self, sql: str) -> bytes | None | ERR:
        """A text query the proxy issues itself whose answer is one value (`SELECT f(...)`): the
        first column of the first row (None for NULL), or the ERR. Packet mode: the connection
        relays nothing meanwhile."""
        self.transport.write(make_packet(b"\x03" + sql.encode("utf-8", "surrogateescape"), 0))
        pkt = await self.read_packet()
        p = pkt.payload
        if p and p[0] == ERR_HEADER:
            return parse_err(p)
        columns = p[0] if p else 0
        eof = not self.capabilities & Capability.DEPRECATE_EOF
        for _ in range(columns + eof):  # column definitions (+ EOF)
            await self.read_packet()
        value: bytes | None = None
        first = True
        while True:
            row = (await self.read_packet()).payload
            if row and row[0] in (0xFE, ERR_HEADER) and len(row) < 0xFFFFFF:  # EOF / OK terminator, or ERR
                return parse_err(row) if row[0] == ERR_HEADER else value
            if first:
                first = False
                if row[0] != 0xFB:
                    n = row[0]
                    start = 1
                    if n == 0xFC:
                        n, start = int.from_bytes(row[1:3], "little"), 3
                    value = bytes(row[start : start + n])

    async def change_user(self, username: str, password: str, database: str | None, collation: int) -> ERR | None:
        """COM_CHANGE_USER as the same (or another) backend user: a full reset that, unlike
        COM_RESET_CONNECTION, also leaves no default schema when `database` is None.

        Returns the server's ERR, or None on success."""
        hs = self.handshake
        plugin = hs.auth_plugin if hs.auth_plugin in (NATIVE_PASSWORD, CACHING_SHA2_PASSWORD) else NATIVE_PASSWORD
        scramble = hs.auth_data
        token = auth.scramble_for(plugin, password, scramble)
        payload = b"".join((
            b"\x11", username.encode() + b"\0", bytes((len(token),)) + token, (database or "").encode() + b"\0",
            (collation or hs.collation).to_bytes(2, "little"), plugin.encode() + b"\0",
        ))  # fmt: skip
        if self.capabilities & Capability.CONNECT_ATTRS:
            payload += b"\0"  # no connection attributes
        self.transport.write(make_packet(payload, 0))
        while True:
            pkt = await self.read_packet()
            head = pkt.payload[0] if pkt.payload else ERR_HEADER
            if head == OK_HEADER:
                return None
            if head == ERR_HEADER:
                return parse_err(pkt.payload)
            if head == 0xFE:  # auth switch
                sw = parse_auth_switch(pkt.payload)
                if sw.plugin not in (NATIVE_PASSWORD, CACHING_SHA2_PASSWORD):
                    return ERR(1251, "08004", f"server asks for auth plugin {sw.plugin!r} on COM_CHANGE_USER")
                scramble = sw.auth_data
                self.transport.write(make_packet(auth.scramble_for(sw.plugin, password, scramble), pkt.seq + 1))
                continue
            if head == 0x01 and len(pkt.payload) > 1:  # AuthMoreData (caching_sha2_password)
                try:
                    await _caching_sha2_more(self, pkt.payload[1], password, scramble, pkt.seq + 1)
                except BackendError as e:
                    return ERR(ErrorCode.NOT_SUPPORTED_AUTH_MODE, "08004", e.cause)
                continue
            return ERR(ErrorCode.MALFORMED_PACKET, "HY000", f"unexpected packet 0x{head:02x} answering COM_CHANGE_USER")

    def detach(self) -> None:
        """Back to a pool: no session hears about this connection any more."""
        self._sink_owner = None
        self.sink = None

    def relay(self, command: bytes, scanner: ResultScanner) -> None:
        self.scanner = scanner
        self.stats.bytes_sent += len(command)
        self.transport.write(command)

    def pause_reading(self, paused: bool) -> None:
        if self.transport is None or self.closed:
            return
        self.reading_paused = paused
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def close(self) -> None:
        self._sink_owner = None
        self.sink = None
        if self.transport is not None and not self.closed:
            try:
                if self.scanner is None:
                    self.transport.write(b"\x01\x00\x00\x00\x01")  # COM_QUIT: a polite goodbye
            finally:
                self.transport.close()
        self.closed = True

    def abort(self, reason: str) -> None:
        """Drop the connection at once (its server is down or frozen: nothing would be read), telling
        the session that holds it, as if the server had closed it (`backend_lost`, with `reason`)."""
        if self.transport is not None and not self.closed:
            self._abort_reason = reason
            self.transport.abort()

    @property
    def tracks(self) -> bool:
        """CLIENT_SESSION_TRACK was negotiated (the server can report state changes)."""
        return bool(self.capabilities & Capability.SESSION_TRACK)

    @property
    def thread_id(self) -> int:
        return self.handshake.connection_id if self.handshake else 0


async def kill_query(server: Server, username: str, password: str, thread_id: int, *, timeout: float, program: str = "rwproxy-kill") -> ERR | None:
    """KILL QUERY <thread_id> on `server` over a short-lived connection of its own, as `username`
    (who may kill its own threads); the whole exchange bounded by `timeout`. Returns the server's
    ERR, or None when the statement was told to stop. Raises BackendError when the server cannot
    be reached in time (a frozen server answers nothing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    killer = await connect(
        server, username, password, database=None, client_capabilities=0, collation=0,
        attributes={"_client_name": "rwproxy", "program_name": program}, timeout=timeout,
    )  # fmt: skip
    try:
        return await asyncio.wait_for(killer.replay([b"\x03" + f"KILL QUERY {thread_id}".encode()]), max(0.001, deadline - loop.time()))
    except (asyncio.TimeoutError, ConnectionError) as e:
        raise BackendError(server, f"no answer to KILL QUERY within {timeout:g}s" if isinstance(e, asyncio.TimeoutError) else _describe(e)) from None
    finally:
        killer.close()


async def read_server_handshake(server: Server, timeout: float) -> HandshakeV10:
    """Read a server's greeting without logging in (to learn its version and collation)."""
    loop = asyncio.get_running_loop()

    async def go() -> HandshakeV10:
        _, conn = await loop.create_connection(lambda: BackendConnection(server), server.hostname, server.port)
        try:
            return parse_handshake_v10((await conn.read_packet()).payload)
        finally:
            conn.transport.abort()

    try:
        return await asyncio.wait_for(go(), timeout)
    except asyncio.TimeoutError:
        raise BackendError(server, f"no greeting within {timeout:g}s") from None
    except (OSError, ProtocolError) as e:
        raise BackendError(server, _describe(e)) from None


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


async def connect(
    server: Server,
    username: str,
    password: str,
    *,
    database: str | None,
    client_capabilities: int,
    collation: int,
    attributes: dict[str, str],
    timeout: float,
    max_packet: int = 1 << 30,
) -> BackendConnection:
    """Open and authenticate a backend connection mirroring the client's relevant capabilities."""
    loop = asyncio.get_running_loop()
    conn: BackendConnection | None = None

    async def go() -> BackendConnection:
        nonlocal conn
        _, conn = await loop.create_connection(lambda: BackendConnection(server), server.hostname, server.port)
        await _authenticate(conn, username, password, database, client_capabilities, collation, attributes, max_packet, timeout)
        return conn

    try:
        return await asyncio.wait_for(go(), timeout)
    except BackendError:
        if conn is not None:
            conn.transport.abort()
        raise
    except asyncio.TimeoutError:
        if conn is not None:
            conn.transport.abort()
        raise BackendError(server, f"connect timeout after {timeout:g}s") from None
    except (OSError, ProtocolError, ConnectionError) as e:
        if conn is not None and conn.transport is not None:
            conn.transport.abort()
        raise BackendError(server, _describe(e)) from None


async def _authenticate(
    conn: BackendConnection,
    username: str,
    password: str,
    database: str | None,
    client_caps: int,
    collation: int,
    attributes: dict[str, str],
    max_packet: int,
    timeout: float = 10.0,
) -> None:
    pkt = await conn.read_packet()
    if pkt.payload and pkt.payload[0] == ERR_HEADER:
        err = parse_err(pkt.payload)
        raise BackendError(conn.server, f"server refused connection: {err.message}", err)
    hs = parse_handshake_v10(pkt.payload)
    conn.handshake = hs
    # Session tracking always: the server's own report of state changes (the session decides what
    # they mean; the scanner strips them for a client that did not ask for them).
    mirrored = client_caps & MIRRORED_CAPABILITIES
    caps = (BACKEND_REQUIRED | Capability.SESSION_TRACK | (mirrored & 0xFFFFFFFF)) & hs.capabilities
    caps |= Capability.LONG_PASSWORD
    # MariaDB's extended capabilities the client chose (bits 32..63 of `client_caps`), where the
    # server offers them: announced by clearing CLIENT_MYSQL (bit 0), as MariaDB clients do.
    ext = (mirrored >> MARIADB_SHIFT) & hs.mariadb_capabilities
    if ext:
        caps &= ~Capability.LONG_PASSWORD
    if database:
        caps |= Capability.CONNECT_WITH_DB & hs.capabilities
    seq = pkt.seq + 1
    if conn.server.tls.ssl_mode != "disabled":
        if await _start_tls(conn, caps, ext, max_packet, collation or hs.collation, seq, timeout):
            caps |= Capability.SSL
            seq += 1
    conn.capabilities = caps
    conn.mariadb_capabilities = ext
    plugin = hs.auth_plugin if hs.auth_plugin in (NATIVE_PASSWORD, CACHING_SHA2_PASSWORD) else NATIVE_PASSWORD
    scramble = hs.auth_data
    resp = HandshakeResponse41(
        capabilities=caps,
        max_packet=max_packet,
        collation=collation or hs.collation,
        username=username,
        auth_response=auth.scramble_for(plugin, password, scramble),
        database=database,
        auth_plugin=plugin,
        attributes=attributes,
        mariadb_capabilities=ext,
    )
    conn.write(make_packet(make_handshake_response(resp), seq))
    while True:
        pkt = await conn.read_packet()
        seq = pkt.seq + 1
        payload = pkt.payload
        head = payload[0] if payload else ERR_HEADER
        if head == OK_HEADER:
            return
        if head == ERR_HEADER:
            err = parse_err(payload)
            raise BackendError(conn.server, f"login as {username!r} refused: {err.code} {err.message}", err)
        if head == 0xFE:  # auth switch
            sw = parse_auth_switch(payload)
            if sw.plugin not in (NATIVE_PASSWORD, CACHING_SHA2_PASSWORD):
                raise BackendError(conn.server, f"server asks for auth plugin {sw.plugin!r}, which rwproxy does not support")
            plugin, scramble = sw.plugin, sw.auth_data
            conn.write(make_packet(auth.scramble_for(plugin, password, scramble), seq))
            continue
        if head == 0x01:  # AuthMoreData (caching_sha2_password)
            await _caching_sha2_more(conn, payload[1] if len(payload) > 1 else 0, password, scramble, seq)
            continue
        raise BackendError(conn.server, f"unexpected packet 0x{head:02x} during authentication")


async def _start_tls(conn: BackendConnection, caps: int, ext: int, max_packet: int, collation: int, seq: int, timeout: float) -> bool:
    """SSLRequest and the TLS handshake, as the server's ssl_mode says. False: no TLS (preferred,
    and the server offers none). Raises BackendError (required or stronger and no TLS offered, or
    the handshake failed: a certificate that fails verification is logged, rate-limited)."""
    server = conn.server
    mode = server.tls.ssl_mode
    if not conn.handshake.capabilities & Capability.SSL:
        if mode == "preferred":
            return False
        raise BackendError(server, f"ssl_mode = {mode}, but the server does not offer TLS (enable TLS on the server, or lower ssl_mode for it)")
    try:
        context = tls.CLIENT_CONTEXTS.get(server.tls)
    except tls.TLSSetupError as e:
        raise BackendError(server, str(e)) from None
    conn.write(make_packet(make_ssl_request(caps, max_packet, collation, ext), seq))
    try:
        conn.transport = await tls.connect(conn.transport, conn, context, server.hostname, timeout)
    except (ssl.SSLError, ConnectionError) as e:
        why = tls.describe_failure(e)
        if isinstance(e, ssl.SSLCertVerificationError):
            _limited.log(logging.WARNING, ("tls", server.address), "server %s refused: %s (ssl_mode = %s)", server.address, why, mode)
        raise BackendError(server, why) from None
    conn.secure = True
    return True


async def _caching_sha2_more(conn: BackendConnection, status: int, password: str | auth.Stage1, scramble: bytes, seq: int) -> None:
    """An AuthMoreData of caching_sha2_password: "fast auth OK" (the OK follows), or "perform full
    authentication": the password in clear over TLS, else RSA-encrypted with the server's public
    key (pinned, or asked for when get_server_public_key allows)."""
    server = conn.server
    if status == CACHING_SHA2_FAST_AUTH_OK:
        return
    if status != CACHING_SHA2_FULL_AUTH:
        raise BackendError(server, f"unexpected auth data from server (status {status})")
    if isinstance(password, auth.Stage1):
        raise BackendError(server, "caching_sha2_password full authentication needs the account's clear password; the proxy keeps only its native hash")
    if conn.secure:
        conn.write(make_packet(password.encode("utf-8") + b"\0", seq))
        return
    settings = server.tls
    if settings.server_public_key:
        try:
            pem = tls.CLIENT_CONTEXTS.public_key(settings.server_public_key)
        except tls.TLSSetupError as e:
            raise BackendError(server, str(e)) from None
    elif settings.get_server_public_key:
        conn.write(make_packet(bytes((CACHING_SHA2_REQUEST_PUBLIC_KEY,)), seq))
        key_pkt = await conn.read_packet()
        seq, pem = key_pkt.seq + 1, bytes(key_pkt.payload[1:])
    else:
        raise BackendError(
            server,
            "caching_sha2_password full authentication without TLS needs the server's RSA public key: set server_public_key "
            "(its PEM file) or get_server_public_key = true for this server, or use TLS (ssl_mode)",
        )
    try:
        conn.write(make_packet(tls.rsa_encrypt_password(pem, password, scramble), seq))
    except (ValueError, TypeError) as e:
        raise BackendError(server, f"the server's RSA public key cannot be used: {e}") from None
