"""Admin rows <-> Config: validate every row of a candidate configuration, and preview what it would do.

Theory of operation
-------------------
The admin tables hold rows (dicts of SQLite values); the proxy runs on a frozen `proxy.config.Config`.
This module converts in both directions and owns the validation that LOAD ... TO RUNTIME runs:

* `rows_from_config(config, rule_rows)` -> {table: [row, ...]}: what LOAD ... FROM CONFIG puts in
  memory, and what the runtime_* tables show for a Config. `rule_rows` are the raw [[query_rules]]
  tables of the file, so inactive rules survive (a RuleSet keeps only active ones).
* `build_config(memory, sections, base)` -> `BuildResult`: the rows of `sections` come from memory,
  every other section from `base` (the live Config). It reports EVERY error at once, each naming the
  table, the row key, the column and the reason -- type and range of every column, duplicate keys,
  `rules.model.validate_rules` / `validate_replication_hostgroups` for the rule and pair rows (a
  regex that does not compile, ...), and the references between tables (a user's default_hostgroup,
  a pair's hostgroups, a rule's destination_hostgroup must have a server). Only when all of that
  passes is the Config built -- by `proxy.config.parse_config` itself, on the TOML-shaped equivalent
  of the rows, so the admin path can never accept what the config file would refuse (if it ever
  did, that one error is reported too).
* `VARIABLES` maps global_variables names (ProxySQL's where the concept is the same, in ProxySQL's
  unit: durations in milliseconds) to the [proxy], [pool] and [monitor] keys of the config file
  ([monitor] keys are in ProxySQL's units in the file too, so their values are the same numbers).
* `route_changes(digests, runtime, candidate)`: the dry run behind DIFF MYSQL ROUTES -- each digest
  of the digest table routed by both configurations with `rules.engine.decide`, the ones whose
  destination differs returned. `explain_route` serves EXPLAIN ROUTE.

Pure: no I/O except `read_config_file`; never mutates its arguments.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from proxy.config import (
    LOG_LEVELS,
    CAUSAL_READS,
    MONITOR_LIMITS,
    read_secret,
    SERVER_STATUSES,
    SERVER_TLS_KEYS,
    SSL_MODES,
    BackendTLS,
    Config,
    ConfigError,
    Server,
    User,
    load_config,
    parse_config,
)
from proxy.hostgroups import Hostgroups
from proxy.protocol.constants import SUPPORTED_AUTH_PLUGINS
from rules.classify import classify
from rules.digest import digest_hex, fingerprint
from rules.engine import SessionView, decide
from rules.explain import Explanation, explain
from rules.model import (
    Decision,
    Deny,
    QueryRule,
    Respond,
    RouteTo,
    validate_replication_hostgroups,
    validate_rules,
)

from .commands import ALL_SECTIONS, AdminError, ExplainRoute, Layer, Section
from .secrets import Form, Keyring, form_of, resolve, stored_backend, stored_password

__all__ = [
    "KEYS",
    "ROUTE_CHANGE_COLUMNS",
    "SECRET_VARIABLES",
    "TABLE_COLUMNS",
    "VARIABLES",
    "BuildResult",
    "ConfigFile",
    "DigestRow",
    "RouteChange",
    "ValidationError",
    "Variable",
    "build_config",
    "check_variable",
    "digests_from_table",
    "explain_route",
    "live_server_rows",
    "read_config_file",
    "route_changes",
    "row_key",
    "rows_from_config",
]

Row = dict[str, Any]

# --------------------------------------------------------------------------------------------------
# tables: columns (in table order) and primary keys

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "mysql_servers": (
        "hostgroup_id", "hostname", "port", "status", "weight", "max_connections", "max_replication_lag", "comment",
        *("ssl_mode", "ssl_ca", "ssl_cert", "ssl_key", "server_public_key", "get_server_public_key"),  # NULL: [backend_tls]'s
    ),
    "mysql_users": (
        "username", "password", "active", "auth_plugin", "default_hostgroup", "transaction_persistent",
        "max_connections", "backend_username", "backend_password", "comment", "causal_reads", "use_ssl",
    ),
    "mysql_query_rules": (
        "rule_id", "active", "username", "schemaname", "flagIN", "client_addr", "proxy_addr", "proxy_port",
        "digest", "match_digest", "match_pattern", "negate_match_pattern", "re_modifiers", "flagOUT",
        "replace_pattern", "destination_hostgroup", "timeout", "error_msg", "OK_msg", "multiplex", "log",
        "apply", "comment", "match_kind", "match_read_only", "match_tables", "causal_reads", "max_lag_ms",
    ),
    "mysql_replication_hostgroups": ("writer_hostgroup", "reader_hostgroup", "check_type", "writer_is_also_reader", "comment"),
    "global_variables": ("variable_name", "variable_value"),
}
KEYS: dict[str, tuple[str, ...]] = {
    "mysql_servers": ("hostgroup_id", "hostname", "port"),
    "mysql_users": ("username",),
    "mysql_query_rules": ("rule_id",),
    "mysql_replication_hostgroups": ("writer_hostgroup",),
    "global_variables": ("variable_name",),
}
_SECTION_OF = {t: s for s in ALL_SECTIONS for t in s.tables}


def row_key(table: str, row: Mapping[str, Any]) -> str:
    """"hostgroup_id=0,hostname=db1,port=3306": how errors and diffs name a row."""
    return ",".join(f"{c}={row.get(c)}" for c in KEYS[table])


# --------------------------------------------------------------------------------------------------
# errors


@dataclass(frozen=True, slots=True)
class ValidationError:
    """One problem in a candidate configuration. `layer` is RUNTIME when the row is the live one (its
    section is not being loaded); then the message names the runtime_ table."""

    table: str
    key: str  # row key ("rule_id=10"), "" for the table as a whole
    column: str | None
    reason: str
    layer: Layer = Layer.MEMORY

    def __str__(self) -> str:
        table = f"runtime_{self.table}" if self.layer is Layer.RUNTIME else self.table
        where = f"{table} {self.key}" if self.key else table
        return f"{where}: {self.column}: {self.reason}" if self.column else f"{where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class BuildResult:
    """The outcome of validating a candidate: a Config, or every error. `rows` are the memory rows
    that were validated, per table of `sections` (what runtime_* must show once it is live)."""

    sections: tuple[Section, ...]
    config: Config | None
    errors: tuple[ValidationError, ...]
    rows: Mapping[str, tuple[Row, ...]]

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.errors

    def message(self, command: str) -> str:
        n = len(self.errors)
        head = f"{command} refused, runtime unchanged: {n} error{'s' if n != 1 else ''}"
        return head + "".join(f"\n  {e}" for e in self.errors)


# --------------------------------------------------------------------------------------------------
# global_variables


@dataclass(frozen=True, slots=True)
class Variable:
    """One global_variables row: `name` <-> config file key `section.key`.

    kind: int | float | ms (value in milliseconds, key in seconds) | bool | choice | text (non-empty)
    | secret (any text, never shown by DIFF). `low`/`high` are in the config file's unit (seconds for
    ms). `proxysql` says the name is ProxySQL's, same meaning."""

    name: str
    section: str
    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    low_exclusive: bool = False
    note: str = ""
    choices: tuple[str, ...] = ()
    proxysql: bool = False
    doc: str = ""


