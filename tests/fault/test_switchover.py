"""Planned switchover (ProxySQL's recipe, issue #362): the writer set OFFLINE_SOFT on the admin port
and drained, made read_only, a replica promoted once it caught up, the old writer attached to it;
then the operator puts the old writer back ONLINE, now as a reader. Under a write and a read load.
"""

from __future__ import annotations

import time

import pytest

from .conftest import FAST_MONITOR, Admin, connector, launch, probe_reads, report
from .loadgen import Load, insert_row, read_server_id
from .test_promotion import own_gtid

READ_ONLY_INTERVAL = FAST_MONITOR["read_only_interval"] / 1000


@pytest.fixture(scope="module")
def switchover(fcluster, tmp_path_factory):
    c = fcluster
    old, new, third = c.primary, c.replicas[0], c.replicas[1]
    proxy = launch(c, tmp_path_factory.mktemp("switchover"), "switchover")
    admin = Admin(proxy)
    marks: dict[str, float] = {}
    try:
        admin.wait_checked(3)
        writes = Load(connector(proxy), insert_row(), clients=4, max_seconds=60, name="writes")
        reads = Load(connector(proxy), read_server_id(), clients=2, max_seconds=60, pause=0.01, name="reads")
        with writes, reads:
            time.sleep(1.5)
            marks["soft"] = time.monotonic()
            admin.rows(f"UPDATE mysql_servers SET status = 'OFFLINE_SOFT' WHERE hostgroup_id = 0 AND port = {old.port}")
            admin.rows("LOAD MYSQL SERVERS TO RUNTIME")
            admin.wait("old writer drained", lambda: admin.rows(f"SELECT ConnUsed FROM stats.stats_mysql_connection_pool WHERE srv_port = {old.port}") == [(0,)], 5)
            old.sql("SET GLOBAL read_only=1")
            c.wait_replicated(timeout=10)
            c.promote(new)
            marks["read_only_0"] = time.monotonic()
            c.point_to(old, new, use_gtid="current_pos")
            c.point_to(third, new)
            marks["placed"] = admin.wait("new writer in hostgroup 0", lambda: admin.placement(new.port) == [(0, "ONLINE")], 3)
            marks["old_moved"] = admin.wait("old writer in the readers, still OFFLINE_SOFT", lambda: admin.placement(old.port) == [(1, "OFFLINE_SOFT")], 3)
            time.sleep(1.5)
            admin.rows(f"UPDATE mysql_servers SET status = 'ONLINE' WHERE port = {old.port}")
            admin.rows("LOAD MYSQL SERVERS TO RUNTIME")
            marks["back"] = admin.wait("old writer ONLINE as a reader", lambda: admin.placement(old.port) == [(1, "ONLINE")], 3)
            gtid_before = own_gtid(old)
            probe = probe_reads(proxy)
            time.sleep(1.0)
            marks["end"] = time.monotonic()
        c.wait_replicated(timeout=20)
        errs = writes.errors()
        report("switchover via OFFLINE_SOFT (4 writers, 2 readers)", placed_after_read_only_0_s=marks["placed"] - marks["read_only_0"],
               writer_gap_s=marks["placed"] - marks["soft"], write_errors=len(errs), error_codes=sorted({o.error for o in errs}), read_errors=len(reads.errors()))
        yield writes, reads, old, new, marks, gtid_before, own_gtid(old), probe
    finally:
        admin.close()
        proxy.stop()


def test_switchover_is_followed(switchover):
    writes, reads, old, new, m, gtid_before, gtid_after, probe = switchover
    assert m["placed"] - m["read_only_0"] <= 2 * READ_ONLY_INTERVAL + 0.2
    later = writes.between(m["placed"] + 0.1, m["end"])
    assert later and all(o.ok for o in later), writes.summary(m["placed"], m["end"])
    assert probe.get(old.server_id, 0) > 0 and set(probe) <= {old.server_id, c_third(switchover)}, probe
    assert gtid_after == gtid_before  # no client write on the old writer once it is a reader
    assert reads.errors() == [], reads.summary()
    # no write ever ran on a read_only server
    assert [o for o in writes.errors() if o.error == 1290] == []


def c_third(switchover) -> int:
    """The replica that stayed a replica."""
    _, _, old, new, *_ = switchover
    return ({1, 2, 3} - {old.server_id, new.server_id}).pop()


def test_switchover_costs_no_client_errors(switchover):
    writes = switchover[0]
    assert writes.errors() == [], writes.summary()
