"""admin.store + admin.validate: the layers (config -> memory -> runtime, disk), validation that reports
every error with table / row key / column / reason, diffs, client SQL under the authorizer, startup
precedence, and the DIFF MYSQL ROUTES dry run. SQLite in memory and in tmp_path; no servers."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from admin.commands import ALL_SECTIONS, Layer, Section, parse
from admin.store import Affected, ConfigStore, Rows, StoreError, ValidationFailed
from admin.validate import (
    VARIABLES,
    DigestRow,
    build_config,
    check_variable,
    digests_from_table,
    explain_route,
    read_config_file,
    route_changes,
    rows_from_config,
)
from proxy.config import ConfigError, parse_config

CONFIG = """
[proxy]
log_level = "warning"
handshake_timeout = 2.5
connect_timeout = 0.75
max_connections = 500
client_idle_timeout = 600
reader_fallback_to_writer = false

[pool]
multiplexing = true
min_idle = 2
acquire_timeout = 0.25
connect_rate = 50.5
max_prepared_statements = 32

[listeners.data]
address = "127.0.0.1"
port = 6033

[[users]]
username = "app"
password = "app_pw"
default_hostgroup = 0
max_connections = 100

[[users]]
username = "report"
password = "r_pw"
backend_username = "report_ro"
backend_password = "ro_pw"
auth_plugin = "caching_sha2_password"
default_hostgroup = 0
transaction_persistent = false

[[servers]]
hostgroup_id = 0
hostname = "10.0.0.1"
comment = "primary"

[[servers]]
hostgroup_id = 1
hostname = "10.0.0.2"
port = 3307
weight = 3
max_replication_lag = 10

[[servers]]
hostgroup_id = 1
hostname = "10.0.0.3"
status = "OFFLINE_SOFT"

[[replication_hostgroups]]
writer_hostgroup = 0
reader_hostgroup = 1
writer_is_also_reader = false
check_type = "super_read_only"
comment = "main pair"

[[query_rules]]
rule_id = 5
match_digest = "^SELECT .* FOR UPDATE"
destination_hostgroup = 0
apply = true

[[query_rules]]
rule_id = 10
username = "report"
match_kind = ["SELECT", "SHOW"]
match_tables = ["shop.orders"]
destination_hostgroup = 1
re_modifiers = "CASELESS,GLOBAL"
comment = "reports read replicas"

[[query_rules]]
rule_id = 20
active = false
digest = "0x00000000000000FF"
error_msg = "not now"

[[query_rules]]
rule_id = 30
match_pattern = "^DELETE FROM audit"
error_msg = "audit rows are kept"
apply = true
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    p = tmp_path / "rwproxy.toml"
    p.write_text(CONFIG)
    return p


@pytest.fixture
def cf(config_file: Path):
    return read_config_file(config_file)


@pytest.fixture
def store(cf) -> ConfigStore:
    s = ConfigStore(None)
    s.startup(cf)
    live = s.build(ALL_SECTIONS, cf.config)
    assert live.ok, live.errors
    s.set_runtime(live)
    return s


def _messages(result) -> list[str]:
    return [str(e) for e in result.errors]


# ---- round trips -----------------------------------------------------------------------------------


def test_config_to_memory_to_config_is_identity(cf):
    store = ConfigStore(None)
    store.load_from_config(cf)
    result = store.build(ALL_SECTIONS, cf.config)
    assert result.ok, _messages(result)
    assert result.config == cf.config
    # the pieces equality covers, checked explicitly because they are easy to lose
    c = result.config
    assert c.servers == cf.config.servers  # same order
    assert c.users["report"].backend_username == "report_ro" and c.users["report"].backend_password == "ro_pw"
    assert c.users["app"].backend_username == "app" and c.users["app"].backend_password == "app_pw"
    assert c.ruleset.reader_fallback_to_writer is False
    assert c.pool.connect_rate == 50.5 and c.pool.acquire_timeout == 0.25 and c.handshake_timeout == 2.5
    assert c.path == str(cf.config.path)


def test_inactive_rules_survive_load_from_config(store):
    rows = {r["rule_id"]: r for r in store.rows("mysql_query_rules")}
    assert sorted(rows) == [5, 10, 20, 30]
    assert rows[20]["active"] == 0 and rows[20]["digest"] == "0x00000000000000FF"
    assert rows[10]["match_kind"] == "SELECT,SHOW" and rows[10]["match_tables"] == "shop.orders"
    assert rows[10]["re_modifiers"] == "CASELESS,GLOBAL"


def test_memory_rows_look_like_proxysql(store):
    servers = store.execute("SELECT hostgroup_id, hostname, port, status, weight, max_replication_lag, comment FROM mysql_servers")
    assert servers.rows == [
        (0, "10.0.0.1", 3306, "ONLINE", 1, 0, "primary"),
        (1, "10.0.0.2", 3307, "ONLINE", 3, 10, ""),
        (1, "10.0.0.3", 3306, "OFFLINE_SOFT", 1, 0, ""),
    ]
    users = store.execute("SELECT username, active, default_hostgroup, transaction_persistent, backend_username FROM mysql_users")
    assert users.rows == [("app", 1, 0, 1, None), ("report", 1, 0, 0, "report_ro")]
    pairs = store.execute("SELECT * FROM mysql_replication_hostgroups")
    assert pairs.columns == ("writer_hostgroup", "reader_hostgroup", "check_type", "writer_is_also_reader", "comment")
    assert pairs.rows == [(0, 1, "super_read_only", 0, "main pair")]
    variables = dict(store.execute("SELECT variable_name, variable_value FROM global_variables").rows)
    assert variables["mysql-connect_timeout_client"] == "2500"  # ms, as in ProxySQL
    assert variables["mysql-connect_timeout_server"] == "750"
    assert variables["mysql-wait_timeout"] == "600000"
    assert variables["mysql-connect_timeout_server_max"] == "250"
    assert variables["mysql-pool_connect_rate"] == "50.5"
    assert variables["mysql-reader_fallback_to_writer"] == "false"
    assert variables["mysql-log_level"] == "warning"
    assert set(variables) == {v.name for v in VARIABLES}


