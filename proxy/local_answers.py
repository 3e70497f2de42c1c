"""Statements the proxy answers, in part or whole, from the client session's own values.

Theory of operation: under multiplexing a client's statements run on whichever pooled connection is
free, so a few things the server would answer from "its" connection must come from the client
session instead:
- `session_values(sql, session)`: CONNECTION_ID(), ROW_COUNT() and LAST_INSERT_ID() in a statement's
  text (outside quoted strings and identifiers) become the session's own values, as literals typed as
  the server types the functions (or stay calls where the connection that made the value is still
  the session's). The rewritten text is what runs and what is classified.
- KILL [CONNECTION | QUERY] <id>: the id is the proxy's connection id (the one the handshake
  announced and CONNECTION_ID() returns). The target's running statement is killed on its backend
  over a short-lived connection of our own; KILL CONNECTION then closes the target session. Only
  the owner (same user) may kill a session, as MySQL's ER_KILL_DENIED_ERROR says.

Errors are the server's own codes (1094 unknown thread, 1095 not owner, 1064 syntax). Nothing here
routes statements or touches a connection another session is using, other than to kill its query.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Protocol

from . import backend as backend_mod
from .backend import BackendConnection, BackendError
from .causal import CausalReads
from .interfaces import SessionCore
from .lending import BackendLending
from .protocol.constants import ErrorCode
from .protocol.constants import BINARY_COLLATION, UTF8MB4_COLLATION, ColumnFlag, ColumnType
from .protocol.packets import OK, ColumnDefinition, column_definitions, make_ok, make_result_set
from .session import charset_width, server_collation


class _Answers(Protocol):
    """The command loop, as far as local answers go (proxy.command_loop.CommandLoop)."""

    row_count: int
    insert_id: int

    def answered_here(self) -> None: ...
    def query_text(self, sql: str) -> None: ...


class Answerer(SessionCore, Protocol):
    """A session answering KILL or its own function values (proxy.client.ClientSession); also the
    target of a KILL."""

    logged_in: bool
    causal: CausalReads
    peer: str
    last_activity: float
    clock: Callable[[], float]
    lending: BackendLending
    commands: _Answers

    @property
    def current(self) -> BackendConnection | None: ...
    @property
    def current_sql(self) -> str | None: ...

# Functions whose value belongs to the client session, not to whichever connection runs the statement.
SESSION_VALUE = re.compile(r"\b(CONNECTION_ID|ROW_COUNT|LAST_INSERT_ID)\s*\(\s*\)|@@(?:session\.)?(last_gtid)\b", re.I)
_KILL_TARGET = re.compile(r"\s*KILL\s+(?:(CONNECTION|QUERY)\s+)?(\d+)\s*(?:;(.*))?$", re.I | re.S)
_KILL_QUERY_ID = re.compile(r"\s*KILL\s+(?:HARD\s+|SOFT\s+)?QUERY\s+ID\s+(\d+)\s*;?\s*$", re.I)
_QUOTED = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|`(?:[^`]|``)*`", re.S)


def session_values(sql: str, session: Answerer, only_connection_id: bool = False) -> str:
    """`sql` with the session's own values of CONNECTION_ID() / ROW_COUNT() / LAST_INSERT_ID()
    (the same string when there is nothing to change). `only_connection_id`: a session that runs
    everything on one server connection (passthrough), or a multi-statement (whose ROW_COUNT()
    follows its own statements), needs only the connection id replaced. A call that is a whole
    select item without an alias keeps its column name (AS `ROW_COUNT()`, as written)."""

    def value(name: str, call: str) -> str | None:
        if name == "CONNECTION_ID":
            # The server's own CONNECTION_ID() is its connection's (under multiplexing it changes from
            # one statement to the next): the client's connection id is the proxy's, the one its
            # handshake announced and KILL and SHOW PROCESSLIST use.
            return f"CAST({session.id:010d} AS UNSIGNED)"
        if only_connection_id:
            return None
        if name == "LAST_GTID":
            # The GTID of the session's own last write (the token to present elsewhere: proxy.causal);
            # a pooled connection's @@last_gtid is somebody else's.
            return "'" + session.causal.last_gtid() + "'"
        if name == "ROW_COUNT":
            # What the session's previous statement affected, wherever it ran (from its OK packet;
            # -1 after a result set or an error, as the server says).
            return _typed(session.commands.row_count, signed=True)
        if session.writer_hg in session.lending.conns:
            return None  # the connection that made the value is still the session's: ask it
        # The writer connection of the insert has gone back to its pool (the session moved on, or
        # sat idle past [pool] last_insert_id_hold): the value from that insert's OK packet.
        return _typed(session.commands.insert_id, signed=False)

    masked = _QUOTED.sub(lambda m: " " * len(m.group()), sql)  # strings and quoted names hide nothing
    out, pos = [], 0
    for m in SESSION_VALUE.finditer(masked):
        literal = value((m.group(1) or m.group(2)).upper(), m.group())
        if literal is None:
            continue
        call = sql[m.start() : m.end()]
        if _whole_select_item(masked, m.start(), m.end()):
            literal += " AS `" + call.replace("`", "``") + "`"
        out.append(sql[pos : m.start()])
        out.append(literal)
        pos = m.end()
    if not out:
        return sql
    out.append(sql[pos:])
    return "".join(out)


def _typed(value: int, signed: bool) -> str:
    """A literal the server types as it types ROW_COUNT() / LAST_INSERT_ID(): BIGINT, 21 wide (so a
    driver reads the same column type, length and flags). MariaDB sizes a cast integer literal by
    its digits: zero-padded to 21 characters, sign included."""
    if value < 0:
        return f"CAST(-{-value:020d} AS SIGNED)"
    if signed:
        return f"CAST({value:022d} AS SIGNED)"
    return f"CAST({value:021d} AS UNSIGNED)"


_ITEM_BEFORE = re.compile(r"(?:\bSELECT(?:\s+(?:ALL|DISTINCT|DISTINCTROW|HIGH_PRIORITY|STRAIGHT_JOIN|SQL_\w+))*|,)\s*$", re.I)
_ITEM_AFTER = re.compile(r"\s*(?:,|;|\)|$|(?:FROM|INTO|WHERE|GROUP|HAVING|ORDER|LIMIT|UNION|FOR|LOCK|WINDOW)\b)", re.I)


def _whole_select_item(masked: str, start: int, end: int) -> bool:
    """Is masked[start:end] a whole item of a SELECT list, without an alias, at the top level of its
    statement (so that the server names the column after its text)?"""
    head = masked[:start]
    if head.count("(") != head.count(")"):
        return False  # inside an expression or a function's arguments
    tail = _ITEM_AFTER.match(masked, end)
    return tail is not None and not tail.group().strip().startswith(")") and _ITEM_BEFORE.search(head) is not None


_SHOW_COUNT = re.compile(r"SHOW COUNT\(\*\) ?(WARNINGS|ERRORS)$")
_SHOW_LIST = re.compile(r"SHOW (WARNINGS|ERRORS)\b")


def no_diagnostics(session: Answerer, ftext: str) -> bool:
    """SHOW WARNINGS / SHOW ERRORS / SHOW COUNT(*) ... when the session's previous statement left no
    warnings (no connection holds any for it): the server's answer, made here with MariaDB's column
    definitions. False for any other SHOW (normalized text `ftext`)."""
    m = _SHOW_COUNT.match(ftext)
    if m is not None:
        name = "@@session.warning_count" if m.group(1) == "WARNINGS" else "@@session.error_count"
        columns = [ColumnDefinition(name, ColumnType.LONGLONG, BINARY_COLLATION, 21, ColumnFlag.BINARY | ColumnFlag.UNSIGNED)]
        rows: list[tuple] = [(0,)]
    elif _SHOW_LIST.match(ftext):
        collation = server_collation(session.collation or UTF8MB4_COLLATION)
        width = charset_width(collation)
        columns = [
            ColumnDefinition("Level", ColumnType.VAR_STRING, collation, 7 * width, ColumnFlag.NOT_NULL, 39),
            ColumnDefinition("Code", ColumnType.LONG, BINARY_COLLATION, 4, ColumnFlag.NOT_NULL | ColumnFlag.UNSIGNED | ColumnFlag.BINARY, 0),
            ColumnDefinition("Message", ColumnType.VAR_STRING, collation, 512 * width, ColumnFlag.NOT_NULL, 39),
        ]
        rows = []
    else:
        return False
    for seq, payload in enumerate(make_result_set(columns, rows, session.capabilities, session.status), start=1):
        session.send(payload, seq & 0xFF)
    return True


_PROCESSLIST_COLUMNS = ("Id", "User", "Host", "db", "Command", "Time", "State", "Info", "Progress")


def processlist(session: Answerer, full: bool) -> None:
    """SHOW [FULL] PROCESSLIST through the data port: the proxy's client sessions of this user, by
    the ids CONNECTION_ID() and KILL use (as a server without the PROCESS privilege lists its user's
    threads). Info is the statement in flight, its first 100 characters without FULL."""
    rows = []
    now = session.clock()
    for other in list(session.host.sessions.values()):
        if not other.logged_in or other.username != session.username:
            continue
        busy = other.busy or other is session  # (the asking session is running this very statement)
        sql = other.current_sql if busy else None
        if sql is not None and not full:
            sql = sql[:100]
        rows.append((
            other.id, other.username, other.peer, other.state.schema, "Query" if busy else "Sleep",
            int(now - other.last_activity), "", sql, "0.000",
        ))  # fmt: skip
    rows.sort()
    columns = column_definitions(_PROCESSLIST_COLUMNS, rows)
    payloads = make_result_set(columns, rows, session.capabilities, session.status)
    for seq, payload in enumerate(payloads, start=1):
        session.send(payload, seq & 0xFF)


def set_min_gtid(session: Answerer, targets: tuple) -> None:
    """SET rwproxy_min_gtid = 'D-S-N[,...]': the position the session's reads must see from now on
    (a token from another connection or proxy, e.g. @@last_gtid of a previous request); '' clears it."""
    for t in targets:
        if t.name.lower() == "rwproxy_min_gtid":
            value = (t.value or "").strip().strip("'\"")
            if t.value is None or not session.causal.set_token(value):
                session.send_err(1, 1231, f"Variable 'rwproxy_min_gtid' can't be set to the value of '{value}' (give MariaDB GTIDs, domain-server-sequence, comma-separated)", "42000")
                return
    session.send(make_ok(OK(status=session.status), session.capabilities), 1)


def kill(session: Answerer, sql: str) -> None:
    """KILL [CONNECTION | QUERY] <proxy connection id>: refused at once, or killed in a task (the
    session stays busy until the answer is sent). A multi-statement that starts with the KILL
    (`KILL 12; SELECT SLEEP(0.05)`) has the rest run after it, as `DO 0; <rest>`: the same reply
    shape (an OK, then the rest's results) without sending the server an id it would misread."""
    m = _KILL_TARGET.match(sql)
    if m is None:
        qid = _KILL_QUERY_ID.match(sql)
        if qid is not None:  # MariaDB's KILL QUERY ID: a server's query ids mean nothing through a proxy
            session.send_err(1, 1957, f"Unknown query id: {qid.group(1)}", "HY000")
            return
        session.send_err(1, 1064, "rwproxy: KILL takes [CONNECTION | QUERY] and a connection id as CONNECTION_ID() returns it", "42000")
        return
    query_only = (m.group(1) or "").upper() == "QUERY"
    rest = (m.group(3) or "").strip()
    target = session.host.sessions.get(int(m.group(2)))
    if target is None or not target.logged_in:
        session.send_err(1, 1094, f"Unknown thread id: {m.group(2)}", "HY000")
        return
    if target.username != session.username:
        session.send_err(1, 1095, f"You are not owner of thread {m.group(2)}", "HY000")
        return
    session.busy = True
    session.spawn(_kill_slow(session, target, query_only, rest))


async def _kill_slow(session: Answerer, target: Answerer, query_only: bool, rest: str) -> None:
    """Kill the statement the target runs (on its backend, over a short-lived connection of our
    own), then for KILL CONNECTION close the target. Its client sees what the server says: ERR 1317
    for an interrupted query, a closed connection for a killed one."""
    conn = target.current
    err = None
    if conn is not None and not conn.closed:
        user = session.user
        try:
            secret = session.host.backend_secret(conn.server, user.backend_username, user.backend_password)
            err = await backend_mod.kill_query(conn.server, user.backend_username, secret, conn.thread_id, timeout=session.host.config.connect_timeout)
        except BackendError as e:
            session.send_err(1, ErrorCode.HOSTGROUP_UNREACHABLE, f"rwproxy: could not reach {conn.server.address} to kill the statement: {e.cause}")
            session.commands.answered_here()
            session.free()
            return
    session.commands.answered_here()
    if err is not None:
        session.send_err(1, err.code, err.message, err.sqlstate)
        session.free()
        return
    session.log(logging.INFO, "KILL %s session=%d", "QUERY" if query_only else "CONNECTION", target.id)
    if not query_only and target is session:
        session.send(make_ok(OK(status=session.status), session.capabilities), 1)
        session.close()
        return
    if not query_only:
        target.close()
    if rest:
        session.commands.query_text("DO 0; " + rest)  # the session stays busy until its reply ends
        return
    session.send(make_ok(OK(status=session.status), session.capabilities), 1)
    session.free()
