"""Session state: what the client has set, and how to make a backend connection match it.

Theory of operation: a client session may run its statements on several backend connections (the
writer, a reader). Whatever the client set — default schema, character set, autocommit, sql_mode,
time_zone, isolation level and the other common session variables — must hold on whichever of them
runs its next statement. SessionState records it from the client's own SETs (classified by
rules.classify, applied only once the server said OK), and `replay_for(conn_state)` returns the
commands that bring a connection up to date: only the differences, pipelined so the whole replay
costs one round trip. Each change bumps `gen`, so the per-statement check is one integer compare.

A SET the proxy cannot replay faithfully (user variables, expressions, variables it does not know)
is not an error: `apply` reports it and the caller pins the session to the writer, where the SET
actually ran. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rules.classify import SetScope, SetTarget
from rules.engine import is_tracked_variable

from .protocol.constants import Command

_CHARSET_KEY = "\0charset"  # SET NAMES / SET CHARACTER SET: one slot, the last one wins
_TXN_PREFIX = "\0txn:"


@dataclass(slots=True)
class ConnState:
    """What one backend connection currently has (kept on the connection)."""

    schema: str | None = None
    values: dict[str, str] = field(default_factory=dict)
    gen: int = -1  # SessionState.gen this connection was last brought up to


class SessionState:
    __slots__ = ("schema", "values", "gen")

    def __init__(self, schema: str | None) -> None:
        self.schema = schema
        self.values: dict[str, str] = {}  # key -> replay text (an assignment or a statement)
        self.gen = 0

    def set_schema(self, schema: str | None) -> None:
        if schema != self.schema:
            self.schema = schema
            self.gen += 1

    def reset(self) -> None:
        """COM_RESET_CONNECTION: variables back to the server defaults; the schema stays."""
        self.values.clear()
        self.gen += 1

    def apply(self, targets: tuple[SetTarget, ...]) -> bool:
        """Record a successful SET. False if any part of it cannot be replayed elsewhere."""
        trackable = True
        for t in targets:
            scope = t.scope
            if scope is SetScope.GLOBAL:
                continue  # not session state; it ran where it ran
            if scope is SetScope.USER or t.value is None:
                trackable = False
                continue
            if scope is SetScope.NAMES:
                text = f"NAMES {t.name}" + (f" COLLATE {t.collation}" if t.collation else "")
                self._put(_CHARSET_KEY, text)
            elif scope is SetScope.CHARSET:
                self._put(_CHARSET_KEY, f"CHARACTER SET {t.name}")
            elif scope is SetScope.TRANSACTION:
                statement = _transaction_statement(t)
                if statement is None:
                    continue  # one-shot (next transaction only): it runs where the SET ran
                self._put(_TXN_PREFIX + t.name, statement)
            else:
                name = t.name.lower()
                if not is_tracked_variable(name):
                    trackable = False
                    continue
                self._put(name, f"{name}={t.value}")
        return trackable

    def _put(self, key: str, text: str) -> None:
        if self.values.get(key) != text:
            self.values.pop(key, None)  # re-insert: replay keeps the client's order
            self.values[key] = text
            self.gen += 1

    def replay_for(self, conn: ConnState) -> list[bytes]:
        """Command payloads that bring `conn` to this state (empty if it is already there)."""
        cmds: list[bytes] = []
        if self.schema is not None and conn.schema != self.schema:
            cmds.append(bytes((Command.INIT_DB,)) + self.schema.encode("utf-8", "surrogateescape"))
        assigns = []
        for key, text in self.values.items():
            if conn.values.get(key) == text:
                continue
            if key.startswith(_TXN_PREFIX):
                cmds.append(bytes((Command.QUERY,)) + b"SET " + text.encode())
            else:
                assigns.append(text)
        if assigns:
            cmds.append(bytes((Command.QUERY,)) + ("SET " + ", ".join(assigns)).encode("utf-8", "surrogateescape"))
        return cmds

    def mark_synced(self, conn: ConnState) -> None:
        conn.schema = self.schema
        conn.values = dict(self.values)
        conn.gen = self.gen


def _transaction_statement(t: SetTarget) -> str | None:
    name = t.name.lower()
    value = (t.value or "").strip("'\"").upper()
    if name in ("transaction_isolation", "tx_isolation"):
        return "SESSION TRANSACTION ISOLATION LEVEL " + value.replace("-", " ")
    if name in ("transaction_read_only", "tx_read_only"):
        return "SESSION TRANSACTION " + ("READ ONLY" if value in ("1", "ON", "TRUE") else "READ WRITE")
    return None