def test_save_to_disk_and_load_back_in_a_new_store(tmp_path, cf):
    db = tmp_path / "data" / "rwproxy.db"
    db.parent.mkdir()
    first = ConfigStore(db)
    first.startup(cf)
    first.execute("UPDATE mysql_servers SET weight = 7 WHERE hostname = '10.0.0.2'")
    first.execute("INSERT INTO mysql_query_rules (rule_id, match_digest, destination_hostgroup, apply) VALUES (40, '^SHOW', 0, 1)")
    saved = first.save_to_disk(ALL_SECTIONS)
    assert saved == sum(len(first.rows(t)) for s in ALL_SECTIONS for t in s.tables)
    expected = first.memory_rows()
    first.close()
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600  # passwords are in there

    second = ConfigStore(db)
    assert set(second.saved_sections()) == set(ALL_SECTIONS)
    assert second.rows("mysql_servers") == []  # memory starts empty
    second.load_from_disk(ALL_SECTIONS)
    assert second.memory_rows() == expected
    result = second.build(ALL_SECTIONS, cf.config)
    assert result.ok, _messages(result)
    assert [s.weight for s in result.config.servers] == [1, 7, 1]
    assert [r.rule_id for r in result.config.ruleset.rules] == [5, 10, 30, 40]


def test_disk_moves_are_per_section(tmp_path, cf):
    store = ConfigStore(tmp_path / "rwproxy.db")
    store.load_from_config(cf)
    store.save_to_disk(Section.SERVERS)
    assert set(store.saved_sections()) == {Section.SERVERS}
    assert len(store.rows("mysql_servers", Layer.DISK)) == 3
    assert len(store.rows("mysql_replication_hostgroups", Layer.DISK)) == 1  # MYSQL SERVERS covers the pairs
    assert store.rows("mysql_users", Layer.DISK) == []
    with pytest.raises(StoreError, match=r"nothing saved on disk for MYSQL USERS \(SAVE \.\.\. TO DISK first\); memory unchanged"):
        store.load_from_disk([Section.SERVERS, Section.USERS])
    assert len(store.rows("mysql_users")) == 2


def test_no_disk_layer(cf):
    store = ConfigStore(None)
    store.load_from_config(cf)
    with pytest.raises(StoreError, match=r"cannot SAVE \.\.\. TO DISK: no disk layer"):
        store.save_to_disk(Section.SERVERS)
    with pytest.raises(StoreError, match=r"cannot LOAD \.\.\. FROM DISK: no disk layer"):
        store.load_from_disk(Section.SERVERS)


def test_disk_file_problems(tmp_path):
    with pytest.raises(StoreError, match="data directory .* does not exist"):
        ConfigStore(tmp_path / "missing" / "rwproxy.db")
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE customers (id INT)")
    con.close()
    with pytest.raises(StoreError, match=r"is not an rwproxy disk layer \(it has tables customers\)"):
        ConfigStore(other)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the disk layer"):
        ConfigStore(junk)


def test_save_runtime_to_memory(store, cf):
    store.execute("DELETE FROM mysql_users WHERE username = 'report'")
    store.save_runtime_to_memory(Section.USERS)
    assert [r["username"] for r in store.rows("mysql_users")] == ["app", "report"]
    fresh = ConfigStore(None)
    with pytest.raises(StoreError, match="nothing is recorded at runtime for MYSQL USERS yet"):
        fresh.save_runtime_to_memory(Section.USERS)


# ---- startup precedence ----------------------------------------------------------------------------


def test_startup_without_disk_uses_the_file(cf):
    report = ConfigStore(None).startup(cf)
    assert [o.layer for o in report.origins] == [Layer.CONFIG] * 4
    assert report.lines()[0] == f"MYSQL SERVERS: from the config file {cf.config.path} (no data directory, so no disk layer)"


