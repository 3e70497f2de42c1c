"""decide(): where one classified statement runs, given the session and the rule set.

Theory of operation
-------------------
`decide(cls, view, ruleset, online_hostgroups)` is a pure function of a `Classification`
(`rules.classify`), a `SessionView` (the proxy's snapshot of the client session), a `RuleSet`
(`rules.model`) and the set of hostgroups that have an ONLINE server right now. It does no I/O, keeps
no state between calls (the only cache is the RuleSet's table of shared Decisions) and never raises
for a well-formed input. The proxy calls it once per statement; `rules.explain` calls the very same
code with a trace list to show its work.

The steps, in order:

1. **Query rules** (ProxySQL ``mysql_query_rules`` semantics). The flag starts at 0; active rules are
   scanned in rule_id order; a rule is considered only when its flagIN equals the current flag; all its
   non-NULL criteria must match (username, schemaname, client_addr exact or ``prefix%``, proxy_addr,
   proxy_port, digest, match_digest searched in the digest text, match_pattern searched in the query
   text -- or the text an earlier rule rewrote --, negate_match_pattern inverting both regexes,
   match_kind, match_read_only, match_tables). On a match: its rule_id is recorded; flagOUT sets the
   flag for the rules *after* it (the scan continues, it does not restart: ProxySQL's source with
   ``mysql-query_processor_iterations=0``); replace_pattern rewrites the text (all matches with GLOBAL,
   else the first); destination_hostgroup, timeout, multiplex, log: the last rule that sets one wins;
   causal_reads and max_lag_ms (consistent reads: `Decision.reads`) likewise;
   error_msg -> stop and Deny; OK_msg -> stop and Respond; apply -> stop.
   Rules are evaluated inside transactions too (as in ProxySQL): a blocking rule must not be bypassed
   by wrapping the statement in BEGIN ... COMMIT. Only their destination is ignored there (step 2).
2. **Transaction persistence**. When the session is in a transaction and transaction_persistent is on
   (the default, like ProxySQL's user default), the statement runs where the transaction runs
   (`txn_hostgroup`), or on the writer when that is not known yet (the session said BEGIN or
   ``SET autocommit=0`` and its next statement must not be the first one of a transaction opened on a
   replica -- ProxySQL's best-known routing bug). Destination from rules and hints is ignored.
   A transaction can only run on a reader hostgroup because it was started READ ONLY (step 5); a
   statement there that may write (not read-only, and not transaction control, SET, USE, SHOW,
   DESCRIBE, EXPLAIN or SELECT, which the server's READ ONLY transaction mode protects) is denied with
   MySQL's own ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION instead of being sent to a replica.
3. **Rule destination**: the destination_hostgroup of the last matching rule that set one.
4. **Comment hints** (`Fingerprint.hints`) override rules: ``route=writer`` -> the session's writer,
   ``route=reader`` -> the reader hostgroup paired with it (the writer when there is no pair),
   ``hostgroup=N`` -> N. Unusable hints (``hostgroup=abc``) are ignored.
5. **Defaults** when nothing chose: BEGIN / START TRANSACTION -> the writer, or with
   START TRANSACTION READ ONLY the writer's reader hostgroup for the whole transaction;
   ``SET autocommit=0`` -> the writer (the proxy then reports in_transaction); a provably read-only
   statement -> the writer's reader hostgroup (the writer when it has no replication pair); anything
   else -> the writer (`view.default_hostgroup`).
6. **Writer pin**: a session tied to the writer (`view.pinned_writer`) or a statement that ties it
   (`pin_reason`, reported as Decision.pin_writer) runs on the writer whatever rules or hints say.
7. **Write safety** -- the product's one non-negotiable, enforced HERE: a statement that is not
   provably read-only never goes to a reader hostgroup of a replication pair, whatever rules or hints
   say. It is sent to that pair's writer instead (reason "write-safety"; the matched rule_ids stay in
   the Decision for explain and hit counters). Only START TRANSACTION READ ONLY is let through besides
   read-only statements: the server itself refuses writes in that transaction. A hostgroup cannot be
   both a reader and a writer (RuleSet refuses such pairs), and writer_is_also_reader puts the writer's
   servers in the reader hostgroup for reads -- it never lets writes into the reader hostgroup.
8. **Reader availability**: a reader hostgroup with no ONLINE server is replaced by its writer when
   `ruleset.reader_fallback_to_writer` (reason "no-reader-online"); otherwise it is kept and the proxy
   answers with an error naming the hostgroup.
9. **Consistent reads** (`Decision.reads`): the matched rules' causal_reads (the statement's mode,
   overriding the user's) and max_lag_ms, and a ``max_lag_ms=N`` hint (wins over a rule's). The
   engine only says what the read must see; the proxy picks the server (proxy.command_loop).

What decide must never do: consult anything but its arguments, route a possible write to a reader
hostgroup, or allocate per call on the rule-less path (shared Decisions come from `RuleSet.route`).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

from .classify import Classification, Kind, SetScope
from .model import MAX_LAG_MS_LIMIT, Decision, Deny, QueryRule, Reads, Reason, Respond, RouteTo, RuleSet

__all__ = [
    "TRACKED_VARIABLES",
    "SessionView",
    "Trace",
    "decide",
    "is_tracked_variable",
    "pin_reason",
    "replayable_set",
    "starts_transaction",
]

# Session variables the proxy tracks and replays on whichever backend connection it borrows
# (SET NAMES / SET CHARACTER SET and SET SESSION TRANSACTION ... are tracked by scope). A SET of
# anything else cannot be replayed, so it pins the session to the writer. Must stay equal to what
# proxy/session.py can replay: the engine may only say "no pin" for what the session replays.
TRACKED_VARIABLES = frozenset(
    """
    autocommit sql_mode time_zone character_set_client character_set_connection character_set_results
    character_set_database collation_connection transaction_isolation tx_isolation transaction_read_only
    tx_read_only sql_select_limit sql_safe_updates foreign_key_checks unique_checks group_concat_max_len
    max_execution_time max_statement_time lc_time_names lc_messages wait_timeout interactive_timeout
    net_read_timeout net_write_timeout innodb_lock_wait_timeout lock_wait_timeout sql_auto_is_null
    sql_big_selects sql_quote_show_create div_precision_increment default_storage_engine
    default_tmp_storage_engine big_tables max_join_size max_sort_length optimizer_search_depth
    optimizer_switch sort_buffer_size join_buffer_size tmp_table_size max_heap_table_size
    auto_increment_increment auto_increment_offset timestamp profiling sql_notes sql_warnings
    session_track_schema session_track_state_change session_track_system_variables
    session_track_transaction_info long_query_time sql_log_off
    """.split()
)


def is_tracked_variable(name: str) -> bool:
    return name.lower() in TRACKED_VARIABLES


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionView:
    """What the engine may know about the client session (the proxy builds it per statement)."""

    default_hostgroup: int  # the user's writer hostgroup
    username: str | None = None
    schemaname: str | None = None
    client_addr: str | None = None  # client IP as text; None for a unix socket
    proxy_addr: str | None = None  # listener address the client connected to
    proxy_port: int | None = None  # listener port the client connected to
    transaction_persistent: bool = True  # ProxySQL's mysql_users default
    # server said IN_TRANS, or the session sent BEGIN / START TRANSACTION, or autocommit is off
    in_transaction: bool = False
    txn_hostgroup: int | None = None  # where the open transaction runs (None: not known yet)
    autocommit: bool = True  # informational: in_transaction already accounts for autocommit=0
    # the session did something that ties it to the writer (untrackable SET, user variables,
    # temporary tables, GET_LOCK, LOCK TABLES, PREPARE)
    pinned_writer: bool = False


# A trace is a list the engine appends (step, detail) pairs to; None on the hot path.
Trace = list[tuple[str, str]]

_BEGIN = Kind.BEGIN
_SET = Kind.SET
_LOCK_TABLES = Kind.LOCK_TABLES
_PREPARE = Kind.PREPARE
_USER = SetScope.USER
_GLOBAL = SetScope.GLOBAL
_SESSION = SetScope.SESSION
_TRANSACTION = SetScope.TRANSACTION
_NAMES_SCOPES = frozenset({SetScope.NAMES, SetScope.CHARSET})
_AUTOCOMMIT_OFF = frozenset({"0", "OFF", "FALSE"})

# In a transaction running on a reader hostgroup these still run there (transaction control, session
# state, and statements the server's READ ONLY transaction mode protects); anything else that is not
# read-only is denied rather than sent to a replica.
_READER_TXN_KINDS = frozenset(
    {
        Kind.SELECT,
        Kind.SHOW,
        Kind.DESCRIBE,
        Kind.EXPLAIN,
        Kind.SET,
        Kind.USE,
        Kind.COMMIT,
        Kind.ROLLBACK,
        Kind.SAVEPOINT,
        Kind.RELEASE_SAVEPOINT,
    }
)
_READ_ONLY_TXN_MSG = (
    "Cannot execute statement in a READ ONLY transaction: it runs on reader hostgroup {hg}. "
    "COMMIT it first, or start the transaction without READ ONLY to write."
)

def _unquote(v: str) -> str:
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[1:-1]
    return v


def starts_transaction(cls: Classification) -> bool:
    """BEGIN / START TRANSACTION, or SET autocommit=0 (the next statements are in a transaction)."""
    if cls.kind is _BEGIN:
        return True
    if cls.kind is _SET:
        for t in cls.set_targets:
            if (
                t.scope is _SESSION
                and t.name == "autocommit"
                and t.value is not None
                and _unquote(t.value).upper() in _AUTOCOMMIT_OFF
            ):
                return True
    return False


def pin_reason(cls: Classification) -> str | None:
    """Why this statement ties the session to the writer, or None.

    A read-only statement never pins (the classifier already excluded user variables, GET_LOCK, temporary
    tables ... from read_only). SET GLOBAL changes no session state, so it never pins by itself.
    SET SESSION TRANSACTION ... is tracked; SET TRANSACTION ... without SESSION (the classifier names
    it ``next_transaction_isolation`` / ``next_transaction_read_only``) holds for the next transaction
    of *that* connection only, so it cannot be replayed: it pins.
    """
    if cls.read_only:
        return None
    if cls.assigns_user_vars:
        return "assigns a user variable"
    if cls.temp_table == "CREATE":
        return "creates a temporary table"
    kind = cls.kind
    if kind is _LOCK_TABLES:
        return "LOCK TABLES"
    if kind is _PREPARE:
        return "PREPARE (text-protocol prepared statements live on one connection)"
    if "GET_LOCK" in cls.session_functions:
        return "GET_LOCK()"
    if kind is _SET and (cls.parse_error is not None or not cls.set_targets):
        # What it would change is unknown, so it cannot be replayed: it stays where it ran.
        return "a SET the proxy could not parse"
    for t in cls.set_targets:
        scope = t.scope
        if scope is _USER:
            return f"SET @{t.name}"
        if scope is _GLOBAL:
            continue
        if t.value is None:
            if scope is _SESSION and is_tracked_variable(t.name):
                # The server reports the value it computed (session_track_system_variables): the
                # proxy replays that (proxy.session.SessionState.apply), or pins if it did not.
                continue
            return f"SET {t.name} = <expression> (value cannot be replayed)"
        if scope is _TRANSACTION and t.name.startswith("next_"):
            return f"SET TRANSACTION {t.name[5:]} (next transaction of this connection only)"
        if scope not in _NAMES_SCOPES and not is_tracked_variable(t.name):
            return f"SET of untracked variable {t.name}"
    return None


def replayable_set(cls: Classification) -> bool:
    """A SET that changes only session state the proxy tracks and replays (SET NAMES, sql_mode,
    time_zone, ... with literal values; no GLOBAL, no user variable, no autocommit=0): it may run on
    any server of the session's replication pair, since its effect is recorded and replayed wherever
    the session's next statements run (the proxy runs it on a reader while the writer is down)."""
    if cls.kind is not _SET or cls.parse_error is not None or not cls.set_targets or cls.multi_statement:
        return False
    return all(t.scope is not _GLOBAL for t in cls.set_targets) and pin_reason(cls) is None and not starts_transaction(cls)


