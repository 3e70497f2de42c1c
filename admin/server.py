"""The admin listener: ProxySQL's admin port, on the MySQL protocol, over the config store.

Theory of operation
-------------------
`start_admin(app, address, port)` listens for admin clients (any MySQL client: the `mariadb` CLI,
PyMySQL, GUI tools). One `AdminSession` (an asyncio.Protocol) per client:

* connection phase: HandshakeV10 (mysql_native_password), HandshakeResponse41, an AuthSwitchRequest
  when the client answered for another plugin, then OK or ERR 1045. With [tls] on, the greeting
  offers TLS as the data port's does (the same certificate, proxy.tls): an SSLRequest switches the
  connection to TLS and the response arrives inside. The login is [admin]'s
  username/password from the config file (resolved like every secret there). A client that does not
  finish within [proxy] handshake_timeout is closed.
* command phase: COM_QUERY -> `admin.commands.parse` -> executed -> OK (affected rows, info message),
  a text result set, or ERR with the AdminError's errno and SQLSTATE. COM_PING, COM_INIT_DB (the admin
  schemas), COM_FIELD_LIST (an empty list: the CLI sends it) and COM_QUIT are answered; any other
  command gets ERR 1047.

Limits: at most [admin] max_connections admin connections at once (logged in or not); one more
gets ERR 1040 in place of the greeting and is closed at once, so idle sockets cannot exhaust the
process's file descriptors; the listen backlog is the data port's (4096). Per-connection warnings
(handshake timeouts, bad packets, wrong passwords) go through a LogLimiter: a flood of bad
connections writes a few lines and a count, not a line each.

What runs where (see admin.worker): the event loop reads a COM_QUERY and awaits the admin worker,
one statement at a time across sessions; the worker thread parses it (`admin.commands.parse`),
runs it on the config store (`app.store`, admin.store.ConfigStore: the layers, the tables, SQL
under admin.guard's allow-list, with [admin] statement_timeout and result limits) and encodes the
reply packets, which the loop then writes. While a statement runs, its session reads no further
commands (they wait in the socket; reading pauses beyond 1 MiB). LOAD ... TO RUNTIME validates in
the worker and runs `app.apply_config`, the application's atomic swap, on the event loop, so a
refused load changes nothing and an accepted one is live for every session's next statement.
Statements that need the running proxy get what they need from the loop first: the stats tables a
statement names are snapshotted on the loop a chunk per turn and loaded into the store's schema
`stats` chunk by chunk (`AdminSession._fill_stats`), so clients run any SELECT on them (the monitor's
check logs likewise as schema `monitor`; runtime_mysql_servers shows the monitor's live server list,
an immutable snapshot the worker reads); DIFF MYSQL ROUTES routes the
digest table's snapshot by runtime and by memory; SHOW PROCESSLIST formats the processlist's;
EXPLAIN ROUTE (`admin.validate.explain_route`) reads the immutable live config and hostgroup
health. KILL (client sessions of the data port, by the id of SHOW PROCESSLIST / CONNECTION_ID())
runs on the loop; KILL QUERY's statement kill on a backend server is a short-lived connection of
its own. A session's error is an ERR to that session only; anything unexpected is logged with the
statement and answered ERR 1105, and the session, the other sessions and the data port carry on.
SHOW WARNINGS after an error lists it (for a refused LOAD: one row per validation error, since C
clients cut error messages at 512 bytes).

Never: run store work on the event loop, block it, write to a data-port session's transport, log a
password.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import itertools
import logging
import ssl
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from proxy import backend as backend_mod
from proxy import tls
from proxy.backend import BackendError, set_nodelay
from proxy.config import Config
from proxy.logsafe import LogLimiter
from proxy.throttle import LoginThrottle
from proxy.protocol import auth
from proxy.protocol.constants import (
    NATIVE_PASSWORD,
    PROXY_CAPABILITIES,
    Capability,
    Command,
    ErrorCode,
    ServerStatus,
)
from proxy.protocol.framing import PacketFramer, ProtocolError, make_packet
from proxy.protocol.packets import (
    OK,
    AuthSwitchRequest,
    ColumnSniffer,
    HandshakeV10,
    column_definitions,
    is_ssl_request,
    lenenc_int,
    make_auth_switch,
    make_column_definition,
    make_eof,
    make_err,
    make_handshake_v10,
    make_ok,
    make_result_set,
    make_result_terminator,
    parse_handshake_response,
)
from proxy.monitor import MONITOR_TABLES
from proxy.stats import TABLES as STATS_TABLES

from .commands import (
    ADMIN_SCHEMAS,
    ADMIN_SESSION_DEFAULTS,
    ALL_SECTIONS,
    AdminError,
    Answer,
    DiffRoutes,
    ExplainRoute,
    Kill,
    Load,
    Passthrough,
    ReloadTLS,
    Save,
    SelectVariables,
    ShowProcesslist,
    parse,
)
from .commands import (
    Command as AdminCommand,
)
from .store import Affected, ConfigStore, Rows, ValidationFailed
from .validate import ROUTE_CHANGE_COLUMNS, digests_from_table, explain_route
from .worker import AdminWorker, snapshot_stats

if TYPE_CHECKING:
    from proxy.app import ProxyApp
    from proxy.client import ClientSession

__all__ = ["ADMIN_CAPABILITIES", "ADMIN_VERSION", "AdminServer", "AdminSession", "start_admin"]

log = logging.getLogger("rwproxy.admin")

ADMIN_VERSION = str(ADMIN_SESSION_DEFAULTS["version"])
# What the admin port offers: the data port's flags minus what it does not do (multi-statements,
# LOAD DATA LOCAL, session tracking). CLIENT_DEPRECATE_EOF is honoured (make_result_set).
ADMIN_CAPABILITIES = PROXY_CAPABILITIES & ~(
    Capability.MULTI_STATEMENTS
    | Capability.MULTI_RESULTS
    | Capability.PS_MULTI_RESULTS
    | Capability.LOCAL_FILES
    | Capability.SESSION_TRACK
)
_STATUS = int(ServerStatus.AUTOCOMMIT)  # nothing is ever open on the admin port
_MAX_PACKET = 16 << 20  # admin statements are small; a bigger one is a protocol error
_PIPELINE_LIMIT = 1 << 20  # bytes read ahead while a statement runs before reading pauses
_BACKLOG = 4096  # the data port's
_PROCESSLIST = ("SessionID", "user", "db", "cli_host", "hostgroup", "command", "time_ms", "info", "pin_reasons")
_WARNING_COLUMNS = ("Level", "Code", "Message")
_COMMANDS_ACCEPTED = "the admin port accepts COM_QUERY, COM_PING, COM_INIT_DB, COM_FIELD_LIST and COM_QUIT"

_ids = itertools.count(1)


class _Phase(enum.Enum):
    GREETING = 1  # handshake sent, awaiting the client's response
    AUTH_SWITCH = 2  # AuthSwitchRequest sent, awaiting the token
    COMMAND = 3
    CLOSED = 4


class AdminServer(asyncio.AbstractServer):
    """The listening server, plus its sessions: closing it (app.stop) closes them too."""

    def __init__(self, app: ProxyApp, store: ConfigStore, worker: AdminWorker) -> None:
        self.app = app
        self.store = store
        self.worker = worker
        self.sessions: set[AdminSession] = set()
        self.tasks: set[asyncio.Task] = set()  # statements in flight, background backend KILLs
        self.server: asyncio.AbstractServer | None = None
        self.limited = LogLimiter(log)  # per-connection warnings: a flood writes a count, not a line each
        # Failed admin logins, counted apart from the data port's (the same [proxy] limits):
        # a growing delay per address and account, then the address blocked (proxy.throttle).
        self.throttle = LoginThrottle(app.config, time.monotonic)

    @property
    def sockets(self) -> Sequence[Any]:
        return getattr(self.server, "sockets", ())

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for s in list(self.sessions):
            s.close()
        self.worker.close()
        self.limited.flush()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        assert self.server is not None
        return self.server.get_loop()

    def is_serving(self) -> bool:
        return self.server is not None and self.server.is_serving()

    async def start_serving(self) -> None:
        assert self.server is not None
        await self.server.start_serving()

    async def serve_forever(self) -> None:
        assert self.server is not None
        await self.server.serve_forever()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def _own_store(app: ProxyApp) -> ConfigStore:
    """A store when the composition root gave none: memory from the running config, no disk layer."""
    store = ConfigStore(None)
    store.startup(app.config)
    result = store.build(ALL_SECTIONS, app.config)
    if result.ok:
        store.set_runtime(result)
    else:  # cannot happen for a config the proxy runs; runtime_* then stays empty
        log.warning("admin: the running configuration does not validate as admin rows: %s", result.message("startup"))
    log.info("admin: no data directory given to the admin port: memory holds the running configuration, no disk layer")
    return store


async def start_admin(app: ProxyApp, address: str, port: int) -> asyncio.AbstractServer:
    """Listen for admin clients on address:port; returns the server (close() also ends its sessions)."""
    store = app.store if app.store is not None else _own_store(app)
    app.store = store
    limits = app.config.admin
    store.statement_timeout = limits.statement_timeout
    store.max_result_rows = limits.max_result_rows
    store.max_result_bytes = limits.max_result_bytes
    # No readers: the live tables are snapshotted on the loop for each statement that names them.
    store.attach_stats(dict.fromkeys(STATS_TABLES))
    store.attach_tables("monitor", dict.fromkeys(MONITOR_TABLES))
    store.attach_live_servers(lambda: app.monitor.topology.servers)
    loop = asyncio.get_running_loop()
    admin = AdminServer(app, store, AdminWorker(loop))
    admin.server = await loop.create_server(lambda: AdminSession(admin), address, port, reuse_address=True, backlog=_BACKLOG)
    return admin


# ---- what runs on the worker thread (admin.worker): the store, parsing, encoding --------------------


def encode_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], capabilities: int, seq: int) -> bytes:
    """A whole text result set as wire bytes, starting at sequence id `seq`."""
    return _frame(make_result_set(column_definitions(columns, rows), rows, capabilities, _STATUS), seq)


class WireRows:
    """A RowSink (admin.store) that encodes a result set as its rows are fetched: the worker keeps
    each row as its wire payload, not as a tuple of Python objects, and the column types (which
    need every row) are written in front at the end."""

    def __init__(self, capabilities: int) -> None:
        self.capabilities = capabilities
        self.columns: tuple[str, ...] | None = None
        self._sniffer = ColumnSniffer(0)
        self._rows: list[bytes] = []

    def start(self, columns: tuple[str, ...]) -> None:
        self.columns = columns
        self._sniffer = ColumnSniffer(len(columns))

    def add(self, rows: list[tuple[Any, ...]]) -> None:
        encode, out = self._sniffer.encode, self._rows
        for r in rows:
            out.append(encode(r))

    def encode(self, seq: int) -> bytes:
        assert self.columns is not None
        caps = self.capabilities
        head = [lenenc_int(len(self.columns))]
        head.extend(make_column_definition(c) for c in self._sniffer.definitions(self.columns))
        if not caps & Capability.DEPRECATE_EOF:
            head.append(make_eof(_STATUS))
        return _frame([*head, *self._rows, make_result_terminator(caps, _STATUS)], seq)


def _frame(payloads: Sequence[bytes], seq: int) -> bytes:
    out = []
    for p in payloads:
        out.append(make_packet(p, seq))
        seq = (seq + len(p) // 0xFFFFFF + 1) & 0xFF
    return b"".join(out)


def _prepare(store: ConfigStore, sql: str) -> tuple[AdminCommand, list[str]]:
    """Parse a statement; with the stats tables it names (their snapshots are taken on the loop)."""
    store.discard_stats()  # anything loaded for a statement that never ran
    cmd = parse(sql)
    return cmd, (store.stats_tables_named(cmd.sql) if isinstance(cmd, Passthrough) else [])


def _encoded(result: Rows | Affected, capabilities: int, seq: int) -> bytes | Affected:
    return encode_rows(result.columns, result.rows, capabilities, seq) if isinstance(result, Rows) else result


def _processlist(table: tuple[tuple[str, ...], list[tuple]], full: bool) -> Rows:
    columns, all_rows = table
    if full:
        return Rows(columns, list(all_rows))
    idx = [columns.index(c) for c in _PROCESSLIST]
    info = _PROCESSLIST.index("info")
    rows = []
    for r in all_rows:
        row = [r[i] for i in idx]
        if isinstance(row[info], str) and len(row[info]) > 100:
            row[info] = row[info][:100]  # as MySQL's SHOW PROCESSLIST; FULL shows it all
        rows.append(tuple(row))
    return Rows(_PROCESSLIST, rows)


def _in_worker(job: Any, sink: WireRows | None, capabilities: int, seq: int) -> bytes | Affected:
    """Run `job()` (returns Rows or Affected; its rows may have gone to `sink`) and encode a result
    set, all on the worker thread."""
    result = job()
    if sink is not None and sink.columns is not None:
        return sink.encode(seq)
    return _encoded(result, capabilities, seq)


class AdminSession(asyncio.Protocol):
    def __init__(self, server: AdminServer) -> None:
        self.server = server
        self.app = server.app
        self.store = server.store
        self.id = next(_ids)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.host = "?"
        self.username = "-"
        self.framer = PacketFramer(_MAX_PACKET)
        self.phase = _Phase.GREETING
        self.capabilities = 0
        self.scramble = auth.new_scramble()
        self.busy = False  # a command is being answered asynchronously (KILL QUERY), or TLS is starting
        self.secure = False  # the connection is TLS (after an SSLRequest)
        self._hs_seq = 2  # sequence id of the server's answer to the handshake response (3 after TLS)
        self.schema = "main"
        self._database: str | None = None  # asked for in the handshake response
        self.warnings: list[tuple[str, int, str]] = []  # what SHOW WARNINGS answers
        self._timer: asyncio.TimerHandle | None = None
        self._reading_paused = False  # the client does not read its results (pause_writing)
        self._reading_paused_busy = False  # a statement runs and the client sent more than _PIPELINE_LIMIT

    # ---- logging ----------------------------------------------------------------------------------

    def _log(self, level: int, msg: str, *args: object) -> None:
        if log.isEnabledFor(level):
            log.log(level, "admin session=%d client=%s user=%s " + msg, self.id, self.peer, self.username, *args)

    def _log_limited(self, kind: str, msg: str, *args: object) -> None:
        """A warning a client can cause once per connection: at most a few per kind every 10 s, then a count."""
        self.server.limited.log(logging.WARNING, kind, "admin session=%d client=%s user=%s " + msg, self.id, self.peer, self.username, *args)

    # ---- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
            self.host = str(peer[0])
        set_nodelay(transport)
        cap = self.app.config.admin.max_connections
        if len(self.server.sessions) >= cap:
            # As the server does: ERR 1040 in place of the greeting, and the socket is closed at once,
            # so connections beyond the cap hold no file descriptor.
            self._log_limited("too many connections", "refused: too many admin connections ([admin] max_connections = %d)", cap)
            transport.write(make_packet(make_err(ErrorCode.CON_COUNT_ERROR, f"Too many connections (the admin port allows {cap}: [admin] max_connections)"), 0))
            transport.close()
            self.phase = _Phase.CLOSED
            return
        throttle = self.server.throttle
        throttle.config = self.app.config
        if throttle.address_blocked(self.host):
            self._log_limited("blocked", "refused: address blocked after failed admin logins")
            message = f"Host '{self.host}' is blocked because of many connection errors; it is unblocked after host_block_time ({self.app.config.host_block_time:g}s)"
            transport.write(make_packet(make_err(ErrorCode.HOST_IS_BLOCKED, message), 0))
            transport.close()
            self.phase = _Phase.CLOSED
            return
        self.server.sessions.add(self)
        hs = HandshakeV10(
            server_version=ADMIN_VERSION,
            connection_id=self.id & 0xFFFFFFFF,
            auth_data=self.scramble,
            capabilities=ADMIN_CAPABILITIES | (Capability.SSL if self.app.tls.context is not None else 0),
            collation=self.app.collation,
            status=_STATUS,
            auth_plugin=NATIVE_PASSWORD,
        )
        self._send(make_handshake_v10(hs), 0)
        self._timer = asyncio.get_running_loop().call_later(self.app.config.handshake_timeout, self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        self.framer.feed(data)
        if self.busy:  # the next commands wait for the running statement
            if self.framer.buffered > _PIPELINE_LIMIT and not self._reading_paused_busy and self.transport is not None:
                self._reading_paused_busy = True
                self.transport.pause_reading()
            return
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self._teardown()

    def pause_writing(self) -> None:
        # A client that does not read its results: stop reading its commands until it does.
        if self.transport is not None and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self._reading_paused and self.phase is not _Phase.CLOSED:
            self._reading_paused = False
            if not self._reading_paused_busy:
                self.transport.resume_reading()

    def _free(self) -> None:
        """The running statement is answered: read the next command (buffered ones first)."""
        self.busy = False
        if self._reading_paused_busy and self.transport is not None and self.phase is not _Phase.CLOSED:
            self._reading_paused_busy = False
            if not self._reading_paused:
                self.transport.resume_reading()
        self._process()

    # ---- helpers ------------------------------------------------------------------------------------

    def _send(self, payload: bytes, seq: int) -> None:
        if self.phase is not _Phase.CLOSED and self.transport is not None:
            self.transport.write(make_packet(payload, seq))

    def _send_err(self, seq: int, code: int, message: str, sqlstate: str | None = None) -> None:
        self._send(make_err(code, message, sqlstate), seq)

    def _send_ok(self, seq: int, affected: int = 0, info: str = "") -> None:
        # The info message is length-encoded, as servers send it whatever the client's
        # CLIENT_SESSION_TRACK (libmariadb reads it so; the raw string<EOF> of the docs is misread).
        self._send(make_ok(OK(affected_rows=affected, status=_STATUS, info=info.encode("utf-8")), self.capabilities | Capability.SESSION_TRACK), seq)

    def _send_rows(self, seq: int, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A small result set built on the loop (SHOW WARNINGS, variables); the rest come from the worker."""
        self._write(encode_rows(columns, rows, self.capabilities, seq))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and self.phase is not _Phase.CLOSED:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and self.phase is not _Phase.CLOSED:
            self.transport.close()
        self._teardown()

    def _teardown(self) -> None:
        if self.phase is _Phase.CLOSED:
            return
        self.phase = _Phase.CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.server.sessions.discard(self)

    def _handshake_timeout(self) -> None:
        self._timer = None
        if self.phase in (_Phase.GREETING, _Phase.AUTH_SWITCH):
            self._log_limited("handshake timeout", "handshake timeout after %gs", self.app.config.handshake_timeout)
            self._send_err(self._hs_seq, ErrorCode.NET_READ_INTERRUPTED, "Got timeout reading communication packets (handshake not completed in time)")
            self.close()

    # ---- packets ------------------------------------------------------------------------------------

    def _process(self) -> None:
        while self.phase is not _Phase.CLOSED and not self.busy:
            try:
                pkt = self.framer.next_packet()
                if pkt is None:
                    return
                if self.phase is _Phase.GREETING:
                    self._greeting_response(bytes(pkt.payload), pkt.seq)
                elif self.phase is _Phase.AUTH_SWITCH:
                    self._verify(bytes(pkt.payload), (pkt.seq + 1) & 0xFF)
                else:
                    self._command(bytes(pkt.payload), (pkt.last_seq + 1) & 0xFF)
            except ProtocolError as e:
                self._log_limited("protocol error", "protocol error from client: %s", e)
                code = e.code if self.phase is _Phase.COMMAND else ErrorCode.HANDSHAKE_ERROR
                self._send_err(1 if self.phase is _Phase.COMMAND else self._hs_seq, code, f"Bad packet: {e}" if self.phase is _Phase.COMMAND else f"Bad handshake: {e}")
                self.close()
                return

    def _greeting_response(self, payload: bytes, seq: int) -> None:
        if seq == 1 and not self.secure and is_ssl_request(payload):
            context = self.app.tls.context
            if context is None:
                raise ProtocolError("SSL was requested but the proxy did not offer it", code=ErrorCode.HANDSHAKE_ERROR)
            self.busy = True  # nothing is processed until TLS is up
            self.server.spawn(self._start_tls(context))
            return
        if seq != self._hs_seq - 1:
            raise ProtocolError(f"Got packets out of order (expected sequence id {self._hs_seq - 1}, got {seq})", code=ErrorCode.NET_PACKETS_OUT_OF_ORDER)
        resp = parse_handshake_response(payload, tls=self.secure)
        self.username = resp.username
        self.capabilities = resp.capabilities & ADMIN_CAPABILITIES
        self._database = resp.database
        if resp.auth_plugin and resp.auth_plugin != NATIVE_PASSWORD:
            # The admin login is mysql_native_password; a client that tried another plugin switches.
            self.scramble = auth.new_scramble()
            self.phase = _Phase.AUTH_SWITCH
            self._send(make_auth_switch(AuthSwitchRequest(NATIVE_PASSWORD, self.scramble)), self._hs_seq)
            return
        self._verify(resp.auth_response, self._hs_seq)

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        """The client sent an SSLRequest: TLS, then the handshake response inside it. The bytes
        that came with the request (the start of the TLS handshake) are handed to TLS."""
        try:
            self.transport = await tls.accept(self.transport, self, context, self.framer.take_rest(), self.app.config.handshake_timeout)
        except (ssl.SSLError, OSError) as e:
            self._log_limited("tls", "%s", tls.describe_failure(e))
            self.close()
            return
        self.secure, self._hs_seq, self.busy = True, 3, False
        self._process()

    def _verify(self, token: bytes, seq: int) -> None:
        settings = self.app.config.admin
        throttle = self.server.throttle
        if self.username != settings.username or not auth.verify(NATIVE_PASSWORD, settings.password, self.scramble, token):
            self._log_limited("access denied", "access denied")
            using = "YES" if token not in (b"", b"\0") else "NO"
            delay = throttle.failed(self.host, self.username or "")
            message = f"Access denied for user '{self.username}'@'{self.host}' (using password: {using})"
            if delay:
                # The guesser waits for its answer; nothing else does (the session reads no more).
                self.busy = True
                asyncio.get_running_loop().call_later(delay, self._refuse, seq, message)
            else:
                self._refuse(seq, message)
            return
        throttle.succeeded(self.host, self.username or "")
        database = self._database
        if database and database.lower() not in ADMIN_SCHEMAS:
            self._send_err(seq, ErrorCode.BAD_DB_ERROR, f"Unknown database '{database}' (the admin schemas are {', '.join(ADMIN_SCHEMAS)})")
            self.close()
            return
        if database:
            self.schema = database.lower()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.phase = _Phase.COMMAND
        self._send_ok(seq)
        self._log(logging.INFO, "logged in")

    def _refuse(self, seq: int, message: str) -> None:
        if self.phase is _Phase.CLOSED:
            return
        self._send_err(seq, ErrorCode.ACCESS_DENIED, message)
        self.close()

    def _command(self, payload: bytes, seq: int) -> None:
        if not payload:
            raise ProtocolError("empty command packet")
        cmd = payload[0]
        if cmd == Command.QUERY:
            self._query(payload[1:], seq)
        elif cmd == Command.PING:
            self._send_ok(seq)
        elif cmd == Command.QUIT:
            self.close()
        elif cmd == Command.INIT_DB:
            name = payload[1:].decode("utf-8", "replace").strip("`")
            if name.lower() in ADMIN_SCHEMAS:
                self.schema = name.lower()
                self._send_ok(seq)
            else:
                self._send_err(seq, ErrorCode.BAD_DB_ERROR, f"Unknown database '{name}' (the admin schemas are {', '.join(ADMIN_SCHEMAS)})")
        elif cmd == Command.FIELD_LIST:
            # The CLI asks for every table's columns for its completion; none are offered.
            self._send(make_result_terminator(self.capabilities, _STATUS), seq)
        else:
            try:
                name = f"COM_{Command(cmd).name}"
            except ValueError:
                name = f"command 0x{cmd:02x}"
            self._send_err(seq, ErrorCode.UNKNOWN_COM_ERROR, f"Unknown command: {name} is not supported on the admin port; {_COMMANDS_ACCEPTED}")

    # ---- statements ---------------------------------------------------------------------------------

    def _query(self, raw: bytes, seq: int) -> None:
        self.busy = True
        self.server.spawn(self._statement(raw, seq))

    async def _statement(self, raw: bytes, seq: int) -> None:
        sql = ""
        try:
            try:
                sql = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise AdminError(f"the statement is not valid UTF-8 (byte {e.start}); send it as utf8mb4", 1300, "HY000") from None
            await self._run(sql, seq)
        except AdminError as e:
            self._fail(seq, e, sql)
        except Exception as e:  # a bug: say so, keep the session and the proxy going
            log.exception("admin session=%d: unexpected error running %r", self.id, sql[:200])
            self._fail(seq, AdminError(f"internal error in the admin port ({type(e).__name__}: {e}); nothing else is affected; please report it with the proxy log"), sql)
        finally:
            self._free()

    async def _run(self, sql: str, seq: int) -> None:
        worker = self.server.worker
        async with worker.turn:
            if self.phase is _Phase.CLOSED:
                return
            cmd, stats_names = await worker.run(_prepare, self.store, sql)
            if isinstance(cmd, Answer) and cmd.columns == _WARNING_COLUMNS:
                self._send_rows(seq, _WARNING_COLUMNS, list(self.warnings))  # SHOW WARNINGS keeps them
                return
            self.warnings = []
            if not isinstance(cmd, Kill):
                await self._answer(cmd, stats_names, seq)
                return
        await self._kill(cmd, seq)  # on the loop; it does not need the worker

    async def _answer(self, cmd: AdminCommand, stats_names: list[str], seq: int) -> None:
        app, worker, caps = self.app, self.server.worker, self.capabilities
        sink = None
        if isinstance(cmd, SelectVariables):
            columns, rows = cmd.answer({
                "version": ADMIN_VERSION,
                "version()": ADMIN_VERSION,
                "user()": f"{self.username}@{self.host}",
                "connection_id()": self.id,
                "database()": self.schema,
            })  # fmt: skip
            self._send_rows(seq, columns, list(rows))
            return
        if isinstance(cmd, ReloadTLS):  # on the loop: it swaps the live contexts (a few small file reads)
            try:
                summary = app.reload_tls()
            except OSError as e:  # proxy.tls.TLSSetupError: nothing changed
                self._fail(seq, AdminError(f"PROXYSQL RELOAD TLS: {e}; the previous certificates stay in use"))
                return
            self._log(logging.INFO, "PROXYSQL RELOAD TLS: %s", summary)
            self._send_ok(seq, 0, summary)
            return
        if isinstance(cmd, ExplainRoute):
            config, online = app.config, frozenset(app.router.online)
            job = lambda: Rows(("step", "detail"), list(explain_route(cmd, config, online).rows()))  # noqa: E731
        elif isinstance(cmd, DiffRoutes):
            digest = (await snapshot_stats(app.stats, ["stats_mysql_query_digest"]))["stats_mysql_query_digest"]
            config = app.config
            job = lambda: Rows(ROUTE_CHANGE_COLUMNS, [c.row() for c in self.store.diff_routes(digests_from_table(*digest), config)])  # noqa: E731
        elif isinstance(cmd, ShowProcesslist):
            table = (await snapshot_stats(app.stats, ["stats_mysql_processlist"]))["stats_mysql_processlist"]
            job = lambda: _processlist(table, cmd.full)  # noqa: E731
        else:
            if stats_names:
                await self._fill_stats(stats_names)
            sink = WireRows(caps)
            job = functools.partial(self.store.run, cmd, runtime=app.config, apply=self._apply_from_worker, sink=sink)
        result = await worker.run(_in_worker, job, sink, caps, seq)
        if isinstance(cmd, (Load, Save)):
            self._log(logging.INFO, "%s: %s", cmd, result.message if isinstance(result, Affected) else "done")
        if isinstance(result, bytes):
            self._write(result)
        else:
            self._send_ok(seq, result.count, result.message)

    async def _fill_stats(self, names: list[str]) -> None:
        """Hand the stats tables `names` to the store, chunk by chunk: each chunk's rows are built on
        the loop (one chunk per turn; every table's collection is copied at once first, see
        StatsRegistry.table_chunks) and loaded by the worker, so no thread holds a big table whole."""
        worker, store, app = self.server.worker, self.store, self.app
        started = [(name, *(app.stats.table_chunks(name) if name in STATS_TABLES else _one_chunk(app.monitor.table(name)))) for name in names]
        for name, columns, chunks in started:
            first = True
            for chunk in chunks:
                await worker.run(store.fill_stats, name, columns, chunk, first)
                first = False
            if first:  # an empty table
                await worker.run(store.fill_stats, name, columns, [], True)

    def _apply_from_worker(self, config: Config) -> None:
        """LOAD ... TO RUNTIME's swap, called on the worker thread: it runs on the event loop."""
        self.server.worker.on_loop(self.app.apply_config, config)

    def _fail(self, seq: int, e: AdminError, sql: str = "") -> None:
        message = e.message
        if isinstance(e, ValidationFailed):
            head, _, rest = message.partition("\n")
            message = f"{head} (SHOW WARNINGS lists each)\n{rest}" if rest else head
            self.warnings = [("Error", e.errno, str(v)) for v in e.errors]
            self._log(logging.WARNING, "%s", e.message.replace("\n", ";"))
        else:
            self.warnings = [("Error", e.errno, message)]
        self._send_err(seq, e.errno, message, e.sqlstate)

    # ---- KILL ---------------------------------------------------------------------------------------

    async def _kill(self, cmd: Kill, seq: int) -> None:
        target = self.app.sessions.get(cmd.connection_id)
        if target is None or target.closed:
            raise AdminError(
                f"Unknown thread id: {cmd.connection_id} (KILL takes a client session id of the data port, "
                "as SHOW PROCESSLIST lists them: SessionID)", 1094, "HY000",
            )  # fmt: skip
        conn = target.current if target.busy else None
        running = conn is not None and not conn.closed and target.user is not None
        if cmd.query_only:
            if not running:
                self._send_ok(seq, 0, f"session {target.id} is not running a statement")
                return
            await self._kill_query(target, seq)
            return
        self._log(logging.INFO, "KILL CONNECTION %d (%s, client %s)", target.id, target.username, target.peer)
        if running:
            # The client session goes now; its statement is stopped on the server in the background
            # (closing the backend connection alone would leave e.g. a SLEEP running there).
            self.server.spawn(_kill_backend_statement(self.app, conn.server, conn.thread_id, target.user))
        target.close()
        self._send_ok(seq)

    async def _kill_query(self, target: ClientSession, seq: int) -> None:
        conn = target.current
        err = None
        if conn is not None and not conn.closed and target.user is not None:
            err = await _kill_backend_statement(self.app, conn.server, conn.thread_id, target.user, quiet=False)
        if err is not None:
            self._send_err(seq, err[0], err[1], err[2])
        else:
            self._log(logging.INFO, "KILL QUERY %d", target.id)
            self._send_ok(seq)


