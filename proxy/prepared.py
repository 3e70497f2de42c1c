"""The proxy's prepared-statement map: a client's server-side prepared statements on pooled connections.

Theory of operation (under multiplexing): the client sees stable statement ids of the proxy's own. A
statement is prepared lazily on whichever connection executes it (the connection's own id is
patched into each COM_STMT_EXECUTE); parameter types the client sent once are re-sent where a
connection has not seen them; long data is kept until EXECUTE and replayed just before it; a cursor
keeps its connection until it is exhausted or closed (`cursors`, which the session's hold decision
reads). Connections keep at most [pool] max_prepared_statements statements, least recently used
closed first, so a server's Prepared_stmt_count never exceeds that times the connections.

Without multiplexing (passthrough, or [pool] multiplexing = false) statements live on the session's
one writer connection and their commands are relayed unchanged; this room then only maps the
server's statement ids to their classification, so COM_STMT_EXECUTE counts under its statement's
digest in the stats (`classes`, filled from each PREPARE's own reply).

The executing itself goes through the command loop (`CommandLoop.start`), like every command; this
room never writes to the client except the ERRs of statement commands it answers itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from rules.classify import Classification, Kind
from rules.engine import SessionView
from rules.model import Deny, RouteTo

from .backend import BackendConnection
from .causal import CausalReads
from .interfaces import SessionCore
from .lending import BackendLending, HostgroupError, failure
from .protocol.constants import Command, ErrorCode, ServerStatus
from .protocol.framing import Packet, ProtocolError, make_packet
from .protocol.packets import ERR, OK, make_ok
from .protocol.results import Reply, ResultScanner, execute_reply
from .read_choice import WAIT, WRITER, choose, consulted, counted_wait
from .router import classify_text

_CURSOR_EXISTS = int(ServerStatus.CURSOR_EXISTS)
_LAST_ROW_SENT = int(ServerStatus.LAST_ROW_SENT)
_STMT_EXECUTE = Command.STMT_EXECUTE
_STMT_FETCH = Command.STMT_FETCH
_monotonic_ns = time.monotonic_ns


class StatementRunner(Protocol):
    """The command loop, as the prepared-statement room uses it (proxy.command_loop.CommandLoop)."""

    post: tuple | None
    stat: Classification | None
    rule_ids: tuple[int, ...]
    t0: int
    current_sql: str | None
    rewrite_id: bytes | None

    def run(self, hostgroup: int, raw: bytes, reply: Reply, post: tuple | None) -> None: ...
    def start(self, conn: BackendConnection, raw: bytes, reply: Reply) -> None: ...
    async def slow(self, getting: Awaitable[Any], then: Callable[[Any], None]) -> None: ...
    def holds(self, conn: BackendConnection) -> bool: ...
    def is_read(self) -> bool: ...


class StatementOwner(SessionCore, Protocol):
    """The session whose statements this room maps (proxy.client.ClientSession)."""

    lending: BackendLending
    commands: StatementRunner
    causal: CausalReads  # its consistent-read mode and tokens (proxy.read_choice)

    def session_view(self) -> SessionView: ...


class Statement:
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


def close_command(backend_id: int) -> bytes:
    """A COM_STMT_CLOSE packet for a statement id of a connection (it gets no reply)."""
    return make_packet(b"\x19" + backend_id.to_bytes(4, "little"), 0)


def with_id(raw: bytes, backend_id: int) -> bytearray:
    """A statement command packet with the connection's own statement id in place of the client's."""
    out = bytearray(raw)
    out[5:9] = backend_id.to_bytes(4, "little")
    return out


class PreparedStatements:
    __slots__ = ("session", "stmts", "cursors", "classes", "preparing", "long_data_sent", "_next_id")

    def __init__(self, session: StatementOwner) -> None:
        self.session = session
        self.stmts: dict[int, Statement] = {}  # the client's prepared statements, by the proxy's ids
        self.cursors: dict[int, BackendConnection] = {}  # statement id -> connection with its open cursor
        # Without multiplexing: server statement id -> (classification, text), for the stats.
        self.classes: dict[int, tuple[Classification, str]] = {}
        self.preparing: tuple[Classification, str] | None = None  # a COM_STMT_PREPARE in flight (same case)
        self.long_data_sent = False  # the EXECUTE in flight carried long data (it cannot be sent again)
        self._next_id = 1

    def clear(self) -> None:
        """A new login or COM_RESET_CONNECTION: the server closed every statement."""
        self.stmts.clear()
        self.cursors.clear()
        self.classes.clear()
        self.preparing = None

    # ---- under multiplexing -------------------------------------------------------------------

    def command(self, cmd: int, pkt: Packet) -> None:
        """A COM_STMT_* command of a multiplexing session."""
        s, c = self.session, self.session.commands
        payload = pkt.payload
        if cmd == Command.STMT_PREPARE:
            sql = bytes(payload[1:]).decode("utf-8", "surrogateescape")
            cls, decision = s.router.route(sql, s.session_view())
            if cls.client_session and cls.kind is Kind.KILL:
                # Its parameter would be read by a server as one of its own thread ids.
                s.send_err(1, 1295, "This command is not supported in the prepared statement protocol yet (rwproxy: send KILL as a query; connection ids are the proxy's)", "HY000")
                return
            action = decision.action
            if type(action) is not RouteTo:
                msg = action.error_msg if type(action) is Deny else action.ok_msg
                s.send_err(1, getattr(action, "errno", 1148), msg, getattr(action, "sqlstate", "42000"))
                return
            sid = self._next_id
            self._next_id = sid % 0xFFFFFFFF + 1
            c.rewrite_id = sid.to_bytes(4, "little")
            c.run(action.hostgroup, pkt.raw, Reply.PREPARE, (Command.STMT_PREPARE, bytes(payload), sql, sid))
            return
        if len(payload) < 5:
            s.protocol_error(1, ProtocolError("Malformed communication packet (statement command too short)"))
            return
        sid = int.from_bytes(payload[1:5], "little")
        stmt = self.stmts.get(sid)
        if cmd == Command.STMT_CLOSE:
            self.stmts.pop(sid, None)
            conn = self.cursors.pop(sid, None)
            if conn is not None and stmt is not None:
                entry = conn.prepared.pop(stmt.key, None)
                if entry is not None:
                    conn.write(close_command(entry[0]))
                if s.multiplexing and not c.holds(conn):
                    s.lending.release(conn)
            return
        if stmt is None:
            if cmd != Command.STMT_SEND_LONG_DATA:  # that one never answers
                name = {_STMT_EXECUTE: "mysqld_stmt_execute", _STMT_FETCH: "mysqld_stmt_fetch"}.get(cmd, "mysqld_stmt_reset")
                s.send_err(1, ErrorCode.UNKNOWN_STMT_HANDLER, f"Unknown prepared statement handler ({sid}) given to {name}")
            return
        if cmd == Command.STMT_SEND_LONG_DATA:
            stmt.long_data.append(bytes(payload))
            return
        if cmd == Command.STMT_RESET:
            stmt.long_data.clear()
            conn = self.cursors.pop(sid, None)
            entry = conn.prepared.get(stmt.key) if conn is not None else None
            if entry is None:
                s.send(make_ok(OK(status=s.status), s.capabilities), 1)
                return
            s.busy, c.post = True, None
            c.start(conn, with_id(pkt.raw, entry[0]), Reply.SIMPLE)
            return
        if cmd == _STMT_FETCH:
            conn = self.cursors.get(sid)
            entry = conn.prepared.get(stmt.key) if conn is not None else None
            if entry is None:
                s.send_err(1, 1421, f"The statement ({sid}) has no open cursor.", "HY000")
                return
            s.busy, c.post = True, (_STMT_FETCH, sid)
            c.start(conn, with_id(pkt.raw, entry[0]), Reply.FETCH)
            return
        self._execute_command(s, stmt, sid, pkt)

    def _execute_command(self, s: StatementOwner, stmt: Statement, sid: int, pkt: Packet) -> None:
        """COM_STMT_EXECUTE: routed like its statement's text; prepared where it runs, if not yet."""
        payload = pkt.payload
        c = s.commands
        c.t0 = _monotonic_ns()
        if stmt.params:
            flag_at = 10 + (stmt.params + 7) // 8
            if len(payload) > flag_at and payload[flag_at] == 1:
                stmt.types = bytes(payload[flag_at + 1 : flag_at + 1 + 2 * stmt.params])
        cls, decision = s.router.route(stmt.sql, s.session_view())
        c.stat, c.rule_ids, c.current_sql = cls, decision.rule_ids, stmt.sql
        hg = decision.hostgroup if decision.hostgroup is not None else s.writer_hg
        s.busy = True
        c.post = (_STMT_EXECUTE, sid)
        if hg != s.writer_hg:  # a read for a reader hostgroup: must it see some write?
            reads = decision.reads
            if consulted(s.causal, cls.fingerprint.hints, reads):
                what, required, mode = choose(s, s.lending, hg, cls.fingerprint.hints, reads)
                if what == WRITER:
                    hg = s.writer_hg
                elif what == WAIT:
                    s.spawn(self._execute_slow(hg, stmt, pkt, (required, mode, reads)))
                    return
        conn = s.lending.conns.get(hg)
        if conn is None:
            conn = s.lending.try_acquire(hg)
        if conn is not None and s.state.matches(conn.cstate):
            entry = conn.prepared.get(stmt.key)
            if entry is not None:
                cs = conn.cstate
                cs.owner, cs.gen = s.state, s.state.gen
                self._execute(conn, stmt, entry, pkt)
                return
        s.spawn(self._execute_slow(hg, stmt, pkt))

    async def _execute_slow(self, hostgroup: int, stmt: Statement, pkt: Packet, wait: tuple | None = None) -> None:
        """`wait`: (position, mode, reads) when the read must first wait for a replica to apply a
        write (proxy.read_choice WAIT)."""
        s = self.session

        async def ready() -> tuple[BackendConnection, list]:
            if wait is None:
                conn = await s.lending.ready(hostgroup, read=s.commands.is_read())
            else:
                conn = await s.lending.ready_caught_up(hostgroup, wait[0], s.causal.timeout, wait[1])
                counted_wait(s, conn, wait[2])
            entry = conn.prepared.get(stmt.key)
            if entry is None:
                self.make_room(conn)
                timeout = s.host.config.connect_timeout
                try:
                    res = await asyncio.wait_for(conn.prepare(stmt.payload), timeout)
                except (asyncio.TimeoutError, ConnectionError) as e:
                    s.lending.discard(conn)
                    raise HostgroupError(hostgroup, f"rwproxy: backend {conn.server.address} failed while preparing a statement: {failure(e, timeout)}") from None
                if isinstance(res, ERR):
                    raise HostgroupError(hostgroup, res.message, res)
                entry = self.remember(conn, stmt.key, res[0])
            return conn, entry

        await s.commands.slow(ready(), lambda got: self._execute(got[0], stmt, got[1], pkt))

    def _execute(self, conn: BackendConnection, stmt: Statement, entry: list, pkt: Packet) -> None:
        backend_id = entry[0].to_bytes(4, "little")
        conn.prepared.move_to_end(stmt.key)
        for data in stmt.long_data:  # no replies: they ride just ahead of the EXECUTE
            conn.write(make_packet(data[:1] + backend_id + data[5:], 0))
        self.long_data_sent = bool(stmt.long_data)
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
            raw = with_id(pkt.raw, entry[0])
        self.session.commands.start(conn, raw, execute_reply(pkt.payload))

    def make_room(self, conn: BackendConnection) -> None:
        """Before a statement is prepared on `conn`: close its least recently used ones so that,
        with the new one, it keeps at most [pool] max_prepared_statements."""
        cache = conn.prepared
        limit = self.session.host.config.pool.max_prepared
        while len(cache) >= limit:
            _, (evicted, _) = cache.popitem(last=False)
            conn.write(close_command(evicted))

    def remember(self, conn: BackendConnection, key: tuple, backend_id: int) -> list:
        cache = conn.prepared
        old = cache.pop(key, None)
        if old is not None:
            conn.write(close_command(old[0]))
        entry = cache[key] = [backend_id, None]  # (make_room made room before the PREPARE)
        return entry

    def record(self, post: tuple, scanner: ResultScanner, conn: BackendConnection) -> None:
        """After the reply of a statement command (post: what the command was)."""
        first, ok = post[0], scanner.error is None
        if first == _STMT_EXECUTE or first == _STMT_FETCH:
            sid = post[1]
            if first == _STMT_EXECUTE and ok and scanner.status >= 0 and scanner.status & _CURSOR_EXISTS:
                self.cursors[sid] = conn
            elif first == _STMT_FETCH and (not ok or scanner.status & _LAST_ROW_SENT):
                self.cursors.pop(sid, None)
        elif ok:  # COM_STMT_PREPARE
            _, payload, sql, sid = post
            stmt = self.stmts[sid] = Statement(payload, sql, scanner.params, self.session.state.schema)
            self.remember(conn, stmt.key, scanner.stmt_id)

    # ---- without multiplexing: the stats' view of statements relayed unchanged ----------------

    def relayed(self, cmd: int, payload: bytes) -> tuple[Classification, str] | None:
        """A statement command relayed as it is: note what the stats need. For COM_STMT_EXECUTE,
        returns its statement's (classification, text) when the PREPARE was seen."""
        if cmd == _STMT_EXECUTE:
            return self.classes.get(int.from_bytes(payload[1:5], "little"))
        if cmd == Command.STMT_PREPARE:
            sql = bytes(payload[1:]).decode("utf-8", "surrogateescape")
            self.preparing = (classify_text(sql), sql)
        elif cmd == Command.STMT_CLOSE:
            if self.classes:
                self.classes.pop(int.from_bytes(payload[1:5], "little"), None)
        elif cmd == Command.RESET_CONNECTION:
            self.classes.clear()  # the server closes them all
        return None

    def prepared_reply(self, scanner: ResultScanner) -> None:
        """The reply of a relayed COM_STMT_PREPARE ended: map the statement it created."""
        preparing = self.preparing
        self.preparing = None
        if scanner.error is None and scanner.stmt_id:  # (0: not the PREPARE's reply; it never reached a server)
            self.classes[scanner.stmt_id] = preparing
