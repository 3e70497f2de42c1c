"""proxy.monitor without servers: outcomes in, snapshots and log lines out; check result parsing;
the [monitor] config section."""

from __future__ import annotations

import dataclasses
import logging
import time

import pytest

from proxy.backend import BackendError
from proxy.checks import CheckError, parse_replication
from proxy.config import ConfigError, MonitorSettings, Server, parse_config
from proxy.monitor import HISTORY_ROWS, MONITOR_TABLES, CheckKind, Monitor, _Link
from proxy.protocol.packets import ERR
from proxy.stats import StatsRegistry
from proxy.topology import Replication, ServerHealth

BASE = {
    "listeners": {"data": {"port": 6033}},
    "users": [{"username": "app", "password": "pw"}],
    "servers": [
        {"hostgroup_id": 0, "hostname": "10.0.0.1", "port": 3306},
        {"hostgroup_id": 1, "hostname": "10.0.0.2", "port": 3306, "max_replication_lag": 5},
        {"hostgroup_id": 1, "hostname": "10.0.0.3", "port": 3306},
    ],
    "replication_hostgroups": [{"writer_hostgroup": 0, "reader_hostgroup": 1, "writer_is_also_reader": False}],
}
FAST = {"enabled": True, "ping_max_failures": 2, "shun_on_failures": 3, "shun_recovery_time_sec": 1, "replication_lag_count": 1}


def config(**monitor):
    return parse_config({**BASE, "monitor": {**FAST, **monitor}})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mon():
    """A Monitor with its servers set up as if running, but no check loops: the test feeds outcomes."""
    published = []
    stats = StatsRegistry()
    m = Monitor(config(), stats, published.append, Clock())
    m._running = True
    for s in m.config.servers:
        m._links[s.address] = _Link(s)
        m.health[s.address] = ServerHealth(s.address)
    m.published = published  # type: ignore[attr-defined]
    return m


def feed(m: Monitor, address: str, kind: CheckKind, value=None, error: str | None = None, answered: bool = False) -> None:
    server = m._links[address].server
    m._record(server, kind, time.time(), 1_500_000, value, None if error is None else CheckError(error, answered))


def statuses(m: Monitor) -> list[tuple[int, str, str]]:
    return [(s.hostgroup_id, s.address, s.status) for s in m.topology.servers]


R1 = "10.0.0.2:3306"


def test_missed_pings_shun_once_with_one_log_line_and_one_publish(mon, caplog):
    caplog.set_level(logging.INFO, "rwproxy.monitor")
    feed(mon, R1, CheckKind.PING, error="no answer within 1000 ms")
    assert mon.published == []  # one miss is not enough
    for _ in range(10):
        feed(mon, R1, CheckKind.PING, error="no answer within 1000 ms")
    assert len(mon.published) == 1
    assert (1, R1, "SHUNNED") in statuses(mon) and mon.published[0].servers == mon.topology.servers
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"monitor: ping check of {R1} failed: no answer within 1000 ms",
        f"monitor: {R1}: ONLINE in hostgroup 1 -> SHUNNED in hostgroup 1: 2 ping(s) missed in a row (last: no answer within 1000 ms)",
    ]
    # back once the recovery time has passed and a ping answers: two more lines, one more publish
    mon.clock.now += 1.0
    feed(mon, R1, CheckKind.PING, value=0)
    assert (1, R1, "ONLINE") in statuses(mon) and len(mon.published) == 2
    assert [r.getMessage() for r in caplog.records][2:] == [
        f"monitor: {R1} answers all checks again",
        f"monitor: {R1}: SHUNNED in hostgroup 1 -> ONLINE in hostgroup 1: answers checks again",
    ]


