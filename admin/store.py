"""The admin config store: ProxySQL's MEMORY / DISK / RUNTIME layers on the standard library's sqlite3.

Theory of operation
-------------------
One sqlite3 connection to ``:memory:`` holds the MEMORY layer (schema ``main``: the tables operators
edit) and the ``runtime_<table>`` tables (what is live; read-only to clients). The DISK layer is a
file in the data directory ATTACHed as schema ``disk`` with the same tables, plus
``rwproxy_saved_sections``: which sections an operator saved there, and when. The RUNTIME layer
itself is the frozen `proxy.config.Config` the application runs; the store only records the rows
that produced it.

Movement between layers (one SQLite transaction each, so a multi-section move is all or nothing):

* CONFIG -> MEMORY  `load_from_config`   (LOAD ... FROM CONFIG; `startup` for sections not on disk)
* DISK -> MEMORY    `load_from_disk`     (LOAD ... FROM DISK = LOAD ... TO MEMORY)
* MEMORY -> DISK    `save_to_disk`       (SAVE ... TO DISK = SAVE ... FROM MEMORY)
* RUNTIME -> MEMORY `save_runtime_to_memory` (SAVE ... TO MEMORY = SAVE ... FROM RUNTIME)
* MEMORY -> RUNTIME `build` validates (every error, see admin.validate) and returns a Config; the
  application swaps it in and then calls `set_runtime(result)`. `load_to_runtime` does the three
  steps with the swap passed in as a callable; on any error nothing changes anywhere.

Precedence at startup (`startup`), per section: the disk layer when an operator has saved that
section there (SAVE ... TO DISK), else the config file. Unlike ProxySQL this is never silent: the
report names the source of every section and warns when the config file differs from the disk copy
it is overridden by. ``initial=True`` (ProxySQL's --initial) uses the config file for every section.

`execute` runs SQL from admin clients under admin.guard's authorizer: reads of the store's tables;
INSERT / UPDATE / DELETE / REPLACE only on main's five admin tables; an allow-list of functions;
nothing else (no DDL, ATTACH, PRAGMA, transactions). Each statement gets `statement_timeout`
seconds (an SQLite progress handler interrupts it: ERR 3024), and its result at most
`max_result_rows` rows and `max_result_bytes` bytes (ERR 1104, checked while fetching, so a huge
result is never held whole); `admin.guard.harden` bounds every value SQLite builds. Column types
and ranges are CHECK constraints with readable names, so an obviously wrong value fails at INSERT
time; the whole-configuration checks run at LOAD ... TO RUNTIME.

Threads: the store is owned by one thread at a time -- the composition root's while it starts, then
the admin port's worker thread (admin.worker), which runs every store call, so a slow statement
never runs on the event loop. Hence check_same_thread is off; nothing here locks, and nothing
may call the store from two threads at once. The stats schema is filled from snapshots the caller
takes on the event loop (`execute(..., stats=...)`); the readers given to `attach_stats` are used
only by callers that run on the thread that owns the stats registry.

Never: block on anything but the local SQLite file, change the runtime tables except through
`set_runtime*`, or write the disk layer except through `save_to_disk`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from proxy.config import CAUSAL_READS, SERVER_STATUSES, SSL_MODES, Config, ConfigError
from proxy.protocol.constants import SUPPORTED_AUTH_PLUGINS
from rules.model import CHECK_TYPES, MAX_LAG_MS_LIMIT

from .commands import (
    ALL_SECTIONS,
    AdminError,
    Answer,
    Command,
    Diff,
    Layer,
    Load,
    Noop,
    Passthrough,
    Save,
    Section,
    SelectVariables,
    SetVariable,
    ShowCreateTable,
    ShowDatabases,
    ShowTables,
)
from .guard import Guard, harden
from .secrets import Keyring, seal
from .validate import (
    KEYS,
    SECRET_VARIABLES,
    TABLE_COLUMNS,
    VARIABLE_BY_NAME,
    BuildResult,
    ConfigFile,
    DigestRow,
    RouteChange,
    build_config,
    check_variable,
    live_server_rows,
    read_config_file,
    route_changes,
    row_key,
    rows_from_config,
)

__all__ = [
    "ADMIN_TABLES",
    "DIFF_COLUMNS",
    "Affected",
    "ConfigStore",
    "RowDiff",
    "RowSink",
    "Rows",
    "SectionOrigin",
    "StartupReport",
    "StoreError",
    "ValidationFailed",
]

SCHEMA_VERSION = 4
# Columns later versions added to a table of an older disk layer (appended: a disk layer of that
# version gets them by ALTER TABLE when it is opened).
_ADDED_COLUMNS = {
    2: (("mysql_users", "causal_reads VARCHAR DEFAULT NULL"),),
    3: (  # TLS: towards each server, and the users that must use it
        ("mysql_servers", "ssl_mode VARCHAR DEFAULT NULL"),
        ("mysql_servers", "ssl_ca VARCHAR DEFAULT NULL"),
        ("mysql_servers", "ssl_cert VARCHAR DEFAULT NULL"),
        ("mysql_servers", "ssl_key VARCHAR DEFAULT NULL"),
        ("mysql_servers", "server_public_key VARCHAR DEFAULT NULL"),
        ("mysql_servers", "get_server_public_key INT DEFAULT NULL"),
        ("mysql_users", "use_ssl INT NOT NULL DEFAULT 0"),
    ),
    4: (  # consistent reads per query rule: its causal_reads mode, its replication lag bound
        ("mysql_query_rules", "causal_reads VARCHAR DEFAULT NULL"),
        ("mysql_query_rules", "max_lag_ms INT DEFAULT NULL"),
    ),
}
ADMIN_TABLES: tuple[str, ...] = tuple(TABLE_COLUMNS)
RUNTIME_TABLES: tuple[str, ...] = tuple(f"runtime_{t}" for t in ADMIN_TABLES)
SAVED_TABLE = "rwproxy_saved_sections"
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_COLUMNS = frozenset({"password", "backend_password"})


# --------------------------------------------------------------------------------------------------
# results and errors


class StoreError(AdminError):
    """A layer move or a statement failed (nothing was changed)."""


class ValidationFailed(AdminError):
    """LOAD ... TO RUNTIME refused: `errors` lists every problem; the runtime is unchanged."""

    def __init__(self, result: BuildResult, command: str) -> None:
        super().__init__(result.message(command))
        self.result = result
        self.errors = result.errors


@dataclass(frozen=True, slots=True)
class Rows:
    """A result set for the client."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Affected:
    """An OK for the client: affected rows and an info message."""

    count: int = 0
    message: str = ""


