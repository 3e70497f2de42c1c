"""Read/write splitting against the real primary and two replicas: where each statement ran.

Every assertion is about the server that answered (@@server_id), checked against the cluster's own
ids, or about what the client saw (rows, error code and SQLSTATE).
"""

from __future__ import annotations

import re
import subprocess
import uuid

import pymysql
import pytest


@pytest.fixture(scope="module")
def ids(cluster):
    return {"writer": cluster.primary.server_id, "readers": {r.server_id for r in cluster.replicas}}


@pytest.fixture(scope="module")
def table(cluster):
    """A table that exists on every server (created on the primary, replicated)."""
    name = f"rt_{uuid.uuid4().hex[:8]}"
    cluster.primary.sql(f"CREATE DATABASE {name}; CREATE TABLE {name}.t (id INT PRIMARY KEY, v INT); INSERT INTO {name}.t VALUES (1, 10), (2, 20)")
    cluster.wait_replicated()
    yield f"{name}.t"
    cluster.primary.sql(f"DROP DATABASE {name}")


def where(conn, sql="SELECT @@server_id"):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def test_reads_go_to_replicas_and_writes_to_the_primary(proxy, ids, table):
    c = proxy.connect(autocommit=True)
    assert where(c) in ids["readers"]
    assert where(c, f"SELECT @@server_id FROM {table} WHERE id = 1") in ids["readers"]
    assert where(c, f"(SELECT @@server_id FROM {table} WHERE id = 1) UNION (SELECT @@server_id FROM {table} WHERE id = 2)") in ids["readers"]
    assert where(c, f"WITH x AS (SELECT id FROM {table}) SELECT @@server_id FROM x LIMIT 1") in ids["readers"]
    # Locking reads, session functions and user variables go to the writer.
    assert where(c, f"SELECT @@server_id FROM {table} WHERE id = 1 FOR UPDATE") == ids["writer"]
    assert where(c, f"SELECT @@server_id FROM {table} WHERE id = 1 LOCK IN SHARE MODE") == ids["writer"]
    assert where(c, "SELECT @@server_id + 0 * FOUND_ROWS()") == ids["writer"]
    # (LAST_INSERT_ID() and ROW_COUNT() are the session's own values, answered from its OK packets.)
    # Writes run on the primary: the affected rows come back, and the replicas never see a 1290.
    with c.cursor() as cur:
        assert cur.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1") == 1
        cur.execute(f"INSERT INTO {table} VALUES (3, 30) ON DUPLICATE KEY UPDATE v = 30")
        cur.execute(f"REPLACE INTO {table} VALUES (4, 40)")
        cur.execute(f"DELETE FROM {table} WHERE id = 4")
    c.close()


def test_hints_route_a_statement(proxy, ids):
    c = proxy.connect(autocommit=True)
    assert where(c, "/* rwproxy:route=writer */ SELECT @@server_id") == ids["writer"]
    assert where(c, "/* hostgroup=0 */ SELECT @@server_id") == ids["writer"]
    assert where(c, "SELECT @@server_id -- maxscale route to master") == ids["writer"]
    assert where(c, "/* rwproxy:route=reader */ SELECT @@server_id") in ids["readers"]
    c.close()


def test_a_write_hinted_to_a_reader_still_runs_on_the_writer(proxy, table, cluster):
    c = proxy.connect(autocommit=True)
    with c.cursor() as cur:
        cur.execute(f"/* rwproxy:route=reader */ UPDATE {table} SET v = 99 WHERE id = 2")
    assert cluster.primary.value(f"SELECT v FROM {table} WHERE id = 2") == "99"
    c.close()


def test_transactions_run_wholly_on_the_writer(proxy, ids, table):
    c = proxy.connect(autocommit=True)
    with c.cursor() as cur:
        cur.execute("BEGIN")
        assert where(c) == ids["writer"]  # the first SELECT of the transaction
        cur.execute(f"UPDATE {table} SET v = v WHERE id = 1")
        assert where(c, f"SELECT @@server_id FROM {table} WHERE id = 1") == ids["writer"]
        cur.execute("COMMIT")
        assert where(c) in ids["readers"]
        cur.execute("START TRANSACTION")
        assert where(c) == ids["writer"]
        cur.execute("ROLLBACK")
    c.close()


