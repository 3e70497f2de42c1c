"""Client sessions: accept, handshake, authenticate, then relay commands.

Theory of operation: one ClientSession (an asyncio.Protocol) per client connection.
- Setup runs as a coroutine: send HandshakeV10 (advertising the writer's real version and collation),
  read HandshakeResponse41 within the handshake timeout, authenticate the user against the config
  (mysql_native_password or caching_sha2_password, switching plugin when the client offered one we
  cannot verify), open the session's backend connection, and only then say OK.
- The command phase is callback-driven, because it is the hot path: a whole command packet arrives,
  is dispatched, its bytes are written to the backend unchanged, the reply is relayed chunk by chunk
  (BackendConnection + ResultScanner) and `reply_done` picks up the next command. No coroutine, task
  or future is involved per statement.
- Commands the proxy must handle itself (COM_QUIT, COM_CHANGE_USER, unknown or unsupported commands)
  are answered here.

Two error families: the client misbehaved (ERR with the protocol's code, log once, close) and a
backend failed (ERR naming the hostgroup and the cause; the rest of the proxy carries on).
Passwords are never logged.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from typing import TYPE_CHECKING

from . import backend as backend_mod
from .backend import BackendConnection, BackendError
from .config import User
from .hostgroups import candidates
from .protocol import auth
from .protocol.constants import (
    CACHING_SHA2_FAST_AUTH_OK,
    CACHING_SHA2_PASSWORD,
    NATIVE_PASSWORD,
    PROXY_CAPABILITIES,
    Capability,
    Command,
    ErrorCode,
    ServerStatus,
)
from .protocol.framing import Packet, PacketFramer, ProtocolError, make_packet
from .protocol.packets import (
    OK,
    AuthSwitchRequest,
    HandshakeV10,
    make_auth_switch,
    make_err,
    make_handshake_v10,
    make_ok,
    parse_change_user,
    parse_handshake_response,
)
from .protocol.results import Reply, ResultScanner

if TYPE_CHECKING:
    from .app import ProxyApp

log = logging.getLogger("rwproxy.session")

# What reply each relayed command gets; commands absent here are refused with ER_UNKNOWN_COM_ERROR.
REPLY_FOR: dict[int, Reply] = {
    Command.QUERY: Reply.RESULT,
    Command.INIT_DB: Reply.SIMPLE,
    Command.PING: Reply.SIMPLE,
    Command.FIELD_LIST: Reply.FIELDS,
    Command.STATISTICS: Reply.ANY_ONE,
    Command.SET_OPTION: Reply.SIMPLE,
    Command.RESET_CONNECTION: Reply.SIMPLE,
    Command.REFRESH: Reply.SIMPLE,
    Command.DEBUG: Reply.SIMPLE,
    Command.PROCESS_INFO: Reply.RESULT,
    Command.PROCESS_KILL: Reply.SIMPLE,
    Command.STMT_PREPARE: Reply.PREPARE,
    Command.STMT_EXECUTE: Reply.RESULT,
    Command.STMT_FETCH: Reply.FETCH,
    Command.STMT_RESET: Reply.SIMPLE,
    Command.STMT_SEND_LONG_DATA: Reply.NONE,
    Command.STMT_CLOSE: Reply.NONE,
}

_session_ids = itertools.count(1)

# Pause reading from a client that pipelines more than this many bytes of commands.
_PIPELINE_LIMIT = 1 << 20


class ClientSession(asyncio.Protocol):
    def __init__(self, app: "ProxyApp") -> None:
        self.app = app
        self.id = next(_session_ids)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.user: User | None = None
        self.username = "-"
        self.framer = PacketFramer(app.config.max_allowed_packet)
        self.backend: BackendConnection | None = None
        self.capabilities = 0
        self.database: str | None = None
        self.collation = 0
        self.attributes: dict[str, str] = {}
        self.scramble = auth.new_scramble()
        self.status = ServerStatus.AUTOCOMMIT
        self.closed = False
        self.busy = True  # not accepting commands until logged in
        self.infile = False
        self._deprecate_eof = False
        self._reading_paused = False
        self._waiter: asyncio.Future | None = None
        self._setup_task: asyncio.Task | None = None

    # ---- logging ------------------------------------------------------------------------------

    def _ctx(self) -> str:
        return f"session={self.id} client={self.peer} user={self.username}"

    def _log(self, level: int, msg: str, *args: object) -> None:
        log.log(level, "%s " + msg, self._ctx(), *args)

    # ---- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.app.sessions[self.id] = self
        self._setup_task = asyncio.get_running_loop().create_task(self._setup())

    def data_received(self, data: bytes) -> None:
        self.framer.feed(data)
        if self.busy and not self.infile:
            self._wake()
            if self.framer.buffered > _PIPELINE_LIMIT and not self._reading_paused:
                self._set_reading(False)
            return
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed and not self.busy or self.infile:
            if self.framer.buffered or self.infile:
                self._log(logging.WARNING, "client closed the connection in the middle of a packet (%d bytes of it received)", self.framer.buffered)
        elif not self.closed and self.backend is not None and self.backend.scanner is not None:
            self._log(logging.INFO, "client went away during a reply; backend connection closed")
        self._teardown()

    def pause_writing(self) -> None:
        # The client reads slower than the server sends: stop reading from the server.
        if self.backend is not None:
            self.backend.pause_reading(True)

    def resume_writing(self) -> None:
        if self.backend is not None:
            self.backend.pause_reading(False)

    # ---- helpers ------------------------------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _read_packet(self, timeout: float) -> Packet:
        """Setup phase only: the next whole client packet, or TimeoutError / ConnectionError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            pkt = self.framer.next_packet()
            if pkt is not None:
                return pkt
            if self.closed:
                raise ConnectionResetError("client closed the connection")
            self._waiter = loop.create_future()
            try:
                await asyncio.wait_for(self._waiter, deadline - loop.time())
            finally:
                self._waiter = None

    def _send(self, payload: bytes, seq: int) -> None:
        if not self.closed:
            self.transport.write(make_packet(payload, seq))

    def _send_err(self, seq: int, code: int, message: str, sqlstate: str | None = None) -> None:
        self._send(make_err(code, message, sqlstate), seq)

    def _set_reading(self, on: bool) -> None:
        if self.closed:
            return
        self._reading_paused = not on
        if on:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self._teardown()

    def _teardown(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake()
        self.app.sessions.pop(self.id, None)
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def _protocol_error(self, seq: int, e: ProtocolError) -> None:
        self._log(logging.WARNING, "protocol error from client: %s", e)
        self._send_err(seq, e.code, str(e))
        self.close()

    # ---- setup --------------------------------------------------------------------------------

    async def _setup(self) -> None:
        try:
            await self._handshake()
        except asyncio.TimeoutError:
            self._log(logging.WARNING, "handshake timeout after %gs", self.app.config.handshake_timeout)
            self._send_err(2, ErrorCode.NET_READ_INTERRUPTED, "Got timeout reading communication packets (handshake not completed in time)")
            self.close()
        except ConnectionError:
            self._log(logging.INFO, "client closed the connection during the handshake")
            self.close()
        except ProtocolError as e:
            self._log(logging.WARNING, "bad handshake: %s", e)
            self._send_err(2, ErrorCode.HANDSHAKE_ERROR, f"Bad handshake: {e}")
            self.close()
        except Exception:
            log.exception("%s unexpected error during the handshake", self._ctx())
            self.close()

    async def _handshake(self) -> None:
        app = self.app
        hs = HandshakeV10(
            server_version=app.server_version,
            connection_id=self.id & 0xFFFFFFFF,
            auth_data=self.scramble,
            capabilities=PROXY_CAPABILITIES,
            collation=app.collation,
            status=ServerStatus.AUTOCOMMIT,
            auth_plugin=NATIVE_PASSWORD,
        )
        self._send(make_handshake_v10(hs), 0)
        timeout = app.config.handshake_timeout
        pkt = await self._read_packet(timeout)
        if pkt.seq != 1:
            raise ProtocolError(f"Got packets out of order (expected sequence id 1, got {pkt.seq})", code=ErrorCode.NET_PACKETS_OUT_OF_ORDER)
        resp = parse_handshake_response(pkt.payload)
        self.username = resp.username
        self.capabilities = resp.capabilities & PROXY_CAPABILITIES
        self._deprecate_eof = bool(self.capabilities & Capability.DEPRECATE_EOF)
        self.collation = resp.collation
        self.attributes = resp.attributes
        seq = pkt.seq + 1
        user, seq = await self._authenticate(resp.username, resp.auth_plugin, resp.auth_response, seq, timeout)
        if user is None:
            self.close()
            return
        if not await self._open_backend(user, resp.database, seq):
            self.close()
            return
        self.user = user
        self.database = resp.database
        self._send(make_ok(OK(status=self.status), self.capabilities), seq)
        self._log(logging.DEBUG, "logged in (backend %s thread %d)", self.backend.server.address, self.backend.thread_id)
        self.busy = False
        self._process()

    async def _authenticate(self, username: str, plugin: str, token: bytes, seq: int, timeout: float) -> tuple[User | None, int]:
        """Verify the client; on failure send ERR 1045. Returns (user or None, next sequence id)."""
        user = self.app.config.users.get(username)
        if user is not None and plugin != user.auth_plugin:
            # As MySQL does, the account's plugin decides: a client that tried another one is
            # asked to switch (AuthSwitchRequest with a fresh scramble).
            plugin = user.auth_plugin
            self.scramble = auth.new_scramble()
            self._send(make_auth_switch(AuthSwitchRequest(plugin, self.scramble)), seq)
            pkt = await self._read_packet(timeout)
            token, seq = bytes(pkt.payload), pkt.seq + 1
        if user is None or not auth.verify(plugin, user.password, self.scramble, token):
            self._log(logging.WARNING, "access denied")
            using = "YES" if token not in (b"", b"\0") else "NO"
            host = self.peer.rsplit(":", 1)[0]
            self._send_err(seq, ErrorCode.ACCESS_DENIED, f"Access denied for user '{username}'@'{host}' (using password: {using})")
            return None, seq
        if plugin == CACHING_SHA2_PASSWORD:
            self._send(bytes((0x01, CACHING_SHA2_FAST_AUTH_OK)), seq)
            seq += 1
        return user, seq

    async def _open_backend(self, user: User, database: str | None, seq: int) -> bool:
        """Connect the session's backend. On failure tell the client why (ERR) and return False."""
        app = self.app
        hostgroup = user.default_hostgroup
        servers = candidates(app.config.hostgroup(hostgroup))
        if not servers:
            self._send_err(seq, ErrorCode.CONN_HOST_ERROR, f"rwproxy: hostgroup {hostgroup} has no ONLINE server; check [[servers]] in the proxy config")
            self._log(logging.WARNING, "hostgroup %d has no ONLINE server", hostgroup)
            return False
        last: BackendError | None = None
        for server in servers:
            try:
                conn = await backend_mod.connect(
                    server,
                    user.backend_username,
                    user.backend_password,
                    database=database,
                    client_capabilities=self.capabilities,
                    collation=self.collation,
                    attributes=self.attributes,
                    timeout=app.config.connect_timeout,
                    max_packet=app.config.max_allowed_packet,
                )
            except BackendError as e:
                if e.err is not None and e.err.code != ErrorCode.CON_COUNT_ERROR and "refused connection" not in e.cause:
                    # The server answered and said no (unknown database, access denied for the
                    # backend user): that is the client's answer, exactly as the server gave it.
                    self._log(logging.WARNING, "backend %s (hostgroup %d) refused login: %d %s", server.address, hostgroup, e.err.code, e.err.message)
                    self._send_err(seq, e.err.code, e.err.message, e.err.sqlstate)
                    return False
                self._log(logging.WARNING, "backend %s (hostgroup %d) unavailable: %s", server.address, hostgroup, e.cause)
                last = e
                continue
            if self.closed:
                conn.close()
                return False
            app.learn_server(conn)
            conn.attach(self)
            self.backend = conn
            return True
        assert last is not None
        self._send_err(
            seq,
            ErrorCode.CONN_HOST_ERROR,
            f"rwproxy: cannot reach hostgroup {hostgroup}: {last}. Check that the server is running and reachable from the proxy",
        )
        return False

    # ---- command phase (hot path) -------------------------------------------------------------

    def _process(self) -> None:
        """Dispatch buffered client packets while the session is free to take them."""
        framer = self.framer
        while not self.closed:
            if self.infile:
                if not self._forward_infile():
                    return
                continue
            if self.busy:
                return
            try:
                pkt = framer.next_packet()
            except ProtocolError as e:
                self._protocol_error(1, e)
                return
            if pkt is None:
                if self._reading_paused:
                    self._set_reading(True)
                return
            self._dispatch(pkt)

    def _dispatch(self, pkt: Packet) -> None:
        payload = pkt.payload
        if pkt.seq != 0:
            self._protocol_error(1, ProtocolError(f"Got packets out of order (a command must start with sequence id 0, got {pkt.seq})", code=ErrorCode.NET_PACKETS_OUT_OF_ORDER))
            return
        if not payload:
            self._protocol_error(1, ProtocolError("Malformed communication packet (empty command)"))
            return
        cmd = payload[0]
        reply = REPLY_FOR.get(cmd)
        backend = self.backend
        if reply is not None and backend is not None:
            if reply is Reply.NONE:
                backend.write(pkt.raw)
                return
            self.busy = True
            backend.relay(pkt.raw, ResultScanner(reply, self._deprecate_eof))
            return
        if cmd == Command.QUIT:
            self._log(logging.DEBUG, "COM_QUIT")
            self.close()
            return
        if cmd == Command.CHANGE_USER:
            self.busy = True
            self._setup_task = asyncio.get_running_loop().create_task(self._change_user(pkt))
            return
        if backend is None:
            self._send_err(1, ErrorCode.LOST_CONNECTION, "rwproxy: this session has no backend connection; reconnect")
            self.close()
            return
        name = Command(cmd).name if cmd in Command._value2member_map_ else f"0x{cmd:02x}"
        self._log(logging.WARNING, "unsupported command %s", name)
        self._send_err(1, ErrorCode.UNKNOWN_COM_ERROR, f"Unknown command: rwproxy does not relay command {name}")

    # ReplySink ---------------------------------------------------------------------------------

    def relay(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def reply_done(self, scanner: ResultScanner) -> None:
        self.status = scanner.status or self.status
        self.busy = False
        if self.framer.buffered or self._reading_paused:
            self._process()

    def infile_requested(self) -> None:
        # The server asked for the client's file (LOAD DATA LOCAL INFILE): relay the client's
        # packets to the server until the empty packet that ends the file.
        self.infile = True
        self._process()

    def _forward_infile(self) -> bool:
        try:
            pkt = self.framer.next_packet(join=False)
        except ProtocolError as e:
            self._protocol_error(1, e)
            return False
        if pkt is None:
            return False
        self.backend.write(pkt.raw)
        if not pkt.payload:
            self.infile = False
            self.backend.scanner.expect_infile_reply()
        return True

    def backend_lost(self, backend: BackendConnection, exc: Exception | None) -> None:
        if backend is not self.backend or self.closed:
            return
        self.backend = None
        if backend.scanner is not None:
            self._log(logging.WARNING, "backend %s lost during a reply: %s", backend.server.address, exc or "closed by server")
        else:
            self._log(logging.WARNING, "backend %s closed the connection: %s", backend.server.address, exc or "closed by server")
        # Mid-reply the client cannot be given a coherent ERR; either way the session is over,
        # as it would be if the client had been connected to the server directly.
        if backend.scanner is None and not self.busy:
            self._send_err(0, ErrorCode.LOST_CONNECTION, f"Lost connection to backend server {backend.server.address} (hostgroup {backend.server.hostgroup_id}); reconnect")
        self.close()

    def backend_write_paused(self, paused: bool) -> None:
        # The server is not reading what the client sends (big LOAD DATA, huge query): stop reading
        # from the client until it catches up.
        self._set_reading(not paused)

    # ---- COM_CHANGE_USER ----------------------------------------------------------------------

    async def _change_user(self, pkt: Packet) -> None:
        try:
            cu = parse_change_user(pkt.payload, self.capabilities)
            plugin = cu.auth_plugin or NATIVE_PASSWORD
            user, seq = await self._authenticate(cu.username, plugin, cu.auth_response, 1, self.app.config.handshake_timeout)
            if user is None:
                # As MariaDB does: the ERR has been sent and the session carries on as the old user.
                self.busy = False
                self._process()
                return
            old = self.backend
            self.backend = None
            if cu.collation:
                self.collation = cu.collation
            if not await self._open_backend(user, cu.database, seq):
                if old is not None:
                    old.close()
                self.close()
                return
            if old is not None:
                old.close()
            self.user, self.username, self.database = user, user.username, cu.database
            self.status = ServerStatus.AUTOCOMMIT
            self._send(make_ok(OK(status=self.status), self.capabilities), seq)
            self._log(logging.INFO, "changed user")
            self.busy = False
            self._process()
        except ProtocolError as e:
            self._protocol_error(2, e)
        except (asyncio.TimeoutError, ConnectionError):
            self.close()
        except Exception:
            log.exception("%s unexpected error in COM_CHANGE_USER", self._ctx())
            self.close()
