"""The admin port against a real cluster: what an operator does with the `mariadb` CLI (and PyMySQL),
and what the data port's clients see of it.

Every assertion is about something a user sees: rows on the admin port, error codes and SQLSTATEs
as the CLI prints them, and @@server_id of the server that answered a data-port statement.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from typing import Any

import pymysql
import pytest

from .test_multiplexing import MUX_PASSWORD, MUX_USER, mux_user  # noqa: F401 - fixture

MARIADB = "mariadb"


def admin_cli(proxy: Any, sql: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """The mariadb CLI on the admin port, statements on stdin (batch mode: tab-separated, no borders)."""
    cmd = [MARIADB, "--no-defaults", "-h127.0.0.1", f"-P{proxy.admin_port}", f"-u{proxy.admin_user}", f"-p{proxy.admin_password}", "--batch", *args]
    return subprocess.run(cmd, input=sql.encode(), capture_output=True, timeout=timeout, check=False)


def ok(p: subprocess.CompletedProcess) -> list[list[str]]:
    """Rows the CLI printed (tab-separated), after checking it succeeded."""
    assert p.returncode == 0, p.stderr.decode()
    return [line.split("\t") for line in p.stdout.decode().splitlines()]


def where(conn: Any, sql: str = "SELECT @@server_id") -> int:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def admin_rows(proxy: Any, sql: str) -> list[dict[str, Any]]:
    with proxy.admin_connect(cursorclass=pymysql.cursors.DictCursor) as c, c.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


PAIR = [{"writer_hostgroup": 0, "reader_hostgroup": 1, "writer_is_also_reader": False}]


def servers(cluster: Any, replicas: list[Any]) -> list[dict[str, Any]]:
    rows = [{"hostgroup_id": 0, "hostname": cluster.primary.host, "port": cluster.primary.port, "comment": "primary"}]
    rows += [{"hostgroup_id": 1, "hostname": r.host, "port": r.port, "comment": r.name} for r in replicas]
    return rows


# -- a. live changes from the CLI, seen through the data port ----------------------------------------


def test_cli_adds_a_reader_and_a_rule_and_the_data_port_follows(cluster, start_proxy):
    primary, (r1, r2) = cluster.primary, cluster.replicas
    proxy = start_proxy(servers=servers(cluster, [r1]), replication_hostgroups=PAIR, admin=True)
    marker = f"via_rule_{uuid.uuid4().hex[:6]}"
    old = proxy.connect(autocommit=True)  # opened before the change; never reconnects
    assert where(old) == r1.server_id
    assert where(old, f"SELECT @@server_id AS {marker}") == r1.server_id

    rows = ok(admin_cli(proxy, f"""
        INSERT INTO mysql_servers (hostgroup_id, hostname, port, weight, comment) VALUES (1, '{r2.host}', {r2.port}, 1000, 'replica 2');
        INSERT INTO mysql_query_rules (rule_id, active, match_digest, destination_hostgroup, apply) VALUES (10, 1, 'AS {marker}$', 0, 1);
        LOAD MYSQL SERVERS TO RUNTIME;
        LOAD MYSQL QUERY RULES TO RUNTIME;
        SELECT hostgroup_id, port, weight FROM runtime_mysql_servers ORDER BY hostgroup_id, port;
        SELECT rule_id, destination_hostgroup FROM runtime_mysql_query_rules;
    """, "--skip-column-names"))
    assert rows == sorted([["0", str(primary.port), "1"], ["1", str(r1.port), "1"], ["1", str(r2.port), "1000"]], key=lambda r: (r[0], int(r[1]))) + [["10", "0"]]

    # The session opened before the change keeps working, and its next statement follows the rule.
    assert where(old, f"SELECT @@server_id AS {marker}") == primary.server_id
    assert where(old, "SELECT 1") == 1
    # New sessions: the digest runs on the primary; reads reach replica2 (weight 1000 to 1).
    seen = []
    for _ in range(8):
        c = proxy.connect(autocommit=True)
        seen.append(where(c))
        assert where(c, f"SELECT @@server_id AS {marker}") == primary.server_id
        c.close()
    assert r2.server_id in seen and set(seen) <= {r1.server_id, r2.server_id}, seen
    old.close()


# -- b. a refused load changes nothing; SAVE ... TO DISK survives a restart ---------------------------


def test_bad_rule_is_refused_and_saved_config_survives_a_restart(cluster, start_proxy):
    primary, (r1, r2) = cluster.primary, cluster.replicas
    proxy = start_proxy(admin=True)  # primary in hostgroup 0, both replicas in 1
    marker = f"kept_{uuid.uuid4().hex[:6]}"
    probe = f"SELECT @@server_id AS {marker}"

    p = admin_cli(proxy, f"""
        INSERT INTO mysql_query_rules (rule_id, match_digest, destination_hostgroup, apply) VALUES (20, 'AS {marker}$', 0, 1);
        INSERT INTO mysql_query_rules (rule_id, match_digest, destination_hostgroup) VALUES (21, '^SELECT (', 0);
        LOAD MYSQL QUERY RULES TO RUNTIME;
    """)
    assert p.returncode == 1
    err = p.stderr.decode()
    assert "ERROR 1105 (HY000) at line 4: LOAD MYSQL QUERY RULES TO RUNTIME refused, runtime unchanged: 1 error" in err, err
    assert "mysql_query_rules rule_id=21: match_digest: regex does not compile" in err, err
    # Nothing changed: no rule at runtime, the probe still reads from a replica.
    assert admin_rows(proxy, "SELECT COUNT(*) AS n FROM runtime_mysql_query_rules") == [{"n": 0}]
    c = proxy.connect(autocommit=True)
    assert where(c, probe) in (r1.server_id, r2.server_id)

    ok(admin_cli(proxy, f"""
        DELETE FROM mysql_query_rules WHERE rule_id = 21;
        DELETE FROM mysql_servers WHERE port = {r2.port};
        LOAD MYSQL ALL TO RUNTIME;
        SAVE MYSQL QUERY RULES TO DISK;
        SAVE MYSQL SERVERS TO DISK;
    """))
    assert where(c, probe) == primary.server_id
    c.close()

    log_before = proxy.log_path.stat().st_size
    proxy.stop(timeout=10)
    proxy.start(timeout=60)  # same config file, same data_dir
    log = proxy.log_path.read_bytes()[log_before:].decode()
    assert f"MYSQL QUERY RULES: from the disk layer {proxy.admin_data_dir}/rwproxy.db" in log, log
    assert f"MYSQL SERVERS: from the disk layer {proxy.admin_data_dir}/rwproxy.db" in log, log
    assert f"MYSQL USERS: from the config file {proxy.config_path}" in log, log
    assert "MYSQL QUERY RULES: the config file" in log and "is NOT used for this section" in log, log

    assert admin_rows(proxy, "SELECT rule_id, match_digest, destination_hostgroup FROM runtime_mysql_query_rules") == [
        {"rule_id": 20, "match_digest": f"AS {marker}$", "destination_hostgroup": 0}
    ]
    assert [r["port"] for r in admin_rows(proxy, "SELECT port FROM runtime_mysql_servers ORDER BY port")] == sorted([primary.port, r1.port])
    for _ in range(4):  # replica2 is gone from the configuration: never read from again
        c = proxy.connect(autocommit=True)
        assert where(c, probe) == primary.server_id
        assert where(c) == r1.server_id
        c.close()


# -- c. the admin port beyond loopback needs a real password ------------------------------------------


@pytest.mark.parametrize("admin_table,says", [("", "the default password"), ('[admin]\npassword = ""\n', "an empty password")])
def test_non_loopback_admin_with_default_or_empty_password_exits_2(tmp_path, admin_table, says):
    config = tmp_path / "open.toml"
    config.write_text(
        "[listeners.data]\nport = 16999\n[listeners.admin]\naddress = \"0.0.0.0\"\nport = 16998\n" + admin_table
        + '[[users]]\nusername = "app"\npassword = "x"\n[[servers]]\nhostgroup_id = 0\nhostname = "127.0.0.1"\n'
    )
    p = subprocess.run([sys.executable, "-m", "proxy", "--config", str(config)], capture_output=True, timeout=60, check=False)
    assert p.returncode == 2, p.stderr
    err = p.stderr.decode()
    assert f"{config}: admin.password: the admin port listens on 0.0.0.0, beyond this machine, with {says}" in err, err
    assert "bind [listeners.admin] to 127.0.0.1" in err


# -- d. operator commands and stats after real traffic -----------------------------------------------


def _traffic(proxy: Any) -> tuple[Any, str, str, int]:
    """5 reads and 3 writer-hinted statements of two digests unique to this call, through one session.
    Returns (the open session, the read statement, the digest tag as digest texts show it, the session id)."""
    tag = uuid.uuid4().hex[:6]
    read_sql, write_sql = f"SELECT 1 AS d_read_{tag}", f"/* rwproxy:route=writer */ SELECT 2 AS d_writer_{tag}"
    c = proxy.connect(autocommit=True)
    with c.cursor() as cur:
        for _ in range(5):
            cur.execute(read_sql)
        for _ in range(3):
            cur.execute(write_sql)
    return c, read_sql, tag.upper(), c.thread_id()


def test_explain_diff_processlist_pool_and_kill(cluster, start_proxy):
    primary, replicas = cluster.primary, cluster.replicas
    proxy = start_proxy(admin=True)
    c, read_sql, tag, session_id = _traffic(proxy)

    # EXPLAIN ROUTE: where a statement would go at runtime, and why.
    steps = dict(ok(admin_cli(proxy, f"EXPLAIN ROUTE {read_sql};", "--skip-column-names")))
    assert steps["decision"] == "route to hostgroup 1" and steps["kind"] == "SELECT"
    steps = dict(ok(admin_cli(proxy, "EXPLAIN ROUTE DELETE FROM t WHERE id = 1;", "--skip-column-names")))
    assert steps["decision"] == "route to hostgroup 0"

    # The processlist shows the data-port session.
    rows = admin_rows(proxy, f"SELECT SessionID, user, command, hostgroup FROM stats_mysql_processlist WHERE SessionID = {session_id}")
    assert [(r["SessionID"], r["user"], r["command"]) for r in rows] == [(session_id, "app", "Sleep")]
    rows = ok(admin_cli(proxy, "SHOW PROCESSLIST;", "--skip-column-names"))
    assert [r[:3] for r in rows if r[0] == str(session_id)] == [[str(session_id), "app", ""]]
    # The connection pool lists every configured server, per hostgroup, with the pooled connections.
    pool = admin_rows(proxy, "SELECT hostgroup, srv_port, status, ConnUsed + ConnFree AS conns FROM stats_mysql_connection_pool ORDER BY hostgroup, srv_port")
    assert [(r["hostgroup"], r["srv_port"], r["status"]) for r in pool] == [(0, primary.port, "ONLINE")] + sorted((1, r.port, "ONLINE") for r in replicas)
    assert pool[0]["conns"] >= 1  # the session's writer connection went back to the pool

    # DIFF: a rule in memory, not yet loaded.
    with proxy.admin_connect() as a, a.cursor() as cur:
        cur.execute(f"INSERT INTO mysql_query_rules (rule_id, match_digest, destination_hostgroup, apply) VALUES (30, 'D_READ_{tag}', 0, 1)")
        cur.execute("DIFF MYSQL QUERY RULES")
        assert cur.fetchall() == (("mysql_query_rules", "added", "rule_id=30", ""),)

    # KILL CONNECTION of a data-port session: its client sees the connection closed.
    victim = proxy.connect(autocommit=True)
    victim_id = where(victim, "SELECT CONNECTION_ID()")
    assert ok(admin_cli(proxy, f"KILL CONNECTION {victim_id};")) == []
    with pytest.raises(pymysql.err.OperationalError) as e:
        where(victim, "SELECT 1")
    assert e.value.args[0] in (2006, 2013), e.value.args
    assert admin_rows(proxy, f"SELECT COUNT(*) AS n FROM stats_mysql_processlist WHERE SessionID = {victim_id}") == [{"n": 0}]
    p = admin_cli(proxy, f"KILL {victim_id};")
    assert p.returncode == 1 and f"ERROR 1094 (HY000) at line 1: Unknown thread id: {victim_id}" in p.stderr.decode()
    assert where(c, "SELECT 3") == 3  # everyone else carries on
    c.close()


def test_digest_stats_diff_routes_and_reset_after_traffic(start_proxy):
    """The counters the data path records (stats registry): exact per digest, SQL on them, the dry
    run of a rule against them, and the read-and-clear table."""
    proxy = start_proxy(admin=True)
    c, _, tag, _ = _traffic(proxy)
    c.close()
    digest = admin_rows(proxy, f"SELECT hostgroup, username, count_star FROM stats.stats_mysql_query_digest WHERE digest_text LIKE '%D_READ_{tag}%'")
    assert digest == [{"hostgroup": 1, "username": "app", "count_star": 5}]
    digest = admin_rows(proxy, f"SELECT hostgroup, count_star FROM stats_mysql_query_digest WHERE digest_text LIKE '%D_WRITER_{tag}%'")
    assert digest == [{"hostgroup": 0, "count_star": 3}]
    top = admin_rows(proxy, f"SELECT COUNT(*) AS n, SUM(count_star) AS s, MAX(count_star) AS top FROM stats_mysql_query_digest WHERE digest_text LIKE '%{tag}%'")
    assert top == [{"n": 2, "s": 8, "top": 5}]
    queries = admin_rows(proxy, "SELECT hostgroup, SUM(Queries) AS q FROM stats_mysql_connection_pool GROUP BY hostgroup ORDER BY hostgroup")
    assert [r["hostgroup"] for r in queries] == [0, 1] and queries[0]["q"] >= 3 and queries[1]["q"] >= 5, queries

    with proxy.admin_connect() as a, a.cursor() as cur:
        # DIFF MYSQL ROUTES: which digests a rule in memory would move, with their counts.
        cur.execute(f"INSERT INTO mysql_query_rules (rule_id, match_digest, destination_hostgroup, apply) VALUES (30, 'D_READ_{tag}', 0, 1)")
        cur.execute("DIFF MYSQL ROUTES")
        cols = [d[0] for d in cur.description]
        changes = [dict(zip(cols, r)) for r in cur.fetchall()]
        assert [(ch["count_star"], ch["runtime_destination"], ch["memory_destination"], ch["memory_rules"]) for ch in changes] == [(5, "hostgroup 1", "hostgroup 0", "30")]
        # stats_mysql_query_digest_reset reads and clears.
        cur.execute(f"SELECT SUM(count_star) FROM stats_mysql_query_digest_reset WHERE digest_text LIKE '%{tag}%'")
        assert cur.fetchone() == (8,)
        cur.execute("SELECT COUNT(*) FROM stats_mysql_query_digest")
        assert cur.fetchone() == (0,)


def test_kill_query_and_kill_connection_of_busy_sessions(cluster, start_proxy):
    """KILL QUERY stops the statement and keeps the session; KILL CONNECTION of a session running a
    statement closes it and stops the statement on the server too."""
    import threading
    import time

    proxy = start_proxy(admin=True)
    tag = uuid.uuid4().hex[:6]

    def running_on_primary() -> int:
        return int(cluster.primary.value(
            f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%k\\_{tag}%' AND ID <> CONNECTION_ID()"))

    def sleep_in_thread(conn: Any, outcome: dict) -> threading.Thread:
        def run() -> None:
            t = time.monotonic()
            try:
                outcome["row"] = where(conn, f"/* rwproxy:route=writer */ SELECT SLEEP(30) AS k_{tag}")
            except pymysql.err.OperationalError as e:
                outcome["err"] = e.args
            outcome["took"] = time.monotonic() - t

        th = threading.Thread(target=run)
        th.start()
        deadline = time.monotonic() + 10
        while running_on_primary() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        return th

    victim, outcome = proxy.connect(autocommit=True), {}
    th = sleep_in_thread(victim, outcome)
    busy = admin_rows(proxy, "SELECT SessionID FROM stats_mysql_processlist WHERE command = 'Query'")
    assert [r["SessionID"] for r in busy] == [victim.thread_id()]
    assert ok(admin_cli(proxy, f"KILL QUERY {victim.thread_id()};")) == []
    th.join(15)
    assert outcome["took"] < 10, outcome
    assert outcome.get("row") == 1 or outcome.get("err", (0,))[0] == 1317, outcome  # MariaDB: an interrupted SLEEP() is 1
    assert where(victim, "SELECT 5") == 5  # the session goes on

    outcome = {}
    th = sleep_in_thread(victim, outcome)
    assert ok(admin_cli(proxy, f"KILL CONNECTION {victim.thread_id()};")) == []
    th.join(15)
    assert outcome.get("err", (0,))[0] in (2006, 2013), outcome  # the client sees its connection closed
    # ...and the SLEEP stops on the server at once (KILL QUERY there). Closing the backend connection
    # alone is not enough: MariaDB notices a gone client during SLEEP() only every 5 s.
    deadline = time.monotonic() + 3.5
    while running_on_primary() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running_on_primary() == 0


# -- e. errors: exact codes, and the session carries on ----------------------------------------------


def test_errors_have_exact_codes_and_the_session_continues(start_proxy):
    proxy = start_proxy(admin=True)
    p = admin_cli(proxy, """
        FROBNICATE the servers;
        INSERT INTO mysql_servers (hostgroup_id, hostname, port, use_ssl) VALUES (1, 'db9', 3306, 1);
        INSERT INTO mysql_servers (hostgroup_id, hostname, port, status) VALUES (1, 'db9', 3306, 'UP');
        INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES (1, 'db9', 'abc');
        INSERT INTO runtime_mysql_servers (hostgroup_id, hostname) VALUES (1, 'db9');
        LOAD MYSQL SERVERS TO DISK;
        SELECT COUNT(*) FROM mysql_servers;
    """, "--force", "--skip-column-names")
    err = [line for line in p.stderr.decode().splitlines() if line.startswith("ERROR")]  # (--force echoes each failed statement too)
    assert [e.split(":", 1)[0] for e in err] == [
        "ERROR 1064 (42000) at line 2",
        "ERROR 1054 (42S22) at line 3",
        "ERROR 3819 (HY000) at line 4",
        "ERROR 3819 (HY000) at line 5",
        "ERROR 1142 (42000) at line 6",
        "ERROR 1064 (42000) at line 7",
    ], err
    assert "unknown admin command 'FROBNICATE'" in err[0]
    assert "has no column named use_ssl" in err[1]
    assert "mysql_servers.status must be one of ONLINE, SHUNNED, OFFLINE_SOFT, OFFLINE_HARD" in err[2]
    assert "mysql_servers.port must be an integer 0..65535" in err[3]
    assert "edit mysql_servers, then LOAD MYSQL SERVERS TO RUNTIME" in err[4]
    assert "SAVE MYSQL SERVERS TO DISK" in err[5]
    assert p.stdout.decode().split() == ["3"]  # same session, nothing inserted

    # The same with PyMySQL, one connection throughout; another admin session is untouched.
    with proxy.admin_connect() as a, proxy.admin_connect() as b, a.cursor() as cur, b.cursor() as other:
        for sql, errno in [
            ("SELECT * FROM no_such_table", 1146),
            ("UPDATE mysql_users SET max_connections = 0", 3819),
            ("SET mysql-max_connections = 0", 1231),
            ("BEGIN", 1227),
        ]:
            with pytest.raises(pymysql.MySQLError) as e:
                cur.execute(sql)
            assert e.value.args[0] == errno, (sql, e.value.args)
        cur.execute("SELECT username FROM mysql_users")
        assert cur.fetchall() == (("app",),)
        other.execute("SELECT COUNT(*) FROM runtime_mysql_users")
        assert other.fetchone() == (1,)


# -- removing a server at runtime ----------------------------------------------------------------------


def test_removed_reader_gets_no_new_statements_and_its_idle_connections_close(cluster, start_proxy, mux_user):
    """DELETE a replica from mysql_servers and LOAD: no session's next read goes there (not even a
    session that preferred it), and the proxy's idle connections to it are closed at once. (The
    proxy logs in to the servers as its own account, so the servers' process lists show exactly its
    connections.)"""
    (r1, r2) = cluster.replicas
    users = [{"username": cluster.app_user, "password": cluster.app_password, "default_hostgroup": 0,
              "backend_username": MUX_USER, "backend_password": MUX_PASSWORD}]  # fmt: skip
    proxy = start_proxy(servers=servers(cluster, [r1, r2]), replication_hostgroups=PAIR, users=users, admin=True)
    sessions = [proxy.connect(autocommit=True) for _ in range(8)]

    def on_r2() -> int:
        return int(r2.value(f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{MUX_USER}'"))

    try:
        seen = {where(c) for c in sessions}
        assert r2.server_id in seen, seen  # some sessions read from replica2 (a per-session choice)
        assert on_r2() > 0
        ok(admin_cli(proxy, f"DELETE FROM mysql_servers WHERE port = {r2.port}; LOAD MYSQL SERVERS TO RUNTIME;"))
        for c in sessions:
            for _ in range(3):
                assert where(c) == r1.server_id
        deadline = time.monotonic() + 5
        while on_r2() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert on_r2() == 0
    finally:
        for c in sessions:
            c.close()
