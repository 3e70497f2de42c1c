"""GET DIAGNOSTICS into user variables when the diagnostics are on a reader.

Theory of operation: the diagnostics statements run where the session's previous statement left
its warnings (proxy.command_loop holds that connection), which may be a reader. But a session's
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

from .backend import BackendConnection
from .protocol.packets import ERR

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
