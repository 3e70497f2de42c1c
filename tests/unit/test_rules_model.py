"""rules.model: QueryRule validation (every error names its rule_id and column), validate_rules
collecting all errors, replication hostgroup pairs, RuleSet normalisation and lookups."""

from __future__ import annotations

import re

import pytest

from rules.classify import Kind
from rules.model import (
    Decision,
    Deny,
    QueryRule,
    Reason,
    ReplicationHostgroup,
    ReplicationHostgroupError,
    RouteTo,
    RuleError,
    RuleSet,
    validate_replication_hostgroups,
    validate_rules,
)

# ---------------------------------------------------------------------------------------------
# from_mapping: accepted shapes


def test_defaults_follow_proxysql_except_active():
    r = QueryRule.from_mapping({"rule_id": 1})
    assert r.active is True  # ProxySQL's column default is 0; ours is on (documented)
    assert (r.flagIN, r.flagOUT, r.apply, r.negate_match_pattern) == (0, None, False, False)
    assert r.re_modifiers == "CASELESS"
    assert r.destination_hostgroup is None and r.multiplex is None and r.log is None
    assert not r.has_criteria


def test_proxysql_style_values_are_accepted():
    r = QueryRule.from_mapping(
        {
            "rule_id": 7,
            "active": 1,
            "apply": 0,
            "log": 1,
            "digest": "0x00000000000000FF",
            "match_digest": "^select",
            "re_modifiers": "caseless, global",
            "match_kind": "select, show",
            "match_tables": ["Shop.`Orders`", "items"],
            "cache_ttl": None,  # unsupported ProxySQL column, but NULL: fine
            "attributes": "",
        }
    )
    assert r.active is True and r.apply is False and r.log is True
    assert r.digest == 255
    assert r.re_modifiers == "CASELESS,GLOBAL" and r.replace_count == 0
    assert r.match_kind == frozenset({Kind.SELECT, Kind.SHOW})
    assert r.match_tables == frozenset({"shop.orders", "items"})
    assert r.match_digest_re.flags & re.IGNORECASE


def test_column_names_are_case_insensitive_like_sqlite():
    r = QueryRule.from_mapping({"RULE_ID": 3, "flagin": 2, "ok_msg": "fine"})
    assert (r.rule_id, r.flagIN, r.OK_msg) == (3, 2, "fine")


def test_empty_re_modifiers_is_case_sensitive_and_first_match_only():
    r = QueryRule.from_mapping({"rule_id": 1, "match_pattern": "^select", "re_modifiers": ""})
    assert not r.match_pattern_re.flags & re.IGNORECASE
    assert r.replace_count == 1
    assert r.match_pattern_re.search("SELECT 1") is None


def test_compiled_regexes_are_not_part_of_equality_and_rules_hash():
    a = QueryRule.from_mapping({"rule_id": 1, "match_digest": "^SELECT"})
    b = QueryRule(rule_id=1, match_digest="^SELECT")
    assert a == b and hash(a) == hash(b)
    assert a.match_digest_re is not None


def test_direct_construction_accepts_collections_but_not_a_bare_string():
    r = QueryRule(rule_id=1, match_kind=[Kind.SELECT], match_tables=("t",))
    assert r.match_kind == frozenset({Kind.SELECT}) and r.match_tables == frozenset({"t"})
    assert hash(r)
    with pytest.raises(RuleError, match="match_tables"):
        QueryRule(rule_id=1, match_tables="orders")
    with pytest.raises(RuleError, match="match_kind"):
        QueryRule(rule_id=1, match_kind=frozenset({"SELECT"}))


def test_direct_construction_is_validated_too():
    with pytest.raises(RuleError) as e:
        QueryRule(rule_id=4, match_pattern="(unclosed")
    assert (e.value.rule_id, e.value.column) == (4, "match_pattern")


# ---------------------------------------------------------------------------------------------
# from_mapping: each error names rule_id and column