class _Matched:
    """Accumulated effect of the matching rules (only allocated when some rule matched)."""

    __slots__ = ("causal_reads", "causal_reads_rule", "destination", "log", "max_lag_ms", "max_lag_rule", "multiplex", "rule_ids", "sql", "stop", "timeout")

    def __init__(self) -> None:
        self.rule_ids: list[int] = []
        self.destination: int | None = None
        self.timeout: int | None = None
        self.multiplex: int | None = None
        self.log: bool | None = None
        self.sql: str | None = None  # rewritten text
        self.stop: Deny | Respond | None = None
        self.causal_reads: str | None = None
        self.causal_reads_rule = 0  # the rule that set causal_reads
        self.max_lag_ms: int | None = None
        self.max_lag_rule = 0  # the rule that set max_lag_ms


def _tables_match(rule: QueryRule, cls: Classification, schema: str | None) -> bool:
    bare, qualified = rule.tables_bare, rule.tables_qualified
    for tables in (cls.tables_read, cls.tables_written):
        for t in tables:
            if t in bare or t in qualified:
                return True
            dot = t.find(".")
            if dot >= 0:
                if t[dot + 1 :] in bare:
                    return True
            elif schema is not None and qualified and f"{schema.lower()}.{t}" in qualified:
                return True
    return False


