"""proxy.topology: health transitions and the live server list, without servers."""

from __future__ import annotations

import dataclasses

import pytest

from proxy.config import MonitorSettings, Server
from proxy.hostgroups import Hostgroups, candidates
from proxy.topology import (
    MAX_LAG_COUNT,
    Replication,
    ServerHealth,
    Status,
    changes,
    check_succeeded,
    connect_failed,
    live_status,
    make_topology,
    new_writers,
    ping_failed,
    read_only_seen,
    replication_seen,
    runtime_servers,
)
from rules.model import ReplicationHostgroup

T = MonitorSettings(ping_max_failures=3, shun_on_failures=5, shun_recovery_time_sec=10, replication_lag_count=2, lag_when_null=60)
PAIR = ReplicationHostgroup(0, 1, writer_is_also_reader=False)
P = Server(0, "10.0.0.1", 3306, comment="primary")
R1 = Server(1, "10.0.0.2", 3306, max_replication_lag=10, comment="replica 1")
R2 = Server(1, "10.0.0.3", 3306, max_replication_lag=10, comment="replica 2")
SERVERS = (P, R1, R2)


def healthy(address: str, read_only: bool | None = None) -> ServerHealth:
    return ServerHealth(address, read_only=read_only)


def placement(servers) -> list[tuple[int, str, str]]:
    return [(s.hostgroup_id, s.address, s.status) for s in servers]


# ---- connect errors ------------------------------------------------------------------------------------


def test_shun_after_shun_on_failures_connect_errors_within_one_second():
    h = healthy("a")
    for i in range(4):
        h = connect_failed(h, 100.0 + i * 0.1, "Connection refused", T)
        assert not h.shunned
    h = connect_failed(h, 100.45, "Connection refused", T)
    assert h.shunned and h.shunned_at == 100.45
    assert h.shun_reason == "5 connect errors within 1 s (last: Connection refused)"
    assert h.connect_errors == ()


def test_connect_errors_spread_over_more_than_a_second_do_not_shun():
    h = healthy("a")
    for i in range(20):
        h = connect_failed(h, 100.0 + i * 0.3, "timeout", T)  # at most 4 in any 1 s window
    assert not h.shunned
    assert len(h.connect_errors) <= 4


def test_shun_on_failures_zero_never_shuns():
    t = dataclasses.replace(T, shun_on_failures=0)
    h = healthy("a")
    for i in range(100):
        h = connect_failed(h, 100.0, "refused", t)
    assert not h.shunned and h.connect_errors == ()


def test_shun_on_failures_one_shuns_at_the_first():
    h = connect_failed(healthy("a"), 1.0, "refused", dataclasses.replace(T, shun_on_failures=1))
    assert h.shunned and h.shun_reason == "1 connect errors within 1 s (last: refused)"


# ---- pings ---------------------------------------------------------------------------------------------


def test_shun_after_ping_max_failures_in_a_row():
    h = healthy("a")
    h = ping_failed(h, 1.0, "timeout", T)
    h = ping_failed(h, 2.0, "timeout", T)
    assert not h.shunned and h.ping_failures == 2
    h = ping_failed(h, 3.0, "no answer within 1000 ms", T)
    assert h.shunned and h.shunned_at == 3.0
    assert h.shun_reason == "3 ping(s) missed in a row (last: no answer within 1000 ms)"


def test_a_successful_ping_resets_the_count_and_records_latency():
    h = ping_failed(ping_failed(healthy("a"), 1.0, "x", T), 2.0, "x", T)
    h = check_succeeded(h, 3.0, T, ping_us=250)
    assert h.ping_failures == 0 and h.ping_us == 250
    h = ping_failed(ping_failed(h, 4.0, "x", T), 5.0, "x", T)
    assert not h.shunned  # two in a row again, not four
    assert h.ping_us is None


def test_shunned_comes_back_only_after_the_recovery_time():
    h = healthy("a")
    for i in range(3):
        h = ping_failed(h, 100.0, "x", T)
    assert h.shunned
    h = check_succeeded(h, 105.0, T, ping_us=100)  # answers, but too early
    assert h.shunned and h.ping_failures == 0
    h = check_succeeded(h, 110.0, T)  # a connect check, at the recovery time
    assert not h.shunned and h.shun_reason == ""


def test_recovery_time_zero_brings_it_back_at_the_next_success():
    t = dataclasses.replace(T, shun_recovery_time_sec=0)
    h = ping_failed(ping_failed(ping_failed(healthy("a"), 1.0, "x", t), 1.0, "x", t), 1.0, "x", t)
    assert not check_succeeded(h, 1.5, t, ping_us=5).shunned