VARIABLES: tuple[Variable, ...] = (
    Variable("mysql-log_level", "proxy", "log_level", "choice", choices=LOG_LEVELS, doc="log verbosity"),
    Variable("mysql-connect_timeout_client", "proxy", "handshake_timeout", "ms", 0, None, True, proxysql=True,
             doc="a client must finish its handshake within this, or ERR 1159"),
    Variable("mysql-connect_timeout_server", "proxy", "connect_timeout", "ms", 0, None, True, proxysql=True,
             doc="one backend connect (TCP + handshake) gives up after this"),
    Variable("mysql-max_allowed_packet", "proxy", "max_allowed_packet", "int", 1024, 1 << 30, proxysql=True,
             doc="largest client packet accepted, in bytes"),
    Variable("mysql-reader_fallback_to_writer", "proxy", "reader_fallback_to_writer", "bool",
             doc="a read for a reader hostgroup with no ONLINE server runs on its writer"),
    Variable("mysql-max_connections", "proxy", "max_connections", "int", 1, 1_000_000, proxysql=True,
             doc="client connections at once; one more gets ERR 1040"),
    Variable("mysql-wait_timeout", "proxy", "client_idle_timeout", "ms", 0, 31_536_000, note=" (0 = never)", proxysql=True,
             doc="an idle client is closed after this (ERR 4031)"),
    Variable("mysql-shutdown_timeout", "proxy", "shutdown_timeout", "ms", 0, 86_400,
             doc="on SIGTERM, busy sessions get this long to finish"),
    Variable("mysql-max_connect_errors", "proxy", "max_connect_errors", "int", 0, 1 << 32, note=" (0 = never)",
             doc="failed logins from one client address before it is blocked (ERR 1129)"),
    Variable("mysql-max_password_errors", "proxy", "max_password_errors", "int", 0, 1 << 32, note=" (0 = never)",
             doc="failed logins for one account before it is blocked (ERR 4150)"),
    Variable("mysql-host_block_time", "proxy", "host_block_time", "ms", 1, 31_536_000,
             doc="how long a blocked address or account stays blocked"),
    Variable("mysql-login_delay_after", "proxy", "login_delay_after", "int", 0, 1_000_000,
             doc="failed logins before each further failure is answered after a growing delay"),
    Variable("mysql-max_login_delay", "proxy", "max_login_delay", "ms", 0, 60,
             doc="the longest delay before a failed login is answered"),
    Variable("mysql-max_handshakes", "proxy", "max_handshakes", "int", 1, 1_000_000,
             doc="connections not logged in yet; one more evicts the oldest"),
    Variable("mysql-max_handshakes_per_address", "proxy", "max_handshakes_per_address", "int", 1, 1_000_000,
             doc="connections not logged in yet from one client address; one more gets ERR 1040"),
    Variable("mysql-net_read_timeout", "proxy", "net_read_timeout", "ms", 1, 31_536_000, proxysql=False,
             doc="a command packet begun must arrive whole within this (ERR 1159)"),
    Variable("mysql-partial_packet_budget", "proxy", "partial_packet_budget", "int", 1 << 20, 1 << 40,
             doc="bytes of unfinished client packets held for all clients together"),
    Variable("mysql-causal_reads", "proxy", "causal_reads", "choice", choices=CAUSAL_READS,
             doc="what a read after a write may see: none, local (the session's own writes), fast (without waiting), global (every session's)"),
    Variable("mysql-causal_reads_timeout", "proxy", "causal_reads_timeout", "ms", 0, 3600,
             doc="how long a read waits for a replica to apply the write it must see, then runs on the writer"),
    Variable("mysql-default_query_timeout", "proxy", "default_query_timeout", "ms", 0, 31_536_000, note=" (0 = never)", proxysql=True,
             doc="a statement running longer is stopped (KILL QUERY); a query rule's timeout overrides it"),
    Variable("mysql-multiplexing", "pool", "multiplexing", "bool", proxysql=True,
             doc="lend pooled backend connections per statement / transaction"),
    Variable("mysql-pool_min_idle", "pool", "min_idle", "int", 0, 100_000, doc="idle connections kept per pool"),
    Variable("mysql-pool_idle_timeout", "pool", "idle_timeout", "ms", 0, 31_536_000,
             doc="idle connections beyond min_idle are closed after this"),
    Variable("mysql-connection_max_age_ms", "pool", "max_lifetime", "ms", 0, 31_536_000, note=" (0 = never)", proxysql=True,
             doc="a backend connection is retired after this (+-10% jitter)"),
    Variable("mysql-pool_connect_concurrency", "pool", "connect_concurrency", "int", 1, 10_000,
             doc="simultaneous connection attempts per server"),
    Variable("mysql-pool_connect_rate", "pool", "connect_rate", "float", 0, 1_000_000, note=" (0 = unlimited)",
             doc="new connections per second per server"),
    Variable("mysql-connect_timeout_server_max", "pool", "acquire_timeout", "ms", 0.001, 86_400, proxysql=True,
             doc="a statement waits this long for a backend connection, then ERR"),
    Variable("mysql-pool_validate_after", "pool", "validate_after", "ms", 0, 86_400,
             doc="a connection idle longer than this is pinged before it is lent"),
    Variable("mysql-auto_increment_delay_multiplex_timeout_ms", "pool", "last_insert_id_hold", "ms", 0, 86_400, proxysql=True,
             doc="after an insert, an idle session keeps its writer connection this long for LAST_INSERT_ID()"),
    Variable("mysql-max_stmts_per_connection", "pool", "max_prepared_statements", "int", 1, 1_000_000, proxysql=True,
             doc="prepared statements kept per backend connection (LRU closed beyond)"),
    # [monitor]: ProxySQL's names and units (milliseconds, except the *_sec and lag_when_null seconds).
    Variable("mysql-monitor_enabled", "monitor", "enabled", "bool", proxysql=True, doc="run the health checks"),
    Variable("mysql-monitor_username", "monitor", "username", "text", proxysql=True, doc="the monitor's login on every server"),
    Variable("mysql-monitor_password", "monitor", "password", "secret", proxysql=True, doc="its password"),
    *(Variable(name, "monitor", key, "int", *MONITOR_LIMITS[key], proxysql=proxysql, doc=doc) for name, key, proxysql, doc in (
        ("mysql-monitor_connect_interval", "connect_interval", True, "ms between connect checks (a fresh login)"),
        ("mysql-monitor_connect_timeout", "connect_timeout", True, "ms a connect check may take"),
        ("mysql-monitor_ping_interval", "ping_interval", True, "ms between pings"),
        ("mysql-monitor_ping_timeout", "ping_timeout", True, "ms a ping may take"),
        ("mysql-monitor_ping_max_failures", "ping_max_failures", True, "missed pings in a row that shun a server"),
        ("mysql-monitor_read_only_interval", "read_only_interval", True, "ms between read_only checks"),
        ("mysql-monitor_read_only_timeout", "read_only_timeout", True, "ms a read_only check may take"),
        ("mysql-monitor_replication_lag_interval", "replication_lag_interval", True, "ms between replication lag checks"),
        ("mysql-monitor_replication_lag_timeout", "replication_lag_timeout", True, "ms a replication lag check may take"),
        ("mysql-monitor_replication_lag_count", "replication_lag_count", True, "lag checks in a row over max_replication_lag that shun a server"),
        ("mysql-monitor_slave_lag_when_null", "lag_when_null", True, "seconds of lag counted for a stopped or broken replica"),
        ("mysql-shun_on_failures", "shun_on_failures", True, "connect errors within 1 s that shun a server (0 = never)"),
        ("mysql-shun_recovery_time_sec", "shun_recovery_time_sec", True, "seconds before a SHUNNED server may come back"),
        ("mysql-monitor_connect_timeout_server_max", "connect_timeout_server_max", False,
         "ms a statement waits for its hostgroup to have an ONLINE server"),
        ("mysql-query_retries_on_failure", "query_retries_on_failure", True, "retries of a safe read that failed on a server"),
    )),
)  # fmt: skip
SECRET_VARIABLES = frozenset(v.name for v in VARIABLES if v.kind == "secret")
VARIABLE_BY_NAME: dict[str, Variable] = {v.name: v for v in VARIABLES}
_TRUE = ("true", "1", "on", "yes")
_FALSE = ("false", "0", "off", "no")


