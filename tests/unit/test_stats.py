"""proxy.stats: the digest table's bound and LRU order, reset, per-server counters, histograms, and
the stats_* tables' shape (ProxySQL's column names) over stand-in and real proxy objects."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import proxy.stats as stats_mod
from proxy.app import ProxyApp
from proxy.config import Server, parse_config
from proxy.client import ClientSession
from proxy.config import PoolSettings
from proxy.pool import Pool, ServerBudget
from proxy.session import PinReason
from proxy.stats import LATENCY_BUCKETS, Sources, StatsRegistry
from rules.classify import Kind
from rules.digest import digest_hex, fingerprint

US = 1000  # ns
MS = 1_000_000

# ProxySQL's columns (lib/ProxySQL_Admin.cpp STATS_SQLITE_TABLE_*), written out independently here.
PROXYSQL_COLUMNS = {
    "stats_mysql_query_digest": (
        "hostgroup", "schemaname", "username", "client_address", "digest", "digest_text", "count_star",
        "first_seen", "last_seen", "sum_time", "min_time", "max_time", "sum_rows_affected", "sum_rows_sent",
    ),
    "stats_mysql_query_digest_reset": (
        "hostgroup", "schemaname", "username", "client_address", "digest", "digest_text", "count_star",
        "first_seen", "last_seen", "sum_time", "min_time", "max_time", "sum_rows_affected", "sum_rows_sent",
    ),
    "stats_mysql_connection_pool": (
        "hostgroup", "srv_host", "srv_port", "status", "ConnUsed", "ConnFree", "ConnOK", "ConnERR", "MaxConnUsed",
        "Queries", "Queries_GTID_sync", "Bytes_data_sent", "Bytes_data_recv", "Latency_us",
    ),
    "stats_mysql_query_rules": ("rule_id", "hits"),
    "stats_mysql_processlist": (
        "ThreadID", "SessionID", "user", "db", "cli_host", "cli_port", "hostgroup", "l_srv_host", "l_srv_port",
        "srv_host", "srv_port", "command", "time_ms", "info", "status_flags", "extended_info",
    ),
    "stats_mysql_global": ("Variable_Name", "Variable_Value"),
    "stats_mysql_users": ("username", "frontend_connections", "frontend_max_connections"),
}  # fmt: skip


class FakeClock:
    """Stands in for time.monotonic_ns inside proxy.stats: the test says how long statements take."""

    def __init__(self) -> None:
        self.now = 1_000_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(stats_mod, "_monotonic_ns", c)
    return c


def run(reg: StatsRegistry, clock: FakeClock, srv, sql: str, took_ns: int, *, kind=Kind.SELECT, schema="sbtest", user="app",
        rules=(), rows=0, error=0, rows_sent=0) -> None:  # fmt: skip
    start = clock.now
    clock.now += took_ns
    reg.statement_done(srv, fingerprint(sql), kind, schema, user, rules, start, rows, error, rows_sent)


def digest_texts(reg: StatsRegistry) -> list[str]:
    return [row[5] for row in reg.query_digest().rows]


# ---- digest table -------------------------------------------------------------------------------


def test_digest_table_keeps_its_bound_and_evicts_the_least_recently_seen(clock):
    reg = StatsRegistry(max_digests=3, lru_resolution=0)
    srv = reg.server(1, "10.0.0.2:3306")
    for t in ("a", "b", "c"):
        run(reg, clock, srv, f"SELECT * FROM {t} WHERE id=1", 100 * US)
    run(reg, clock, srv, "SELECT * FROM a WHERE id=2", 100 * US)  # a seen again: b is now the oldest
    run(reg, clock, srv, "SELECT * FROM b WHERE id=3", 100 * US)  # ... b again: c is the oldest
    run(reg, clock, srv, "SELECT * FROM d WHERE id=4", 100 * US)  # a 4th digest: c goes
    assert reg.digest_count == 3
    assert reg.digest_evictions == 1
    assert digest_texts(reg) == ["SELECT * FROM A WHERE ID=?", "SELECT * FROM B WHERE ID=?", "SELECT * FROM D WHERE ID=?"]
    counts = {row[5]: row[6] for row in reg.query_digest().rows}
    assert counts == {"SELECT * FROM A WHERE ID=?": 2, "SELECT * FROM B WHERE ID=?": 2, "SELECT * FROM D WHERE ID=?": 1}
    # The evicted entry's statement still counts: totals by kind are monotonic.
    assert reg.statements_by_kind() == {(1, "SELECT"): 6}
    for i in range(10):
        run(reg, clock, srv, f"SELECT * FROM e{i}", 10 * US)
    assert reg.digest_count == 3 and reg.digest_evictions == 11
    assert reg.statements_by_kind() == {(1, "SELECT"): 16}


def test_lru_order_has_a_resolution(clock):
    """With lru_resolution=1 s an entry moves to the recent end at most once a second: one seen
    again within the second keeps its place (and may be evicted before one seen less recently)."""
    reg = StatsRegistry(max_digests=2, lru_resolution=1.0)
    srv = reg.server(0, "db:3306")
    run(reg, clock, srv, "SELECT 1 FROM a", US)
    run(reg, clock, srv, "SELECT 1 FROM b", US)
    run(reg, clock, srv, "SELECT 1 FROM a", US)  # within the second: a does not move
    run(reg, clock, srv, "SELECT 1 FROM c", US)
    assert digest_texts(reg) == ["SELECT ? FROM B", "SELECT ? FROM C"]
    clock.now += 2_000_000_000
    run(reg, clock, srv, "SELECT 1 FROM b", US)  # more than a second later: b moves
    run(reg, clock, srv, "SELECT 1 FROM d", US)
    assert digest_texts(reg) == ["SELECT ? FROM B", "SELECT ? FROM D"]


def test_digest_key_is_hostgroup_schema_user_digest(clock):
    reg = StatsRegistry(lru_resolution=0)
    w, r = reg.server(0, "w:3306"), reg.server(1, "r:3306")
    run(reg, clock, w, "SELECT 1", US)
    run(reg, clock, r, "SELECT 2", US)
    run(reg, clock, r, "SELECT 3", US, schema="other")
    run(reg, clock, r, "SELECT 4", US, user="bob")
    run(reg, clock, r, "SELECT 5", US, user="bob")
    rows = reg.query_digest().rows
    assert [(row[0], row[1], row[2], row[6]) for row in rows] == [
        (0, "sbtest", "app", 1), (1, "sbtest", "app", 1), (1, "other", "app", 1), (1, "sbtest", "bob", 2),
    ]  # fmt: skip


def test_digest_row_values(clock):
    reg = StatsRegistry()
    srv = reg.server(1, "r:3306")
    before = int(time.time())
    run(reg, clock, srv, "UPDATE t SET a=1 WHERE id=7", 100 * US, kind=Kind.UPDATE, rows=1)
    run(reg, clock, srv, "UPDATE t SET a=2 WHERE id=8", 300 * US + 999, kind=Kind.UPDATE, rows=2)
    run(reg, clock, srv, "update t set a = 3 where id = 9", 200 * US, kind=Kind.UPDATE, rows=0, rows_sent=4)
    after = int(time.time())
    (row,) = reg.query_digest().rows
    fp = fingerprint("UPDATE t SET a=1 WHERE id=7")
    assert row[:7] == (1, "sbtest", "app", "", digest_hex(fp.digest), "UPDATE T SET A=? WHERE ID=?", 3)
    assert row[4].startswith("0x") and len(row[4]) == 18
    first_seen, last_seen = row[7], row[8]
    assert before - 2 <= first_seen <= last_seen <= after + 2  # unix seconds
    assert row[9:] == (600, 100, 300, 3, 4)  # sum/min/max µs, rows affected, rows sent


def test_digest_text_is_cut_and_none_schema_reads_empty(clock):
    reg = StatsRegistry(max_digest_text=20)
    run(reg, clock, reg.server(0, "w:1"), "SELECT a, b, c, d, e, f FROM some_table", US, schema=None)
    (row,) = reg.query_digest().rows
    assert row[1] == "" and row[5] == "SELECT A,B,C,D,E,F F"


def test_reset_reads_then_clears(clock):
    reg = StatsRegistry()
    srv = reg.server(0, "w:3306")
    run(reg, clock, srv, "INSERT INTO t VALUES (1)", 50 * US, kind=Kind.INSERT, rows=1)
    run(reg, clock, srv, "SELECT 1", 50 * US)
    table = reg.table("stats_mysql_query_digest_reset")
    assert sorted(r[6] for r in table.rows) == [1, 1]
    assert reg.query_digest().rows == [] and reg.digest_count == 0
    assert reg.reset().rows == []  # nothing since
    run(reg, clock, srv, "SELECT 2", 50 * US)
    (row,) = reg.query_digest().rows
    assert row[6] == 1  # a fresh entry
    # Counts by kind and per server are not reset (Prometheus counters never go back).
    assert reg.statements_by_kind() == {(0, "INSERT"): 1, (0, "SELECT"): 2}
    assert srv.queries == 3
    assert reg.digest_evictions == 0


def test_no_digest_table_still_counts_kinds(clock):
    reg = StatsRegistry(max_digests=0)
    srv = reg.server(0, "w:3306")
    run(reg, clock, srv, "SELECT 1", US)
    run(reg, clock, srv, "DELETE FROM t", US, kind=Kind.DELETE)
    assert reg.digest_count == 0 and reg.query_digest().rows == []
    assert reg.statements_by_kind() == {(0, "SELECT"): 1, (0, "DELETE"): 1}


def test_kind_may_be_a_string():
    reg = StatsRegistry()
    reg.statement_done(reg.local, SimpleNamespace(digest=5, text="PING"), "PING", None, "app", (), time.monotonic_ns())
    assert reg.statements_by_kind() == {(-1, "PING"): 1}


def test_max_digests_must_not_be_negative():
    with pytest.raises(ValueError):
        StatsRegistry(max_digests=-1)


# ---- counters -----------------------------------------------------------------------------------


def test_server_counters_latency_histogram_and_handles(clock):
    reg = StatsRegistry()
    srv = reg.server(1, "r:3306")
    assert reg.server(1, "r:3306") is srv and reg.server(0, "r:3306") is not srv
    run(reg, clock, srv, "SELECT 1", 40 * US)  # <= 50 µs
    run(reg, clock, srv, "SELECT 1", 1 * MS)  # exactly on a bound: in that bucket (le is <=)
    run(reg, clock, srv, "SELECT 1", 1 * MS + 1)  # just past it
    run(reg, clock, srv, "SELECT 1", 60_000 * MS)  # past the last bound: +Inf
    srv.bytes_sent += 100
    srv.bytes_recv += 2000
    assert srv.queries == 4 and srv.time_ns == 40 * US + 2 * MS + 1 + 60_000 * MS
    assert len(srv.latency) == len(LATENCY_BUCKETS) + 1
    i_50us, i_1ms = LATENCY_BUCKETS.index(0.00005), LATENCY_BUCKETS.index(0.001)
    expected = [0] * (len(LATENCY_BUCKETS) + 1)
    expected[i_50us] = expected[i_1ms] = expected[i_1ms + 1] = expected[-1] = 1
    assert srv.latency == expected
    counts, total = reg.latency_histograms()[1]
    assert counts == expected and total == srv.time_ns
    assert -1 not in reg.latency_histograms()  # the proxy answered nothing itself


def test_latency_bucket_tables_agree_with_bisection():
    """statement_done finds the bucket from t.bit_length() and two table reads, not a bisection."""
    import random
    from bisect import bisect_left

    rnd = random.Random(5)
    bounds = stats_mod._LATENCY_NS
    values = [*range(0, 5000), *(b + d for b in bounds for d in (-1, 0, 1)), *(rnd.randrange(1 << 42) for _ in range(20000))]
    for t in values:
        n = t.bit_length()
        assert stats_mod._LATENCY_BASE[n] + (t > stats_mod._LATENCY_EDGE[n]) == bisect_left(bounds, t), t


def test_latency_histograms_sum_servers_of_a_hostgroup(clock):
    reg = StatsRegistry()
    a, b = reg.server(1, "a:1"), reg.server(1, "b:1")
    run(reg, clock, a, "SELECT 1", 40 * US)
    run(reg, clock, b, "SELECT 1", 40 * US)
    run(reg, clock, reg.local, "SELECT 1", 40 * US)
    hist = reg.latency_histograms()
    assert sum(hist[1][0]) == 2 and sum(hist[-1][0]) == 1
    assert reg.questions() == 3


def test_rule_hits_and_errors(clock):
    reg = StatsRegistry(sources=Sources(rules=lambda: [10, 20, 30]))
    srv = reg.server(0, "w:1")
    run(reg, clock, srv, "SELECT 1", US, rules=(10, 30))
    run(reg, clock, srv, "SELECT 1", US, rules=(10,), error=1146)
    run(reg, clock, reg.local, "DROP TABLE t", US, kind=Kind.DDL, rules=(40,), error=1148)  # denied by a rule since removed
    reg.error(1045)
    reg.error(1146)
    assert reg.rule_hits == {10: 2, 30: 1, 40: 1}
    assert reg.errors == {1146: 2, 1148: 1, 1045: 1}
    table = reg.table("stats_mysql_query_rules")
    assert table.columns == PROXYSQL_COLUMNS["stats_mysql_query_rules"]
    assert table.rows == [(10, 2), (20, 0), (30, 1), (40, 1)]


def test_acquire_histogram_counts_immediate_hand_outs_as_no_wait():
    reg = StatsRegistry()
    a0, a1 = reg.server(0, "a:1"), reg.server(1, "a:1")
    a0.acquire_immediate += 5
    a1.acquire_immediate += 2
    reg.acquire_done(a0, 0)
    reg.acquire_done(a0, 3 * MS)
    reg.acquire_done(a1, 20_000 * MS)
    reg.acquire_failed(a1, 10_000 * MS)
    counts, total, timeouts = reg.acquire_histograms()["a:1"]
    assert counts[0] == 8  # 7 immediate + 1 slow-path without a wait
    assert counts[stats_mod.ACQUIRE_WAIT_BUCKETS.index(0.005)] == 1
    assert counts[-1] == 1
    assert sum(counts) == 10 and total == 20_003 * MS and timeouts == 1


def test_client_connection_counters():
    reg = StatsRegistry()
    reg.client_connected()
    reg.client_connected()
    reg.client_aborted()
    glob = dict(reg.global_status().rows)
    assert glob["Client_Connections_created"] == "2" and glob["Client_Connections_aborted"] == "1"


# ---- tables over the live objects --------------------------------------------------------------


def _conn(hostgroup: int, server: Server) -> SimpleNamespace:
    return SimpleNamespace(hostgroup=hostgroup, server=server)


def _pools() -> tuple[dict[str, Server], list[Pool]]:
    """Real proxy.pool objects: writer w (hostgroup 0, also a reader in 1), replica r (hostgroup 1)."""
    settings = PoolSettings()
    w = Server(0, "10.0.0.1", 3306)
    r = Server(1, "10.0.0.2", 3306, status="SHUNNED")
    bw, br = ServerBudget(w.address, 100, settings), ServerBudget(r.address, 100, settings)

    async def connector():  # never called
        raise AssertionError

    p_app = Pool(bw, connector, "app@w")
    p_bob = Pool(bw, connector, "bob@w")
    p_r = Pool(br, connector, "app@r")
    p_app.lent, p_bob.lent, p_r.lent = 3, 1, 2
    p_app.idle = [(object(), 0.0)] * 4
    p_r.idle = [(object(), 0.0)]
    bw.open, bw.connecting, bw.created, bw.reused = 9, 1, 12, 500
    br.open, br.created, br.reused = 3, 3, 70
    return {"w": w, "r": r}, [p_app, p_bob, p_r]


def test_connection_pool_table(clock):
    servers, pools = _pools()
    w, r = servers["w"], servers["r"]
    members = [(0, w), (1, w), (1, r)]  # writer_is_also_reader
    reg = StatsRegistry(sources=Sources(pools=lambda: pools, servers=lambda: members))
    sw0, sw1, sr = reg.server(0, w.address), reg.server(1, w.address), reg.server(1, r.address)
    for _ in range(3):
        run(reg, clock, sw0, "INSERT INTO t VALUES (1)", 200 * US, kind=Kind.INSERT)
    run(reg, clock, sw1, "SELECT 1", 100 * US)
    run(reg, clock, sr, "SELECT 1", 100 * US)
    run(reg, clock, sr, "SELECT 1", 301 * US)
    sw0.bytes_sent, sw0.bytes_recv = 300, 30
    reg.connect_error(r.address)
    reg.connect_error(r.address)
    gone = reg.server(2, "10.0.0.9:3307")  # served once, then removed from the config
    run(reg, clock, gone, "SELECT 1", US)

    table = reg.table("stats_mysql_connection_pool")
    assert table.columns == PROXYSQL_COLUMNS["stats_mysql_connection_pool"]
    assert table.rows == [
        # hg host       port  status     Used Free OK ERR Max Queries GTID sent recv Latency_us
        (0, "10.0.0.1", 3306, "ONLINE", 4, 4, 12, 0, 4, 3, 0, 300, 30, 200),
        (1, "10.0.0.1", 3306, "ONLINE", 4, 4, 12, 0, 4, 1, 0, 0, 0, 100),
        (1, "10.0.0.2", 3306, "SHUNNED", 2, 1, 3, 2, 2, 2, 0, 0, 0, 200),
        (2, "10.0.0.9", 3307, "OFFLINE_HARD", 0, 0, 0, 0, 0, 1, 0, 0, 0, 1),
    ]  # fmt: skip
    # MaxConnUsed is a high-water mark: it stays when fewer are lent.
    pools[0].lent = 0
    reg.sample()
    assert reg.table("stats_mysql_connection_pool").rows[0][4] == 1
    assert reg.table("stats_mysql_connection_pool").rows[0][8] == 4
    state = reg.pool_state()
    assert state[w.address] == {"used": 1, "idle": 4, "connecting": 1, "open": 9, "created": 12, "reused": 500}


def _session(i: int, **kw) -> SimpleNamespace:
    s = SimpleNamespace(
        id=i, username="app", peer=f"192.168.1.{i}:{40000 + i}", logged_in=True, busy=False, last_activity=100.0,
        pin_reasons=set(), txn_hg=None, status=2, current=None, conns={}, state=SimpleNamespace(schema="sbtest"),
    )  # fmt: skip
    s.__dict__.update(kw)
    return s


def test_processlist_table():
    w, r = Server(0, "10.0.0.1", 3306), Server(1, "10.0.0.2", 3306)
    running = _conn(1, r)
    held = _conn(0, w)
    sessions = [
        _session(2, busy=True, current=running, current_sql="SELECT c FROM sbtest1 WHERE id=5", last_activity=99.5),
        _session(1, pin_reasons={PinReason.USER_VARIABLE, PinReason.TEMP_TABLE}, txn_hg=0, conns={0: held}, status=3),
        _session(3, logged_in=False, busy=True, username="-", peer="?", state=SimpleNamespace(schema=None)),
    ]
    reg = StatsRegistry(sources=Sources(sessions=lambda: sessions, session_clock=lambda: 101.0))
    table = reg.table("stats_mysql_processlist")
    assert table.columns[:16] == PROXYSQL_COLUMNS["stats_mysql_processlist"]
    assert table.columns[16:] == ("pin_reasons",)
    rows = {row[1]: dict(zip(table.columns, row, strict=True)) for row in table.rows}
    assert [row[1] for row in table.rows] == [1, 2, 3]
    idle, busy, connecting = rows[1], rows[2], rows[3]
    assert busy["command"] == "Query" and busy["info"] == "SELECT c FROM sbtest1 WHERE id=5" and busy["time_ms"] == 1500
    assert (busy["hostgroup"], busy["srv_host"], busy["srv_port"]) == (1, "10.0.0.2", 3306)
    assert (busy["cli_host"], busy["cli_port"], busy["user"], busy["db"]) == ("192.168.1.2", 40002, "app", "sbtest")
    assert idle["command"] == "Sleep" and idle["info"] == "" and idle["time_ms"] == 1000
    assert (idle["hostgroup"], idle["srv_host"], idle["status_flags"]) == (0, "10.0.0.1", 3)
    assert idle["pin_reasons"] == "TEMP_TABLE,USER_VARIABLE" and busy["pin_reasons"] == ""
    ext = json.loads(idle["extended_info"])
    assert ext == {"in_transaction": True, "txn_hostgroup": 0, "backends": [{"hostgroup": 0, "server": "10.0.0.1:3306"}]}
    assert connecting["command"] == "Connect" and connecting["hostgroup"] == -1 and connecting["cli_host"] == "?"


def test_pinned_sessions_users_and_global(clock):
    sessions = [
        _session(1, pin_reasons={PinReason.TEMP_TABLE}, txn_hg=0),
        _session(2, pin_reasons={PinReason.TEMP_TABLE, PinReason.GET_LOCK}, busy=True),
        _session(3, username="bob"),
        _session(4, username="carol"),  # no longer in the config
        _session(5, username="-", logged_in=False),
    ]
    users = [SimpleNamespace(username="app", max_connections=100), SimpleNamespace(username="bob", max_connections=5),
             SimpleNamespace(username="dave", max_connections=7)]  # fmt: skip
    servers, pools = _pools()
    reg = StatsRegistry(
        max_digests=50,
        sources=Sources(
            sessions=lambda: sessions, users=lambda: users, pools=lambda: pools,
            classifier_cache=lambda: {"hits": 30, "misses": 10, "raw_hits": 20, "digest_hits": 10},
        ),
    )  # fmt: skip
    pinned = reg.pinned_sessions()
    assert set(pinned) == set(PinReason)
    assert pinned[PinReason.TEMP_TABLE] == 2 and pinned[PinReason.GET_LOCK] == 1 and pinned[PinReason.OTHER] == 0

    table = reg.table("stats_mysql_users")
    assert table.columns == PROXYSQL_COLUMNS["stats_mysql_users"]
    assert table.rows == [("app", 2, 100), ("bob", 1, 5), ("dave", 0, 7), ("carol", 1, 0)]

    srv = reg.server(0, servers["w"].address)
    srv.acquire_immediate = 7
    reg.acquire_done(srv, 2 * MS)
    reg.acquire_failed(srv, 10_000 * MS)
    run(reg, clock, srv, "SELECT 1", 10 * US, error=1064)
    reg.connect_error(servers["r"].address)
    table = reg.table("stats_mysql_global")
    assert table.columns == PROXYSQL_COLUMNS["stats_mysql_global"]
    glob = dict(table.rows)
    assert all(isinstance(v, str) for v in glob.values())
    expect = {
        "Active_Transactions": "1", "Client_Connections_connected": "5", "Client_Connections_non_idle": "1",
        "Client_Connections_hostgroup_locked": "2", "Server_Connections_aborted": "1",
        "Server_Connections_connected": "11", "Server_Connections_created": "15", "Questions": "1",
        "Backend_query_time_nsec": str(10 * US), "ConnPool_get_conn_immediate": "7", "ConnPool_get_conn_success": "8",
        "ConnPool_get_conn_failure": "1", "Backend_connections_reused": "570", "Client_error_packets": "1",
        "Query_digest_entries": "1", "Query_digest_max_entries": "50", "Query_digest_evictions": "0",
        "Classifier_cache_hits": "30", "Classifier_cache_misses": "10", "Classifier_cache_hit_ratio": "0.7500",
    }  # fmt: skip
    assert {k: glob[k] for k in expect} == expect
    assert "ProxySQL_Uptime" in glob


def test_classifier_cache_defaults_to_rules_classify():
    import rules.classify as rc

    rc.cache_clear()
    try:
        for i in range(3):
            rc.classify(f"SELECT c FROM sbtest1 WHERE id={i}")
        rc.classify("SELECT c FROM sbtest1 WHERE id=0")
        info = StatsRegistry().classifier_cache()
        assert info["misses"] == 1 and info["hits"] == 3 and info["hit_ratio"] == 0.75
    finally:
        rc.cache_clear()
    assert StatsRegistry().classifier_cache()["hit_ratio"] == 0.0  # nothing yet: 0, not a division by zero


def test_every_table_has_proxysql_columns():
    reg = StatsRegistry()
    assert set(stats_mod.TABLES) == set(PROXYSQL_COLUMNS)
    for name, columns in PROXYSQL_COLUMNS.items():
        table = reg.table(name)
        assert table.columns[: len(columns)] == columns, name
        assert all(len(row) == len(table.columns) for row in table.rows)
    with pytest.raises(KeyError, match="stats_mysql_query_digest"):
        reg.table("stats_nope")


def test_real_proxy_objects_fit_the_protocols(clock):
    """The registry reads ProxyApp's own objects (ClientSession, Server, User) as they are today."""
    app = ProxyApp(
        parse_config(
            {
                "proxy": {},
                "listeners": {"data": {"port": 6033}},
                "users": [{"username": "app", "password": "pw", "max_connections": 9}],
                "servers": [{"hostgroup_id": 0, "hostname": "127.0.0.1"}],
            }
        )
    )
    sess = ClientSession(app)
    app.sessions[sess.id] = sess
    reg = StatsRegistry(
        sources=Sources(
            sessions=lambda: app.sessions.values(),
            pools=lambda: app.pools.values(),
            servers=lambda: ((hg, s) for hg, ss in app.router.hostgroups.members.items() for s in ss),
            users=lambda: app.config.users.values(),
            rules=lambda: (r.rule_id for r in app.config.ruleset.rules),
            session_clock=lambda: app.clock(),
        )
    )
    for name in stats_mod.TABLES:
        reg.table(name)
    (row,) = reg.processlist().rows
    assert row[1] == sess.id and row[11] == "Connect"
    assert reg.users().rows == [("app", 0, 9)]
    assert reg.connection_pool().rows[0][:4] == (0, "127.0.0.1", 3306, "ONLINE")


