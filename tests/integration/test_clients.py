"""Real clients work unchanged through the proxy, and see what they would see talking to the primary.

Every test here drives a real client (the `mariadb` CLI, `mariadb-dump`, PyMySQL, mysql-connector,
asyncmy) twice — through the proxy and straight to the primary — and compares what the user sees:
rows, column metadata, error code + SQLSTATE + message. Writes made through the proxy are checked
on the primary directly. Reads that follow writes wait for the replicas first, so these tests stay
valid once the proxy routes reads to hostgroup 1.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import hashlib
import io
import os
import struct
import subprocess
import uuid
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pymysql.cursors
import pytest

from tests.rawclient import Raw
from pymysql.constants import CLIENT

from proxy.sandbox import default_servers, free_port

MARIADB = "mariadb"
MARIADB_DUMP = "mariadb-dump"


# -- helpers ---------------------------------------------------------------------------------------


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def _pconnect(host: str, port: int, **kw: Any) -> pymysql.connections.Connection:
    args = {"host": host, "port": port, "user": "app", "password": "app_pw", "autocommit": True, "connect_timeout": 10}
    return pymysql.connect(**(args | kw))


def _both(proxy: Any, cluster: Any, **kw: Any) -> tuple[pymysql.connections.Connection, pymysql.connections.Connection]:
    """(through the proxy, direct to the primary), same options."""
    return _pconnect(proxy.host, proxy.port, **kw), _pconnect(cluster.primary.host, cluster.primary.port, **kw)


def _connector(host: str, port: int, **kw: Any) -> Any:
    args = {
        "host": host,
        "port": port,
        "user": "app",
        "password": "app_pw",
        "use_pure": True,
        "autocommit": True,
        "connection_timeout": 10,
    }
    return mysql.connector.connect(**(args | kw))


def _cli(server: Any, *args: str, stdin: bytes | None = None, user: str = "app", password: str = "app_pw", timeout: float = 60) -> subprocess.CompletedProcess:
    """The mariadb CLI against `server` (the proxy handle or a cluster server: anything with host/port)."""
    cmd = [MARIADB, "--no-defaults", "--default-character-set=utf8mb4", f"-h{server.host}", f"-P{server.port}", f"-u{user}", f"-p{password}", *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)


def _cli_both(proxy: Any, cluster: Any, *args: str, stdin: bytes | None = None) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    return _cli(proxy, *args, stdin=stdin), _cli(cluster.primary, *args, stdin=stdin)


def _results(cur: Any) -> list[tuple[Any, Any, int]]:
    """Every result of the last execute: (description, rows, rowcount)."""
    out = []
    while True:
        out.append((cur.description, cur.fetchall() if cur.description else None, cur.rowcount))
        if not cur.nextset():
            return out


def _query_both(pconn: Any, dconn: Any, sql: str, args: Any = None) -> tuple[Any, Any]:
    got = []
    for conn in (pconn, dconn):
        with conn.cursor() as cur:
            cur.execute(sql, args)
            got.append(_results(cur))
    return got[0], got[1]


# -- the mariadb CLI -------------------------------------------------------------------------------


def test_cli_two_selects_equal_direct(proxy, cluster):
    via, direct = _cli_both(proxy, cluster, "-e", "select 1; select 2")
    assert via.returncode == 0, via.stderr
    assert via.stdout == b"1\n1\n2\n2\n"
    assert (via.stdout, via.stderr, via.returncode) == (direct.stdout, direct.stderr, direct.returncode)


def test_cli_show_databases_equal_direct(proxy, cluster, schema):
    cluster.wait_replicated()
    via, direct = _cli_both(proxy, cluster, "-e", "SHOW DATABASES")
    assert via.returncode == 0, via.stderr
    assert schema.encode() in via.stdout.split()
    assert via.stdout == direct.stdout


def test_cli_use_then_select_database(proxy, cluster, schema):
    cluster.wait_replicated()
    via, direct = _cli_both(proxy, cluster, "-e", f"USE {schema}; SELECT DATABASE(); USE mysql; SELECT DATABASE()")
    assert via.returncode == 0, via.stderr
    assert via.stdout == f"DATABASE()\n{schema}\nDATABASE()\nmysql\n".encode()
    assert via.stdout == direct.stdout


def test_cli_batch_output_equal_direct(proxy, cluster, schema, direct):
    with direct.cursor() as cur:
        cur.execute(f"CREATE TABLE `{schema}`.t (id INT PRIMARY KEY, s VARCHAR(50), b VARBINARY(20), n INT NULL, d DECIMAL(10,3), ts DATETIME(6))")
        cur.execute(
            f"INSERT INTO `{schema}`.t VALUES (1, 'tab\\there', X'00FF0A09', NULL, 1.5, '2024-02-29 12:34:56.789012'),"
            "(2, 'héllo ✓ 😀', NULL, -7, -0.001, NULL), (3, '', '', 0, 0, '1970-01-01 00:00:01')"
        )
    cluster.wait_replicated()
    sql = f"SELECT * FROM `{schema}`.t ORDER BY id; SELECT COUNT(*), SUM(n) FROM `{schema}`.t"
    via, direct_run = _cli_both(proxy, cluster, "--batch", "-e", sql)
    assert via.returncode == 0, via.stderr
    lines = via.stdout.decode("utf-8", "replace").splitlines()
    assert lines[0] == "id\ts\tb\tn\td\tts"
    assert lines[2].startswith("2\théllo ✓ 😀\tNULL\t-7\t-0.001")
    assert via.stdout == direct_run.stdout
    # -N (no headers) and --raw, too
    via, direct_run = _cli_both(proxy, cluster, "--batch", "-N", "--raw", "-e", sql)
    assert via.returncode == 0 and via.stdout == direct_run.stdout


def test_cli_sql_error_equal_direct(proxy, cluster, schema):
    cluster.wait_replicated()
    via, direct = _cli_both(proxy, cluster, "-e", f"SELECT 1; SELECT * FROM `{schema}`.missing")
    assert via.returncode == 1
    assert via.stderr.decode().strip().splitlines()[-1] == f"ERROR 1146 (42S02) at line 1: Table '{schema}.missing' doesn't exist"
    assert (via.stdout, via.stderr, via.returncode) == (direct.stdout, direct.stderr, direct.returncode)


def test_cli_reads_script_from_stdin(proxy, cluster, schema, direct):
    script = (
        f"CREATE TABLE `{schema}`.s (i INT);\n"
        "DELIMITER //\n"
        f"CREATE PROCEDURE `{schema}`.fill(n INT) BEGIN DECLARE k INT DEFAULT 0; "
        f"WHILE k < n DO INSERT INTO `{schema}`.s VALUES (k); SET k = k + 1; END WHILE; "
        f"SELECT COUNT(*), SUM(i) FROM `{schema}`.s; END//\n"
        "DELIMITER ;\n"
        f"CALL `{schema}`.fill(100);\n"
    ).encode()
    via = _cli(proxy, "--batch", "-N", stdin=script)
    assert via.returncode == 0, via.stderr
    assert via.stdout == b"100\t4950\n"
    with direct.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{schema}`.s")
        assert cur.fetchone()[0] == 100


# -- mariadb-dump through the proxy, restore through the proxy --------------------------------------


def _dump(server: Any, schema: str) -> subprocess.CompletedProcess:
    cmd = [MARIADB_DUMP, "--no-defaults", f"-h{server.host}", f"-P{server.port}", "-uapp", "-papp_pw", "--routines", "--triggers", schema]
    return subprocess.run(cmd, capture_output=True, timeout=120)


def _comparable_dump(text: bytes) -> list[bytes]:
    return [line for line in text.splitlines() if not line.startswith((b"-- Dump completed on", b"-- Host:"))]


def _populate_for_dump(direct: Any, schema: str) -> None:
    with direct.cursor() as cur:
        cur.execute(f"USE `{schema}`")
        cur.execute(
            "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, price DECIMAL(12,2) NULL,"
            " payload LONGBLOB NULL, created DATETIME(6) NULL, tags JSON NULL, KEY (name))"
        )
        cur.execute("CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, item_id INT, note TEXT)")
        cur.execute("CREATE TRIGGER items_ai AFTER INSERT ON items FOR EACH ROW INSERT INTO audit (item_id, note) VALUES (NEW.id, CONCAT('new ', NEW.name))")
        cur.execute("CREATE VIEW cheap AS SELECT id, name, price FROM items WHERE price < 10")
        cur.execute("CREATE PROCEDURE item_count() SELECT COUNT(*) FROM items")
        rows = []
        for i in range(400):
            payload = None if i % 7 == 0 else bytes((i + k) % 256 for k in range(i % 300)) + b"\x00'\"\\\n\r\x1a"
            price = None if i % 5 == 0 else decimal.Decimal(i) / 4
            created = None if i % 11 == 0 else datetime.datetime(2020, 1, 1) + datetime.timedelta(seconds=i * 3607, microseconds=i)
            tags = None if i % 3 else f'{{"i": {i}, "s": "caf\\u00e9"}}'
            rows.append((f"item {i} ✓ '\"\\", price, payload, created, tags))
        cur.executemany("INSERT INTO items (name, price, payload, created, tags) VALUES (%s, %s, %s, %s, %s)", rows)


def _schema_fingerprint(direct: Any, schema: str) -> dict[str, Any]:
    fp: dict[str, Any] = {}
    with direct.cursor() as cur:
        for table in ("items", "audit"):
            cur.execute(f"CHECKSUM TABLE `{schema}`.`{table}`")
            fp[f"checksum {table}"] = cur.fetchone()[1]
            cur.execute(f"SELECT * FROM `{schema}`.`{table}` ORDER BY id")
            fp[f"rows {table}"] = cur.fetchall()
        cur.execute(f"SELECT * FROM `{schema}`.cheap ORDER BY id")
        fp["view rows"] = cur.fetchall()
        cur.execute(
            "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME", (schema,)
        )
        fp["tables"] = cur.fetchall()
        cur.execute("SELECT ROUTINE_NAME, ROUTINE_DEFINITION FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s", (schema,))
        fp["routines"] = cur.fetchall()
        cur.execute("SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s", (schema,))
        fp["triggers"] = cur.fetchall()
    return fp


def test_dump_and_restore_through_proxy(proxy, cluster, schema, direct, tmp_path):
    _populate_for_dump(direct, schema)
    cluster.wait_replicated()

    via = _dump(proxy, schema)
    assert via.returncode == 0, via.stderr
    straight = _dump(cluster.primary, schema)
    assert straight.returncode == 0, straight.stderr
    assert b"CREATE TABLE `items`" in via.stdout and b"INSERT INTO `items` VALUES" in via.stdout
    assert _comparable_dump(via.stdout) == _comparable_dump(straight.stdout)

    dump_file = tmp_path / "dump.sql"
    dump_file.write_bytes(via.stdout)
    restored = f"{schema}_r"
    with direct.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{restored}`")
    try:
        res = _cli(proxy, restored, stdin=dump_file.read_bytes(), timeout=120)
        assert res.returncode == 0, res.stderr
        original, copy = _schema_fingerprint(direct, schema), _schema_fingerprint(direct, restored)
        assert len(original["rows items"]) == 400 and len(original["rows audit"]) == 400
        assert original == copy
    finally:
        with direct.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{restored}`")


# -- PyMySQL ---------------------------------------------------------------------------------------


def test_handshake_advertises_the_primary_version(proxy, cluster):
    pconn, dconn = _both(proxy, cluster)
    try:
        assert pconn.get_server_info() == dconn.get_server_info()
        assert "MariaDB" in pconn.get_server_info() or cluster.flavor == "mysql"
        assert pconn.server_charset == dconn.server_charset
    finally:
        pconn.close()
        dconn.close()


def test_transaction_and_writes_run_on_the_primary(proxy, cluster, schema, direct):
    with direct.cursor() as cur:
        cur.execute(f"CREATE TABLE `{schema}`.w (i INT)")
    conn = proxy.connect(database=schema, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT @@server_id, @@port, @@read_only")
            assert cur.fetchone() == (cluster.primary.server_id, cluster.primary.port, 0)
            cur.execute("INSERT INTO w VALUES (1), (2)")
            with direct.cursor() as dcur:  # not committed yet: invisible outside
                dcur.execute(f"SELECT COUNT(*) FROM `{schema}`.w")
                assert dcur.fetchone() == (0,)
            cur.execute("COMMIT")
            cur.execute("BEGIN")
            cur.execute("INSERT INTO w VALUES (3)")
            cur.execute("ROLLBACK")
    finally:
        conn.close()
    with direct.cursor() as cur:
        cur.execute(f"SELECT i FROM `{schema}`.w ORDER BY i")
        assert cur.fetchall() == ((1,), (2,))


TEXT_QUERIES = [
    "SELECT 1, -1, 18446744073709551615, -9223372036854775808, 3.14159, 1e300, NULL, '', 'héllo ✓ 😀', X'00FF10', b'101'",
    "SELECT DATE '2024-02-29', TIMESTAMP '2024-01-02 03:04:05.123456', TIME '-838:59:59', CAST(12345.6789 AS DECIMAL(20,6)), YEAR(NOW()) > 2000",
    "SELECT JSON_OBJECT('a', 1, 'b', JSON_ARRAY(1, 2, NULL)), CAST(-5 AS SIGNED), CAST(5 AS UNSIGNED), 0.1 + 0.2, REPEAT('z', 70000)",
    "SELECT @@version, @@version_comment, @@character_set_client, @@character_set_results, @@collation_connection, @@autocommit, @@sql_mode, @@time_zone, @@max_allowed_packet",
    "SELECT 1 FROM DUAL WHERE 1 = 0",
    "SHOW COLLATION LIKE 'utf8mb4_bin'",
    "SELECT seq, seq * seq, IF(seq % 3, NULL, CONCAT('r', seq)) FROM seq_1_to_500",
    "SELECT * FROM typed ORDER BY id",
    "SELECT id, COUNT(*) OVER (), SUM(n) OVER (ORDER BY id) FROM typed ORDER BY id",
    "DO 1",
    "SET @a = 42",
]


def test_pymysql_text_queries_equal_direct(proxy, cluster, schema, direct):
    with direct.cursor() as cur:
        cur.execute(f"CREATE TABLE `{schema}`.typed (id INT PRIMARY KEY, n BIGINT NULL, f DOUBLE, e ENUM('a','b'), st SET('x','y'), bi BIT(12), t TEXT, g VARBINARY(16))")
        cur.execute(
            f"INSERT INTO `{schema}`.typed VALUES (1, NULL, 1.25, 'a', 'x,y', b'101010101010', CONCAT('long ', REPEAT('t', 300)), X'DEADBEEF'),"
            "(2, -3, -0.0, 'b', '', 0, NULL, NULL), (3, 9007199254740993, 1e-300, NULL, 'y', 1, '', '')"
        )
    cluster.wait_replicated()
    pconn, dconn = _both(proxy, cluster, database=schema)
    try:
        for sql in TEXT_QUERIES:
            via, straight = _query_both(pconn, dconn, sql)
            assert via == straight, sql
        # warnings belong to the statement before
        for conn in (pconn, dconn):
            with conn.cursor() as cur:
                cur.execute("SELECT 1/0")
                assert cur.fetchall() == ((None,),)
                cur.execute("SHOW WARNINGS")
                assert cur.fetchall() == (("Warning", 1365, "Division by 0"),)
    finally:
        pconn.close()
        dconn.close()


def test_pymysql_writes_affected_rows_and_insert_ids(proxy, cluster, schema, direct):
    for flags in (0, CLIENT.FOUND_ROWS):
        with direct.cursor() as cur:
            for table in ("p", "d"):
                cur.execute(f"DROP TABLE IF EXISTS `{schema}`.{table}")
                cur.execute(f"CREATE TABLE `{schema}`.{table} (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        pconn, dconn = _both(proxy, cluster, database=schema, client_flag=flags)
        try:
            seen = []
            for conn, table in ((pconn, "p"), (dconn, "d")):
                with conn.cursor() as cur:
                    steps = []
                    cur.execute(f"INSERT INTO {table} (v) VALUES (1), (2), (3)")
                    steps.append((cur.rowcount, cur.lastrowid))
                    cur.execute(f"UPDATE {table} SET v = 2 WHERE v >= 2")  # one changed, two matched
                    steps.append((cur.rowcount, cur._result.message))
                    cur.execute(f"DELETE FROM {table} WHERE v = 2")
                    steps.append((cur.rowcount,))
                    cur.execute(f"INSERT INTO {table} (v) VALUES (9)")
                    steps.append((cur.rowcount, cur.lastrowid))
                    cur.execute("SELECT LAST_INSERT_ID(), ROW_COUNT()")
                    steps.append(cur.fetchone())
                    seen.append(steps)
            assert seen[0] == seen[1], f"client_flag={flags}"
            assert seen[0][0] == (3, 1)
            assert seen[0][1][0] == (2 if flags else 1)
            assert seen[0][1][1].endswith(b"Rows matched: 2  Changed: 1  Warnings: 0")
        finally:
            pconn.close()
            dconn.close()
    with direct.cursor() as cur:
        cur.execute(f"SELECT v FROM `{schema}`.p ORDER BY id")
        assert cur.fetchall() == ((1,), (9,))


def test_pymysql_load_data_local_infile(proxy, cluster, schema, direct, tmp_path):
    n = 20000
    path = tmp_path / "rows.tsv"
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            s = "\\N" if i % 13 == 0 else f"row {i} ✓ \\t esc"
            f.write(f"{i}\t{s}\t{i * 1.5}\n")
    ddl = "CREATE TABLE `{}`.`{}` (id INT PRIMARY KEY, s VARCHAR(64) NULL, x DOUBLE)"
    with direct.cursor() as cur:
        cur.execute(ddl.format(schema, "via"))
        cur.execute(ddl.format(schema, "straight"))
    pconn, dconn = _both(proxy, cluster, database=schema, local_infile=True)
    try:
        counts = []
        for conn, table in ((pconn, "via"), (dconn, "straight")):
            with conn.cursor() as cur:
                counts.append(cur.execute(f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table}`", (str(path),)))
        assert counts == [n, n]
        # the session is still usable afterwards
        with pconn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        pconn.close()
        dconn.close()
    with direct.cursor() as cur:
        cur.execute(f"CHECKSUM TABLE `{schema}`.via, `{schema}`.straight")
        (_, a), (_, b) = cur.fetchall()
        assert a == b and a
        cur.execute(f"SELECT COUNT(*), COUNT(s) FROM `{schema}`.via")
        assert cur.fetchone() == (n, n - len(range(0, n, 13)))


def test_pymysql_load_data_local_infile_missing_file(proxy, cluster, schema, direct):
    with direct.cursor() as cur:
        cur.execute(f"CREATE TABLE `{schema}`.t (i INT)")
    cluster.wait_replicated()
    conn = proxy.connect(database=schema, local_infile=True, autocommit=True)
    try:
        with conn.cursor() as cur:
            with pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute("LOAD DATA LOCAL INFILE '/nonexistent/file.tsv' INTO TABLE t")
            assert info.value.args[0] == 1017 or "No such file" in str(info.value)
            # PyMySQL sent an empty file; the server replied; the session goes on
            cur.execute("SELECT COUNT(*) FROM t")
            assert cur.fetchone() == (0,)
    finally:
        conn.close()


def test_pymysql_multi_statements(proxy, cluster, schema, direct):
    with direct.cursor() as cur:
        cur.execute(f"CREATE TABLE `{schema}`.m (i INT)")
    sql = "SELECT 1; SELECT 'a', 'b' UNION ALL SELECT 'c', NULL; INSERT INTO m VALUES (1), (2); DO 1; SELECT COUNT(*) FROM m; SELECT 3"
    pconn, dconn = _both(proxy, cluster, database=schema, client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        with pconn.cursor() as cur:
            cur.execute(sql)
            via = _results(cur)
            cur.execute("SELECT 'after'")
            assert cur.fetchall() == (("after",),)
        with direct.cursor() as cur:
            cur.execute(f"DELETE FROM `{schema}`.m")
        with dconn.cursor() as cur:
            cur.execute(sql)
            straight = _results(cur)
    finally:
        pconn.close()
        dconn.close()
    assert [r[1] for r in via] == [((1,),), (("a", "b"), ("c", None)), None, None, ((2,),), ((3,),)]
    assert via == straight


def test_pymysql_multi_statements_error_midway(proxy, cluster, schema):
    sql = "SELECT 1; SELECT * FROM no_such_table; SELECT 3"
    pconn, dconn = _both(proxy, cluster, database=schema, client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        errors = []
        for conn in (pconn, dconn):
            with conn.cursor() as cur:
                cur.execute(sql)
                assert cur.fetchall() == ((1,),)
                with pytest.raises(pymysql.err.ProgrammingError) as info:
                    cur.nextset()
                errors.append(info.value.args)
                cur.execute("SELECT 'still here'")
                assert cur.fetchall() == (("still here",),)
        assert errors[0][0] == 1146
        assert errors[0] == errors[1]
    finally:
        pconn.close()
        dconn.close()


def test_pymysql_call_procedure_two_result_sets(proxy, cluster, schema, direct):
    with direct.cursor() as cur:
        cur.execute(f"CREATE TABLE `{schema}`.c (i INT)")
        cur.execute(f"INSERT INTO `{schema}`.c VALUES (1), (2), (3)")
        cur.execute(f"CREATE PROCEDURE `{schema}`.two(IN lim INT) BEGIN SELECT i FROM c WHERE i <= lim ORDER BY i; SELECT COUNT(*) AS n, 'x' AS tag FROM c; END")
        cur.execute(f"CREATE PROCEDURE `{schema}`.ins(IN v INT) BEGIN INSERT INTO c VALUES (v); SELECT v * 2 AS doubled; END")
    cluster.wait_replicated()
    pconn, dconn = _both(proxy, cluster, database=schema)
    try:
        via, straight = _query_both(pconn, dconn, "CALL two(%s)", (2,))
        assert [r[1] for r in via] == [((1,), (2,)), ((3, "x"),), None]
        assert via == straight
        with pconn.cursor() as cur:
            cur.callproc("ins", (10,))
            assert cur.fetchall() == ((20,),)
            while cur.nextset():
                pass
            cluster.wait_replicated()
            cur.execute("SELECT COUNT(*) FROM c WHERE i = 10")
            assert cur.fetchone() == (1,)
    finally:
        pconn.close()
        dconn.close()
    with direct.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{schema}`.c WHERE i = 10")
        assert cur.fetchone() == (1,)


def test_pymysql_sscursor_streams_many_rows(proxy, cluster, schema):
    conn = proxy.connect(database=schema, cursorclass=pymysql.cursors.SSCursor, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT seq, REPEAT('y', seq % 200) FROM seq_1_to_200000")
            count = total = chars = 0
            while True:
                rows = cur.fetchmany(5000)
                if not rows:
                    break
                for seq, s in rows:
                    count += 1
                    total += seq
                    chars += len(s)
        assert (count, total) == (200000, 200000 * 200001 // 2)
        assert chars == sum(i % 200 for i in range(1, 200001))
        conn.ping(reconnect=False)
        with conn.cursor() as cur:
            cur.execute("SELECT 'next'")
            assert list(cur.fetchall()) == [("next",)]
    finally:
        conn.close()


def test_pymysql_sscursor_abandoned_midway(proxy, cluster, schema):
    """Closing an unbuffered cursor early drains the rest; the session carries on."""
    conn = proxy.connect(database=schema, cursorclass=pymysql.cursors.SSCursor, autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute("SELECT seq FROM seq_1_to_100000")
        assert list(cur.fetchmany(10)) == [(i,) for i in range(1, 11)]
        cur.close()
        with conn.cursor() as cur:
            cur.execute("SELECT 7")
            assert list(cur.fetchall()) == [(7,)]
    finally:
        conn.close()


def test_pymysql_select_db_and_ping(proxy, cluster, schema):
    cluster.wait_replicated()
    conn = proxy.connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT DATABASE()")
            assert cur.fetchone() == (None,)
        conn.select_db(schema)
        with conn.cursor() as cur:
            cur.execute("SELECT DATABASE()")
            assert cur.fetchone() == (schema,)
        with pytest.raises(pymysql.err.OperationalError) as info:
            conn.select_db(f"{schema}_missing")
        assert info.value.args == (1049, f"Unknown database '{schema}_missing'")
        with conn.cursor() as cur:
            cur.execute("SELECT DATABASE()")
            assert cur.fetchone() == (schema,)
        for _ in range(3):
            conn.ping(reconnect=False)
        assert conn.open
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()


def test_connection_id_is_an_integer(proxy, cluster):
    """The proxy's thread id is its own, not the server's: only the type can be compared."""
    pconn, dconn = _both(proxy, cluster)
    try:
        seen = []
        for conn in (pconn, dconn):
            with conn.cursor() as cur:
                cur.execute("SELECT CONNECTION_ID()")
                (value,) = cur.fetchone()
                seen.append((type(value), cur.description[0][1:]))
                assert value > 0
        assert seen[0] == seen[1]
        assert seen[0][0] is int
        assert isinstance(pconn.thread_id(), int) and pconn.thread_id() > 0
    finally:
        pconn.close()
        dconn.close()


# -- mysql-connector: change user, reset connection, statistics, prepared statements -----------------


def test_connector_change_user(proxy, cluster, schema):
    cluster.wait_replicated()
    seen = []
    for server in (proxy, cluster.primary):
        conn = _connector(server.host, server.port)
        try:
            cur = conn.cursor()
            cur.execute("SET @v = 'before'")
            cur.execute("SELECT @v, DATABASE()")
            before = cur.fetchall()
            cur.close()
            conn.cmd_change_user(username="app", password="app_pw", database=schema)
            cur = conn.cursor()
            cur.execute("SELECT @v, DATABASE(), CURRENT_USER()")
            after = cur.fetchall()
            cur.close()
            seen.append((before, after))
        finally:
            conn.close()
    assert seen[0] == ([("before", None)], [(None, schema, "app@%")])
    assert seen[0] == seen[1]


def test_connector_change_user_unknown_user(proxy, cluster):
    errors = []
    for server in (proxy, cluster.primary):
        conn = _connector(server.host, server.port)
        try:
            with pytest.raises(mysql.connector.Error) as info:
                conn.cmd_change_user(username="nobody", password="x")
            errors.append((info.value.errno, info.value.sqlstate, info.value.msg))
        finally:
            conn.close()
    assert errors[0] == (1045, "28000", "Access denied for user 'nobody'@'127.0.0.1' (using password: YES)")
    assert errors[0] == errors[1]


def test_connector_change_user_wrong_password_keeps_session_like_server(proxy, cluster):
    """MariaDB answers a failed COM_CHANGE_USER with ERR 1045 and keeps the session as it was."""
    seen = []
    for server in (proxy, cluster.primary):
        conn = _connector(server.host, server.port)
        try:
            cur = conn.cursor()
            cur.execute("SET @keep = 1")
            cur.close()
            with pytest.raises(mysql.connector.Error) as info:
                conn.cmd_change_user(username="app", password="wrong")
            err = (info.value.errno, info.value.sqlstate, info.value.msg)
            try:
                cur = conn.cursor()
                cur.execute("SELECT 'usable'")
                after: Any = cur.fetchall()
                cur.close()
            except mysql.connector.Error as e:
                after = ("error", e.errno, e.msg)
            seen.append((err, after))
        finally:
            conn.close()
    assert seen[0][0] == (1045, "28000", "Access denied for user 'app'@'127.0.0.1' (using password: YES)")
    assert seen[0] == seen[1]


def test_connector_reset_connection(proxy, cluster, schema):
    cluster.wait_replicated()
    seen = []
    for server in (proxy, cluster.primary):
        conn = _connector(server.host, server.port, database=schema)
        try:
            cur = conn.cursor()
            cur.execute("SET @v = 5, SESSION sql_mode = 'ANSI_QUOTES'")
            cur.execute("CREATE TEMPORARY TABLE tmp_reset (i INT)")
            cur.close()
            conn.cmd_reset_connection()
            cur = conn.cursor()
            cur.execute("SELECT @v, DATABASE(), @@SESSION.sql_mode = @@GLOBAL.sql_mode")
            after = cur.fetchall()
            cur.close()
            cur = conn.cursor()
            try:
                cur.execute("SELECT * FROM tmp_reset")
                cur.fetchall()
                temp_gone = False
            except mysql.connector.Error as e:
                temp_gone = e.errno == 1146
            cur.close()
            conn.reset_session(user_variables={"w": 3})
            cur = conn.cursor()
            cur.execute("SELECT @w, @v")
            after_reset_session = cur.fetchall()
            cur.close()
            seen.append((after, temp_gone, after_reset_session))
        finally:
            conn.close()
    assert seen[0] == ([(None, schema, 1)], True, [(3, None)])
    assert seen[0] == seen[1]


def test_connector_statistics(proxy, cluster):
    stats = []
    for server in (proxy, cluster.primary):
        conn = _connector(server.host, server.port)
        try:
            stats.append(conn.cmd_statistics())
            cur = conn.cursor()
            cur.execute("SELECT 1")
            assert cur.fetchall() == [(1,)]
            cur.close()
        finally:
            conn.close()
    via, straight = stats
    assert set(via) == set(straight)
    assert {"Uptime", "Threads", "Questions"} <= set(via)
    assert isinstance(via["Uptime"], int) and via["Uptime"] > 0
    assert {k: type(v) for k, v in via.items()} == {k: type(v) for k, v in straight.items()}


def test_connector_prepared_statements_equal_direct(proxy, cluster, schema, direct):
    ddl = (
        "CREATE TABLE `{}`.`{}` (id INT AUTO_INCREMENT PRIMARY KEY, n INT NULL, s VARCHAR(100) NULL, b MEDIUMBLOB NULL,"
        " dt DATETIME(6) NULL, d DATE NULL, dec_ DECIMAL(20,6) NULL, f DOUBLE NULL, big BIGINT UNSIGNED NULL)"
    )
    with direct.cursor() as cur:
        cur.execute(ddl.format(schema, "p"))
        cur.execute(ddl.format(schema, "d"))
    rows = [
        (1, "a", b"\x00\x01\xff", datetime.datetime(2024, 2, 29, 23, 59, 59, 999999), datetime.date(1999, 12, 31), decimal.Decimal("12345678.123456"), 1.5, 2**64 - 1),
        (None, None, None, None, None, None, None, None),
        (-7, "héllo ✓ 😀", bytes(range(256)), datetime.datetime(1970, 1, 1, 0, 0, 1), datetime.date(2000, 1, 1), decimal.Decimal("-0.000001"), -1e-300, 0),
        (0, "", b"", datetime.datetime(2038, 1, 19, 3, 14, 8, 1), datetime.date(9999, 12, 31), decimal.Decimal("0"), 0.0, 1),
    ]
    results = []
    for server, table in ((proxy, "p"), (cluster.primary, "d")):
        conn = _connector(server.host, server.port, database=schema)
        try:
            cur = conn.cursor(prepared=True)
            insert = f"INSERT INTO {table} (n, s, b, dt, d, dec_, f, big) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            ids = []
            for r in rows:
                cur.execute(insert, r)
                ids.append((cur.rowcount, cur.lastrowid))
            # a long parameter sent with COM_STMT_SEND_LONG_DATA (no reply from the server)
            big = os.urandom(300_000)
            cur.execute(insert, (99, "long", io.BytesIO(big), None, None, None, None, None))
            ids.append((cur.rowcount, cur.lastrowid))
            cluster.wait_replicated()
            cur.execute(f"SELECT * FROM {table} WHERE id > ? AND (n IS NULL OR n <> ?) ORDER BY id", (0, 99))
            selected = cur.fetchall()
            description = cur.description
            cur.execute(f"SELECT LENGTH(b), SHA2(b, 256) FROM {table} WHERE n = ?", (99,))
            long_row = cur.fetchall()
            cur.execute(f"SELECT b FROM {table} WHERE n = ?", (99,))
            assert cur.fetchall() == [(big,)]
            cur.close()
            results.append((ids, selected, description, long_row, big))
        finally:
            conn.close()
    (ids_p, sel_p, desc_p, long_p, big_p), (ids_d, sel_d, desc_d, long_d, big_d) = results
    assert ids_p == ids_d == [(1, i) for i in range(1, 6)]
    assert [tuple(r[1:]) for r in sel_p] == [tuple(r) for r in rows]
    assert sel_p == sel_d
    assert desc_p == desc_d
    assert long_p == [(300_000, hashlib.sha256(big_p).hexdigest())]
    assert long_d == [(300_000, hashlib.sha256(big_d).hexdigest())]


def test_connector_prepared_statement_reused_then_closed(proxy, cluster, schema, direct):
    with direct.cursor() as cur:
        cur.execute(f"CREATE TABLE `{schema}`.r (id INT PRIMARY KEY, v VARCHAR(20))")
    conn = _connector(proxy.host, proxy.port, database=schema)
    try:
        cur = conn.cursor(prepared=True)
        for i in range(300):
            cur.execute("INSERT INTO r VALUES (?, ?)", (i, f"v{i}"))
        stmt = dict(cur._prepared)  # same statement: prepared once, executed 300 times
        for i in range(0, 300, 7):
            cur.execute("INSERT INTO r VALUES (?, ?)", (1000 + i, None))
        cluster.wait_replicated()
        for i in (0, 150, 299):
            cur.execute("SELECT v FROM r WHERE id = ?", (i,))
            assert cur.fetchall() == [(f"v{i}",)]
        # COM_STMT_RESET on a live statement is answered with OK
        conn.cmd_stmt_reset(cur._prepared["statement_id"])
        cur.execute("SELECT COUNT(*) FROM r WHERE id >= ?", (1000,))
        assert cur.fetchall() == [(len(range(0, 300, 7)),)]
        last = dict(cur._prepared)
        cur.close()  # COM_STMT_CLOSE: no reply
        # Both statements are gone on the server (the connector closed the INSERT when it prepared
        # the next one): executing their ids again is ER_UNKNOWN_STMT_HANDLER.
        for gone, data in ((stmt, (1, "x")), (last, (1000,))):
            with pytest.raises(mysql.connector.Error) as info:
                conn.cmd_stmt_execute(gone["statement_id"], data=data, parameters=gone["parameters"])
            assert info.value.errno == 1243
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM r")
        assert cur.fetchall() == [(300 + len(range(0, 300, 7)),)]
        cur.close()
    finally:
        conn.close()
    with direct.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{schema}`.r")
        assert cur.fetchone() == (300 + len(range(0, 300, 7)),)


def test_connector_prepared_statement_error(proxy, cluster, schema):
    errors = []
    for server in (proxy, cluster.primary):
        conn = _connector(server.host, server.port, database=schema)
        try:
            cur = conn.cursor(prepared=True)
            with pytest.raises(mysql.connector.Error) as info:
                cur.execute("SELECT * FROM missing_table WHERE id = ?", (1,))
            errors.append((info.value.errno, info.value.sqlstate, info.value.msg))
            cur.execute("SELECT ? + 1", (41,))
            assert cur.fetchall() == [(42,)]
            cur.close()
        finally:
            conn.close()
    assert errors[0][:2] == (1146, "42S02")
    assert errors[0] == errors[1]


# -- COM_FIELD_LIST (no driver here exposes it: speak it by hand) -----------------------------------


def _field_list(host: str, port: int, database: str, table: str) -> list[bytes]:
    raw = Raw(host, port)
    try:
        raw.login("app", "app_pw", database)
        raw.send_packet(b"\x04" + table.encode() + b"\0", 0)
        packets = []
        while True:
            _, payload = raw.expect_packet()
            if payload[0] == 0xFF:
                packets.append(payload)
                break
            if payload[0] == 0xFE and len(payload) < 9:
                break
            packets.append(payload)
        # the session goes on: COM_PING
        raw.send_packet(b"\x0e", 0)
        _, pong = raw.expect_packet()
        assert pong[0] == 0
        return packets
    finally:
        raw.close()


def test_com_field_list_equal_direct(proxy, cluster, schema, direct):
    with direct.cursor() as cur:
        cur.execute(f"CREATE TABLE `{schema}`.fl (id INT PRIMARY KEY, name VARCHAR(30) DEFAULT 'x', b BLOB)")
    cluster.wait_replicated()
    via = _field_list(proxy.host, proxy.port, schema, "fl")
    straight = _field_list(cluster.primary.host, cluster.primary.port, schema, "fl")
    assert len(via) == 3
    assert all(b"fl" in p for p in via)
    assert via == straight
    missing = _field_list(proxy.host, proxy.port, schema, "nope")
    assert missing[0][0] == 0xFF and struct.unpack("<H", missing[0][1:3])[0] == 1146


# -- asyncmy -----------------------------------------------------------------------------------------


def test_asyncmy_queries_and_executemany(proxy, cluster, schema, direct):
    import asyncmy

    with direct.cursor() as cur:
        cur.execute(f"CREATE TABLE `{schema}`.a (id INT PRIMARY KEY, v VARCHAR(30), n DECIMAL(8,2) NULL, t DATETIME NULL)")
    cluster.wait_replicated()

    rows = [(i, f"value {i} ✓", None if i % 4 == 0 else decimal.Decimal(i) / 4, datetime.datetime(2024, 1, 1, 0, 0, i % 60)) for i in range(500)]

    async def go() -> tuple[Any, ...]:
        conn = await asyncmy.connect(host=proxy.host, port=proxy.port, user="app", password="app_pw", db=schema, autocommit=True)
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1, 'a', NULL, 1.5, DATABASE()")
                first = await cur.fetchall()
                inserted = await cur.executemany("INSERT INTO a VALUES (%s, %s, %s, %s)", rows)
                cluster.wait_replicated()
                await cur.execute("SELECT COUNT(*), SUM(n) FROM a")
                agg = await cur.fetchall()
                await cur.execute("SELECT * FROM a ORDER BY id")
                every = await cur.fetchall()
                desc = cur.description
            return first, inserted, agg, every, desc
        finally:
            conn.close()

    first, inserted, agg, every, desc = asyncio.run(go())
    assert first == ((1, "a", None, decimal.Decimal("1.5"), schema),)
    assert inserted == 500
    with direct.cursor() as cur:
        cur.execute(f"SELECT COUNT(*), SUM(n) FROM `{schema}`.a")
        assert agg == (cur.fetchone(),)
        cur.execute(f"SELECT * FROM `{schema}`.a ORDER BY id")
        assert every == cur.fetchall()
    assert [tuple(r) for r in every] == rows
    assert [d[0] for d in desc] == ["id", "v", "n", "t"]


# -- logging in: errors are the server's ---------------------------------------------------------------


def _connect_error(host: str, port: int, **kw: Any) -> tuple[Any, ...]:
    with pytest.raises(mysql.connector.Error) as info:
        _connector(host, port, **kw).close()
    e = info.value
    return e.errno, e.sqlstate, e.msg


def test_wrong_password_is_1045_with_mysql_wording(proxy, cluster):
    via = _connect_error(proxy.host, proxy.port, password="wrong")
    assert via == (1045, "28000", "Access denied for user 'app'@'127.0.0.1' (using password: YES)")
    assert via == _connect_error(cluster.primary.host, cluster.primary.port, password="wrong")
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect(password="wrong")
    assert info.value.args == (1045, "Access denied for user 'app'@'127.0.0.1' (using password: YES)")


def test_empty_password_says_using_password_no(proxy, cluster):
    via = _connect_error(proxy.host, proxy.port, password="")
    assert via == (1045, "28000", "Access denied for user 'app'@'127.0.0.1' (using password: NO)")
    assert via == _connect_error(cluster.primary.host, cluster.primary.port, password="")


def test_unknown_user_is_1045(proxy, cluster):
    via = _connect_error(proxy.host, proxy.port, user="nobody", password="x")
    assert via == (1045, "28000", "Access denied for user 'nobody'@'127.0.0.1' (using password: YES)")
    assert via == _connect_error(cluster.primary.host, cluster.primary.port, user="nobody", password="x")


def test_unknown_database_at_connect_is_1049(proxy, cluster):
    db = f"missing_{_uid()}"
    via = _connect_error(proxy.host, proxy.port, database=db)
    assert via == (1049, "42000", f"Unknown database '{db}'")
    assert via == _connect_error(cluster.primary.host, cluster.primary.port, database=db)
    # the proxy is fine afterwards
    conn = proxy.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()


def test_failed_logins_do_not_disturb_a_working_session(proxy, cluster):
    conn = proxy.connect(autocommit=True)
    try:
        for _ in range(20):
            with pytest.raises(pymysql.err.OperationalError):
                proxy.connect(password="nope")
        with conn.cursor() as cur:
            cur.execute("SELECT 'alive'")
            assert cur.fetchone() == ("alive",)
    finally:
        conn.close()


# -- a hostgroup that cannot be reached -------------------------------------------------------------------


def test_unreachable_hostgroup_gives_err_and_proxy_keeps_serving(cluster, start_proxy):
    dead_port = free_port()  # nothing listens there
    servers = default_servers(cluster) + [{"hostgroup_id": 2, "hostname": "127.0.0.1", "port": dead_port, "comment": "dead"}]
    users = [
        {"username": "app", "password": "app_pw", "default_hostgroup": 0},
        {"username": "stranded", "password": "stranded_pw", "default_hostgroup": 2, "backend_username": "app", "backend_password": "app_pw"},
    ]
    p = start_proxy(users=users, servers=servers, proxy_settings={"connect_timeout": 2.0})
    healthy = p.connect(autocommit=True)
    try:
        for _ in range(3):
            with pytest.raises(pymysql.err.MySQLError) as info:
                p.connect(user="stranded", password="stranded_pw")
            errno, message = info.value.args
            # ProxySQL's 9001, a server-range code: a client-library code (2003) in an ERR packet is
            # "2027 Received malformed packet" to libmariadb clients.
            assert errno == 9001
            assert "hostgroup 2" in message
            assert f"127.0.0.1:{dead_port}" in message
            with pytest.raises(mysql.connector.Error) as cinfo:
                _connector(p.host, p.port, user="stranded", password="stranded_pw").close()
            assert (cinfo.value.errno, cinfo.value.sqlstate) == (9001, "HY000")
        # the session opened before still works, and new ones for the healthy hostgroup too
        with healthy.cursor() as cur:
            cur.execute("SELECT @@server_id, @@port")
            assert cur.fetchone() == (cluster.primary.server_id, cluster.primary.port)
        again = p.connect(autocommit=True)
        try:
            with again.cursor() as cur:
                cur.execute("SELECT 1")
                assert cur.fetchone() == (1,)
        finally:
            again.close()
        assert p.process.poll() is None
        log = Path(p.log_path).read_text()
        assert "Traceback" not in log
    finally:
        healthy.close()
