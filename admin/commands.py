"""The admin dialect: statement text -> frozen command dataclasses. Pure: no I/O, stdlib only.

Theory of operation
-------------------
`parse(sql)` turns one statement received on the admin port into one command value, or raises
`CommandError` (an `AdminError`: message, MySQL errno and SQLSTATE) whose message says what is
accepted. Nothing here touches the store or the data plane: `admin.store.ConfigStore.run` executes
the commands that only need the config store, and the admin listener executes the rest (LOAD ... TO
RUNTIME, EXPLAIN ROUTE, KILL, SHOW PROCESSLIST, DIFF MYSQL ROUTES) with the live application.

The grammar (case-insensitive; surrounding whitespace, trailing semicolons and leading comments are
ignored; docs/admin.md is the reference):

* ``LOAD|SAVE MYSQL {SERVERS|USERS|QUERY RULES|VARIABLES|ALL} {TO|FROM} {RUNTIME|RUN|MEMORY|MEM|DISK|CONFIG}``
  with ProxySQL's direction aliases: LOAD TO RUNTIME = LOAD FROM MEMORY (memory -> runtime),
  LOAD TO MEMORY = LOAD FROM DISK (disk -> memory), LOAD FROM CONFIG (file -> memory),
  SAVE TO DISK = SAVE FROM MEMORY (memory -> disk), SAVE TO MEMORY = SAVE FROM RUNTIME (runtime ->
  memory). ``MYSQL ALL`` (rwproxy's) moves every section in one step: one validation, one swap.
* ``DIFF MYSQL <module> [RUNTIME|DISK]``: rows that differ between memory and runtime (or disk).
* ``DIFF MYSQL ROUTES``: digests whose destination would change if memory were loaded to runtime.
* ``EXPLAIN ROUTE [USER <name>] [SCHEMA <name>] <statement>``, ``KILL [CONNECTION|QUERY] <id>``,
  ``SHOW [FULL] PROCESSLIST``, ``SET mysql-<variable> = <value>``.
* ``PROXYSQL RELOAD TLS``: read the certificates and keys again (new connections use them).
* SQL on the admin tables: SELECT / INSERT / UPDATE / DELETE / REPLACE / WITH, TRUNCATE [TABLE] t,
  SHOW DATABASES, SHOW TABLES, SHOW CREATE TABLE, SHOW VARIABLES, SHOW MYSQL STATUS (stats_mysql_global).
* What client libraries send on connect, answered without the store: ``SELECT @@version_comment
  LIMIT 1`` and other SELECTs of only @@variables and DATABASE()/USER()/VERSION()/CONNECTION_ID()
  (`SelectVariables`), SET NAMES / SET autocommit / other session SETs, USE main, COMMIT/ROLLBACK,
  SHOW WARNINGS (`Noop` / `Answer`).

Never accepted: schema changes (CREATE/DROP/ALTER), ATTACH/DETACH, PRAGMA, VACUUM, BEGIN (each
statement commits on its own, so a ROLLBACK could never undo anything).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACCEPTED",
    "ADMIN_SCHEMAS",
    "ALL_SECTIONS",
    "AdminError",
    "Answer",
    "Command",
    "CommandError",
    "Diff",
    "DiffRoutes",
    "ExplainRoute",
    "Kill",
    "Layer",
    "Load",
    "Noop",
    "Passthrough",
    "ReloadTLS",
    "Save",
    "Section",
    "SelectVariables",
    "SetVariable",
    "ShowCreateTable",
    "ShowDatabases",
    "ShowProcesslist",
    "ShowTables",
    "parse",
]


# --------------------------------------------------------------------------------------------------
# errors


class AdminError(Exception):
    """An admin statement failed; the admin listener sends ERR `errno` (`sqlstate`) with `message`."""

    errno = 1105  # ER_UNKNOWN_ERROR
    sqlstate = "HY000"

    def __init__(self, message: str, errno: int | None = None, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if errno is not None:
            self.errno = errno
        if sqlstate is not None:
            self.sqlstate = sqlstate


class CommandError(AdminError):
    """The statement is not part of the admin dialect, or is malformed (ER_PARSE_ERROR)."""

    errno = 1064
    sqlstate = "42000"


# --------------------------------------------------------------------------------------------------
# vocabulary


class Section(enum.Enum):
    """A unit of LOAD/SAVE (ProxySQL's "module"); its value is the name used in commands."""

    SERVERS = "MYSQL SERVERS"
    USERS = "MYSQL USERS"
    QUERY_RULES = "MYSQL QUERY RULES"
    VARIABLES = "MYSQL VARIABLES"

    @property
    def tables(self) -> tuple[str, ...]:
        """The admin tables this section moves (ProxySQL: MYSQL SERVERS covers the replication hostgroups)."""
        return _SECTION_TABLES[self]


_SECTION_TABLES = {
    Section.SERVERS: ("mysql_servers", "mysql_replication_hostgroups"),
    Section.USERS: ("mysql_users",),
    Section.QUERY_RULES: ("mysql_query_rules",),
    Section.VARIABLES: ("global_variables",),
}
ALL_SECTIONS: tuple[Section, ...] = tuple(Section)


class Layer(enum.Enum):
    CONFIG = "CONFIG"  # the TOML file
    DISK = "DISK"  # the SQLite file in the data directory (schema `disk`)
    MEMORY = "MEMORY"  # the editable tables (schema `main`)
    RUNTIME = "RUNTIME"  # what the proxy runs now (runtime_* tables show it)


ADMIN_SCHEMAS = ("main", "disk", "stats", "monitor")


def _sections_text(sections: tuple[Section, ...]) -> str:
    return "MYSQL ALL" if set(sections) == set(ALL_SECTIONS) and len(sections) > 1 else sections[0].value


# --------------------------------------------------------------------------------------------------
# commands


@dataclass(frozen=True, slots=True)
class Load:
    """LOAD: MEMORY -> RUNTIME (validate all, then swap), DISK -> MEMORY, or CONFIG -> MEMORY."""

    sections: tuple[Section, ...]
    source: Layer
    target: Layer

    def __str__(self) -> str:
        return f"LOAD {_sections_text(self.sections)} {'TO RUNTIME' if self.target is Layer.RUNTIME else 'FROM ' + self.source.value}"


@dataclass(frozen=True, slots=True)
class Save:
    """SAVE: MEMORY -> DISK, or RUNTIME -> MEMORY."""

    sections: tuple[Section, ...]
    source: Layer
    target: Layer

    def __str__(self) -> str:
        return f"SAVE {_sections_text(self.sections)} TO {self.target.value}"


@dataclass(frozen=True, slots=True)
class Diff:
    """Rows that differ between MEMORY and `against` (RUNTIME or DISK)."""

    sections: tuple[Section, ...]
    against: Layer = Layer.RUNTIME

    def __str__(self) -> str:
        return f"DIFF {_sections_text(self.sections)} {self.against.value}"


@dataclass(frozen=True, slots=True)
class DiffRoutes:
    """Dry run: digests (stats_mysql_query_digest) whose destination would change if memory were loaded."""


@dataclass(frozen=True, slots=True)
class ExplainRoute:
    """Where `sql` would run at runtime, and why (rules.explain), for a session of `username` in `schemaname`."""

    sql: str
    username: str | None = None
    schemaname: str | None = None


@dataclass(frozen=True, slots=True)
class Kill:
    """KILL [CONNECTION] id (close the client session) or KILL QUERY id (stop its statement)."""

    connection_id: int
    query_only: bool = False


@dataclass(frozen=True, slots=True)
class ShowProcesslist:
    full: bool = False


@dataclass(frozen=True, slots=True)
class SetVariable:
    """SET mysql-<name> = <value>: REPLACE INTO global_variables (takes effect at LOAD MYSQL VARIABLES TO RUNTIME)."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class ReloadTLS:
    """PROXYSQL RELOAD TLS: the proxy reads its certificates and keys again (proxy.app.reload_tls)."""


@dataclass(frozen=True, slots=True)
class Passthrough:
    """SQL for the config store's tables (`ConfigStore.execute(sql, params)`)."""

    sql: str
    params: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class ShowDatabases:
    pass


@dataclass(frozen=True, slots=True)
class ShowTables:
    schema: str | None = None
    like: str | None = None


@dataclass(frozen=True, slots=True)
class ShowCreateTable:
    table: str
    schema: str | None = None


@dataclass(frozen=True, slots=True)
class Noop:
    """Session noise a client sends (SET NAMES, SET autocommit, USE main, COMMIT...): answer OK."""

    sql: str


@dataclass(frozen=True, slots=True)
class Answer:
    """A constant result set (e.g. SHOW WARNINGS: always empty here)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...] = ()


# Values the admin session reports for @@variables and functions; the listener overrides what it
# knows better (version(), user(), connection_id()). Unknown names answer NULL, as MySQL would
# answer an unset variable in a SELECT list of a client-library probe.
ADMIN_SESSION_DEFAULTS: dict[str, Any] = {
    "version_comment": "rwproxy admin",
    "version": "8.0.0-rwproxy-admin",
    "version()": "8.0.0-rwproxy-admin",
    "database()": "main",
    "user()": None,
    "connection_id()": None,
    "autocommit": 1,
    "auto_increment_increment": 1,
    "max_allowed_packet": 67108864,
    "character_set_client": "utf8mb4",
    "character_set_connection": "utf8mb4",
    "character_set_results": "utf8mb4",
    "character_set_server": "utf8mb4",
    "collation_connection": "utf8mb4_general_ci",
    "collation_server": "utf8mb4_general_ci",
    "init_connect": "",
    "interactive_timeout": 28800,
    "wait_timeout": 28800,
    "net_write_timeout": 60,
    "license": "GPL",
    "lower_case_table_names": 0,
    "performance_schema": 0,
    "query_cache_size": 0,
    "query_cache_type": "OFF",
    "sql_mode": "",
    "system_time_zone": "UTC",
    "time_zone": "SYSTEM",
    "transaction_isolation": "REPEATABLE-READ",
    "tx_isolation": "REPEATABLE-READ",
    "transaction_read_only": 0,
    "tx_read_only": 0,
}
_FUNCTION_KEYS = {
    "database": "database()",
    "schema": "database()",
    "user": "user()",
    "current_user": "user()",
    "session_user": "user()",
    "system_user": "user()",
    "version": "version()",
    "connection_id": "connection_id()",
}


@dataclass(frozen=True, slots=True)
class SelectVariables:
    """SELECT of only @@variables and session functions (a client-library probe), answered locally.

    `columns` are the column names MySQL would report (the expression as typed, or its alias);
    `keys` the lookup keys: a variable name without @@ and scope ("version_comment"), or a function
    as "database()"."""

    columns: tuple[str, ...]
    keys: tuple[str, ...]

    def answer(self, values: Mapping[str, Any] | None = None) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]]:
        """(columns, rows): one row; `values` override ADMIN_SESSION_DEFAULTS; unknown names are NULL."""
        merged = {**ADMIN_SESSION_DEFAULTS, **(values or {})}
        return self.columns, (tuple(merged.get(k) for k in self.keys),)


Command = (
    Load | Save | Diff | DiffRoutes | ExplainRoute | Kill | ShowProcesslist | SetVariable | Passthrough
    | ShowDatabases | ShowTables | ShowCreateTable | Noop | Answer | SelectVariables
)


# --------------------------------------------------------------------------------------------------
# parsing

_MODULES = {
    "MYSQL SERVERS": (Section.SERVERS,),
    "MYSQL USERS": (Section.USERS,),
    "MYSQL QUERY RULES": (Section.QUERY_RULES,),
    "MYSQL VARIABLES": (Section.VARIABLES,),
    "MYSQL ALL": ALL_SECTIONS,
}
_MODULE_LIST = "MYSQL SERVERS, MYSQL USERS, MYSQL QUERY RULES, MYSQL VARIABLES, MYSQL ALL"
_LAYER_WORDS = {
    "RUNTIME": Layer.RUNTIME,
    "RUN": Layer.RUNTIME,
    "MEMORY": Layer.MEMORY,
    "MEM": Layer.MEMORY,
    "DISK": Layer.DISK,
    "CONFIG": Layer.CONFIG,
}
# (verb, direction word, layer) -> (source, target)
_MOVES = {
    ("LOAD", "TO", Layer.RUNTIME): (Layer.MEMORY, Layer.RUNTIME),
    ("LOAD", "FROM", Layer.MEMORY): (Layer.MEMORY, Layer.RUNTIME),
    ("LOAD", "TO", Layer.MEMORY): (Layer.DISK, Layer.MEMORY),
    ("LOAD", "FROM", Layer.DISK): (Layer.DISK, Layer.MEMORY),
    ("LOAD", "FROM", Layer.CONFIG): (Layer.CONFIG, Layer.MEMORY),
    ("SAVE", "TO", Layer.DISK): (Layer.MEMORY, Layer.DISK),
    ("SAVE", "FROM", Layer.MEMORY): (Layer.MEMORY, Layer.DISK),
    ("SAVE", "TO", Layer.MEMORY): (Layer.RUNTIME, Layer.MEMORY),
    ("SAVE", "FROM", Layer.RUNTIME): (Layer.RUNTIME, Layer.MEMORY),
}
_LOAD_FORMS = "TO RUNTIME (= FROM MEMORY), TO MEMORY (= FROM DISK), FROM CONFIG"
_SAVE_FORMS = "TO DISK (= FROM MEMORY), TO MEMORY (= FROM RUNTIME)"
_MODULE_OTHER = {  # ProxySQL modules rwproxy does not have, and why
    "ADMIN VARIABLES": "the admin listener is configured in the config file",
    "LDAP VARIABLES": "rwproxy has no LDAP authentication",
    "SCHEDULER": "rwproxy has no scheduler",
    "MYSQL FIREWALL": "rwproxy has no firewall whitelist (use query rules with error_msg)",
    "PROXYSQL SERVERS": "rwproxy has no cluster sync",
    "RESTAPI": "rwproxy has no REST API",
    "MYSQL DIGEST": "the digest table is not persisted",
    "DEBUG": "rwproxy has no debug module",
}

ACCEPTED = (
    "accepted: LOAD|SAVE MYSQL {SERVERS|USERS|QUERY RULES|VARIABLES|ALL} {TO|FROM} {RUNTIME|MEMORY|DISK|CONFIG}; "
    "DIFF MYSQL {SERVERS|USERS|QUERY RULES|VARIABLES|ALL} [RUNTIME|DISK]; DIFF MYSQL ROUTES; "
    "EXPLAIN ROUTE [USER <name>] [SCHEMA <name>] <statement>; KILL [CONNECTION|QUERY] <id>; "
    "SHOW [FULL] PROCESSLIST; SET mysql-<variable> = <value>; PROXYSQL RELOAD TLS; "
    "SELECT/INSERT/UPDATE/DELETE/REPLACE on the admin tables; SHOW TABLES; SHOW CREATE TABLE <table>; "
    "SHOW VARIABLES (see docs/admin.md)"
)

_LEADING_COMMENT = re.compile(r"\A\s*(?:/\*.*?\*/|--[^\n]*(?:\n|\Z)|#[^\n]*(?:\n|\Z))", re.DOTALL)
_IDENT = r"(?:`(?:[^`]|``)+`|[A-Za-z_$][\w$]*)"
_NAME = r"(?:`(?:[^`]|``)+`|'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|[^\s`'\"]+)"
_SQL_VERBS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH"})
_FORBIDDEN = {
    "CREATE": "the admin schema is fixed",
    "DROP": "the admin schema is fixed",
    "ALTER": "the admin schema is fixed",
    "RENAME": "the admin schema is fixed",
    "ATTACH": "the disk layer is attached by the proxy (use SAVE ... TO DISK / LOAD ... FROM DISK)",
    "DETACH": "the disk layer is attached by the proxy",
    "PRAGMA": "it would change the store's settings (use SHOW CREATE TABLE to see a table's columns)",
    "VACUUM": "the store maintains itself",
    "REINDEX": "the store maintains itself",
    "ANALYZE": "the store maintains itself",
    "BEGIN": "transactions are not supported on the admin port: each statement commits on its own",
    "START": "transactions are not supported on the admin port: each statement commits on its own",
    "SAVEPOINT": "transactions are not supported on the admin port: each statement commits on its own",
    "RELEASE": "transactions are not supported on the admin port: each statement commits on its own",
}
_SESSION_SET = re.compile(
    r"\ASET\s+(?:NAMES|CHARACTER\s+SET|CHARSET|(?:SESSION|LOCAL|GLOBAL|PERSIST)\s|@@|@|TRANSACTION\s|[A-Za-z_][\w]*\s*(?:=|:=|\s))",
    re.IGNORECASE,
)
_PROXY_SET = re.compile(r"\ASET\s+(?P<prefix>mysql|admin|ldap)-(?P<name>[\w-]+)\s*(?:=|:=|\s)\s*(?P<value>.*)\Z", re.IGNORECASE | re.DOTALL)
_SELECT_ITEM = re.compile(
    r"\A(?:@@(?:(?:global|session|local)\.)?(?P<var>[A-Za-z_][\w$]*)"
    r"|(?P<func>database|schema|user|current_user|session_user|system_user|version|connection_id)\s*\(\s*\))"
    r"(?:\s+(?:AS\s+)?(?P<alias>`(?:[^`]|``)+`|'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[A-Za-z_][\w$]*))?\Z",
    re.IGNORECASE,
)
_SELECT_LIMIT = re.compile(r"\s+LIMIT\s+\d+(?:\s*,\s*\d+)?\s*\Z", re.IGNORECASE)


def _strip(sql: str) -> str:
    text = sql
    while True:
        m = _LEADING_COMMENT.match(text)
        if m is None or text.lstrip().startswith("/*!"):
            break
        text = text[m.end():]
    text = text.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


def _unquote(token: str) -> str:
    """`name`, 'name', "name" or name -> name (MySQL's doubled-quote and backslash escapes)."""
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "`'\"":
        q, body = token[0], token[1:-1]
        if q == "`":
            return body.replace("``", "`")
        body = body.replace(q + q, q)
        return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "0": "\0", "r": "\r"}.get(m.group(1), m.group(1)), body)
    return token


