"""What a client asks about its own session gets the answer a direct connection would give, in
passthrough and in split mode (issue 10 #5, #6, #10): connection ids (CONNECTION_ID(), KILL, SHOW
PROCESSLIST), warnings of the previous statement, ROW_COUNT() after COM_PING, the client's own
wait_timeout, and reads about the server itself (@@global, information_schema)."""

from __future__ import annotations

import threading
import time

import pymysql
import pytest

from proxy.sandbox import default_replication_hostgroups, default_servers

MODES = ["passthrough", "split"]


def mode_proxy(start_proxy, cluster, mode: str, **kw):
    if mode == "passthrough":
        kw.setdefault("servers", [{"hostgroup_id": 0, "hostname": cluster.primary.host, "port": cluster.primary.port}])
    return start_proxy(**kw)


def one(conn, sql: str):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()


def rows(conn, sql: str):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


@pytest.mark.parametrize("mode", MODES)
def test_connection_id_is_the_handshakes_and_kill_uses_it(start_proxy, cluster, mode):
    p = mode_proxy(start_proxy, cluster, mode)
    a, b = p.connect(autocommit=True), p.connect(autocommit=True)
    try:
        assert one(a, "SELECT CONNECTION_ID()")[0] == a.thread_id()
        assert one(b, "SELECT CONNECTION_ID()")[0] == b.thread_id() != a.thread_id()
        # KILL QUERY with the proxy's id stops A's statement (the server's own 1317 reaches A).
        outcome: dict = {}

        def sleeper() -> None:
            try:
                one(a, "SELECT SLEEP(10)")
            except pymysql.err.OperationalError as e:
                outcome["err"] = e.args

        t = threading.Thread(target=sleeper)
        t.start()
        time.sleep(0.5)
        started = time.monotonic()
        with b.cursor() as cur:
            cur.execute(f"KILL QUERY {a.thread_id()}")
        t.join(10)
        assert outcome.get("err", (0,))[0] == 1317, outcome
        assert time.monotonic() - started < 5
        assert one(a, "SELECT 'a lives'") == ("a lives",)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("mode", MODES)
def test_kill_never_reaches_a_server_thread_of_that_number(start_proxy, cluster, mode):
    """A client that kills "its" id must never kill an unrelated server thread with that number."""
    p = mode_proxy(start_proxy, cluster, mode)
    bystander = pymysql.connect(host=cluster.primary.host, port=cluster.primary.port, user="app", password="app_pw", autocommit=True)
    c = p.connect(autocommit=True)
    try:
        victim = bystander.thread_id()
        assert victim != c.thread_id()
        with pytest.raises(pymysql.err.OperationalError) as e:
            with c.cursor() as cur:
                cur.execute(f"KILL {victim}")
        assert e.value.args[0] == 1094, e.value.args  # Unknown thread id (no proxy session has it)
        assert one(bystander, "SELECT 'still here'") == ("still here",)
    finally:
        c.close()
        bystander.close()


