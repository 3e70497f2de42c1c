"""Transparency: what a client sees through the proxy is what it sees connected to the server.

Each test reproduces one of the differences real drivers' test suites found (issue 10) and compares
with a direct connection to the primary, or with what the server itself reports. Where the
difference showed in both modes, it runs in passthrough (one hostgroup, nothing classified) and in
split mode (replication pair, multiplexing). The proxy is given one connection to the writer, so
the next client gets exactly the connection the previous one left: whatever leaks, shows.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from pymysql.constants import CLIENT

from proxy.sandbox import default_replication_hostgroups, default_servers

from tests.rawclient import SESSION_TRACK, Raw
from .test_multiplexing import W, close, one

# The differential harness's node mysql2 (scripts/setup.sh runs npm ci there).
NODE_DIR = Path(__file__).resolve().parent.parent / "differential" / "node"
# What node mysql2 makes of a JSON column: typed (parsed) when the server's extended metadata
# (MariaDB) says it is JSON, a string otherwise. argv: host port user password database.
JSON_TYPES_JS = r"""
const mysql = require('mysql2/promise');
(async () => {
  const [host, port, user, password, database] = process.argv.slice(1);
  const c = await mysql.createConnection({ host, port: Number(port), user, password, database });
  try {
    const [rows, fields] = await c.query('SELECT j FROM t');
    console.log(JSON.stringify({ rows, types: fields.map((f) => [f.name, f.columnType, f.characterSet]) }));
  } finally {
    await c.end();
  }
})().catch((e) => { console.error(String(e && e.stack ? e.stack : e)); process.exit(1); });
"""


@pytest.fixture(params=["passthrough", "split"])
def mode_proxy(request: pytest.FixtureRequest, start_proxy: Any, cluster: Any) -> Any:
    """A proxy in passthrough or split mode whose writer hostgroup has one backend connection."""
    servers = default_servers(cluster)
    servers[0]["max_connections"] = 1
    if request.param == "passthrough":
        p = start_proxy(servers=servers[:1], replication_hostgroups=[])
    else:
        p = start_proxy(servers=servers, replication_hostgroups=default_replication_hostgroups(cluster))
    p.mode = request.param
    return p


@pytest.fixture
def split_proxy(start_proxy: Any, cluster: Any) -> Any:
    servers = default_servers(cluster)
    servers[0]["max_connections"] = 1
    return start_proxy(servers=servers, replication_hostgroups=default_replication_hostgroups(cluster))


@pytest.fixture
def databases(direct: Any, cluster: Any) -> Iterator[Any]:
    """make(charset=None) creates a uniquely named database (replicated); all are dropped after."""
    made: list[str] = []

    def make(charset: str | None = None) -> str:
        name = f"tr_{uuid.uuid4().hex[:10]}"
        with direct.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`" + (f" CHARACTER SET {charset}" if charset else ""))
        made.append(name)
        cluster.wait_replicated()
        return name

    yield make
    with direct.cursor() as cur:
        for name in made:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def run(conn: Any, *statements: str) -> None:
    with conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)


def direct_raw(cluster: Any, **login: Any) -> Raw:
    r = Raw(cluster.primary.host, cluster.primary.port)
    r.login(cluster.app_user, cluster.app_password, **login)
    return r


def proxy_raw(p: Any, **login: Any) -> Raw:
    r = Raw(p.host, p.port)
    r.login(p.user, p.password, **login)
    return r


# ---- 0: the schema and what derives from it are the client's, on whatever connection -----------


def test_drop_database_of_the_current_schema_leaves_none_for_the_next_client(mode_proxy, databases):
    """The issue's case, by hand: a client on `d` runs DROP DATABASE d; CREATE DATABASE d and leaves;
    the next client on `d` got DATABASE() = NULL and 1046 (the server had cleared the pooled
    connection's schema; the proxy believed it was still `d`)."""
    p = mode_proxy
    d = databases()
    a = p.connect(database=d, autocommit=True)
    try:
        run(a, f"DROP DATABASE `{d}`")
        assert one(a, f"{W}SELECT DATABASE()") == (None,)  # as connected directly: no schema left
        run(a, f"CREATE DATABASE `{d}`")
    finally:
        close(a)
    b = p.connect(database=d, autocommit=True)
    try:
        assert one(b, f"{W}SELECT DATABASE()") == (d,)
        run(b, "CREATE TABLE t (n INT)", "INSERT INTO t VALUES (1)")  # 1046 No database selected, before
        assert one(b, f"{W}SELECT COUNT(*) FROM t") == (1,)
    finally:
        close(b)


def test_a_schema_one_client_changed_to_is_not_the_next_clients(mode_proxy, databases):
    """MariaDB's `row` test through the proxy ran a session's statements in another client's schema."""
    p = mode_proxy
    mine, theirs = databases(), databases()
    a = p.connect(database=theirs, autocommit=True)
    try:
        run(a, f"USE `{mine}`")  # unclassified in passthrough: only the server's tracking says it
    finally:
        close(a)
    b = p.connect(database=theirs, autocommit=True)
    try:
        assert one(b, f"{W}SELECT DATABASE()") == (theirs,)
        run(b, "CREATE TABLE here (n INT)")
    finally:
        close(b)
    cur = p.connect(database=theirs, autocommit=True)
    try:
        assert one(cur, f"{W}SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{theirs}' AND TABLE_NAME = 'here'") == (1,)
    finally:
        close(cur)


def test_the_schemas_character_set_survives_the_reset_of_a_pooled_connection(mode_proxy, databases, direct):
    """COM_RESET_CONNECTION keeps the schema but gives character_set_database the server's default:
    the next client on that schema created tables with another character set than direct (`ctype_utf8`)."""
    p = mode_proxy
    d = databases("latin1")
    with direct.cursor() as cur:
        cur.execute(f"USE `{d}`")
        cur.execute("SELECT @@character_set_database")
        expected = cur.fetchone()
    assert expected == ("latin1",)
    a = p.connect(database=d, autocommit=True)
    try:
        run(a, "SET @pinned = 1")  # (a user variable: its connection is reset when the client leaves)
    finally:
        close(a)
    b = p.connect(database=d, autocommit=True)
    try:
        assert one(b, f"{W}SELECT @@character_set_database") == expected
        run(b, "CREATE TABLE t (c VARCHAR(5))")
        assert "latin1" in one(b, f"{W}SHOW CREATE TABLE t")[1]
    finally:
        close(b)


# ---- 7: a SET by expression is learned from the server's tracking, not pinned -------------------


def test_a_set_by_expression_is_replayed_as_the_value_the_server_reports(split_proxy, cluster, direct, ids):
    """MariaDB Connector/J sends this at connect: it pinned every JDBC session to the writer."""
    p = split_proxy
    sets = ("set autocommit=1, sql_mode = concat(@@sql_mode,',STRICT_TRANS_TABLES')", "SET sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES'), time_zone = CONCAT('+0', '2:00')")
    default = one(direct, "SELECT @@sql_mode")[0]
    run(direct, *sets)
    expected = one(direct, "SELECT @@sql_mode")[0]
    run(direct, "SET sql_mode = DEFAULT, time_zone = DEFAULT")
    c = p.connect(autocommit=True)
    try:
        run(c, *sets)
        for _ in range(3):  # reads still go to the replicas, which carry the values the writer computed
            server_id, mode, tz = one(c, "SELECT @@server_id, @@sql_mode, @@time_zone")
            assert server_id in ids["readers"], "the session was pinned to the writer"
            assert (mode, tz) == (expected, "+02:00")
    finally:
        close(c)
    other = p.connect(autocommit=True)  # the writer's only connection, given back: at the defaults again
    try:
        assert one(other, f"{W}SELECT @@sql_mode, @@time_zone") == (default, "SYSTEM")
    finally:
        close(other)


@pytest.fixture(scope="module")
def ids(cluster: Any) -> dict[str, Any]:
    return {"writer": cluster.primary.server_id, "readers": {r.server_id for r in cluster.replicas}}


# ---- 4: a client sees the session tracking its own settings produce, no more --------------------

TRACKED_STATEMENTS = [
    "SET @v = 1", "SET time_zone = '+01:00'", "SET sql_mode = 'ANSI'", "USE {d}", "CREATE TEMPORARY TABLE tt (n INT)",
    "DO 1", "CALL {d}.set_var()", "SET @w = 2", "SET session_track_system_variables = 'sql_mode'",
    "SET sql_mode = 'TRADITIONAL'", "SET time_zone = '+02:00'", "SET session_track_schema = OFF", "USE mysql",
    "SET session_track_system_variables = DEFAULT", "SET time_zone = '+03:00'", "SET session_track_state_change = OFF",
    "SET @z = 3",
]  # fmt: skip


def test_a_client_sees_only_the_session_tracking_its_own_settings_produce(mode_proxy, cluster, databases, direct):
    """node mysql2 negotiates CLIENT_SESSION_TRACK; it saw SERVER_SESSION_STATE_CHANGED and
    state-change entries after SET @v and CALL that the proxy's own tracking produced."""
    d = databases()
    with direct.cursor() as cur:
        cur.execute(f"CREATE PROCEDURE `{d}`.set_var() BEGIN SET @from_proc = 1; END")
    cluster.wait_replicated()

    def oks(r: Raw) -> list[tuple[str, int, bytes]]:
        out = []
        for sql in TRACKED_STATEMENTS:
            ok = r.ok(sql.format(d=d))
            out.append((sql, ok.status & 0x4000, ok.state))
        return out

    expected = oks(direct_raw(cluster, caps=SESSION_TRACK, database=d))
    assert expected[1][1] and not expected[0][1]  # (the server's defaults: variables yes, state changes no)
    got = oks(proxy_raw(mode_proxy, caps=SESSION_TRACK, database=d))
    assert got == expected


# ---- 1: the handshake's collation id means what the server made of it ----------------------------


def test_a_collation_id_the_server_does_not_know_is_restored_as_the_server_chose(mode_proxy, cluster):
    """libmysqlclient 8 (mysql-connector-python's C extension, mysqlclient) sends collation id 255,
    utf8mb4_0900_ai_ci: MariaDB 10.11 uses its defaults at login, and refuses the proxy's replay
    `SET NAMES utf8mb4 COLLATE utf8mb4_0900_ai_ci` with 1273 (every other connection failed)."""
    charsets = "SELECT CONCAT_WS(' ', @@character_set_client, @@collation_connection, @@character_set_results)"
    expected = direct_raw(cluster, collation=255).value(charsets)
    a = proxy_raw(mode_proxy, collation=255)
    assert a.value(charsets) == expected
    a.ok("SET NAMES latin1")
    a.close()
    for _ in range(2):
        b = proxy_raw(mode_proxy, collation=255)  # (its login fails with 1273, before)
        assert b.value(f"{W}{charsets}") == expected
        b.close()


# ---- 2: what the handshake's capabilities gave the session survives a reset ---------------------


def test_ignore_space_survives_the_reset_of_a_pooled_connection(mode_proxy, databases, direct):
    """MariaDB Connector/J sets CLIENT_IGNORE_SPACE; COM_RESET_CONNECTION (and SET sql_mode=DEFAULT)
    drops IGNORE_SPACE, and from the second connection on `SELECT COUNT (*)` failed with 1064."""
    p = mode_proxy
    d = databases()
    run(direct, f"CREATE TABLE `{d}`.t (n INT)", f"INSERT INTO `{d}`.t VALUES (1), (2)")
    a = p.connect(database=d, autocommit=True, client_flag=CLIENT.IGNORE_SPACE)
    try:
        assert "IGNORE_SPACE" in one(a, f"{W}SELECT @@sql_mode")[0]
        run(a, "SET @pinned = 1")  # (its connection is reset when it leaves)
    finally:
        close(a)
    b = p.connect(database=d, autocommit=True, client_flag=CLIENT.IGNORE_SPACE)
    try:
        assert one(b, f"{W}SELECT COUNT (*) FROM t") == (2,)
        assert one(b, f"{W}SELECT NOW () IS NOT NULL") == (1,)  # (1630 FUNCTION NOW does not exist, before)
        # Another client's sql_mode, given back to the defaults: the login's IGNORE_SPACE with them.
        run(b, "SET sql_mode = 'ANSI_QUOTES'")
    finally:
        close(b)
    c = p.connect(database=d, autocommit=True, client_flag=CLIENT.IGNORE_SPACE)
    try:
        assert one(c, f"{W}SELECT COUNT (*) FROM t") == (2,)
    finally:
        close(c)


def test_the_clients_own_reset_connection_does_what_the_server_does(mode_proxy, cluster, databases):
    """COM_RESET_CONNECTION from the client: MariaDB drops the login's IGNORE_SPACE and the schema's
    character set; the session gets exactly that, on whatever connection runs its next statement."""
    d = databases("latin1")
    state = f"SELECT CONCAT_WS(' ', @@sql_mode, @@character_set_database, DATABASE())"

    def after_reset(r: Raw) -> tuple[bytes | None, ...]:
        r.send_packet(b"\x1f", 0)
        assert r.expect_packet()[1][0] == 0x00
        values = [r.value(f"{W}{state}"), r.value(state)]
        r.send_packet(b"\x02" + d.encode(), 0)  # COM_INIT_DB: the schema's character set again
        assert r.expect_packet()[1][0] == 0x00
        return (*values, r.value(f"{W}{state}"), r.value(state))

    expected = after_reset(direct_raw(cluster, caps=1 << 8, database=d))
    assert b"IGNORE_SPACE" not in expected[0] and b"latin1" not in expected[0]  # (MariaDB's reset, as it is)
    assert b"latin1" in expected[2]
    assert after_reset(proxy_raw(mode_proxy, caps=1 << 8, database=d)) == expected


# ---- 3: MariaDB's extended metadata reaches the client --------------------------------------------


def node_json(port: int, user: str, password: str, database: str) -> dict[str, Any]:
    """JSON_TYPES_JS with node mysql2: what the driver makes of a JSON column."""
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "mysql2").is_dir():
        pytest.fail(f"node and {NODE_DIR}/node_modules (mysql2) are needed: run scripts/setup.sh")
    out = subprocess.run(
        ["node", "-e", JSON_TYPES_JS, "127.0.0.1", str(port), user, password, database],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_node_mysql2_gets_json_columns_typed(mode_proxy, cluster, databases, direct):
    """MariaDB sends a JSON column's type in its extended metadata (MARIADB_CLIENT_EXTENDED_METADATA);
    without it mysql2 returns the JSON text as a string."""
    d = databases()
    run(direct, f"CREATE TABLE `{d}`.t (j JSON)", f"""INSERT INTO `{d}`.t VALUES ('{{"a": [1, 2]}}')""")
    cluster.wait_replicated()
    expected = node_json(cluster.primary.port, cluster.app_user, cluster.app_password, d)
    assert expected["rows"] == [{"j": {"a": [1, 2]}}]
    assert node_json(mode_proxy.port, mode_proxy.user, mode_proxy.password, d) == expected


# ---- 8: bytes that are not UTF-8 do not break the operator's tables ---------------------------------


def test_a_statement_that_is_not_utf8_leaves_the_digest_table_readable(start_proxy):
    """Against MariaDB, end to end (admin.store cleans such text as SQLite takes it: U+FFFD)."""
    p = start_proxy(admin=True)
    c = p.connect(autocommit=True, charset="latin1")
    try:
        c.query(b"SELECT 1 AS `caf\xe9`")  # a latin1 identifier, as a latin1 client sends it
        c.query("SELECT 2")
    finally:
        close(c)
    admin = p.admin_connect()
    try:
        with admin.cursor() as cur:
            for _ in range(2):  # (every later query of the table failed with 1105, before)
                cur.execute("SELECT digest_text FROM stats_mysql_query_digest")
                texts = [r[0] for r in cur.fetchall()]
                assert any("caf\ufffd" in t for t in texts), texts
    finally:
        admin.close()


# ---- 9: every reply shape reaches the client whole ----------------------------------------------------


def test_results_of_a_compound_statement_reach_the_client(mode_proxy, cluster, databases, direct):
    """MariaDB's `ctype_ucs2_uca` hung: a FOR loop over a cursor sends one result per iteration, with
    SERVER_STATUS_CURSOR_EXISTS in each column EOF, which the proxy took for the end of the reply."""
    d = databases()
    run(direct, f"CREATE TABLE `{d}`.cs (n VARCHAR(10))", f"INSERT INTO `{d}`.cs VALUES ('a'), ('b'), ('c')")
    cluster.wait_replicated()

    def results(host: str, port: int) -> list[Any]:
        c = pymysql.connect(host=host, port=port, user=cluster.app_user, password=cluster.app_password, database=d, autocommit=True, read_timeout=10)
        out = []
        try:
            for limit in (0, 1):
                with c.cursor() as cur:
                    cur.execute(
                        "BEGIN NOT ATOMIC FOR rec IN (SELECT n FROM cs ORDER BY n) DO "
                        f"EXECUTE IMMEDIATE CONCAT('SELECT ''', rec.n, ''' AS x LIMIT {limit}'); END FOR; END"
                    )
                    out.append(cur.fetchall())
                    while cur.nextset():
                        out.append(cur.fetchall())
                out.append(one(c, "SELECT 42"))  # the session is in step
        finally:
            close(c)
        return out

    expected = results(cluster.primary.host, cluster.primary.port)
    assert (("c",),) in expected
    assert results(mode_proxy.host, mode_proxy.port) == expected  # (a read timeout, before)
