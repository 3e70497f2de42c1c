"""Session state: what the client has set, and how to make a backend connection match it.

Theory of operation: a client session may run its statements on several backend connections (the
writer, a reader). Whatever the client set — default schema, character set, autocommit, sql_mode,
time_zone, isolation level and the other common session variables — must hold on whichever of them
runs its next statement. SessionState records it from the client's own SETs (classified by
rules.classify, applied only once the server said OK), and `replay_for(conn_state)` returns the
commands that bring a connection up to date: only the differences, pipelined so the whole replay
costs one round trip. Each change bumps `gen`, so the per-statement check is one integer compare.

The server's session tracking is the ground truth (proxy.tracking reads it): a tracked variable set
by an expression is replayed as the value the server reported it computed, and the schema the
server reports is the session's and the connection's. A SET the proxy cannot replay faithfully
(user variables, an expression the server did not report, variables it does not know) is not an
error: `apply` reports it and the caller pins the session to the writer, where the SET actually ran.

A ConnState's `values` are relative to what its login gave the connection: the character sets the
server chose for the handshake's collation (learned from the server: proxy.lending.opened_state),
what the client's capabilities set (IGNORE_SPACE, the interactive wait_timeout: `login_values`), the
schema's collation. COM_RESET_CONNECTION and COM_CHANGE_USER drop those and the proxy's own session
tracking; the connection's `setup` (made before first use and after every reset) puts them back, and
a variable another session set goes back to its login value, not its global DEFAULT. What the
client's own session tracking selects (`tracking`, a TrackingMask) decides what state information it
sees. Nothing here does I/O.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace

from pymysql import charset as pymysql_charset

from rules.classify import SetScope, SetTarget
from rules.engine import TRACKED_VARIABLES, is_tracked_variable

from .protocol.constants import Capability, Command
from .protocol.packets import DEFAULT_TRACKING, TrackingMask


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


# The variables whose changes the proxy asks every backend connection to report
# (session_track_system_variables): those it replays, minus the ones the server flavor does not
# know (MariaDB refuses the list with ER_UNKNOWN_SYSTEM_VARIABLE if one is unknown).
_MYSQL_ONLY = frozenset(("max_execution_time", "transaction_isolation", "transaction_read_only"))
_MARIADB_ONLY = frozenset(("max_statement_time", "tx_isolation", "tx_read_only"))


# What a session's write committed as (MariaDB; proxy.causal): reported, never replayed.
GTID_VARIABLE = "last_gtid"


def tracking_assignment(mariadb: bool) -> str:
    """The SET assignments that make a backend connection report, in every OK, its schema, the
    replayed variables, any other state change (the server's word is the proxy's ground truth) and,
    on MariaDB, the GTID of the session's last write (consistent reads)."""
    names = TRACKED_VARIABLES - (_MYSQL_ONLY if mariadb else _MARIADB_ONLY)
    names = ",".join(sorted(names | {GTID_VARIABLE} if mariadb else names))
    return f"session_track_schema=ON, session_track_state_change=ON, session_track_system_variables='{names}'"


def login_values(capabilities: int) -> dict[str, str]:
    """The variables a login with these client capabilities sets to other than their global value,
    each with the assignment that gives it that login value again. COM_RESET_CONNECTION and
    COM_CHANGE_USER set them to the global value (MariaDB), and so does `SET x=DEFAULT`:
    CLIENT_IGNORE_SPACE adds IGNORE_SPACE to sql_mode, CLIENT_INTERACTIVE makes wait_timeout the
    interactive_timeout. (Written from @@global values: a SET evaluates all its expressions before
    it assigns any, so they cannot build on an assignment made in the same statement.)"""
    out = {}
    if capabilities & Capability.IGNORE_SPACE:
        g = "@@global.sql_mode"
        out["sql_mode"] = f"sql_mode=IF(FIND_IN_SET('IGNORE_SPACE', {g}), {g}, CONCAT_WS(',', NULLIF({g}, ''), 'IGNORE_SPACE'))"
    if capabilities & Capability.INTERACTIVE:
        out["wait_timeout"] = "wait_timeout=@@global.interactive_timeout"
    return out


# (SHOW, not SELECT: the proxy's own queries do not count as reads in a server's Com_select.)
LOGIN_CHARSET_VARIABLES = ("character_set_client", "character_set_connection", "collation_connection", "character_set_results")
LOGIN_CHARSET_QUERY = "SHOW SESSION VARIABLES WHERE Variable_name IN ({})".format(", ".join(f"'{v}'" for v in LOGIN_CHARSET_VARIABLES))