def test_failures_of_several_checks_are_said_once_per_distinct_error(mon, caplog):
    caplog.set_level(logging.WARNING, "rwproxy.monitor")
    for _ in range(5):
        for kind in (CheckKind.READ_ONLY, CheckKind.REPLICATION_LAG, CheckKind.CONNECT):
            feed(mon, R1, kind, error="Connection refused")
    feed(mon, R1, CheckKind.READ_ONLY, error="no answer within 800 ms")
    failures = [r.getMessage() for r in caplog.records if "check of" in r.getMessage()]
    assert failures == [f"monitor: read_only check of {R1} failed: Connection refused", f"monitor: read_only check of {R1} failed: no answer within 800 ms"]


def test_a_check_failing_for_good_is_said_once_while_the_others_succeed(mon, caplog):
    caplog.set_level(logging.INFO, "rwproxy.monitor")
    for _ in range(5):
        feed(mon, R1, CheckKind.REPLICATION_LAG, error="1227 Access denied; you need the SLAVE MONITOR privilege")
        feed(mon, R1, CheckKind.PING, value=0)
        feed(mon, R1, CheckKind.READ_ONLY, value=(True, "0-1-5"))
    assert [r.getMessage() for r in caplog.records] == [
        f"monitor: replication_lag check of {R1} failed: 1227 Access denied; you need the SLAVE MONITOR privilege",
    ]


def test_sessions_connect_errors_count_unless_the_server_answered(mon):
    server = mon._links[R1].server
    for _ in range(5):
        mon.connect_error(server, BackendError(server, "login as 'app' refused: 1045 Access denied", ERR(1045, "28000", "Access denied")))
    assert mon.published == []
    for _ in range(3):
        mon.connect_error(server, BackendError(server, "Connection refused"))
    assert (1, R1, "SHUNNED") in statuses(mon)
    assert mon.health[R1].shun_reason == "3 connect errors within 1 s (last: Connection refused)"


def test_too_many_connections_counts_as_a_connect_error(mon):
    server = mon._links[R1].server
    for _ in range(3):
        mon.connect_error(server, BackendError(server, "server refused connection: Too many connections", ERR(1040, "08004", "Too many connections")))
    assert mon.health[R1].shunned


def test_a_refused_monitor_login_is_no_failure_of_the_server(mon):
    for _ in range(5):
        feed(mon, R1, CheckKind.PING, error="login as 'monitor' refused: 1045 Access denied", answered=True)
        feed(mon, R1, CheckKind.CONNECT, error="login as 'monitor' refused: 1045 Access denied", answered=True)
    assert mon.published == [] and not mon.health[R1].shunned


def test_lag_shuns_only_rows_with_a_limit_and_comes_back_when_below(mon):
    r2 = "10.0.0.3:3306"
    feed(mon, R1, CheckKind.REPLICATION_LAG, value=Replication(None, True, False, "Duplicate entry"))
    feed(mon, r2, CheckKind.REPLICATION_LAG, value=Replication(None, True, False))
    assert statuses(mon) == [(0, "10.0.0.1:3306", "ONLINE"), (1, R1, "SHUNNED_REPLICATION_LAG"), (1, r2, "ONLINE")]
    feed(mon, R1, CheckKind.REPLICATION_LAG, value=Replication(2, True, True))
    assert (1, R1, "ONLINE") in statuses(mon)
    rows = mon.table("mysql_server_replication_lag_log")[1]
    assert [(r[1], r[4], r[5]) for r in rows] == [(3306, 60, None), (3306, 60, None), (3306, 2, None)]


def test_promotion_moves_the_server_and_counts_a_failover(mon, caplog):
    caplog.set_level(logging.INFO, "rwproxy.monitor")
    r2 = "10.0.0.3:3306"
    for a, ro in (("10.0.0.1:3306", False), (R1, True), (r2, True)):
        feed(mon, a, CheckKind.READ_ONLY, value=(ro, "0-1-9"))
    assert mon.published == []  # the configuration confirmed: nothing moved
    feed(mon, r2, CheckKind.READ_ONLY, value=(False, "0-1-9"))
    assert statuses(mon) == [(0, "10.0.0.1:3306", "ONLINE"), (1, R1, "ONLINE"), (0, r2, "ONLINE")]
    assert mon.stats.failovers == {0: 1}
    assert [r.getMessage() for r in caplog.records] == [
        f"monitor: {r2}: ONLINE in hostgroup 1 -> ONLINE in hostgroup 0: read_only=0: placed in the writer hostgroup",
        f"monitor: {r2} is now a writer of hostgroup 0 (read_only=0); writes go there",
    ]
    assert mon.gtid_positions()[r2] == "0-1-9"