def test_first_select_after_autocommit_0_lands_on_the_writer(proxy, ids):
    c = proxy.connect(autocommit=True)
    with c.cursor() as cur:
        cur.execute("SET autocommit=0")
        assert where(c) == ids["writer"]
        assert where(c) == ids["writer"]
        cur.execute("COMMIT")
        assert where(c) == ids["writer"]  # still autocommit=0: each statement opens a transaction
        cur.execute("SET autocommit=1")
        assert where(c) in ids["readers"]
    c.close()
    # PyMySQL's own default (autocommit off, set at connect time) is the same case.
    d = proxy.connect()
    assert where(d) == ids["writer"]
    d.close()


def test_read_only_transaction_runs_wholly_on_one_reader(proxy, ids):
    c = proxy.connect(autocommit=True)
    with c.cursor() as cur:
        cur.execute("START TRANSACTION READ ONLY")
        seen = {where(c) for _ in range(5)}
        assert len(seen) == 1 and seen <= ids["readers"]
        cur.execute("COMMIT")
    c.close()


def test_session_state_holds_across_servers(proxy, ids, cluster):
    other = f"other_{uuid.uuid4().hex[:8]}"
    cluster.primary.sql(f"CREATE DATABASE {other}")
    cluster.wait_replicated()
    c = proxy.connect(autocommit=True)
    probe = "SELECT @@server_id, @@time_zone, @@character_set_client, @@collation_connection, @@sql_mode, DATABASE()"
    with c.cursor() as cur:
        cur.execute("SET time_zone='+05:00'")
        cur.execute("SET NAMES latin1")
        cur.execute("SET sql_mode=''")
        cur.execute(f"USE {other}")
        cur.execute(probe)
        on_reader = cur.fetchone()
        cur.execute("/* rwproxy:route=writer */ " + probe)
        on_writer = cur.fetchone()
    assert on_reader[0] in ids["readers"] and on_writer[0] == ids["writer"]
    assert on_reader[1:] == on_writer[1:] == ("+05:00", "latin1", "latin1_swedish_ci", "", other)
    c.close()
    cluster.primary.sql(f"DROP DATABASE {other}")


def test_com_init_db_and_isolation_follow_the_session(proxy, ids, cluster, table):
    schema = table.split(".")[0]
    c = proxy.connect(autocommit=True)
    c.select_db(schema)
    with c.cursor() as cur:
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cur.execute("SELECT @@server_id, DATABASE(), @@tx_isolation")
        sid, db, iso = cur.fetchone()
    assert sid in ids["readers"] and db == schema and iso == "READ-COMMITTED"
    c.close()


def test_untrackable_set_keeps_the_session_on_the_writer(proxy, ids):
    c = proxy.connect(autocommit=True)
    assert where(c) in ids["readers"]
    with c.cursor() as cur:
        cur.execute("SET @marker = 42")
        cur.execute("SELECT @@server_id, @marker")
        assert cur.fetchone() == (ids["writer"], 42)
    assert where(c) == ids["writer"]  # from then on
    c.close()


def test_temporary_table_is_visible_to_later_reads(proxy, ids, table):
    c = proxy.connect(autocommit=True, database=table.split(".")[0])
    with c.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE tmp_rt (a INT)")
        cur.execute("INSERT INTO tmp_rt VALUES (1), (2)")
        cur.execute("SELECT COUNT(*), @@server_id FROM tmp_rt")
        assert cur.fetchone() == (2, ids["writer"])
    c.close()


def test_prepared_statements_run_on_the_writer(proxy, ids):
    import mysql.connector

    m = mysql.connector.connect(host=proxy.host, port=proxy.port, user=proxy.user, password=proxy.password, use_pure=True)
    cur = m.cursor(prepared=True)
    cur.execute("SELECT @@server_id, ?", (7,))
    assert cur.fetchall() == [(ids["writer"], 7)]
    m.close()


