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

import enum
from dataclasses import dataclass, field

from pymysql import charset as pymysql_charset

from rules.classify import SetScope, SetTarget
from rules.engine import is_tracked_variable

from .protocol.constants import Command


class PinReason(enum.Enum):
    """Why a session keeps its writer connection instead of giving it back after each statement.

    (An open transaction also holds its connection; that is read from the server's status flags
    and ends with the transaction, so it is not listed here.)
    """

    TEMP_TABLE = "temporary table"
    LOCK_TABLES = "LOCK TABLES"
    GET_LOCK = "GET_LOCK"
    USER_VARIABLE = "user variable"
    CALC_FOUND_ROWS = "SQL_CALC_FOUND_ROWS"
    UNTRACKABLE_SET = "untrackable SET"
    # The server's session tracking said state changed where the statement's text does not show it
    # (a procedure, a function or a trigger set a user variable, created a temporary table...).
    SERVER_STATE = "state changed inside a statement (server session tracking)"
    PREPARED_STATEMENT = "prepared statement"
    MULTI_STATEMENT = "multi-statement"
    OTHER = "other"


def pin_reasons_of(cls) -> set[PinReason]:  # cls: rules.classify.Classification
    """The pin reasons one classified statement gives its session (empty for most statements)."""
    if cls.read_only:
        return set()
    out = set()
    if cls.temp_table == "CREATE":
        out.add(PinReason.TEMP_TABLE)
    if cls.kind.name == "LOCK_TABLES":
        out.add(PinReason.LOCK_TABLES)
    if "GET_LOCK" in cls.session_functions:
        out.add(PinReason.GET_LOCK)
    if cls.assigns_user_vars:
        out.add(PinReason.USER_VARIABLE)
    if cls.calc_found_rows:
        out.add(PinReason.CALC_FOUND_ROWS)
    if cls.kind.name == "PREPARE":
        out.add(PinReason.PREPARED_STATEMENT)
    if cls.multi_statement:
        out.add(PinReason.MULTI_STATEMENT)
    return out


# What the proxy turns on on every backend connection that negotiated CLIENT_SESSION_TRACK (and
# again after each reset): the server then flags every change of session state in its OK/EOF.
TRACKING_ASSIGNMENT = "session_track_state_change=ON"
TRACKING_COMMAND = b"\x03SET " + TRACKING_ASSIGNMENT.encode()

_CHARSET_KEY = "\0charset"  # SET NAMES / SET CHARACTER SET: one slot, the last one wins
_TXN_PREFIX = "\0txn:"


_MAXLEN = {"utf8mb4": 4, "utf8mb3": 3, "utf8": 3, "ucs2": 2, "utf16": 4, "utf16le": 4, "utf32": 4, "big5": 2, "gbk": 2,
           "gb2312": 2, "sjis": 2, "cp932": 2, "ujis": 3, "eucjpms": 3, "euckr": 2}


def charset_width(collation_id: int) -> int:
    """Bytes per character at most in a collation's character set (a column's length is counted in them)."""
    try:
        return _MAXLEN.get(pymysql_charset.charset_by_id(collation_id).name, 1)
    except KeyError:
        return 4


def charset_entry(collation_id: int) -> str | None:
    """The replay text that restores a connection collation given by id at login, or None if unknown."""
    try:
        cs = pymysql_charset.charset_by_id(collation_id)
    except KeyError:
        return None
    return f"NAMES {cs.name} COLLATE {cs.collation}"


@dataclass(slots=True)
class ConnState:
    """What one backend connection currently has (kept on the connection).

    A pooled connection moves between sessions: `owner` and `gen` say which session last brought it
    up to date and at which of its generations, so the per-statement check is two compares; any
    other owner means a full comparison (and a replay of the differences).
    """

    schema: str | None = None
    values: dict[str, str] = field(default_factory=dict)
    gen: int = -1  # SessionState.gen this connection was last brought up to
    owner: object = None  # the SessionState that did it
    login_charset: str | None = None  # charset_entry() of the collation it logged in with
    tracking: bool = False  # session tracking is on (TRACKING_ASSIGNMENT sent), or not available


class SessionState:
    __slots__ = ("schema", "values", "gen", "login_charset")

    def __init__(self, schema: str | None, login_charset: str | None = None) -> None:
        self.schema = schema
        self.values: dict[str, str] = {}  # key -> replay text (an assignment or a statement)
        self.gen = 0
        # The client's handshake collation, replayed on connections that logged in with another.
        self.login_charset = login_charset

    def set_schema(self, schema: str | None) -> None:
        if schema != self.schema:
            self.schema = schema
            self.gen += 1

    def reset(self) -> None:
        """COM_RESET_CONNECTION: variables back to the server defaults; the schema stays."""
        self.values.clear()
        self.gen += 1

    def matches(self, conn: ConnState) -> bool:
        """Does `conn` carry exactly this state? (Cheap when this session synced it last.)"""
        if not conn.tracking:
            return False
        if conn.owner is self:
            return conn.gen == self.gen
        return conn.schema == self.schema and conn.values == self.values and conn.login_charset == self.login_charset

    def needs_reset(self, conn: ConnState) -> bool:
        """A connection carrying state that only COM_RESET_CONNECTION can undo for this session."""
        return any(k.startswith(_TXN_PREFIX) and k not in self.values for k in conn.values) or (
            _CHARSET_KEY in conn.values and _CHARSET_KEY not in self.values and self.login_charset is None
        )

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
        assigns = [] if conn.tracking else [TRACKING_ASSIGNMENT]
        # What a previous user of this connection set and this session did not: back to defaults.
        for key in conn.values:
            if key not in self.values and not key.startswith(_TXN_PREFIX) and key != _CHARSET_KEY:
                assigns.append(f"{key}=DEFAULT")
        mine = self.values
        if _CHARSET_KEY not in mine and self.login_charset is not None:
            # The session's charset is the one its client logged in with.
            mine = {_CHARSET_KEY: self.login_charset, **mine}
        theirs = conn.values
        if _CHARSET_KEY not in theirs and conn.login_charset is not None:
            theirs = {_CHARSET_KEY: conn.login_charset, **theirs}
        for key, text in mine.items():
            if theirs.get(key) == text:
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
        conn.owner = self
        conn.login_charset = self.login_charset


def _transaction_statement(t: SetTarget) -> str | None:
    name = t.name.lower()
    value = (t.value or "").strip("'\"").upper()
    if name in ("transaction_isolation", "tx_isolation"):
        return "SESSION TRANSACTION ISOLATION LEVEL " + value.replace("-", " ")
    if name in ("transaction_read_only", "tx_read_only"):
        return "SESSION TRANSACTION " + ("READ ONLY" if value in ("1", "ON", "TRUE") else "READ WRITE")
    return None