def _fmt(d: Decimal) -> str:
    d = d.normalize()
    return format(d, "f")


def _config_value(config: Config, v: Variable) -> Any:
    if v.section == "monitor":
        return getattr(config.monitor, v.key)
    if v.section == "pool":
        return config.multiplexing if v.key == "multiplexing" else getattr(config.pool, "max_prepared" if v.key == "max_prepared_statements" else v.key)
    if v.key == "reader_fallback_to_writer":
        return config.ruleset.reader_fallback_to_writer
    return getattr(config, v.key)


def _variable_text(v: Variable, value: Any) -> str:
    if v.kind == "bool":
        return "true" if value else "false"
    if v.kind == "ms":
        return _fmt(Decimal(repr(float(value))) * 1000)
    if v.kind == "float":
        return _fmt(Decimal(repr(float(value))))
    return str(value)


def check_variable(name: str, text: Any) -> tuple[Any, str | None]:
    """(value in config-file units, None) or (None, reason). `name` must be a known variable."""
    v = VARIABLE_BY_NAME[name]
    if not isinstance(text, str):
        return None, f"expected text, got {text!r}"
    t = text.strip()
    if v.kind == "bool":
        if t.lower() in _TRUE:
            return True, None
        if t.lower() in _FALSE:
            return False, None
        return None, f"expected true or false, got {text!r}"
    if v.kind == "choice":
        if t.lower() in v.choices:
            return t.lower(), None
        return None, f"expected one of {', '.join(v.choices)}, got {text!r}"
    if v.kind == "secret":
        return text, None  # as given: a password may begin or end with spaces
    if v.kind == "text":
        return (t, None) if t else (None, "must not be empty")
    if v.kind == "int":
        if not re.fullmatch(r"[+-]?\d+", t):
            return None, f"expected an integer, got {text!r}"
        value: Any = int(t)
    else:
        try:
            d = Decimal(t)
        except InvalidOperation:
            d = None
        if d is None or not d.is_finite() or not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)", t):
            unit = "milliseconds" if v.kind == "ms" else "a number"
            return None, f"expected {unit}, got {text!r}"
        value = float(d / 1000) if v.kind == "ms" else float(d)
        if not math.isfinite(value):
            return None, f"out of range: {text!r}"
    scale = 1000 if v.kind == "ms" else 1
    unit = " ms" if v.kind == "ms" else ""
    lo, hi = v.low, v.high
    if lo is not None and (value <= lo if v.low_exclusive else value < lo) or hi is not None and value > hi:
        if v.low_exclusive and hi is None:
            return None, f"must be greater than {_fmt(Decimal(repr(lo)) * scale)}{unit}, got {text!r}"
        return None, f"must be between {_fmt(Decimal(repr(lo)) * scale)} and {_fmt(Decimal(repr(hi)) * scale)}{unit}{v.note}, got {text!r}"
    return value, None