def test_query_rules_route_rewrite_and_block(start_proxy, ids, table, cluster):
    p = start_proxy(
        extra_toml=f"""
[[query_rules]]
rule_id = 1
match_digest = '^SELECT @@SERVER_ID,\\s?\\?$'
destination_hostgroup = 0
apply = true

[[query_rules]]
rule_id = 2
match_pattern = 'FROM legacy_name'
replace_pattern = 'FROM {table}'
apply = true

[[query_rules]]
rule_id = 3
match_pattern = '^DELETE FROM {re.escape(table)}'
error_msg = "deletes through the proxy are not allowed"
apply = true
"""
    )
    c = p.connect(autocommit=True)
    # rule 1: this digest goes to the writer; the bare SELECT @@server_id still goes to a reader
    assert where(c, "SELECT @@server_id, 5") == ids["writer"]
    assert where(c) in ids["readers"]
    # rule 2: the rewritten text ran
    with c.cursor() as cur:
        cur.execute("SELECT v FROM legacy_name WHERE id = 1")
        assert cur.fetchone()[0] >= 10
    # rule 3: blocked with the rule's message; nothing deleted
    with pytest.raises(pymysql.err.OperationalError) as e:
        with c.cursor() as cur:
            cur.execute(f"DELETE FROM {table} WHERE id = 1")
    assert e.value.args == (1148, "deletes through the proxy are not allowed")
    assert cluster.primary.value(f"SELECT COUNT(*) FROM {table} WHERE id = 1") == "1"
    assert where(c) in ids["readers"]  # the session goes on
    c.close()


def test_reads_fall_back_to_the_writer_when_no_reader_is_online(start_proxy, cluster, ids):
    from proxy.sandbox import free_port

    servers = [
        {"hostgroup_id": 0, "hostname": cluster.primary.host, "port": cluster.primary.port},
        {"hostgroup_id": 1, "hostname": "127.0.0.1", "port": free_port(), "comment": "down"},
    ]
    pair = [{"writer_hostgroup": 0, "reader_hostgroup": 1, "writer_is_also_reader": False}]
    p = start_proxy(servers=servers, replication_hostgroups=pair)
    c = p.connect(autocommit=True)
    assert where(c) == ids["writer"]
    c.close()
    # Without the fallback the read waits connect_timeout_server_max for a server of its hostgroup,
    # then gets ProxySQL's ERR 9001 naming the hostgroup (never a client-library 2003).
    strict = start_proxy(servers=servers, replication_hostgroups=pair, proxy_settings={"reader_fallback_to_writer": False},
                         extra_toml="[monitor]\nconnect_timeout_server_max = 500\n")
    c = strict.connect(autocommit=True)
    with pytest.raises(pymysql.err.OperationalError) as e:
        where(c)
    assert e.value.args[0] == 9001 and "hostgroup 1" in e.value.args[1], e.value.args
    assert where(c, "/* rwproxy:route=writer */ SELECT @@server_id") == ids["writer"]
    c.close()


