"""The test bed itself: the cluster fixture gives a real, replicating, read-only-replica topology.

These talk to the servers directly (never through the proxy), so a failure here means the bed is
broken, not the proxy.
"""

from __future__ import annotations

import uuid

import pymysql
import pytest


def _connect(cluster, server, **kw):
    return pymysql.connect(
        host=server.host,
        port=server.port,
        user=cluster.app_user,
        password=cluster.app_password,
        autocommit=True,
        connect_timeout=10,
        **kw,
    )


def test_server_ids_are_distinct(cluster):
    ids = [int(s.value("SELECT @@server_id")) for s in cluster.servers]
    assert len(cluster.replicas) == 2
    assert len(set(ids)) == 3
    assert ids == [s.server_id for s in cluster.servers]


def test_roles_and_read_only(cluster):
    assert cluster.primary.role == "primary"
    assert cluster.primary.value("SELECT @@read_only") == "0"
    for r in cluster.replicas:
        assert r.role == "replica"
        assert r.value("SELECT @@read_only") == "1"


def test_gtid_settings(cluster):
    for s in cluster.servers:
        if cluster.flavor == "mariadb":
            assert s.value("SELECT @@gtid_strict_mode") == "1"
            assert s.value("SELECT @@log_bin") == "1"
        else:
            assert s.value("SELECT @@gtid_mode") == "ON"


def test_app_user_logs_in_everywhere_over_tcp(cluster):
    # The app user was created on the primary only: reaching the replicas proves replication.
    for s in cluster.servers:
        with _connect(cluster, s) as conn, conn.cursor() as cur:
            cur.execute("SELECT @@server_id, CURRENT_USER()")
            server_id, user = cur.fetchone()
            assert int(server_id) == s.server_id
            assert user.startswith(f"{cluster.app_user}@")


def test_row_inserted_on_primary_reaches_both_replicas(cluster, direct):
    marker = uuid.uuid4().hex
    with direct.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS testbed")
        cur.execute("CREATE TABLE IF NOT EXISTS testbed.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64))")
        cur.execute("INSERT INTO testbed.t (v) VALUES (%s)", (marker,))
    cluster.wait_replicated(timeout=10)
    for r in cluster.replicas:
        with _connect(cluster, r) as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM testbed.t WHERE v = %s", (marker,))
            assert cur.fetchone()[0] == 1, r.name


def test_app_user_cannot_write_on_a_replica(cluster):
    # A write that reaches a replica must fail (ER_OPTION_PREVENTS_STATEMENT), not diverge it.
    cluster.primary.sql("CREATE DATABASE IF NOT EXISTS testbed; CREATE TABLE IF NOT EXISTS testbed.ro (i INT)")
    cluster.wait_replicated()
    with _connect(cluster, cluster.replicas[0]) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("INSERT INTO testbed.ro VALUES (1)")
        assert info.value.args[0] == 1290


def test_replica_restart_resumes_replication(cluster, direct):
    # Last in the file on purpose: it restarts a server of the session cluster.
    replica = cluster.replicas[-1]
    replica.stop()
    assert not replica.is_running
    with direct.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS testbed")
        cur.execute("CREATE TABLE IF NOT EXISTS testbed.restart (i INT)")
        cur.execute("INSERT INTO testbed.restart VALUES (42)")
    cluster.wait_replicated()  # the running replica only
    replica.start()
    cluster.wait_replicated(timeout=20)
    assert replica.value("SELECT COUNT(*) FROM testbed.restart WHERE i = 42") == "1"
