"""Authentication: both plugins on the client side, and on the backend side through a proxy chain."""

from __future__ import annotations

import mysql.connector
import pymysql
import pytest

SHA_USER = {"username": "sha", "password": "sha_pw", "auth_plugin": "caching_sha2_password", "backend_username": "app", "backend_password": "app_pw"}


@pytest.fixture
def sha_proxy(start_proxy, cluster):
    app = {"username": "app", "password": "app_pw"}
    return start_proxy(users=[SHA_USER, app])


def test_caching_sha2_user_logs_in_with_pymysql_and_connector(sha_proxy, cluster):
    c = pymysql.connect(host=sha_proxy.host, port=sha_proxy.port, user="sha", password="sha_pw")
    with c.cursor() as cur:
        cur.execute("SELECT @@server_id, CURRENT_USER()")
        server_id, current = cur.fetchone()
    assert server_id == cluster.primary.server_id and current.startswith("app@")
    c.close()
    m = mysql.connector.connect(host=sha_proxy.host, port=sha_proxy.port, user="sha", password="sha_pw", use_pure=True)
    cur = m.cursor()
    cur.execute("SELECT 1")
    assert cur.fetchall() == [(1,)]
    m.close()


def test_caching_sha2_wrong_password_is_1045(sha_proxy):
    with pytest.raises(pymysql.err.OperationalError) as e:
        pymysql.connect(host=sha_proxy.host, port=sha_proxy.port, user="sha", password="nope")
    assert e.value.args[0] == 1045
    assert "Access denied for user 'sha'@'127.0.0.1' (using password: YES)" in e.value.args[1]


def test_native_user_asked_to_switch_when_client_offers_caching_sha2(sha_proxy):
    # mysql-connector offers caching_sha2_password first; the native account makes it switch.
    m = mysql.connector.connect(host=sha_proxy.host, port=sha_proxy.port, user="app", password="app_pw", auth_plugin="caching_sha2_password", use_pure=True)
    cur = m.cursor()
    cur.execute("SELECT 2")
    assert cur.fetchall() == [(2,)]
    m.close()


def test_backend_side_caching_sha2_through_a_proxy_chain(sha_proxy, start_proxy, cluster):
    # Proxy B's backend is proxy A, logging in as A's caching_sha2 user: B's backend code must
    # follow A's auth switch and caching_sha2 fast path, then relay queries end to end.
    front = start_proxy(
        users=[{"username": "chain", "password": "chain_pw", "backend_username": "sha", "backend_password": "sha_pw"}],
        servers=[{"hostgroup_id": 0, "hostname": "127.0.0.1", "port": sha_proxy.port}],
    )
    c = pymysql.connect(host=front.host, port=front.port, user="chain", password="chain_pw")
    with c.cursor() as cur:
        cur.execute("SELECT @@port, 40 + 2")
        assert cur.fetchone() == (cluster.primary.port, 42)
    c.close()