ERROR_CASES = [
    # (row, column, words in the reason)
    ({"rule_id": 1, "destination": 2}, "destination", "unknown column"),
    ({"match_digest": "^SELECT"}, "rule_id", "required"),
    ({"rule_id": "1"}, "rule_id", "non-negative integer"),
    ({"rule_id": -1}, "rule_id", "non-negative integer"),
    ({"rule_id": 1, "active": "yes"}, "active", "true/false"),
    ({"rule_id": 1, "active": None}, "active", "cannot be NULL"),
    ({"rule_id": 1, "apply": 2}, "apply", "true/false"),
    ({"rule_id": 1, "flagIN": -1}, "flagIN", "non-negative"),
    ({"rule_id": 1, "flagOUT": 1.5}, "flagOUT", "integer"),
    ({"rule_id": 1, "destination_hostgroup": "1"}, "destination_hostgroup", "integer"),
    ({"rule_id": 1, "proxy_port": 70000}, "proxy_port", "1..65535"),
    ({"rule_id": 1, "timeout": -5}, "timeout", "non-negative"),
    ({"rule_id": 1, "multiplex": 3}, "multiplex", "0, 1 or 2"),
    ({"rule_id": 1, "digest": "xyz"}, "digest", "hex string"),
    ({"rule_id": 1, "digest": 1 << 64}, "digest", "64-bit"),
    ({"rule_id": 1, "username": 5}, "username", "string"),
    ({"rule_id": 1, "username": ""}, "username", "empty string"),
    ({"rule_id": 1, "client_addr": "10.%.0.1"}, "client_addr", "last character"),
    ({"rule_id": 1, "match_digest": "(SELECT"}, "match_digest", "does not compile"),
    ({"rule_id": 1, "match_pattern": "[a-"}, "match_pattern", "does not compile"),
    ({"rule_id": 1, "replace_pattern": "x"}, "replace_pattern", "needs match_pattern"),
    ({"rule_id": 1, "match_pattern": "(a)", "replace_pattern": r"\2"}, "replace_pattern", "invalid replacement"),
    (
        {"rule_id": 1, "match_pattern": "a", "replace_pattern": "b", "negate_match_pattern": True},
        "replace_pattern",
        "negate_match_pattern",
    ),
    ({"rule_id": 1, "error_msg": "no", "OK_msg": "yes"}, "OK_msg", "both set"),
    ({"rule_id": 1, "error_msg": ""}, "error_msg", "empty error message"),
    ({"rule_id": 1, "re_modifiers": "CASELESS,MULTILINE"}, "re_modifiers", "unknown modifier 'MULTILINE'"),
    ({"rule_id": 1, "match_kind": ["SELEKT"]}, "match_kind", "unknown statement kind 'SELEKT'"),
    ({"rule_id": 1, "match_kind": []}, "match_kind", "empty"),
    ({"rule_id": 1, "match_kind": 5}, "match_kind", "list of names"),
    ({"rule_id": 1, "match_tables": "a, ,b"}, "match_tables", "non-empty names"),
    ({"rule_id": 1, "match_read_only": "yes"}, "match_read_only", "true/false"),
    ({"rule_id": 1, "cache_ttl": 1000}, "cache_ttl", "not supported by rwproxy"),
    ({"rule_id": 1, "mirror_hostgroup": 3}, "mirror_hostgroup", "not supported by rwproxy"),
    ({"rule_id": 1, "flagIN": 1, "flagin": 2}, "flagIN", "given twice"),
]


@pytest.mark.parametrize(("row", "column", "words"), ERROR_CASES, ids=[f"{c[1]}:{c[2]}" for c in ERROR_CASES])
def test_from_mapping_errors_name_rule_and_column(row, column, words):
    with pytest.raises(RuleError) as e:
        QueryRule.from_mapping(row)
    err = e.value
    assert err.column == column
    assert words in err.reason
    rid = row.get("rule_id")
    if type(rid) is int and rid >= 0:
        assert err.rule_id == rid
        assert str(err).startswith(f"rule {rid}: {column}: ")
    else:
        assert err.rule_id is None
        assert str(err).startswith(f"rule (no rule_id): {column}: ")


def test_regex_error_says_which_pattern_and_why():
    with pytest.raises(RuleError) as e:
        QueryRule.from_mapping({"rule_id": 9, "match_digest": "^SELECT (a"})
    msg = str(e.value)
    assert msg.startswith("rule 9: match_digest: regex does not compile: missing ), unterminated subpattern")
    assert "'^SELECT (a'" in msg


def test_one_row_reports_all_its_errors_through_validate_rules():
    rules, errors = validate_rules(
        [{"rule_id": 5, "active": "maybe", "match_digest": "(", "replace_pattern": "x", "bogus": 1}]
    )
    assert rules == []
    assert {(e.rule_id, e.column) for e in errors} == {
        (5, "active"),
        (5, "match_digest"),
        (5, "replace_pattern"),
        (5, "bogus"),
    }


# ---------------------------------------------------------------------------------------------
# validate_rules: every error across rows, duplicates


def test_validate_rules_collects_every_error_and_keeps_the_valid_rules():
    rows = [
        {"rule_id": 1, "match_digest": "^SELECT", "destination_hostgroup": 1, "apply": 1},
        {"rule_id": 2, "match_digest": "(bad"},
        {"rule_id": 3, "error_msg": "x", "OK_msg": "y"},
        {"match_digest": "^UPDATE"},
        {"rule_id": 1, "comment": "duplicate id"},
        {"rule_id": 4, "active": 0},
        "not a table",
    ]
    rules, errors = validate_rules(rows)
    assert [r.rule_id for r in rules] == [1, 4]
    assert [(e.rule_id, e.column) for e in errors] == [
        (2, "match_digest"),
        (3, "OK_msg"),
        (None, "rule_id"),
        (1, "rule_id"),
        (None, None),
    ]
    assert "duplicate rule_id (row 5; first at row 1)" in str(errors[3])