def _first_mismatch(rule: QueryRule, cls: Classification, view: SessionView, text: str) -> str | None:
    """The column of the first criterion of `rule` that does not hold, or None if all match.

    Cheap exact comparisons first, regexes last. Returns a constant (no formatting on the hot path);
    `_mismatch_detail` says why, for traces."""
    if rule.has_plain_criteria:
        if rule.username is not None and rule.username != view.username:
            return "username"
        if rule.schemaname is not None and rule.schemaname != view.schemaname:
            return "schemaname"
        if rule.proxy_port is not None and rule.proxy_port != view.proxy_port:
            return "proxy_port"
        if rule.proxy_addr is not None and rule.proxy_addr != view.proxy_addr:
            return "proxy_addr"
        ca = rule.client_addr
        if ca is not None:
            addr = view.client_addr
            if addr is None or (not addr.startswith(ca[:-1]) if ca[-1] == "%" else addr != ca):
                return "client_addr"
        if rule.digest is not None and rule.digest != cls.fingerprint.digest:
            return "digest"
        if rule.match_kind is not None and cls.kind not in rule.match_kind:
            return "match_kind"
        if rule.match_read_only is not None and rule.match_read_only != cls.read_only:
            return "match_read_only"
        if rule.match_tables is not None and not _tables_match(rule, cls, view.schemaname):
            return "match_tables"
    neg = rule.negate_match_pattern
    rx = rule.match_digest_re
    if rx is not None and (rx.search(cls.fingerprint.text) is None) is not neg:
        return "match_digest"
    rx = rule.match_pattern_re
    if rx is not None and (rx.search(text) is None) is not neg:
        return "match_pattern"
    return None