def test_startup_uses_disk_only_for_saved_sections_and_says_so(tmp_path, config_file):
    db = tmp_path / "rwproxy.db"
    first = ConfigStore(db)
    first.startup(read_config_file(config_file))
    first.execute("UPDATE mysql_servers SET weight = 9 WHERE hostname = '10.0.0.1'")
    first.save_to_disk(Section.SERVERS)
    first.close()

    second = ConfigStore(db)
    report = second.startup(read_config_file(config_file))
    by = {o.section: o for o in report.origins}
    assert by[Section.SERVERS].layer is Layer.DISK
    assert by[Section.USERS].layer is Layer.CONFIG
    assert by[Section.USERS].detail == f"from the config file {config_file} (never saved to the disk layer {db})"
    assert second.rows("mysql_servers")[0]["weight"] == 9
    # the file differs from what overrides it: never silent
    warning = by[Section.SERVERS].warning
    assert warning is not None and "(1 changed row(s) on disk vs the file) and is NOT used for this section" in warning
    assert "LOAD MYSQL SERVERS FROM CONFIG; LOAD MYSQL SERVERS TO RUNTIME; SAVE MYSQL SERVERS TO DISK" in warning
    lines = report.lines()
    assert lines[0].startswith(f"MYSQL SERVERS: from the disk layer {db} (saved ")
    assert lines[1].startswith("WARNING: MYSQL SERVERS: the config file")
    assert by[Section.USERS].warning is None


def test_startup_without_differences_has_no_warning(tmp_path, config_file):
    db = tmp_path / "rwproxy.db"
    first = ConfigStore(db)
    first.startup(read_config_file(config_file))
    first.save_to_disk(ALL_SECTIONS)
    first.close()
    report = ConfigStore(db).startup(read_config_file(config_file))
    assert [o.layer for o in report.origins] == [Layer.DISK] * 4
    assert not any(o.warning for o in report.origins)


def test_startup_initial_ignores_the_disk(tmp_path, config_file):
    db = tmp_path / "rwproxy.db"
    first = ConfigStore(db)
    first.startup(read_config_file(config_file))
    first.execute("DELETE FROM mysql_query_rules")
    first.save_to_disk(Section.QUERY_RULES)
    first.close()
    second = ConfigStore(db)
    report = second.startup(read_config_file(config_file), initial=True)
    assert [o.layer for o in report.origins] == [Layer.CONFIG] * 4
    assert "--initial: the disk layer's copy saved" in report.origins[2].detail
    assert len(second.rows("mysql_query_rules")) == 4
    assert second.rows("mysql_query_rules", Layer.DISK) == []  # untouched until the next SAVE


# ---- validation: every error, named --------------------------------------------------------------


def test_build_reports_every_error_at_once(store, cf):
    store.execute("UPDATE mysql_query_rules SET match_digest = '^SELECT (' WHERE rule_id = 5")
    store.execute("UPDATE mysql_query_rules SET match_pattern = '[unclosed' WHERE rule_id = 30")
    store.execute("INSERT INTO mysql_users (username, password, default_hostgroup) VALUES ('bob', 'pw', 7)")
    store.execute("INSERT INTO mysql_replication_hostgroups (writer_hostgroup, reader_hostgroup) VALUES (3, 4)")
    store.execute("UPDATE global_variables SET variable_value = 'lots' WHERE variable_name = 'mysql-max_connections'")
    result = store.build(ALL_SECTIONS, cf.config)
    assert not result.ok and result.config is None
    assert _messages(result) == [
        "mysql_replication_hostgroups writer_hostgroup=3: writer_hostgroup: hostgroup 3 has no server in mysql_servers",
        "mysql_users username=bob: default_hostgroup: hostgroup 7 has no server in mysql_servers",
        "mysql_query_rules rule_id=5: match_digest: regex does not compile: missing ), unterminated subpattern at position 8 (pattern '^SELECT (')",
        "mysql_query_rules rule_id=30: match_pattern: regex does not compile: unterminated character set at position 0 (pattern '[unclosed')",
        "global_variables variable_name=mysql-max_connections: variable_value: expected an integer, got 'lots'",
    ]
    e = result.errors[2]
    assert (e.table, e.key, e.column, e.layer) == ("mysql_query_rules", "rule_id=5", "match_digest", Layer.MEMORY)
    # with writer_is_also_reader=1 (the default) the reader needs no server of its own; with 0 it does
    store.execute("UPDATE mysql_replication_hostgroups SET writer_is_also_reader = 0 WHERE writer_hostgroup = 3")
    assert "mysql_replication_hostgroups writer_hostgroup=3: reader_hostgroup: hostgroup 4 has no server in mysql_servers" in _messages(
        store.build(ALL_SECTIONS, cf.config)
    )


def test_rule_destination_must_have_a_server(store, cf):
    store.execute("INSERT INTO mysql_query_rules (rule_id, match_digest, destination_hostgroup) VALUES (50, '^SELECT', 9)")
    assert _messages(store.build(Section.QUERY_RULES, cf.config)) == [
        "mysql_query_rules rule_id=50: destination_hostgroup: hostgroup 9 has no server in runtime_mysql_servers",
    ]


def test_rule_model_errors_are_reported_with_their_column(store, cf):
    store.execute("INSERT INTO mysql_query_rules (rule_id, replace_pattern, error_msg, OK_msg) VALUES (60, 'x', 'no', 'ok')")
    store.execute("INSERT INTO mysql_query_rules (rule_id, match_kind, re_modifiers) VALUES (61, 'SELECT,FROB', 'CASELESS,LOUD')")
    assert _messages(store.build(Section.QUERY_RULES, cf.config)) == [
        "mysql_query_rules rule_id=60: replace_pattern: needs match_pattern (the regex whose matches it replaces)",
        "mysql_query_rules rule_id=60: OK_msg: error_msg and OK_msg are both set; a rule either blocks or answers OK",
        "mysql_query_rules rule_id=61: match_kind: unknown statement kind 'FROB' (known: " + ", ".join(
            __import__("rules.classify", fromlist=["Kind"]).Kind.__members__
        ) + ")",
        "mysql_query_rules rule_id=61: re_modifiers: unknown modifier 'LOUD' (known: CASELESS, GLOBAL)",
    ]


