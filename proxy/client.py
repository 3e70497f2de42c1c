"""Client sessions: one per client connection, holding the rooms that serve it.

Theory of operation: a ClientSession is the asyncio.Protocol of one client connection and the
per-client object. It owns the bytes in and out (framing, backpressure, closing), who the client is
(user, negotiated capabilities and collation), the session state every statement depends on (the
tracked variables and schema, the transaction's hostgroup, the last server status, the pins, the
routing view) and the session's limits (idle close, shutdown). Everything else is a room of its own:
- proxy.login.Login: the greeting, authentication, the backend check, COM_CHANGE_USER (a coroutine);
- proxy.command_loop.CommandLoop: dispatch and the per-statement hot path; the ReplySink of the
  session's backend connections;
- proxy.lending.BackendLending: which backend connection the session holds per hostgroup;
- proxy.prepared.PreparedStatements: the proxy's prepared-statement map;
- proxy.local_answers: KILL and the session's own CONNECTION_ID() / ROW_COUNT() / LAST_INSERT_ID();
- proxy.pins.Pins and proxy.tracking: why the session keeps its writer, what each reply changed.
The session reaches the running proxy only through proxy.interfaces.SessionHost.

Flow: bytes arrive (`data_received`) into the framer; while the session logs in they only wake the
login room; once it is free the command loop takes whole packets. Replies go straight from a
backend connection to the client transport (CommandLoop.relay); when the client reads slower than
the server sends, the backend connection stops being read (`pause_writing` / `pause_backend`), and
when the server does not read what the client sends, the client stops being read.

Client limits (the counting itself is the host's): `last_activity` is stamped when client bytes
arrive and when a reply ends (the host's sweeper closes idle sessions: `close_idle`). While the host
drains for shutdown, a session closes itself as soon as it is free outside a transaction.

State the proxy cannot rebuild (a transaction, temporary tables, user variables) is never silently
dropped: if the connection holding it is lost (`lost`), the client is told and disconnected.
Passwords are never logged.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING

from rules.engine import SessionView

from .backend import BackendConnection, set_nodelay
from .causal import CausalReads
from .command_loop import CommandLoop
from .config import User
from .lending import BackendLending
from .login import Login
from .logsafe import LogLimiter
from .pins import Pins
from .prepared import PreparedStatements
from .protocol.constants import (
    MIRRORED_CAPABILITIES,
    Capability,
    ErrorCode,
    ServerStatus,
)
from .protocol.framing import PacketFramer, ProtocolError, make_packet
from .protocol.packets import DEFAULT_TRACKING, NO_TRACKING, make_err
from .session import PinReason, SessionState

if TYPE_CHECKING:
    from .interfaces import SessionHost
    from .router import Router

log = logging.getLogger("rwproxy.session")
_limited = LogLimiter(log)  # what a misbehaving client could make the proxy repeat: a few lines, then a count

_session_ids = itertools.count(1)

# Pause reading from a client that pipelines more than this many bytes of commands.
_PIPELINE_LIMIT = 1 << 20
# Unfinished packets bigger than this count against [proxy] partial_packet_budget.
_PARTIAL_ACCOUNTED = 1 << 20

_IN_TRANS = int(ServerStatus.IN_TRANS)
_AUTOCOMMIT = int(ServerStatus.AUTOCOMMIT)


class ClientSession(asyncio.Protocol):
    def __init__(self, host: SessionHost) -> None:
        self.host = host
        self.router = host.router  # the routing snapshot this session's next statement uses
        self.id = next(_session_ids)
        self.transport: asyncio.Transport | None = None
        self.secure = False  # TLS (the login room switched `transport` to the TLS one)
        self.peer = "?"
        self.client_ip: str | None = None
        self.local: tuple[str, int] = ("", 0)
        self.framer = PacketFramer(host.config.max_allowed_packet)
        self.closed = False
        self.busy = True  # not taking commands (logging in, or a command in flight)
        self.reading_paused = False
        self.write_paused = False  # the client's socket buffer is full
        self._paused_backend: BackendConnection | None = None
        self._task: asyncio.Task | None = None
        self._quit = False  # the client said COM_QUIT (anything else that ends it counts as aborted)
        # Who the client is (set by the login room).
        self.user: User | None = None
        self.username = "-"
        self.capabilities = 0
        self.collation = 0
        self.attributes: dict[str, str] = {}
        self.deprecate_eof = False
        # The session's state on the servers.
        self.writer_hg = 0
        self.state = SessionState(None)
        self.txn_hg: int | None = None  # hostgroup whose connection holds an open transaction
        self.status = _AUTOCOMMIT  # server status flags of the last reply
        self.lost: str | None = None  # why this session's unrebuildable state is gone
        self._view: SessionView | None = None
        # Connections go back to their pool after each statement unless held (transaction-level
        # multiplexing); without classification (passthrough) nothing says when that is safe.
        self.multiplexing = host.config.multiplexing and not host.router.passthrough
        # Statements go unclassified to the writer (one hostgroup, nothing to decide, no pooling).
        self.passthrough = host.router.passthrough
        # The rooms.
        self.pins = Pins(host.pins, self.view_changed, self.log)
        self.causal = CausalReads(host.positions)  # consistent reads: mode, own last write, token
        self.lending = BackendLending(self, host, self._released)
        self.conns = self.lending.conns  # hostgroup -> this session's connection there (the same dict)
        self.prepared = PreparedStatements(self)
        self.login = Login(self)
        self.commands = CommandLoop(self)
        # Limits (see the host): counted against [proxy] max_connections? against which user?
        self.admitted = False
        self.counted_user: str | None = None
        self.logged_in = False
        self.draining = False  # the host is shutting down: close once free outside a transaction
        self.clock = host.clock
        self.last_activity = 0.0  # host clock; when the client last sent bytes or a reply ended
        self.wait_timeout: float | None = None  # the client's own SET wait_timeout (s), if it set one
        self.partial_since = 0.0  # host clock; since when a command packet has been arriving (0: none)

    # What the host, the stats and the admin port read of the session (proxy.stats.SessionLike).

    @property
    def current(self) -> BackendConnection | None:
        """The connection running the command in flight."""
        return self.commands.current

    @property
    def current_sql(self) -> str | None:
        return self.commands.current_sql

    @property
    def pin_reasons(self) -> set[PinReason]:
        return self.pins.reasons

    @property
    def holding_insert_id(self) -> bool:
        return self.commands.holding_insert_id

    def end_insert_id_hold(self) -> None:
        self.commands.end_insert_id_hold()

    @property
    def in_transaction(self) -> bool:
        """A transaction is open on the server (SERVER_STATUS_IN_TRANS in the last reply). Unlike
        `txn_hg`, which also pins an autocommit=0 session that has nothing open yet, this is what
        a shutdown would lose."""
        return self.txn_hg is not None and bool(self.status & _IN_TRANS)

    # ---- logging ------------------------------------------------------------------------------

    def context(self) -> str:
        return f"session={self.id} client={self.peer} user={self.username}"

    def log(self, level: int, msg: str, *args: object) -> None:
        if log.isEnabledFor(level):
            log.log(level, "%s " + msg, self.context(), *args)

    def describe(self) -> str:
        conns = ",".join(f"hg{hg}:{c.server.address}#{c.thread_id}{'(relaying)' if c.scanner else ''}{'(paused)' if c.reading_paused else ''}" for hg, c in self.conns.items())
        idle = f"{self.clock() - self.last_activity:.1f}s" if self.logged_in and not self.busy else "-"
        return (
            f"{self.context()} tls={self.secure} busy={self.busy} idle={idle} infile={self.commands.infile} client_reading_paused={self.reading_paused} "
            f"buffered={self.framer.buffered} current={getattr(self.current, 'hostgroup', None)} txn_hg={self.txn_hg} "
            f"pinned_writer={self.pins.pinned} pins=[{','.join(sorted(r.value for r in self.pins.reasons))}] schema={self.state.schema} conns=[{conns}]"
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
        self.host.stats.client_connected()
        refusal = self.host.admit(self)
        if refusal is not None:  # told before the greeting, as a server tells a blocked host
            self.send_err(0, *refusal)
            self.close()
            return
        if self.host.draining:  # accepted just before the listener closed
            self.close()
            return
        self.spawn(self.login.run())

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.clock()
        framer = self.framer
        framer.feed(data)
        if self.busy and not self.commands.infile:
            self.login.wake()
            if framer.buffered > _PIPELINE_LIMIT and not self.reading_paused:
                self.set_reading(False)
            return
        self.commands.process()
        if framer.buf and not self.closed:  # a packet begun, not whole yet (rare: a big statement or a slow client)
            self._partial(framer.buffered)
        elif self.partial_since:
            self.partial_since = 0.0
            self.host.packet_done(self)

    def _partial(self, size: int) -> None:
        """A command packet is arriving: it must be whole within [proxy] net_read_timeout (the
        host's sweeper), and big ones count against the host's budget for unfinished packets."""
        if not self.partial_since:
            self.partial_since = self.clock()
        if size > _PARTIAL_ACCOUNTED:
            self.host.partial_packet(self, size)

    def connection_lost(self, exc: Exception | None) -> None:
        infile = self.commands.infile
        if not self.closed and not self.busy or infile:
            if self.framer.buffered or infile:
                _limited.log(logging.WARNING, ("mid-packet", self.client_ip), "%s client closed the connection in the middle of a packet (%d bytes of it received)", self.context(), self.framer.buffered)
        elif not self.closed and self.current is not None and self.current.scanner is not None:
            self.log(logging.INFO, "client went away during a reply; backend connection closed")
        self._teardown()

    def pause_writing(self) -> None:
        # The client reads slower than the server sends: stop reading from the server. The paused
        # connection is remembered, not looked up on resume: the reply may end (and `current` be
        # cleared) in the very chunk that filled the client's buffer.
        self.write_paused = True
        if self.current is not None:
            self.pause_backend(self.current)

    def resume_writing(self) -> None:
        self.write_paused = False
        conn = self._paused_backend
        if conn is not None:
            self._paused_backend = None
            conn.pause_reading(False)

    def pause_backend(self, conn: BackendConnection) -> None:
        old = self._paused_backend
        if old is not conn:
            if old is not None:
                old.pause_reading(False)  # idle by now: its reply is over
            self._paused_backend = conn
            conn.pause_reading(True)

    def _released(self, conn: BackendConnection) -> None:
        """The lending room gave `conn` back: it must not stay paused for this session's sake."""
        if self._paused_backend is conn:
            self._paused_backend = None
            conn.pause_reading(False)

    def set_reading(self, on: bool) -> None:
        if self.closed:
            return
        self.reading_paused = not on
        if on:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    # ---- writing to the client, closing -------------------------------------------------------

    def send(self, payload: bytes, seq: int) -> None:
        if not self.closed:
            self.transport.write(make_packet(payload, seq))

    def send_err(self, seq: int, code: int, message: str, sqlstate: str | None = None) -> None:
        if not self.closed:
            self.host.stats.error(code)
        self.send(make_err(code, message, sqlstate), seq)

    def protocol_error(self, seq: int, e: ProtocolError) -> None:
        _limited.log(logging.WARNING, ("protocol", self.client_ip), "%s protocol error from client: %s", self.context(), e)
        self.send_err(seq, e.code, str(e))
        self.close()

    def spawn(self, work: Coroutine[object, object, None]) -> None:
        """Run a slow-path step (login, a connection to open, KILL) as the session's one task."""
        self._task = asyncio.get_running_loop().create_task(work)

    def free(self) -> None:
        """Take commands again (after login, COM_CHANGE_USER, or a command answered off the hot path)."""
        self.busy = False
        self.last_activity = self.clock()
        if self.draining and not self.in_transaction:
            self.close_for_shutdown()
            return
        self.commands.process()

    def quit(self) -> None:
        """COM_QUIT: the client ends the session (not counted as aborted)."""
        self.log(logging.DEBUG, "COM_QUIT")
        self._quit = True
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self._teardown()

    def _teardown(self) -> None:
        if self.closed:
            return
        self.closed = True
        if not self._quit:
            self.host.stats.client_aborted()
        self.login.wake()
        self.host.forget(self)
        self.release_all()

    def idle_limit(self) -> float:
        """Seconds of silence after which the session is closed: the client's own SET wait_timeout,
        else [proxy] client_idle_timeout (0 = never)."""
        return self.wait_timeout if self.wait_timeout is not None else self.host.config.client_idle_timeout

    def close_idle(self) -> None:
        """The idle limit passed without a command: tell the client as MySQL 8.0.24+ does for
        wait_timeout (ER_CLIENT_INTERACTION_TIMEOUT, sequence id 0), then close."""
        timeout = self.idle_limit()
        own = self.wait_timeout is not None
        setting = "the session's wait_timeout" if own else "client_idle_timeout in the rwproxy configuration"
        self.log(logging.INFO, "closed: no command for %.1fs (%s = %gs)", self.clock() - self.last_activity, "wait_timeout" if own else "client_idle_timeout", timeout)
        self.send_err(
            0,
            ErrorCode.CLIENT_INTERACTION_TIMEOUT,
            f"The client was disconnected by the server because of inactivity. See {setting} ({timeout:g}s) for configuring this behavior.",
        )
        self.close()

    def close_read_timeout(self) -> None:
        """A command packet began and did not arrive whole within [proxy] net_read_timeout."""
        self.log(logging.WARNING, "closed: a packet begun %.1fs ago is still incomplete (%d bytes; net_read_timeout = %gs)",
                 self.clock() - self.partial_since, self.framer.buffered, self.host.config.net_read_timeout)
        self.send_err(0, ErrorCode.NET_READ_INTERRUPTED, "Got timeout reading communication packets")
        self.close()

    def close_for_budget(self) -> None:
        """The host's budget for unfinished packets is spent and this client holds the most."""
        self.send_err(0, ErrorCode.OUT_OF_RESOURCES, "Out of resources: rwproxy holds too many unfinished packets (partial_packet_budget); yours was the largest")
        self.close()

    def close_for_shutdown(self, cut: bool = False) -> None:
        """The proxy is stopping. A free session is told ER_SERVER_SHUTDOWN (sequence id 0, as
        MariaDB does); mid-command nothing can be said without corrupting the reply."""
        if self.closed:
            return
        if cut:
            self.log(logging.WARNING, "cut at shutdown: %s", "statement still running" if self.busy else f"transaction still open on hostgroup {self.txn_hg}")
        if self.logged_in and not self.busy:
            self.send_err(0, ErrorCode.SERVER_SHUTDOWN, "Server shutdown in progress")
        self.close()

    # ---- who the session is, and its state ----------------------------------------------------

    def negotiated(self, capabilities: int, collation: int, attributes: dict[str, str]) -> None:
        """What the client's HandshakeResponse41 settled (capabilities already cut to the proxy's)."""
        self.capabilities = capabilities
        self.deprecate_eof = bool(capabilities & Capability.DEPRECATE_EOF)
        self.collation = collation
        self.attributes = attributes

    def become(self, user: User, database: str | None) -> None:
        """Start over as `user` in `database`: nothing held, no state, no pins, no statements."""
        self.release_all()
        self.user, self.username, self.writer_hg = user, user.username, user.default_hostgroup
        tracking = DEFAULT_TRACKING if self.capabilities & Capability.SESSION_TRACK else NO_TRACKING
        self.state = SessionState(database, self.collation, tracking)
        self.pins.clear()
        self.txn_hg, self.lost, self._view, self.wait_timeout = None, None, None, None
        self.commands.holding_insert_id = False
        self.status = _AUTOCOMMIT
        self.lending.start((self.capabilities & MIRRORED_CAPABILITIES, self.collation))
        self.prepared.clear()
        self.causal = CausalReads(self.host.positions)
        self._configure_causal(user)

    def _configure_causal(self, user: User) -> None:
        config = self.host.config
        self.causal.configure(user.causal_reads or config.causal_reads, config.causal_reads_timeout)

    def release_all(self, keep: BackendConnection | None = None) -> None:
        """Give back every held connection; those with state nobody can replay are reset first."""
        dirty = self.pins.pinned or self.lost is not None or not self.multiplexing
        # (A connection holding the session's last warnings is reset too: the session ends, or resets.)
        self.lending.release_all(dirty, self.txn_hg, keep, self.commands.diag_conn)
        self.commands.diag_conn = None

    def config_changed(self, router: Router) -> None:
        """A new runtime configuration is live (the host's apply_config): the next statement uses it."""
        self.router = router
        # A multiplexing session keeps classifying even if the new config needs none: its state
        # (pins, variables) must still be tracked.
        self.passthrough = router.passthrough and not self.multiplexing
        self.lending.config_changed()
        user = self.host.config.users.get(self.username)
        if user is not None:
            self._configure_causal(user)
        self._view = None

    def view_changed(self) -> None:
        """Something the rules engine sees of this session changed: rebuild the view when next routed."""
        self._view = None

    def session_view(self) -> SessionView:
        """What the rules engine sees of this session (rebuilt only when part of it changed)."""
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
                pinned_writer=self.pins.pinned,
            )
        return view