def test_kill_first_in_a_multi_statement_then_the_rest_runs(start_proxy, cluster):
    p = start_proxy()
    a = p.connect(autocommit=True)
    b = p.connect(autocommit=True, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    try:
        outcome: dict = {}

        def sleeper() -> None:
            try:
                one(a, "SELECT SLEEP(10)")
            except pymysql.err.OperationalError as e:
                outcome["err"] = e.args

        t = threading.Thread(target=sleeper)
        t.start()
        time.sleep(0.5)
        with b.cursor() as cur:
            cur.execute(f"KILL QUERY {a.thread_id()}; SELECT SLEEP(0.05), 'after'")
            assert cur.description is None and not cur.fetchall()  # the KILL's OK
            assert cur.nextset()
            assert tuple(cur.fetchall()) == ((0, "after"),)
        t.join(10)
        assert outcome.get("err", (0,))[0] == 1317, outcome
        # KILL anywhere but first would name a proxy id to a server: refused, nothing run.
        with pytest.raises(pymysql.err.MySQLError) as e:
            with b.cursor() as cur:
                cur.execute(f"SELECT 1; KILL {a.thread_id()}")
        assert e.value.args[0] == 1235, e.value.args
        assert one(a, "SELECT 'a lives'") == ("a lives",)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("mode", MODES)
def test_show_processlist_lists_the_proxy_sessions_by_their_ids(start_proxy, cluster, mode):
    p = mode_proxy(start_proxy, cluster, mode)
    a, b = p.connect(autocommit=True), p.connect(autocommit=True)
    try:
        listed = rows(a, "SHOW FULL PROCESSLIST")
        by_id = {r[0]: r for r in listed}
        assert set(by_id) == {a.thread_id(), b.thread_id()}, listed
        me = by_id[one(a, "SELECT CONNECTION_ID()")[0]]
        assert me[1] == "app" and me[4] == "Query" and me[7] == "SHOW FULL PROCESSLIST", me
        assert by_id[b.thread_id()][4] == "Sleep" and by_id[b.thread_id()][7] is None
        assert len(rows(a, "SHOW PROCESSLIST")[0]) == 9  # MariaDB's columns, Progress included
    finally:
        a.close()
        b.close()


def test_warnings_are_read_where_the_statement_ran(start_proxy, cluster):
    """SELECT 1/0 runs on a replica; SHOW WARNINGS & co. must not ask the writer (issue 10 #6). The
    replicas get one backend connection each, so a leak to the next client would show."""
    servers = [dict(s, max_connections=1) for s in default_servers(cluster)]
    p = start_proxy(servers=servers, replication_hostgroups=default_replication_hostgroups(cluster))
    c = p.connect(autocommit=True)
    try:
        assert one(c, "SELECT 1/0, @@server_id")[1] in {r.server_id for r in cluster.replicas}
        assert rows(c, "SHOW WARNINGS") == (("Warning", 1365, "Division by 0"),)
        assert one(c, "SHOW COUNT(*) WARNINGS") == (1,)
        assert one(c, "SELECT @@warning_count") == (1,)
        assert one(c, "SELECT COUNT(*) FROM mysql.user WHERE 0")[0] == 0  # another statement: they are gone
        assert rows(c, "SHOW WARNINGS") == ()
        assert one(c, "SHOW COUNT(*) ERRORS") == (0,)
        assert one(c, "SELECT 1/0")[0] is None
    finally:
        c.close()
    # The next client on those connections sees none of it.
    d = p.connect(autocommit=True)
    try:
        assert rows(d, "SHOW WARNINGS") == ()
        assert one(d, "SELECT @@warning_count") == (0,)
    finally:
        d.close()


@pytest.mark.parametrize("mode", MODES)
def test_row_count_after_ping_is_zero_as_direct(start_proxy, cluster, schema, mode):
    cluster.primary.sql(f"CREATE TABLE {schema}.r (i INT)")
    p = mode_proxy(start_proxy, cluster, mode)
    c = p.connect(autocommit=True, database=schema)
    try:
        with c.cursor() as cur:
            cur.execute("INSERT INTO r VALUES (1)")
        assert one(c, "SELECT ROW_COUNT()") == (1,)
        with c.cursor() as cur:
            cur.execute("INSERT INTO r VALUES (2)")
        c.ping(reconnect=False)
        assert one(c, "SELECT ROW_COUNT()") == (0,)  # what MariaDB answers directly
    finally:
        c.close()


@pytest.mark.parametrize("mode", MODES)
def test_the_clients_own_wait_timeout_closes_it(start_proxy, cluster, mode):
    p = mode_proxy(start_proxy, cluster, mode)
    c = p.connect(autocommit=True)
    keeper = p.connect(autocommit=True)
    try:
        with c.cursor() as cur:
            cur.execute("SET SESSION wait_timeout = 1")
        with keeper.cursor() as cur:
            cur.execute("SET SESSION wait_timeout = 28800")
        time.sleep(2.6)
        with pytest.raises(pymysql.err.OperationalError) as e:
            one(c, "SELECT 1")
        assert e.value.args[0] in (4031, 2013, 2006), e.value.args  # told, then closed (as MySQL 8 does)
        assert one(keeper, "SELECT 'kept'") == ("kept",)
    finally:
        keeper.close()


def test_reads_about_the_server_itself_go_to_the_writer(start_proxy, cluster, schema):
    p = start_proxy()
    c = p.connect(autocommit=True)
    try:
        assert one(c, "SELECT @@global.read_only, @@read_only, @@port") == (0, 0, cluster.primary.port)
        assert one(c, "SELECT @@server_id")[0] in {r.server_id for r in cluster.replicas}  # still split
        # DDL, then introspection at once (an ORM's migration): the writer has the table.
        with c.cursor() as cur:
            cur.execute(f"CREATE TABLE {schema}.fresh (i INT)")
        assert one(c, f"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{schema}' AND TABLE_NAME = 'fresh'") == (1,)
    finally:
        c.close()


@pytest.mark.parametrize("mode", MODES)
def test_commands_that_act_on_the_shared_server_are_refused(start_proxy, cluster, mode):
    """COM_REFRESH with REFRESH_MASTER would RESET MASTER on the writer (a fuzzer broke both replicas
    that way); COM_DEBUG and COM_SHUTDOWN act on the server too. ERR 1047, the writer untouched."""
    from tests.rawclient import Raw, parse_err

    p = mode_proxy(start_proxy, cluster, mode)
    before = cluster.primary.value("SELECT @@gtid_binlog_state")
    raw = Raw(p.host, p.port)
    try:
        raw.login()
        for payload in (b"\x07\x80", b"\x07\xff", b"\x0d", b"\x08\x00"):
            raw.send_packet(payload, 0)
            seq, reply = raw.expect_packet()
            err = parse_err(reply)
            assert (seq, err.code) == (1, 1047), (payload, err)
        assert raw.query("SELECT 'alive'")  # the session carries on
    finally:
        raw.close()
    assert cluster.primary.value("SELECT @@gtid_binlog_state") == before
    assert cluster.primary.value("SHOW BINARY LOGS").count("mariadb-bin") >= 1


def test_com_process_kill_takes_the_proxys_ids(start_proxy, cluster):
    p = start_proxy()
    a, b = p.connect(autocommit=True), p.connect(autocommit=True)
    try:
        b.kill(a.thread_id())  # COM_PROCESS_KILL: KILL CONNECTION of the proxy session
        with pytest.raises(pymysql.err.OperationalError):
            one(a, "SELECT 1")
        with pytest.raises(pymysql.err.OperationalError) as e:
            b.kill(999_999)
        assert e.value.args[0] == 1094
        assert one(b, "SELECT 'b lives'") == ("b lives",)
    finally:
        b.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_definition_keeps_connection_id_as_written(start_proxy, cluster, schema, mode):
    # MariaDB's own test suite (`default`) found it: a column's DEFAULT connection_id() was stored
    # as the proxy's session id, `DEFAULT (cast(2 as unsigned))`. A definition stores the call.
    p = mode_proxy(start_proxy, cluster, mode)
    c = p.connect(autocommit=True, database=schema)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE cid (a BIGINT DEFAULT connection_id(), b INT)")
        cur.execute("CREATE VIEW cidv AS SELECT CONNECTION_ID() AS c")
        cur.execute("SHOW CREATE TABLE cid")
        definition = cur.fetchone()[1]
        cur.execute("SHOW CREATE VIEW cidv")
        view = cur.fetchone()[1]
    c.close()
    assert "DEFAULT connection_id()" in definition, definition
    assert "connection_id()" in view.lower() and "cast(" not in view.lower(), view
