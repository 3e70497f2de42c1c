"""Consistent reads (issue 11) through the splitting proxy, against a real primary and two replicas:
read-your-writes per session (causal_reads = local), across connections and proxies with the
session's token (@@last_gtid -> /* rwproxy:min_gtid=... */ or SET rwproxy_min_gtid), and a replica
that lags: reads wait for it up to causal_reads_timeout, then run on the writer. A read is stale when
the row its own (or the token's) INSERT wrote is not there.

The suite runs PAIRS insert/select pairs per connection (10 connections); bench/run_causal.py runs
the issue's 1,000 per connection and reports the `none` baseline next to it (docs/benchmarks.md)."""

from __future__ import annotations

import os
import threading
import time

import pymysql
import pytest

PAIRS = int(os.environ.get("RWPROXY_CAUSAL_PAIRS", "150"))


def _pairs(p, table: str, n: int, prepared: bool, errors: list, stale: list, waits: list, t: int) -> None:
    """One connection: INSERT a row, then SELECT it (by the id the insert got), n times. `prepared`:
    server-side prepared statements (mysql-connector's pure protocol, COM_STMT_PREPARE/EXECUTE;
    PyMySQL only has client-side ones)."""
    if prepared:
        _prepared_pairs(p, table, n, errors, stale, waits, t)
        return
    c = p.connect(autocommit=True)
    try:
        with c.cursor() as cur:
            for i in range(n):
                cur.execute(f"INSERT INTO {table} (t, i) VALUES (%s, %s)", (t, i))
                new_id = cur.lastrowid
                t0 = time.monotonic()
                cur.execute(f"SELECT i FROM {table} WHERE id = {new_id}")
                waits.append(time.monotonic() - t0)
                row = cur.fetchone()
                if row is None:
                    stale.append((t, i))
    except pymysql.err.MySQLError as e:
        errors.append(e.args)
    finally:
        c.close()


def _prepared_pairs(p, table: str, n: int, errors: list, stale: list, waits: list, t: int) -> None:
    import mysql.connector

    c = mysql.connector.connect(host=p.host, port=p.port, user="app", password="app_pw", use_pure=True, autocommit=True, ssl_disabled=True)
    try:
        cur = c.cursor(prepared=True)
        for i in range(n):
            cur.execute(f"INSERT INTO {table} (t, i) VALUES (?, ?)", (t, i))
            new_id = cur.lastrowid
            t0 = time.monotonic()
            cur.execute(f"SELECT i FROM {table} WHERE id = ?", (new_id,))
            rows = cur.fetchall()
            waits.append(time.monotonic() - t0)
            if not rows:
                stale.append((t, i))
        cur.close()
    except mysql.connector.Error as e:
        errors.append((e.errno, e.msg))
    finally:
        c.close()


