"""Credentials against real MariaDB (issue 12, scope 3): a backend password rotated with ALTER USER and
its password_file rewritten is picked up by LOAD MYSQL USERS TO RUNTIME and by SIGHUP, with no
restart -- new sessions log in with the new secret, sessions that were open keep working -- and a
frontend password stored as the server's own hash (what MariaDB's PASSWORD() returns) logs clients
in while the admin port never shows a password in clear."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest

from .test_admin import admin_rows

ROT_USER = "rot"


@pytest.fixture
def rot_account(cluster: Any):
    accounts = f"'{ROT_USER}'@'%', '{ROT_USER}'@'localhost'"
    cluster.primary.sql(
        f"CREATE USER IF NOT EXISTS '{ROT_USER}'@'%' IDENTIFIED BY 'rot-1'; CREATE USER IF NOT EXISTS '{ROT_USER}'@'localhost' IDENTIFIED BY 'rot-1';"
        f"GRANT SELECT ON *.* TO {accounts}"
    )
    cluster.wait_replicated()
    yield
    cluster.primary.sql(f"DROP USER IF EXISTS {accounts}")
    cluster.wait_replicated()


def _rotate(cluster: Any, password: str) -> None:
    cluster.primary.sql(f"ALTER USER '{ROT_USER}'@'%' IDENTIFIED BY '{password}'; ALTER USER '{ROT_USER}'@'localhost' IDENTIFIED BY '{password}'")
    cluster.wait_replicated()


def _backend_threads(cluster: Any) -> set[int]:
    return {int(r["ID"]) for r in cluster.primary.rows(f"SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{ROT_USER}'")}


def _parallel(proxy: Any, n: int = 6) -> list[Any]:
    """n sessions at once, each holding a writer connection for 0.4 s: the pool must open new ones.
    Returns each session's (CURRENT_USER(), backend CONNECTION_ID()) or the error it got."""

    def one(_: int) -> Any:
        try:
            with proxy.connect(user="rotfe", password="fe_pw") as c, c.cursor() as cur:
                cur.execute("SELECT CURRENT_USER(), CONNECTION_ID(), SLEEP(0.4) FOR UPDATE")
                return cur.fetchone()[:2]
        except pymysql.MySQLError as e:
            return e

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_rotated_backend_password_is_picked_up_without_restart(cluster, start_proxy, rot_account, tmp_path: Path):
    secret = tmp_path / "rot.pw"
    secret.write_text("rot-1\n")
    users = [{"username": "rotfe", "password": "fe_pw", "default_hostgroup": 0, "backend_username": ROT_USER, "backend_password_file": str(secret)}]
    proxy = start_proxy(users=users, admin=True)
    row = admin_rows(proxy, "SELECT password, backend_password FROM runtime_mysql_users")[0]
    assert row == {"password": "*" + cluster.primary.value("SELECT UPPER(SHA1(UNHEX(SHA1('fe_pw'))))"), "backend_password": f"file:{secret}"}

    open_session = proxy.connect(user="rotfe", password="fe_pw")  # open across the rotation
    in_txn = proxy.connect(user="rotfe", password="fe_pw")
    with open_session.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone()[0].startswith(f"{ROT_USER}@")
    with in_txn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT CONNECTION_ID()")
        txn_thread = cur.fetchone()[0]
    before = _backend_threads(cluster)

    # 1. the server's password changes, the file follows; until LOAD the proxy still has the old one
    _rotate(cluster, "rot-2")
    secret.write_text("rot-2\n")
    stale = _parallel(proxy)
    assert any(isinstance(r, pymysql.MySQLError) for r in stale), f"new backend connections should fail before LOAD: {stale}"

    # 2. LOAD MYSQL USERS TO RUNTIME reads the file again: new sessions and new connections work
    with proxy.admin_connect() as a, a.cursor() as cur:
        cur.execute("LOAD MYSQL USERS TO RUNTIME")
    fresh = _parallel(proxy)
    assert all(not isinstance(r, pymysql.MySQLError) for r in fresh), fresh
    assert {r[1] for r in fresh} - before, "no new backend connection was opened"
    assert all(r[0].startswith(f"{ROT_USER}@") for r in fresh)

    # 3. sessions open across the rotation keep working, a transaction included
    with in_txn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        assert cur.fetchone()[0] == txn_thread
        cur.execute("COMMIT")
    with open_session.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)

    # 4. again with SIGHUP instead of LOAD
    _rotate(cluster, "rot-3")
    secret.write_text("rot-3")
    os.kill(proxy.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "SIGHUP: secrets read again" not in proxy.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, proxy.log_tail()
        time.sleep(0.05)
    assert f"user rotfe: backend_password" in proxy.log_path.read_text(errors="replace")
    fresh = _parallel(proxy)
    assert all(not isinstance(r, pymysql.MySQLError) for r in fresh), fresh
    with open_session.cursor() as cur:
        cur.execute("SELECT 1")
    open_session.close()
    in_txn.close()
    assert "rot-2" not in proxy.log_path.read_text(errors="replace") and "rot-3" not in proxy.log_path.read_text(errors="replace")


def test_frontend_password_stored_as_the_servers_hash(cluster, start_proxy, rot_account, tmp_path: Path):
    secret = tmp_path / "rot.pw"
    secret.write_text("rot-1")
    server_hash = cluster.primary.value("SELECT PASSWORD('Hash-Pw-9')")  # MariaDB's own mysql_native_password hash
    assert server_hash.startswith("*") and len(server_hash) == 41
    users = [{"username": "hashfe", "password": server_hash, "default_hostgroup": 0, "backend_username": ROT_USER, "backend_password_file": str(secret)}]
    proxy = start_proxy(users=users, admin=True)
    with proxy.connect(user="hashfe", password="Hash-Pw-9") as c, c.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone()[0].startswith(f"{ROT_USER}@")
    for wrong in ("hash-pw-9", server_hash, ""):
        with pytest.raises(pymysql.MySQLError) as e:
            proxy.connect(user="hashfe", password=wrong)
        assert e.value.args[0] == 1045
    # an operator adds a user on the admin port, in clear: stored hashed at once, and it logs in
    with proxy.admin_connect() as a, a.cursor() as cur:
        cur.execute(f"INSERT INTO mysql_users (username, password, backend_username, backend_password) VALUES ('typed', 'Typed-1', '{ROT_USER}', 'file:{secret}')")
        cur.execute("SELECT password FROM mysql_users WHERE username = 'typed'")
        assert cur.fetchone()[0] == cluster.primary.value("SELECT PASSWORD('Typed-1')")
        cur.execute("LOAD MYSQL USERS TO RUNTIME")
        cur.execute("SELECT group_concat(password) FROM runtime_mysql_users")
        shown = cur.fetchone()[0]
    assert "Typed-1" not in shown and "Hash-Pw-9" not in shown
    with proxy.connect(user="typed", password="Typed-1") as c, c.cursor() as cur:
        cur.execute("SELECT 1")


def test_an_account_kept_only_as_its_hash_logs_in_to_the_servers_with_what_a_client_proved(start_proxy, cluster):
    """The proxy stores app's password only as MariaDB's native hash, for the client side and the
    backend side alike: a client's mysql_native_password login proves SHA1(password), which then
    answers the servers' challenges (ProxySQL's way). Reads on a replica, writes on the primary."""
    from proxy.protocol.auth import native_hash

    p = start_proxy(users=[{"username": "app", "password": native_hash("app_pw")}])
    c = p.connect(autocommit=True, password="app_pw")
    try:
        with c.cursor() as cur:
            cur.execute("SELECT @@server_id")
            assert cur.fetchone()[0] in {r.server_id for r in cluster.replicas}
            cur.execute("SELECT @@server_id FOR UPDATE")
            assert cur.fetchone()[0] == cluster.primary.server_id
    finally:
        c.close()
    with pytest.raises(pymysql.err.OperationalError) as e:
        p.connect(password="wrong")
    assert e.value.args[0] == 1045
    assert "app_pw" not in open(p.log_path).read()
