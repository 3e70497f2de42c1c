"""Client sessions: accept, handshake, authenticate, then route and relay commands.

Theory of operation: one ClientSession (an asyncio.Protocol) per client connection.
- Setup runs as a coroutine: send HandshakeV10 (advertising the writer's real version and collation),
  read HandshakeResponse41 within the handshake timeout, authenticate the user against the config
  (the account's plugin decides, as in MySQL: mysql_native_password or caching_sha2_password), open
  the session's writer connection (so a bad schema or backend login fails at connect time, as it
  would against the server), and only then say OK.
- The command phase is callback-driven, because it is the hot path. A whole command packet arrives;
  a COM_QUERY is routed (proxy.router: cached classification, then rules.engine.decide); if the
  chosen hostgroup's connection is open and already carries the session's state, the packet is
  written to it unchanged and the reply relayed chunk by chunk (BackendConnection + ResultScanner);
  `reply_done` picks up the next command. No coroutine, task or future per statement.
- The slow path (a task) runs only when a connection must be opened (readers are opened lazily) or
  brought up to the session's state (proxy.session: a pipelined diff); a reader that cannot be used
  sends the read to the writer (when `reader_fallback_to_writer`).
- Transaction state comes from the server's status flags in the last OK/EOF of every reply: the
  hostgroup whose connection reports IN_TRANS (or autocommit off) holds the transaction, and the
  engine keeps the session there. Server-side prepared statements and every command other than
  COM_QUERY run on the writer.
- Commands the proxy must handle itself (COM_QUIT, COM_CHANGE_USER, unknown or unsupported commands)
  are answered here.
- Statistics (proxy.stats): one `StatsRegistry.statement_done` per statement (COM_QUERY, and
  COM_STMT_EXECUTE under the digest of its statement), when its reply ends (`reply_done`) or when the
  proxy answers it itself (`_answered_here`: a rule's Deny/Respond, KILL, no backend; hostgroup -1).
  The statement's Classification, rule ids and arrival time (`time.monotonic_ns`) are kept on the
  session meanwhile, and `current_sql` references its text for stats_mysql_processlist. In
  passthrough mode nothing is routed, but the digest is still needed: the text goes through
  `classify()` (a dict hit for a text seen recently, else a fingerprint). Every ERR a client gets is
  counted by code: the proxy's own in `_send_err`, the servers' at reply end.
- Client limits (the counting itself is ProxyApp's): a connection over [proxy] max_connections is
  told ERR 1040 right after the greeting exchange, in place of the authentication result; a user
  over its [[users]] max_connections gets ERR 1203 once authenticated. `last_activity` is stamped
  when client bytes arrive and when a reply ends (one store each: the app's sweeper, not a timer per
  statement, closes idle sessions). While the app drains for shutdown, a session closes itself as
  soon as it is free outside a transaction.

Two error families: the client misbehaved (ERR with the protocol's code, log once, close) and a
backend failed (ERR naming the hostgroup and the cause; the rest of the proxy carries on). State the
proxy cannot rebuild (a transaction, temporary tables, user variables) is never silently dropped:
if the connection holding it is lost, the client is told and disconnected. Passwords are never logged.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from rules.classify import Classification, Kind
from rules.engine import SessionView
from rules.model import Decision, Deny, RouteTo

from . import backend as backend_mod
from .backend import BackendConnection, BackendError, set_nodelay
from .config import Server, User
from .hostgroups import candidates
from .pool import Pool, PoolTimeout
from .protocol import auth
from .protocol.constants import (
    CACHING_SHA2_FAST_AUTH_OK,
    CACHING_SHA2_PASSWORD,
    MIRRORED_CAPABILITIES,
    NATIVE_PASSWORD,
    PROXY_CAPABILITIES,
    Capability,
    Command,
    ErrorCode,
    ServerStatus,
)
from .protocol.framing import Packet, PacketFramer, ProtocolError, make_packet
from .protocol.packets import (
    ERR,
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
from .router import classify_text
from .session import ConnState, PinReason, SessionState, charset_entry, pin_reasons_of

if TYPE_CHECKING:
    from .app import ProxyApp
    from .router import Router

log = logging.getLogger("rwproxy.session")
T = TypeVar("T")

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

_IN_TRANS = int(ServerStatus.IN_TRANS)
_AUTOCOMMIT = int(ServerStatus.AUTOCOMMIT)
_CURSOR_EXISTS = int(ServerStatus.CURSOR_EXISTS)
_LAST_ROW_SENT = int(ServerStatus.LAST_ROW_SENT)
_STATE_CHANGED = int(ServerStatus.SESSION_STATE_CHANGED)
_PREPARE_REPLY = Reply.PREPARE
_USE = Kind.USE
_SET = Kind.SET
# Statements whose own text says which session state they change (and which the session records or
# pins for): the server's SERVER_SESSION_STATE_CHANGED after them is no news.
_STATE_SHOWN = frozenset((
    Kind.SET, Kind.USE, Kind.DDL, Kind.LOCK_TABLES, Kind.UNLOCK_TABLES, Kind.PREPARE, Kind.DEALLOCATE,
    Kind.BEGIN, Kind.COMMIT, Kind.ROLLBACK, Kind.SAVEPOINT, Kind.RELEASE_SAVEPOINT, Kind.XA, Kind.FLUSH,
))  # fmt: skip
_KILL = Kind.KILL
_STMT_EXECUTE = int(Command.STMT_EXECUTE)
_monotonic_ns = time.monotonic_ns
# Functions whose value belongs to the client session, not to whichever connection runs the statement.
_SESSION_VALUE = re.compile(r"\b(CONNECTION_ID|ROW_COUNT|LAST_INSERT_ID)\s*\(\s*\)", re.I)
_KILL_TARGET = re.compile(r"\s*KILL\s+(?:(CONNECTION|QUERY)\s+)?(\d+)\s*;?\s*$", re.I)
_QUOTED = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|`(?:[^`]|``)*`", re.S)


def _outside_strings(sql: str, change: Callable[[str], str]) -> str:
    """Apply `change` to the parts of `sql` that are not quoted strings or identifiers."""
    out, pos = [], 0
    for m in _QUOTED.finditer(sql):
        out.append(change(sql[pos : m.start()]))
        out.append(m.group())
        pos = m.end()
    out.append(change(sql[pos:]))
    return "".join(out)
_STMT_COMMANDS = frozenset(
    (Command.STMT_PREPARE, Command.STMT_EXECUTE, Command.STMT_SEND_LONG_DATA, Command.STMT_CLOSE, Command.STMT_RESET, Command.STMT_FETCH)
)


def _failure(e: BaseException, timeout: float) -> str:
    """Why talking to a backend failed, in words (a TimeoutError's str() is empty)."""
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer within {timeout:g}s (connect_timeout)"
    return str(e) or type(e).__name__


def _err_code(payload: bytes) -> int:
    """The error code of an ERR packet's payload (0xFF, then the code as 2 bytes little-endian)."""
    return payload[1] | payload[2] << 8 if len(payload) >= 3 else 0


class _Statement:
    """A client's prepared statement: what is needed to prepare and execute it on any connection."""

    __slots__ = ("payload", "sql", "params", "types", "long_data", "key")

    def __init__(self, payload: bytes, sql: str, params: int, schema: str | None) -> None:
        self.payload = payload  # the COM_STMT_PREPARE payload (command byte + SQL)
        # A server-side statement binds its tables in the default schema of its PREPARE: the same
        # text prepared in another schema is another statement. Key of the connections' caches.
        self.key = (schema, payload)
        self.sql = sql
        self.params = params
        self.types: bytes | None = None  # parameter types from the last EXECUTE that bound them
        self.long_data: list[bytes] = []  # COM_STMT_SEND_LONG_DATA payloads awaiting EXECUTE
_USE_TARGET = re.compile(r"\s*(?:(?:/\*.*?\*/|(?:--\s|#)[^\n]*(?:\n|$))\s*)*USE\s+(`(?:[^`]|``)+`|[^\s;`]+)\s*;?\s*$", re.I | re.S)


class HostgroupError(Exception):
    """No usable connection to a hostgroup. `err` is the server's own ERR when it gave one."""

    def __init__(self, hostgroup: int, message: str, err: ERR | None = None) -> None:
        super().__init__(message)
        self.hostgroup, self.err = hostgroup, err

    def client_err(self) -> tuple[int, str, str | None]:
        if self.err is not None:
            return self.err.code, self.err.message, self.err.sqlstate
        return ErrorCode.CONN_HOST_ERROR, str(self), None


class ClientSession(asyncio.Protocol):
    def __init__(self, app: "ProxyApp") -> None:
        self.app = app
        self.router = app.router
        self.id = next(_session_ids)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.client_ip: str | None = None
        self.local: tuple[str, int] = ("", 0)
        self.user: User | None = None
        self.username = "-"
        self.framer = PacketFramer(app.config.max_allowed_packet)
        self.conns: dict[int, BackendConnection] = {}  # hostgroup -> this session's connection there
        self.current: BackendConnection | None = None  # running the command in flight
        self.writer_hg = 0
        self.state = SessionState(None)
        self.pinned_writer = False
        self.pin_reasons: set[PinReason] = set()
        self._temp_tables: set[str] = set()  # "schema.table" of the temporary tables the session created
        self.holding_insert_id = False  # keep the writer connection for LAST_INSERT_ID()
        self.insert_id = 0  # LAST_INSERT_ID() of the session: the last insert id an OK reported
        self.row_count = -1  # ROW_COUNT() of the session: what its previous statement affected
        self._reset_on_release = False  # the reply in flight left state nobody else may inherit
        # Connections go back to their pool after each statement unless pinned (transaction-level
        # multiplexing); without classification (passthrough) nothing says when that is safe.
        self.multiplexing = app.config.multiplexing and not app.router.passthrough
        # Statements go unclassified to the writer (one hostgroup, nothing to decide, no pooling).
        self.passthrough = app.router.passthrough
        self._wire: tuple[int, int] = (0, 0)  # mirrored capabilities and collation: part of the pool key
        self._pools: dict[str, Pool] = {}
        self._preferred: dict[int, Server] = {}  # hostgroup -> the server this session prefers there
        self.stmts: dict[int, _Statement] = {}  # the client's prepared statements, by the proxy's ids
        self._next_stmt_id = 1
        self._cursors: dict[int, BackendConnection] = {}  # statement id -> connection with its open cursor
        self._rewrite_id: bytes | None = None
        self.txn_hg: int | None = None  # hostgroup whose connection holds an open transaction
        self._lost: str | None = None  # why this session's unrebuildable state is gone
        self._post: tuple | None = None  # what to record when the reply in flight ends well
        self._view: SessionView | None = None
        self.capabilities = 0
        self.collation = 0
        self.attributes: dict[str, str] = {}
        self.scramble = auth.new_scramble()
        self.status = int(ServerStatus.AUTOCOMMIT)
        self.closed = False
        self.busy = True  # not accepting commands until logged in
        self.infile = False
        self._deprecate_eof = False
        self._strip_state = True  # the client did not negotiate session tracking: strip it from replies
        self._reading_paused = False
        self._write_paused = False  # the client's socket buffer is full
        self._paused_backend: BackendConnection | None = None
        self._waiter: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        # Limits (see ProxyApp): counted against [proxy] max_connections? against which user?
        self.admitted = False
        self.counted_user: str | None = None
        self.logged_in = False
        self.draining = False  # the app is shutting down: close once free outside a transaction
        self._clock = app.clock
        self.last_activity = 0.0  # app clock; when the client last sent bytes or a reply ended
        # Stats (proxy.stats): the statement in flight is recorded once, when its reply ends
        # (`reply_done`) or when the proxy answers it itself (`_answered_here`, hostgroup -1).
        self._stats = app.stats
        self._stat: Classification | None = None  # the statement in flight (COM_QUERY, COM_STMT_EXECUTE)
        self._rule_ids: tuple[int, ...] = ()  # the rules it matched
        self._t0 = 0  # time.monotonic_ns() when it arrived
        self.current_sql: str | None = None  # its text (a reference, not a copy): stats_mysql_processlist
        # Without multiplexing, server statement id -> (classification, text) of the client's
        # prepared statements, so that COM_STMT_EXECUTE counts under its statement's digest.
        self._ps_classes: dict[int, tuple[Classification, str]] = {}
        self._preparing: tuple[Classification, str] | None = None  # a COM_STMT_PREPARE in flight (same case)
        self._quit = False  # the client said COM_QUIT (anything else that ends it counts as aborted)

    # ---- logging ------------------------------------------------------------------------------

    def _ctx(self) -> str:
        return f"session={self.id} client={self.peer} user={self.username}"

    def _log(self, level: int, msg: str, *args: object) -> None:
        if log.isEnabledFor(level):
            log.log(level, "%s " + msg, self._ctx(), *args)

    def describe(self) -> str:
        conns = ",".join(f"hg{hg}:{c.server.address}#{c.thread_id}{'(relaying)' if c.scanner else ''}{'(paused)' if c.reading_paused else ''}" for hg, c in self.conns.items())
        idle = f"{self._clock() - self.last_activity:.1f}s" if self.logged_in and not self.busy else "-"
        return (
            f"{self._ctx()} busy={self.busy} idle={idle} infile={self.infile} client_reading_paused={self._reading_paused} "
            f"buffered={self.framer.buffered} current={getattr(self.current, 'hostgroup', None)} txn_hg={self.txn_hg} "
            f"pinned_writer={self.pinned_writer} pins=[{','.join(sorted(r.value for r in self.pin_reasons))}] schema={self.state.schema} conns=[{conns}]"
        )

    # ---- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
            self.client_ip = peer[0]
        sockname = transport.get_extra_info("sockname")
        if sockname:
            self.local = (sockname[0], sockname[1])
        set_nodelay(transport)
        self._stats.client_connected()
        self.admitted = self.app.admit(self)
        if self.app.draining:  # accepted just before the listener closed
            self.close()
            return
        self._task = asyncio.get_running_loop().create_task(self._setup())

    def data_received(self, data: bytes) -> None:
        self.last_activity = self._clock()
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
        elif not self.closed and self.current is not None and self.current.scanner is not None:
            self._log(logging.INFO, "client went away during a reply; backend connection closed")
        self._teardown()

    def pause_writing(self) -> None:
        # The client reads slower than the server sends: stop reading from the server. The paused
        # connection is remembered, not looked up on resume: the reply may end (and `current` be
        # cleared) in the very chunk that filled the client's buffer.
        self._write_paused = True
        if self.current is not None:
            self._pause_backend(self.current)

    def resume_writing(self) -> None:
        self._write_paused = False
        conn = self._paused_backend
        if conn is not None:
            self._paused_backend = None
            conn.pause_reading(False)

    def _pause_backend(self, conn: BackendConnection) -> None:
        old = self._paused_backend
        if old is not conn:
            if old is not None:
                old.pause_reading(False)  # idle by now: its reply is over
            self._paused_backend = conn
            conn.pause_reading(True)

    def _start(self, conn: BackendConnection, raw: bytes, reply: Reply) -> None:
        """Send a command on `conn` and relay its reply to the client."""
        self.current = conn
        if self._write_paused:
            self._pause_backend(conn)  # the client has not drained the previous reply yet
        if reply is _PREPARE_REPLY and self.multiplexing:
            self._make_room(conn)
        conn.relay(raw, ResultScanner(reply, self._deprecate_eof, self._strip_state))

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
        if not self.closed:
            self._stats.error(code)
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
        if not self._quit:
            self._stats.client_aborted()
        self._wake()
        self.app.forget(self)
        self._release_all()

    def _protocol_error(self, seq: int, e: ProtocolError) -> None:
        self._log(logging.WARNING, "protocol error from client: %s", e)
        self._send_err(seq, e.code, str(e))
        self.close()

    @property
    def in_transaction(self) -> bool:
        """A transaction is open on the server (SERVER_STATUS_IN_TRANS in the last reply). Unlike
        `txn_hg`, which also pins an autocommit=0 session that has nothing open yet, this is what
        a shutdown would lose."""
        return self.txn_hg is not None and bool(self.status & _IN_TRANS)

    def _free(self) -> None:
        """Take commands again (after login, COM_CHANGE_USER, or a command answered off the hot path)."""
        self.busy = False
        self.last_activity = self._clock()
        if self.draining and not self.in_transaction:
            self.close_for_shutdown()
            return
        self._process()

    # ---- limits -------------------------------------------------------------------------------

    def _count_user(self, user: User, seq: int) -> bool:
        """Count this session against `user`'s max_connections (moving it off the user it was
        counted for); at the limit send ERR 1203, as MySQL does for max_user_connections."""
        if self.counted_user == user.username:
            return True
        if self.closed or not self.app.login_user(user.username, user.max_connections):
            if not self.closed:
                self._log(logging.WARNING, "user %s is at its max_connections (%d): refused", user.username, user.max_connections)
                self._send_err(seq, ErrorCode.TOO_MANY_USER_CONNECTIONS, f"User {user.username} already has more than 'max_user_connections' active connections")
            return False
        if self.counted_user is not None:
            self.app.logout_user(self.counted_user)
        self.counted_user = user.username
        return True

    def close_idle(self) -> None:
        """[proxy] client_idle_timeout passed without a command: tell the client as MySQL 8.0.24+
        does for wait_timeout (ER_CLIENT_INTERACTION_TIMEOUT, sequence id 0), then close."""
        timeout = self.app.config.client_idle_timeout
        self._log(logging.INFO, "closed: no command for %.1fs (client_idle_timeout = %gs)", self._clock() - self.last_activity, timeout)
        self._send_err(
            0,
            ErrorCode.CLIENT_INTERACTION_TIMEOUT,
            "The client was disconnected by the server because of inactivity. "
            f"See client_idle_timeout ({timeout:g}s) in the rwproxy configuration for configuring this behavior.",
        )
        self.close()

    def close_for_shutdown(self, cut: bool = False) -> None:
        """The proxy is stopping. A free session is told ER_SERVER_SHUTDOWN (sequence id 0, as
        MariaDB does); mid-command nothing can be said without corrupting the reply."""
        if self.closed:
            return
        if cut:
            self._log(logging.WARNING, "cut at shutdown: %s", "statement still running" if self.busy else f"transaction still open on hostgroup {self.txn_hg}")
        if self.logged_in and not self.busy:
            self._send_err(0, ErrorCode.SERVER_SHUTDOWN, "Server shutdown in progress")
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
        if not self.admitted:
            # MySQL sends this ERR in place of the greeting; here it comes where the client awaits
            # its authentication result, which every client reports faithfully (MariaDB's
            # Connector/C, which wants TLS by default, reports an ERR before the greeting as
            # CR_CONNECTION_ERROR 2002 "Received error packet before completion of TLS handshake").
            self._log(logging.WARNING, "too many connections (max_connections = %d): refused", app.config.max_connections)
            self._send_err(2, ErrorCode.CON_COUNT_ERROR, "Too many connections")
            self.close()
            return
        if pkt.seq != 1:
            raise ProtocolError(f"Got packets out of order (expected sequence id 1, got {pkt.seq})", code=ErrorCode.NET_PACKETS_OUT_OF_ORDER)
        resp = parse_handshake_response(pkt.payload)
        self.username = resp.username
        self.capabilities = resp.capabilities & PROXY_CAPABILITIES
        self._deprecate_eof = bool(self.capabilities & Capability.DEPRECATE_EOF)
        self._strip_state = not self.capabilities & Capability.SESSION_TRACK
        self.collation = resp.collation
        self.attributes = resp.attributes
        seq = pkt.seq + 1
        user, seq = await self._authenticate(resp.username, resp.auth_plugin, resp.auth_response, seq, timeout)
        if user is None or not self._count_user(user, seq):
            self.close()
            return
        if not await self._login_backend(user, resp.database, seq):
            self.close()
            return
        self._send(make_ok(OK(status=self.status), self.capabilities), seq)
        self._log(logging.DEBUG, "logged in")
        self.logged_in = True
        self._free()

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

    async def _login_backend(self, user: User, database: str | None, seq: int) -> bool:
        """Become `user` with a fresh state; check the writer takes it (schema included).

        On failure send ERR and return False."""
        self._release_all()
        self.user, self.username, self.writer_hg = user, user.username, user.default_hostgroup
        self.state = SessionState(database, charset_entry(self.collation))
        self.pinned_writer, self.pin_reasons, self.txn_hg, self._lost, self._view = False, set(), None, None, None
        self._temp_tables = set()
        self.holding_insert_id = False
        self.status = int(ServerStatus.AUTOCOMMIT)
        self._wire = (self.capabilities & MIRRORED_CAPABILITIES, self.collation)
        self._pools = {}
        self.stmts, self._cursors = {}, {}
        self._ps_classes, self._preparing = {}, None
        try:
            conn = await self._ready(self.writer_hg, fallback=False)
        except HostgroupError as e:
            code, message, sqlstate = e.client_err()
            if e.err is not None and e.err.code == ErrorCode.BAD_DB_ERROR:
                message = f"Unknown database '{database}'"
            self._send_err(seq, code, message, sqlstate)
            return False
        if self.multiplexing:
            self._release(conn)
        return not self.closed

    def config_changed(self, router: Router) -> None:
        """A new runtime configuration is live (ProxyApp.apply_config): the next statement uses it."""
        self.router = router
        # A multiplexing session keeps classifying even if the new config needs none: its state
        # (pins, variables) must still be tracked.
        self.passthrough = router.passthrough and not self.multiplexing
        self._preferred.clear()  # servers are chosen again, by the new weights and statuses
        self._pools.clear()
        self._view = None

    def _pool(self, server: Server) -> Pool:
        pool = self._pools.get(server.address)
        if pool is None:
            user = self.user
            pool = self._pools[server.address] = self.app.pool_for(server, user.backend_username, user.backend_password, *self._wire)
        return pool

    def _take(self, conn: BackendConnection, hostgroup: int) -> BackendConnection:
        conn.hostgroup = hostgroup
        if conn.stats.hostgroup != hostgroup:  # its stats handle: per (hostgroup, server)
            conn.stats = self._stats.server(hostgroup, conn.server.address)
        conn.attach(self)
        self.conns[hostgroup] = conn
        return conn

    def _try_acquire(self, hostgroup: int) -> BackendConnection | None:
        """Hot path: an idle pooled connection of a server of `hostgroup`, synchronously, or None."""
        server = self._preferred.get(hostgroup)
        if server is None or server.status != "ONLINE":
            # Chosen once per session by weight (the spread over servers is per session, and a
            # session's statements keep meeting the same server's caches).
            picks = candidates(self.router.hostgroups.servers(hostgroup))
            if not picks:
                return None
            server = self._preferred[hostgroup] = picks[0]
        conn = self._pool(server).try_acquire()
        if conn is None:
            return None
        conn = self._take(conn, hostgroup)
        conn.stats.acquire_immediate += 1
        return conn

    async def _acquire(self, hostgroup: int) -> BackendConnection:
        """A connection to a server of `hostgroup` (its ONLINE servers tried in weighted order)."""
        servers = candidates(self.router.hostgroups.servers(hostgroup))
        preferred = self._preferred.get(hostgroup)
        if preferred in servers:
            servers.remove(preferred)
            servers.insert(0, preferred)
        if not servers:
            self._log(logging.WARNING, "hostgroup %d has no ONLINE server", hostgroup)
            raise HostgroupError(hostgroup, f"rwproxy: hostgroup {hostgroup} has no ONLINE server; check [[servers]] in the proxy config")
        last: Exception | None = None
        for server in servers:
            t0 = _monotonic_ns()
            try:
                conn = await self._pool(server).acquire()
            except BackendError as e:
                if e.err is not None and e.err.code != ErrorCode.CON_COUNT_ERROR and "refused connection" not in e.cause:
                    # The server answered and said no (access denied for the backend user): that is
                    # the client's answer, exactly as the server gave it.
                    self._log(logging.WARNING, "backend %s (hostgroup %d) refused login: %d %s", server.address, hostgroup, e.err.code, e.err.message)
                    raise HostgroupError(hostgroup, e.err.message, e.err) from None
                self._log(logging.WARNING, "backend %s (hostgroup %d) unavailable: %s", server.address, hostgroup, e.cause)
                last = e
                continue
            except PoolTimeout as e:
                self._stats.acquire_failed(self._stats.server(hostgroup, server.address), _monotonic_ns() - t0)
                self._log(logging.WARNING, "hostgroup %d: %s", hostgroup, e)
                raise HostgroupError(
                    hostgroup,
                    f"rwproxy: hostgroup {hostgroup}: waited {e.waited:g}s for a backend connection ({e.why}); "
                    "the server's max_connections or [pool] limits are too low for this load",
                ) from None
            if self.closed:
                conn.pool.release(conn)
                raise HostgroupError(hostgroup, "client went away")
            conn = self._take(conn, hostgroup)
            self._stats.acquire_done(conn.stats, _monotonic_ns() - t0)
            return conn
        assert last is not None
        raise HostgroupError(
            hostgroup,
            f"rwproxy: cannot reach hostgroup {hostgroup}: {last}. Check that the server is running and reachable from the proxy",
        )

    def _holds(self, conn: BackendConnection, status: int) -> bool:
        """Must this session keep `conn` after its reply? (Otherwise it goes back to its pool.)"""
        hg = conn.hostgroup
        if hg == self.txn_hg or self.infile or (self._cursors and conn in self._cursors.values()):
            return True
        if hg == self.writer_hg and (self.pinned_writer or self.holding_insert_id):
            return True
        return False

    def _release(self, conn: BackendConnection, reset: bool = False) -> None:
        if self.conns.get(conn.hostgroup) is conn:
            del self.conns[conn.hostgroup]
        conn.detach()
        if self._paused_backend is conn:
            self._paused_backend = None
            conn.pause_reading(False)
        if conn.scanner is not None:
            conn.close()  # mid-reply: nobody can use the rest of it
        pool = getattr(conn, "pool", None)
        if pool is not None:
            pool.release(conn, reset=reset)
        else:
            conn.close()

    def _discard(self, conn: BackendConnection) -> None:
        """A connection that failed mid-conversation: closed first, so its pool drops it rather than
        lending it to the next session waiting."""
        conn.close()
        self._release(conn)

    def _release_all(self, keep: BackendConnection | None = None) -> None:
        """Give back every held connection; those with state nobody can replay are reset first."""
        dirty = self.pinned_writer or self._lost is not None or not self.multiplexing
        for conn in list(self.conns.values()):
            if conn is not keep:
                self._release(conn, reset=dirty or conn.hostgroup == self.txn_hg)

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
        if self._lost is not None and cmd != Command.QUIT:
            self._send_err(1, ErrorCode.LOST_CONNECTION, self._lost)
            self.close()
            return
        if cmd == Command.QUERY:
            self._t0 = _monotonic_ns()
            if self.passthrough:
                # Nothing to route, but the digest table counts every statement: classify() is
                # cached by raw text (a dict hit for a text seen before), else a fingerprint.
                sql = bytes(pkt.payload[1:]).decode("utf-8", "surrogateescape")
                self._stat = classify_text(sql)
                self._rule_ids, self.current_sql = (), sql
                self._run(self.writer_hg, pkt.raw, Reply.RESULT, None)
            else:
                self._query(pkt)
            return
        if cmd in _STMT_COMMANDS and self.multiplexing:
            self._statement_command(cmd, pkt)
            return
        reply = REPLY_FOR.get(cmd)
        if reply is not None:
            if reply is Reply.NONE:
                # COM_STMT_CLOSE / SEND_LONG_DATA: no reply; the statement lives on the writer.
                if cmd == Command.STMT_CLOSE and self._ps_classes:
                    self._ps_classes.pop(int.from_bytes(payload[1:5], "little"), None)
                conn = self.conns.get(self.writer_hg)
                if conn is not None:
                    conn.write(pkt.raw)
                return
            if cmd == _STMT_EXECUTE:
                known = self._ps_classes.get(int.from_bytes(payload[1:5], "little"))
                if known is not None:  # counted under its statement's digest
                    self._t0 = _monotonic_ns()
                    self._stat, self.current_sql = known
                    self._rule_ids = ()
            elif cmd == Command.STMT_PREPARE:
                # Without multiplexing, statements live on the session's writer connection.
                self._pin(PinReason.PREPARED_STATEMENT)
                sql = bytes(payload[1:]).decode("utf-8", "surrogateescape")
                self._preparing = (classify_text(sql), sql)
            elif cmd == Command.RESET_CONNECTION:
                self._ps_classes.clear()  # the server closes them all
            post = (cmd, pkt.payload) if cmd in (Command.INIT_DB, Command.RESET_CONNECTION) else None
            self._run(self.writer_hg, pkt.raw, reply, post)
            return
        if cmd == Command.QUIT:
            self._log(logging.DEBUG, "COM_QUIT")
            self._quit = True
            self.close()
            return
        if cmd == Command.CHANGE_USER:
            self.busy = True
            self._task = asyncio.get_running_loop().create_task(self._change_user(pkt))
            return
        name = Command(cmd).name if cmd in Command._value2member_map_ else f"0x{cmd:02x}"
        self._log(logging.WARNING, "unsupported command %s", name)
        self._send_err(1, ErrorCode.UNKNOWN_COM_ERROR, f"Unknown command: rwproxy does not relay command {name}")

    # ---- server-side prepared statements under multiplexing -----------------------------------
    #
    # The client sees stable statement ids of the proxy's own. A statement is prepared lazily on
    # whichever connection executes it (the connection's id is patched into each COM_STMT_EXECUTE);
    # parameter types the client sent once are re-sent where a connection has not seen them; long
    # data is kept until EXECUTE and replayed just before it; a cursor keeps its connection until it
    # is exhausted or closed. Connections keep at most [pool] max_prepared_statements statements.

    def _statement_command(self, cmd: int, pkt: Packet) -> None:
        payload = pkt.payload
        if cmd == Command.STMT_PREPARE:
            sql = bytes(payload[1:]).decode("utf-8", "surrogateescape")
            cls, decision = self.router.route(sql, self._session_view())
            action = decision.action
            if type(action) is not RouteTo:
                msg = action.error_msg if type(action) is Deny else action.ok_msg
                self._send_err(1, getattr(action, "errno", 1148), msg, getattr(action, "sqlstate", "42000"))
                return
            sid = self._next_stmt_id
            self._next_stmt_id = sid % 0xFFFFFFFF + 1
            self._rewrite_id = sid.to_bytes(4, "little")
            self._run(action.hostgroup, pkt.raw, Reply.PREPARE, (Command.STMT_PREPARE, bytes(payload), sql, sid))
            return
        if len(payload) < 5:
            self._protocol_error(1, ProtocolError("Malformed communication packet (statement command too short)"))
            return
        sid = int.from_bytes(payload[1:5], "little")
        stmt = self.stmts.get(sid)
        if cmd == Command.STMT_CLOSE:
            self.stmts.pop(sid, None)
            conn = self._cursors.pop(sid, None)
            if conn is not None and stmt is not None:
                entry = conn.prepared.pop(stmt.key, None)
                if entry is not None:
                    conn.write(make_packet(b"\x19" + entry[0].to_bytes(4, "little"), 0))
                if self.multiplexing and not self._holds(conn, 0):
                    self._release(conn)
            return
        if stmt is None:
            if cmd != Command.STMT_SEND_LONG_DATA:  # that one never answers
                name = {Command.STMT_EXECUTE: "mysqld_stmt_execute", Command.STMT_FETCH: "mysqld_stmt_fetch"}.get(cmd, "mysqld_stmt_reset")
                self._send_err(1, ErrorCode.UNKNOWN_STMT_HANDLER, f"Unknown prepared statement handler ({sid}) given to {name}")
            return
        if cmd == Command.STMT_SEND_LONG_DATA:
            stmt.long_data.append(bytes(payload))
            return
        if cmd == Command.STMT_RESET:
            stmt.long_data.clear()
            conn = self._cursors.pop(sid, None)
            entry = conn.prepared.get(stmt.key) if conn is not None else None
            if entry is None:
                self._send(make_ok(OK(status=self.status), self.capabilities), 1)
                return
            self.busy, self._post, self.current = True, None, conn
            self._start(conn, self._with_id(pkt.raw, entry[0]), Reply.SIMPLE)
            return
        if cmd == Command.STMT_FETCH:
            conn = self._cursors.get(sid)
            entry = conn.prepared.get(stmt.key) if conn is not None else None
            if entry is None:
                self._send_err(1, 1421, f"The statement ({sid}) has no open cursor.", "HY000")
                return
            self.busy, self._post = True, (Command.STMT_FETCH, sid)
            self._start(conn, self._with_id(pkt.raw, entry[0]), Reply.FETCH)
            return
        # COM_STMT_EXECUTE
        self._t0 = _monotonic_ns()
        if stmt.params:
            flag_at = 10 + (stmt.params + 7) // 8
            if len(payload) > flag_at and payload[flag_at] == 1:
                stmt.types = bytes(payload[flag_at + 1 : flag_at + 1 + 2 * stmt.params])
        cls, decision = self.router.route(stmt.sql, self._session_view())
        self._stat, self._rule_ids, self.current_sql = cls, decision.rule_ids, stmt.sql
        hg = decision.hostgroup if decision.hostgroup is not None else self.writer_hg
        self.busy = True
        self._post = (Command.STMT_EXECUTE, sid)
        conn = self.conns.get(hg)
        if conn is None:
            conn = self._try_acquire(hg)
        if conn is not None and self.state.matches(conn.cstate):
            entry = conn.prepared.get(stmt.key)
            if entry is not None:
                cs = conn.cstate
                cs.owner, cs.gen = self.state, self.state.gen
                self._execute(conn, stmt, entry, pkt)
                return
        self._task = asyncio.get_running_loop().create_task(self._execute_slow(hg, stmt, pkt))

    async def _execute_slow(self, hostgroup: int, stmt: "_Statement", pkt: Packet) -> None:
        async def ready() -> tuple[BackendConnection, list]:
            conn = await self._ready(hostgroup)
            entry = conn.prepared.get(stmt.key)
            if entry is None:
                self._make_room(conn)
                try:
                    res = await asyncio.wait_for(conn.prepare(stmt.payload), self.app.config.connect_timeout)
                except (asyncio.TimeoutError, ConnectionError) as e:
                    self._discard(conn)
                    raise HostgroupError(hostgroup, f"rwproxy: backend {conn.server.address} failed while preparing a statement: {_failure(e, self.app.config.connect_timeout)}") from None
                if isinstance(res, ERR):
                    raise HostgroupError(hostgroup, res.message, res)
                entry = self._remember_prepared(conn, stmt.key, res[0])
            return conn, entry

        await self._slow(ready(), lambda got: self._execute(got[0], stmt, got[1], pkt))

    def _execute(self, conn: BackendConnection, stmt: "_Statement", entry: list, pkt: Packet) -> None:
        backend_id = entry[0].to_bytes(4, "little")
        conn.prepared.move_to_end(stmt.key)
        for data in stmt.long_data:  # no replies: they ride just ahead of the EXECUTE
            conn.write(make_packet(data[:1] + backend_id + data[5:], 0))
        stmt.long_data.clear()
        if stmt.params and stmt.types is not None and entry[1] != stmt.types:
            payload = bytes(pkt.payload)
            flag_at = 10 + (stmt.params + 7) // 8
            if len(payload) > flag_at and payload[flag_at] == 0:
                # This connection's statement has not seen the types the client bound earlier.
                payload = bytes(payload[:flag_at]) + b"\x01" + stmt.types + bytes(payload[flag_at + 1 :])
            entry[1] = stmt.types
            raw = make_packet(payload[:1] + backend_id + payload[5:], 0)
        else:
            raw = self._with_id(pkt.raw, entry[0])
        self._start(conn, raw, Reply.RESULT)

    @staticmethod
    def _with_id(raw: bytes, backend_id: int) -> bytearray:
        out = bytearray(raw)
        out[5:9] = backend_id.to_bytes(4, "little")
        return out

    def _make_room(self, conn: BackendConnection) -> None:
        """Before a statement is prepared on `conn`: close its least recently used ones so that,
        with the new one, it keeps at most [pool] max_prepared_statements (the server's
        Prepared_stmt_count never exceeds that times the connections)."""
        cache = conn.prepared
        limit = self.app.config.pool.max_prepared
        while len(cache) >= limit:
            _, (evicted, _) = cache.popitem(last=False)
            conn.write(make_packet(b"\x19" + evicted.to_bytes(4, "little"), 0))

    def _remember_prepared(self, conn: BackendConnection, key: tuple, backend_id: int) -> list:
        cache = conn.prepared
        old = cache.pop(key, None)
        if old is not None:
            conn.write(make_packet(b"\x19" + old[0].to_bytes(4, "little"), 0))
        entry = cache[key] = [backend_id, None]  # (_make_room made room before the PREPARE)
        return entry

    def _session_view(self) -> SessionView:
        view = self._view
        if view is None:
            view = self._view = SessionView(
                default_hostgroup=self.writer_hg,
                username=self.username,
                schemaname=self.state.schema,
                client_addr=self.client_ip,
                proxy_addr=self.local[0],
                proxy_port=self.local[1],
                transaction_persistent=self.user.transaction_persistent,
                in_transaction=self.txn_hg is not None,
                txn_hostgroup=self.txn_hg,
                pinned_writer=self.pinned_writer,
            )
        return view

    def _query(self, pkt: Packet) -> None:
        sql = bytes(pkt.payload[1:]).decode("utf-8", "surrogateescape")
        rewritten = None
        if _SESSION_VALUE.search(sql):
            rewritten = sql = _outside_strings(sql, lambda part: _SESSION_VALUE.sub(self._session_value, part))
        cls, decision = self.router.route(sql, self._session_view())
        self._stat, self._rule_ids, self.current_sql = cls, decision.rule_ids, sql
        if cls.kind is _KILL:
            self._kill(sql)
            if not self.busy:  # refused at once (else _kill_slow records it)
                self._answered_here()
            return
        action = decision.action
        if type(action) is RouteTo:
            raw = pkt.raw
            if decision.sql is not None or rewritten is not None:
                raw = make_packet(b"\x03" + (decision.sql or sql).encode("utf-8", "surrogateescape"), 0)
            self._run(action.hostgroup, raw, Reply.RESULT, (cls, decision, sql))
        elif type(action) is Deny:
            self._log(logging.INFO, "statement blocked by rule(s) %s", ",".join(map(str, decision.rule_ids)))
            self._send_err(1, action.errno, action.error_msg, action.sqlstate)
            self._answered_here()
        else:
            self._send(make_ok(OK(status=self.status, info=action.ok_msg.encode()), self.capabilities), 1)
            self._answered_here()

    def _answered_here(self) -> None:
        """The statement in flight was answered by the proxy itself (a rule's Deny/Respond, KILL,
        an ERR because no backend could take it): it counts in hostgroup -1 (`StatsRegistry.local`)."""
        stat = self._stat
        if stat is not None:
            self._stat = self.current_sql = None
            stats = self._stats
            stats.statement_done(stats.local, stat.fingerprint, stat.kind, self.state.schema, self.username, self._rule_ids, self._t0)

    # ---- KILL [QUERY | CONNECTION] <the proxy's connection id> --------------------------------

    def _session_value(self, m: re.Match) -> str:
        """The session's own value of CONNECTION_ID() / ROW_COUNT() / LAST_INSERT_ID(), as a literal
        typed as the server types the function (or the call itself where the server must answer)."""
        name = m.group(1).upper()
        if name == "CONNECTION_ID":
            # Under multiplexing the server's own CONNECTION_ID() changes from one statement to the
            # next: the client's connection id is the proxy's (the one its handshake announced).
            return f"CAST({self.id:010d} AS UNSIGNED)"
        if name == "ROW_COUNT":
            # What the session's previous statement affected, wherever it ran (from its OK packet;
            # -1 after a result set or an error, as the server says).
            return f"CAST({self.row_count} AS SIGNED)"
        if self.writer_hg in self.conns:
            return m.group(0)  # the connection that made the value is still the session's: ask it
        # The writer connection of the insert has gone back to its pool (the session moved on, or
        # sat idle past [pool] last_insert_id_hold): the value from that insert's OK packet.
        return f"CAST({self.insert_id} AS UNSIGNED)"

    def _kill(self, sql: str) -> None:
        m = _KILL_TARGET.match(sql)
        if m is None:
            self._send_err(1, 1064, "rwproxy: KILL takes [CONNECTION | QUERY] and a connection id as CONNECTION_ID() returns it", "42000")
            return
        query_only = (m.group(1) or "").upper() == "QUERY"
        target = self.app.sessions.get(int(m.group(2)))
        if target is None or not target.logged_in:
            self._send_err(1, 1094, f"Unknown thread id: {m.group(2)}", "HY000")
            return
        if target.username != self.username:
            self._send_err(1, 1095, f"You are not owner of thread {m.group(2)}", "HY000")
            return
        self.busy = True
        self._task = asyncio.get_running_loop().create_task(self._kill_slow(target, query_only))

    async def _kill_slow(self, target: "ClientSession", query_only: bool) -> None:
        """Kill the statement the target runs (on its backend, over a short-lived connection of
        our own), then for KILL CONNECTION close the target. Its client sees what the server says:
        ERR 1317 for an interrupted query, a closed connection for a killed one."""
        conn = target.current
        err = None
        if conn is not None and not conn.closed:
            user = self.user
            try:
                killer = await backend_mod.connect(
                    conn.server, user.backend_username, user.backend_password, database=None, client_capabilities=0,
                    collation=self.collation, attributes={"_client_name": "rwproxy", "program_name": "rwproxy-kill"},
                    timeout=self.app.config.connect_timeout,
                )  # fmt: skip
                try:
                    err = await asyncio.wait_for(killer.replay([b"\x03" + f"KILL QUERY {conn.thread_id}".encode()]), self.app.config.connect_timeout)
                finally:
                    killer.close()
            except (BackendError, asyncio.TimeoutError, ConnectionError) as e:
                self._send_err(1, ErrorCode.CONN_HOST_ERROR, f"rwproxy: could not reach {conn.server.address} to kill the statement: {e}")
                self._answered_here()
                self._free()
                return
        self._answered_here()
        if err is not None:
            self._send_err(1, err.code, err.message, err.sqlstate)
        else:
            self._log(logging.INFO, "KILL %s session=%d", "QUERY" if query_only else "CONNECTION", target.id)
            if not query_only and target is not self:
                target.close()
            self._send(make_ok(OK(status=self.status), self.capabilities), 1)
            if not query_only and target is self:
                self.close()
                return
        self._free()

    def _run(self, hostgroup: int, raw: bytes, reply: Reply, post: tuple | None) -> None:
        """Send a command to the session's connection in `hostgroup` and relay its reply."""
        self.busy = True
        self._post = post
        conn = self.conns.get(hostgroup)
        if conn is None and self.multiplexing:
            conn = self._try_acquire(hostgroup)
        if conn is not None and self.state.matches(conn.cstate):
            cs = conn.cstate
            cs.owner, cs.gen = self.state, self.state.gen
            self._start(conn, raw, reply)
            return
        self._task = asyncio.get_running_loop().create_task(self._run_slow(hostgroup, raw, reply))

    async def _run_slow(self, hostgroup: int, raw: bytes, reply: Reply) -> None:
        await self._slow(self._ready(hostgroup), lambda conn: self._start(conn, raw, reply))

    async def _slow(self, getting: Awaitable[T], then: Callable[[T], None]) -> None:
        """The slow path of a command: await what it needs (a connection brought up to date, a
        statement prepared on it), then send it; a backend that cannot be used becomes the
        client's ERR and the session carries on."""
        try:
            got = await getting
        except HostgroupError as e:
            code, message, sqlstate = e.client_err()
            self._send_err(1, code, message, sqlstate)
            self._post = None
            self._answered_here()
            self._free()
            return
        except Exception:
            log.exception("%s unexpected error preparing a backend connection", self._ctx())
            self.close()
            return
        if not self.closed:
            then(got)

    async def _ready(self, hostgroup: int, fallback: bool = True) -> BackendConnection:
        """The session's connection to `hostgroup`, carrying the session's state."""
        conn = self.conns.get(hostgroup)
        try:
            if conn is None:
                conn = await self._acquire(hostgroup)
            state = self.state
            cs = conn.cstate
            if state.schema is None and cs.schema is not None:
                # Only COM_CHANGE_USER leaves a connection with no default schema.
                user = self.user
                try:
                    err = await asyncio.wait_for(conn.change_user(user.backend_username, user.backend_password, None, self.collation), self.app.config.connect_timeout)
                except (asyncio.TimeoutError, ConnectionError) as e:
                    self._discard(conn)
                    raise HostgroupError(hostgroup, f"rwproxy: backend {conn.server.address} (hostgroup {hostgroup}) failed while resetting a connection: {_failure(e, self.app.config.connect_timeout)}") from None
                if err is not None:
                    self._release(conn, reset=True)
                    raise HostgroupError(hostgroup, f"rwproxy: could not reset a connection to {conn.server.address} (hostgroup {hostgroup}): {err.message}", err)
                cs = conn.cstate = ConnState(login_charset=state.login_charset, tracking=not conn.tracks)
                conn.prepared.clear()
            cmds = state.replay_for(cs)
            if state.needs_reset(cs):
                cmds = [bytes((Command.RESET_CONNECTION,))] + state.replay_for(ConnState(schema=cs.schema, tracking=not conn.tracks))
                conn.prepared.clear()
            if cmds:
                try:
                    err = await asyncio.wait_for(conn.replay(cmds), self.app.config.connect_timeout)
                except (asyncio.TimeoutError, ConnectionError) as e:
                    self._discard(conn)
                    raise HostgroupError(hostgroup, f"rwproxy: backend {conn.server.address} (hostgroup {hostgroup}) failed while restoring session state: {_failure(e, self.app.config.connect_timeout)}") from None
                if err is not None:
                    self._log(logging.WARNING, "restoring session state on %s (hostgroup %d) failed: %d %s", conn.server.address, hostgroup, err.code, err.message)
                    self._release(conn, reset=True)  # its state is now unknown
                    raise HostgroupError(hostgroup, f"rwproxy: could not restore this session's state on {conn.server.address} (hostgroup {hostgroup}): {err.message}", err)
            state.mark_synced(conn.cstate)
            conn.cstate.tracking = True
            return conn
        except HostgroupError as e:
            if fallback and hostgroup != self.writer_hg and self.router.ruleset.reader_fallback_to_writer and self.txn_hg is None:
                # Only reads are ever sent to a reader hostgroup: the writer can run them too.
                self._log(logging.WARNING, "reader hostgroup %d unusable (%s); running the read on the writer", hostgroup, e)
                return await self._ready(self.writer_hg, fallback=False)
            raise

    # ReplySink ---------------------------------------------------------------------------------

    def relay(self, data: bytes) -> None:
        if self._rewrite_id is not None:
            # The first chunk of a COM_STMT_PREPARE reply: show the client the proxy's statement id.
            if len(data) >= 9 and data[4] == 0:
                data = bytearray(data)
                data[5:9] = self._rewrite_id
            self._rewrite_id = None
        if not self.closed:
            self.transport.write(data)

    def reply_done(self, scanner: ResultScanner) -> None:
        conn = self.current
        self.current = None
        stat = self._stat
        if stat is not None:  # the one stats call per statement (before _record: the schema it ran in)
            self._stat = self.current_sql = None
            err = scanner.error
            self._stats.statement_done(
                conn.stats, stat.fingerprint, stat.kind, self.state.schema, self.username, self._rule_ids, self._t0,
                scanner.affected_rows, 0 if err is None else _err_code(err),
            )  # fmt: skip
        elif scanner.error is not None or self._preparing is not None:
            self._command_done(scanner)
        status = scanner.status
        if status >= 0:
            self.status = status & ~_STATE_CHANGED  # (OKs the proxy makes carry no state information)
            hg = conn.hostgroup
            if status & _IN_TRANS or not status & _AUTOCOMMIT:
                if self.txn_hg != hg:
                    self.txn_hg, self._view = hg, None
            elif self.txn_hg == hg:
                self.txn_hg, self._view = None, None
        post = self._post
        if post is not None:
            self._post = None
            self._record(post, scanner, conn)
        if conn.hostgroup == self.writer_hg:
            # LAST_INSERT_ID() (any spelling) must run where the insert ran: keep the writer
            # connection until the next statement on it (ProxySQL's auto_increment delay, for one).
            self.holding_insert_id = scanner.last_insert_id != 0
            if self.holding_insert_id:
                self.insert_id = scanner.last_insert_id
        if scanner.results or scanner.error is not None:
            self.row_count = scanner.row_count
        if self.multiplexing and not self._holds(conn, status):
            self._release(conn, reset=self._reset_on_release)
        self._reset_on_release = False
        self.busy = False
        self.last_activity = self._clock()
        if self.draining and not self.in_transaction:
            self.close_for_shutdown()
            return
        if self.framer.buffered or self._reading_paused:
            self._process()

    def _command_done(self, scanner: ResultScanner) -> None:
        """Stats at the end of a reply that is not a counted statement: a server ERR the client
        got; without multiplexing, the statement a COM_STMT_PREPARE created."""
        err = scanner.error
        preparing = self._preparing
        if preparing is not None:
            self._preparing = None
            if err is None and scanner.stmt_id:  # (0: not the PREPARE's reply; it never reached a server)
                self._ps_classes[scanner.stmt_id] = preparing
        if err is not None:
            self._stats.error(_err_code(err))

    def _record(self, post: tuple, scanner: ResultScanner, conn: BackendConnection) -> None:
        """After a reply: take note of what the command changed in the session's state."""
        state = self.state
        before = state.gen
        ok = scanner.error is None
        first = post[0]
        if isinstance(first, int):  # a command other than COM_QUERY (a Command or its byte)
            if first == Command.STMT_EXECUTE or first == Command.STMT_FETCH:
                sid = post[1]
                if scanner.changed:
                    self._state_changed_unseen()  # e.g. a prepared CALL that set a variable
                if first == Command.STMT_EXECUTE and ok and scanner.status >= 0 and scanner.status & _CURSOR_EXISTS:
                    self._cursors[sid] = conn
                elif first == Command.STMT_FETCH and (not ok or scanner.status & _LAST_ROW_SENT):
                    self._cursors.pop(sid, None)
                return
            if not ok:
                self._rewrite_id = None
                return
            if first == Command.STMT_PREPARE:
                _, payload, sql, sid = post
                stmt = self.stmts[sid] = _Statement(payload, sql, scanner.params, state.schema)
                self._remember_prepared(conn, stmt.key, scanner.stmt_id)
                return
            if first == Command.INIT_DB:
                state.set_schema(bytes(post[1][1:]).decode("utf-8", "surrogateescape"))
            elif first == Command.RESET_CONNECTION:
                # Variables, temporary tables, locks and user variables are gone on the writer; the
                # other connections are dropped rather than reset one by one.
                self._release_all(keep=conn)
                state.reset()
                conn.cstate.values = {}
                conn.cstate.tracking = not conn.tracks  # the reset turned session tracking off
                conn.prepared.clear()
                self.stmts.clear()
                self._cursors.clear()
                self.pinned_writer, self.pin_reasons, self._temp_tables = False, set(), set()
            self._view = None
        else:
            cls: Classification = first
            decision: Decision = post[1]
            if decision.pin_writer or not cls.read_only:
                # (Multi-statements can change anything; what they changed is not known here.)
                reasons = pin_reasons_of(cls)
                if decision.pin_writer and not reasons:
                    reasons = {PinReason.UNTRACKABLE_SET if cls.set_targets or cls.kind is _SET else PinReason.OTHER}
                for reason in reasons:
                    self._pin(reason)
            if scanner.changed and cls.kind not in _STATE_SHOWN and cls.temp_table is None and not cls.assigns_user_vars:
                # The server says session state changed, and the statement does not show how (a
                # procedure, function or trigger did it): it cannot be replayed, so it stays here.
                self._state_changed_unseen()
            if ok:
                if self.pin_reasons or cls.temp_table is not None:
                    self._track_pin_causes(cls)
                if cls.set_targets and not state.apply(cls.set_targets):
                    self._pin(PinReason.UNTRACKABLE_SET)
                if cls.kind is _USE:
                    m = _USE_TARGET.match(post[2])
                    if m is None:
                        self._pin(PinReason.OTHER)
                    else:
                        name = m.group(1)
                        state.set_schema(name[1:-1].replace("``", "`") if name.startswith("`") else name)
                        self._view = None
        cs = conn.cstate
        if state.gen != before and cs.owner is state and cs.gen == before:
            state.mark_synced(cs)  # the change ran on this connection: it already has it

    def end_insert_id_hold(self) -> None:
        """[pool] last_insert_id_hold passed with the session idle: give the writer connection back
        (LAST_INSERT_ID() is answered from the insert's OK packet from now on)."""
        if not self.holding_insert_id or self.busy or self.closed:
            return
        self.holding_insert_id = False
        conn = self.conns.get(self.writer_hg)
        if conn is not None and self.multiplexing and not self._holds(conn, self.status):
            self._release(conn)

    def _state_changed_unseen(self) -> None:
        self._pin(PinReason.SERVER_STATE)
        self._reset_on_release = True  # (if it ran on a reader: the change must not reach the next user)

    def _track_pin_causes(self, cls: Classification) -> None:
        """A pin ends when its cause does: the last temporary table dropped, UNLOCK TABLES,
        RELEASE_ALL_LOCKS(). (User variables, SQL_CALC_FOUND_ROWS, untrackable SETs and the like
        leave no sign of ending: those pins last for the session.)"""
        schema = self.state.schema
        names = {t if "." in t else f"{schema}.{t}" for t in cls.tables_written}
        if cls.temp_table == "CREATE":
            self._temp_tables |= names
        elif cls.temp_table == "DROP" or (cls.kind.name == "DDL" and cls.fingerprint.text.startswith("DROP TABLE")):
            self._temp_tables -= names  # (DROP TABLE drops a temporary table of that name first)
            if not self._temp_tables:
                self._unpin(PinReason.TEMP_TABLE)
        if cls.kind.name == "UNLOCK_TABLES":
            self._unpin(PinReason.LOCK_TABLES)
        if "RELEASE_ALL_LOCKS" in cls.session_functions:
            self._unpin(PinReason.GET_LOCK)

    def _unpin(self, reason: PinReason) -> None:
        if reason in self.pin_reasons:
            self.pin_reasons.discard(reason)
            self._log(logging.DEBUG, "pin ended: %s", reason.value)
            if not self.pin_reasons:
                self.pinned_writer, self._view = False, None

    def _pin(self, reason: PinReason) -> None:
        """The session keeps its writer connection (and routes everything there) from now on."""
        if reason not in self.pin_reasons:
            self.pin_reasons.add(reason)
            self.app.pins[reason] += 1
            self._log(logging.DEBUG, "session pinned to the writer: %s", reason.value)
        if not self.pinned_writer:
            self.pinned_writer, self._view = True, None

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
        self.current.write(pkt.raw)
        if not pkt.payload:
            self.infile = False
            self.current.scanner.expect_infile_reply()
        return True

    def backend_lost(self, conn: BackendConnection, exc: Exception | None) -> None:
        if self.closed:
            return
        hg = conn.hostgroup
        if self.conns.get(hg) is conn:
            self._release(conn)
        why = exc or "closed by server"
        if conn is self.current and conn.scanner is not None:
            # Mid-reply the client cannot be given a coherent ERR: the session is over, as it would
            # be if the client had been connected to the server directly.
            self._log(logging.WARNING, "backend %s (hostgroup %d) lost during a reply: %s", conn.server.address, hg, why)
            self.close()
        elif hg == self.txn_hg or (hg == self.writer_hg and (self.pinned_writer or self.passthrough)):
            # (In passthrough mode nothing is classified, so what the writer held is unknown.)
            self._log(logging.WARNING, "backend %s (hostgroup %d) lost with session state on it: %s", conn.server.address, hg, why)
            self._lost = (
                f"Lost connection to backend server {conn.server.address} (hostgroup {hg}); this session's "
                "transaction or session state (temporary tables, user variables, locks) is gone: reconnect"
            )
        else:
            self._log(logging.INFO, "backend %s (hostgroup %d) closed an idle connection (%s); reopened on demand", conn.server.address, hg, why)

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
            if user is None or not self._count_user(user, seq):
                # As MariaDB does: the ERR has been sent and the session carries on as the old user.
                self._free()
                return
            if cu.collation:
                self.collation = cu.collation
            if not await self._login_backend(user, cu.database, seq):
                self.close()
                return
            self._send(make_ok(OK(status=self.status), self.capabilities), seq)
            self._log(logging.INFO, "changed user")
            self._free()
        except ProtocolError as e:
            self._protocol_error(2, e)
        except (asyncio.TimeoutError, ConnectionError):
            self.close()
        except Exception:
            log.exception("%s unexpected error in COM_CHANGE_USER", self._ctx())
            self.close()
