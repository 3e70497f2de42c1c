"""The command loop: dispatch each client command and relay its reply (the per-statement hot path).

Theory of operation: a CommandLoop is the room of a ClientSession that runs commands once the client
is logged in; it is also the ReplySink its backend connections report to (proxy.backend). It is
callback-driven, because it is the hot path: a whole command packet arrives (`process` ->
`_dispatch`); a COM_QUERY is routed (proxy.router: cached classification, then rules.engine.decide);
if the chosen hostgroup's connection is held (or an idle pooled one is at hand, `lending.try_acquire`)
and already carries the session's state, the packet is written to it unchanged (`run` -> `start`)
and the reply relayed chunk by chunk (BackendConnection + ResultScanner -> `relay`). When the reply
ends (`reply_done`), the transaction state is read from the server's status flags, what the command
changed is recorded (proxy.tracking), the connection goes back to its pool unless the session must
hold it (`holds`), and the next buffered command is taken. No coroutine, task or future per
statement: the slow path (`slow`, a task) runs only when a connection must be opened or brought up
to the session's state, and turns a backend that cannot be used into the client's ERR.

Statement commands go to the prepared-statement room under multiplexing; KILL and the session's own
function values to proxy.local_answers; COM_CHANGE_USER to the login room. LOAD DATA LOCAL INFILE:
when the server asks for the file, client packets are relayed to it until the empty one.

Statistics (proxy.stats): one `statement_done` per statement (COM_QUERY, and COM_STMT_EXECUTE under
the digest of its statement), when its reply ends or when the proxy answers it itself
(`answered_here`: a rule's Deny/Respond, KILL, no backend; hostgroup -1). `current_sql` references
the text in flight for stats_mysql_processlist. Every ERR a client gets is counted by code.

It never reads the client socket (the session feeds the framer) and never opens connections itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from rules.classify import Classification, Kind
from rules.engine import SessionView, replayable_set
from rules.model import Decision, Deny, Reads, RouteTo

from .backend import BackendConnection
from .causal import CausalReads
from .diagnostics import after_reply, assignment_on_writer, give_up
from .interfaces import SessionCore
from .lending import BackendLending, HostgroupError
from .local_answers import kill, no_diagnostics, processlist, session_values, set_min_gtid
from .logsafe import LogLimiter
from .login import Login
from .pins import Pins
from .prepared import PreparedStatements
from .protocol.constants import Command, ErrorCode, ServerStatus
from .protocol.framing import Packet, PacketFramer, ProtocolError, make_packet
from .protocol.packets import ERR, OK, make_ok
from .protocol.results import Reply, ResultScanner, execute_reply
from .read_choice import USUAL, WRITER, choose, consulted, counted_wait
from .router import classify_text
from .session import PinReason
from .recovery import Recovery
from .tracking import note_wait_timeout, record

log = logging.getLogger("rwproxy.session")
T = TypeVar("T")


class CommandSession(SessionCore, Protocol):
    """The session whose commands this loop runs (proxy.client.ClientSession)."""

    transport: asyncio.Transport
    framer: PacketFramer
    passthrough: bool  # nothing is routed: every statement goes to the writer unclassified
    lost: str | None  # why the session's unrebuildable state is gone (it ends at the next command)
    deprecate_eof: bool
    reading_paused: bool
    write_paused: bool
    draining: bool
    last_activity: float
    clock: Callable[[], float]
    pins: Pins
    lending: BackendLending
    prepared: PreparedStatements
    login: Login
    wait_timeout: float | None
    causal: CausalReads
    peer: str

    @property
    def in_transaction(self) -> bool: ...
    def context(self) -> str: ...
    def session_view(self) -> SessionView: ...
    def view_changed(self) -> None: ...
    def set_reading(self, on: bool) -> None: ...
    def pause_backend(self, conn: BackendConnection) -> None: ...
    def quit(self) -> None: ...
    def close_for_shutdown(self, cut: bool = False) -> None: ...

# What reply each relayed command gets; commands absent here are answered by the proxy (below) or
# refused with ER_UNKNOWN_COM_ERROR. Never relayed: commands that act on the shared server rather
# than the client's session (COM_REFRESH ran RESET MASTER for a fuzzer and broke both replicas;
# COM_DEBUG, COM_SHUTDOWN, the replication commands); COM_PROCESS_KILL and COM_PROCESS_INFO take the
# proxy's connection ids, so they are answered here like KILL and SHOW PROCESSLIST.
REPLY_FOR: dict[int, Reply] = {
    Command.QUERY: Reply.RESULT,
    Command.INIT_DB: Reply.SIMPLE,
    Command.PING: Reply.SIMPLE,
    Command.FIELD_LIST: Reply.FIELDS,
    Command.STATISTICS: Reply.ANY_ONE,
    Command.SET_OPTION: Reply.SIMPLE,
    Command.RESET_CONNECTION: Reply.SIMPLE,
    Command.STMT_PREPARE: Reply.PREPARE,
    Command.STMT_EXECUTE: Reply.RESULT,
    Command.STMT_FETCH: Reply.FETCH,
    Command.STMT_RESET: Reply.SIMPLE,
    Command.STMT_SEND_LONG_DATA: Reply.NONE,
    Command.STMT_CLOSE: Reply.NONE,
}
_STMT_COMMANDS = frozenset(
    (Command.STMT_PREPARE, Command.STMT_EXECUTE, Command.STMT_SEND_LONG_DATA, Command.STMT_CLOSE, Command.STMT_RESET, Command.STMT_FETCH)
)
_IN_TRANS = int(ServerStatus.IN_TRANS)
_AUTOCOMMIT = int(ServerStatus.AUTOCOMMIT)
# The status flags that describe the session (kept for the OKs the proxy makes itself), not one
# statement (NO_INDEX_USED, QUERY_WAS_SLOW, SESSION_STATE_CHANGED, MORE_RESULTS_EXISTS, ...).
_SESSION_STATUS = int(ServerStatus.IN_TRANS | ServerStatus.AUTOCOMMIT | ServerStatus.IN_TRANS_READONLY | ServerStatus.NO_BACKSLASH_ESCAPES)
_PREPARE_REPLY = Reply.PREPARE
_KILL = Kind.KILL
_SHOW = Kind.SHOW
_DDL = Kind.DDL
_SET = Kind.SET
_KILL_LATER = re.compile(r"; ?KILL\b")
_PROCESSLIST = re.compile(r"SHOW (?:FULL )?PROCESSLIST\b")
_STMT_EXECUTE = int(Command.STMT_EXECUTE)
_SERVER_WIDE = frozenset((Command.REFRESH, Command.DEBUG, Command.SHUTDOWN, Command.BINLOG_DUMP, Command.BINLOG_DUMP_GTID, Command.REGISTER_SLAVE, Command.TABLE_DUMP))
_monotonic_ns = time.monotonic_ns
# Warnings every session would repeat about one server: one line, then a count.
_limited = LogLimiter(log)


def _query_packet(sql: str) -> bytes:
    return make_packet(b"\x03" + sql.encode("utf-8", "surrogateescape"), 0)


def _err_code(payload: bytes) -> int:
    """The error code of an ERR packet's payload (0xFF, then the code as 2 bytes little-endian)."""
    return payload[1] | payload[2] << 8 if len(payload) >= 3 else 0


