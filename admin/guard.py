"""What an admin client's SQL may do inside the config store's SQLite: an allow-list, and size bounds.

Theory of operation
-------------------
The admin port runs client SQL on SQLite (admin.store). SQLite is a whole programming environment:
functions that return native pointers (``fts3_tokenizer``, whose two-argument form installs one),
load code (``load_extension``), write its log (``sqlite_log``), attach files, change settings by
PRAGMA, and build values as large as memory (``randomblob(200000000)``, ``zeroblob``, ``printf``
widths, ``replace``). The admin dialect needs none of that. Two layers keep it out:

* `Guard`, an sqlite3 authorizer (``Connection.set_authorizer``) installed for each client
  statement and removed after it. It is an allow-list, consulted when a statement is prepared:
  reading is allowed only from the store's own tables (memory, runtime_*, the disk layer, the
  stats schema, sqlite_master) -- not from virtual tables such as dbstat or sqlite_stmt; writing
  only main's admin tables; calling only `ALLOWED_FUNCTIONS` (core scalar, aggregate, window,
  date, math and JSON functions); nothing else (PRAGMA, including the pragma_* table functions,
  ATTACH/DETACH, transactions, DDL). A refusal remembers why, so the client gets a MySQL error
  that says what is allowed instead of SQLite's "not authorized".
* `harden(connection)`, run once on the store's connection: SQLITE_LIMIT_LENGTH bounds every
  string or blob SQLite builds (a function asked for more fails with "string or blob too big"
  before allocating it: the randomblob above costs nothing), SQLITE_LIMIT_SQL_LENGTH the
  statement text, SQLITE_LIMIT_ATTACHED stops new attachments even from internal code paths, and
  the LIKE pattern, expression depth and compound SELECT limits are tightened. Time is bounded
  by the store's progress handler (statement_timeout); result size by the store's row/byte caps.

Never: allow a function or table by default, or let the authorizer stay installed for the
store's own statements (layer moves, stats materialisation), which it would wrongly refuse.
"""

from __future__ import annotations

import sqlite3

from .commands import ALL_SECTIONS, Section
from .validate import TABLE_COLUMNS

__all__ = ["ALLOWED_FUNCTIONS", "MAX_VALUE_BYTES", "Guard", "harden"]

ADMIN_TABLES = frozenset(TABLE_COLUMNS)
RUNTIME_TABLES = frozenset(f"runtime_{t}" for t in TABLE_COLUMNS)
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema", "sqlite_sequence"})
_STORE_TABLES = ADMIN_TABLES | RUNTIME_TABLES | _SCHEMA_TABLES | {"rwproxy_saved_sections"}

# Functions of the admin dialect (SQLite's core, date/time, math, window and JSON functions).
# Not here, so refused: fts3_tokenizer and the FTS/R-tree helpers, load_extension, sqlite_log,
# sqlite_compileoption_*, sqlite_source_id, subtype, and anything a later SQLite adds.
ALLOWED_FUNCTIONS = frozenset({
    # core scalar
    "abs", "char", "coalesce", "concat", "concat_ws", "format", "glob", "hex", "ifnull", "iif", "instr", "length",
    "like", "likelihood", "likely", "lower", "ltrim", "max", "min", "nullif", "octet_length", "printf", "quote",
    "random", "randomblob", "replace", "round", "rtrim", "sign", "soundex", "sqlite_version", "substr", "substring",
    "trim", "typeof", "unhex", "unicode", "unlikely", "upper", "zeroblob", "changes", "total_changes",
    "last_insert_rowid",
    # aggregate and window
    "avg", "count", "group_concat", "string_agg", "sum", "total", "row_number", "rank", "dense_rank",
    "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value", "last_value", "nth_value",
    # date and time
    "date", "time", "datetime", "julianday", "strftime", "unixepoch", "timediff", "current_date", "current_time",
    "current_timestamp",
    # math
    "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "ceiling", "cos", "cosh", "degrees", "exp",
    "floor", "ln", "log", "log10", "log2", "mod", "pi", "pow", "power", "radians", "sin", "sinh", "sqrt", "tan",
    "tanh", "trunc",
    # JSON
    "->", "->>", "json", "json_array", "json_array_length", "json_extract", "json_group_array", "json_group_object",
    "json_insert", "json_object", "json_patch", "json_quote", "json_remove", "json_replace", "json_set", "json_type",
    "json_valid",
})  # fmt: skip

