"""Per-rule causal_reads and lag-bounded reads (issue 11), without servers: the rule columns'
validation (config file rows and admin rows alike), what the engine puts in Decision.reads, what
EXPLAIN ROUTE says about it, the admin disk layer's migration, and the lag arithmetic the proxy
applies to the monitor's readings."""

from __future__ import annotations

import sqlite3

import pytest

from admin.commands import ALL_SECTIONS
from admin.store import SCHEMA_VERSION, ConfigStore
from admin.validate import read_config_file
from proxy.causal import LOCAL, CausalReads, Positions
from proxy.config import CAUSAL_READS as CONFIG_CAUSAL_READS
from proxy.config import MonitorSettings
from proxy.topology import Replication, ServerHealth, read_only_seen, replication_seen
from rules.classify import classify
from rules.engine import SessionView, decide
from rules.explain import explain
from rules.model import CAUSAL_READS, QueryRule, Reads, ReplicationHostgroup, RuleError, RuleSet, validate_rules
from tests.unit.disklayer import older_disk_layer

W, R = 0, 1
PAIRS = (ReplicationHostgroup(W, R),)
VIEW = SessionView(default_hostgroup=W, username="app")


def _decide(sql: str, *rules: dict, view: SessionView = VIEW):
    rs = RuleSet(rules=tuple(QueryRule.from_mapping(r) for r in rules), replication_hostgroups=PAIRS)
    return decide(classify(sql), view, rs, {W, R}, sql=sql)


# ---- validation -----------------------------------------------------------------------------------


def test_the_modes_are_one_list():
    assert CAUSAL_READS == CONFIG_CAUSAL_READS


@pytest.mark.parametrize(
    ("row", "column", "words"),
    [
        ({"rule_id": 1, "causal_reads": "sometimes"}, "causal_reads", "expected one of none, local, fast, global"),
        ({"rule_id": 1, "causal_reads": "LOCAL"}, "causal_reads", "expected one of"),
        ({"rule_id": 1, "causal_reads": 1}, "causal_reads", "expected a string"),
        ({"rule_id": 1, "max_lag_ms": -1}, "max_lag_ms", "expected milliseconds 0..86400000"),
        ({"rule_id": 1, "max_lag_ms": 86_400_001}, "max_lag_ms", "expected milliseconds"),
        ({"rule_id": 1, "max_lag_ms": "500"}, "max_lag_ms", "expected an integer"),
        ({"rule_id": 1, "max_lag_ms": 1.5}, "max_lag_ms", "expected an integer"),
    ],
)
def test_bad_values_name_the_rule_and_the_column(row, column, words):
    with pytest.raises(RuleError) as e:
        QueryRule.from_mapping(row)
    assert e.value.column == column and e.value.rule_id == 1
    assert words in e.value.reason
    rules, errors = validate_rules([row, {"rule_id": 2, "causal_reads": "fast", "max_lag_ms": 0}])
    assert [r.rule_id for r in rules] == [2] and [e.column for e in errors] == [column]


def test_good_values_and_null():
    r = QueryRule.from_mapping({"rule_id": 1, "causal_reads": "global", "max_lag_ms": 1500})
    assert (r.causal_reads, r.max_lag_ms) == ("global", 1500)
    r = QueryRule.from_mapping({"rule_id": 1, "causal_reads": None, "max_lag_ms": None})
    assert (r.causal_reads, r.max_lag_ms) == (None, None)
    with pytest.raises(RuleError):
        QueryRule(rule_id=1, max_lag_ms=-5)  # built directly: checked too


# ---- the engine ------------------------------------------------------------------------------------


def test_no_rule_and_no_hint_leaves_reads_none_and_the_decision_shared():
    rs = RuleSet(replication_hostgroups=PAIRS)
    d1, d2 = (decide(classify(f"SELECT * FROM t WHERE id = {i}"), VIEW, rs, {W, R}) for i in (1, 2))
    assert d1.reads is None and d1 is d2  # the hot path allocates nothing