class CommandLoop:
    __slots__ = (
        "session", "framer", "conns", "lending", "prepared", "_stats", "current", "post", "stat", "rule_ids", "t0",
        "current_sql", "rewrite_id", "infile", "insert_id", "row_count", "holding_insert_id", "reset_on_release",
        "packet", "first_chunk", "diag_conn", "give_up_diagnostics", "recovery",
    )  # fmt: skip

    def __init__(self, session: CommandSession) -> None:
        self.session = session
        # The session's parts this loop uses on every statement (never replaced, so kept here).
        self.framer, self.conns, self.lending, self.prepared = session.framer, session.lending.conns, session.lending, session.prepared
        self._stats = session.host.stats
        self.current: BackendConnection | None = None  # running the command in flight
        self.post: tuple | None = None  # what to record when the reply in flight ends
        # The statement in flight, for the stats: recorded once, at reply end or when answered here.
        self.stat: Classification | None = None  # (COM_QUERY, COM_STMT_EXECUTE)
        self.rule_ids: tuple[int, ...] = ()  # the rules it matched
        self.t0 = 0  # time.monotonic_ns() when it arrived
        self.current_sql: str | None = None  # its text (a reference, not a copy): stats_mysql_processlist
        self.rewrite_id: bytes | None = None  # the proxy's id for the COM_STMT_PREPARE reply in flight
        self.infile = False  # relaying a LOAD DATA LOCAL file from the client
        self.insert_id = 0  # LAST_INSERT_ID() of the session: the last insert id an OK reported
        self.row_count = -1  # ROW_COUNT() of the session: what its previous statement affected
        self.holding_insert_id = False  # keep the writer connection for LAST_INSERT_ID()
        self.reset_on_release = False  # the reply in flight left state nobody else may inherit
        # For a statement that failed before its reply began (retried when that is safe):
        self.packet: Packet | None = None  # the client's command packet in flight
        self.first_chunk = False  # nothing of the reply in flight has reached the client yet
        self.recovery = Recovery(session, self)  # what a failed or overdue statement comes to
        # The connection whose last statement (the session's previous one) left warnings or an
        # error: held until the next statement, so SHOW WARNINGS & co. can run where they are.
        self.diag_conn: BackendConnection | None = None
        self.give_up_diagnostics = functools.partial(give_up, self)  # its pool may take it back (Pool.weak)

    # ---- dispatch -----------------------------------------------------------------------------

    def process(self) -> None:
        """Dispatch buffered client packets while the session is free to take them."""
        s = self.session
        framer = self.framer
        while not s.closed:
            if self.infile:
                if not self._forward_infile():
                    return
                continue
            if s.busy:
                return
            try:
                pkt = framer.next_packet()
            except ProtocolError as e:
                s.protocol_error(1, e)
                return
            if pkt is None:
                if s.reading_paused:
                    s.set_reading(True)
                return
            self._dispatch(pkt)

    def _dispatch(self, pkt: Packet) -> None:
        s = self.session
        payload = pkt.payload
        if pkt.seq != 0:
            s.protocol_error(1, ProtocolError(f"Got packets out of order (a command must start with sequence id 0, got {pkt.seq})", code=ErrorCode.NET_PACKETS_OUT_OF_ORDER))
            return
        if not payload:
            s.protocol_error(1, ProtocolError("Malformed communication packet (empty command)"))
            return
        cmd = payload[0]
        self.packet = pkt
        if s.lost is not None and cmd != Command.QUIT:
            s.send_err(1, ErrorCode.CONNECTION_KILLED, s.lost)
            s.close()
            return
        if cmd == Command.QUERY:
            self.t0 = _monotonic_ns()
            sql = bytes(payload[1:]).decode("utf-8", "surrogateescape")
            if s.passthrough:
                # Nothing to route, but the digest table counts every statement: classify() is
                # cached by raw text (a dict hit for a text seen before), else a fingerprint.
                cls = self.stat = classify_text(sql)
                self.rule_ids, self.current_sql = (), sql
                raw = pkt.raw
                if cls.client_session:
                    if self._answer_here(cls, sql, only_connection_id=True):
                        return
                    raw = _query_packet(self.current_sql)
                if cls.set_targets:
                    note_wait_timeout(s, cls.set_targets)
                # (A SET may change the client's own session tracking: proxy.tracking notes that.)
                self.run(s.writer_hg, raw, Reply.RESULT, (cls, None, sql) if cls.kind is _SET else None)
            else:
                self._query(sql, pkt.raw)
            return
        if cmd in _STMT_COMMANDS and s.multiplexing:
            self.prepared.command(cmd, pkt)
            return
        reply = REPLY_FOR.get(cmd)
        if reply is not None:
            self._relay_command(cmd, pkt, reply)
            return
        if cmd == Command.QUIT:
            s.quit()
            return
        if cmd == Command.CHANGE_USER:
            s.busy = True
            s.spawn(s.login.change_user(pkt))
            return
        if cmd == Command.PROCESS_KILL and len(payload) >= 5:
            kill(s, f"KILL {int.from_bytes(payload[1:5], 'little')}")
            return
        if cmd == Command.PROCESS_INFO:
            processlist(s, full=False)
            return
        name = Command(cmd).name if cmd in Command._value2member_map_ else f"0x{cmd:02x}"
        _limited.log(logging.WARNING, ("unsupported", cmd), "%s unsupported command %s", s.context(), name)
        why = " (it acts on the shared server, not on this session)" if cmd in _SERVER_WIDE else ""
        s.send_err(1, ErrorCode.UNKNOWN_COM_ERROR, f"Unknown command: rwproxy does not relay COM_{name}{why}")

    def _relay_command(self, cmd: int, pkt: Packet, reply: Reply) -> None:
        """A command relayed unchanged to the writer (statement commands too, without multiplexing)."""
        s = self.session
        payload = pkt.payload
        if cmd == _STMT_EXECUTE:
            reply = execute_reply(payload)  # (a cursor ends the reply early)
            known = self.prepared.classes.get(int.from_bytes(payload[1:5], "little"))
            if known is not None:  # counted under its statement's digest
                self.t0 = _monotonic_ns()
                self.stat, self.current_sql = known
                self.rule_ids = ()
        elif cmd in _STMT_COMMANDS or cmd == Command.RESET_CONNECTION:
            self.prepared.relayed(cmd, payload)
            if cmd == Command.STMT_PREPARE:
                # Without multiplexing, statements live on the session's writer connection.
                s.pins.pin(PinReason.PREPARED_STATEMENT)
        if reply is Reply.NONE:
            # COM_STMT_CLOSE / SEND_LONG_DATA: no reply; the statement lives on the writer.
            conn = self.conns.get(s.writer_hg)
            if conn is not None:
                conn.write(pkt.raw)
            return
        post = (cmd, pkt.payload) if cmd in (Command.INIT_DB, Command.RESET_CONNECTION) else None
        self.run(s.writer_hg, pkt.raw, reply, post)

    def _query(self, sql: str, raw: bytes) -> None:
        """A COM_QUERY of a routing session: classified (cached), decided, run."""
        s = self.session
        cls = classify_text(sql)
        if cls.client_session:
            self.stat, self.rule_ids, self.current_sql = cls, (), sql
            if self._answer_here(cls, sql):
                return
            if self.current_sql is not sql:  # rewritten with the session's own values
                sql = self.current_sql
                raw = _query_packet(sql)
                cls = classify_text(sql)
        decision = s.router.decide(cls, sql, s.session_view())
        self.stat, self.rule_ids, self.current_sql = cls, decision.rule_ids, sql
        action = decision.action
        if type(action) is RouteTo:
            if decision.sql is not None:
                raw = _query_packet(decision.sql)
            hostgroup = action.hostgroup
            if cls.diagnostics:
                # SHOW WARNINGS, @@warning_count...: where the session's previous statement left them;
                # if it left none, SHOW WARNINGS & co. are answered here (a pooled connection may
                # still hold another client's).
                if self.diag_conn is not None:
                    hostgroup = self.diag_conn.hostgroup
                    if cls.assigns_user_vars and hostgroup != s.writer_hg:
                        self._diagnostics_into_writer(cls, decision, sql)
                        return
                elif cls.kind is _SHOW and no_diagnostics(s, cls.fingerprint.text):
                    self.answered_here()
                    return
            self.run(hostgroup, raw, Reply.RESULT, (cls, decision, sql), decision.reads)
        elif type(action) is Deny:
            s.log(logging.INFO, "statement blocked by rule(s) %s", ",".join(map(str, decision.rule_ids)))
            s.send_err(1, action.errno, action.error_msg, action.sqlstate)
            self.answered_here()
        else:
            s.send(make_ok(OK(status=s.status, info=action.ok_msg.encode()), s.capabilities), 1)
            self.answered_here()

    def _diagnostics_into_writer(self, cls: Classification, decision: Decision, sql: str) -> None:
        """GET DIAGNOSTICS @v = ... with the diagnostics on a reader: read there, assigned on the
        writer, where the session's user variables live (proxy.diagnostics)."""
        s = self.session
        s.busy = True
        self.post = (cls, decision, sql)
        diag = self.diag_conn
        pool = getattr(diag, "pool", None)
        if pool is not None:
            pool.weak.pop(diag, None)  # in use from here on

        async def getting() -> tuple[BackendConnection, bytes] | ERR:
            timeout = s.host.config.connect_timeout
            try:
                text = await asyncio.wait_for(assignment_on_writer(diag, sql), timeout)
            except (asyncio.TimeoutError, ConnectionError):
                self.diag_conn = None
                self.lending.discard(diag)
                return ERR(1105, "HY000", f"rwproxy: the connection holding the session's diagnostics did not answer within {timeout:g}s; they are lost")
            if isinstance(text, ERR):
                return text
            return await self.lending.ready(s.writer_hg), _query_packet(text)

        def then(got: tuple[BackendConnection, bytes] | ERR) -> None:
            if isinstance(got, ERR):
                s.send_err(1, got.code, got.message, got.sqlstate)
                self.post = None
                self.answered_here()
                s.free()
                return
            self.start(got[0], got[1], Reply.RESULT)

        s.spawn(self.slow(getting(), then))

    def _answer_here(self, cls: Classification, sql: str, only_connection_id: bool = False) -> bool:
        """A statement whose meaning depends on the client session (Classification.client_session):
        KILL and SHOW PROCESSLIST are answered here (True); a text with CONNECTION_ID() & co. gets
        the session's own values (`current_sql` is the rewritten text) and runs (False)."""
        s = self.session
        if cls.kind is _KILL:
            kill(s, sql)
            if not s.busy:  # refused at once (else the KILL task records it)
                self.answered_here()
            return True
        if _KILL_LATER.search(cls.fingerprint.text):
            # The server would read the id as one of its own threads: never send it.
            s.send_err(1, 1235, "rwproxy: KILL in a multi-statement must come first (connection ids are the proxy's; CONNECTION_ID() returns them)", "42000")
            self.answered_here()
            return True
        if cls.kind is _SET and "RWPROXY_MIN_GTID" in cls.fingerprint.text:
            set_min_gtid(s, cls.set_targets)
            self.answered_here()
            return True
        if cls.kind is _SHOW and _PROCESSLIST.match(cls.fingerprint.text):
            processlist(s, full=cls.fingerprint.text.startswith("SHOW FULL"))
            self.answered_here()
            return True
        if "information_schema.processlist" in cls.tables_read:
            return False  # the server's own threads: its CONNECTION_ID() is the one to compare with
        if cls.kind is _DDL:
            return False  # a definition (a column's DEFAULT, a view, a routine) stores the call, not a value
        # Inside a multi-statement ROW_COUNT() and LAST_INSERT_ID() follow its own statements, which
        # run on one connection in order: only the connection id is the proxy's there.
        self.current_sql = session_values(sql, s, only_connection_id or cls.multi_statement)
        return False

    def query_text(self, sql: str) -> None:
        """Run `sql` as if the client had sent it (the rest of a multi-statement after a KILL)."""
        s = self.session
        self.t0 = _monotonic_ns()
        if s.passthrough:
            self.stat, self.rule_ids, self.current_sql = classify_text(sql), (), sql
            self.run(s.writer_hg, _query_packet(sql), Reply.RESULT, None)
        else:
            self._query(sql, _query_packet(sql))

    def answered_here(self) -> None:
        """The statement in flight was answered by the proxy itself (a rule's Deny/Respond, KILL,
        an ERR because no backend could take it): it counts in hostgroup -1 (`StatsRegistry.local`)."""
        stat = self.stat
        if stat is not None:
            self.stat = self.current_sql = None
            s, stats = self.session, self._stats
            stats.statement_done(stats.local, stat.fingerprint, stat.kind, s.state.schema, s.username, self.rule_ids, self.t0)

    # ---- running a command on a backend connection --------------------------------------------

    def run(self, hostgroup: int, raw: bytes, reply: Reply, post: tuple | None, reads: Reads | None = None) -> None:
        """Send a command to the session's connection in `hostgroup` and relay its reply. `reads`:
        what a rule or hint says the read must see (rules.model.Reads)."""
        s = self.session
        s.busy = True
        self.post = post
        if hostgroup != s.writer_hg:  # a read for a reader hostgroup: must it see some write?
            stat = self.stat
            if stat is not None and consulted(s.causal, stat.fingerprint.hints, reads) and self._causal(hostgroup, raw, reply, reads):
                return
        conn = self.conns.get(hostgroup)
        if conn is None and s.multiplexing:
            conn = self.lending.try_acquire(hostgroup)
        state = s.state
        if conn is not None and state.matches(conn.cstate):
            cs = conn.cstate
            cs.owner, cs.gen = state, state.gen
            self.start(conn, raw, reply)
            return
        stat = self.stat
        replayable = stat is not None and stat.kind is _SET and replayable_set(stat)
        s.spawn(self.slow(self.lending.ready(hostgroup, read=self.is_read(), replayable=replayable), lambda conn: self.start(conn, raw, reply)))

    def _causal(self, hostgroup: int, raw: bytes, reply: Reply, reads: Reads | None) -> bool:
        """A read that must see a write, or whose replica may lag at most max_lag_ms
        (proxy.read_choice): False when it goes on along the usual path; True when it is under way
        on the writer, or after a wait on a replica (a task)."""
        s = self.session
        what, required, mode = choose(s, self.lending, hostgroup, self.stat.fingerprint.hints, reads)
        if what == USUAL:
            return False
        if what == WRITER:
            self.run(s.writer_hg, raw, reply, self.post)
            return True

        def then(conn: BackendConnection) -> None:
            counted_wait(s, conn, reads)
            self.start(conn, raw, reply)

        s.spawn(self.slow(self.lending.ready_caught_up(hostgroup, required, s.causal.timeout, mode), then))
        return True

    def is_read(self) -> bool:
        """The statement in flight is a provable read (it may run on any server of the pair)."""
        stat = self.stat
        return stat is not None and stat.read_only

    def start(self, conn: BackendConnection, raw: bytes, reply: Reply) -> None:
        """Send a command on `conn` and relay its reply to the client."""
        s = self.session
        self.current = conn
        self.first_chunk = True
        if s.write_paused:
            s.pause_backend(conn)  # the client has not drained the previous reply yet
        if reply is _PREPARE_REPLY and s.multiplexing:
            self.prepared.make_room(conn)
        conn.relay(raw, ResultScanner(reply, s.deprecate_eof, s.state.tracking))

    async def slow(self, getting: Awaitable[T], then: Callable[[T], None]) -> None:
        """The slow path of a command: await what it needs (a connection brought up to date, a
        statement prepared on it), then send it; a backend that cannot be used becomes the
        client's ERR and the session carries on."""
        s = self.session
        try:
            got = await getting
        except HostgroupError as e:
            code, message, sqlstate = e.client_err()
            s.send_err(1, code, message, sqlstate)
            self.post = None
            self.answered_here()
            s.free()
            return
        except Exception:
            log.exception("%s unexpected error preparing a backend connection", s.context())
            s.close()
            return
        if not s.closed:
            then(got)

    def holds(self, conn: BackendConnection) -> bool:
        """Must the session keep `conn` after its reply? (Otherwise it goes back to its pool.)"""
        s = self.session
        hg = conn.hostgroup
        cursors = self.prepared.cursors
        if hg == s.txn_hg or self.infile or conn is self.diag_conn or (cursors and conn in cursors.values()):
            return True
        if hg == s.writer_hg and (s.pins.pinned or self.holding_insert_id):
            return True
        return False

    # ---- ReplySink (proxy.backend) ------------------------------------------------------------

    def relay(self, data: bytes) -> None:
        if self.first_chunk:  # the reply begins to reach the client: no retry from here on
            self.first_chunk = False
            if self.rewrite_id is not None:
                # The first chunk of a COM_STMT_PREPARE reply: show the client the proxy's statement id.
                if len(data) >= 9 and data[4] == 0:
                    data = bytearray(data)
                    data[5:9] = self.rewrite_id
                self.rewrite_id = None
        s = self.session
        if not s.closed:
            s.transport.write(data)

    def reply_done(self, scanner: ResultScanner) -> None:
        s = self.session
        conn = self.current
        self.current = None
        stat = self.stat
        if stat is not None:  # the one stats call per statement (before record: the schema it ran in)
            self.stat = self.current_sql = None
            err = scanner.error
            self._stats.statement_done(
                conn.stats, stat.fingerprint, stat.kind, s.state.schema, s.username, self.rule_ids, self.t0,
                scanner.affected_rows, 0 if err is None else _err_code(err),
            )  # fmt: skip
        else:
            if self.prepared.preparing is not None:  # without multiplexing: the statement it created
                self.prepared.prepared_reply(scanner)
            if scanner.error is not None:
                self._stats.error(_err_code(scanner.error))
        status = scanner.status
        if status >= 0:
            s.status = status & _SESSION_STATUS  # what OKs the proxy makes may say: no statement's own flags
            hg = conn.hostgroup
            if status & _IN_TRANS or not status & _AUTOCOMMIT:
                if s.txn_hg != hg:
                    s.txn_hg = hg
                    s.view_changed()
            elif s.txn_hg == hg:
                s.txn_hg = None
                s.view_changed()
        post = self.post
        if post is not None or scanner.states is not None or scanner.gtid is not None:  # (the server reported state changes)
            self.post = None
            record(s, post, scanner, conn)
        if conn.hostgroup == s.writer_hg:
            # LAST_INSERT_ID() (any spelling) must run where the insert ran: keep the writer
            # connection until the next statement on it (ProxySQL's auto_increment delay, for one).
            self.holding_insert_id = scanner.last_insert_id != 0
            if self.holding_insert_id:
                self.insert_id = scanner.last_insert_id
        if scanner.results or scanner.error is not None:
            self.row_count = scanner.row_count
        if scanner.warnings or scanner.error is not None or self.diag_conn is not None:
            after_reply(self, scanner, conn, stat)
        if s.multiplexing and not self.holds(conn):
            self.lending.release(conn, reset=self.reset_on_release)
        self.reset_on_release = False
        s.busy = False
        s.last_activity = s.clock()
        if s.draining and not s.in_transaction:
            s.close_for_shutdown()
            return
        if self.framer.buffered or s.reading_paused:
            self.process()

    def end_insert_id_hold(self) -> None:
        """[pool] last_insert_id_hold passed with the session idle: give the writer connection back
        (LAST_INSERT_ID() is answered from the insert's OK packet from now on)."""
        s = self.session
        if not self.holding_insert_id or s.busy or s.closed:
            return
        self.holding_insert_id = False
        conn = self.conns.get(s.writer_hg)
        if conn is not None and s.multiplexing and not self.holds(conn):
            self.lending.release(conn)

    def infile_requested(self) -> None:
        # The server asked for the client's file (LOAD DATA LOCAL INFILE): relay the client's
        # packets to the server until the empty packet that ends the file.
        self.infile = True
        self.process()

    def _forward_infile(self) -> bool:
        try:
            pkt = self.framer.next_packet(join=False)
        except ProtocolError as e:
            self.session.protocol_error(1, e)
            return False
        if pkt is None:
            return False
        self.current.write(pkt.raw)
        if not pkt.payload:
            self.infile = False
            self.current.scanner.expect_infile_reply()
        return True

    def backend_lost(self, conn: BackendConnection, exc: Exception | None) -> None:
        self.recovery.lost(conn, exc)

    def redispatch(self, packet: Packet) -> None:
        """Run the client's command again (recovery: a safe read whose server failed before replying)."""
        self._dispatch(packet)

    def backend_write_paused(self, paused: bool) -> None:
        # The server is not reading what the client sends (big LOAD DATA, huge query): stop reading
        # from the client until it catches up.
        self.session.set_reading(not paused)