# --------------------------------------------------------------------------------------------------
# Config -> rows


def _rule_row(r: QueryRule) -> Row:
    row: Row = {}
    for c in TABLE_COLUMNS["mysql_query_rules"]:
        v = getattr(r, c)
        if c == "digest" and v is not None:
            v = digest_hex(v)
        elif c == "match_kind" and v is not None:
            v = ",".join(sorted(k.name for k in v))
        elif c == "match_tables" and v is not None:
            v = ",".join(sorted(v))
        elif isinstance(v, bool):
            v = int(v)
        row[c] = v
    return row


def _server_row(s: Server) -> Row:
    row = {c: getattr(s, c) for c in TABLE_COLUMNS["mysql_servers"] if c not in SERVER_TLS_KEYS}
    for c in SERVER_TLS_KEYS:  # NULL: [backend_tls]'s value (the config file's), as the server did not set it
        v = getattr(s.tls, c) if c in s.tls_keys else None
        row[c] = int(v) if isinstance(v, bool) else v
    return row


def live_server_rows(servers: Iterable[Server]) -> list[Row]:
    """runtime_mysql_servers rows for the live server list (proxy.topology): placement as the
    monitor found it; SHUNNED_REPLICATION_LAG shows as SHUNNED there, as in ProxySQL (the stats
    table stats_mysql_connection_pool tells the two apart)."""
    rows = []
    for s in servers:
        row = _server_row(s)
        if row["status"] not in SERVER_STATUSES:
            row["status"] = "SHUNNED"
        rows.append(row)
    return rows


def _user_row(u: User) -> Row:
    return {
        "username": u.username,
        "password": stored_password(u),  # a hash or a reference, never the secret (admin.secrets)
        "active": 1,
        "auth_plugin": u.auth_plugin,
        "default_hostgroup": u.default_hostgroup,
        "transaction_persistent": int(u.transaction_persistent),
        "max_connections": u.max_connections,
        # NULL = "same as the frontend value", the config file's default
        "backend_username": None if u.backend_username == u.username else u.backend_username,
        "backend_password": stored_backend(u),
        "comment": "",
        "causal_reads": u.causal_reads,  # NULL = [proxy] causal_reads
        "use_ssl": int(u.require_ssl),
    }