def test_a_write_sent_to_an_unreachable_hostgroup_runs_nowhere(start_proxy, cluster, schema, ids):
    """The reader fallback is for provable reads only: an INSERT a rule sends to a hostgroup with no
    reachable server gets ERR 9001 naming that hostgroup, and is not run on the writer instead."""
    from proxy.sandbox import free_port

    servers = [
        {"hostgroup_id": 0, "hostname": cluster.primary.host, "port": cluster.primary.port},
        *({"hostgroup_id": 1, "hostname": r.host, "port": r.port} for r in cluster.replicas),
        {"hostgroup_id": 5, "hostname": "127.0.0.1", "port": free_port(), "comment": "nothing listens here"},
    ]
    # (writer_is_also_reader off: with the monitor's topology on, ProxySQL's default puts the writer
    # among the readers too, and a third of the reads below would land on it.)
    pair = [{"writer_hostgroup": 0, "reader_hostgroup": 1, "writer_is_also_reader": False}]
    p = start_proxy(servers=servers, replication_hostgroups=pair, extra_toml=f"""[monitor]
connect_timeout_server_max = 500

[[query_rules]]
rule_id = 1
active = true
match_digest = '^INSERT INTO `?{schema}`?\\.`?audit'
destination_hostgroup = 5
apply = true
""")
    cluster.primary.sql(f"CREATE TABLE {schema}.audit (id INT PRIMARY KEY)")
    c = p.connect(autocommit=True)
    with pytest.raises(pymysql.err.OperationalError) as e:
        with c.cursor() as cur:
            cur.execute(f"INSERT INTO {schema}.audit VALUES (1)")
    assert e.value.args[0] == 9001 and "hostgroup 5" in e.value.args[1], e.value.args
    cluster.wait_replicated()
    for server in [cluster.primary, *cluster.replicas]:
        assert server.value(f"SELECT COUNT(*) FROM {schema}.audit") == "0", server.name
    assert where(c) in ids["readers"]  # the session goes on
    c.close()


def test_explain_cli_says_where_and_why(proxy):
    out = subprocess.run(
        [__import__("sys").executable, "-m", "proxy", "explain", "--config", str(proxy.config_path), "SELECT * FROM t WHERE id = 1 FOR UPDATE"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"decision\s+route to hostgroup 0", out.stdout)
    assert "locking read" in out.stdout.lower()


@pytest.mark.slow
def test_slowly_read_results_never_stall_the_next_statement(proxy, ids):
    # Regression: when the chunk that ends a reply also fills the client's socket buffer, the
    # backend connection that sent it was paused and never resumed, so the next statement on it
    # hung. Results are larger than loopback's socket buffers so the proxy must pause its server;
    # which chunk trips the pause is timing, hence many rounds. read_timeout turns a stall into a
    # failure.
    import time

    c = proxy.connect(autocommit=True, cursorclass=pymysql.cursors.SSCursor, read_timeout=10, database="mysql")
    for i in range(30):
        hint = "/* rwproxy:route=writer */ " if i % 3 == 2 else ""
        with c.cursor() as cur:
            cur.execute(f"{hint}SELECT @@server_id, REPEAT('z', 2000) FROM seq_1_to_4000")
            rows = 0
            while batch := cur.fetchmany(400):
                rows += len(batch)
                time.sleep(0.003)
            assert rows == 4000
        server = where(c, f"{hint}SELECT @@server_id")
        assert (server == ids["writer"]) if hint else (server in ids["readers"])
    c.close()


def test_pins_end_when_their_cause_ends(proxy, ids, table):
    schema = table.split(".")[0]
    c = proxy.connect(autocommit=True, database=schema)
    with c.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE tmp_a (x INT)")
        cur.execute(f"CREATE TEMPORARY TABLE {schema}.tmp_b (x INT)")
        assert where(c) == ids["writer"]  # pinned: the temporary tables live on the writer
        cur.execute("DROP TEMPORARY TABLE tmp_a")
        assert where(c) == ids["writer"]  # tmp_b still exists
        cur.execute(f"DROP TABLE {schema}.tmp_b")
        assert where(c) in ids["readers"]  # no temporary table left: reads go to replicas again
        cur.execute(f"LOCK TABLES {table} READ")
        assert where(c, f"SELECT @@server_id FROM {table} LIMIT 1") == ids["writer"]
        cur.execute("UNLOCK TABLES")
        assert where(c) in ids["readers"]
        cur.execute("SELECT GET_LOCK('rt_lock', 1)")
        assert where(c) == ids["writer"]
        cur.execute("SELECT RELEASE_ALL_LOCKS()")
        assert where(c) in ids["readers"]
        cur.execute("SET @kept = 1")  # a user variable never says it is done with
        cur.execute("SELECT 1")
        assert where(c) == ids["writer"]
    c.close()