async def _kill_backend_statement(app: ProxyApp, server: Any, thread_id: int, user: Any, quiet: bool = True) -> tuple[int, str, str] | None:
    """KILL QUERY <thread_id> on `server`, over a short-lived connection with `user`'s backend
    credentials. Returns None, or (errno, message, sqlstate) of the failure."""
    try:
        secret = app.backend_secret(server, user.backend_username, user.backend_password)
        err = await backend_mod.kill_query(server, user.backend_username, secret, thread_id, timeout=app.config.connect_timeout, program="rwproxy-admin-kill")
    except BackendError as e:
        log.warning("admin: could not reach %s to stop thread %d: %s", server.address, thread_id, e.cause)
        return (ErrorCode.HOSTGROUP_UNREACHABLE, f"rwproxy admin: could not reach {server.address} to kill the statement: {e.cause}", "HY000")
    if err is not None:
        if err.code == 1094:  # the statement ended (and its connection with it) in the meantime
            return None
        log.log(logging.INFO if quiet else logging.WARNING, "admin: KILL QUERY %d on %s: %d %s", thread_id, server.address, err.code, err.message)
        return (err.code, err.message, err.sqlstate)
    return None


def _one_chunk(table: tuple) -> tuple:
    """A small live table (columns, rows) as table_chunks gives a big one: (columns, chunks)."""
    columns, rows = table
    return columns, iter((list(rows),))