def test_rows_sqlite_cannot_hold_are_still_caught(cf):
    """build_config validates rows from anywhere (an old disk file, a future table): duplicates, bad
    statuses, wrong types -- all reported at once."""
    rows = rows_from_config(cf.config)
    rows["mysql_servers"].append(dict(rows["mysql_servers"][0]))
    rows["mysql_servers"][1]["status"] = "ALIVE"
    rows["mysql_servers"][2]["port"] = "3306"
    rows["mysql_users"].append(dict(rows["mysql_users"][0]))
    rows["mysql_users"][1]["auth_plugin"] = "sha256_password"
    rows["global_variables"].append({"variable_name": "mysql-threads", "variable_value": "4"})
    result = build_config(rows, ALL_SECTIONS, cf.config)
    assert _messages(result) == [
        "mysql_servers hostgroup_id=1,hostname=10.0.0.2,port=3307: status: must be one of ONLINE, SHUNNED, OFFLINE_SOFT, OFFLINE_HARD, got 'ALIVE'",
        "mysql_servers hostgroup_id=1,hostname=10.0.0.3,port=3306: port: expected an integer, got '3306'",
        "mysql_servers hostgroup_id=0,hostname=10.0.0.1,port=3306: duplicate server (rows 1 and 4)",
        "mysql_users username=report: auth_plugin: must be one of mysql_native_password, caching_sha2_password, got 'sha256_password'",
        "mysql_users username=app: username: duplicate user (rows 1 and 3)",
        "global_variables variable_name=mysql-threads: variable_name: unknown variable 'mysql-threads' (see SHOW VARIABLES / docs/admin.md)",
    ]


def test_empty_tables_are_refused(store, cf):
    store.execute("DELETE FROM mysql_servers")
    store.execute("UPDATE mysql_users SET active = 0")
    msgs = _messages(store.build(ALL_SECTIONS, cf.config))
    assert "mysql_servers: no server: at least one row is required" in msgs
    assert "mysql_users: no active user: at least one row with active=1 is required" in msgs


def test_loading_one_section_checks_it_against_the_live_others(store, cf):
    # moving the writer to hostgroup 5 in memory: loading SERVERS alone would strand the live users/rules/pair
    store.execute("UPDATE mysql_servers SET hostgroup_id = 5 WHERE hostgroup_id = 0")
    store.execute("UPDATE mysql_users SET default_hostgroup = 5")
    store.execute("UPDATE mysql_query_rules SET destination_hostgroup = 5 WHERE destination_hostgroup = 0")
    store.execute("UPDATE mysql_replication_hostgroups SET writer_hostgroup = 5")
    msgs = _messages(store.build(Section.SERVERS, cf.config))
    assert msgs == [
        ("runtime_mysql_users username=app: default_hostgroup: hostgroup 0 has no server in mysql_servers "
        "(this row is live; change it in memory and load both sections at once: LOAD MYSQL ALL TO RUNTIME)"),
        ("runtime_mysql_users username=report: default_hostgroup: hostgroup 0 has no server in mysql_servers "
        "(this row is live; change it in memory and load both sections at once: LOAD MYSQL ALL TO RUNTIME)"),
        ("runtime_mysql_query_rules rule_id=5: destination_hostgroup: hostgroup 0 has no server in mysql_servers "
        "(this row is live; change it in memory and load both sections at once: LOAD MYSQL ALL TO RUNTIME)"),
    ]
    # ...and USERS alone points at a hostgroup the live servers do not have yet
    assert _messages(store.build(Section.USERS, cf.config))[0] == (
        "mysql_users username=app: default_hostgroup: hostgroup 5 has no server in runtime_mysql_servers "
        "(memory's mysql_servers has one: LOAD MYSQL SERVERS TO RUNTIME with it, e.g. LOAD MYSQL ALL TO RUNTIME)"
    )
    # all at once is consistent
    result = store.build(ALL_SECTIONS, cf.config)
    assert result.ok, _messages(result)
    assert result.config.users["app"].default_hostgroup == 5


def test_inactive_users_are_not_loaded(store, cf):
    store.execute("UPDATE mysql_users SET active = 0, default_hostgroup = 99 WHERE username = 'report'")
    result = store.build(Section.USERS, cf.config)
    assert result.ok, _messages(result)
    assert set(result.config.users) == {"app"}


# ---- LOAD ... TO RUNTIME: all or nothing ----------------------------------------------------------


def test_load_to_runtime_refused_changes_nothing(store, cf):
    before = store.rows("mysql_query_rules", Layer.RUNTIME)
    store.execute("UPDATE mysql_query_rules SET match_digest = '(' WHERE rule_id = 5")
    applied = []
    with pytest.raises(ValidationFailed) as e:
        store.load_to_runtime(Section.QUERY_RULES, cf.config, applied.append, "LOAD MYSQL QUERY RULES TO RUNTIME")
    assert applied == []
    assert store.rows("mysql_query_rules", Layer.RUNTIME) == before
    assert str(e.value) == (
        "LOAD MYSQL QUERY RULES TO RUNTIME refused, runtime unchanged: 1 error\n"
        "  mysql_query_rules rule_id=5: match_digest: regex does not compile: missing ), unterminated subpattern at position 0 (pattern '(')"
    )
    assert len(e.value.errors) == 1