def _words(text: str) -> list[str]:
    return text.upper().split()


def parse(sql: str) -> Command:
    """Parse one admin statement. Raises CommandError saying what is accepted."""
    text = _strip(sql)
    if not text:
        raise CommandError("empty statement; " + ACCEPTED)
    words = _words(text)
    verb = words[0]
    if verb in ("LOAD", "SAVE"):
        return _parse_move(verb, text, words)
    if verb == "DIFF":
        return _parse_diff(text, words)
    if verb == "EXPLAIN":
        return _parse_explain(text, words)
    if verb == "KILL":
        return _parse_kill(text, words)
    if verb == "SHOW":
        return _parse_show(text, words)
    if verb == "SET":
        return _parse_set(text)
    if verb == "USE":
        return _parse_use(text, words)
    if verb in ("COMMIT", "ROLLBACK") and len(words) == 1:
        return Noop(text)  # nothing is ever open: BEGIN is refused
    if verb == "TRUNCATE":
        m = re.fullmatch(rf"TRUNCATE\s+(?:TABLE\s+)?(?P<t>(?:{_IDENT}\.)?{_IDENT})", text, re.IGNORECASE)
        if m is None:
            raise CommandError(f"malformed TRUNCATE: {text!r} (expected TRUNCATE [TABLE] <table>)")
        return Passthrough(f"DELETE FROM {m.group('t')}")
    if verb in _SQL_VERBS or verb.startswith("SELECT") or text.startswith("("):
        if verb == "SELECT":
            probe = _parse_select_variables(text)
            if probe is not None:
                return probe
        return Passthrough(text)
    key = verb.rstrip("(")
    if key in _FORBIDDEN:
        raise CommandError(f"{key} is not allowed on the admin port: {_FORBIDDEN[key]}; {ACCEPTED}", 1227, "42000")
    if verb == "PROXYSQL":
        if words[1:] == ["RELOAD", "TLS"]:
            return ReloadTLS()
        raise CommandError(f"{' '.join(words[:3])}: the only PROXYSQL command rwproxy has is PROXYSQL RELOAD TLS; {ACCEPTED}")
    raise CommandError(f"unknown admin command {text.split()[0]!r}; {ACCEPTED}")