def _mismatch_detail(column: str, rule: QueryRule, cls: Classification, view: SessionView) -> str:
    """Human-readable reason for a `_first_mismatch` answer (trace only)."""
    if column in ("username", "schemaname", "proxy_port", "proxy_addr"):
        return f"{column}: {getattr(view, column)!r} is not {getattr(rule, column)!r}"
    if column == "client_addr":
        return f"client_addr: {view.client_addr!r} does not match {rule.client_addr!r}"
    if column == "digest":
        return f"digest: 0x{cls.fingerprint.digest:016X} is not 0x{rule.digest:016X}"
    if column == "match_kind":
        return f"match_kind: {cls.kind.name} not in {{{', '.join(sorted(k.name for k in rule.match_kind))}}}"
    if column == "match_read_only":
        return f"match_read_only: statement read_only={cls.read_only}, rule wants {rule.match_read_only}"
    if column == "match_tables":
        return "match_tables: statement touches none of " + ", ".join(sorted(rule.match_tables))
    how = "matched (negate_match_pattern)" if rule.negate_match_pattern else "did not match"
    if column == "match_digest":
        return f"match_digest: {rule.match_digest!r} {how} the digest text"
    return f"match_pattern: {rule.match_pattern!r} {how} the query text"


def _run_rules(
    cls: Classification, view: SessionView, ruleset: RuleSet, text: str, trace: Trace | None
) -> _Matched | None:
    flag = 0
    m: _Matched | None = None
    for rule in ruleset.rules:
        if rule.flagIN != flag:
            if trace is not None:
                trace.append((f"rule {rule.rule_id}", f"skipped: flagIN={rule.flagIN}, current flag={flag}"))
            continue
        miss = _first_mismatch(rule, cls, view, text)
        if miss is not None:
            if trace is not None:
                trace.append((f"rule {rule.rule_id}", "no match: " + _mismatch_detail(miss, rule, cls, view)))
            continue
        if m is None:
            m = _Matched()
        m.rule_ids.append(rule.rule_id)
        did: list[str] | None = [] if trace is not None else None
        if rule.flagOUT is not None:
            flag = rule.flagOUT
            if did is not None:
                did.append(f"flag -> {flag}")
        if rule.replace_pattern is not None:
            new = rule.match_pattern_re.sub(rule.replace_pattern, text, count=rule.replace_count)
            if did is not None:
                did.append(f"rewrote text to {new!r}")
            text = m.sql = new
        if rule.destination_hostgroup is not None:
            m.destination = rule.destination_hostgroup
            if did is not None:
                did.append(f"destination_hostgroup={m.destination}")
        if rule.timeout is not None:
            m.timeout = rule.timeout
            if did is not None:
                did.append(f"timeout={rule.timeout}ms")
        if rule.multiplex is not None:
            m.multiplex = rule.multiplex
            if did is not None:
                did.append(f"multiplex={rule.multiplex}")
        if rule.log is not None:
            m.log = rule.log
            if did is not None:
                did.append(f"log={int(rule.log)}")
        if rule.causal_reads is not None:
            m.causal_reads, m.causal_reads_rule = rule.causal_reads, rule.rule_id
            if did is not None:
                did.append(f"causal_reads={rule.causal_reads}")
        if rule.max_lag_ms is not None:
            m.max_lag_ms, m.max_lag_rule = rule.max_lag_ms, rule.rule_id
            if did is not None:
                did.append(f"max_lag_ms={rule.max_lag_ms}")
        if rule.error_msg is not None:
            m.stop = Deny(rule.error_msg)
        elif rule.OK_msg is not None:
            m.stop = Respond(rule.OK_msg)
        if did is not None:
            if m.stop is not None:
                did.append("error_msg: stop, deny" if type(m.stop) is Deny else "OK_msg: stop, answer OK")
            elif rule.apply:
                did.append("apply: stop")
            trace.append((f"rule {rule.rule_id}", "MATCHED" + (": " + "; ".join(did) if did else "")))
        if m.stop is not None or rule.apply:
            break
    return m