def test_load_to_runtime_swaps_then_records(store, cf):
    store.execute("UPDATE mysql_query_rules SET active = 0, comment = 'paused' WHERE rule_id = 10")
    applied = []
    new = store.load_to_runtime(Section.QUERY_RULES, cf.config, applied.append)
    assert applied == [new]
    assert [r.rule_id for r in new.ruleset.rules] == [5, 30]
    assert new.servers == cf.config.servers and new.users == cf.config.users
    # runtime_* shows exactly the rows that were loaded, inactive ones included
    assert store.rows("mysql_query_rules", Layer.RUNTIME) == store.rows("mysql_query_rules")
    assert store.diff(Section.QUERY_RULES) == []


def test_a_failing_swap_leaves_runtime_tables_alone(store, cf):
    before = store.rows("mysql_servers", Layer.RUNTIME)
    store.execute("UPDATE mysql_servers SET weight = 5")

    def boom(config):
        raise RuntimeError("swap failed")

    with pytest.raises(RuntimeError):
        store.load_to_runtime(Section.SERVERS, cf.config, boom)
    assert store.rows("mysql_servers", Layer.RUNTIME) == before


def test_run_dispatches_store_commands(store, cf, config_file):
    applied = []
    assert store.run(parse("SET mysql-max_connections = 42")).count == 1
    out = store.run(parse("LOAD MYSQL VARIABLES TO RUNTIME"), runtime=cf.config, apply=applied.append)
    assert out.message == "LOAD MYSQL VARIABLES TO RUNTIME: validated and live"
    assert applied[0].max_connections == 42
    store.execute("DELETE FROM mysql_servers")
    out = store.run(parse("LOAD MYSQL SERVERS FROM CONFIG"))  # re-reads the file the store started from
    assert out.count == 4 and len(store.rows("mysql_servers")) == 3
    diff = store.run(parse("DIFF MYSQL VARIABLES"))
    assert isinstance(diff, Rows) and diff.rows == []
    assert store.run(parse("SET NAMES utf8mb4")) == Affected(0)
    assert store.run(parse("SELECT @@version_comment LIMIT 1")).rows == [("rwproxy admin",)]
    assert store.run(parse("SHOW TABLES LIKE 'runtime%users'")).rows == [("runtime_mysql_users",)]
    assert store.run(parse("SHOW VARIABLES LIKE 'mysql-max_connecti%'")).rows == [("mysql-max_connections", "42")]
    with pytest.raises(Exception, match="needs the running proxy"):
        store.run(parse("LOAD MYSQL USERS TO RUNTIME"))
    with pytest.raises(Exception, match="Kill is executed by the admin listener"):
        store.run(parse("KILL 3"))


# ---- diff -----------------------------------------------------------------------------------------


def test_diff_memory_against_runtime(store):
    assert store.diff() == []
    store.execute("UPDATE mysql_servers SET weight = 4, comment = 'bigger' WHERE hostname = '10.0.0.2'")
    store.execute("DELETE FROM mysql_servers WHERE hostname = '10.0.0.3'")
    store.execute("INSERT INTO mysql_servers (hostgroup_id, hostname) VALUES (1, '10.0.0.4')")
    store.execute("UPDATE mysql_users SET password = 'new' WHERE username = 'app'")
    rows = [d.row() for d in store.diff()]
    assert rows == [
        ("mysql_servers", "changed", "hostgroup_id=1,hostname=10.0.0.2,port=3307", "weight: 3 -> 4; comment: '' -> 'bigger'"),
        ("mysql_servers", "added", "hostgroup_id=1,hostname=10.0.0.4,port=3306", ""),
        ("mysql_servers", "removed", "hostgroup_id=1,hostname=10.0.0.3,port=3306", ""),
        ("mysql_users", "changed", "username=app", "password: changed"),  # never the secret itself
    ]
    assert [d.table for d in store.diff(Section.USERS)] == ["mysql_users"]
    out = store.run(parse("DIFF MYSQL SERVERS"))
    assert out.columns == ("table_name", "change", "row_key", "differences") and len(out.rows) == 3


def test_diff_memory_against_disk(tmp_path, cf):
    store = ConfigStore(tmp_path / "rwproxy.db")
    store.load_from_config(cf)
    store.save_to_disk(ALL_SECTIONS)
    assert store.diff(against=Layer.DISK) == []
    store.set_variable("mysql-log_level", "debug")
    assert [d.row() for d in store.diff(Section.VARIABLES, Layer.DISK)] == [
        ("global_variables", "changed", "variable_name=mysql-log_level", "variable_value: 'warning' -> 'debug'"),
    ]


# ---- client SQL ------------------------------------------------------------------------------------