def test_validate_rules_flags_a_duplicate_even_when_the_first_row_was_invalid():
    _, errors = validate_rules([{"rule_id": 2, "match_digest": "("}, {"rule_id": 2}])
    assert [(e.rule_id, e.column) for e in errors] == [(2, "match_digest"), (2, "rule_id")]


def test_validate_rules_with_no_errors():
    rules, errors = validate_rules([{"rule_id": 2}, {"rule_id": 1}])
    assert errors == [] and [r.rule_id for r in rules] == [2, 1]


# ---------------------------------------------------------------------------------------------
# replication hostgroups


def test_replication_hostgroup_defaults():
    p = ReplicationHostgroup.from_mapping({"writer_hostgroup": 0, "reader_hostgroup": 1})
    assert p.writer_is_also_reader is True  # mysql-monitor_writer_is_also_reader default
    assert p.check_type == "read_only" and p.comment == ""


@pytest.mark.parametrize(
    ("row", "column", "words"),
    [
        ({"writer_hostgroup": 0, "reader_hostgroup": 0}, "reader_hostgroup", "must differ"),
        ({"writer_hostgroup": 0}, "reader_hostgroup", "required"),
        ({"writer_hostgroup": 0, "reader_hostgroup": 1, "check_type": "ro"}, "check_type", "expected one of"),
        ({"writer_hostgroup": 0, "reader_hostgroup": 1, "max_writers": 1}, "max_writers", "unknown column"),
        ({"writer_hostgroup": "0", "reader_hostgroup": 1}, "writer_hostgroup", "integer"),
        ({"writer_hostgroup": 0, "reader_hostgroup": 1, "writer_is_also_reader": 2}, "writer_is_also_reader", "true/false"),
    ],
)
def test_replication_hostgroup_errors(row, column, words):
    with pytest.raises(ReplicationHostgroupError) as e:
        ReplicationHostgroup.from_mapping(row)
    assert e.value.column == column and words in e.value.reason


def test_validate_replication_hostgroups_checks_pairs_against_each_other():
    pairs, errors = validate_replication_hostgroups(
        [
            {"writer_hostgroup": 0, "reader_hostgroup": 1},
            {"writer_hostgroup": 0, "reader_hostgroup": 5},  # duplicate writer
            {"writer_hostgroup": 2, "reader_hostgroup": 1},  # reader already paired
            {"writer_hostgroup": 1, "reader_hostgroup": 3},  # 1 is a reader and a writer
            {"writer_hostgroup": 7, "reader_hostgroup": 7},
        ]
    )
    reasons = [str(e) for e in errors]
    assert any("reader_hostgroup: must differ" in r for r in reasons)
    assert any("duplicate writer_hostgroup" in r for r in reasons)
    assert any("already paired with writer 0" in r for r in reasons)
    assert any("writer 1): writer_hostgroup: hostgroup 1 is the writer of this pair and the reader of writer 0" in r
               for r in reasons)
    assert [(p.writer_hostgroup, p.reader_hostgroup) for p in pairs] == [(0, 1)]


# ---------------------------------------------------------------------------------------------
# RuleSet and Decision


def test_ruleset_keeps_active_rules_sorted_and_precomputes_lookups():
    rs = RuleSet(
        rules=(QueryRule(rule_id=20), QueryRule(rule_id=5, active=False), QueryRule(rule_id=10, match_pattern="x")),
        replication_hostgroups=(ReplicationHostgroup(0, 1), ReplicationHostgroup(10, 11)),
    )
    assert [r.rule_id for r in rs.rules] == [10, 20]
    assert rs.reader_hostgroup_of(0) == 1 and rs.reader_hostgroup_of(11) is None
    assert rs.writer_hostgroup_of(11) == 10
    assert rs.is_reader_hostgroup(1) and not rs.is_reader_hostgroup(0)
    assert rs.needs_sql and rs.reader_fallback_to_writer


def test_ruleset_refuses_duplicates_and_conflicting_pairs():
    with pytest.raises(RuleError):
        RuleSet(rules=(QueryRule(rule_id=1), QueryRule(rule_id=1, active=False)))
    with pytest.raises(ReplicationHostgroupError):
        RuleSet(replication_hostgroups=(ReplicationHostgroup(0, 1), ReplicationHostgroup(1, 2)))


def test_shared_decisions_for_rule_less_outcomes():
    rs = RuleSet()
    d = rs.route(3, Reason.DEFAULT_WRITE)
    assert d is rs.route(3, Reason.DEFAULT_WRITE)
    assert d == Decision(RouteTo(3), Reason.DEFAULT_WRITE)
    assert d.hostgroup == 3 and d.reason == "default-write" and d.rule_ids == ()
    assert Decision(Deny("no"), Reason.RULE).hostgroup is None