def _hint_destination(
    hints: tuple[tuple[str, str], ...], writer: int, ruleset: RuleSet, trace: Trace | None
) -> int | None:
    hg = None
    for key, value in hints:
        chosen = None
        if key == "route":
            v = value.lower()
            if v in ("writer", "master", "primary"):
                chosen = writer
            elif v in ("reader", "slave", "replica"):
                chosen = ruleset.reader_of.get(writer, writer)
        elif key == "hostgroup":
            v = value.strip()
            if v.isdigit():
                chosen = int(v)
        elif key in _READS_HINTS:
            continue  # what the read must see, not where it goes (_reads, proxy.causal)
        if chosen is None:
            if trace is not None:
                trace.append(("hint", f"ignored {key}={value}"))
            continue
        hg = chosen
        if trace is not None:
            trace.append(("hint", f"{key}={value} -> hostgroup {hg}"))
    return hg


_READS_HINTS = frozenset(("max_lag_ms", "min_gtid"))


def _reads(m: _Matched | None, hints: tuple[tuple[str, str], ...], trace: Trace | None) -> Reads | None:
    """What the statement's reads must see: a rule's causal_reads and max_lag_ms, a max_lag_ms hint
    (``/* max_lag_ms=N */``, ``/* rwproxy:max_lag_ms=N */``: the statement's own bound wins over a
    rule's). None when nothing says anything (the common case: no allocation)."""
    mode = lag = source = mode_source = None
    if m is not None:
        mode = m.causal_reads
        if mode is not None:
            mode_source = f"rule {m.causal_reads_rule}"
        if m.max_lag_ms is not None:
            lag, source = m.max_lag_ms, f"rule {m.max_lag_rule}"
    for key, value in hints:
        if key == "max_lag_ms":
            v = value.strip()
            if v.isdigit() and int(v) <= MAX_LAG_MS_LIMIT:
                lag, source = int(v), "hint"
                if trace is not None:
                    trace.append(("hint", f"max_lag_ms={v}: only replicas at most {v} ms behind"))
            elif trace is not None:
                trace.append(("hint", f"ignored max_lag_ms={value} (expected milliseconds 0..{MAX_LAG_MS_LIMIT})"))
    if mode is None and lag is None:
        return None
    return Reads(mode, lag, source, mode_source)