def login_charset_assignment(client: str | None, connection: str | None, collation: str | None, results: str | None) -> str:
    """The assignment that gives a connection the character sets the server chose at its login
    (LOGIN_CHARSET_QUERY's values then), not `SET NAMES` of the handshake's collation id, which the
    server may not know: MySQL 8 clients send 255, utf8mb4_0900_ai_ci, which MariaDB 10.11 replaces
    by its global defaults at login and refuses in SET NAMES with ER_UNKNOWN_COLLATION.

    A login sets the three to one collation (or to the global values): `SET NAMES cs COLLATE coll`
    is exactly that, down to the collation id of the result's column definitions (which
    `character_set_results=cs` would change to the character set's default)."""
    if client and client == connection == results and collation:
        return f"NAMES {client} COLLATE {collation}"
    return ", ".join(f"{name}={_quote(v) if v else 'NULL'}" for name, v in (
        ("character_set_client", client), ("collation_connection", collation), ("character_set_results", results),
    ))  # fmt: skip


def setup_assignments(*, tracks: bool, mariadb: bool, login_charset: str | None, restore: dict[str, str]) -> str:
    """What the proxy sets on a backend connection before its first use and after every reset: its
    session tracking, and what the login gave the connection that a reset drops (`login_charset`,
    `restore`: login_values(), and the schema's collation: COM_RESET_CONNECTION keeps the schema
    but gives collation_database the global value; `collation_database=DEFAULT` is the schema's)."""
    parts = [tracking_assignment(mariadb)] if tracks else []
    if login_charset:
        parts.append(login_charset)
    parts += restore.values()
    parts.append("collation_database=DEFAULT")
    return ", ".join(parts)


_CHARSET_KEY = "\0charset"  # SET NAMES / SET CHARACTER SET: one slot, the last one wins
_TXN_PREFIX = "\0txn:"
_DB_DERIVED = ("character_set_database", "collation_database")  # set from the schema by each change of it
# The client's own tracking settings: they shape what the client sees (SessionState.tracking), and
# the backend connection keeps the proxy's (replayed with the setup after the client's SET).
_TRACKING_SETTINGS = frozenset(("session_track_schema", "session_track_state_change", "session_track_system_variables"))
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.I)


_MAXLEN = {"utf8mb4": 4, "utf8mb3": 3, "utf8": 3, "ucs2": 2, "utf16": 4, "utf16le": 4, "utf32": 4, "big5": 2, "gbk": 2,
           "gb2312": 2, "sjis": 2, "cp932": 2, "ujis": 3, "eucjpms": 3, "euckr": 2}


def charset_width(collation_id: int) -> int:
    """Bytes per character at most in a collation's character set (a column's length is counted in them)."""
    try:
        return _MAXLEN.get(pymysql_charset.charset_by_id(collation_id).name, 1)
    except KeyError:
        return 4


# MySQL 8's collation ids (utf8mb4_0900_ai_ci is 255) are unknown to MariaDB, which gives such a
# login its own defaults: for the common case, the character set's default collation.
_MYSQL8_COLLATIONS = 255


def server_collation(collation_id: int) -> int:
    """The collation a MariaDB server puts in result column definitions for a client that logged in
    with `collation_id` and changed nothing since (a MySQL 8 id becomes its character set's default)."""
    if collation_id < _MYSQL8_COLLATIONS:
        return collation_id
    try:
        return pymysql_charset.charset_by_name(pymysql_charset.charset_by_id(collation_id).name).id
    except KeyError:
        return collation_id


def charset_entry(collation_id: int) -> str | None:
    """The replay text that restores a connection collation given by id at login, or None if unknown.

    (By the client library's names: used only where the server's own choice is not known.)"""
    try:
        cs = pymysql_charset.charset_by_id(collation_id)
    except KeyError:
        return None
    return f"NAMES {cs.name} COLLATE {cs.collation}"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _literal(name: str, value: str) -> str | None:
    """The SQL literal that sets `name` to `value` as the server reported it, or None if it cannot be
    written the same way under every sql_mode (a backslash)."""
    if _NUMBER.fullmatch(value):
        return value
    if not value and (name.startswith("character_set_") or name.startswith("collation_")):
        return "NULL"  # (character_set_results=NULL is reported as an empty value)
    if "\\" in value:
        return None
    return _quote(value)


def _tracking_with(mask: TrackingMask, default: TrackingMask, name: str, value: str) -> TrackingMask | None:
    """`mask` after the client set tracking setting `name` to `value` (unquoted), or None if the
    value is not understood."""
    v = value.strip().strip("'\"").strip()
    upper = v.upper()
    if name == "session_track_system_variables":
        if upper == "DEFAULT":
            return replace(mask, variables=default.variables)
        if v == "*":
            return replace(mask, variables=None)
        return replace(mask, variables=frozenset(n.strip().lower() for n in v.split(",") if n.strip()))
    if upper == "DEFAULT":
        on = default.schema if name == "session_track_schema" else default.state_change
    elif upper in ("ON", "1", "TRUE"):
        on = True
    elif upper in ("OFF", "0", "FALSE"):
        on = False
    else:
        return None
    return replace(mask, schema=on) if name == "session_track_schema" else replace(mask, state_change=on)