def _module(verb: str, module_words: list[str], text: str) -> tuple[Section, ...]:
    name = " ".join(module_words)
    if name in _MODULES:
        return _MODULES[name]
    if name in _MODULE_OTHER:
        raise CommandError(f"{verb} {name}: not in rwproxy ({_MODULE_OTHER[name]}); modules: {_MODULE_LIST}")
    if not name:
        raise CommandError(f"{verb} needs a module: {verb} {{{_MODULE_LIST.replace(', ', '|')}}} ...")
    raise CommandError(f"{verb} {name}: unknown module; modules: {_MODULE_LIST}")


def _parse_move(verb: str, text: str, words: list[str]) -> Load | Save:
    forms = _LOAD_FORMS if verb == "LOAD" else _SAVE_FORMS
    # the direction is the last TO/FROM; the module is what sits between the verb and it
    idx = max((i for i, w in enumerate(words) if w in ("TO", "FROM") and i > 0), default=None)
    if idx is None:
        module_words = words[1:]
        _module(verb, module_words, text)  # an unknown module is the better message
        raise CommandError(f"{verb} {' '.join(module_words)}: missing the direction; {verb} accepts {forms}")
    module_words = words[1:idx]
    sections = _module(verb, module_words, text)
    module = " ".join(module_words)
    rest = words[idx + 1:]
    if len(rest) != 1 or rest[0] not in _LAYER_WORDS:
        got = " ".join(words[idx:])
        raise CommandError(f"{verb} {module} {got}: unknown layer; {verb} accepts {forms}")
    move = _MOVES.get((verb, words[idx], _LAYER_WORDS[rest[0]]))
    if move is None:
        other = "SAVE" if verb == "LOAD" else "LOAD"
        hint = (
            f"to write the disk use SAVE {module} TO DISK" if verb == "LOAD"
            else f"to make memory live use LOAD {module} TO RUNTIME; to read the disk or the config file use LOAD {module} FROM DISK|CONFIG"
        )
        raise CommandError(f"{verb} {module} {words[idx]} {rest[0]} is not a command: {verb} accepts {forms} ({other} does the other moves; {hint})")
    source, target = move
    return (Load if verb == "LOAD" else Save)(sections, source, target)