def decide(
    cls: Classification,
    view: SessionView,
    ruleset: RuleSet,
    online_hostgroups: Container[int],
    *,
    sql: str | None = None,
    trace: Trace | None = None,
) -> Decision:
    """Route one statement. See the module docstring for the steps.

    `sql` is the client's query text, needed by match_pattern/replace_pattern rules
    (`ruleset.needs_sql`); without it they see the digest text. `trace`, when given, receives
    (step, detail) pairs describing every step (used by rules.explain; leave None on the hot path).
    """
    writer = view.default_hostgroup
    # 1. query rules
    m = None
    if ruleset.rules:
        m = _run_rules(cls, view, ruleset, cls.fingerprint.text if sql is None else sql, trace)
        if m is not None and m.stop is not None:
            return Decision(m.stop, Reason.RULE, sql=m.sql, rule_ids=tuple(m.rule_ids), timeout_ms=m.timeout,
                            multiplex=m.multiplex, log=m.log)
        if trace is not None and m is None:
            trace.append(("rules", "no rule matched"))
    elif trace is not None:
        trace.append(("rules", "no active rules"))

    read_only = cls.read_only
    why_pin = None if read_only else pin_reason(cls)
    pin = why_pin is not None
    if trace is not None and pin:
        trace.append(("pin", f"statement ties the session to the writer: {why_pin}"))

    # 2. transaction persistence
    if view.in_transaction and view.transaction_persistent:
        hg = view.txn_hostgroup
        if hg is None:
            hg = writer
        if trace is not None:
            ignored = " (rule destination ignored)" if m is not None and m.destination is not None else ""
            where = "its hostgroup" if view.txn_hostgroup is not None else "the writer (transaction hostgroup not known yet)"
            trace.append(("transaction", f"in a transaction: stays on {where} {hg}{ignored}"))
        if (
            hg in ruleset.reader_hostgroups
            and not read_only
            and cls.kind not in _READER_TXN_KINDS
            and not (cls.kind is _BEGIN and cls.txn_read_only)
        ):
            if trace is not None:
                trace.append(("safety", f"{cls.kind.name} may write; the transaction runs on reader hostgroup {hg}: deny"))
            return Decision(
                Deny(_READ_ONLY_TXN_MSG.format(hg=hg), 1792, "25006"),
                Reason.READ_ONLY_TRANSACTION,
                sql=None if m is None else m.sql,
                rule_ids=() if m is None else tuple(m.rule_ids),
            )
        reason = Reason.TRANSACTION
    else:
        # 3. rule destination, 4. hints
        hg = None
        reason = Reason.RULE
        if m is not None and m.destination is not None:
            hg = m.destination
        hints = cls.fingerprint.hints
        if hints:
            h = _hint_destination(hints, writer, ruleset, trace)
            if h is not None:
                hg, reason = h, Reason.HINT
        # 5. defaults
        if hg is None:
            if cls.kind is _BEGIN:
                reason = Reason.TRANSACTION_START
                hg = ruleset.reader_of.get(writer, writer) if cls.txn_read_only else writer
            elif read_only and cls.server_specific:
                hg, reason = writer, Reason.SERVER_SPECIFIC
            elif read_only:
                hg, reason = ruleset.reader_of.get(writer, writer), Reason.DEFAULT_READ
            elif starts_transaction(cls):
                hg, reason = writer, Reason.TRANSACTION_START
            else:
                hg, reason = writer, Reason.DEFAULT_WRITE
            if trace is not None:
                trace.append(("default", f"{reason}: hostgroup {hg}"))
        # 6. writer pin
        if (pin or view.pinned_writer) and hg != writer:
            if trace is not None:
                who = "this statement pins the session" if pin else "the session is pinned"
                trace.append(("pin", f"{who} to the writer: hostgroup {hg} -> {writer}"))
            hg, reason = writer, Reason.PINNED_WRITER
        if hg in ruleset.reader_hostgroups:
            # 7. write safety: never a possible write on a reader hostgroup.
            if not read_only and not (cls.kind is _BEGIN and cls.txn_read_only):
                new = ruleset.writer_of[hg]
                if trace is not None:
                    trace.append(("safety", f"not read-only: reader hostgroup {hg} -> writer {new}"))
                hg, reason = new, Reason.WRITE_SAFETY
            # 8. reader availability
            elif hg not in online_hostgroups:
                if ruleset.reader_fallback_to_writer:
                    new = ruleset.writer_of[hg]
                    if trace is not None:
                        trace.append(("availability", f"reader hostgroup {hg} has no ONLINE server -> writer {new}"))
                    hg, reason = new, Reason.NO_READER_ONLINE
                elif trace is not None:
                    trace.append(("availability", f"reader hostgroup {hg} has no ONLINE server (no fallback)"))

    hints = cls.fingerprint.hints
    reads = _reads(m, hints, trace) if m is not None or hints else None
    if m is None:
        if reads is None:
            return ruleset.route(hg, reason, pin)
        return Decision(RouteTo(hg), reason, pin_writer=pin, reads=reads)
    return Decision(RouteTo(hg), reason, sql=m.sql, rule_ids=tuple(m.rule_ids), timeout_ms=m.timeout,
                    multiplex=m.multiplex, log=m.log, pin_writer=pin, reads=reads)