def test_execute_select_insert_update_delete_replace(store):
    out = store.execute("SELECT hostname FROM mysql_servers WHERE hostgroup_id = ? ORDER BY hostname", (1,))
    assert out == Rows(("hostname",), [("10.0.0.2",), ("10.0.0.3",)])
    assert store.execute("INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES (2, 'db9', '3306')") == Affected(1)
    assert store.execute("SELECT typeof(port), status, weight FROM mysql_servers WHERE hostname = 'db9'").rows == [("integer", "ONLINE", 1)]
    assert store.execute("UPDATE mysql_servers SET max_connections = 10 WHERE hostgroup_id = 1").count == 2
    assert store.execute("REPLACE INTO mysql_servers (hostgroup_id, hostname, port, weight) VALUES (2, 'db9', 3306, 5)").count == 1
    assert store.execute("SELECT weight FROM mysql_servers WHERE hostname = 'db9'").rows == [(5,)]
    assert store.execute("DELETE FROM mysql_servers WHERE hostgroup_id = 2").count == 1
    assert store.execute("DELETE FROM mysql_query_rules").count == 4
    # rule_id is AUTOINCREMENT, as in ProxySQL; a new rule defaults to active (config-file semantics)
    store.execute("INSERT INTO mysql_query_rules (match_digest, destination_hostgroup, apply) VALUES ('^SELECT', 1, 1)")
    assert store.execute("SELECT rule_id, active FROM mysql_query_rules").rows == [(31, 1)]
    # reading the other layers is fine
    assert len(store.execute("SELECT * FROM runtime_mysql_servers").rows) == 3


@pytest.mark.parametrize(
    "sql,errno,message",
    [
        ("INSERT INTO mysql_servers (hostname, port) VALUES ('x', 'abc')", 3819,
         "Check constraint failed: mysql_servers.port must be an integer 0..65535"),
        ("INSERT INTO mysql_servers (hostname, status) VALUES ('x', 'online')", 3819,
         "Check constraint failed: mysql_servers.status must be one of ONLINE, SHUNNED, OFFLINE_SOFT, OFFLINE_HARD"),
        ("UPDATE mysql_query_rules SET apply = 2", 3819, "Check constraint failed: mysql_query_rules.apply must be 0 or 1"),
        ("UPDATE mysql_query_rules SET digest = '12345' WHERE rule_id = 5", 3819,
         "Check constraint failed: mysql_query_rules.digest must be NULL (any) or a hex digest such as '0x3A5F0C1D2E4B6F70'"),
        ("INSERT INTO mysql_replication_hostgroups (writer_hostgroup, reader_hostgroup) VALUES (2, 2)", 3819,
         "Check constraint failed: mysql_replication_hostgroups.reader_hostgroup must be an integer >= 0, other than writer_hostgroup"),
        ("INSERT INTO global_variables VALUES ('mysql-threads', '4')", 3819,
         "Check constraint failed: global_variables.variable_name must be a known variable (SHOW VARIABLES lists them; docs/admin.md)"),
        ("INSERT INTO mysql_servers (hostname) VALUES (NULL)", 1048, "Column 'mysql_servers.hostname' cannot be null"),
        ("INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES (0, '10.0.0.1', 3306)", 1062,
         "Duplicate entry for mysql_servers.hostgroup_id, mysql_servers.hostname, mysql_servers.port (use REPLACE INTO, or UPDATE the existing row)"),
        ("INSERT INTO mysql_users (username, fast_forward) VALUES ('x', 1)", 1054,
         ("table mysql_users has no column named fast_forward (SHOW CREATE TABLE <table> lists the columns; "
         "ProxySQL columns rwproxy does not implement are absent, see docs/admin.md)")),
        ("SELECT * FROM stats_nothing", 1146,
         ("no such table: stats_nothing (admin tables: mysql_servers, mysql_users, mysql_query_rules, mysql_replication_hostgroups, "
         "global_variables, and runtime_* for each)")),
        ("SELECT 1; SELECT 2", 1064, "one statement at a time on the admin port"),
        ("INSERT INTO mysql_servers VALUES (1, 'a', 1, 'ONLINE', 1, 1, 0, '') ON DUPLICATE KEY UPDATE weight = 2", 1064,
         "SQL syntax error: near \"DUPLICATE\": syntax error (the admin tables are SQLite: standard SQL, REPLACE INTO, no ON DUPLICATE KEY UPDATE)"),
        ("DELETE FROM runtime_mysql_servers", 1142,
         "DELETE denied: runtime_mysql_servers is read-only: it shows what is live; edit mysql_servers, then LOAD MYSQL SERVERS TO RUNTIME"),
        ("UPDATE runtime_global_variables SET variable_value = '1'", 1142,
         "UPDATE denied: runtime_global_variables is read-only: it shows what is live; edit global_variables, then LOAD MYSQL VARIABLES TO RUNTIME"),
        ("DROP TABLE mysql_servers", 1227, "schema changes are not allowed on the admin port (the store's schema is fixed)"),
        ("CREATE TABLE t (a INT)", 1227, "schema changes are not allowed on the admin port (the store's schema is fixed)"),
        ("ATTACH DATABASE ':memory:' AS other", 1227,
         "ATTACH is not allowed on the admin port (the store's schema and layers are managed by the proxy)"),
        ("DETACH DATABASE disk", 1227, "DETACH is not allowed on the admin port (the store's schema and layers are managed by the proxy)"),
        ("PRAGMA foreign_keys = 1", 1227, "PRAGMA is not allowed on the admin port (the store's schema and layers are managed by the proxy)"),
        ("BEGIN", 1227, "transaction control is not allowed on the admin port (the store's schema and layers are managed by the proxy)"),
        ("SAVEPOINT a", 1227, "SAVEPOINT is not allowed on the admin port (the store's schema and layers are managed by the proxy)"),
    ],
)
def test_execute_refuses_with_mysql_errors(store, sql, errno, message):
    with pytest.raises(StoreError) as e:
        store.execute(sql)
    assert (e.value.errno, e.value.message) == (errno, message)