def test_a_rule_sets_causal_reads_and_max_lag_ms():
    d = _decide("SELECT * FROM orders WHERE id = 1", {"rule_id": 7, "match_tables": "orders", "causal_reads": "local", "max_lag_ms": 2000})
    assert d.hostgroup == R and d.rule_ids == (7,)
    assert d.reads == Reads("local", 2000, "rule 7", "rule 7")


def test_a_matching_rule_without_the_columns_leaves_reads_none():
    d = _decide("SELECT * FROM orders", {"rule_id": 7, "match_tables": "orders", "timeout": 100})
    assert d.reads is None and d.timeout_ms == 100


def test_the_last_matching_rule_that_sets_one_wins():
    d = _decide(
        "SELECT * FROM orders",
        {"rule_id": 1, "match_tables": "orders", "causal_reads": "fast", "max_lag_ms": 100},
        {"rule_id": 2, "match_kind": "SELECT", "max_lag_ms": 900},
        {"rule_id": 3, "match_kind": "SELECT", "comment": "sets nothing"},
    )
    assert d.reads == Reads("fast", 900, "rule 2", "rule 1")


@pytest.mark.parametrize("hint", ["/* max_lag_ms=300 */", "/* rwproxy:max_lag_ms=300 */", "-- rwproxy:max_lag_ms=300\n"])
def test_a_hint_bounds_the_read_and_wins_over_a_rule(hint):
    d = _decide(f"{hint} SELECT * FROM t")
    assert d.reads == Reads(None, 300, "hint") and d.hostgroup == R and d.reason == "default-read"
    d = _decide(f"{hint} SELECT * FROM t", {"rule_id": 4, "match_kind": "SELECT", "max_lag_ms": 5000, "causal_reads": "local"})
    assert d.reads == Reads("local", 300, "hint", "rule 4")


@pytest.mark.parametrize("value", ["abc", "-1", "99999999999"])
def test_an_unusable_hint_is_ignored(value):
    assert _decide(f"/* rwproxy:max_lag_ms={value} */ SELECT * FROM t").reads is None


def test_consistency_hints_do_not_route():
    d = _decide("/* rwproxy:min_gtid=0-1-5 */ SELECT * FROM t")
    assert d.hostgroup == R and d.reason == "default-read" and d.reads is None  # (min_gtid: proxy.causal reads it)


# ---- EXPLAIN ROUTE ---------------------------------------------------------------------------------


def _explain(sql: str, *rules: dict, user_mode: str | None = "none") -> dict[str, str]:
    rs = RuleSet(rules=tuple(QueryRule.from_mapping(r) for r in rules), replication_hostgroups=PAIRS)
    return dict(explain(sql, VIEW, rs, {W, R}, causal_reads=user_mode).rows())


def test_explain_shows_the_effective_mode_and_whose_it_is():
    assert _explain("SELECT 1 FROM t")["causal_reads"] == "none (the user's)"
    rows = _explain("SELECT 1 FROM t", {"rule_id": 3, "match_kind": "SELECT", "causal_reads": "local"})
    assert rows["causal_reads"] == "local (rule 3, overriding the user's none)"
    assert "rule 3" in rows and "causal_reads=local" in rows["rule 3"]
    assert "causal_reads" not in _explain("SELECT 1 FROM t", user_mode=None)


def test_explain_shows_the_bound_and_where_it_came_from():
    rule = {"rule_id": 9, "match_kind": "SELECT", "max_lag_ms": 4000}
    assert _explain("SELECT 1 FROM t", rule)["max_lag_ms"].startswith("4000 (rule 9)")
    rows = _explain("/* max_lag_ms=250 */ SELECT 1 FROM t", rule)
    assert rows["max_lag_ms"].startswith("250 (hint)")
    assert "max_lag_ms" not in _explain("SELECT 1 FROM t")