def _parse_diff(text: str, words: list[str]) -> Diff | DiffRoutes:
    usage = "DIFF MYSQL {SERVERS|USERS|QUERY RULES|VARIABLES|ALL} [RUNTIME|DISK], or DIFF MYSQL ROUTES"
    if words[1:] == ["MYSQL", "ROUTES"]:
        return DiffRoutes()
    against = Layer.RUNTIME
    module_words = words[1:]
    if module_words and module_words[-1] in ("RUNTIME", "RUN", "DISK", "MEMORY", "MEM", "CONFIG"):
        layer = _LAYER_WORDS[module_words[-1]]
        if layer not in (Layer.RUNTIME, Layer.DISK):
            raise CommandError(f"DIFF compares memory with RUNTIME or DISK, not {module_words[-1]}; {usage}")
        against, module_words = layer, module_words[:-1]
    if not module_words:
        raise CommandError(f"DIFF needs a module: {usage}")
    return Diff(_module("DIFF", module_words, text), against)


def _parse_explain(text: str, words: list[str]) -> ExplainRoute:
    usage = "EXPLAIN ROUTE [USER <name>] [SCHEMA <name>] <statement>"
    if len(words) < 2 or words[1] != "ROUTE":
        raise CommandError(f"EXPLAIN on the admin port is {usage} (where the proxy would send the statement, and why)")
    rest = re.sub(r"\A\s*EXPLAIN\s+ROUTE\b", "", text, flags=re.IGNORECASE).strip()
    options: dict[str, str] = {}
    while True:
        m = re.match(rf"(USER|SCHEMA)\s+({_NAME})(?:\s+|\Z)", rest, re.IGNORECASE)
        if m is None:
            break
        key = m.group(1).upper()
        if key in options:
            raise CommandError(f"EXPLAIN ROUTE: {key} given twice; {usage}")
        options[key] = _unquote(m.group(2))
        rest = rest[m.end():]
    if not rest:
        raise CommandError(f"EXPLAIN ROUTE needs a statement: {usage}")
    return ExplainRoute(rest, options.get("USER"), options.get("SCHEMA"))