def test_stats_never_imports_prometheus_client():
    """Design rule: only proxy.metrics knows about Prometheus."""
    code = "import sys, proxy.stats; sys.exit('prometheus_client' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0


def test_table_chunks_match_the_table_and_fix_the_entries_at_the_call(clock):
    reg = StatsRegistry()
    srv = reg.server(0, "w:3306")
    for i in range(10):
        run(reg, clock, srv, f"SELECT {i} FROM t{i}", 10 * US)
    columns, chunks = reg.table_chunks("stats_mysql_query_digest", rows_per_chunk=3)
    first = next(chunks)
    assert columns == reg.query_digest().columns and len(first) == 3
    run(reg, clock, srv, "SELECT 1 FROM t_new", 10 * US)  # after the call: not in this snapshot
    run(reg, clock, srv, "SELECT 9 FROM t9", 10 * US)  # an entry of a later chunk: its row shows it
    rest = [row for chunk in chunks for row in chunk]
    rows = first + rest
    assert len(rows) == 10 and "SELECT ? FROM T_NEW" not in {r[5] for r in rows}
    assert {r[5]: r[6] for r in rows}["SELECT ? FROM T9"] == 2


def test_table_chunks_reset_empties_at_the_call(clock):
    reg = StatsRegistry()
    srv = reg.server(0, "w:3306")
    for i in range(5):
        run(reg, clock, srv, f"SELECT {i} FROM t{i}", 10 * US)
    _, chunks = reg.table_chunks("stats_mysql_query_digest_reset", rows_per_chunk=2)
    assert reg.digest_count == 0 and reg.statements_by_kind() == {(0, "SELECT"): 5}
    assert sum(len(c) for c in chunks) == 5


def test_table_chunks_processlist_and_small_tables():
    sessions = [_session(i) for i in (3, 1, 2)]
    reg = StatsRegistry(sources=Sources(sessions=lambda: sessions, session_clock=lambda: 101.0))
    columns, chunks = reg.table_chunks("stats_mysql_processlist", rows_per_chunk=2)
    chunks = list(chunks)
    assert [len(c) for c in chunks] == [2, 1]
    assert [row for c in chunks for row in c] == reg.table("stats_mysql_processlist").rows
    columns, chunks = reg.table_chunks("stats_mysql_users")
    assert columns == ("username", "frontend_connections", "frontend_max_connections") and len(list(chunks)) == 1