@dataclass(slots=True)
class ConnState:
    """What one backend connection currently has (kept on the connection).

    A pooled connection moves between sessions: `owner` and `gen` say which session last brought it
    up to date and at which of its generations, so the per-statement check is two compares; any
    other owner means a full comparison (and a replay of the differences). `values` are the replay
    texts of what differs from the state the connection had right after its login (and `setup`);
    the server's session tracking corrects `schema` after every statement.
    """

    schema: str | None = None
    values: dict[str, str] = field(default_factory=dict)
    gen: int = -1  # SessionState.gen this connection was last brought up to
    owner: object = None  # the SessionState that did it
    login_collation: int = 0  # the collation id it logged in with (its pool's)
    login_charset: str | None = None  # the assignments that restore what its login gave it (learned from the server)
    restore: dict[str, str] = field(default_factory=dict)  # login_values() of its capabilities
    setup: str = ""  # setup_assignments(): made before its first use and after every reset
    set_up: bool = False  # `setup` is in place (False when just opened or reset)

    def after_reset(self, schema: str | None) -> ConnState:
        """The state right after COM_RESET_CONNECTION (which keeps the schema) or COM_CHANGE_USER:
        nothing set, and the setup to make again."""
        return ConnState(
            schema=schema, login_collation=self.login_collation, login_charset=self.login_charset, restore=self.restore, setup=self.setup
        )