def _parse_kill(text: str, words: list[str]) -> Kill:
    query_only = False
    rest = words[1:]
    if rest and rest[0] in ("CONNECTION", "QUERY"):
        query_only = rest[0] == "QUERY"
        rest = rest[1:]
    if len(rest) != 1 or not rest[0].isdigit():
        raise CommandError("KILL expects a connection id (a number, as in SHOW PROCESSLIST): KILL [CONNECTION|QUERY] <id>")
    return Kill(int(rest[0]), query_only)


def _parse_show(text: str, words: list[str]) -> Command:
    rest = words[1:]
    if rest in (["DATABASES"], ["SCHEMAS"]):
        return ShowDatabases()
    if rest[:2] == ["FULL", "PROCESSLIST"] and len(rest) == 2:
        return ShowProcesslist(full=True)
    if rest == ["PROCESSLIST"]:
        return ShowProcesslist()
    if rest == ["MYSQL", "STATUS"]:  # ProxySQL's: the global counters
        return Passthrough("SELECT * FROM stats.stats_mysql_global")
    if rest in (["WARNINGS"], ["ERRORS"]) or rest[:1] == ["WARNINGS"] and "LIMIT" in rest:
        return Answer(("Level", "Code", "Message"))
    m = re.fullmatch(rf"SHOW\s+(?:FULL\s+)?TABLES(?:\s+(?:FROM|IN)\s+(?P<db>{_IDENT}))?(?:\s+LIKE\s+(?P<like>{_NAME}))?", text, re.IGNORECASE)
    if m:
        return ShowTables(_unquote(m.group("db")) if m.group("db") else None, _unquote(m.group("like")) if m.group("like") else None)
    m = re.fullmatch(rf"SHOW\s+CREATE\s+TABLE\s+(?:(?P<db>{_IDENT})\.)?(?P<t>{_IDENT})", text, re.IGNORECASE)
    if m:
        return ShowCreateTable(_unquote(m.group("t")), _unquote(m.group("db")) if m.group("db") else None)
    m = re.fullmatch(rf"SHOW\s+(?:GLOBAL\s+|SESSION\s+)?VARIABLES(?:\s+LIKE\s+(?P<like>{_NAME}))?", text, re.IGNORECASE)
    if m:
        sql = "SELECT variable_name AS Variable_name, variable_value AS Value FROM global_variables"
        if m.group("like"):
            return Passthrough(sql + " WHERE variable_name LIKE ? ORDER BY variable_name", (_unquote(m.group("like")),))
        return Passthrough(sql + " ORDER BY variable_name")
    raise CommandError(
        f"unknown SHOW command {' '.join(words[:3])!r}; SHOW accepts DATABASES, TABLES [FROM <schema>] [LIKE '<pattern>'], "
        "CREATE TABLE <table>, VARIABLES [LIKE '<pattern>'], [FULL] PROCESSLIST, WARNINGS"
    )


