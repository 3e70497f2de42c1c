"""The admin port's side of the monitor: mysql-monitor_* variables, the monitor schema, and
runtime_mysql_servers showing the live server list. No servers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from admin.commands import ALL_SECTIONS, Layer, Section, parse
from admin.store import ConfigStore, Rows, StoreError
from admin.validate import VARIABLE_BY_NAME, read_config_file, rows_from_config
from proxy.config import MonitorSettings
from proxy.monitor import MONITOR_TABLES

CONFIG = """
[listeners.data]
port = 6033

[monitor]
enabled = true
username = "mon"
password = "mon_pw"
ping_interval = 2000
shun_recovery_time_sec = 3

[[users]]
username = "app"
password = "app_pw"

[[servers]]
hostgroup_id = 0
hostname = "10.0.0.1"

[[servers]]
hostgroup_id = 1
hostname = "10.0.0.2"
max_replication_lag = 5

[[replication_hostgroups]]
writer_hostgroup = 0
reader_hostgroup = 1
writer_is_also_reader = false
"""


@pytest.fixture
def cf(tmp_path: Path):
    p = tmp_path / "rwproxy.toml"
    p.write_text(CONFIG)
    return read_config_file(p)


@pytest.fixture
def store(cf) -> ConfigStore:
    s = ConfigStore(None)
    s.startup(cf)
    live = s.build(ALL_SECTIONS, cf.config)
    assert live.ok, live.errors
    s.set_runtime(live)
    return s


def variables(store: ConfigStore) -> dict[str, str]:
    return dict(store.execute("SELECT variable_name, variable_value FROM global_variables").rows)


def test_monitor_variables_have_proxysqls_names_and_units(store):
    v = variables(store)
    assert v["mysql-monitor_enabled"] == "true"
    assert v["mysql-monitor_username"] == "mon"
    assert v["mysql-monitor_password"] == "mon_pw"
    assert v["mysql-monitor_ping_interval"] == "2000"  # ms, as in ProxySQL and in the config file
    assert v["mysql-monitor_read_only_interval"] == "1000"
    assert v["mysql-monitor_slave_lag_when_null"] == "60"
    assert v["mysql-shun_recovery_time_sec"] == "3"
    assert v["mysql-shun_on_failures"] == "5"
    assert v["mysql-query_retries_on_failure"] == "1"
    assert v["mysql-monitor_connect_timeout_server_max"] == "10000"
    # every [monitor] key has its variable
    keys = {f.name for f in dataclasses.fields(MonitorSettings)}
    assert keys == {var.key for var in VARIABLE_BY_NAME.values() if var.section == "monitor"}


def test_config_to_rows_to_config_keeps_the_monitor_settings(store, cf):
    result = store.build(ALL_SECTIONS, cf.config)
    assert result.ok and result.config.monitor == cf.config.monitor


def test_set_monitor_variables_checked_now_applied_at_load(store, cf):
    store.set_variable("mysql-monitor_ping_interval", "250")
    store.set_variable("mysql-monitor_enabled", "false")
    store.set_variable("mysql-monitor_password", "n3w")
    applied = []
    store.run(parse("LOAD MYSQL VARIABLES TO RUNTIME"), runtime=cf.config, apply=applied.append)
    m = applied[0].monitor
    assert (m.ping_interval, m.enabled, m.password, m.username) == (250, False, "n3w", "mon")
    for name, value, message in (
        ("mysql-monitor_ping_interval", "50", "SET mysql-monitor_ping_interval: must be between 100 and 86400000, got '50'"),
        ("mysql-monitor_ping_interval", "1.5", "SET mysql-monitor_ping_interval: expected an integer, got '1.5'"),
        ("mysql-monitor_username", " ", "SET mysql-monitor_username: must not be empty"),
        ("mysql-monitor_replication_lag_count", "11", "SET mysql-monitor_replication_lag_count: must be between 1 and 10, got '11'"),
        ("mysql-monitor_enabled", "maybe", "SET mysql-monitor_enabled: expected true or false, got 'maybe'"),
    ):
        with pytest.raises(StoreError) as e:
            store.set_variable(name, value)
        assert e.value.message == message


def test_diff_never_shows_the_monitor_password(store):
    store.set_variable("mysql-monitor_password", "s3cret")
    store.set_variable("mysql-monitor_ping_interval", "3000")
    diffs = {d.key: d.differences for d in store.diff(Section.VARIABLES)}
    assert diffs == {
        "variable_name=mysql-monitor_password": "variable_value: changed",
        "variable_name=mysql-monitor_ping_interval": "variable_value: '2000' -> '3000'",
    }


def test_monitor_schema_tables_are_read_when_a_statement_names_them(store):
    reads = []

    def read(name):
        def f():
            reads.append(name)
            if name == "mysql_server_ping_log":
                return MONITOR_TABLES[name], [("10.0.0.2", 3306, 1_700_000_000_000_000, 250, None), ("10.0.0.2", 3306, 1_700_000_001_000_000, 0, "no answer")]
            return MONITOR_TABLES[name], []
        return f

    store.attach_stats({"stats_mysql_global": lambda: (("Variable_Name", "Variable_Value"), [("x", "1")])})
    store.attach_tables("monitor", {name: read(name) for name in MONITOR_TABLES})
    r = store.run(parse("SELECT hostname, port, ping_success_time_us, ping_error FROM monitor.mysql_server_ping_log ORDER BY time_start_us"))
    assert r == Rows(("hostname", "port", "ping_success_time_us", "ping_error"), [("10.0.0.2", 3306, 250, None), ("10.0.0.2", 3306, 0, "no answer")])
    assert reads == ["mysql_server_ping_log"]
    assert store.run(parse("SELECT COUNT(*) FROM mysql_server_ping_log WHERE ping_error IS NOT NULL")).rows == [(1,)]
    assert sorted(n for (n,) in store.run(parse("SHOW TABLES FROM monitor")).rows) == sorted(MONITOR_TABLES)
    assert [n for (n,) in store.run(parse("SHOW TABLES FROM stats")).rows] == ["stats_mysql_global"]
    assert [r[1] for r in store.run(parse("SHOW DATABASES")).rows] == ["main", "stats", "monitor"]
    with pytest.raises(StoreError) as e:
        store.run(parse("DELETE FROM monitor.mysql_server_ping_log"))
    assert e.value.errno == 1142


def test_runtime_mysql_servers_shows_the_live_server_list(store, cf):
    from proxy.topology import ServerHealth, runtime_servers

    pairs = cf.config.ruleset.replication_hostgroups
    health = {}
    store.attach_live_servers(lambda: runtime_servers(cf.config.servers, pairs, health))
    store.run(parse("SELECT 1"))
    assert store.rows("mysql_servers", Layer.RUNTIME) == store.rows("mysql_servers")  # nothing known: as loaded
    # the primary is down, the replica was promoted and lags (a status runtime_ shows as SHUNNED)
    health["10.0.0.1:3306"] = ServerHealth("10.0.0.1:3306", shunned=True)
    health["10.0.0.2:3306"] = ServerHealth("10.0.0.2:3306", read_only=False, recent_lags=(60,))
    rows = store.run(parse("SELECT hostgroup_id, hostname, status FROM runtime_mysql_servers")).rows
    assert rows == [(0, "10.0.0.1", "SHUNNED"), (0, "10.0.0.2", "SHUNNED")]
    # memory is the configuration: DIFF shows what the monitor changed, SAVE ... TO MEMORY takes it
    diff = [(change, key) for _, change, key, _ in store.run(parse("DIFF MYSQL SERVERS")).rows]
    assert ("changed", "hostgroup_id=0,hostname=10.0.0.1,port=3306") in diff
    assert ("added", "hostgroup_id=1,hostname=10.0.0.2,port=3306") in diff  # in memory, not live there
    assert ("removed", "hostgroup_id=0,hostname=10.0.0.2,port=3306") in diff  # live, not in memory
    assert rows_from_config(cf.config)["mysql_servers"] == store.rows("mysql_servers")


def test_runtime_servers_untouched_until_a_runtime_exists(cf):
    s = ConfigStore(None)
    s.startup(cf)
    s.attach_live_servers(lambda: cf.config.servers)
    s.run(parse("SELECT 1"))
    assert s.rows("mysql_servers", Layer.RUNTIME) == []
    with pytest.raises(StoreError):
        s.save_runtime_to_memory(Section.SERVERS)
