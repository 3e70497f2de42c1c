"""Server-side prepared statements under multiplexing and splitting (real clients, real servers)."""

from __future__ import annotations

import uuid

import mysql.connector
import pytest


@pytest.fixture
def one_writer_connection(start_proxy, cluster):
    """A proxy whose writer has a single backend connection: every session shares it."""
    servers = [{"hostgroup_id": 0, "hostname": cluster.primary.host, "port": cluster.primary.port, "max_connections": 1}]
    servers += [{"hostgroup_id": 1, "hostname": r.host, "port": r.port} for r in cluster.replicas]
    pair = [{"writer_hostgroup": 0, "reader_hostgroup": 1, "writer_is_also_reader": False}]
    return start_proxy(servers=servers, replication_hostgroups=pair)


def connector(p, **kw):
    return mysql.connector.connect(host=p.host, port=p.port, user=p.user, password=p.password, use_pure=True, autocommit=True, **kw)


def test_same_statement_text_in_two_schemas_stays_in_its_own_schema(one_writer_connection, cluster):
    # Regression: the connections' statement cache was keyed by text only, so a session in schema B
    # executed a statement another session had prepared in schema A, on A's table.
    a, b = f"pa_{uuid.uuid4().hex[:8]}", f"pb_{uuid.uuid4().hex[:8]}"
    cluster.primary.sql(f"CREATE DATABASE {a}; CREATE TABLE {a}.t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO {a}.t VALUES (1, 'from-a');"
                        f"CREATE DATABASE {b}; CREATE TABLE {b}.t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO {b}.t VALUES (1, 'from-b')")
    cluster.wait_replicated()
    try:
        ca, cb = connector(one_writer_connection, database=a), connector(one_writer_connection, database=b)
        sql = "/* rwproxy:route=writer */ SELECT v FROM t WHERE id = ?"
        cur_a, cur_b = ca.cursor(prepared=True), cb.cursor(prepared=True)
        cur_a.execute(sql, (1,))  # prepared in schema a
        assert cur_a.fetchall() == [("from-a",)]
        cur_b.execute(sql, (1,))  # the same text prepared in schema b, on the same backend connection
        assert cur_b.fetchall() == [("from-b",)]
        for _ in range(3):  # each statement executes again (no new PREPARE): each must stay in its schema
            cur_a.execute(sql, (1,))
            assert cur_a.fetchall() == [("from-a",)]
            cur_b.execute(sql, (1,))
            assert cur_b.fetchall() == [("from-b",)]
        ca.close()
        cb.close()
    finally:
        cluster.primary.sql(f"DROP DATABASE {a}; DROP DATABASE {b}")


def test_prepared_reads_run_on_replicas_and_writes_on_the_primary(one_writer_connection, cluster, schema):
    cluster.primary.sql(f"CREATE TABLE {schema}.t (id INT PRIMARY KEY, v INT); INSERT INTO {schema}.t VALUES (1, 10)")
    cluster.wait_replicated()
    readers = {r.server_id for r in cluster.replicas}
    c = connector(one_writer_connection, database=schema)
    cur = c.cursor(prepared=True)
    cur.execute("SELECT @@server_id, v FROM t WHERE id = ?", (1,))
    sid, v = cur.fetchall()[0]
    assert sid in readers and v == 10
    cur.execute("UPDATE t SET v = v + ? WHERE id = 1", (5,))
    assert cur.rowcount == 1
    assert cluster.primary.value(f"SELECT v FROM {schema}.t WHERE id = 1") == "15"
    c.close()


def test_many_sessions_share_one_connection_with_prepared_statements(one_writer_connection, cluster, schema):
    cluster.primary.sql(f"CREATE TABLE {schema}.t (id INT PRIMARY KEY, v BLOB)")
    conns = [connector(one_writer_connection, database=schema) for _ in range(4)]
    for i, c in enumerate(conns):
        cur = c.cursor(prepared=True)
        # parameter types are bound on the first execute only; later executes on another backend
        # statement must still get them
        for k in range(5):
            cur.execute("/* rwproxy:route=writer */ INSERT INTO t VALUES (?, ?)", (i * 100 + k, bytes([i, k]) * 1000))
    for i, c in enumerate(conns):
        cur = c.cursor(prepared=True)
        cur.execute("/* rwproxy:route=writer */ SELECT id, LENGTH(v), HEX(LEFT(v, 2)) FROM t WHERE id DIV 100 = ? ORDER BY id", (i,))
        assert cur.fetchall() == [(i * 100 + k, 2000, f"{i:02X}{k:02X}") for k in range(5)]
        c.close()