def test_reconfigure_follows_the_new_servers_and_turning_off_restores_configured_statuses():
    published = []
    m = Monitor(config(), None, published.append, Clock())
    m.health[R1] = ServerHealth(R1, shunned=True, shun_reason="x")
    m._update("ping")
    assert published and (1, R1, "SHUNNED") in statuses(m)
    off = parse_config({**BASE, "monitor": {"enabled": False}})
    m.reconfigure(off)  # not running: no loops; disabled: no health
    assert m.health == {} and (1, R1, "ONLINE") in statuses(m) and len(published) == 2
    assert not m.topology.monitored


def test_history_is_bounded_and_shaped_like_proxysql(mon):
    for _ in range(HISTORY_ROWS + 10):
        feed(mon, R1, CheckKind.CONNECT)
    columns, rows = mon.table("mysql_server_connect_log")
    assert columns == ("hostname", "port", "time_start_us", "connect_success_time_us", "connect_error")
    assert len(rows) == HISTORY_ROWS
    host, port, start, took, error = rows[-1]
    assert (host, port, took, error) == ("10.0.0.2", 3306, 1500, None)
    assert abs(start / 1e6 - time.time()) < 60
    feed(mon, R1, CheckKind.READ_ONLY, error="no answer within 800 ms")
    assert mon.table("mysql_server_read_only_log")[1][-1][3:] == (0, None, "no answer within 800 ms")
    health = dict(zip(MONITOR_TABLES["mysql_server_health"], mon.table("mysql_server_health")[1][1]))
    assert health["status"] == "ONLINE" and health["port"] == 3306
    assert mon.stats.checks[(R1, "connect")].count == HISTORY_ROWS + 10


# ---- check results -------------------------------------------------------------------------------------

MARIADB_COLUMNS = ["Connection_name", "Slave_IO_Running", "Slave_SQL_Running", "Last_IO_Error", "Last_SQL_Error", "Seconds_Behind_Master"]
MYSQL_COLUMNS = ["Replica_IO_Running", "Replica_SQL_Running", "Last_IO_Error", "Last_SQL_Error", "Seconds_Behind_Source"]


def test_parse_replication_mariadb_and_mysql():
    assert parse_replication(MARIADB_COLUMNS, []) is None
    assert parse_replication(MARIADB_COLUMNS, [["", "Yes", "Yes", "", "", "3"]]) == Replication(3, True, True, "")
    assert parse_replication(MYSQL_COLUMNS, [["Yes", "No", "", "Error 'Duplicate entry'", None]]) == Replication(None, True, False, "Error 'Duplicate entry'")
    assert parse_replication(MYSQL_COLUMNS, [["Connecting", "Yes", "error connecting to master", "", None]]) == Replication(
        None, False, True, "error connecting to master"
    )
    # several channels (MariaDB multi-source): the worst one counts
    rows = [["a", "Yes", "Yes", "", "", "2"], ["b", "Yes", "Yes", "", "", "40"], ["c", "Yes", "Yes", "", "", "7"]]
    assert parse_replication(MARIADB_COLUMNS, rows).seconds_behind == 40
    rows.append(["d", "No", "Yes", "x", "", None])
    assert parse_replication(MARIADB_COLUMNS, rows).broken


# ---- [monitor] in the config file ---------------------------------------------------------------------