def rows_from_config(config: Config, rule_rows: Sequence[Mapping[str, Any]] | None = None) -> dict[str, list[Row]]:
    """Every admin table's rows for `config`. `rule_rows`: the file's raw [[query_rules]] (keeps inactive rules)."""
    if rule_rows is not None:
        rules, errors = validate_rules(rule_rows)
        if errors:  # the Config was built from the same rows, so this is a caller bug
            raise ValueError(f"query rules do not validate: {errors[0]}")
    else:
        rules = list(config.ruleset.rules)
    return {
        "mysql_servers": [_server_row(s) for s in config.servers],
        "mysql_users": [_user_row(u) for u in config.users.values()],
        "mysql_query_rules": [_rule_row(r) for r in sorted(rules, key=lambda r: r.rule_id)],
        "mysql_replication_hostgroups": [
            {"writer_hostgroup": p.writer_hostgroup, "reader_hostgroup": p.reader_hostgroup, "check_type": p.check_type,
             "writer_is_also_reader": int(p.writer_is_also_reader), "comment": p.comment}
            for p in config.ruleset.replication_hostgroups
        ],
        "global_variables": [
            {"variable_name": v.name, "variable_value": _variable_text(v, _config_value(config, v))} for v in VARIABLES
        ],
    }


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A parsed config file plus its raw [[query_rules]] rows (inactive rules included)."""

    config: Config
    rule_rows: tuple[Mapping[str, Any], ...] | None = None


def read_config_file(path: str | Path) -> ConfigFile:
    """load_config(path) (raises ConfigError) and the file's raw query rule rows."""
    config = load_config(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        rows = raw.get("query_rules", [])
        rule_rows = tuple(rows) if isinstance(rows, list) else None
    except (OSError, tomllib.TOMLDecodeError):  # changed under our feet: fall back to the active rules
        rule_rows = None
    return ConfigFile(config, rule_rows)


# --------------------------------------------------------------------------------------------------
# rows -> Config (validation)


class _Errors:
    def __init__(self, layers: Mapping[str, Layer]) -> None:
        self.items: list[ValidationError] = []
        self.layers = layers

    def add(self, table: str, key: str, column: str | None, reason: str) -> None:
        self.items.append(ValidationError(table, key, column, reason, self.layers.get(table, Layer.MEMORY)))


def _is_int(v: Any) -> bool:
    return type(v) is int


def _check_columns(err: _Errors, table: str, row: Mapping[str, Any], key: str, specs: Mapping[str, tuple]) -> None:
    """specs: column -> (kind, check or None); kind int | str | bool | str? (nullable)."""
    for col, (kind, check) in specs.items():
        v = row.get(col)
        nullable = kind.endswith("?")
        kind = kind.rstrip("?")
        if v is None:
            if not nullable:
                err.add(table, key, col, "cannot be NULL")
            continue
        if kind == "int" and not _is_int(v):
            err.add(table, key, col, f"expected an integer, got {v!r}")
        elif kind == "bool" and v not in (0, 1):
            err.add(table, key, col, f"expected 0 or 1, got {v!r}")
        elif kind == "str" and not isinstance(v, str):
            err.add(table, key, col, f"expected text, got {v!r}")
        elif check is not None:
            reason = check(v)
            if reason:
                err.add(table, key, col, reason)


def _range(lo: int, hi: int | None = None, note: str = ""):
    def check(v: int) -> str | None:
        if v < lo or hi is not None and v > hi:
            return f"must be between {lo} and {hi}{note}, got {v}" if hi is not None else f"must be >= {lo}, got {v}"
        return None
    return check


def _one_of(values: Sequence[str]):
    return lambda v: None if v in values else f"must be one of {', '.join(values)}, got {v!r}"


_SERVER_SPECS = {
    "hostgroup_id": ("int", _range(0)),
    "hostname": ("str", lambda v: None if v else "must not be empty"),
    "port": ("int", _range(0, 65535)),
    "status": ("str", _one_of(SERVER_STATUSES)),
    "weight": ("int", _range(0)),
    "max_connections": ("int", _range(1)),
    "max_replication_lag": ("int", _range(0)),
    "comment": ("str", None),
    "ssl_mode": ("str?", _one_of(SSL_MODES)),
    "ssl_ca": ("str?", None),
    "ssl_cert": ("str?", None),
    "ssl_key": ("str?", None),
    "server_public_key": ("str?", None),
    "get_server_public_key": ("bool?", None),
}
_USER_SPECS = {
    "username": ("str", lambda v: None if v else "must not be empty"),
    "password": ("str", None),
    "active": ("bool", None),
    "auth_plugin": ("str", _one_of(SUPPORTED_AUTH_PLUGINS)),
    "default_hostgroup": ("int", None),
    "transaction_persistent": ("bool", None),
    "max_connections": ("int", _range(1)),
    "backend_username": ("str?", None),
    "backend_password": ("str?", None),
    "comment": ("str", None),
    "causal_reads": ("str?", _one_of(CAUSAL_READS)),
    "use_ssl": ("bool", None),
}


def _tables(memory: Mapping[str, Sequence[Mapping[str, Any]]], sections: Iterable[Section], base: Config) -> tuple[dict[str, list[Row]], dict[str, Layer]]:
    wanted = {t for s in sections for t in s.tables}
    live = rows_from_config(base)
    rows, layers = {}, {}
    for table in TABLE_COLUMNS:
        if table in wanted:
            rows[table], layers[table] = [dict(r) for r in memory.get(table, ())], Layer.MEMORY
        else:
            rows[table], layers[table] = live[table], Layer.RUNTIME
    return rows, layers


def _hint(err_layer: Layer, ref_table: str, ref_layer: Layer, hg: int, memory_hgs: set[int]) -> str:
    where = f"runtime_{ref_table}" if ref_layer is Layer.RUNTIME else ref_table
    reason = f"hostgroup {hg} has no server in {where}"
    if ref_layer is Layer.RUNTIME and hg in memory_hgs:
        reason += " (memory's mysql_servers has one: LOAD MYSQL SERVERS TO RUNTIME with it, e.g. LOAD MYSQL ALL TO RUNTIME)"
    elif err_layer is Layer.RUNTIME:
        reason += " (this row is live; change it in memory and load both sections at once: LOAD MYSQL ALL TO RUNTIME)"
    return reason


def build_config(
    memory: Mapping[str, Sequence[Mapping[str, Any]]], sections: Iterable[Section], base: Config, keyring: Keyring | None = None
) -> BuildResult:
    """Validate memory's rows of `sections` together with `base` for the others; Config or ALL errors.
    `keyring`: clear texts of stored password hashes (admin.secrets); references are read now."""
    sections = tuple(dict.fromkeys(sections))
    if keyring is None:
        keyring = Keyring()
    keyring.add_users(base.users.values())
    rows, layers = _tables(memory, sections, base)
    err = _Errors(layers)

    # mysql_servers
    servers = rows["mysql_servers"]
    seen: dict[tuple, int] = {}
    for i, r in enumerate(servers):
        key = row_key("mysql_servers", r)
        _check_columns(err, "mysql_servers", r, key, _SERVER_SPECS)
        k = (r.get("hostgroup_id"), r.get("hostname"), r.get("port"))
        if k in seen:
            err.add("mysql_servers", key, None, f"duplicate server (rows {seen[k] + 1} and {i + 1})")
        seen.setdefault(k, i)
    if not servers:
        err.add("mysql_servers", "", None, "no server: at least one row is required")
    hostgroups = {r.get("hostgroup_id") for r in servers if _is_int(r.get("hostgroup_id"))}
    memory_hgs = {r.get("hostgroup_id") for r in memory.get("mysql_servers", ())}
    servers_layer = layers["mysql_servers"]

    # mysql_replication_hostgroups
    pair_rows = rows["mysql_replication_hostgroups"]
    pairs, pair_errors = validate_replication_hostgroups(
        [{k: v for k, v in r.items() if k in TABLE_COLUMNS["mysql_replication_hostgroups"]} for r in pair_rows]
    )
    for e in pair_errors:
        err.add("mysql_replication_hostgroups", f"writer_hostgroup={e.writer_hostgroup}", e.column, e.reason)
    for p in pairs:
        for side in ("writer_hostgroup", "reader_hostgroup"):
            hg = getattr(p, side)
            if hg not in hostgroups and not (side == "reader_hostgroup" and p.writer_is_also_reader):
                err.add("mysql_replication_hostgroups", f"writer_hostgroup={p.writer_hostgroup}", side,
                        _hint(layers["mysql_replication_hostgroups"], "mysql_servers", servers_layer, hg, memory_hgs))
    reader_hgs = {p.reader_hostgroup for p in pairs}

    # mysql_users
    users = rows["mysql_users"]
    names: dict[Any, int] = {}
    active = 0
    for i, r in enumerate(users):
        key = row_key("mysql_users", r)
        _check_columns(err, "mysql_users", r, key, _USER_SPECS)
        u = r.get("username")
        if u in names:
            err.add("mysql_users", key, "username", f"duplicate user (rows {names[u] + 1} and {i + 1})")
        names.setdefault(u, i)
        if r.get("active") == 1 and Section.USERS in sections:
            _check_secrets(err, r, key, keyring)
        if r.get("active") == 1:
            active += 1
            hg = r.get("default_hostgroup")
            if _is_int(hg) and hg not in hostgroups:
                err.add("mysql_users", key, "default_hostgroup", _hint(layers["mysql_users"], "mysql_servers", servers_layer, hg, memory_hgs))
    if not active:
        err.add("mysql_users", "", None, "no active user: at least one row with active=1 is required")

    # mysql_query_rules
    rule_rows = [{k: v for k, v in r.items() if v is not None} for r in rows["mysql_query_rules"]]
    rules, rule_errors = validate_rules(rule_rows)
    for e in rule_errors:
        err.add("mysql_query_rules", f"rule_id={e.rule_id}", e.column, e.reason)
    for rule in rules:
        hg = rule.destination_hostgroup
        if hg is not None and hg not in hostgroups and hg not in reader_hgs:
            err.add("mysql_query_rules", f"rule_id={rule.rule_id}", "destination_hostgroup",
                    _hint(layers["mysql_query_rules"], "mysql_servers", servers_layer, hg, memory_hgs))

    # global_variables
    variables: dict[str, Any] = {}
    for r in rows["global_variables"]:
        name = r.get("variable_name")
        key = row_key("global_variables", r)
        if name not in VARIABLE_BY_NAME:
            err.add("global_variables", key, "variable_name", f"unknown variable {name!r} (see SHOW VARIABLES / docs/admin.md)")
            continue
        if name in variables:
            err.add("global_variables", key, "variable_name", "duplicate variable")
            continue
        value, reason = check_variable(name, r.get("variable_value"))
        if reason:
            err.add("global_variables", key, "variable_value", reason)
        else:
            variables[name] = value

    used = {t: tuple(rows[t]) for s in sections for t in s.tables}
    if err.items:
        return BuildResult(sections, None, tuple(err.items), used)

    raw = _raw_config(rows, variables, base, keyring, Section.USERS in sections)
    try:
        config = parse_config(raw, "<admin>")
    except ConfigError as e:  # our checks missed something the config file refuses: still report it
        table = {"servers": "mysql_servers", "users": "mysql_users", "query_rules": "mysql_query_rules",
                 "replication_hostgroups": "mysql_replication_hostgroups"}.get(e.key.split("[")[0].split(".")[0], "global_variables")
        return BuildResult(sections, None, (ValidationError(table, "", None, f"{e.key}: {e.reason}", layers.get(table, Layer.MEMORY)),), used)
    # Sections the admin tables do not hold ([admin], [stats], listeners) stay as they are live; so
    # do the users when MYSQL USERS is not loaded (their secrets are not read again).
    users = config.users if Section.USERS in sections else base.users
    return BuildResult(sections, dataclasses.replace(config, path=base.path, admin=base.admin, stats=base.stats, users=users, tls=base.tls), (), used)


def _check_secrets(err: _Errors, r: Mapping[str, Any], key: str, keyring: Keyring) -> None:
    """The secret columns of an active user row: references readable, hashes usable (admin.secrets)."""
    for col in ("password", "backend_password"):
        v = r.get(col)
        if form_of(v) is Form.REFERENCE:
            try:
                read_secret(v)
            except ValueError as e:
                err.add("mysql_users", key, col, f"{v}: {e}")
    if isinstance(r.get("password"), str) or r.get("password") is None:
        for col, reason in resolve(r, keyring)[1]:
            err.add("mysql_users", key, col, reason)


def _raw_config(rows: Mapping[str, list[Row]], variables: Mapping[str, Any], base: Config, keyring: Keyring, resolve_users: bool) -> dict[str, Any]:
    """The TOML-shaped equivalent of validated rows, for proxy.config.parse_config. Secrets come
    from admin.secrets.resolve (or, when the users are not being loaded, from the live config)."""
    live = base.users
    sections: dict[str, dict[str, Any]] = {"proxy": {}, "pool": {}, "monitor": {}}
    for name, value in variables.items():
        v = VARIABLE_BY_NAME[name]
        sections[v.section][v.key] = value
    users = []
    for r in rows["mysql_users"]:
        if r["active"] != 1:
            continue
        u = {"username": r["username"], "auth_plugin": r["auth_plugin"],
             "default_hostgroup": r["default_hostgroup"], "max_connections": r["max_connections"],
             "transaction_persistent": bool(r["transaction_persistent"]), "require_ssl": bool(r.get("use_ssl", 0))}
        if r.get("backend_username") is not None:
            u["backend_username"] = r["backend_username"]
        if r.get("causal_reads") is not None:
            u["causal_reads"] = r["causal_reads"]
        if resolve_users or r["username"] not in live:
            u.update(resolve(r, keyring)[0])
        else:  # kept from the live config (replaced by it after parsing): no secret read again
            u["password"] = live[r["username"]].password
        users.append(u)
    return {
        **sections,
        "listeners": {n: {"address": li.address, "port": li.port} for n, li in base.listeners.items()},
        # [backend_tls] stays the config file's: a NULL TLS column means its value
        "backend_tls": _backend_tls_table(base.backend_tls),
        "servers": [
            {c: bool(r[c]) if c == "get_server_public_key" else r[c] for c in TABLE_COLUMNS["mysql_servers"] if r.get(c) is not None}
            for r in rows["mysql_servers"]
        ],
        "users": users,
        "replication_hostgroups": [
            {**{c: r[c] for c in TABLE_COLUMNS["mysql_replication_hostgroups"]}, "writer_is_also_reader": bool(r["writer_is_also_reader"])}
            for r in rows["mysql_replication_hostgroups"]
        ],
        "query_rules": [{k: v for k, v in r.items() if v is not None} for r in rows["mysql_query_rules"]],
    }


def _backend_tls_table(tls: BackendTLS) -> dict[str, Any]:
    """[backend_tls] as the config file would say it (empty paths left out)."""
    return {k: v for k, v in dataclasses.asdict(tls).items() if v != ""}


# --------------------------------------------------------------------------------------------------
# previews: EXPLAIN ROUTE and DIFF MYSQL ROUTES


def _online(config: Config) -> frozenset[int]:
    return Hostgroups(config.servers, config.ruleset.replication_hostgroups).online


def _view(config: Config, user: User, schemaname: str | None, client_addr: str | None) -> SessionView:
    listener = config.listeners.get("data")
    return SessionView(
        default_hostgroup=user.default_hostgroup,
        username=user.username,
        schemaname=schemaname,
        client_addr=client_addr,
        proxy_addr=listener.address if listener else None,
        proxy_port=listener.port if listener else None,
        transaction_persistent=user.transaction_persistent,
    )


def explain_route(cmd: ExplainRoute, config: Config, online: Container[int] | None = None) -> Explanation:
    """EXPLAIN ROUTE: `rules.explain` for a fresh autocommit session of cmd.username (default: the
    first user) in cmd.schemaname. `online`: hostgroups with an ONLINE server now (default: from the
    configured statuses). `.rows()` gives the (step, detail) result set."""
    if cmd.username is None:
        user = next(iter(config.users.values()))
    else:
        user = config.users.get(cmd.username)
        if user is None:
            raise AdminError(f"EXPLAIN ROUTE: no user {cmd.username!r} at runtime (users: {', '.join(sorted(config.users))})")
    return explain(cmd.sql, _view(config, user, cmd.schemaname, "127.0.0.1"), config.ruleset,
                   _online(config) if online is None else online, causal_reads=user.causal_reads or config.causal_reads)


@dataclass(frozen=True, slots=True)
class DigestRow:
    """One row of the digest table (stats_mysql_query_digest), as route_changes needs it. `query`
    is a sample of the raw text when the stats keep one: match_pattern rules then see it (else they
    see the digest text, as the engine does without SQL)."""

    digest_text: str
    username: str | None
    schemaname: str | None = None
    client_address: str | None = None
    count_star: int = 0
    hostgroup: int | None = None
    digest: str | None = None
    query: str | None = None


def digests_from_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[DigestRow]:
    """stats_mysql_query_digest rows (as the stats registry shows them: one per hostgroup that ran
    the digest) -> one DigestRow per (digest, username, schemaname), count_star summed."""
    idx = {c: i for i, c in enumerate(columns)}
    for c in ("digest", "digest_text", "username", "schemaname", "count_star"):
        if c not in idx:
            raise ValueError(f"digest table has no column {c!r}")
    out: dict[tuple, DigestRow] = {}
    for r in rows:
        digest, user, schema = r[idx["digest"]], r[idx["username"]], r[idx["schemaname"]] or None
        key = (digest, user, schema)
        prev = out.get(key)
        count = (prev.count_star if prev else 0) + (r[idx["count_star"]] or 0)
        client = r[idx["client_address"]] or None if "client_address" in idx else None
        out[key] = DigestRow(r[idx["digest_text"]], user, schema, client, count, None, digest)
    return list(out.values())


ROUTE_CHANGE_COLUMNS = (
    "digest", "digest_text", "username", "schemaname", "count_star",
    "runtime_destination", "memory_destination", "runtime_reason", "memory_reason", "runtime_rules", "memory_rules",
)


@dataclass(frozen=True, slots=True)
class RouteChange:
    digest: str
    digest_text: str
    username: str | None
    schemaname: str | None
    count_star: int
    runtime_destination: str
    memory_destination: str
    runtime_reason: str
    memory_reason: str
    runtime_rules: str
    memory_rules: str

    def row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in ROUTE_CHANGE_COLUMNS)