def test_already_shunned_keeps_its_first_reason_and_time():
    h = ping_failed(ping_failed(ping_failed(healthy("a"), 1.0, "x", T), 2.0, "x", T), 3.0, "x", T)
    h2 = connect_failed(h, 4.0, "refused", dataclasses.replace(T, shun_on_failures=1))
    h2 = ping_failed(h2, 5.0, "y", T)
    assert (h2.shunned_at, h2.shun_reason) == (3.0, h.shun_reason)


def test_a_server_back_from_shunned_must_answer_read_only_again_first():
    """An old primary that died (read_only=0 known) and restarts read_only: a ping alone must not
    bring it back where it was (the writer hostgroup)."""
    h = read_only_seen(healthy(P.address), 1.0, False, "0-1-5", T)
    for i in range(3):
        h = ping_failed(h, 2.0, "Connection refused", T)
    assert h.shunned
    h = check_succeeded(h, 20.0, T, ping_us=100)  # long after the recovery time
    assert h.shunned  # its read_only is a dead server's
    placed = runtime_servers(SERVERS, [PAIR], {P.address: h})
    assert placement(placed)[0] == (0, P.address, "SHUNNED")
    h = read_only_seen(h, 20.2, True, "0-1-5", T)
    assert not h.shunned
    assert placement(runtime_servers(SERVERS, [PAIR], {P.address: h}))[0] == (1, P.address, "ONLINE")


def test_a_read_only_answer_alone_does_not_bring_it_back_either():
    h = read_only_seen(healthy(R1.address), 1.0, True, None, T)
    h = connect_failed(h, 2.0, "refused", dataclasses.replace(T, shun_on_failures=1))
    h = read_only_seen(h, 20.0, True, None, T)
    assert h.shunned  # no ping or connect has answered since
    assert not check_succeeded(h, 20.1, T).shunned


def test_a_server_whose_read_only_never_answered_comes_back_on_a_ping():
    h = connect_failed(healthy(R1.address), 2.0, "refused", dataclasses.replace(T, shun_on_failures=1))
    assert not check_succeeded(h, 12.0, T, ping_us=1).shunned


# ---- read_only and replication ------------------------------------------------------------------------


def test_read_only_records_the_gtid_position_and_keeps_the_last_one():
    h = read_only_seen(healthy("a"), 1.0, True, "0-1-10", T)
    assert (h.read_only, h.gtid_position, h.read_only_at) == (True, "0-1-10", 1.0)
    h = read_only_seen(h, 2.0, True, None, T)
    assert h.gtid_position == "0-1-10"
    assert read_only_seen(h, 3.0, True, "0-1-11", T).gtid_position == "0-1-11"


def test_replication_lag_and_lag_when_null():
    h = replication_seen(healthy("a"), Replication(3, True, True), T)
    assert h.lag == 3 and h.recent_lags == (3,)
    h = replication_seen(h, Replication(None, True, True), T)  # NULL Seconds_Behind_Master
    assert h.lag == 60
    h = replication_seen(h, Replication(0, True, False, "Duplicate entry"), T)  # SQL thread stopped
    assert h.lag == 60 and h.replication.last_error == "Duplicate entry"
    h = replication_seen(h, Replication(0, False, True), T)  # IO thread stopped
    assert h.lag == 60
    h = replication_seen(h, None, T)  # not a replica (any more)
    assert h.lag is None and h.replication is None
    assert h.recent_lags == (3, 60, 60, 60, None)


def test_recent_lags_are_bounded():
    h = healthy("a")
    for i in range(3 * MAX_LAG_COUNT):
        h = replication_seen(h, Replication(i, True, True), T)
    assert len(h.recent_lags) == MAX_LAG_COUNT and h.recent_lags[-1] == 3 * MAX_LAG_COUNT - 1


def test_a_promoted_replica_forgets_its_lag():
    h = replication_seen(read_only_seen(healthy("a"), 1.0, True, None, T), Replication(None, False, True), T)
    assert h.lag == 60
    h = read_only_seen(h, 2.0, False, None, T)
    assert (h.read_only, h.lag, h.recent_lags, h.replication) == (False, None, (), None)