def run_pairs(p, table: str, n: int = PAIRS, connections: int = 10, prepared: bool = False) -> tuple[list, list, list]:
    errors: list = []
    stale: list = []
    waits: list = []
    threads = [threading.Thread(target=_pairs, args=(p, table, n, prepared, errors, stale, waits, t)) for t in range(connections)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    return errors, stale, waits


@pytest.fixture
def table(cluster, schema) -> str:
    name = f"{schema}.rw"
    cluster.primary.sql(f"CREATE TABLE {name} (id INT AUTO_INCREMENT PRIMARY KEY, t INT, i INT)")
    cluster.wait_replicated()
    return name


def reader_share(p, cluster) -> float:
    """Share of a session's plain reads that replicas answered (causal reads must not send all to the writer)."""
    c = p.connect(autocommit=True)
    try:
        with c.cursor() as cur:
            ids = []
            for _ in range(20):
                cur.execute("SELECT @@server_id")
                ids.append(cur.fetchone()[0])
    finally:
        c.close()
    replicas = {r.server_id for r in cluster.replicas}
    return sum(1 for i in ids if i in replicas) / len(ids)


@pytest.mark.parametrize("prepared", [False, True], ids=["text", "prepared"])
def test_local_reads_see_their_own_writes(start_proxy, cluster, table, prepared):
    p = start_proxy(proxy_settings={"causal_reads": "local", "causal_reads_timeout": 5})
    errors, stale, _ = run_pairs(p, table, prepared=prepared)
    assert not errors, errors
    assert stale == [], f"{len(stale)} stale reads of {10 * PAIRS}"
    assert reader_share(p, cluster) == 1.0  # reads with nothing to wait for still go to replicas


@pytest.mark.parametrize("prepared", [False, True], ids=["text", "prepared"])
def test_the_none_baseline_is_reported(start_proxy, table, capsys, prepared):
    p = start_proxy(proxy_settings={"causal_reads": "none"})
    errors, stale, _ = run_pairs(p, table, prepared=prepared)
    assert not errors, errors
    with capsys.disabled():
        kind = "prepared" if prepared else "text"
        print(f"\ncausal_reads=none ({kind}): {len(stale)} stale reads of {10 * PAIRS} insert/select pairs (the baseline)")


@pytest.mark.parametrize("prepared", [False, True], ids=["text", "prepared"])
def test_a_lagging_replica_is_waited_for_then_skipped(start_proxy, cluster, table, prepared):
    """One replica's SQL thread stopped: reads after a write wait at most causal_reads_timeout on it,
    then run on the writer; none is stale, none waits longer."""
    lagging = cluster.replicas[0]
    timeout = 0.5
    p = start_proxy(proxy_settings={"causal_reads": "local", "causal_reads_timeout": timeout})
    lagging.sql("STOP SLAVE SQL_THREAD")
    try:
        errors, stale, waits = run_pairs(p, table, n=40, connections=4, prepared=prepared)
    finally:
        lagging.sql("START SLAVE SQL_THREAD")
    assert not errors, errors
    assert stale == []
    assert max(waits) < timeout + 1.0, max(waits)


def test_a_token_carries_a_write_to_another_connection_and_another_proxy(start_proxy, cluster, table):
    p1 = start_proxy(proxy_settings={"causal_reads": "none"})
    p2 = start_proxy(proxy_settings={"causal_reads": "none"})
    writer = p1.connect(autocommit=True)
    readers = [p1.connect(autocommit=True), p2.connect(autocommit=True)]
    stale = 0
    try:
        with writer.cursor() as w:
            for i in range(PAIRS):
                w.execute(f"INSERT INTO {table} (t, i) VALUES (99, %s)", (i,))
                new_id = w.lastrowid
                w.execute("SELECT @@last_gtid")
                token = w.fetchone()[0]
                assert token and token.count("-") == 2, token
                reader = readers[i % 2]
                with reader.cursor() as r:
                    if i % 4 < 2:  # a hint on the statement
                        r.execute(f"/* rwproxy:min_gtid={token} */ SELECT i FROM {table} WHERE id = {new_id}")
                    else:  # a session setting
                        r.execute(f"SET rwproxy_min_gtid = '{token}'")
                        r.execute(f"SELECT i FROM {table} WHERE id = {new_id}")
                    stale += r.fetchone() is None
    finally:
        writer.close()
        for r in readers:
            r.close()
    assert stale == 0


def test_a_malformed_token_is_refused_and_reads_go_on(start_proxy, cluster, table):
    p = start_proxy()
    c = p.connect(autocommit=True)
    try:
        with pytest.raises(pymysql.err.MySQLError) as e:
            with c.cursor() as cur:
                cur.execute("SET rwproxy_min_gtid = 'not a gtid'")
        assert e.value.args[0] == 1231
        with c.cursor() as cur:
            cur.execute("SELECT @@last_gtid")
            assert cur.fetchone() == ("",)  # no write yet in this session
            cur.execute("SELECT @@server_id")
            assert cur.fetchone()[0] in {r.server_id for r in cluster.replicas}
    finally:
        c.close()


def _prepared_stale(p, table: str, n: int, t: int) -> int:
    """Server-side prepared statements (mysql-connector-python's prepared cursor: COM_STMT_PREPARE,
    then COM_STMT_EXECUTE): INSERT a row, then SELECT it by its id, n times; the stale reads."""
    import mysql.connector

    c = mysql.connector.connect(host=p.host, port=p.port, user=p.user, password=p.password, autocommit=True, use_pure=True, connection_timeout=10)
    stale = 0
    try:
        ins, sel = c.cursor(prepared=True), c.cursor(prepared=True)
        for i in range(n):
            ins.execute(f"INSERT INTO {table} (t, i) VALUES (?, ?)", (t, i))
            sel.execute(f"SELECT i FROM {table} WHERE id = ?", (ins.lastrowid,))
            stale += not sel.fetchall()
    finally:
        c.close()
    return stale


def test_prepared_reads_see_their_own_writes_with_a_lagging_replica(start_proxy, cluster, table):
    """Found by bench/run_causal.py: with causal_reads = local and one replica's SQL thread stopped,
    a prepared SELECT of the row the session's prepared INSERT just wrote must not go to the lagging
    replica without waiting for it."""
    lagging = cluster.replicas[0]
    servers = [  # the lagging replica is the only reader: every read must wait for it, then run on the writer
        {"hostgroup_id": 0, "hostname": cluster.primary.host, "port": cluster.primary.port},
        {"hostgroup_id": 1, "hostname": lagging.host, "port": lagging.port},
    ]
    pair = [{"writer_hostgroup": 0, "reader_hostgroup": 1, "writer_is_also_reader": False}]
    p = start_proxy(servers=servers, replication_hostgroups=pair, proxy_settings={"causal_reads": "local", "causal_reads_timeout": 0.5})
    lagging.sql("STOP SLAVE SQL_THREAD")
    try:
        stale = _prepared_stale(p, table, 10, 1)
    finally:
        lagging.sql("START SLAVE SQL_THREAD")
    assert stale == 0, f"{stale} of 10 prepared reads did not see the session's own write"


def test_the_documented_serverless_example_reads_its_write_through_another_proxy(start_proxy, cluster, schema):
    """docs/consistency.md's example, run as written (only connect() pointed at the test proxies):
    the write's token from one proxy makes reads through another see it, with a replica stopped."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "consistency.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    cluster.primary.sql(f"CREATE TABLE {schema}.orders (id INT AUTO_INCREMENT PRIMARY KEY, customer_id INT, total DECIMAL(10,2));"
                        f"CREATE TABLE {schema}.order_items (order_id INT)")
    cluster.wait_replicated()
    writer_proxy = start_proxy(proxy_settings={"causal_reads": "none"})
    reader_proxy = start_proxy(proxy_settings={"causal_reads": "none", "causal_reads_timeout": 0.5})
    ns: dict = {}
    exec(code, ns)  # noqa: S102 - our own documentation

    def through(p):
        return lambda: p.connect(database=schema, autocommit=True)

    lagging = cluster.replicas[0]
    lagging.sql("STOP SLAVE SQL_THREAD")
    try:
        for _ in range(10):
            ns["connect"] = through(writer_proxy)
            made = ns["create_order"](7, "12.50")
            assert re.fullmatch(r"\d+-\d+-\d+", made["token"]), made
            ns["connect"] = through(reader_proxy)
            row = ns["get_order"](made["order_id"], made["token"])
            assert row is not None and row[0] == made["order_id"], f"the read through the other proxy missed order {made['order_id']}"
            listed = ns["list_orders"](7, made["token"])
            assert made["order_id"] in [row[0] for row in listed[:-1]]
        with pytest.raises(ValueError):
            ns["get_order"](1, "0-1-1 */ DROP TABLE orders; /*")
    finally:
        lagging.sql("START SLAVE SQL_THREAD")