def _destination(d: Decision | None, username: str | None) -> str:
    if d is None:
        return f"no such user {username!r}"
    a = d.action
    if type(a) is RouteTo:
        return f"hostgroup {a.hostgroup}"
    if type(a) is Deny:
        return f"deny: ERR {a.errno} {a.error_msg!r}"
    assert type(a) is Respond
    return f"answer OK {a.ok_msg!r}"


def _parseable(digest_text: str) -> str:
    """The digest text with its collapsed lists re-expanded into something the parser accepts."""
    return digest_text.replace("(...)", "(?)").replace("),...", ")")


def route_changes(digests: Iterable[DigestRow], runtime: Config, candidate: Config) -> list[RouteChange]:
    """Digests whose destination differs between `runtime` and `candidate`, most executed first.

    Each digest is routed as a statement of an autocommit session of its user, outside any
    transaction, not pinned, in its schema, with hostgroup health from each configuration's
    configured statuses (so only the configuration differs, never the monitor's view)."""
    online = (_online(runtime), _online(candidate))
    out = []
    for d in digests:
        text = d.query if d.query is not None else d.digest_text
        cls = classify(text if d.query is not None else _parseable(text))
        if d.query is None:  # digest/match_digest rules must see the real digest, not the re-expanded one
            cls = dataclasses.replace(cls, fingerprint=fingerprint(d.digest_text))
        decisions = []
        for config, on in zip((runtime, candidate), online):
            user = config.users.get(d.username) if d.username is not None else None
            if user is None:
                decisions.append(None)
                continue
            view = _view(config, user, d.schemaname, d.client_address)
            decisions.append(decide(cls, view, config.ruleset, on, sql=text if config.ruleset.needs_sql else None))
        a, b = decisions
        if (a is None) != (b is None) or a is not None and b is not None and a.action != b.action:
            out.append(RouteChange(
                digest=d.digest or digest_hex(cls.fingerprint.digest),
                digest_text=d.digest_text,
                username=d.username,
                schemaname=d.schemaname,
                count_star=d.count_star,
                runtime_destination=_destination(a, d.username),
                memory_destination=_destination(b, d.username),
                runtime_reason=str(a.reason) if a else "",
                memory_reason=str(b.reason) if b else "",
                runtime_rules=",".join(map(str, a.rule_ids)) if a else "",
                memory_rules=",".join(map(str, b.rule_ids)) if b else "",
            ))
    out.sort(key=lambda c: -c.count_star)
    return out