def _parse_set(text: str) -> SetVariable | Noop:
    m = _PROXY_SET.match(text)
    if m:
        prefix, name, raw = m.group("prefix").lower(), m.group("name"), m.group("value").strip()
        full = f"{prefix}-{name}"
        if prefix != "mysql":
            raise CommandError(f"SET {full}: rwproxy has no {prefix}-* variables (the admin listener is configured in the config file); its variables are mysql-* (SHOW VARIABLES)")
        if not raw:
            raise CommandError(f"SET {full}: missing the value (SET {full} = <value>)")
        vm = re.fullmatch(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|[^\s,'\"`]+", raw)
        if vm is None:
            raise CommandError(f"SET {full}: expected one value, quoted or not (SET {full} = <value>; one variable per SET), got {raw!r}")
        return SetVariable(full.lower(), _unquote(raw))
    if _SESSION_SET.match(text):
        return Noop(text)
    raise CommandError(f"malformed SET: {text!r}; the admin port accepts SET mysql-<variable> = <value> (and ignores session SETs such as SET NAMES)")


def _parse_use(text: str, words: list[str]) -> Noop:
    m = re.fullmatch(rf"USE\s+({_IDENT})", text, re.IGNORECASE)
    if m is None:
        raise CommandError("USE expects one schema name: USE main")
    name = _unquote(m.group(1)).lower()
    if name not in ADMIN_SCHEMAS:
        raise CommandError(f"Unknown database '{_unquote(m.group(1))}' (the admin schemas are {', '.join(ADMIN_SCHEMAS)})", 1049, "42000")
    return Noop(text)


def _split_top_level(s: str) -> list[str]:
    """Split a SELECT list on commas outside quotes and parentheses."""
    out, depth, quote, start = [], 0, "", 0
    i = 0
    while i < len(s):
        c = s[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"`":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(s[start:i])
            start = i + 1
        i += 1
    out.append(s[start:])
    return out


def _parse_select_variables(text: str) -> SelectVariables | None:
    body = text[len("SELECT"):]
    if not body[:1].isspace():
        return None
    body = _SELECT_LIMIT.sub("", body)
    columns, keys = [], []
    for raw in _split_top_level(body):
        item = raw.strip()
        m = _SELECT_ITEM.match(item)
        if m is None:
            return None
        key = m.group("var").lower() if m.group("var") else _FUNCTION_KEYS[m.group("func").lower()]
        columns.append(_unquote(m.group("alias")) if m.group("alias") else item)
        keys.append(key)
    return SelectVariables(tuple(columns), tuple(keys))