class RowSink(Protocol):
    """Where `execute` can send a result's rows as they are fetched (e.g. straight to wire bytes)."""

    def start(self, columns: tuple[str, ...]) -> None: ...

    def add(self, rows: list[tuple[Any, ...]]) -> None: ...


DIFF_COLUMNS = ("table_name", "change", "row_key", "differences")


@dataclass(frozen=True, slots=True)
class RowDiff:
    """One row that differs between memory and another layer. `change`: added (only in memory),
    removed (only in the other layer), changed (both; `differences` lists "column: other -> memory")."""

    table: str
    change: str
    key: str
    differences: str = ""

    def row(self) -> tuple[str, str, str, str]:
        return (self.table, self.change, self.key, self.differences)


@dataclass(frozen=True, slots=True)
class SectionOrigin:
    section: Section
    layer: Layer  # CONFIG or DISK
    detail: str
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class StartupReport:
    """Where each section came from at startup; print `lines()` (warnings are prefixed WARNING)."""

    origins: tuple[SectionOrigin, ...]

    def lines(self) -> list[str]:
        out = []
        for o in self.origins:
            out.append(f"{o.section.value}: {o.detail}")
            if o.warning:
                out.append(f"WARNING: {o.section.value}: {o.warning}")
        return out


# --------------------------------------------------------------------------------------------------
# schema


