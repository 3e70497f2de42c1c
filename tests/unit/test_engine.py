"""rules.engine.decide and rules.explain: one table per semantic, Classifications built directly
(so each row states exactly what the classifier said), plus end-to-end rows through the real classify().

Topology used throughout: the session's writer is hostgroup 10, paired with reader hostgroup 20;
a second cluster has writer 30 / reader 40; hostgroup 50 is a writer with no replication pair."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from rules.classify import Classification, Kind, SetScope, SetTarget, classify
from rules.digest import Fingerprint
from rules.engine import TRACKED_VARIABLES, SessionView, decide, is_tracked_variable, pin_reason
from rules.explain import explain
from rules.model import Deny, QueryRule, Reason, ReplicationHostgroup, Respond, RouteTo, RuleSet

W, R, W2, R2, LONE = 10, 20, 30, 40, 50
PAIRS = (ReplicationHostgroup(W, R), ReplicationHostgroup(W2, R2))
ALL_ONLINE = frozenset({W, R, W2, R2, LONE})
DIGEST = 0x1234_5678_9ABC_DEF0


def C(kind: str = "SELECT", read_only: bool | None = None, text: str | None = None, **kw: Any) -> Classification:
    """A Classification as the classifier would produce it; read_only defaults to kind == SELECT."""
    k = Kind[kind]
    fp = Fingerprint(
        text=text if text is not None else f"{kind} ...",
        digest=kw.pop("digest", DIGEST),
        hints=tuple(kw.pop("hints", ())),
    )
    base: dict[str, Any] = {
        "kind": k,
        "read_only": (k is Kind.SELECT) if read_only is None else read_only,
        "locking_read": False,
        "select_into": None,
        "session_functions": frozenset(),
        "reads_user_vars": False,
        "assigns_user_vars": False,
        "temp_table": None,
        "calc_found_rows": False,
        "tables_read": frozenset(),
        "tables_written": frozenset(),
        "set_targets": (),
        "txn_read_only": None,
        "multi_statement": False,
        "parse_error": None,
        "fingerprint": fp,
    }
    base.update(kw)
    return Classification(**base)


def SET(*targets: tuple[str, str, str | None], **kw: Any) -> Classification:
    return C("SET", set_targets=tuple(SetTarget(SetScope[s], n, v) for s, n, v in targets), **kw)


SELECT = C("SELECT", text="SELECT * FROM t WHERE id = ?")
UPDATE = C("UPDATE", text="UPDATE t SET a = ? WHERE id = ?", tables_written=frozenset({"t"}))
FOR_UPDATE = C("SELECT", read_only=False, locking_read=True, text="SELECT * FROM t WHERE id = ? FOR UPDATE")
BEGIN = C("BEGIN", text="BEGIN")
BEGIN_RO = C("BEGIN", text="START TRANSACTION READ ONLY", txn_read_only=True)
COMMIT = C("COMMIT", text="COMMIT")


@dataclass
class Case:
    id: str
    cls: Classification
    expect: Any  # hostgroup (int), or a Deny/Respond action
    reason: str
    rules: tuple[dict, ...] = ()
    view: dict = field(default_factory=dict)
    online: frozenset[int] = ALL_ONLINE
    rule_ids: tuple[int, ...] = ()
    pin: bool = False
    sql: str | None = None
    fallback: bool = True
    check: dict = field(default_factory=dict)  # other Decision attributes


def run(case: Case):
    rs = RuleSet(
        rules=tuple(QueryRule.from_mapping(r) for r in case.rules),
        replication_hostgroups=PAIRS,
        reader_fallback_to_writer=case.fallback,
    )
    view = SessionView(**{"default_hostgroup": W, "username": "app", "schemaname": "shop", **case.view})
    return decide(case.cls, view, rs, case.online, sql=case.sql)


def assert_case(case: Case) -> None:
    d = run(case)
    if isinstance(case.expect, int):
        assert d.action == RouteTo(case.expect), d
    else:
        assert d.action == case.expect, d
    assert d.reason == case.reason, d
    assert d.rule_ids == case.rule_ids, d
    assert d.pin_writer is case.pin, d
    for attr, value in case.check.items():
        assert getattr(d, attr) == value, (attr, d)


def table(*cases: Case):
    return pytest.mark.parametrize("case", cases, ids=[c.id for c in cases])


# ---------------------------------------------------------------------------------------------
# 5. default split (no rules)


@table(
    Case("read to the paired reader", SELECT, R, "default-read"),
    Case("write to the writer", UPDATE, W, "default-write"),
    Case("locking read to the writer", FOR_UPDATE, W, "default-write"),
    Case("SHOW is not read_only -> writer", C("SHOW", read_only=False), W, "default-write"),
    Case("writer without a pair keeps reads", SELECT, LONE, "default-read", view={"default_hostgroup": LONE}),
    Case("parse error -> writer", C("OTHER", read_only=False, parse_error="boom"), W, "default-write"),
    Case("second cluster user reads on its reader", SELECT, R2, "default-read", view={"default_hostgroup": W2}),
)
def test_default_split(case):
    assert_case(case)


# ---------------------------------------------------------------------------------------------
# 2. transaction persistence


TO_READER = {"rule_id": 1, "match_digest": "^SELECT", "destination_hostgroup": R}


@table(
    Case("read stays on the txn hostgroup", SELECT, W, "transaction",
         view={"in_transaction": True, "txn_hostgroup": W}),
    Case("txn hostgroup not known yet -> writer", SELECT, W, "transaction", view={"in_transaction": True}),
    Case("rule destination ignored but counted", SELECT, W, "transaction", rules=(TO_READER,), rule_ids=(1,),
         view={"in_transaction": True, "txn_hostgroup": W}),
    Case("hint ignored", C("SELECT", hints=[("route", "reader")]), W, "transaction",
         view={"in_transaction": True, "txn_hostgroup": W}),
    Case("pinned session still follows its transaction", SELECT, R, "transaction",
         view={"in_transaction": True, "txn_hostgroup": R, "pinned_writer": True}),
    Case("error_msg rules still block inside a transaction", UPDATE, Deny("no updates"), "rule",
         rules=({"rule_id": 3, "match_digest": "^UPDATE", "error_msg": "no updates"},), rule_ids=(3,),
         view={"in_transaction": True, "txn_hostgroup": W}),
    Case("transaction_persistent off: rules and defaults apply", SELECT, R, "default-read",
         view={"in_transaction": True, "txn_hostgroup": W, "transaction_persistent": False}),
    Case("read-only txn on the reader: SELECT stays", SELECT, R, "transaction",
         view={"in_transaction": True, "txn_hostgroup": R}),
    Case("read-only txn on the reader: COMMIT stays", COMMIT, R, "transaction",
         view={"in_transaction": True, "txn_hostgroup": R}),
    Case("read-only txn on the reader: locking read stays (server enforces READ ONLY)", FOR_UPDATE, R,
         "transaction", view={"in_transaction": True, "txn_hostgroup": R}),
    Case("read-only txn on the reader: tracked SET stays", SET(("SESSION", "sql_mode", "''")), R, "transaction",
         view={"in_transaction": True, "txn_hostgroup": R}),
    Case("statement pinning the session inside a txn: stays, pin reported", SET(("USER", "x", "1"),
         assigns_user_vars=True), W, "transaction", pin=True, view={"in_transaction": True, "txn_hostgroup": W}),
)
def test_transaction_persistence(case):
    assert_case(case)


@pytest.mark.parametrize("cls", [UPDATE, C("DDL", read_only=False), C("CALL", read_only=False), BEGIN])
def test_write_in_a_read_only_transaction_on_a_reader_is_denied_never_sent(cls):
    d = run(Case("", cls, None, "", view={"in_transaction": True, "txn_hostgroup": R}))
    assert type(d.action) is Deny and d.reason == "read-only-transaction"
    assert (d.action.errno, d.action.sqlstate) == (1792, "25006")
    assert "READ ONLY transaction" in d.action.error_msg and str(R) in d.action.error_msg


# ---------------------------------------------------------------------------------------------
# transaction start


@table(
    Case("BEGIN -> writer", BEGIN, W, "transaction-start"),
    Case("START TRANSACTION READ ONLY -> reader", BEGIN_RO, R, "transaction-start"),
    Case("READ WRITE -> writer", C("BEGIN", txn_read_only=False), W, "transaction-start"),
    Case("READ ONLY with no reader online -> writer", BEGIN_RO, W, "no-reader-online", online=frozenset({W})),
    Case("READ ONLY on a writer with no pair", BEGIN_RO, LONE, "transaction-start",
         view={"default_hostgroup": LONE}),
    Case("SET autocommit=0 -> writer", SET(("SESSION", "autocommit", "0")), W, "transaction-start"),
    Case("SET autocommit=OFF", SET(("SESSION", "autocommit", "OFF")), W, "transaction-start"),
    Case("SET autocommit='off'", SET(("SESSION", "autocommit", "'off'")), W, "transaction-start"),
    Case("SET autocommit=1 is an ordinary SET", SET(("SESSION", "autocommit", "1")), W, "default-write"),
    Case("COMMIT outside a transaction -> writer", COMMIT, W, "default-write"),
    Case("ROLLBACK outside a transaction -> writer", C("ROLLBACK"), W, "default-write"),
    Case("rule may move BEGIN to another writer", BEGIN, W2, "rule",
         rules=({"rule_id": 1, "username": "app", "destination_hostgroup": W2},), rule_ids=(1,)),
    Case("rule cannot move BEGIN to a reader", BEGIN, W, "write-safety",
         rules=({"rule_id": 1, "match_digest": "^BEGIN", "destination_hostgroup": R},), rule_ids=(1,)),
    Case("rule may send START TRANSACTION READ ONLY to a reader", BEGIN_RO, R2, "rule",
         rules=({"rule_id": 1, "match_kind": ["BEGIN"], "destination_hostgroup": R2},), rule_ids=(1,)),
)
def test_transaction_start(case):
    assert_case(case)


# ---------------------------------------------------------------------------------------------
# 1. query rules: flags, apply, criteria, actions


CHAIN = (
    {"rule_id": 1, "username": "app", "flagOUT": 5},
    {"rule_id": 2, "flagIN": 5, "match_digest": "^SELECT", "destination_hostgroup": W2},
    {"rule_id": 3, "match_digest": "^SELECT", "destination_hostgroup": LONE},
)


@table(
    Case("flagOUT moves to the flagIN=5 chain", SELECT, W2, "rule", rules=CHAIN, rule_ids=(1, 2)),
    Case("other user stays on flag 0", SELECT, LONE, "rule", rules=CHAIN, rule_ids=(3,), view={"username": "etl"}),
    Case("flagOUT does not restart the scan", SELECT, R, "default-read", rule_ids=(2,),
         rules=({"rule_id": 1, "flagIN": 1, "destination_hostgroup": W2}, {"rule_id": 2, "flagOUT": 1})),
    Case("flagOUT back to 0 re-enables flag-0 rules after it", SELECT, LONE, "rule", rule_ids=(1, 2, 3),
         rules=({"rule_id": 1, "flagOUT": 1}, {"rule_id": 2, "flagIN": 1, "flagOUT": 0},
                {"rule_id": 3, "destination_hostgroup": LONE})),
    Case("apply stops the scan", SELECT, W2, "rule", rule_ids=(1,),
         rules=({"rule_id": 1, "destination_hostgroup": W2, "apply": True},
                {"rule_id": 2, "destination_hostgroup": LONE})),
    Case("without apply the last destination wins", SELECT, LONE, "rule", rule_ids=(1, 2),
         rules=({"rule_id": 1, "destination_hostgroup": W2}, {"rule_id": 2, "destination_hostgroup": LONE})),
    Case("rules run in rule_id order, not list order", SELECT, W2, "rule", rule_ids=(1, 2),
         rules=({"rule_id": 2, "destination_hostgroup": W2}, {"rule_id": 1, "destination_hostgroup": LONE})),
    Case("inactive rules are not loaded", SELECT, R, "default-read",
         rules=({"rule_id": 1, "active": False, "destination_hostgroup": W2},)),
    Case("a rule without destination keeps the default", SELECT, R, "default-read", rule_ids=(1,),
         rules=({"rule_id": 1, "timeout": 500},), check={"timeout_ms": 500}),
    Case("timeout, multiplex, log: last one wins", SELECT, R, "default-read", rule_ids=(1, 2),
         rules=({"rule_id": 1, "timeout": 100, "multiplex": 0, "log": True},
                {"rule_id": 2, "timeout": 200, "log": False}),
         check={"timeout_ms": 200, "multiplex": 0, "log": False}),
)
def test_rule_chaining(case):
    assert_case(case)


def rule_hit(criteria: dict, cls: Classification = SELECT, **case_kw: Any) -> Case:
    return Case("", cls, W2, "rule", rules=({"rule_id": 7, "destination_hostgroup": W2, **criteria},),
                rule_ids=(7,), **case_kw)


def rule_miss(criteria: dict, cls: Classification = SELECT, **case_kw: Any) -> Case:
    expect = R if cls.read_only else W
    return Case("", cls, expect, "default-read" if cls.read_only else "default-write",
                rules=({"rule_id": 7, "destination_hostgroup": W2, **criteria},), **case_kw)


RAW = "SELECT * FROM t WHERE id = 42"
CRITERIA = {
    "username hit": rule_hit({"username": "app"}),
    "username miss": rule_miss({"username": "other"}),
    "schemaname hit": rule_hit({"schemaname": "shop"}),
    "schemaname miss": rule_miss({"schemaname": "crm"}),
    "client_addr exact": rule_hit({"client_addr": "10.0.0.1"}, view={"client_addr": "10.0.0.1"}),
    "client_addr exact miss": rule_miss({"client_addr": "10.0.0.1"}, view={"client_addr": "10.0.0.11"}),
    "client_addr prefix": rule_hit({"client_addr": "10.0.%"}, view={"client_addr": "10.0.3.4"}),
    "client_addr prefix miss": rule_miss({"client_addr": "10.0.%"}, view={"client_addr": "10.1.0.1"}),
    "client_addr unix socket": rule_miss({"client_addr": "10.0.%"}, view={"client_addr": None}),
    "proxy_port hit": rule_hit({"proxy_port": 6034}, view={"proxy_port": 6034}),
    "proxy_port miss": rule_miss({"proxy_port": 6034}, view={"proxy_port": 6033}),
    "proxy_addr hit": rule_hit({"proxy_addr": "10.9.9.9"}, view={"proxy_addr": "10.9.9.9"}),
    "proxy_addr miss": rule_miss({"proxy_addr": "10.9.9.9"}, view={"proxy_addr": "127.0.0.1"}),
    "digest int": rule_hit({"digest": DIGEST}),
    "digest hex": rule_hit({"digest": f"0x{DIGEST:016X}"}),
    "digest miss": rule_miss({"digest": DIGEST + 1}),
    "match_digest on digest text": rule_hit({"match_digest": r"id = \?"}, sql=RAW),
    "match_digest never sees literals": rule_miss({"match_digest": "id = 42"}, sql=RAW),
    "match_pattern on raw text": rule_hit({"match_pattern": "id = 42"}, sql=RAW),
    "match_pattern never sees ?": rule_miss({"match_pattern": r"id = \?"}, sql=RAW),
    "CASELESS by default": rule_hit({"match_digest": "^select"}),
    "case-sensitive without CASELESS": rule_miss({"match_digest": "^select", "re_modifiers": ""}),
    "negate match_digest: SELECT excluded": rule_miss({"match_digest": "^SELECT", "negate_match_pattern": True}),
    "negate match_digest: UPDATE matches": rule_hit({"match_digest": "^SELECT", "negate_match_pattern": True},
                                                    cls=UPDATE),
    "negate match_pattern": rule_hit({"match_pattern": "^UPDATE", "negate_match_pattern": True}, sql=RAW),
    "match_kind hit": rule_hit({"match_kind": ["SELECT", "SHOW"]}),
    "match_kind miss": rule_miss({"match_kind": ["UPDATE"]}),
    "match_read_only hit": rule_hit({"match_read_only": True}),
    "match_read_only miss": rule_miss({"match_read_only": False}),
    "match_tables bare name matches qualified": rule_hit(
        {"match_tables": ["orders"]}, cls=C("SELECT", tables_read=frozenset({"crm.orders"}))),
    "match_tables qualified matches unqualified in session schema": rule_hit(
        {"match_tables": ["shop.orders"]}, cls=C("SELECT", tables_read=frozenset({"orders"}))),
    "match_tables qualified, other schema": rule_miss(
        {"match_tables": ["shop.orders"]}, cls=C("SELECT", tables_read=frozenset({"orders"})),
        view={"schemaname": "crm"}),
    "match_tables written table": rule_hit(
        {"match_tables": ["t"], "destination_hostgroup": W2}, cls=UPDATE),
    "match_tables miss": rule_miss({"match_tables": ["items"]}, cls=C("SELECT", tables_read=frozenset({"orders"}))),
    "all criteria must hold": rule_miss({"username": "app", "schemaname": "crm"}),
}


@pytest.mark.parametrize("case", list(CRITERIA.values()), ids=list(CRITERIA))
def test_rule_criteria(case):
    assert_case(case)


def test_match_pattern_without_sql_sees_the_digest_text():
    case = rule_hit({"match_pattern": r"id = \?"})
    assert_case(case)


@table(
    Case("rewrite, and a later rule sees the rewritten text", SELECT, W2, "rule", rule_ids=(1, 2),
         sql="SELECT * FROM t1 JOIN t1x ON 1",
         rules=({"rule_id": 1, "match_pattern": r"\bt1\b", "replace_pattern": "t2"},
                {"rule_id": 2, "match_pattern": r"FROM t2 ", "destination_hostgroup": W2}),
         check={"sql": "SELECT * FROM t2 JOIN t1x ON 1"}),
    Case("without GLOBAL only the first occurrence", SELECT, R, "default-read", rule_ids=(1,),
         sql="SELECT a FROM t WHERE a = 1 OR a = 2",
         rules=({"rule_id": 1, "match_pattern": r"\ba\b", "replace_pattern": "b"},),
         check={"sql": "SELECT b FROM t WHERE a = 1 OR a = 2"}),
    Case("GLOBAL replaces all", SELECT, R, "default-read", rule_ids=(1,),
         sql="SELECT a FROM t WHERE a = 1 OR a = 2",
         rules=({"rule_id": 1, "match_pattern": r"\ba\b", "replace_pattern": "b", "re_modifiers": "CASELESS,GLOBAL"},),
         check={"sql": "SELECT b FROM t WHERE b = 1 OR b = 2"}),
    Case("backreferences", SELECT, R, "default-read", rule_ids=(1,), sql="SELECT * FROM t LIMIT 5",
         rules=({"rule_id": 1, "match_pattern": r"LIMIT (\d+)", "replace_pattern": r"LIMIT \1 OFFSET 0"},),
         check={"sql": "SELECT * FROM t LIMIT 5 OFFSET 0"}),
    Case("no rewrite -> sql is None", SELECT, R, "default-read", rule_ids=(1,),
         rules=({"rule_id": 1, "match_digest": "SELECT"},), check={"sql": None}),
)
def test_rewrite(case):
    assert_case(case)


@table(
    Case("error_msg denies and stops", UPDATE, Deny("read-only maintenance"), "rule", rule_ids=(1,),
         rules=({"rule_id": 1, "match_digest": "^UPDATE", "error_msg": "read-only maintenance"},
                {"rule_id": 2, "destination_hostgroup": W2})),
    Case("OK_msg answers and stops", C("SET", read_only=False), Respond("ignored"), "rule", rule_ids=(1, 2),
         rules=({"rule_id": 1, "log": True}, {"rule_id": 2, "match_kind": ["SET"], "OK_msg": "ignored"},
                {"rule_id": 3, "error_msg": "never reached"}), check={"log": True}),
    Case("error_msg behind a flag chain", SELECT, Deny("blocked"), "rule", rule_ids=(1, 2),
         rules=({"rule_id": 1, "username": "app", "flagOUT": 9}, {"rule_id": 2, "flagIN": 9, "error_msg": "blocked"})),
)
def test_error_msg_and_ok_msg(case):
    assert_case(case)


# ---------------------------------------------------------------------------------------------
# 4. hints


TO_W2 = ({"rule_id": 1, "match_digest": "^SELECT", "destination_hostgroup": W2},)


@table(
    Case("route=writer overrides a rule", C("SELECT", hints=[("route", "writer")]), W, "hint", rules=TO_W2,
         rule_ids=(1,)),
    Case("route=reader on a read", C("SELECT", hints=[("route", "reader")]), R, "hint", rules=TO_W2, rule_ids=(1,)),
    Case("hostgroup=N", C("SELECT", hints=[("hostgroup", "50")]), LONE, "hint"),
    Case("last hint wins", C("SELECT", hints=[("route", "writer"), ("hostgroup", "30")]), W2, "hint"),
    Case("unusable hint ignored", C("SELECT", hints=[("hostgroup", "abc")]), W2, "rule", rules=TO_W2,
         rule_ids=(1,)),
    Case("route=reader without a pair stays on the writer", C("SELECT", hints=[("route", "reader")]), LONE, "hint",
         view={"default_hostgroup": LONE}),
)
def test_hints(case):
    assert_case(case)


# ---------------------------------------------------------------------------------------------
# 7. write safety (the non-negotiable) and 8. reader availability


@table(
    Case("rule sends UPDATE to the reader -> writer", UPDATE, W, "write-safety", rule_ids=(1,),
         rules=({"rule_id": 1, "match_digest": "^UPDATE", "destination_hostgroup": R},)),
    Case("rule sends UPDATE to another pair's reader -> that pair's writer", UPDATE, W2, "write-safety",
         rule_ids=(1,), rules=({"rule_id": 1, "destination_hostgroup": R2},)),
    Case("hint route=reader on a write", C("UPDATE", read_only=False, hints=[("route", "reader")]), W,
         "write-safety"),
    Case("hint hostgroup=reader on a locking read", replace(FOR_UPDATE, fingerprint=Fingerprint(
         "SELECT ... FOR UPDATE", DIGEST, (("hostgroup", "20"),))), W, "write-safety"),
    Case("catch-all rule to the reader only moves reads", C("DDL", read_only=False), W, "write-safety",
         rule_ids=(1,), rules=({"rule_id": 1, "destination_hostgroup": R},)),
    Case("unknown statement kind never reaches a reader", C("OTHER", read_only=False), W, "write-safety",
         rule_ids=(1,), rules=({"rule_id": 1, "destination_hostgroup": R},)),
    Case("rule routing writes to a writer hostgroup is fine", UPDATE, W2, "rule", rule_ids=(1,),
         rules=({"rule_id": 1, "destination_hostgroup": W2},)),
)
def test_write_safety(case):
    assert_case(case)


@table(
    Case("no reader online -> writer", SELECT, W, "no-reader-online", online=frozenset({W})),
    Case("no fallback: keep the reader, the proxy will error", SELECT, R, "default-read", online=frozenset({W}),
         fallback=False),
    Case("rule to an offline reader -> its writer", SELECT, W2, "no-reader-online", online=frozenset({W, R, W2}),
         rules=({"rule_id": 1, "destination_hostgroup": R2},), rule_ids=(1,)),
    Case("offline writer is not replaced", UPDATE, W, "default-write", online=frozenset()),
    Case("hinted reader offline", C("SELECT", hints=[("route", "reader")]), W, "no-reader-online",
         online=frozenset({W})),
)
def test_reader_availability(case):
    assert_case(case)


# ---------------------------------------------------------------------------------------------
# 6. pinned sessions and 8. statements that pin


@table(
    Case("pinned session: read -> writer", SELECT, W, "pinned-writer", view={"pinned_writer": True}),
    Case("pinned session: rule destination overridden", SELECT, W, "pinned-writer", rules=TO_W2, rule_ids=(1,),
         view={"pinned_writer": True}),
    Case("pinned session: hint overridden", C("SELECT", hints=[("route", "reader")]), W, "pinned-writer",
         view={"pinned_writer": True}),
    Case("pinned session: write is a plain write", UPDATE, W, "default-write", view={"pinned_writer": True}),
    Case("pinned session: error_msg still applies", SELECT, Deny("x"), "rule", rule_ids=(1,),
         rules=({"rule_id": 1, "error_msg": "x"},), view={"pinned_writer": True}),
)
def test_pinned_writer_session(case):
    assert_case(case)


GET_LOCK = C("SELECT", read_only=False, session_functions=frozenset({"GET_LOCK"}))


@table(
    Case("SET @x", SET(("USER", "x", "1"), assigns_user_vars=True), W, "default-write", pin=True),
    Case("SELECT @x := 1", C("SELECT", read_only=False, assigns_user_vars=True), W, "default-write", pin=True),
    # A tracked variable set by an expression: the server reports the value (session tracking) and
    # the proxy replays it, so the statement does not pin; it runs on the writer like any SET.
    Case("SET tracked = expression", SET(("SESSION", "time_zone", None)), W, "default-write", pin=False),
    Case("SET untracked = expression", SET(("SESSION", "innodb_strict_mode", None)), W, "default-write", pin=True),
    Case("SET NAMES expression", SET(("NAMES", "@cs", None)), W, "default-write", pin=True),
    Case("SET unknown_var = 1", SET(("SESSION", "unknown_var", "1")), W, "default-write", pin=True),
    Case("SET TRANSACTION ISOLATION (next txn only)", SET(("TRANSACTION", "next_transaction_isolation",
         "'SERIALIZABLE'")), W, "default-write", pin=True),
    Case("SET SESSION TRANSACTION ISOLATION is tracked", SET(("TRANSACTION", "transaction_isolation",
         "'SERIALIZABLE'")), W, "default-write"),
    Case("CREATE TEMPORARY TABLE", C("DDL", read_only=False, temp_table="CREATE"), W, "default-write", pin=True),
    Case("LOCK TABLES", C("LOCK_TABLES", read_only=False), W, "default-write", pin=True),
    Case("GET_LOCK", GET_LOCK, W, "default-write", pin=True),
    Case("PREPARE", C("PREPARE", read_only=False), W, "default-write", pin=True),
    Case("pinning statement overrides a rule to another writer", GET_LOCK, W, "pinned-writer", pin=True,
         rules=({"rule_id": 1, "destination_hostgroup": W2},), rule_ids=(1,)),
    Case("tracked SET does not pin", SET(("SESSION", "sql_mode", "'STRICT_ALL_TABLES'")), W, "default-write"),
    Case("SET NAMES does not pin", SET(("NAMES", "utf8mb4", "utf8mb4")), W, "default-write"),
    Case("session_track_schema is tracked", SET(("SESSION", "session_track_schema", "1")), W, "default-write"),
    Case("SET GLOBAL is not session state", SET(("GLOBAL", "max_connections", None)), W, "default-write"),
    Case("several targets: one untracked pins", SET(("SESSION", "sql_mode", "''"), ("SESSION", "foo", "1")), W,
         "default-write", pin=True),
    Case("DROP TEMPORARY TABLE does not pin", C("DDL", read_only=False, temp_table="DROP"), W, "default-write"),
    Case("LAST_INSERT_ID is a writer read, no pin", C("SELECT", read_only=False,
         session_functions=frozenset({"LAST_INSERT_ID"})), W, "default-write"),
)
def test_statements_that_pin_the_session(case):
    assert_case(case)


def test_tracked_variables_cover_the_common_session_variables():
    for name in ("autocommit", "sql_mode", "time_zone", "character_set_results", "transaction_isolation",
                 "tx_read_only", "max_execution_time", "session_track_schema", "SQL_MODE"):
        assert is_tracked_variable(name)
    assert not is_tracked_variable("gtid_next") and not is_tracked_variable("next_transaction_isolation")
    assert all(n == n.lower() for n in TRACKED_VARIABLES)


def test_pin_reason_names_the_cause():
    assert pin_reason(GET_LOCK) == "GET_LOCK()"
    assert pin_reason(SET(("SESSION", "foo", "1"))) == "SET of untracked variable foo"
    assert pin_reason(SELECT) is None


# ---------------------------------------------------------------------------------------------
# the hot path shares Decisions, and the trace is the same code path


def test_rule_less_decisions_are_shared_objects():
    rs = RuleSet(replication_hostgroups=PAIRS)
    view = SessionView(default_hostgroup=W)
    a = decide(SELECT, view, rs, ALL_ONLINE)
    assert a is decide(C("SELECT"), view, rs, ALL_ONLINE)
    assert a.action == RouteTo(R) and a.reason == Reason.DEFAULT_READ


def test_trace_does_not_change_the_decision():
    rs = RuleSet(rules=tuple(QueryRule.from_mapping(r) for r in CHAIN), replication_hostgroups=PAIRS)
    view = SessionView(default_hostgroup=W, username="app")
    trace: list = []
    assert decide(SELECT, view, rs, ALL_ONLINE, trace=trace) == decide(SELECT, view, rs, ALL_ONLINE)
    assert [step for step, _ in trace] == ["rule 1", "rule 2", "rule 3"]
    assert trace[2] == ("rule 3", "skipped: flagIN=0, current flag=5")


# ---------------------------------------------------------------------------------------------
# end to end through the real classifier


E2E_RULES = RuleSet(replication_hostgroups=PAIRS)


@pytest.mark.parametrize(
    ("sql", "hostgroup", "reason", "pin"),
    [
        ("SELECT * FROM t WHERE id = 1", R, "default-read", False),
        ("UPDATE t SET a = 1 WHERE id = 2", W, "default-write", False),
        ("SELECT * FROM t WHERE id = 1 FOR UPDATE", W, "default-write", False),
        ("BEGIN", W, "transaction-start", False),
        ("START TRANSACTION", W, "transaction-start", False),
        ("START TRANSACTION READ ONLY", R, "transaction-start", False),
        ("SET autocommit = 0", W, "transaction-start", False),
        ("SET SESSION autocommit = OFF", W, "transaction-start", False),
        ("COMMIT", W, "default-write", False),
        ("SET @x = 1", W, "default-write", True),
        ("SET x = NOW()", W, "default-write", True),
        ("SET time_zone = CONCAT('+0', '1:00')", W, "default-write", False),  # the server reports the value
        ("SET innodb_strict_mode = IF(1, 1, 0)", W, "default-write", True),  # not tracked: cannot be replayed
        ("SET unknown_var = 1", W, "default-write", True),
        ("SET sql_mode = 'STRICT_ALL_TABLES'", W, "default-write", False),
        ("SET NAMES utf8mb4", W, "default-write", False),
        ("CREATE TEMPORARY TABLE tmp (a INT)", W, "default-write", True),
        ("LOCK TABLES t WRITE", W, "default-write", True),
        ("SELECT GET_LOCK('job', 10)", W, "default-write", True),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", W, "default-write", True),
        ("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE", W, "default-write", False),
        ("SET GLOBAL max_connections = 500", W, "default-write", False),
        ("PREPARE s FROM 'SELECT 1'", W, "default-write", True),
        ("/* rwproxy:route=writer */ SELECT 1", W, "hint", False),
        ("SELECT 1 -- maxscale route to master", W, "hint", False),
        ("/* hostgroup=50 */ SELECT 1", LONE, "hint", False),
        ("/* hostgroup=20 */ DELETE FROM t", W, "write-safety", False),
    ],
)
def test_end_to_end_with_the_real_classifier(sql, hostgroup, reason, pin):
    d = decide(classify(sql), SessionView(default_hostgroup=W), E2E_RULES, ALL_ONLINE, sql=sql)
    assert (d.action, d.reason, d.pin_writer) == (RouteTo(hostgroup), reason, pin), d


# ---------------------------------------------------------------------------------------------
# explain


def test_explain_lists_rules_in_order_with_the_failing_criterion():
    rs = RuleSet(
        rules=(
            QueryRule(rule_id=1, username="app", flagOUT=5),
            QueryRule(rule_id=2, flagIN=5, match_digest="^UPDATE", destination_hostgroup=W2),
            QueryRule(rule_id=3, flagIN=5, match_digest="^SELECT", timeout=1000),
            QueryRule(rule_id=4, match_digest="^SELECT", destination_hostgroup=LONE),
        ),
        replication_hostgroups=PAIRS,
    )
    sql = "SELECT * FROM orders WHERE id = 7"
    e = explain(sql, SessionView(default_hostgroup=W, username="app"), rs, ALL_ONLINE)
    text = str(e)
    rows = list(e.rows())
    steps = [s for s, _ in rows]
    assert steps.index("rule 1") < steps.index("rule 2") < steps.index("rule 3") < steps.index("rule 4")
    detail = dict(rows)
    assert detail["rule 1"].startswith("MATCHED") and "flag -> 5" in detail["rule 1"]
    assert detail["rule 2"].startswith("no match: match_digest")
    assert detail["rule 3"].startswith("MATCHED") and "timeout=1000ms" in detail["rule 3"]
    assert detail["rule 4"] == "skipped: flagIN=0, current flag=5"
    assert detail["matched_rules"] == "1, 3"
    assert detail["decision"] == f"route to hostgroup {R}"
    assert detail["reason"] == "default-read"
    assert detail["read_only"] == "yes"
    assert detail["digest"].startswith("0x") and len(detail["digest"]) == 18
    assert detail["pin_writer"] == "no"
    assert e.decision == decide(classify(sql), SessionView(default_hostgroup=W, username="app"), rs, ALL_ONLINE,
                                sql=sql)
    assert text.splitlines()[0].startswith("query") and "rule 3" in text


def test_explain_says_why_not_read_only_and_shows_safety_and_pin():
    rs = RuleSet(rules=(QueryRule(rule_id=1, destination_hostgroup=R),), replication_hostgroups=PAIRS)
    e = explain("SELECT GET_LOCK('a', 1) FROM t FOR UPDATE", SessionView(default_hostgroup=W), rs, ALL_ONLINE)
    detail = dict(e.rows())
    assert detail["read_only"].startswith("no: ")
    assert "locking read" in detail["read_only"] and "GET_LOCK" in detail["read_only"]
    assert detail["pin_writer"] == "yes: GET_LOCK()"
    assert detail["reason"] == "pinned-writer"
    assert e.hostgroup == W


def test_explain_shows_denials():
    rs = RuleSet(rules=(QueryRule(rule_id=9, match_digest="^DELETE", error_msg="no deletes"),))
    e = explain("DELETE FROM t", SessionView(default_hostgroup=W), rs, ALL_ONLINE)
    assert dict(e.rows())["decision"] == "deny: ERR 1148 (42000) 'no deletes'"


@pytest.mark.parametrize(
    ("criteria", "view", "detail"),
    [
        ({"username": "etl"}, {}, "no match: username: 'app' is not 'etl'"),
        ({"schemaname": "crm"}, {}, "no match: schemaname: 'shop' is not 'crm'"),
        ({"proxy_port": 6034}, {"proxy_port": 6033}, "no match: proxy_port: 6033 is not 6034"),
        ({"proxy_addr": "10.9.9.9"}, {}, "no match: proxy_addr: None is not '10.9.9.9'"),
        ({"client_addr": "10.0.%"}, {"client_addr": "10.1.0.1"}, "no match: client_addr: '10.1.0.1' does not match '10.0.%'"),
        ({"digest": 1}, {}, f"no match: digest: 0x{DIGEST:016X} is not 0x0000000000000001"),
        ({"match_kind": ["UPDATE", "DELETE"]}, {}, "no match: match_kind: SELECT not in {DELETE, UPDATE}"),
        ({"match_read_only": False}, {}, "no match: match_read_only: statement read_only=True, rule wants False"),
        ({"match_tables": ["b", "a"]}, {}, "no match: match_tables: statement touches none of a, b"),
        ({"match_digest": "^UPDATE"}, {}, "no match: match_digest: '^UPDATE' did not match the digest text"),
        ({"match_digest": "^SELECT", "negate_match_pattern": True}, {},
         "no match: match_digest: '^SELECT' matched (negate_match_pattern) the digest text"),
        ({"match_pattern": "^UPDATE"}, {}, "no match: match_pattern: '^UPDATE' did not match the query text"),
    ],
)
def test_trace_names_the_first_failing_criterion(criteria, view, detail):
    rs = RuleSet(rules=(QueryRule.from_mapping({"rule_id": 4, "destination_hostgroup": W2, **criteria}),),
                 replication_hostgroups=PAIRS)
    trace: list = []
    decide(SELECT, SessionView(default_hostgroup=W, username="app", schemaname="shop", **view), rs, ALL_ONLINE,
           trace=trace)
    assert trace[0] == ("rule 4", detail)


def test_a_set_the_classifier_cannot_parse_pins_the_writer():
    from rules.classify import classify
    from rules.engine import pin_reason

    cls = classify("SET max_error_count = 10 +")
    assert cls.parse_error is not None and cls.set_targets == ()
    assert pin_reason(cls) == "a SET the proxy could not parse"