def test_explain_shows_a_min_gtid_hint():
    rows = _explain("/* rwproxy:min_gtid=0-1-42 */ SELECT 1 FROM t", user_mode="local")
    assert rows["min_gtid"].startswith("0-1-42 (hint): only a replica known to have applied it (or one made to wait")
    rows = _explain("/* rwproxy:min_gtid=0-1-42 */ SELECT 1 FROM t", user_mode="fast")
    assert "wait" not in rows["min_gtid"]


def test_explain_has_no_causal_rows_for_a_statement_answered_by_the_proxy():
    rows = _explain("SELECT 1 FROM t", {"rule_id": 1, "match_kind": "SELECT", "error_msg": "no", "causal_reads": "local"})
    assert "causal_reads" not in rows and rows["decision"].startswith("deny")


# ---- the proxy's arithmetic -------------------------------------------------------------------------


T = MonitorSettings(replication_lag_count=1, lag_when_null=60)


def test_behind_reads_the_monitor_lag_and_counts_a_writer_as_zero():
    h = ServerHealth("r:1")
    assert h.behind is None  # never checked: unknown
    h = read_only_seen(h, 1.0, True, None, T)
    assert h.behind is None  # a replica whose lag was never read
    assert replication_seen(h, Replication(3, True, True), T).behind == 3
    assert replication_seen(h, Replication(0, True, False), T).behind == 60  # SQL thread stopped: lag_when_null
    assert read_only_seen(ServerHealth("w:1"), 1.0, False, None, T).behind == 0  # the writer


def test_lag_within_compares_seconds_with_milliseconds_and_unknown_is_too_much():
    lags = {"a": 0, "b": 2, "c": None}
    p = Positions(behind=lags.get)
    assert p.lag_within("a", 0) and p.lag_within("b", 2000)
    assert not p.lag_within("b", 1999)
    assert not p.lag_within("c", 10**8) and not p.lag_within("gone", 10**8)


def test_a_rule_mode_overrides_the_session_mode_for_the_requirement():
    c = CausalReads(Positions())
    c.wrote("0-1-9")
    assert c.required(()) is None  # the session's mode is none
    assert c.required((), LOCAL) == {0: (1, 9)}
    c.configure(LOCAL, 1.0)
    assert c.required((), "none") is None


# ---- the admin disk layer -----------------------------------------------------------------------------

CONFIG = """
[listeners.data]
address = "127.0.0.1"
port = 6033

[[users]]
username = "app"
password = "pw"

[[servers]]
hostgroup_id = 0
hostname = "10.0.0.1"

[[servers]]
hostgroup_id = 1
hostname = "10.0.0.2"

[[replication_hostgroups]]
writer_hostgroup = 0
reader_hostgroup = 1

[[query_rules]]
rule_id = 1
match_tables = ["orders"]
causal_reads = "local"
max_lag_ms = 1500
"""


def test_the_config_file_rule_columns_reach_the_admin_rows(tmp_path):
    path = tmp_path / "rwproxy.toml"
    path.write_text(CONFIG)
    cf = read_config_file(path)
    assert cf.config.ruleset.rules[0].causal_reads == "local"
    store = ConfigStore(None)
    store.startup(cf)
    row = store.rows("mysql_query_rules")[0]
    assert (row["causal_reads"], row["max_lag_ms"]) == ("local", 1500)
    store.close()


def test_a_version_3_disk_layer_gets_the_rule_columns(tmp_path):
    db, cf = older_disk_layer(tmp_path, CONFIG, 3)  # what rwproxy wrote before version 4
    store = ConfigStore(db)
    store.load_from_disk(ALL_SECTIONS)
    assert [(r["rule_id"], r["causal_reads"], r["max_lag_ms"]) for r in store.rows("mysql_query_rules")] == [(1, None, None)]
    result = store.build(ALL_SECTIONS, cf.config)
    assert result.ok, result.errors
    assert [(r.causal_reads, r.max_lag_ms) for r in result.config.ruleset.rules] == [(None, None)]
    store.close()
    assert SCHEMA_VERSION == 4
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone() == (4,)