def test_monitor_defaults_are_proxysqls_and_it_is_off_without_the_section():
    m = parse_config(BASE).monitor
    assert m == MonitorSettings()
    assert (m.enabled, m.username, m.password) == (False, "monitor", "monitor")
    assert (m.connect_interval, m.connect_timeout, m.ping_interval, m.ping_timeout, m.ping_max_failures) == (120000, 600, 8000, 1000, 3)
    assert (m.read_only_interval, m.read_only_timeout, m.replication_lag_interval, m.replication_lag_timeout) == (1000, 800, 10000, 1000)
    assert (m.replication_lag_count, m.lag_when_null, m.shun_on_failures, m.shun_recovery_time_sec) == (1, 60, 5, 10)
    assert (m.connect_timeout_server_max, m.query_retries_on_failure) == (10000, 1)
    assert "s3cret" not in repr(dataclasses.replace(m, password="s3cret"))


def test_monitor_password_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MON_PW", "from-env")
    assert parse_config({**BASE, "monitor": {"password_env": "MON_PW"}}).monitor.password == "from-env"
    f = tmp_path / "pw"
    f.write_text("from-file\n")
    assert parse_config({**BASE, "monitor": {"password_file": str(f)}}).monitor.password == "from-file"
    assert "from-env" not in repr(parse_config({**BASE, "monitor": {"password_env": "MON_PW"}}).monitor)


@pytest.mark.parametrize(
    ("monitor", "message"),
    [
        ({"ping_interval": 50}, "monitor.ping_interval: must be between 100 and 86400000"),
        ({"ping_interval": 1.5}, "monitor.ping_interval: expected int, got float 1.5"),
        ({"replication_lag_count": 11}, "monitor.replication_lag_count: must be between 1 and 10"),
        ({"enabled": "yes"}, "monitor.enabled: expected bool, got str 'yes'"),
        ({"username": ""}, "monitor.username: must not be empty"),
        ({"password": "a", "password_env": "B"}, "monitor.password_env: give only one of password, password_env"),
        ({"ping_intervall": 100}, "monitor.ping_intervall: unknown key"),
        ({"shun_on_failures": -1}, "monitor.shun_on_failures: must be between 0 and 1000000"),
        ({"query_retries_on_failure": 1001}, "monitor.query_retries_on_failure: must be between 0 and 1000"),
    ],
)
def test_monitor_keys_are_validated(monitor, message):
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "monitor": monitor})
    assert message in str(e.value)


def test_the_example_config_enables_the_monitor(monkeypatch):
    from proxy.config import load_config

    monkeypatch.setenv("RWPROXY_APP_PASSWORD", "x")
    cfg = load_config("config/rwproxy.example.toml")
    assert cfg.monitor == MonitorSettings(enabled=True)  # every other key at its (ProxySQL's) default


def test_a_lost_monitor_connection_wakes_the_ping_loop_but_its_own_close_does_not():
    class Conn:
        closed = False

        def attach(self, owner):
            self.owner = owner

        def close(self):
            self.owner = None  # as BackendConnection.close: detached before the transport closes
            self.closed = True

    link = _Link(Server(1, "h", 1))
    conn = link.watch(Conn())
    link.backend_lost(Conn(), None)  # some other connection
    assert not link.lost.is_set()
    link.backend_lost(conn, ConnectionResetError())
    assert link.lost.is_set()
    link.lost.clear()
    link.drop()
    assert conn.owner is None and link.conn is None and not link.lost.is_set()


def test_column_name_reads_only_the_name():
    from proxy.checks import column_name
    from proxy.protocol.framing import ProtocolError
    from proxy.protocol.packets import ColumnDefinition, make_column_definition

    for name in ("Seconds_Behind_Master", "", "x" * 300, "Slave_SQL_Running_State"):
        payload = make_column_definition(ColumnDefinition(name, schema="s" * 260, table="t", org_table="o" * 251))
        assert column_name(payload) == name
    with pytest.raises(ProtocolError):
        column_name(make_column_definition(ColumnDefinition("abc"))[:8])