@pytest.mark.parametrize(
    ("lags", "max_lag", "count", "lagging"),
    [
        ((), 10, 1, False),
        ((11,), 10, 1, True),
        ((10,), 10, 1, False),  # not over
        ((11,), 0, 1, False),  # 0 = no limit
        ((11,), 10, 2, False),  # one check is not two
        ((11, 12), 10, 2, True),
        ((12, 5), 10, 2, False),  # the latest is below: back at once
        ((5, 12), 10, 2, False),
        ((None, 12), 10, 2, False),  # not a replica then
        ((12, 12, 3, 12, 12), 10, 2, True),
    ],
)
def test_lagging(lags, max_lag, count, lagging):
    assert ServerHealth("a", recent_lags=lags).lagging(max_lag, count) is lagging


# ---- live status ---------------------------------------------------------------------------------------


def test_live_status():
    assert live_status(R1, None, 1) == "ONLINE"  # not monitored: as configured
    assert live_status(dataclasses.replace(R1, status="SHUNNED"), None, 1) == "SHUNNED"
    assert live_status(dataclasses.replace(R1, status="SHUNNED"), healthy(R1.address), 1) == "ONLINE"  # the monitor's call
    shunned = ServerHealth(R1.address, shunned=True)
    assert live_status(R1, shunned, 1) == "SHUNNED"
    assert live_status(dataclasses.replace(R1, status="OFFLINE_SOFT"), shunned, 1) == "OFFLINE_SOFT"  # the operator's
    assert live_status(dataclasses.replace(R1, status="OFFLINE_HARD"), shunned, 1) == "OFFLINE_HARD"
    lagging = ServerHealth(R1.address, recent_lags=(60,))
    assert live_status(R1, lagging, 1) == "SHUNNED_REPLICATION_LAG"
    assert live_status(P, lagging, 1) == "ONLINE"  # no max_replication_lag on the primary's row
    assert live_status(R1, dataclasses.replace(lagging, shunned=True), 1) == "SHUNNED"  # unreachable wins


# ---- placement -----------------------------------------------------------------------------------------


def test_no_health_is_the_configuration_itself():
    assert runtime_servers(SERVERS, [PAIR], {}) == SERVERS
    assert all(a is b for a, b in zip(runtime_servers(SERVERS, [PAIR], {}), SERVERS))


def test_confirmed_topology_keeps_the_configured_objects():
    health = {P.address: healthy(P.address, False), R1.address: healthy(R1.address, True), R2.address: healthy(R2.address, True)}
    out = runtime_servers(SERVERS, [PAIR], health)
    assert all(a is b for a, b in zip(out, SERVERS))


def test_failover_old_primary_down_replica_promoted():
    health = {
        P.address: ServerHealth(P.address, read_only=False, shunned=True, shun_reason="x"),
        R1.address: healthy(R1.address, True),
        R2.address: healthy(R2.address, False),  # promoted
    }
    out = runtime_servers(SERVERS, [PAIR], health)
    assert placement(out) == [(0, P.address, "SHUNNED"), (1, R1.address, "ONLINE"), (0, R2.address, "ONLINE")]
    moved = out[2]
    assert (moved.comment, moved.max_replication_lag, moved.weight) == ("replica 2", 10, 1)  # its row's attributes
    hg = Hostgroups(out, [PAIR])
    assert [s.address for s in candidates(hg.servers(0))] == [R2.address]  # writes go to the new writer
    assert [s.address for s in hg.servers(1)] == [R1.address]
    assert 0 in hg.online and 1 in hg.online


def test_old_primary_rejoins_as_a_reader():
    health = {P.address: healthy(P.address, True), R1.address: healthy(R1.address, True), R2.address: healthy(R2.address, False)}
    out = runtime_servers(SERVERS, [PAIR], health)
    assert placement(out) == [(1, P.address, "ONLINE"), (1, R1.address, "ONLINE"), (0, R2.address, "ONLINE")]
    assert out[0].comment == "primary" and out[0].max_replication_lag == 0


def test_writer_is_also_reader_is_membership_not_a_row():
    pair = ReplicationHostgroup(0, 1, writer_is_also_reader=True)
    health = {P.address: healthy(P.address, True), R1.address: healthy(R1.address, False), R2.address: healthy(R2.address, True)}
    out = runtime_servers(SERVERS, [pair], health)
    assert placement(out) == [(1, P.address, "ONLINE"), (0, R1.address, "ONLINE"), (1, R2.address, "ONLINE")]
    hg = Hostgroups(out, [pair])
    assert {s.address for s in hg.servers(1)} == {P.address, R1.address, R2.address}  # the writer too
    assert [s.address for s in hg.servers(0)] == [R1.address]


