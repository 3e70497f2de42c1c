"""CONNECTION_ID() and KILL through the proxy use the proxy's connection id (the handshake's)."""

from __future__ import annotations

import threading
import time

import pymysql
import pytest


def one(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()


def test_connection_id_is_the_proxys_and_stable_under_multiplexing(proxy):
    c = proxy.connect(autocommit=True)
    d = proxy.connect(autocommit=True)  # shares backend connections with c
    own = c.thread_id()  # the id in the proxy's handshake
    for _ in range(5):
        assert one(c, "SELECT CONNECTION_ID()") == (own,)
        assert one(d, "SELECT CONNECTION_ID()") == (d.thread_id(),)
        assert one(c, "/* rwproxy:route=writer */ select connection_id() as id, 'connection_id()'") == (own, "connection_id()")
    c.close()
    d.close()


def test_kill_query_interrupts_the_statement_of_another_session(proxy):
    victim = proxy.connect(autocommit=True)
    killer = proxy.connect(autocommit=True)
    outcome = {}

    def run():
        t = time.monotonic()
        try:
            outcome["row"] = one(victim, "/* rwproxy:route=writer */ SELECT SLEEP(20)")
        except pymysql.err.OperationalError as e:
            outcome["err"] = e.args
        outcome["took"] = time.monotonic() - t

    th = threading.Thread(target=run)
    th.start()
    time.sleep(0.5)
    with killer.cursor() as cur:
        cur.execute(f"KILL QUERY {victim.thread_id()}")
    th.join(15)
    assert outcome["took"] < 5
    # MariaDB answers an interrupted SLEEP() with 1 (or ERR 1317 for other statements)
    assert outcome.get("row") == (1,) or outcome.get("err", (0,))[0] == 1317, outcome
    assert one(victim, "SELECT 1") == (1,)  # the session goes on
    victim.close()
    killer.close()


def test_kill_connection_closes_the_other_session(proxy):
    victim = proxy.connect(autocommit=True)
    killer = proxy.connect(autocommit=True)
    with killer.cursor() as cur:
        cur.execute(f"KILL CONNECTION {victim.thread_id()}")
    with pytest.raises(pymysql.err.OperationalError):
        one(victim, "SELECT 1")
    assert one(killer, "SELECT 2") == (2,)
    killer.close()


def test_kill_of_an_unknown_id_or_another_users_session(proxy, start_proxy, cluster):
    c = proxy.connect(autocommit=True)
    with pytest.raises(pymysql.err.OperationalError) as e:
        one(c, "KILL 999999")
    assert e.value.args == (1094, "Unknown thread id: 999999")
    c.close()
    p = start_proxy(users=[{"username": "app", "password": "app_pw"}, {"username": "other", "password": "o_pw", "backend_username": "app", "backend_password": "app_pw"}])
    a = p.connect(autocommit=True)
    b = pymysql.connect(host=p.host, port=p.port, user="other", password="o_pw", autocommit=True)
    with pytest.raises(pymysql.err.OperationalError) as e:
        one(b, f"KILL {a.thread_id()}")
    assert e.value.args == (1095, f"You are not owner of thread {a.thread_id()}")
    assert one(a, "SELECT 3") == (3,)
    a.close()
    b.close()
