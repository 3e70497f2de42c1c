"""Routing policy as data: query rules, replication hostgroup pairs, rule sets and decisions.

Theory of operation
-------------------
This module owns the *shape* of routing policy, not its evaluation (that is `rules.engine`).

* `QueryRule` is one row of ProxySQL's ``mysql_query_rules`` with the same column names and
  defaults, plus three parser-only match columns (`match_kind`, `match_read_only`, `match_tables`)
  that use the sqlglot classification instead of regexes. Every rule is validated when it is built
  (directly or through `QueryRule.from_mapping`); its regexes are compiled once and kept on the rule.
* `validate_rules` turns a list of rows (config file tables, or admin ``mysql_query_rules`` rows) into
  rules and reports *every* error at once, each naming the rule_id and the column. Nothing here raises
  for a bad row inside `validate_rules`; `from_mapping` raises the first error of its row.
* `ReplicationHostgroup` is ProxySQL's ``mysql_replication_hostgroups`` row; `RuleSet` is the
  immutable runtime snapshot the engine reads once per statement: active rules sorted by rule_id,
  the writer/reader pairs, and lookup tables precomputed for the hot path.
* `Decision` is what the engine answers: an action (`RouteTo`, `Deny`, `Respond`) plus rewrite text,
  the ids of every matched rule (for ``stats_mysql_query_rules.hits``), per-statement attributes and a
  short reason code.

Deliberate differences from ProxySQL (documented where the column is declared):

* `active` defaults to True (ProxySQL's column default is 0): a rule written in the config file is
  meant to run. Write ``active = false`` to keep a rule loaded but off.
* Regexes are Python `re` (ProxySQL uses RE2 or PCRE); CASELESS maps to `re.IGNORECASE`. Backreferences
  in replace_pattern are written ``\\1`` in both.
* `digest` is rwproxy's own 64-bit fingerprint (`rules.digest`), not ProxySQL's hash: copy digests from
  rwproxy's stats, not from a ProxySQL instance.
* ProxySQL columns rwproxy does not implement (cache_ttl, retries, mirror_*, ...) are accepted only when
  NULL/absent: a value there is an error rather than a setting silently ignored.

Pure: stdlib + `rules.classify` only; no I/O, never imports proxy/ or admin/.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from .classify import Kind

__all__ = [
    "CAUSAL_READS",
    "CHECK_TYPES",
    "UNSUPPORTED_PROXYSQL_COLUMNS",
    "Action",
    "Decision",
    "Deny",
    "QueryRule",
    "Reads",
    "Reason",
    "ReplicationHostgroup",
    "ReplicationHostgroupError",
    "Respond",
    "RouteTo",
    "RuleError",
    "RuleSet",
    "validate_replication_hostgroups",
    "validate_rules",
]


# --------------------------------------------------------------------------------------------------
# errors


class RuleError(ValueError):
    """A query rule row is invalid. `rule_id` is None when the row has no usable rule_id."""

    def __init__(self, rule_id: int | None, column: str | None, reason: str) -> None:
        self.rule_id, self.column, self.reason = rule_id, column, reason
        where = f"rule {rule_id}" if rule_id is not None else "rule (no rule_id)"
        super().__init__(f"{where}: {column}: {reason}" if column else f"{where}: {reason}")


class ReplicationHostgroupError(ValueError):
    """A mysql_replication_hostgroups row is invalid (or inconsistent with the other rows)."""

    def __init__(self, writer_hostgroup: int | None, column: str | None, reason: str) -> None:
        self.writer_hostgroup, self.column, self.reason = writer_hostgroup, column, reason
        where = (
            f"replication hostgroup (writer {writer_hostgroup})"
            if writer_hostgroup is not None
            else "replication hostgroup"
        )
        super().__init__(f"{where}: {column}: {reason}" if column else f"{where}: {reason}")


# --------------------------------------------------------------------------------------------------
# query rules

# ProxySQL columns with no rwproxy implementation: allowed only when NULL (None) or absent.
UNSUPPORTED_PROXYSQL_COLUMNS = frozenset(
    {
        "cache_ttl",
        "cache_empty_result",
        "cache_timeout",
        "reconnect",
        "retries",
        "delay",
        "next_query_flagIN",
        "mirror_flagOUT",
        "mirror_hostgroup",
        "sticky_conn",
        "gtid_from_hostgroup",
        "attributes",
    }
)

_RE_MODIFIERS = ("CASELESS", "GLOBAL")
# MaxScale's causal_reads modes (readwritesplit): what a read after a write may see (proxy.causal).
CAUSAL_READS = ("none", "local", "fast", "global")
MAX_LAG_MS_LIMIT = 86_400_000  # a day: a bound beyond it is a typo, not a policy
_HEX_DIGEST = re.compile(r"0[xX][0-9a-fA-F]{1,16}")
_U64 = 1 << 64


def _compile_template(pattern: re.Pattern[str], repl: str) -> None:
    """Check a replacement template (group references) against its pattern, as re.sub would."""
    check = getattr(re, "_compile_template", None)  # 3.12+
    if check is not None:
        check(pattern, repl)
        return
    check = getattr(re, "_compile_repl", None)  # 3.11
    if check is not None:
        check(repl, pattern)


def _regex_reason(e: re.error) -> str:
    return f"regex does not compile: {e.msg}" + (f" at position {e.pos}" if e.pos is not None else "")


@dataclass(frozen=True, slots=True)
class QueryRule:
    """One ``mysql_query_rules`` row. None means NULL: "any" for a criterion, "no change" for an action.

    Criteria (all non-None ones must match): username, schemaname, flagIN, client_addr (exact, or a
    prefix when it ends with ``%``), proxy_addr, proxy_port, digest, match_digest (regex searched in the
    digest text), match_pattern (regex searched in the query text, or the text an earlier rule rewrote),
    negate_match_pattern (inverts match_digest and match_pattern, as in ProxySQL), match_kind,
    match_read_only, match_tables (the statement reads or writes any of these tables; ``t`` matches
    ``db.t`` in any schema, ``db.t`` matches ``t`` when the session's schema is ``db``).

    Actions: flagOUT, replace_pattern, destination_hostgroup, timeout (ms), multiplex (0/1/2), log,
    causal_reads (none/local/fast/global: overrides the user's mode), max_lag_ms (reads skip replicas
    the monitor sees lagging more; ProxySQL's name) -- the last matching rule that sets one wins;
    error_msg, OK_msg and apply stop the evaluation.
    """

    rule_id: int
    # ProxySQL's column default is 0 (inactive); ours is True: a rule in the config file is meant to run.
    active: bool = True
    username: str | None = None
    schemaname: str | None = None
    flagIN: int = 0
    client_addr: str | None = None
    proxy_addr: str | None = None
    proxy_port: int | None = None
    digest: int | None = None
    match_digest: str | None = None
    match_pattern: str | None = None
    negate_match_pattern: bool = False
    re_modifiers: str = "CASELESS"
    flagOUT: int | None = None
    replace_pattern: str | None = None
    destination_hostgroup: int | None = None
    timeout: int | None = None
    error_msg: str | None = None
    OK_msg: str | None = None
    multiplex: int | None = None
    log: bool | None = None
    apply: bool = False
    comment: str | None = None
    # consistent reads (issue 11): the statement's causal_reads mode, and its replication lag bound
    causal_reads: str | None = None
    max_lag_ms: int | None = None
    # parser-only criteria (not in ProxySQL)
    match_kind: frozenset[Kind] | None = None
    match_read_only: bool | None = None
    match_tables: frozenset[str] | None = None
    # derived, set in __post_init__; not compared, not part of the row
    match_digest_re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    match_pattern_re: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    replace_count: int = field(default=1, init=False, repr=False, compare=False)
    tables_bare: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    tables_qualified: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)
    # any criterion besides the two regexes (lets the engine skip nine None checks per rule)
    has_plain_criteria: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        s = object.__setattr__
        for col in ("match_kind", "match_tables"):  # accept any collection when built directly
            v = getattr(self, col)
            if isinstance(v, (list, tuple, set)):
                s(self, col, frozenset(v))
        errors = _semantic_errors(self.rule_id, lambda col: getattr(self, col))
        if errors:
            raise errors[0]
        caseless, global_ = _parse_modifiers(self.re_modifiers)
        flags = re.IGNORECASE if caseless else 0
        s(self, "re_modifiers", ",".join(m for m, on in zip(_RE_MODIFIERS, (caseless, global_)) if on))
        if self.match_digest is not None:
            s(self, "match_digest_re", re.compile(self.match_digest, flags))
        if self.match_pattern is not None:
            s(self, "match_pattern_re", re.compile(self.match_pattern, flags))
        s(self, "replace_count", 0 if global_ else 1)
        plain = (self.username, self.schemaname, self.proxy_port, self.proxy_addr, self.client_addr, self.digest,
                 self.match_kind, self.match_read_only, self.match_tables)
        s(self, "has_plain_criteria", any(v is not None for v in plain))
        if self.match_tables is not None:
            s(self, "tables_bare", frozenset(t for t in self.match_tables if "." not in t))
            s(self, "tables_qualified", frozenset(t for t in self.match_tables if "." in t))

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> QueryRule:
        """Build a rule from a config-file table or an admin row; raise the row's first RuleError."""
        rule, errors = _rule_from_mapping(d)
        if errors:
            raise errors[0]
        assert rule is not None
        return rule

    @property
    def has_criteria(self) -> bool:
        return any(
            v is not None
            for v in (
                self.username, self.schemaname, self.client_addr, self.proxy_addr, self.proxy_port,
                self.digest, self.match_digest, self.match_pattern, self.match_kind,
                self.match_read_only, self.match_tables,
            )
        )


_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in QueryRule.__dataclass_fields__.values() if f.init and f.name != "rule_id"
}


def _parse_modifiers(value: str) -> tuple[bool, bool]:
    """"CASELESS,GLOBAL" -> (caseless, global). Raises ValueError naming an unknown modifier."""
    caseless = global_ = False
    for raw in value.split(","):
        m = raw.strip().upper()
        if not m:
            continue
        if m == "CASELESS":
            caseless = True
        elif m == "GLOBAL":
            global_ = True
        else:
            raise ValueError(f"unknown modifier {raw.strip()!r} (known: CASELESS, GLOBAL)")
    return caseless, global_


def _semantic_errors(rid: Any, get: Any) -> list[RuleError]:
    """Checks that need the whole row; every directly built rule passes them too.

    `get(column)` returns the column's value (QueryRule attribute, or a parsed row's value)."""
    r = SimpleNamespace(**{c: get(c) for c in _DEFAULTS})
    out: list[RuleError] = []

    def err(column: str, reason: str) -> None:
        out.append(RuleError(rid, column, reason))

    if type(rid) is not int or rid < 0:
        return [RuleError(None, "rule_id", f"expected a non-negative integer, got {rid!r}")]
    for col, kind in _COLUMNS.items():
        v = getattr(r, col, None)
        if v is None:
            continue
        if kind == "bool" and type(v) is not bool:
            err(col, f"expected true/false, got {v!r}")
        elif kind == "str" and not isinstance(v, str):
            err(col, f"expected a string, got {v!r}")
    for col in ("flagIN",):
        v = getattr(r, col)
        if type(v) is not int or v < 0:
            err(col, f"expected a non-negative integer, got {v!r}")
    for col in ("flagOUT", "destination_hostgroup", "timeout"):
        v = getattr(r, col)
        if v is not None and (type(v) is not int or v < 0):
            err(col, f"expected a non-negative integer, got {v!r}")
    if r.max_lag_ms is not None and (type(r.max_lag_ms) is not int or not 0 <= r.max_lag_ms <= MAX_LAG_MS_LIMIT):
        err("max_lag_ms", f"expected milliseconds 0..{MAX_LAG_MS_LIMIT}, got {r.max_lag_ms!r}")
    if r.causal_reads is not None and r.causal_reads not in CAUSAL_READS:
        err("causal_reads", f"expected one of {', '.join(CAUSAL_READS)} (or NULL: the user's mode), got {r.causal_reads!r}")
    if r.proxy_port is not None and (type(r.proxy_port) is not int or not 0 < r.proxy_port < 65536):
        err("proxy_port", f"expected a port number 1..65535, got {r.proxy_port!r}")
    if r.multiplex is not None and r.multiplex not in (0, 1, 2):
        err("multiplex", f"expected 0, 1 or 2, got {r.multiplex!r}")
    if r.digest is not None and (type(r.digest) is not int or not 0 <= r.digest < _U64):
        err("digest", f"expected a 64-bit unsigned integer, got {r.digest!r}")
    for col in ("username", "schemaname", "client_addr", "proxy_addr", "match_digest", "match_pattern", "error_msg"):
        v = getattr(r, col)
        if v == "":
            err(col, "empty string; leave the column out (NULL) to match anything" if col != "error_msg"
                else "empty error message; say why the query is blocked")
    if r.client_addr is not None and "%" in r.client_addr[:-1]:
        err("client_addr", "'%' is only allowed as the last character (prefix match)")
    caseless = True
    if isinstance(r.re_modifiers, str):
        try:
            caseless, _ = _parse_modifiers(r.re_modifiers)
        except ValueError as e:
            err("re_modifiers", str(e))
    flags = re.IGNORECASE if caseless else 0
    compiled: dict[str, re.Pattern[str]] = {}
    for col in ("match_digest", "match_pattern"):
        v = getattr(r, col)
        if v and isinstance(v, str):
            try:
                compiled[col] = re.compile(v, flags)
            except re.error as e:
                err(col, f"{_regex_reason(e)} (pattern {v!r})")
    if r.replace_pattern is not None:
        if r.match_pattern is None:
            err("replace_pattern", "needs match_pattern (the regex whose matches it replaces)")
        elif "match_pattern" in compiled and isinstance(r.replace_pattern, str):
            try:
                _compile_template(compiled["match_pattern"], r.replace_pattern)
            except re.error as e:
                err("replace_pattern", f"invalid replacement for match_pattern {r.match_pattern!r}: {e.msg}")
        if r.negate_match_pattern:
            err("replace_pattern", "cannot be combined with negate_match_pattern (nothing matched to replace)")
    if r.error_msg is not None and r.OK_msg is not None:
        err("OK_msg", "error_msg and OK_msg are both set; a rule either blocks or answers OK")
    if r.match_kind is not None:
        if not isinstance(r.match_kind, frozenset):
            err("match_kind", f"expected a set of statement kinds, got {r.match_kind!r}")
        elif not r.match_kind:
            err("match_kind", "empty set never matches; leave the column out to match any kind")
        elif not all(isinstance(k, Kind) for k in r.match_kind):
            err("match_kind", f"expected a set of Kind, got {sorted(map(str, r.match_kind))}")
    if r.match_tables is not None:
        if not isinstance(r.match_tables, frozenset):
            err("match_tables", f"expected a set of table names, got {r.match_tables!r}")
        elif not r.match_tables:
            err("match_tables", "empty set never matches; leave the column out to match any table")
        else:
            for t in r.match_tables:
                if not isinstance(t, str) or not t or t != t.lower() or t.count(".") > 1 or t.startswith(".") or t.endswith("."):
                    err("match_tables", f"bad table name {t!r} (expected lower-case 't' or 'db.t')")
                    break
    return out


# column -> kind of value from_mapping accepts
_COLUMNS: dict[str, str] = {
    "rule_id": "int",
    "active": "bool",
    "username": "str",
    "schemaname": "str",
    "flagIN": "int",
    "client_addr": "str",
    "proxy_addr": "str",
    "proxy_port": "int",
    "digest": "digest",
    "match_digest": "str",
    "match_pattern": "str",
    "negate_match_pattern": "bool",
    "re_modifiers": "str",
    "flagOUT": "int",
    "replace_pattern": "str",
    "destination_hostgroup": "int",
    "timeout": "int",
    "error_msg": "str",
    "OK_msg": "str",
    "multiplex": "int",
    "log": "bool",
    "apply": "bool",
    "comment": "str",
    "match_kind": "kinds",
    "match_read_only": "bool",
    "match_tables": "tables",
    "causal_reads": "str",
    "max_lag_ms": "int",
}
_NOT_NULL = {"rule_id", "active", "flagIN", "negate_match_pattern", "re_modifiers", "apply"}
_CANONICAL = {c.lower(): c for c in (*_COLUMNS, *UNSUPPORTED_PROXYSQL_COLUMNS)}


def _type_name(v: Any) -> str:
    return f"{type(v).__name__} {v!r}"


def _coerce(col: str, kind: str, v: Any) -> Any:
    """Convert one value to the column's type; raise ValueError(reason)."""
    if kind == "int":
        if type(v) is not int:
            raise ValueError(f"expected an integer, got {_type_name(v)}")
        return v
    if kind == "bool":
        # SQLite and ProxySQL use 0/1; TOML/JSON use true/false.
        if type(v) is bool:
            return v
        if type(v) is int and v in (0, 1):
            return bool(v)
        raise ValueError(f"expected true/false (or 0/1), got {_type_name(v)}")
    if kind == "str":
        if not isinstance(v, str):
            raise ValueError(f"expected a string, got {_type_name(v)}")
        return v
    if kind == "digest":
        if type(v) is int:
            return v
        if isinstance(v, str) and _HEX_DIGEST.fullmatch(v.strip()):
            return int(v.strip(), 16)
        raise ValueError(f"expected an integer or a hex string like '0x3A5F0C1D2E4B6F70', got {_type_name(v)}")
    if kind in ("kinds", "tables"):
        if isinstance(v, str):
            items = [p.strip() for p in v.split(",")]
        elif isinstance(v, (list, tuple, set, frozenset)):
            items = list(v)
        else:
            raise ValueError(f"expected a list of names or a comma-separated string, got {_type_name(v)}")
        if not all(isinstance(i, str) and i for i in items):
            raise ValueError(f"expected non-empty names, got {v!r}")
        if not items:
            raise ValueError("empty list never matches; leave the column out")
        if kind == "kinds":
            bad = [i for i in items if i.upper() not in Kind.__members__]
            if bad:
                raise ValueError(f"unknown statement kind {bad[0]!r} (known: {', '.join(Kind.__members__)})")
            return frozenset(Kind[i.upper()] for i in items)
        return frozenset(i.replace("`", "").lower() for i in items)
    raise AssertionError(kind)  # pragma: no cover


def _rule_from_mapping(d: Mapping[str, Any]) -> tuple[QueryRule | None, list[RuleError]]:
    """Parse one row, collecting every error in it."""
    if not isinstance(d, Mapping):
        return None, [RuleError(None, None, f"expected a table of columns, got {_type_name(d)}")]
    errors: list[RuleError] = []
    values: dict[str, Any] = {}
    seen: dict[str, str] = {}
    raw_id = None
    for key, v in d.items():
        col = _CANONICAL.get(key.lower()) if isinstance(key, str) else None
        if col == "rule_id":
            raw_id = v
    rid = raw_id if type(raw_id) is int and raw_id >= 0 else None
    if raw_id is None:
        errors.append(RuleError(None, "rule_id", "required"))
    elif rid is None:
        errors.append(RuleError(None, "rule_id", f"expected a non-negative integer, got {_type_name(raw_id)}"))
    for key, v in d.items():
        col = _CANONICAL.get(key.lower()) if isinstance(key, str) else None
        if col is None:
            errors.append(RuleError(rid, str(key), "unknown column (see the mysql_query_rules columns in docs)"))
            continue
        if col in seen:
            errors.append(RuleError(rid, col, f"given twice (as {seen[col]!r} and {key!r})"))
            continue
        seen[col] = key
        if col == "rule_id":
            continue
        if col in UNSUPPORTED_PROXYSQL_COLUMNS:
            if v is not None and not (col == "attributes" and v in ("", "{}")):
                errors.append(RuleError(rid, col, "ProxySQL column not supported by rwproxy; leave it NULL/out"))
            continue
        if v is None:
            if col in _NOT_NULL:
                errors.append(RuleError(rid, col, "cannot be NULL"))
            continue
        try:
            values[col] = _coerce(col, _COLUMNS[col], v)
        except ValueError as e:
            errors.append(RuleError(rid, col, str(e)))
    if rid is None:
        return None, errors
    # Whole-row checks run on what did parse, so one pass reports everything; a column that already
    # has a type error is not reported twice.
    bad_columns = {e.column for e in errors}
    errors.extend(e for e in _semantic_errors(rid, lambda c: values.get(c, _DEFAULTS[c])) if e.column not in bad_columns)
    if errors:
        return None, errors
    return QueryRule(rule_id=rid, **values), []


def validate_rules(rows: Iterable[Mapping[str, Any]]) -> tuple[list[QueryRule], list[RuleError]]:
    """Parse every row; return the valid rules (first of each rule_id) and ALL errors, in row order.

    A caller that must be all-or-nothing (config load, LOAD MYSQL QUERY RULES TO RUNTIME) refuses the
    whole set when the error list is not empty and reports every entry.
    """
    rules: list[QueryRule] = []
    errors: list[RuleError] = []
    first_row: dict[int, int] = {}
    for i, row in enumerate(rows):
        rule, errs = _rule_from_mapping(row)
        errors.extend(errs)
        rid = rule.rule_id if rule is not None else (
            row.get("rule_id") if isinstance(row, Mapping) and type(row.get("rule_id")) is int else None
        )
        if rid is not None:
            if rid in first_row:
                errors.append(RuleError(rid, "rule_id", f"duplicate rule_id (row {i + 1}; first at row {first_row[rid] + 1})"))
                continue
            first_row[rid] = i
        if rule is not None:
            rules.append(rule)
    return rules, errors


# --------------------------------------------------------------------------------------------------
# replication hostgroups

CHECK_TYPES = (
    "read_only",
    "innodb_read_only",
    "super_read_only",
    "read_only|innodb_read_only",
    "read_only&innodb_read_only",
)


@dataclass(frozen=True, slots=True)
class ReplicationHostgroup:
    """ProxySQL's ``mysql_replication_hostgroups``: the monitor keeps read_only=0 servers in the writer
    hostgroup and read_only=1 servers in the reader hostgroup.

    `writer_is_also_reader` is not a column of ProxySQL's mysql_replication_hostgroups; it mirrors the
    global ``mysql-monitor_writer_is_also_reader`` (default true): the writer is also placed in the reader
    hostgroup, so reads keep working with no replica. It is about server membership, never about routing
    writes to the reader hostgroup.
    """

    writer_hostgroup: int
    reader_hostgroup: int
    writer_is_also_reader: bool = True
    check_type: str = "read_only"
    comment: str = ""

    def __post_init__(self) -> None:
        errors = _hostgroup_errors(self)
        if errors:
            raise errors[0]

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> ReplicationHostgroup:
        hg, errors = _hostgroup_from_mapping(d)
        if errors:
            raise errors[0]
        assert hg is not None
        return hg


def _hostgroup_errors(h: ReplicationHostgroup) -> list[ReplicationHostgroupError]:
    w = h.writer_hostgroup if type(h.writer_hostgroup) is int else None
    out = []
    for col in ("writer_hostgroup", "reader_hostgroup"):
        v = getattr(h, col)
        if type(v) is not int or v < 0:
            out.append(ReplicationHostgroupError(w, col, f"expected a non-negative integer, got {v!r}"))
    if not out and h.writer_hostgroup == h.reader_hostgroup:
        out.append(ReplicationHostgroupError(w, "reader_hostgroup", "must differ from writer_hostgroup"))
    if type(h.writer_is_also_reader) is not bool:
        out.append(ReplicationHostgroupError(w, "writer_is_also_reader", f"expected true/false, got {h.writer_is_also_reader!r}"))
    if h.check_type not in CHECK_TYPES:
        out.append(ReplicationHostgroupError(w, "check_type", f"expected one of {', '.join(CHECK_TYPES)}, got {h.check_type!r}"))
    if not isinstance(h.comment, str):
        out.append(ReplicationHostgroupError(w, "comment", f"expected a string, got {h.comment!r}"))
    return out


_HG_COLUMNS = {"writer_hostgroup": "int", "reader_hostgroup": "int", "writer_is_also_reader": "bool",
               "check_type": "str", "comment": "str"}


def _hostgroup_from_mapping(d: Mapping[str, Any]) -> tuple[ReplicationHostgroup | None, list[ReplicationHostgroupError]]:
    if not isinstance(d, Mapping):
        return None, [ReplicationHostgroupError(None, None, f"expected a table of columns, got {_type_name(d)}")]
    w = d.get("writer_hostgroup") if type(d.get("writer_hostgroup")) is int else None
    errors: list[ReplicationHostgroupError] = []
    values: dict[str, Any] = {}
    for key, v in d.items():
        kind = _HG_COLUMNS.get(key) if isinstance(key, str) else None
        if kind is None:
            errors.append(ReplicationHostgroupError(w, str(key), "unknown column"))
            continue
        if v is None:
            if key in ("writer_hostgroup", "reader_hostgroup"):
                errors.append(ReplicationHostgroupError(w, key, "cannot be NULL"))
            continue
        try:
            values[key] = _coerce(key, kind, v)
        except ValueError as e:
            errors.append(ReplicationHostgroupError(w, key, str(e)))
    for key in ("writer_hostgroup", "reader_hostgroup"):
        if key not in d:
            errors.append(ReplicationHostgroupError(w, key, "required"))
    if errors:
        return None, errors
    try:
        return ReplicationHostgroup(**values), []
    except ReplicationHostgroupError:
        probe = ReplicationHostgroup.__new__(ReplicationHostgroup)
        for f in ReplicationHostgroup.__dataclass_fields__.values():
            object.__setattr__(probe, f.name, values.get(f.name, f.default))
        return None, _hostgroup_errors(probe)


def _pair_conflicts(
    pairs: Iterable[ReplicationHostgroup],
) -> list[tuple[ReplicationHostgroupError, ReplicationHostgroup]]:
    """Errors between pairs, each with the pair it rejects.

    ProxySQL: writer_hostgroup is the primary key, reader_hostgroup is UNIQUE. We also refuse a
    hostgroup that is a writer in one pair and a reader in another: the monitor would put read_only=1
    and read_only=0 servers in it, and "is this a reader hostgroup?" would have no single answer."""
    out = []
    writers: dict[int, ReplicationHostgroup] = {}
    readers: dict[int, ReplicationHostgroup] = {}
    for p in pairs:
        if p.writer_hostgroup in writers:
            out.append((ReplicationHostgroupError(p.writer_hostgroup, "writer_hostgroup", "duplicate writer_hostgroup"), p))
        elif p.reader_hostgroup in readers:
            other = readers[p.reader_hostgroup].writer_hostgroup
            out.append((ReplicationHostgroupError(
                p.writer_hostgroup, "reader_hostgroup",
                f"reader hostgroup {p.reader_hostgroup} is already paired with writer {other}"), p))
        else:
            writers[p.writer_hostgroup] = p
            readers[p.reader_hostgroup] = p
    for hg, p in readers.items():
        if hg in writers:
            out.append((ReplicationHostgroupError(
                writers[hg].writer_hostgroup, "writer_hostgroup",
                f"hostgroup {hg} is the writer of this pair and the reader of writer {p.writer_hostgroup}"), writers[hg]))
    return out


def validate_replication_hostgroups(
    rows: Iterable[Mapping[str, Any]],
) -> tuple[list[ReplicationHostgroup], list[ReplicationHostgroupError]]:
    """Parse every row and check the pairs against each other; report ALL errors."""
    pairs: list[ReplicationHostgroup] = []
    errors: list[ReplicationHostgroupError] = []
    for row in rows:
        p, errs = _hostgroup_from_mapping(row)
        errors.extend(errs)
        if p is not None:
            pairs.append(p)
    conflicts = _pair_conflicts(pairs)
    errors.extend(e for e, _ in conflicts)
    rejected = [p for _, p in conflicts]
    return [p for p in pairs if not any(p is r for r in rejected)], errors


# --------------------------------------------------------------------------------------------------
# decisions


@dataclass(frozen=True, slots=True)
class RouteTo:
    """Run the statement on a server of this hostgroup."""

    hostgroup: int


@dataclass(frozen=True, slots=True)
class Deny:
    """Do not run the statement; answer ERR. Defaults are ProxySQL's for error_msg rules (1148, 42000)."""

    error_msg: str
    errno: int = 1148
    sqlstate: str = "42000"


@dataclass(frozen=True, slots=True)
class Respond:
    """Do not run the statement; answer OK with this info message."""

    ok_msg: str


Action = RouteTo | Deny | Respond


@dataclass(frozen=True, slots=True)
class Reads:
    """What a read must see (consistent reads, issue 11), when a rule or a hint says so.

    `causal_reads`: a rule's mode, overriding the user's (None: the user's). `max_lag_ms`: the read
    runs only on a replica the monitor sees at most that far behind (None: no bound);
    `max_lag_from` and `causal_reads_from` name where they came from ("hint", "rule N")."""

    causal_reads: str | None = None
    max_lag_ms: int | None = None
    max_lag_from: str | None = None
    causal_reads_from: str | None = None


class Reason(enum.StrEnum):
    """Why the destination was chosen (machine-friendly; compares equal to its string value)."""

    RULE = "rule"  # a query rule chose the destination, or blocked/answered (Deny/Respond)
    DEFAULT_READ = "default-read"  # no rule: provably read-only -> reader hostgroup of the writer
    DEFAULT_WRITE = "default-write"  # no rule: anything else -> the session's writer (default_hostgroup)
    TRANSACTION_START = "transaction-start"  # BEGIN / START TRANSACTION / SET autocommit=0 with no rule
    TRANSACTION = "transaction"  # inside a transaction: stays where the transaction runs
    READ_ONLY_TRANSACTION = "read-only-transaction"  # a write inside a transaction running on a reader
    HINT = "hint"  # a comment hint (route=..., hostgroup=N)
    PINNED_WRITER = "pinned-writer"  # session (or this statement) is tied to the writer
    WRITE_SAFETY = "write-safety"  # a write was headed for a reader hostgroup: sent to its writer
    NO_READER_ONLINE = "no-reader-online"  # reader hostgroup has no ONLINE server: fell back to the writer
    SERVER_SPECIFIC = "server-specific"  # a read about the server itself (@@global, information_schema): the writer's


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer for one statement.

    `sql` is the rewritten query text when a replace_pattern applied (send it instead of the client's),
    else None. `rule_ids` lists every rule that matched, in evaluation order (hit counters).
    `timeout_ms`, `multiplex`, `log` are None when no matching rule set them; `reads` is None unless a
    rule set causal_reads or max_lag_ms, or a hint max_lag_ms (one check on the hot path). `pin_writer` says this
    statement ties the session to the writer from now on (untrackable SET, user variables, temporary
    table, LOCK TABLES, GET_LOCK, PREPARE); the proxy records the pin and passes `pinned_writer=True`
    in later SessionViews.
    """

    action: Action
    reason: Reason
    sql: str | None = None
    rule_ids: tuple[int, ...] = ()
    timeout_ms: int | None = None
    multiplex: int | None = None
    log: bool | None = None
    pin_writer: bool = False
    reads: Reads | None = None

    @property
    def hostgroup(self) -> int | None:
        """Destination hostgroup, or None when the statement is answered by the proxy (Deny/Respond)."""
        a = self.action
        return a.hostgroup if type(a) is RouteTo else None


# --------------------------------------------------------------------------------------------------
# rule set


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Immutable runtime snapshot of routing policy, read once per statement.

    `rules` keeps only active rules, sorted by rule_id (construction normalises whatever is given).
    Construction raises RuleError on duplicate rule_ids and ReplicationHostgroupError on inconsistent
    pairs; use `validate_rules` / `validate_replication_hostgroups` first to report every error.
    """

    rules: tuple[QueryRule, ...] = ()
    replication_hostgroups: tuple[ReplicationHostgroup, ...] = ()
    # A read headed for a reader hostgroup with no ONLINE server goes to that pair's writer instead.
    reader_fallback_to_writer: bool = True
    # derived lookup tables (hot path)
    reader_of: Mapping[int, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    writer_of: Mapping[int, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    reader_hostgroups: frozenset[int] = field(default=frozenset(), init=False, repr=False, compare=False)
    needs_sql: bool = field(default=False, init=False, repr=False, compare=False)
    _decisions: dict[tuple[int, str, bool], Decision] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        s = object.__setattr__
        seen: set[int] = set()
        for r in self.rules:
            if r.rule_id in seen:
                raise RuleError(r.rule_id, "rule_id", "duplicate rule_id")
            seen.add(r.rule_id)
        s(self, "rules", tuple(sorted((r for r in self.rules if r.active), key=lambda r: r.rule_id)))
        pairs = tuple(self.replication_hostgroups)
        conflicts = _pair_conflicts(pairs)
        if conflicts:
            raise conflicts[0][0]
        s(self, "replication_hostgroups", pairs)
        s(self, "reader_of", {p.writer_hostgroup: p.reader_hostgroup for p in pairs})
        s(self, "writer_of", {p.reader_hostgroup: p.writer_hostgroup for p in pairs})
        s(self, "reader_hostgroups", frozenset(p.reader_hostgroup for p in pairs))
        s(self, "needs_sql", any(r.match_pattern is not None for r in self.rules))
        s(self, "_decisions", {})

    def reader_hostgroup_of(self, writer_hostgroup: int) -> int | None:
        """The reader hostgroup paired with this writer hostgroup, or None if it has no pair."""
        return self.reader_of.get(writer_hostgroup)

    def writer_hostgroup_of(self, reader_hostgroup: int) -> int | None:
        return self.writer_of.get(reader_hostgroup)

    def is_reader_hostgroup(self, hostgroup: int) -> bool:
        """True when the hostgroup is the reader side of a replication pair (never a writer)."""
        return hostgroup in self.reader_hostgroups

    def route(self, hostgroup: int, reason: Reason, pin_writer: bool = False) -> Decision:
        """A shared Decision for the common rule-less outcomes (no per-statement allocation)."""
        key = (hostgroup, reason, pin_writer)
        d = self._decisions.get(key)
        if d is None:
            d = self._decisions[key] = Decision(RouteTo(hostgroup), reason, pin_writer=pin_writer)
        return d