class SessionState:
    __slots__ = ("schema", "values", "gen", "login_collation", "tracking", "_default_tracking")

    def __init__(self, schema: str | None, login_collation: int = 0, tracking: TrackingMask = DEFAULT_TRACKING) -> None:
        self.schema = schema
        self.values: dict[str, str] = {}  # key -> replay text (an assignment or a statement)
        self.gen = 0
        # The client's handshake collation: the character sets its connections logged in with.
        self.login_collation = login_collation
        # What the client's own session settings track (what it sees of the state information).
        self.tracking = self._default_tracking = tracking

    def set_schema(self, schema: str | None) -> None:
        """The server changed the default schema (USE, COM_INIT_DB, or it said so): the schema's
        character set and collation replace whatever the session had set of them, as the server
        does on any change of schema (to the same one too)."""
        if schema != self.schema:
            self.schema = schema
            self.gen += 1
        values = self.values
        for key in _DB_DERIVED:
            if key in values:
                del values[key]
                self.gen += 1

    def reset(self, capabilities: int = 0) -> None:
        """COM_RESET_CONNECTION: variables back to the server defaults; the schema stays. As MariaDB
        does it: what the login set from the client's `capabilities` (IGNORE_SPACE in sql_mode, the
        interactive wait_timeout) goes back to the global values too, and so does the character set
        of the schema."""
        self.values.clear()
        for key in login_values(capabilities):
            self.values[key] = f"{key}=DEFAULT"
        if self.schema is not None:
            self.values["collation_database"] = "collation_database=@@global.collation_database"
        self.tracking = self._default_tracking
        self.gen += 1

    def matches(self, conn: ConnState) -> bool:
        """Does `conn` carry exactly this state? (Cheap when this session synced it last.)"""
        if not conn.set_up:
            return False
        if conn.owner is self:
            return conn.gen == self.gen
        return conn.schema == self.schema and conn.values == self.values and conn.login_collation == self.login_collation

    def needs_reset(self, conn: ConnState) -> bool:
        """A connection carrying state that only COM_RESET_CONNECTION can undo for this session."""
        return any(k.startswith(_TXN_PREFIX) and k not in self.values for k in conn.values) or (
            _CHARSET_KEY in conn.values and _CHARSET_KEY not in self.values and conn.login_charset is None
            and conn.login_collation == self.login_collation
        )  # fmt: skip

    def apply(self, targets: tuple[SetTarget, ...], reported: dict[str, str] | None = None) -> bool:
        """Record a successful SET. False if any part of it cannot be replayed elsewhere.

        `reported`: the variables the server's session tracking reported in the SET's OK (name ->
        value): a variable set by an expression is replayed as the value the server computed."""
        trackable = True
        for t in targets:
            scope = t.scope
            if scope is SetScope.GLOBAL:
                continue  # not session state; it ran where it ran
            if scope is SetScope.USER:
                trackable = False
                continue
            value = t.value
            if scope is SetScope.NAMES or scope is SetScope.CHARSET:
                if value is None:
                    trackable = False
                elif scope is SetScope.NAMES:
                    self._put(_CHARSET_KEY, f"NAMES {t.name}" + (f" COLLATE {t.collation}" if t.collation else ""))
                else:
                    self._put(_CHARSET_KEY, f"CHARACTER SET {t.name}")
                continue
            if scope is SetScope.TRANSACTION:
                statement = None if value is None else _transaction_statement(t)
                if statement is None:
                    trackable = False  # an expression, or the next transaction only: it stays where it ran
                else:
                    self._put(_TXN_PREFIX + t.name, statement)
                continue
            name = t.name.lower()
            if not is_tracked_variable(name):
                trackable = False
                continue
            if value is None:  # an expression: the value the server computed, as it reported it
                learned = None if reported is None else reported.get(name)
                value = None if learned is None else _literal(name, learned)
                if value is None:
                    trackable = False
                    continue
            if name in _TRACKING_SETTINGS:
                trackable = self._track(name, value) and trackable
                continue
            self._put(name, f"{name}={value}")
        return trackable

    def apply_tracking(self, targets: tuple[SetTarget, ...], reported: dict[str, str] | None = None) -> bool:
        """Record what a successful SET did to the client's own session tracking only (passthrough:
        nothing else of a session is replayed). True if the SET touched a tracking setting."""
        touched = False
        for t in targets:
            name = t.name.lower()
            if t.scope is SetScope.SESSION and name in _TRACKING_SETTINGS:
                touched = True
                value = t.value if t.value is not None else None if reported is None else reported.get(name)
                if value is not None:
                    self._track(name, value)
        return touched

    def _track(self, name: str, value: str) -> bool:
        """The client set its own tracking setting `name` to `value` (an SQL literal). The backend
        connection keeps the proxy's tracking (restored by the setup); what the client sees of the
        state information follows its own (`tracking`). False if the value is not understood."""
        if not self.tracking.enabled:
            return True  # (no session tracking negotiated: it sees none, whatever the setting)
        mask = _tracking_with(self.tracking, self._default_tracking, name, value)
        if mask is None:
            return False
        if mask != self.tracking:
            self.tracking = mask
            self.gen += 1
        return True

    def _put(self, key: str, text: str) -> None:
        if self.values.get(key) != text:
            self.values.pop(key, None)  # re-insert: replay keeps the client's order
            self.values[key] = text
            self.gen += 1

    def replay_for(self, conn: ConnState) -> list[bytes]:
        """Command payloads that bring `conn` to this state (empty if it is already there)."""
        cmds: list[bytes] = []
        schema = self.schema
        init_db = schema is not None and conn.schema != schema
        assigns = [conn.setup] if not conn.set_up and conn.setup else []
        mine, theirs = self.values, conn.values
        # What a previous user of this connection set and this session did not: back to defaults.
        # (DEFAULT of character_set_database / collation_database is the schema's, in MariaDB.)
        for key in theirs:
            if key not in mine and not key.startswith(_TXN_PREFIX) and key != _CHARSET_KEY:
                assigns.append(conn.restore.get(key) or f"{key}=DEFAULT")
        if init_db:
            cmds.append(bytes((Command.INIT_DB,)) + schema.encode("utf-8", "surrogateescape"))
        charset = False  # the connection's character sets are being assigned
        if _CHARSET_KEY not in mine and (_CHARSET_KEY in theirs or conn.login_collation != self.login_collation):
            # The session's charset is the one its client logged in with.
            restore = conn.login_charset if conn.login_collation == self.login_collation else charset_entry(self.login_collation)
            if restore:
                assigns.append(restore)
                charset = True
        for key, text in mine.items():
            if theirs.get(key) == text and not (charset and (key.startswith("character_set_") or key.startswith("collation_"))):
                continue
            if key.startswith(_TXN_PREFIX):
                cmds.append(bytes((Command.QUERY,)) + b"SET " + text.encode())
            else:
                assigns.append(text)
                if key == _CHARSET_KEY:
                    charset = True
        if assigns:
            cmds.append(bytes((Command.QUERY,)) + ("SET " + ", ".join(assigns)).encode("utf-8", "surrogateescape"))
        return cmds

    def mark_synced(self, conn: ConnState) -> None:
        conn.schema = self.schema
        conn.values = dict(self.values)
        conn.gen = self.gen
        conn.owner = self


def _transaction_statement(t: SetTarget) -> str | None:
    name = t.name.lower()
    value = (t.value or "").strip("'\"").upper()
    if name in ("transaction_isolation", "tx_isolation"):
        return "SESSION TRANSACTION ISOLATION LEVEL " + value.replace("-", " ")
    if name in ("transaction_read_only", "tx_read_only"):
        return "SESSION TRANSACTION " + ("READ ONLY" if value in ("1", "ON", "TRUE") else "READ WRITE")
    return None