def test_execute_cannot_write_the_disk_layer(tmp_path, cf):
    store = ConfigStore(tmp_path / "rwproxy.db")
    store.load_from_config(cf)
    store.save_to_disk(Section.SERVERS)
    with pytest.raises(StoreError) as e:
        store.execute("DELETE FROM disk.mysql_servers")
    assert e.value.message == "DELETE denied: disk.mysql_servers is the disk layer: edit memory (main) and SAVE ... TO DISK"
    with pytest.raises(StoreError):
        store.execute(f"DELETE FROM disk.{'rwproxy_saved_sections'}")
    assert store.execute("SELECT count(*) FROM disk.mysql_servers").rows == [(3,)]
    # and the authorizer is off again for the store's own work
    store.save_to_disk(Section.SERVERS)


def test_show_helpers(tmp_path, store):
    assert store.show_create_table("mysql_servers").rows[0][1].startswith("CREATE TABLE mysql_servers (hostgroup_id INT NOT NULL")
    with pytest.raises(StoreError, match=r"Table 'main.nope' doesn't exist"):
        store.show_create_table("nope")
    assert store.databases().rows == [(0, "main", "")]
    assert ("runtime_mysql_query_rules",) in store.show_tables().rows
    disk = ConfigStore(tmp_path / "d.db")
    assert disk.databases().rows == [(0, "main", ""), (2, "disk", str(tmp_path / "d.db"))]
    assert ("rwproxy_saved_sections",) in disk.show_tables("disk").rows


# ---- global_variables ------------------------------------------------------------------------------


def test_set_variable_checks_now_and_applies_at_load(store, cf):
    out = store.set_variable("mysql-wait_timeout", " 1500 ")
    assert out == Affected(1, "mysql-wait_timeout = '1500' in memory; LOAD MYSQL VARIABLES TO RUNTIME to apply")
    result = store.build(Section.VARIABLES, cf.config)
    assert result.ok and result.config.client_idle_timeout == 1.5
    with pytest.raises(StoreError) as e:
        store.set_variable("mysql-threads", "4")
    assert e.value.errno == 1193 and e.value.message.startswith("unknown variable 'mysql-threads'; rwproxy's variables: mysql-log_level, ")
    with pytest.raises(StoreError) as e:
        store.set_variable("mysql-max_connections", "0")
    assert (e.value.errno, e.value.message) == (1231, "SET mysql-max_connections: must be between 1 and 1000000, got '0'")
    with pytest.raises(StoreError) as e:
        store.set_variable("mysql-connect_timeout_client", "0")
    assert e.value.message == "SET mysql-connect_timeout_client: must be greater than 0 ms, got '0'"
    with pytest.raises(StoreError) as e:
        store.set_variable("mysql-multiplexing", "maybe")
    assert e.value.message == "SET mysql-multiplexing: expected true or false, got 'maybe'"


def _limits(v) -> list[tuple[Any, bool]]:
    """(config-file value, valid?) at and just beyond each limit of a variable."""
    out: list[tuple[Any, bool]] = []
    step = 1 if v.kind == "int" else 0.0001
    if v.low is not None:
        out += [(v.low, not v.low_exclusive), (v.low - step, False)]
        if v.low_exclusive:
            out.append((v.low + step, True))
    if v.high is not None:
        out += [(v.high, True), (v.high + step, False)]
    return out


@pytest.mark.parametrize("var", [v for v in VARIABLES if v.kind in ("int", "float", "ms")], ids=lambda v: v.name)
def test_variable_limits_agree_with_the_config_file(var):
    """The admin checks are a copy of proxy/config.py's: this keeps them from drifting apart."""
    base = {"listeners": {"data": {"port": 6033}}, "users": [{"username": "a", "password": "p"}],
            "servers": [{"hostgroup_id": 0, "hostname": "h"}]}
    for value, valid in _limits(var):
        raw = {**base, var.section: {var.key: int(value) if var.kind == "int" else float(value)}}
        try:
            parse_config(raw)
            file_ok = True
        except ConfigError:
            file_ok = False
        text = str(int(value)) if var.kind == "int" else format(value * (1000 if var.kind == "ms" else 1), "f")
        admin_ok = check_variable(var.name, text)[1] is None
        assert (file_ok, admin_ok) == (valid, valid), (var.name, value)


# ---- previews: EXPLAIN ROUTE and DIFF MYSQL ROUTES ----------------------------------------------------


def test_explain_route(cf):
    e = explain_route(parse("EXPLAIN ROUTE USER report SCHEMA shop SELECT * FROM orders"), cf.config)
    assert e.hostgroup == 1 and e.decision.rule_ids == (10,)
    rows = dict(e.rows())
    assert rows["matched_rules"] == "10"
    e = explain_route(parse("EXPLAIN ROUTE SELECT id FROM t FOR UPDATE"), cf.config)
    assert e.hostgroup == 0 and e.decision.rule_ids == (5,)
    with pytest.raises(Exception, match=r"EXPLAIN ROUTE: no user 'nobody' at runtime \(users: app, report\)"):
        explain_route(parse("EXPLAIN ROUTE USER nobody SELECT 1"), cf.config)