# The largest string or blob SQLite may build for a client (and hold: digest texts are at most
# [stats] max_digest_text characters, 4 bytes each, well below).
MAX_VALUE_BYTES = 16 << 20
_MAX_SQL_BYTES = 16 << 20  # the admin port's packet limit
_A = sqlite3
_WRITE_ACTIONS = {_A.SQLITE_INSERT: "INSERT", _A.SQLITE_UPDATE: "UPDATE", _A.SQLITE_DELETE: "DELETE"}
_NAMED_ACTIONS = {
    _A.SQLITE_ATTACH: "ATTACH",
    _A.SQLITE_DETACH: "DETACH",
    _A.SQLITE_PRAGMA: "PRAGMA",  # also what the pragma_* table functions are checked as
    _A.SQLITE_TRANSACTION: "transaction control",
    _A.SQLITE_SAVEPOINT: "SAVEPOINT",
}


def harden(db: sqlite3.Connection, max_value_bytes: int = MAX_VALUE_BYTES) -> None:
    """Bound what any statement on `db` may build (see the module docstring). Idempotent."""
    db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_value_bytes)
    db.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, min(_MAX_SQL_BYTES, max_value_bytes))
    db.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 3)  # disk, stats and monitor, attached by the store itself
    db.setlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 10_000)
    db.setlimit(sqlite3.SQLITE_LIMIT_EXPR_DEPTH, 256)
    db.setlimit(sqlite3.SQLITE_LIMIT_COMPOUND_SELECT, 64)
    db.setlimit(sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH, 1)
    db.setlimit(sqlite3.SQLITE_LIMIT_FUNCTION_ARG, 64)
    db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 1000)
    db.execute("PRAGMA temp_store = FILE")  # sorts and materialised CTEs spill to disk, not RAM


def _section_of(table: str) -> Section:
    return next(s for s in ALL_SECTIONS if table in s.tables)


class Guard:
    """sqlite3 authorizer for one client statement: remembers why it refused, so the client gets
    that instead of "not authorized". `wrote` lists the admin tables the statement writes."""

    def __init__(self) -> None:
        self.denied: tuple[str, int] | None = None
        self.wrote: set[str] = set()
        self.selecting = False

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
        if action in (_A.SQLITE_SELECT, _A.SQLITE_RECURSIVE):
            self.selecting = True
            return _A.SQLITE_OK
        if action == _A.SQLITE_READ:
            # A read without columns (COUNT(*)) names no schema, and a CTE's rows are no table: both
            # reveal no stored value, so they pass; every column read names its schema and table.
            if db in ("stats", "monitor") or db is None or (db in ("main", "disk", "temp") and arg1 in _STORE_TABLES):
                return _A.SQLITE_OK
            where = f"{db}.{arg1}" if db and db != "main" else str(arg1)
            self._deny(f"SELECT denied: {where} is not an admin table (SHOW TABLES [FROM main|disk|stats|monitor] lists them)", 1142)
            return _A.SQLITE_DENY
        if action == _A.SQLITE_FUNCTION:
            name = (arg2 or "").lower()
            if name in ALLOWED_FUNCTIONS:
                return _A.SQLITE_OK
            self._deny(
                f"FUNCTION {arg2} is not available on the admin port (outside the admin dialect: SQLite's core, "
                "aggregate, window, date/time, math and JSON functions; see docs/security.md)", 1305,
            )  # fmt: skip
            return _A.SQLITE_DENY
        if action in _WRITE_ACTIONS:
            if db == "main" and arg1 in ADMIN_TABLES:
                self.wrote.add(arg1)
                return _A.SQLITE_OK
            if arg1 in _SCHEMA_TABLES and self.selecting and action == _A.SQLITE_UPDATE and not self.wrote:
                # What a SELECT of a virtual table (dbstat, json_each, pragma_*) asks first.
                self._deny("virtual tables and table functions (pragma_*, dbstat, json_each, ...) are not available on the admin port", 1142)
                return _A.SQLITE_DENY
            if arg1 in _SCHEMA_TABLES:
                self._deny("schema changes are not allowed on the admin port (the store's schema is fixed)", 1227)
                return _A.SQLITE_DENY
            what = f"{db}.{arg1}" if db and db != "main" else str(arg1)
            if db == "main" and arg1 in RUNTIME_TABLES:
                base = arg1.removeprefix("runtime_")
                reason = f"{arg1} is read-only: it shows what is live; edit {base}, then LOAD {_section_of(base).value} TO RUNTIME"
            elif db == "disk":
                reason = f"{what} is the disk layer: edit memory (main) and SAVE ... TO DISK"
            else:
                reason = f"{what} is not an admin table; writable: {', '.join(TABLE_COLUMNS)}"
            self._deny(f"{_WRITE_ACTIONS[action]} denied: {reason}", 1142)
            return _A.SQLITE_DENY
        what = _NAMED_ACTIONS.get(action, "schema changes")
        self._deny(f"{what} is not allowed on the admin port (the store's schema and layers are managed by the proxy)", 1227)
        return _A.SQLITE_DENY

    def _deny(self, message: str, errno: int) -> None:
        if self.denied is None:
            self.denied = (message, errno)
