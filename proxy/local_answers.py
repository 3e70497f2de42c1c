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
from .interfaces import SessionCore
from .lending import BackendLending
from .protocol.constants import ErrorCode
from .protocol.packets import OK, make_ok


class _Answers(Protocol):
    """The command loop, as far as local answers go (proxy.command_loop.CommandLoop)."""

    row_count: int
    insert_id: int

    def answered_here(self) -> None: ...


class Answerer(SessionCore, Protocol):
    """A session answering KILL or its own function values (proxy.client.ClientSession); also the
    target of a KILL."""

    logged_in: bool
    lending: BackendLending
    commands: _Answers

    @property
    def current(self) -> BackendConnection | None: ...

# Functions whose value belongs to the client session, not to whichever connection runs the statement.
SESSION_VALUE = re.compile(r"\b(CONNECTION_ID|ROW_COUNT|LAST_INSERT_ID)\s*\(\s*\)", re.I)
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


def session_values(sql: str, session: Answerer) -> str:
    """`sql` with the session's own values of CONNECTION_ID() / ROW_COUNT() / LAST_INSERT_ID()
    (call only when SESSION_VALUE matched somewhere in it)."""

    def value(m: re.Match) -> str:
        name = m.group(1).upper()
        if name == "CONNECTION_ID":
            # Under multiplexing the server's own CONNECTION_ID() changes from one statement to the
            # next: the client's connection id is the proxy's (the one its handshake announced).
            return f"CAST({session.id:010d} AS UNSIGNED)"
        if name == "ROW_COUNT":
            # What the session's previous statement affected, wherever it ran (from its OK packet;
            # -1 after a result set or an error, as the server says).
            return f"CAST({session.commands.row_count} AS SIGNED)"
        if session.writer_hg in session.lending.conns:
            return m.group(0)  # the connection that made the value is still the session's: ask it
        # The writer connection of the insert has gone back to its pool (the session moved on, or
        # sat idle past [pool] last_insert_id_hold): the value from that insert's OK packet.
        return f"CAST({session.commands.insert_id} AS UNSIGNED)"

    return _outside_strings(sql, lambda part: SESSION_VALUE.sub(value, part))


def kill(session: Answerer, sql: str) -> None:
    """KILL [CONNECTION | QUERY] <proxy connection id>: refused at once, or killed in a task (the
    session stays busy until the answer is sent)."""
    m = _KILL_TARGET.match(sql)
    if m is None:
        session.send_err(1, 1064, "rwproxy: KILL takes [CONNECTION | QUERY] and a connection id as CONNECTION_ID() returns it", "42000")
        return
    query_only = (m.group(1) or "").upper() == "QUERY"
    target = session.host.sessions.get(int(m.group(2)))
    if target is None or not target.logged_in:
        session.send_err(1, 1094, f"Unknown thread id: {m.group(2)}", "HY000")
        return
    if target.username != session.username:
        session.send_err(1, 1095, f"You are not owner of thread {m.group(2)}", "HY000")
        return
    session.busy = True
    session.spawn(_kill_slow(session, target, query_only))


async def _kill_slow(session: Answerer, target: Answerer, query_only: bool) -> None:
    """Kill the statement the target runs (on its backend, over a short-lived connection of our
    own), then for KILL CONNECTION close the target. Its client sees what the server says: ERR 1317
    for an interrupted query, a closed connection for a killed one."""
    conn = target.current
    err = None
    if conn is not None and not conn.closed:
        user = session.user
        try:
            err = await backend_mod.kill_query(
                conn.server, user.backend_username, user.backend_password, conn.thread_id, timeout=session.host.config.connect_timeout
            )
        except BackendError as e:
            session.send_err(1, ErrorCode.HOSTGROUP_UNREACHABLE, f"rwproxy: could not reach {conn.server.address} to kill the statement: {e.cause}")
            session.commands.answered_here()
            session.free()
            return
    session.commands.answered_here()
    if err is not None:
        session.send_err(1, err.code, err.message, err.sqlstate)
    else:
        session.log(logging.INFO, "KILL %s session=%d", "QUERY" if query_only else "CONNECTION", target.id)
        if not query_only and target is not session:
            target.close()
        session.send(make_ok(OK(status=session.status), session.capabilities), 1)
        if not query_only and target is session:
            session.close()
            return
    session.free()
