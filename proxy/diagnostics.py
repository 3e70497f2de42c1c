"""Where a session's diagnostics (warnings, the last error) are, and GET DIAGNOSTICS into user
variables when they are on a reader.

Theory of operation: SHOW WARNINGS, SHOW COUNT(*) ..., @@warning_count and GET DIAGNOSTICS read the
list the server keeps per connection, so they must run on the connection that ran the session's
last statement that left warnings or an error (`Holder.diag_conn`, kept by `after_reply`). As on the
server, the list survives statements that use no table (`SELECT 1`, SET, a command other than a
statement) and is cleared by the session's next statement that uses one: the connection is let go
then, back to its pool as it is (SHOW WARNINGS without a held connection is answered by the proxy:
nothing to show, and no client reads another's list). The hold is for convenience only: it is
registered in the pool's `weak` map, and a session waiting for a connection of a full pool takes it
back (`give_up`; the warnings are then gone, as when a server closes a connection), so warnings
never starve a pool.

The diagnostics statements may thus run on a reader. But a session's
user variables live on its writer (a user variable pins the session there): `GET DIAGNOSTICS @n =
NUMBER` run on the reader would set @n where the session's next `SELECT @n` never looks. So the
statement runs on the reader as the proxy's own query, the proxy reads the values back there
(`SELECT @n, ...`: a statement that uses no table leaves the diagnostics as they were), and the
client's statement becomes `SET @n = <value>, ...` on the writer, whose OK the client receives.
An ERR from the reader (a condition number out of range...) is the client's answer instead.

The values keep their types: the items NUMBER and MYSQL_ERRNO are unsigned integers, ROW_COUNT a
signed one, every other item text (as the server makes them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .backend import BackendConnection
from .protocol.packets import ERR

if TYPE_CHECKING:
    from rules.classify import Classification

    from .interfaces import SessionCore
    from .lending import BackendLending
    from .protocol.results import ResultScanner


class Holder(Protocol):
    """The command loop of a session (proxy.command_loop.CommandLoop)."""

    session: SessionCore
    lending: BackendLending
    diag_conn: BackendConnection | None  # the connection holding the session's diagnostics
    current: BackendConnection | None  # the connection running the session's command, if any
    give_up_diagnostics: Callable[[BackendConnection], bool]  # give_up bound to this loop, made once

    def holds(self, conn: BackendConnection) -> bool: ...


def after_reply(loop: Holder, scanner: ResultScanner, conn: BackendConnection, stat: Classification | None) -> None:
    """After a reply on `conn` to `stat` (None: a command other than a statement): keep, move or
    let go the connection that holds the session's diagnostics."""
    diag = loop.diag_conn
    if scanner.warnings or scanner.error is not None:
        loop.diag_conn = conn
    elif not (stat is None or stat.diagnostics or not (stat.tables_read or stat.tables_written)):
        loop.diag_conn = None
    if not loop.session.multiplexing:
        return
    if diag is not None and diag is not loop.diag_conn and not diag.closed and not loop.holds(diag):
        loop.lending.release(diag)
    held = loop.diag_conn
    pool = None if held is None else getattr(held, "pool", None)
    if pool is not None:
        if pool.waiting:
            loop.diag_conn = None  # (`conn` itself goes back with the reply's end)
            if held is not conn and not loop.holds(held):
                loop.lending.release(held)
        else:
            pool.weak[held] = loop.give_up_diagnostics


def give_up(loop: Holder, conn: BackendConnection) -> bool:
    """Pool.weak: give back the connection kept for the diagnostics, unless something else keeps
    it or it is running a command."""
    if conn is not loop.diag_conn or loop.current is conn or loop.session.closed:
        return False
    loop.diag_conn = None
    if loop.holds(conn):
        loop.diag_conn = conn
        return False
    loop.lending.release(conn)
    return True

_ASSIGNMENT = re.compile(r"(@(?:`(?:``|[^`])+`|[A-Za-z0-9_$.]+))\s*=\s*([A-Za-z_]+)")
_UNSIGNED_ITEMS = frozenset(("NUMBER", "MYSQL_ERRNO"))


def targets(sql: str) -> list[tuple[str, str]]:
    """The (user variable, item) pairs a GET DIAGNOSTICS statement assigns, in order."""
    return [(var, item.upper()) for var, item in _ASSIGNMENT.findall(sql)]


def _literal(value: bytes | None, item: str) -> str:
    if value is None:
        return "NULL"
    if item in _UNSIGNED_ITEMS and value.isdigit():
        return f"CAST({value.decode()} AS UNSIGNED)"
    if item == "ROW_COUNT" and value.lstrip(b"-").isdigit():
        return value.decode()
    return f"CONVERT(X'{value.hex()}' USING utf8)"


async def assignment_on_writer(diag: BackendConnection, sql: str) -> str | ERR:
    """Run the client's GET DIAGNOSTICS `sql` on `diag` (the connection holding the diagnostics)
    and return the SET that gives the writer the same user variables, or the server's ERR."""
    pairs = targets(sql)
    got = await diag.query_rows(sql)
    if isinstance(got, ERR):
        return got
    rows = await diag.query_rows("SELECT " + ", ".join(var for var, _ in pairs))
    if isinstance(rows, ERR):
        return rows
    values = rows[0] if rows else [None] * len(pairs)
    return "SET " + ", ".join(f"{var} = {_literal(v, item)}" for (var, item), v in zip(pairs, values))
