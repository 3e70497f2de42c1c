"""Lag-bounded reads and per-rule causal_reads (issue 11, scope 2 and 4) through the splitting proxy,
against a real primary and two replicas, with the monitor on at short intervals.

A replica is made to lag by stopping its SQL thread: the monitor then counts it `lag_when_null`
(60 s here) behind, and it stays ONLINE (no max_replication_lag), so only a bound keeps reads off
it. Where a read ran is what the server says (@@server_id). A read with `/* max_lag_ms=N */`, or
matched by a rule with max_lag_ms, runs only on a replica the monitor sees within N ms, or on the
writer when none is; a rule with causal_reads = local gives read-your-writes to a user whose own
mode is none."""

from __future__ import annotations

import re
import time
import urllib.request
from typing import Any

import pymysql
import pytest

from tests.integration.test_causal_reads import run_pairs

LAG_WHEN_NULL = 60
MONITOR = {
    "enabled": True,
    "connect_interval": 1000,
    "ping_interval": 300,
    "read_only_interval": 200,
    "replication_lag_interval": 200,
    "replication_lag_count": 1,
    "lag_when_null": LAG_WHEN_NULL,
}
RULES = [
    # reads of @@server_id under this alias: at most 5 s behind
    {"rule_id": 10, "match_digest": "AS RULE_BOUNDED", "max_lag_ms": 5000},
    # reads of table rwc: read-your-writes whatever the user's causal_reads
    {"rule_id": 20, "match_tables": "rwc", "causal_reads": "local"},
]
CONNECTIONS = 16  # sessions choose a replica each: P(none chose a given one) = 2^-16


def _toml(header: str, values: dict[str, Any]) -> str:
    def v(x: Any) -> str:
        return ("true" if x else "false") if isinstance(x, bool) else f'"{x}"' if isinstance(x, str) else str(x)

    return header + "\n" + "\n".join(f"{k} = {v(x)}" for k, x in values.items()) + "\n"


@pytest.fixture
def lagproxy(start_proxy, cluster):
    extra = _toml("[monitor]", {"username": cluster.monitor_user, "password": cluster.monitor_password, **MONITOR})
    extra += "".join(_toml("[[query_rules]]", r) for r in RULES)
    p = start_proxy(extra_toml=extra, admin=True, metrics=True, proxy_settings={"causal_reads": "none", "causal_reads_timeout": 0.2})
    _wait_lag(p, {r.port: 0 for r in cluster.replicas})
    return p


@pytest.fixture
def stopped(cluster):
    """Stop replicas' SQL threads (stopped(*replicas)); started again, and caught up, afterwards."""
    done: list = []

    def stop(*replicas):
        for r in replicas:
            r.sql("STOP SLAVE SQL_THREAD")
            done.append(r)

    yield stop
    for r in done:
        r.sql("START SLAVE SQL_THREAD")
    cluster.wait_replicated(30)


def _admin_rows(p, sql: str) -> list[tuple]:
    c = p.admin_connect()
    try:
        with c.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        c.close()


