"""Failover under an autocommit write load: the primary SIGKILLed, the most advanced replica
promoted 1 s later (STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=0) as a failover tool would,
the other replica re-pointed; then the old primary restarted with read_only=1 and attached to the
new primary. The proxy promotes nothing: the monitor follows read_only.

Every write records the server that executed it (``INSERT ... VALUES (k, @@server_id)``), and a
server's own writes show as GTIDs with its server_id in @@gtid_binlog_state (MariaDB's Com_insert
also counts replicated row events, so it cannot tell).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from .conftest import FAST_MONITOR, Admin, connector, launch, probe_reads, report
from .loadgen import Load, insert_row, read_server_id

READ_ONLY_INTERVAL = FAST_MONITOR["read_only_interval"] / 1000


def own_gtid(server: Any) -> str:
    """The server's own entry in @@gtid_binlog_state (domain-server_id-seq), '' if none."""
    state = server.value("SELECT @@gtid_binlog_state")
    return next((g for g in state.split(",") if g and g.split("-")[1] == str(server.server_id)), "")


def seq(position: str) -> int:
    return max((int(g.rsplit("-", 1)[1]) for g in position.split(",") if g), default=0)


@dataclass
class Failover:
    writes: Load
    reads: Load
    old: Any
    new: Any
    marks: dict[str, float]
    rows_by_server: dict[int, int]
    old_gtid_before: str
    old_gtid_after: str
    probe: dict[int, int]


@pytest.fixture(scope="module")
def failover(fcluster, tmp_path_factory):
    c = fcluster
    old = c.primary
    proxy = launch(c, tmp_path_factory.mktemp("promotion"), "promotion")
    admin = Admin(proxy)
    marks: dict[str, float] = {}
    try:
        admin.wait_checked(3)
        writes = Load(connector(proxy), insert_row(), clients=4, max_seconds=60, name="writes")
        reads = Load(connector(proxy), read_server_id(), clients=2, max_seconds=60, pause=0.01, name="reads")
        with writes, reads:
            time.sleep(1.5)
            marks["kill"] = time.monotonic()
            old.kill()
            time.sleep(1.0)
            new = max(c.replicas, key=lambda r: seq(r.value("SELECT @@gtid_slave_pos")))  # the most advanced
            position = c.promote(new)
            marks["read_only_0"] = time.monotonic()
            for r in c.replicas:
                if r is not old:
                    c.point_to(r, new)
            marks["placed"] = admin.wait("new writer in hostgroup 0", lambda: admin.placement(new.port) == [(0, "ONLINE")], 3)
            time.sleep(2.0)
            # the old primary comes back as a read-only replica of the new one; it may hold writes the
            # new primary never received (asynchronous replication), hence non-strict GTID mode there
            old.start()
            marks["restarted"] = time.monotonic()
            c.point_to(old, new, strict=False, gtid_slave_pos=position)
            marks["rejoined"] = admin.wait("old primary ONLINE in the readers", lambda: admin.placement(old.port) == [(1, "ONLINE")], 10)
            time.sleep(0.3)
            before = own_gtid(old)
            marks["observe"] = time.monotonic()
            probe = probe_reads(proxy)
            time.sleep(2.0)
            marks["end"] = time.monotonic()
        c.wait_replicated(timeout=20)
        after = own_gtid(old)
        rows = {int(sid): int(n) for sid, n in (line.split("\t") for line in new.sql("SELECT sid, COUNT(*) FROM ft.w GROUP BY sid").splitlines())}
        first_ok = min((o.start for o in writes.ops if o.ok and o.start >= marks["read_only_0"]), default=float("nan"))
        errs = writes.errors(marks["kill"] + 0.05, marks["end"])
        report("primary SIGKILLed, replica promoted 1 s later (4 writers, 2 readers)", placed_after_read_only_0_s=marks["placed"] - marks["read_only_0"],
               writes_resumed_after_read_only_0_s=first_ok - marks["read_only_0"], write_errors_after_kill=len(errs),
               error_codes=sorted({o.error for o in errs}), read_errors=len(reads.errors()),
               old_primary_online_as_reader_after_restart_s=marks["rejoined"] - marks["restarted"], old_primary_own_gtid_unchanged=before == after)
        yield Failover(writes, reads, old, new, marks, rows, before, after, probe)
    finally:
        admin.close()
        proxy.stop()
        if not old.is_running:
            old.start()


def test_promotion_is_followed_and_writes_resume(failover):
    f, m = failover, failover.marks
    assert m["placed"] - m["read_only_0"] <= 2 * READ_ONLY_INTERVAL + 0.2, f.writes.summary()
    # writes resume within 3 s of read_only=0, all on the new primary from then on
    first_ok = min(o.start for o in f.writes.ops if o.ok and o.start >= m["read_only_0"])
    assert first_ok - m["read_only_0"] <= 3.0, f.writes.summary(m["kill"], m["end"])
    later = f.writes.between(m["placed"] + 0.1, m["end"])
    assert later and all(o.ok for o in later), f.writes.summary(m["placed"], m["end"])
    assert set(f.rows_by_server) <= {f.old.server_id, f.new.server_id}, f.rows_by_server
    assert f.rows_by_server.get(f.new.server_id, 0) >= len(later)
    # reads never stopped: replicas served them throughout
    assert f.reads.errors(m["kill"] + 0.1, m["end"]) == [] or all(o.start < m["kill"] + 0.1 for o in f.reads.errors()), f.reads.summary()


def test_old_primary_joins_the_readers_and_gets_no_client_writes(failover):
    f, m = failover, failover.marks
    assert f.probe.get(f.old.server_id, 0) > 0 and f.new.server_id not in f.probe, f.probe  # readers: old + the other replica
    assert f.old_gtid_after == f.old_gtid_before, (f.old_gtid_before, f.old_gtid_after)
    assert f.old.value("SELECT @@global.read_only") == "1"
    assert not [o for o in f.writes.errors(m["rejoined"], m["end"])], f.writes.summary(m["rejoined"], m["end"])
    assert [o for o in f.writes.errors() if o.error == 1290] == []  # no write ever reached a read_only server


def test_writes_waiting_for_the_new_writer_get_no_errors(failover):
    f, m = failover, failover.marks
    # writes in flight on the primary when it died may have committed: they may fail; no other may
    assert f.writes.errors(m["kill"] + 0.05, m["end"]) == [], f.writes.summary(m["kill"], m["end"])