def test_server_configured_in_both_hostgroups_appears_where_it_belongs():
    w = Server(0, "db1", 3306, weight=5)
    r = Server(1, "db1", 3306, weight=1, max_replication_lag=3)
    other = Server(1, "db2", 3306)
    configured = (w, r, other)
    # read_only=0: writer hostgroup only; the writer-hostgroup row wins (weight 5)
    out = runtime_servers(configured, [PAIR], {"db1:3306": healthy("db1:3306", False)})
    assert placement(out) == [(0, "db1:3306", "ONLINE"), (1, "db2:3306", "ONLINE")]
    assert out[0] is w
    # read_only=1: reader hostgroup only, with the reader row's attributes
    out = runtime_servers(configured, [PAIR], {"db1:3306": healthy("db1:3306", True)})
    assert placement(out) == [(1, "db1:3306", "ONLINE"), (1, "db2:3306", "ONLINE")]
    assert out[0] is r
    # unknown: both rows, as configured
    assert runtime_servers(configured, [PAIR], {"db1:3306": healthy("db1:3306")}) == configured


def test_moved_row_wins_only_until_its_hostgroup_own_row_comes():
    # the reader row comes first in the configuration, the writer row second; read_only=0
    r = Server(1, "db1", 3306, weight=1)
    w = Server(0, "db1", 3306, weight=9)
    out = runtime_servers((r, w), [PAIR], {"db1:3306": healthy("db1:3306", False)})
    assert out == (w,)


def test_servers_outside_any_pair_never_move():
    other = Server(7, "db9", 3306)
    out = runtime_servers((P, other), [PAIR], {other.address: healthy(other.address, False), P.address: healthy(P.address, True)})
    assert placement(out) == [(1, P.address, "ONLINE"), (7, other.address, "ONLINE")]


def test_several_pairs_place_independently():
    pair2 = ReplicationHostgroup(10, 11, writer_is_also_reader=False)
    a, b = Server(10, "a", 1), Server(11, "b", 1)
    out = runtime_servers((P, R1, a, b), [PAIR, pair2], {"a:1": healthy("a:1", True), "b:1": healthy("b:1", False), R1.address: healthy(R1.address, False)})
    assert placement(out) == [(0, P.address, "ONLINE"), (0, R1.address, "ONLINE"), (11, "a:1", "ONLINE"), (10, "b:1", "ONLINE")]


def test_offline_rows_keep_their_status_when_they_move():
    soft = dataclasses.replace(P, status="OFFLINE_SOFT")
    out = runtime_servers((soft, R1), [PAIR], {P.address: healthy(P.address, True)})
    assert placement(out) == [(1, P.address, "OFFLINE_SOFT"), (1, R1.address, "ONLINE")]


# ---- snapshots and their differences ------------------------------------------------------------------


def test_topology_snapshot_is_immutable():
    topo = make_topology(3, SERVERS, [PAIR], {R1.address: ServerHealth(R1.address, shunned=True)}, 1, True)
    assert topo.generation == 3 and topo.monitored
    assert placement(topo.online(1)) == [(1, R2.address, "ONLINE")]
    assert topo.server(R1.address).shunned and topo.server(P.address) is None
    with pytest.raises(TypeError):
        topo.health["x"] = ServerHealth("x")  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        topo.servers = ()  # type: ignore[misc]


def test_changes_name_each_server_once():
    before = SERVERS
    after = runtime_servers(SERVERS, [PAIR], {
        P.address: ServerHealth(P.address, read_only=False, shunned=True),
        R2.address: healthy(R2.address, False),
    })  # fmt: skip
    got = changes(before, after)
    assert [(c.address, c.before, c.after, c.moved) for c in got] == [
        (P.address, "ONLINE in hostgroup 0", "SHUNNED in hostgroup 0", False),
        (R2.address, "ONLINE in hostgroup 1", "ONLINE in hostgroup 0", True),
    ]
    assert changes(after, after) == []
    gone = changes(before, (P, R1))
    assert [(c.address, c.after) for c in gone] == [(R2.address, "")]


def test_new_writers_counts_moves_into_the_writer_hostgroup_only():
    promoted = runtime_servers(SERVERS, [PAIR], {P.address: ServerHealth(P.address, shunned=True), R2.address: healthy(R2.address, False)})
    assert new_writers(SERVERS, promoted, [PAIR]) == [(0, R2.address)]
    # the old primary coming back (as a reader) is no new writer; a shunned writer recovering neither
    rejoined = runtime_servers(SERVERS, [PAIR], {P.address: healthy(P.address, True), R2.address: healthy(R2.address, False)})
    assert new_writers(promoted, rejoined, [PAIR]) == []
    assert new_writers(rejoined, rejoined, [PAIR]) == []
    assert Status.SHUNNED_REPLICATION_LAG == "SHUNNED_REPLICATION_LAG"