def _wait_lag(p, want: dict[int, int], timeout: float = 10.0) -> None:
    """Until the monitor's health table shows each replica port at the wanted lag (seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        lags = {int(port): lag for port, lag in _admin_rows(p, "SELECT port, repl_lag FROM monitor.mysql_server_health")}
        if all(str(lags.get(port)) == str(lag) for port, lag in want.items()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the monitor never reported lags {want}: {lags}")
        time.sleep(0.1)


def _global(p) -> dict[str, int]:
    return {k: int(v) for k, v in _admin_rows(p, "SELECT * FROM stats_mysql_global") if k.startswith(("Lag_bounded", "Causal_reads_"))}


def _server_ids(p, sql: str, connections: int = CONNECTIONS, per_connection: int = 3) -> list[int]:
    """@@server_id of where `sql` ran, over fresh sessions (each chooses its replica anew)."""
    ids = []
    for _ in range(connections):
        c = p.connect(autocommit=True)
        try:
            with c.cursor() as cur:
                for _ in range(per_connection):
                    cur.execute(sql)
                    ids.append(int(cur.fetchone()[0]))
        finally:
            c.close()
    return ids


def test_a_hint_and_a_rule_with_max_lag_ms_skip_the_lagging_replica(lagproxy, cluster, stopped):
    lagging, healthy = cluster.replicas
    stopped(lagging)
    _wait_lag(lagproxy, {lagging.port: LAG_WHEN_NULL, healthy.port: 0})
    before = _global(lagproxy)
    # Without a bound the lagging replica (still ONLINE) takes its share of the sessions ...
    assert lagging.server_id in _server_ids(lagproxy, "SELECT @@server_id")
    # ... with one, none: the hint, and the rule (10).
    assert set(_server_ids(lagproxy, "/* max_lag_ms=5000 */ SELECT @@server_id")) == {healthy.server_id}
    assert set(_server_ids(lagproxy, "/* rwproxy:max_lag_ms=2000 */ SELECT @@server_id")) == {healthy.server_id}
    assert set(_server_ids(lagproxy, "SELECT @@server_id AS rule_bounded")) == {healthy.server_id}
    # A bound above the lag lets the replica in again.
    assert lagging.server_id in _server_ids(lagproxy, f"/* max_lag_ms={(LAG_WHEN_NULL + 1) * 1000} */ SELECT @@server_id")
    after = _global(lagproxy)
    n = 4 * CONNECTIONS * 3
    assert after["Lag_bounded_reads_replica"] - before["Lag_bounded_reads_replica"] == n
    assert after["Lag_bounded_reads_writer"] == before["Lag_bounded_reads_writer"]


def test_with_every_replica_lagging_a_bounded_read_runs_on_the_writer(lagproxy, cluster, stopped):
    stopped(*cluster.replicas)
    _wait_lag(lagproxy, {r.port: LAG_WHEN_NULL for r in cluster.replicas})
    before = _global(lagproxy)
    assert set(_server_ids(lagproxy, "/* max_lag_ms=1000 */ SELECT @@server_id", connections=4)) == {cluster.primary.server_id}
    assert set(_server_ids(lagproxy, "SELECT @@server_id AS rule_bounded", connections=4)) == {cluster.primary.server_id}
    # Reads with no bound still go to the replicas (no max_replication_lag shuns them).
    assert set(_server_ids(lagproxy, "SELECT @@server_id", connections=4)) <= {r.server_id for r in cluster.replicas}
    after = _global(lagproxy)
    assert after["Lag_bounded_reads_writer"] - before["Lag_bounded_reads_writer"] == 2 * 4 * 3
    assert after["Lag_bounded_reads_replica"] == before["Lag_bounded_reads_replica"]
    # Prometheus shows the same counter.
    body = urllib.request.urlopen(f"http://127.0.0.1:{lagproxy.metrics_port}/metrics", timeout=10).read().decode()
    value = re.search(r'^rwproxy_lag_bounded_reads_total\{served_by="writer"\} (\S+)$', body, re.M)
    assert value and float(value.group(1)) == after["Lag_bounded_reads_writer"], body


def test_a_rule_with_causal_reads_local_gives_read_your_writes_to_a_user_with_none(lagproxy, cluster, schema, stopped):
    for name in ("rwc", "rwn"):
        cluster.primary.sql(f"CREATE TABLE {schema}.{name} (id INT AUTO_INCREMENT PRIMARY KEY, t INT, i INT)")
    cluster.wait_replicated()
    stopped(cluster.replicas[0])  # its sessions' reads miss every new row unless something waits
    before = _global(lagproxy)
    # The table rule 20 matches: none stale.
    errors, stale, _ = run_pairs(lagproxy, f"{schema}.rwc", n=200 // 4, connections=4)
    assert not errors, errors
    assert stale == [], f"{len(stale)} stale reads of 200"
    after = _global(lagproxy)
    served = sum(after.get(k, 0) - before.get(k, 0) for k in after if k.startswith("Causal_reads_local_") and not k.endswith("_us"))
    assert served == 200, (before, after)
    # The same user on a table no rule matches (its mode is none): stale reads, with the lagging replica.
    errors, stale, _ = run_pairs(lagproxy, f"{schema}.rwn", n=5, connections=CONNECTIONS)
    assert not errors, errors
    assert stale, "no stale read without causal_reads: the replica was not lagging, the test proves nothing"


def test_explain_route_shows_the_causal_decision(lagproxy):
    def explain(sql: str) -> dict[str, str]:
        return dict(_admin_rows(lagproxy, f"EXPLAIN ROUTE {sql}"))

    rows = explain("SELECT i FROM rwc WHERE id = 1")
    assert rows["causal_reads"] == "local (rule 20, overriding the user's none)"
    assert "max_lag_ms" not in rows
    rows = explain("/* max_lag_ms=300 */ SELECT @@server_id AS rule_bounded")
    assert rows["causal_reads"] == "none (the user's)"
    assert rows["max_lag_ms"].startswith("300 (hint)")
    rows = explain("SELECT @@server_id AS rule_bounded")
    assert rows["max_lag_ms"].startswith("5000 (rule 10)")
    rows = explain("/* rwproxy:min_gtid=0-1-42 */ SELECT 1")
    assert rows["min_gtid"].startswith("0-1-42 (hint)")


def test_the_admin_port_keeps_and_checks_the_new_rule_columns(lagproxy):
    c = lagproxy.admin_connect()
    try:
        with c.cursor() as cur:
            cur.execute("SELECT rule_id, causal_reads, max_lag_ms FROM runtime_mysql_query_rules ORDER BY rule_id")
            assert cur.fetchall() == ((10, None, 5000), (20, "local", None))
            with pytest.raises(pymysql.err.MySQLError) as e:
                cur.execute("UPDATE mysql_query_rules SET causal_reads = 'sometimes' WHERE rule_id = 20")
            assert "causal_reads" in e.value.args[1]
            with pytest.raises(pymysql.err.MySQLError) as e:
                cur.execute("UPDATE mysql_query_rules SET max_lag_ms = -1 WHERE rule_id = 10")
            assert "max_lag_ms" in e.value.args[1]
            cur.execute("UPDATE mysql_query_rules SET max_lag_ms = 100000, causal_reads = 'fast' WHERE rule_id = 10")
            cur.execute("LOAD MYSQL QUERY RULES TO RUNTIME")
            cur.execute("SELECT causal_reads, max_lag_ms FROM runtime_mysql_query_rules WHERE rule_id = 10")
            assert cur.fetchall() == (("fast", 100000),)
    finally:
        c.close()