def _in(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _int(col: str, lo: int | None = None, hi: int | None = None, null: bool = False) -> str:
    cond = f"typeof({col}) = 'integer'"
    if lo is not None:
        cond += f" AND {col} >= {lo}"
    if hi is not None:
        cond += f" AND {col} <= {hi}"
    return f"{col} IS NULL OR ({cond})" if null else cond


def _text(col: str, nonempty: bool = False, null: bool = True) -> str:
    cond = f"typeof({col}) = 'text'" + (f" AND {col} <> ''" if nonempty else "")
    return f"{col} IS NULL OR ({cond})" if null else cond


def _bool(col: str, null: bool = False, values: str = "0, 1") -> str:
    cond = f"{col} IN ({values}) AND typeof({col}) = 'integer'"
    return f"{col} IS NULL OR ({cond})" if null else cond


# (column, declaration, CHECK expression or None, what the CHECK demands)
_SCHEMA: dict[str, tuple[tuple[str, str, str | None, str], ...]] = {
    "mysql_servers": (
        ("hostgroup_id", "INT NOT NULL DEFAULT 0", _int("hostgroup_id", 0), "an integer >= 0"),
        ("hostname", "VARCHAR NOT NULL", _text("hostname", True), "non-empty text"),
        ("port", "INT NOT NULL DEFAULT 3306", _int("port", 0, 65535), "an integer 0..65535"),
        ("status", "VARCHAR NOT NULL DEFAULT 'ONLINE'", f"status IN ({_in(SERVER_STATUSES)})", "one of " + ", ".join(SERVER_STATUSES)),
        ("weight", "INT NOT NULL DEFAULT 1", _int("weight", 0), "an integer >= 0"),
        ("max_connections", "INT NOT NULL DEFAULT 1000", _int("max_connections", 1), "an integer >= 1"),
        ("max_replication_lag", "INT NOT NULL DEFAULT 0", _int("max_replication_lag", 0), "an integer >= 0 (seconds, 0 = no limit)"),
        ("comment", "VARCHAR NOT NULL DEFAULT ''", _text("comment"), "text"),
        # (version 3) TLS towards the server; NULL: [backend_tls]'s value
        ("ssl_mode", "VARCHAR DEFAULT NULL", f"ssl_mode IS NULL OR ssl_mode IN ({_in(SSL_MODES)})", "NULL or one of " + ", ".join(SSL_MODES)),
        ("ssl_ca", "VARCHAR DEFAULT NULL", _text("ssl_ca"), "NULL or a file path ('' = the system's CAs)"),
        ("ssl_cert", "VARCHAR DEFAULT NULL", _text("ssl_cert"), "NULL or a file path ('' = none)"),
        ("ssl_key", "VARCHAR DEFAULT NULL", _text("ssl_key"), "NULL or a file path ('' = none)"),
        ("server_public_key", "VARCHAR DEFAULT NULL", _text("server_public_key"), "NULL or a file path ('' = none)"),
        ("get_server_public_key", "INT DEFAULT NULL", _bool("get_server_public_key", null=True), "NULL, 0 or 1"),
    ),
    "mysql_users": (
        ("username", "VARCHAR NOT NULL", _text("username", True), "non-empty text"),
        ("password", "VARCHAR NOT NULL DEFAULT ''", _text("password"), "text"),
        ("active", "INT NOT NULL DEFAULT 1", _bool("active"), "0 or 1"),
        ("auth_plugin", "VARCHAR NOT NULL DEFAULT 'mysql_native_password'", f"auth_plugin IN ({_in(SUPPORTED_AUTH_PLUGINS)})", "one of " + ", ".join(SUPPORTED_AUTH_PLUGINS)),
        ("default_hostgroup", "INT NOT NULL DEFAULT 0", _int("default_hostgroup", 0), "an integer >= 0"),
        ("transaction_persistent", "INT NOT NULL DEFAULT 1", _bool("transaction_persistent"), "0 or 1"),
        ("max_connections", "INT NOT NULL DEFAULT 10000", _int("max_connections", 1), "an integer >= 1"),
        ("backend_username", "VARCHAR DEFAULT NULL", _text("backend_username"), "text, or NULL for the same as username"),
        ("backend_password", "VARCHAR DEFAULT NULL", _text("backend_password"), "text, or NULL for the same as password"),
        ("comment", "VARCHAR NOT NULL DEFAULT ''", _text("comment"), "text"),
        # (version 2) consistent reads for this user; NULL = the mysql-causal_reads variable
        ("causal_reads", "VARCHAR DEFAULT NULL", f"causal_reads IS NULL OR causal_reads IN ({_in(CAUSAL_READS)})", "NULL or one of " + ", ".join(CAUSAL_READS)),
        # ProxySQL's name: the client must use TLS (ERR 1045 in plaintext) (version 3)
        ("use_ssl", "INT NOT NULL DEFAULT 0", _bool("use_ssl"), "0 or 1"),
    ),
    "mysql_query_rules": (
        ("rule_id", "INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL", "rule_id >= 0", "an integer >= 0"),
        ("active", "INT NOT NULL DEFAULT 1", _bool("active"), "0 or 1"),
        ("username", "VARCHAR", _text("username", True), "NULL (any) or non-empty text"),
        ("schemaname", "VARCHAR", _text("schemaname", True), "NULL (any) or non-empty text"),
        ("flagIN", "INT NOT NULL DEFAULT 0", _int("flagIN", 0), "an integer >= 0"),
        ("client_addr", "VARCHAR", _text("client_addr", True), "NULL (any) or non-empty text"),
        ("proxy_addr", "VARCHAR", _text("proxy_addr", True), "NULL (any) or non-empty text"),
        ("proxy_port", "INT", _int("proxy_port", 1, 65535, null=True), "NULL (any) or an integer 1..65535"),
        ("digest", "VARCHAR", "digest IS NULL OR (typeof(digest) = 'text' AND digest GLOB '0[xX][0-9a-fA-F]*' AND length(digest) <= 18)",
         "NULL (any) or a hex digest such as '0x3A5F0C1D2E4B6F70'"),
        ("match_digest", "VARCHAR", _text("match_digest", True), "NULL (any) or a non-empty regex"),
        ("match_pattern", "VARCHAR", _text("match_pattern", True), "NULL (any) or a non-empty regex"),
        ("negate_match_pattern", "INT NOT NULL DEFAULT 0", _bool("negate_match_pattern"), "0 or 1"),
        ("re_modifiers", "VARCHAR NOT NULL DEFAULT 'CASELESS'", _text("re_modifiers", null=False), "text: CASELESS, GLOBAL, both (comma-separated) or ''"),
        ("flagOUT", "INT", _int("flagOUT", 0, null=True), "NULL or an integer >= 0"),
        ("replace_pattern", "VARCHAR", _text("replace_pattern"), "NULL or text"),
        ("destination_hostgroup", "INT", _int("destination_hostgroup", 0, null=True), "NULL or an integer >= 0"),
        ("timeout", "INT", _int("timeout", 0, null=True), "NULL or an integer >= 0 (milliseconds)"),
        ("error_msg", "VARCHAR", _text("error_msg", True), "NULL or non-empty text"),
        ("OK_msg", "VARCHAR", _text("OK_msg"), "NULL or text"),
        ("multiplex", "INT", _bool("multiplex", null=True, values="0, 1, 2"), "NULL, 0, 1 or 2"),
        ("log", "INT", _bool("log", null=True), "NULL, 0 or 1"),
        ("apply", "INT NOT NULL DEFAULT 0", _bool("apply"), "0 or 1"),
        ("comment", "VARCHAR", _text("comment"), "NULL or text"),
        ("match_kind", "VARCHAR", _text("match_kind", True), "NULL (any) or statement kinds, comma-separated (SELECT,SHOW)"),
        ("match_read_only", "INT", _bool("match_read_only", null=True), "NULL (any), 0 or 1"),
        ("match_tables", "VARCHAR", _text("match_tables", True), "NULL (any) or table names, comma-separated (db.t,t)"),
        # (version 4) consistent reads for the statements the rule matches: NULL = the user's mode
        ("causal_reads", "VARCHAR DEFAULT NULL", f"causal_reads IS NULL OR causal_reads IN ({_in(CAUSAL_READS)})",
         "NULL (the user's) or one of " + ", ".join(CAUSAL_READS)),
        ("max_lag_ms", "INT DEFAULT NULL", _int("max_lag_ms", 0, MAX_LAG_MS_LIMIT, null=True),
         f"NULL (no bound) or milliseconds 0..{MAX_LAG_MS_LIMIT}: reads skip replicas lagging more"),
    ),
    "mysql_replication_hostgroups": (
        ("writer_hostgroup", "INT NOT NULL PRIMARY KEY", _int("writer_hostgroup", 0), "an integer >= 0"),
        ("reader_hostgroup", "INT NOT NULL UNIQUE", _int("reader_hostgroup", 0) + " AND reader_hostgroup <> writer_hostgroup",
         "an integer >= 0, other than writer_hostgroup"),
        ("check_type", "VARCHAR NOT NULL DEFAULT 'read_only'", f"check_type IN ({_in(CHECK_TYPES)})", "one of " + ", ".join(CHECK_TYPES)),
        ("writer_is_also_reader", "INT NOT NULL DEFAULT 1", _bool("writer_is_also_reader"), "0 or 1"),
        ("comment", "VARCHAR NOT NULL DEFAULT ''", _text("comment"), "text"),
    ),
    "global_variables": (
        ("variable_name", "VARCHAR NOT NULL PRIMARY KEY", f"variable_name IN ({_in(VARIABLE_BY_NAME)})",
         "a known variable (SHOW VARIABLES lists them; docs/admin.md)"),
        ("variable_value", "VARCHAR NOT NULL", None, ""),
    ),
}
_TABLE_TAIL = {"mysql_servers": ", PRIMARY KEY (hostgroup_id, hostname, port)", "mysql_users": ", PRIMARY KEY (username)"}
assert all(tuple(c[0] for c in cols) == TABLE_COLUMNS[t] for t, cols in _SCHEMA.items())


def _ddl(schema: str, name: str, table: str) -> str:
    cols = []
    for col, decl, check, demand in _SCHEMA[table]:
        if check is not None:
            label = f"{table}.{col} must be {demand}".replace('"', "'")
            decl += f' CONSTRAINT "{label}" CHECK ({check})'
        cols.append(f"{col} {decl}")
    return f"CREATE TABLE IF NOT EXISTS {schema}.{name} ({', '.join(cols)}{_TABLE_TAIL.get(table, '')})"



def _render(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return str(v)


def _diff_rows(table: str, other: Sequence[Mapping[str, Any]], memory: Sequence[Mapping[str, Any]]) -> list[RowDiff]:
    key_cols = KEYS[table]
    def index(rows: Sequence[Mapping[str, Any]]) -> dict[tuple, Mapping[str, Any]]:
        return {tuple(r[c] for c in key_cols): r for r in rows}
    o, m = index(other), index(memory)
    out = []
    for k, row in m.items():
        if k not in o:
            out.append(RowDiff(table, "added", row_key(table, row)))
            continue
        diffs = []
        for c in TABLE_COLUMNS[table]:
            a, b = o[k].get(c), row.get(c)
            if a != b or type(a) is not type(b):
                secret = c in _SECRET_COLUMNS or (table == "global_variables" and row.get("variable_name") in SECRET_VARIABLES)
                diffs.append(f"{c}: changed" if secret else f"{c}: {_render(a)} -> {_render(b)}")
        if diffs:
            out.append(RowDiff(table, "changed", row_key(table, row), "; ".join(diffs)))
    out.extend(RowDiff(table, "removed", row_key(table, row)) for k, row in o.items() if k not in m)
    return out


def _count(diffs: Sequence[RowDiff]) -> str:
    parts = [f"{sum(d.change == c for d in diffs)} {c}" for c in ("added", "removed", "changed")]
    return ", ".join(p for p in parts if not p.startswith("0 "))


def _sections(sections: Iterable[Section] | Section) -> tuple[Section, ...]:
    if isinstance(sections, Section):
        return (sections,)
    return tuple(dict.fromkeys(sections))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --------------------------------------------------------------------------------------------------
# the store


class ConfigStore:
    """MEMORY (+ runtime_*) in an in-memory SQLite database, DISK attached from `disk_path` (None: no disk layer)."""

    def __init__(self, disk_path: str | os.PathLike[str] | None = None) -> None:
        self.disk_path = Path(disk_path) if disk_path is not None else None
        self.config_path: str | None = None  # the config file LOAD ... FROM CONFIG reads (set by startup)
        self.statement_timeout = 1.0  # seconds a client statement may run (see execute)
        self.max_result_rows = 1_000_000  # rows of one client result set (see execute)
        self.max_result_bytes = 32 << 20  # bytes of one client result set (see execute)
        self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        harden(self._db)
        self._runtime_set: set[Section] = set()
        self._stats = _StatsSchema(self._db)  # the live schemas: stats, monitor
        self._live_servers: Callable[[], Iterable[Any]] | None = None
        self._keyring = Keyring()  # clear texts of the stored hashes this process has seen (admin.secrets)
        for t in ADMIN_TABLES:
            self._db.execute(_ddl("main", t, t))
            self._db.execute(_ddl("main", f"runtime_{t}", t))
        if self.disk_path is not None:
            self._attach(self.disk_path)

    def _attach(self, path: Path) -> None:
        if not path.parent.is_dir():
            raise StoreError(f"data directory {path.parent} does not exist (the disk layer is {path})")
        try:
            if not path.exists():  # secrets (user passwords) may be saved here: owner-only
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            self._db.execute("ATTACH DATABASE ? AS disk", (str(path),))
            version = self._db.execute("PRAGMA disk.user_version").fetchone()[0]
            tables = {r[0] for r in self._db.execute("SELECT name FROM disk.sqlite_master WHERE type = 'table'")}
        except (OSError, sqlite3.Error) as e:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("DETACH DATABASE disk")
            raise StoreError(f"cannot open the disk layer {path}: {e}") from None
        if version == 0 and tables - {"sqlite_sequence"}:
            self._db.execute("DETACH DATABASE disk")
            raise StoreError(f"{path} is not an rwproxy disk layer (it has tables {', '.join(sorted(tables))}); move it away or choose another data directory")
        if version not in (0, SCHEMA_VERSION) and not 0 < version < SCHEMA_VERSION:
            self._db.execute("DETACH DATABASE disk")
            raise StoreError(f"{path} has disk layer schema version {version}; this rwproxy reads version {SCHEMA_VERSION}")
        if 0 < version < SCHEMA_VERSION:
            with self._tx():
                for v in range(version + 1, SCHEMA_VERSION + 1):
                    for table, column in _ADDED_COLUMNS.get(v, ()):
                        self._db.execute(f"ALTER TABLE disk.{table} ADD COLUMN {column}")
        with self._tx():
            for t in ADMIN_TABLES:
                self._db.execute(_ddl("disk", t, t))
            self._db.execute(f"CREATE TABLE IF NOT EXISTS disk.{SAVED_TABLE} (section VARCHAR NOT NULL PRIMARY KEY, saved_at VARCHAR NOT NULL)")
            self._db.execute(f"PRAGMA disk.user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    # -- the stats schema ---------------------------------------------------------------------------

    def attach_stats(self, tables: Mapping[str, StatsReader | None]) -> None:
        """Serve the running proxy's stats tables as schema `stats` (ProxySQL's): `tables` maps a table
        name to a reader returning (columns, rows) as of now. A statement that names a stats table
        gets it materialised (read, into the in-memory `stats` schema) just before it runs, so any
        SQL works on it: WHERE, ORDER BY, GROUP BY, COUNT(*), joins with the config tables. Only
        the tables a statement names are read, so reading stats_mysql_query_digest_reset (which
        empties the digest table) happens only when a client asks for it. A reader may be None:
        then the caller loads that table with `fill_stats` (the admin port does, from snapshots it
        takes on the event loop; see `stats_tables_named`) or passes it to `execute`."""
        self._stats.attach(tables, "stats")

    def attach_tables(self, schema: str, tables: Mapping[str, StatsReader | None]) -> None:
        """Like attach_stats, for another read-only schema of live tables (`monitor`: the health
        checks' logs, proxy.monitor)."""
        self._stats.attach(tables, schema)

    def attach_live_servers(self, read: Callable[[], Iterable[Any]]) -> None:
        """runtime_mysql_servers shows the live server list (proxy.config.Server rows with the
        monitor's placement and statuses) that `read` returns, refreshed before every command
        (`run`): the statuses and hostgroups the proxy routes by, as in ProxySQL. (`read` returns
        the monitor's current immutable snapshot: safe to call from the admin worker thread.)"""
        self._live_servers = read

    def _refresh_live_servers(self) -> None:
        if self._live_servers is None or Section.SERVERS not in self._runtime_set:
            return
        rows = live_server_rows(self._live_servers())
        if rows != self.rows("mysql_servers", Layer.RUNTIME):
            try:
                with self._tx():
                    self._replace("main.runtime_mysql_servers", "mysql_servers", rows)
            except sqlite3.Error as e:
                raise StoreError(f"cannot show the live servers in runtime_mysql_servers: {e}") from None

    def stats_tables_named(self, sql: str) -> list[str]:
        """The attached live tables (stats, monitor) `sql` names (by word: a mention in a string
        literal counts too)."""
        return self._stats.named(sql)

    def fill_stats(self, name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], first: bool) -> None:
        """Load one chunk of a live table's snapshot (`first`: the table starts empty with these
        columns). The next `execute` that names the table uses these rows, then empties it. Lets
        the admin port hand a big table over chunk by chunk, so neither thread holds it whole."""
        self._stats.fill(name, columns, rows, first)

    def discard_stats(self) -> None:
        """Forget what fill_stats loaded (for a statement that will not run)."""
        self._stats.clear(())

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- reading ----------------------------------------------------------------------------------

    def rows(self, table: str, layer: Layer = Layer.MEMORY) -> list[dict[str, Any]]:
        """The rows of an admin table in a layer (MEMORY, DISK or RUNTIME), in table order."""
        if table not in TABLE_COLUMNS:
            raise StoreError(f"no admin table {table!r}")
        name = {Layer.MEMORY: f"main.{table}", Layer.RUNTIME: f"main.runtime_{table}", Layer.DISK: f"disk.{table}"}[layer]
        if layer is Layer.DISK:
            self._need_disk("read the disk layer")
        cols = TABLE_COLUMNS[table]
        cur = self._db.execute(f"SELECT {', '.join(cols)} FROM {name} ORDER BY rowid")
        return [dict(zip(cols, r)) for r in cur]

    def memory_rows(self) -> dict[str, list[dict[str, Any]]]:
        return {t: self.rows(t) for t in ADMIN_TABLES}

    def saved_sections(self) -> dict[Section, str]:
        """Sections an operator saved to disk -> when (UTC). Empty without a disk layer."""
        if self.disk_path is None:
            return {}
        by_value = {s.value: s for s in ALL_SECTIONS}
        return {by_value[n]: at for n, at in self._db.execute(f"SELECT section, saved_at FROM disk.{SAVED_TABLE}") if n in by_value}

    def _need_disk(self, what: str) -> None:
        if self.disk_path is None:
            raise StoreError(f"cannot {what}: no disk layer (the proxy runs without a data directory)")

    # -- moving rows between layers -----------------------------------------------------------------

    def _replace(self, dest: str, table: str, rows: Iterable[Mapping[str, Any]]) -> int:
        cols = TABLE_COLUMNS[table]
        self._db.execute(f"DELETE FROM {dest}")
        sql = f"INSERT INTO {dest} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        n = 0
        for r in rows:
            self._db.execute(sql, tuple(r.get(c) for c in cols))
            n += 1
        return n

    def _copy(self, src: str, dest: str, table: str) -> int:
        cols = ", ".join(TABLE_COLUMNS[table])
        self._db.execute(f"DELETE FROM {dest}")
        return self._db.execute(f"INSERT INTO {dest} ({cols}) SELECT {cols} FROM {src} ORDER BY rowid").rowcount

    def _load_rows(self, rows: Mapping[str, Sequence[Mapping[str, Any]]], sections: tuple[Section, ...], dest: str = "main.{t}") -> int:
        try:
            with self._tx():
                return sum(self._replace(dest.format(t=t), t, rows[t]) for s in sections for t in s.tables)
        except sqlite3.Error as e:
            raise StoreError(f"cannot store the rows: {e}") from None

    def load_from_config(self, source: ConfigFile | Config | str | os.PathLike[str], sections: Iterable[Section] | Section = ALL_SECTIONS) -> int:
        """CONFIG -> MEMORY for `sections`. A path is read now (ConfigError on a bad file); returns rows stored."""
        cf = self._config_file(source)
        self._keyring.add_users(cf.config.users.values())
        return self._load_rows(rows_from_config(cf.config, cf.rule_rows), _sections(sections))

    def _config_file(self, source: ConfigFile | Config | str | os.PathLike[str] | None) -> ConfigFile:
        if source is None:
            if self.config_path is None:
                raise StoreError("no config file is known (the proxy was started without one)")
            source = self.config_path
        if isinstance(source, ConfigFile):
            return source
        if isinstance(source, Config):
            return ConfigFile(source)
        try:
            return read_config_file(source)
        except ConfigError as e:
            raise StoreError(f"config file not loaded, memory unchanged: {e}") from None

    def load_from_disk(self, sections: Iterable[Section] | Section = ALL_SECTIONS) -> int:
        """DISK -> MEMORY. Refuses a section never saved to disk (it would empty memory)."""
        sections = _sections(sections)
        self._need_disk("LOAD ... FROM DISK")
        saved = self.saved_sections()
        missing = [s.value for s in sections if s not in saved]
        if missing:
            raise StoreError(f"nothing saved on disk for {', '.join(missing)} (SAVE ... TO DISK first); memory unchanged")
        with self._tx():
            return sum(self._copy(f"disk.{t}", f"main.{t}", t) for s in sections for t in s.tables)

    def save_to_disk(self, sections: Iterable[Section] | Section = ALL_SECTIONS) -> int:
        """MEMORY -> DISK, and record that these sections are now the disk's (they win at startup)."""
        sections = _sections(sections)
        self._need_disk("SAVE ... TO DISK")
        at = _now()
        try:
            with self._tx():
                n = sum(self._copy(f"main.{t}", f"disk.{t}", t) for s in sections for t in s.tables)
                for s in sections:
                    self._db.execute(f"REPLACE INTO disk.{SAVED_TABLE} (section, saved_at) VALUES (?, ?)", (s.value, at))
        except sqlite3.Error as e:
            raise StoreError(f"cannot write the disk layer {self.disk_path}: {e}") from None
        return n

    def save_runtime_to_memory(self, sections: Iterable[Section] | Section = ALL_SECTIONS) -> int:
        """RUNTIME -> MEMORY (discards memory edits of those sections)."""
        sections = _sections(sections)
        missing = [s.value for s in sections if s not in self._runtime_set]
        if missing:
            raise StoreError(f"nothing is recorded at runtime for {', '.join(missing)} yet; memory unchanged")
        with self._tx():
            return sum(self._copy(f"main.runtime_{t}", f"main.{t}", t) for s in sections for t in s.tables)

    # -- MEMORY -> RUNTIME ---------------------------------------------------------------------------

    def build(self, sections: Iterable[Section] | Section, base: Config) -> BuildResult:
        """Validate memory's `sections` on top of `base` (the live Config): a new Config, or every error."""
        return build_config(self.memory_rows(), _sections(sections), base, self._keyring)

    def set_runtime(self, result: BuildResult) -> None:
        """Record that `result` is live now: runtime_* of its sections show exactly the rows it was built from."""
        if not result.ok:
            raise StoreError("set_runtime needs a successful build")
        self._load_rows(result.rows, result.sections, "main.runtime_{t}")
        self._runtime_set.update(result.sections)

    def set_runtime_config(self, config: Config, sections: Iterable[Section] | Section = ALL_SECTIONS) -> None:
        """runtime_* from a Config (e.g. server statuses the monitor changed). Inactive rules and user
        comments are not in a Config, so prefer set_runtime(result) after a load."""
        sections = _sections(sections)
        self._load_rows(rows_from_config(config), sections, "main.runtime_{t}")
        self._runtime_set.update(sections)

    def load_to_runtime(self, sections: Iterable[Section] | Section, base: Config, apply: Callable[[Config], None], command: str = "LOAD TO RUNTIME") -> Config:
        """Validate, `apply(new_config)` (the application's atomic swap), record runtime. Raises
        ValidationFailed listing every error, and then nothing has changed."""
        result = self.build(sections, base)
        if not result.ok:
            raise ValidationFailed(result, command)
        assert result.config is not None
        apply(result.config)
        self.set_runtime(result)
        return result.config

    # -- startup -------------------------------------------------------------------------------------

    def startup(self, source: ConfigFile | Config | str | os.PathLike[str], *, initial: bool = False) -> StartupReport:
        """Fill memory for every section from the disk layer (sections an operator saved there) or the
        config file, and say which, and why, per section. `initial`: the config file for all."""
        cf = self._config_file(source)
        self.config_path = cf.config.path
        self._keyring.add_users(cf.config.users.values())
        file_rows = rows_from_config(cf.config, cf.rule_rows)
        saved = self.saved_sections()
        origins = []
        for s in ALL_SECTIONS:
            if s in saved and not initial:
                self.load_from_disk(s)
                diffs = [d for t in s.tables for d in _diff_rows(t, file_rows[t], self.rows(t, Layer.DISK))]
                warning = None
                if diffs:
                    warning = (
                        f"the config file {cf.config.path} differs from the disk layer ({_count(diffs)} row(s) on disk vs the file) "
                        f"and is NOT used for this section. To use the file: LOAD {s.value} FROM CONFIG; LOAD {s.value} TO RUNTIME; "
                        f"SAVE {s.value} TO DISK -- or start once with the config-file override (--initial)"
                    )
                origins.append(SectionOrigin(s, Layer.DISK, f"from the disk layer {self.disk_path} (saved {saved[s]} by SAVE {s.value} TO DISK)", warning))
                continue
            self._load_rows(file_rows, (s,))
            if self.disk_path is None:
                why = "no data directory, so no disk layer"
            elif s in saved:
                why = f"--initial: the disk layer's copy saved {saved[s]} is ignored until the next SAVE {s.value} TO DISK replaces it"
            else:
                why = f"never saved to the disk layer {self.disk_path}"
            origins.append(SectionOrigin(s, Layer.CONFIG, f"from the config file {cf.config.path} ({why})"))
        return StartupReport(tuple(origins))

    # -- comparing -----------------------------------------------------------------------------------

    def diff(self, sections: Iterable[Section] | Section = ALL_SECTIONS, against: Layer = Layer.RUNTIME) -> list[RowDiff]:
        """Rows that differ between MEMORY and RUNTIME (or DISK), per table of `sections`."""
        if against not in (Layer.RUNTIME, Layer.DISK):
            raise StoreError(f"DIFF compares memory with RUNTIME or DISK, not {against.value}")
        out = []
        for s in _sections(sections):
            for t in s.tables:
                out.extend(_diff_rows(t, self.rows(t, against), self.rows(t)))
        return out

    def diff_routes(self, digests: Iterable[DigestRow], runtime: Config) -> list[RouteChange]:
        """DIFF MYSQL ROUTES: digests whose destination would change if all of memory were loaded."""
        result = self.build(ALL_SECTIONS, runtime)
        if not result.ok:
            raise ValidationFailed(result, "DIFF MYSQL ROUTES (memory does not validate)")
        assert result.config is not None
        return route_changes(digests, runtime, result.config)

    # -- client SQL ----------------------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = (), *, stats: Snapshots | None = None, sink: RowSink | None = None) -> Rows | Affected:
        """One statement from an admin client: SELECT the store's tables; write only main's admin
        tables. `stats`: snapshots of the stats tables the statement names (else what fill_stats
        loaded, else the attached readers). Bounded in time (`statement_timeout`: ERR 3024) and
        result size (`max_result_rows` / `max_result_bytes`: ERR 1104), so that no statement can
        hold the admin worker (or the proxy's memory) for long. With a `sink`, rows go to it batch
        by batch as they are fetched (and the Rows returned has none): nothing holds them all."""
        guard = Guard()
        deadline = time.monotonic() + self.statement_timeout
        try:
            materialised = self._stats.materialise(sql, stats)
        except sqlite3.Error as e:  # a stats reader returned something SQLite cannot store: a bug
            raise StoreError(f"cannot read the stats tables: {e}") from None
        # One transaction per statement, so that what a write leaves is checked (secrets sealed,
        # admin.secrets) before anyone can see it, and a refused write leaves nothing.
        self._db.execute("BEGIN")
        self._db.set_authorizer(guard)
        # Every ~1M VM instructions (a few ms of SQLite work): each call takes the GIL from the loop.
        self._db.set_progress_handler(lambda: time.monotonic() > deadline, 1_000_000)
        try:
            cur = self._db.execute(sql, tuple(params))
            if cur.description is not None:
                columns = tuple(d[0] for d in cur.description)
                if sink is not None:
                    sink.start(columns)
                result: Rows | Affected = Rows(columns, _fetch_bounded(cur, sink, self.max_result_rows, self.max_result_bytes))
            else:
                result = Affected(max(cur.rowcount, 0))
            self._db.set_authorizer(None)
            if "mysql_users" in guard.wrote:
                _seal_users(self._db, self._keyring)
            self._db.execute("COMMIT")
            return result
        except sqlite3.Error as e:
            if guard.denied is not None:
                raise StoreError(guard.denied[0], guard.denied[1], "42000") from None
            if getattr(e, "sqlite_errorname", "") == "SQLITE_INTERRUPT":
                raise StoreError(
                    f"statement stopped after {self.statement_timeout:g} s ([admin] statement_timeout): narrow it with WHERE / LIMIT, "
                    "or bound a recursive CTE", 3024, "HY000",
                ) from None  # ER_QUERY_TIMEOUT
            if getattr(e, "sqlite_errorname", "") == "SQLITE_TOOBIG":
                raise StoreError(
                    f"a value would exceed the admin port's limit of {self._db.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)} bytes "
                    "(randomblob, zeroblob, printf widths, replace and group_concat are bounded): ask for less", 1301, "HY000",
                ) from None  # ER_WARN_ALLOWED_PACKET_OVERFLOWED: "Result of %s() was larger than max_allowed_packet"
            raise _client_error(e) from None
        finally:
            self._db.set_authorizer(None)
            self._db.set_progress_handler(None, 0)
            if self._db.in_transaction:  # the statement failed: it leaves nothing
                self._db.execute("ROLLBACK")
            self._stats.clear(materialised)

    def set_variable(self, name: str, value: str) -> Affected:
        """SET mysql-<name> = value: checked now, takes effect at LOAD MYSQL VARIABLES TO RUNTIME."""
        name = name.lower()
        if name not in VARIABLE_BY_NAME:
            raise StoreError(f"unknown variable {name!r}; rwproxy's variables: {', '.join(VARIABLE_BY_NAME)}", 1193, "HY000")
        _, reason = check_variable(name, value)
        if reason:
            raise StoreError(f"SET {name}: {reason}", 1231, "42000")
        self._db.execute("REPLACE INTO global_variables (variable_name, variable_value) VALUES (?, ?)", (name, value.strip()))
        return Affected(1, f"{name} = {value.strip()!r} in memory; LOAD MYSQL VARIABLES TO RUNTIME to apply")

    def show_tables(self, schema: str | None = None, like: str | None = None) -> Rows:
        schema = (schema or "main").lower()
        if schema == "main":
            names = [*ADMIN_TABLES, *RUNTIME_TABLES]
        elif schema == "disk":
            self._need_disk("show the disk layer")
            names = [*ADMIN_TABLES, SAVED_TABLE]
        elif schema in ("stats", "monitor"):
            names = self._stats.names(schema)
        else:
            raise StoreError(f"Unknown database '{schema}'", 1049, "42000")
        if like is not None:
            pattern = re.compile("".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in like), re.IGNORECASE | re.DOTALL)
            names = [n for n in names if pattern.fullmatch(n)]
        return Rows(("tables",), [(n,) for n in sorted(names)])

    def show_create_table(self, table: str, schema: str | None = None) -> Rows:
        schema = (schema or "main").lower()
        if schema not in ("main", "disk"):
            raise StoreError(f"Unknown database '{schema}'", 1049, "42000")
        if schema == "disk":
            self._need_disk("show the disk layer")
        row = self._db.execute(f"SELECT sql FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        if row is None:
            raise StoreError(f"Table '{schema}.{table}' doesn't exist", 1146, "42S02")
        return Rows(("table", "Create Table"), [(table, row[0])])

    def databases(self) -> Rows:
        out = [(0, "main", "")]
        if self.disk_path is not None:
            out.append((2, "disk", str(self.disk_path)))
        if self._stats.names("stats"):
            out.append((3, "stats", ""))
        if self._stats.names("monitor"):
            out.append((4, "monitor", ""))
        return Rows(("seq", "name", "file"), out)

    # -- dispatch ------------------------------------------------------------------------------------

    def run(
        self, cmd: Command, *, runtime: Config | None = None, apply: Callable[[Config], None] | None = None,
        stats: Snapshots | None = None, sink: RowSink | None = None,
    ) -> Rows | Affected:
        """Execute a parsed command that the store can answer. LOAD ... TO RUNTIME needs `runtime`
        (the live Config) and `apply` (the swap). EXPLAIN ROUTE, KILL, SHOW PROCESSLIST and DIFF MYSQL
        ROUTES belong to the admin listener (they need the running proxy); they raise AdminError here."""
        self._refresh_live_servers()
        if isinstance(cmd, Load):
            if cmd.target is Layer.RUNTIME:
                if runtime is None or apply is None:
                    raise AdminError(f"{cmd} needs the running proxy (runtime and apply)")
                self.load_to_runtime(cmd.sections, runtime, apply, str(cmd))
                return Affected(0, f"{cmd}: validated and live")
            n = self.load_from_disk(cmd.sections) if cmd.source is Layer.DISK else self.load_from_config(None, cmd.sections)
            return Affected(n, f"{cmd}: {n} row(s) in memory")
        if isinstance(cmd, Save):
            n = self.save_to_disk(cmd.sections) if cmd.target is Layer.DISK else self.save_runtime_to_memory(cmd.sections)
            return Affected(n, f"{cmd}: {n} row(s)")
        if isinstance(cmd, Diff):
            return Rows(DIFF_COLUMNS, [d.row() for d in self.diff(cmd.sections, cmd.against)])
        if isinstance(cmd, SetVariable):
            return self.set_variable(cmd.name, cmd.value)
        if isinstance(cmd, Passthrough):
            return self.execute(cmd.sql, cmd.params, stats=stats, sink=sink)
        if isinstance(cmd, ShowTables):
            return self.show_tables(cmd.schema, cmd.like)
        if isinstance(cmd, ShowCreateTable):
            return self.show_create_table(cmd.table, cmd.schema)
        if isinstance(cmd, ShowDatabases):
            return self.databases()
        if isinstance(cmd, Noop):
            return Affected(0)
        if isinstance(cmd, Answer):
            return Rows(cmd.columns, list(cmd.rows))
        if isinstance(cmd, SelectVariables):
            columns, rows = cmd.answer()
            return Rows(columns, list(rows))
        raise AdminError(f"{type(cmd).__name__} is executed by the admin listener, not the config store")


StatsReader = Callable[[], tuple[Sequence[str], Iterable[Sequence[Any]]]]
Snapshots = Mapping[str, tuple[Sequence[str], Iterable[Sequence[Any]]]]


class _StatsSchema:
    """The live schemas of the store (`stats`, `monitor`): which tables they serve, and their rows
    for one statement."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._readers: dict[str, StatsReader | None] = {}
        self._schema_of: dict[str, str] = {}  # table -> its schema
        self._filled: set[str] = set()  # loaded by fill() for the next statement

    def names(self, schema: str | None = None) -> list[str]:
        return [n for n in self._readers if schema is None or self._schema_of[n] == schema]

    def schema_of(self, name: str) -> str:
        return self._schema_of[name.lower()]

    def attach(self, tables: Mapping[str, StatsReader | None], schema: str = "stats") -> None:
        if schema not in self._schema_of.values():
            self._db.execute(f"ATTACH DATABASE ':memory:' AS {schema}")
        for name, read in tables.items():
            self._readers[name.lower()] = read
            self._schema_of[name.lower()] = schema

    def named(self, sql: str) -> list[str]:
        if not self._readers:
            return []
        return [n for n in dict.fromkeys(w.lower() for w in _WORD.findall(sql)) if n in self._readers]

    def _create(self, name: str, columns: Sequence[str]) -> None:
        cols = ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
        schema = self._schema_of[name]
        self._db.execute(f'DROP TABLE IF EXISTS {schema}."{name}"')
        self._db.execute(f'CREATE TABLE {schema}."{name}" ({cols})')

    def _insert(self, name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        sql = f'INSERT INTO {self._schema_of[name]}."{name}" VALUES ({", ".join("?" * len(columns))})'
        rows = rows if isinstance(rows, (list, tuple)) else list(rows)
        self._db.execute("SAVEPOINT stats_rows")
        try:
            self._db.executemany(sql, rows)
        except UnicodeEncodeError:  # rare: text SQLite cannot encode (see _storable); redo the chunk, cleaned
            self._db.execute("ROLLBACK TO stats_rows")
            self._db.executemany(sql, _storable_rows(rows))
        finally:
            self._db.execute("RELEASE stats_rows")

    def fill(self, name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], first: bool) -> None:
        name = name.lower()
        if name not in self._readers:
            raise StoreError(f"no stats table {name!r}")
        if first:
            self._create(name, columns)
            self._filled.add(name)
        self._insert(name, columns, rows)

    def materialise(self, sql: str, snapshots: Snapshots | None = None) -> list[str]:
        """Fill the stats tables `sql` names, from what fill() loaded, `snapshots`, or else the
        readers; returns their names (emptied again by clear() after the statement)."""
        names = self.named(sql)
        for name in names:
            if name in self._filled:
                continue
            if snapshots is not None and name in snapshots:
                columns, rows = snapshots[name]
            else:
                read = self._readers[name]
                if read is None:
                    raise StoreError(f"internal: no snapshot of stats table {name} was taken for this statement")
                columns, rows = read()
            self._create(name, columns)
            self._insert(name, columns, rows)
        return names

    def clear(self, names: Iterable[str]) -> None:
        for name in [*names, *self._filled]:
            self._db.execute(f'DELETE FROM {self._schema_of[name]}."{name}"')
        self._filled.clear()


def _fetch_bounded(cur: sqlite3.Cursor, sink: RowSink | None, max_rows: int, max_bytes: int) -> list[tuple[Any, ...]]:
    """All rows (or, with a sink, none: each batch goes to it), or ERR 1104 as soon as they pass
    max_rows / max_bytes (counted as the values' text or blob lengths, 8 bytes a number)."""
    rows: list[tuple[Any, ...]] = []
    size = count = 0
    while True:
        batch = cur.fetchmany(256)
        if not batch:
            return rows
        for row in batch:
            for v in row:
                size += len(v) if isinstance(v, (str, bytes)) else 8
        count += len(batch)
        if count > max_rows or size > max_bytes:
            what = f"{max_rows} rows ([admin] max_result_rows)" if count > max_rows else f"{max_bytes} bytes ([admin] max_result_bytes)"
            raise StoreError(
                f"the result set is larger than the admin port's limit of {what}: add a WHERE or a LIMIT "
                "(e.g. ORDER BY count_star DESC LIMIT 100)", 1104, "42000",
            )  # ER_TOO_BIG_SELECT
        if sink is not None:
            sink.add(batch)
        else:
            rows.extend(batch)


def _seal_users(db: sqlite3.Connection, keyring: Keyring) -> None:
    """No clear secret stays in main.mysql_users (admin.secrets.seal); raises SealError."""
    cols = TABLE_COLUMNS["mysql_users"]
    for rowid, *values in db.execute(f"SELECT rowid, {', '.join(cols)} FROM main.mysql_users").fetchall():
        changes = seal(dict(zip(cols, values)), keyring)
        if changes:
            assignments = ", ".join(f"{c} = ?" for c in changes)
            db.execute(f"UPDATE main.mysql_users SET {assignments} WHERE rowid = ?", (*changes.values(), rowid))


def _storable(v: Any) -> Any:
    """A value SQLite can store. The data plane keeps client text it could not decode as lone
    surrogates (surrogateescape: a statement with invalid UTF-8 still gets a digest); SQLite
    cannot encode those, so such text is stored with U+FFFD in their place."""
    if type(v) is str and not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return v


def _storable_rows(rows: Iterable[Sequence[Any]]) -> Iterator[tuple[Any, ...]]:
    for row in rows:
        yield tuple(_storable(v) for v in row)


def _client_error(e: sqlite3.Error) -> StoreError:
    """An SQLite error as the MySQL error a client expects."""
    msg = str(e)
    name = getattr(e, "sqlite_errorname", "")
    if name == "SQLITE_CONSTRAINT_CHECK":
        return StoreError(msg.replace("CHECK constraint failed: ", "Check constraint failed: "), 3819, "HY000")
    if name == "SQLITE_CONSTRAINT_NOTNULL":
        col = msg.rsplit(": ", 1)[-1]
        return StoreError(f"Column '{col}' cannot be null", 1048, "23000")
    if name in ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"):
        cols = msg.rsplit(": ", 1)[-1]
        return StoreError(f"Duplicate entry for {cols} (use REPLACE INTO, or UPDATE the existing row)", 1062, "23000")
    if isinstance(e, sqlite3.ProgrammingError) and "one statement" in msg:
        return StoreError("one statement at a time on the admin port", 1064, "42000")
    if msg.startswith("no such table"):
        return StoreError(f"{msg} (admin tables: {', '.join(ADMIN_TABLES)}, and runtime_* for each)", 1146, "42S02")
    if "has no column named" in msg or msg.startswith("no such column"):
        return StoreError(f"{msg} (SHOW CREATE TABLE <table> lists the columns; ProxySQL columns rwproxy does not implement are absent, see docs/admin.md)", 1054, "42S22")
    if "syntax error" in msg or "incomplete input" in msg or "unrecognized token" in msg:
        return StoreError(f"SQL syntax error: {msg} (the admin tables are SQLite: standard SQL, REPLACE INTO, no ON DUPLICATE KEY UPDATE)", 1064, "42000")
    return StoreError(msg)