def test_route_changes_lists_only_digests_whose_destination_moves(store, cf):
    digests = [
        DigestRow("SELECT * FROM orders WHERE id=?", "report", "shop", count_star=50),
        DigestRow("SELECT * FROM T WHERE ID IN (...)", "app", None, count_star=900),
        DigestRow("SELECT * FROM t WHERE id=? FOR UPDATE", "app", None, count_star=10),
        DigestRow("DELETE FROM audit WHERE id=?", "app", None, count_star=3),
        DigestRow("SELECT ?", "ghost", None, count_star=1),
    ]
    # nothing changed in memory: nothing moves
    assert store.diff_routes(digests, cf.config) == []
    # candidate: reports go to the writer, the IN-list select is blocked, the audit block is lifted
    store.execute("UPDATE mysql_query_rules SET destination_hostgroup = 0 WHERE rule_id = 10")
    store.execute("INSERT INTO mysql_query_rules (rule_id, match_digest, error_msg) VALUES (1, 'IN \\(\\.\\.\\.\\)', 'no IN lists')")
    store.execute("UPDATE mysql_query_rules SET active = 0 WHERE rule_id = 30")
    changes = store.diff_routes(digests, cf.config)
    assert [(c.digest_text, c.runtime_destination, c.memory_destination, c.memory_rules) for c in changes] == [
        ("SELECT * FROM T WHERE ID IN (...)", "hostgroup 1", "deny: ERR 1148 'no IN lists'", "1"),  # most executed first
        ("SELECT * FROM orders WHERE id=?", "hostgroup 1", "hostgroup 0", "10"),
        ("DELETE FROM audit WHERE id=?", "deny: ERR 1148 'audit rows are kept'", "hostgroup 0", ""),
    ]
    c = changes[0]
    assert c.runtime_reason == "default-read"  # the IN list was re-expanded, so it classified as a read
    assert c.digest.startswith("0x") and len(c.row()) == 11


def test_route_changes_refuses_a_memory_that_does_not_validate(store, cf):
    store.execute("UPDATE mysql_query_rules SET match_digest = '(' WHERE rule_id = 5")
    with pytest.raises(ValidationFailed, match=r"DIFF MYSQL ROUTES \(memory does not validate\) refused"):
        store.diff_routes([], cf.config)


def test_route_changes_sees_user_changes(cf):
    rows = rows_from_config(cf.config)
    rows["mysql_users"][1]["active"] = 0
    candidate = build_config(rows, ALL_SECTIONS, cf.config).config
    changes = route_changes([DigestRow("SELECT ?", "report", None, count_star=2)], cf.config, candidate)
    assert [(c.runtime_destination, c.memory_destination) for c in changes] == [("hostgroup 1", "no such user 'report'")]


def test_digests_from_the_stats_table():
    columns = ("hostgroup", "schemaname", "username", "client_address", "digest", "digest_text", "count_star")
    rows = [
        (1, "shop", "app", "", "0x01", "SELECT ?", 10),
        (0, "shop", "app", "", "0x01", "SELECT ?", 5),  # same digest, ran on the writer too
        (0, "", "app", "", "0x02", "UPDATE t SET a=?", 7),
    ]
    assert digests_from_table(columns, rows) == [
        DigestRow("SELECT ?", "app", "shop", None, 15, None, "0x01"),
        DigestRow("UPDATE t SET a=?", "app", None, None, 7, None, "0x02"),
    ]
    with pytest.raises(ValueError, match="no column 'count_star'"):
        digests_from_table(columns[:-1], [])


def test_a_runaway_statement_is_stopped(store):
    store.statement_timeout = 0.05
    with pytest.raises(StoreError) as e:
        store.execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
    assert e.value.errno == 3024
    assert e.value.message.startswith("statement stopped after 0.05 s ([admin] statement_timeout)")
    assert store.execute("SELECT count(*) FROM mysql_servers").rows == [(3,)]  # and the store still works


def test_set_runtime_config_for_monitor_updates(store, cf):
    import dataclasses

    moved = dataclasses.replace(cf.config, servers=tuple(dataclasses.replace(s, status="SHUNNED") if s.port == 3307 else s for s in cf.config.servers))
    store.set_runtime_config(moved, Section.SERVERS)
    assert [r["status"] for r in store.rows("mysql_servers", Layer.RUNTIME)] == ["ONLINE", "SHUNNED", "OFFLINE_SOFT"]
    assert [d.row()[1:] for d in store.diff(Section.SERVERS)] == [
        ("changed", "hostgroup_id=1,hostname=10.0.0.2,port=3307", "status: 'SHUNNED' -> 'ONLINE'"),
    ]
    store.save_runtime_to_memory(Section.SERVERS)  # SAVE MYSQL SERVERS TO MEMORY captures it
    assert store.diff(Section.SERVERS) == []


def test_load_from_a_broken_config_file_changes_nothing(store, config_file):
    config_file.write_text(CONFIG.replace('port = 3307', 'port = "x"'))
    with pytest.raises(StoreError) as e:
        store.run(parse("LOAD MYSQL SERVERS FROM CONFIG"))
    assert e.value.message == f'config file not loaded, memory unchanged: {config_file}: servers[1].port: expected int, got str \'x\''
    assert len(store.rows("mysql_servers")) == 3
