"""Client-side limits, as a MySQL/MariaDB user would expect them from the server itself.

- `[proxy] max_connections`: one connection too many gets ERR 1040 (SQLSTATE 08004) "Too many
  connections" in reply to its handshake response and is closed; everyone else carries on.
- `[[users]] max_connections`: a user over its limit gets ERR 1203 (42000), MySQL's
  max_user_connections wording, after authenticating (also on COM_CHANGE_USER).
- `[proxy] client_idle_timeout`: a silent client gets ERR 4031 (ER_CLIENT_INTERACTION_TIMEOUT,
  sequence id 0) and is closed with its backend connections; a running statement is not silence.
- SIGTERM: no new connections, idle clients closed at once (ERR 1053), transactions and running
  statements get `shutdown_timeout` to finish, the rest is cut, and the process exits 0.

Every case runs real clients (PyMySQL, mysql-connector, the `mariadb` CLI where it matters, and the
raw-socket client for exact bytes) against a proxy of its own in front of the real MariaDB cluster.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest

from tests.rawclient import Raw, parse_err

OTHER = {"username": "other", "password": "other_pw", "backend_username": "app", "backend_password": "app_pw"}


# -- helpers ---------------------------------------------------------------------------------------


def _connector(p: Any, user: str = "app", password: str = "app_pw", **kw: Any) -> Any:
    args = {"host": p.host, "port": p.port, "user": user, "password": password, "use_pure": True, "autocommit": True, "connection_timeout": 10}
    return mysql.connector.connect(**(args | kw))


def _eventually(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy (the proxy notices closes asynchronously)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as e:  # noqa: BLE001 - kept for the failure message
            last = e
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def _try_connect(p: Any, **kw: Any) -> pymysql.connections.Connection | None:
    try:
        return p.connect(autocommit=True, **kw)
    except pymysql.err.OperationalError:
        return None


def _one(conn: pymysql.connections.Connection, sql: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()


def _close(*conns: Any) -> None:
    for c in conns:
        try:
            c.close()
        except Exception:  # noqa: BLE001 - already closed (PyMySQL raises), or closed by the proxy
            pass


def _log_lines(p: Any, pattern: str) -> list[str]:
    pat = re.compile(pattern)
    return [line for line in Path(p.log_path).read_text(errors="replace").splitlines() if pat.search(line)]


def _server_by_id(cluster: Any, server_id: int) -> Any:
    return next(s for s in [cluster.primary, *cluster.replicas] if s.server_id == server_id)


def _thread_alive(server: Any, thread_id: int) -> bool:
    return server.value(f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {int(thread_id)}") == "1"


def _refused(p: Any) -> bool:
    try:
        socket.create_connection((p.host, p.port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


# -- [proxy] max_connections -> ERR 1040 -------------------------------------------------------------


def test_one_over_max_connections_gets_1040_and_others_carry_on(start_proxy):
    p = start_proxy(proxy_settings={"max_connections": 2})
    first, second = p.connect(autocommit=True), p.connect(autocommit=True)
    try:
        # PyMySQL
        with pytest.raises(pymysql.err.OperationalError) as e:
            p.connect()
        assert e.value.args == (1040, "Too many connections")
        # mysql-connector: the SQLSTATE makes it an OperationalError, as a connection error should be
        with pytest.raises(mysql.connector.errors.OperationalError) as ce:
            _connector(p)
        assert (ce.value.errno, ce.value.sqlstate, ce.value.msg) == (1040, "08004", "Too many connections")
        # The exact bytes: greeting, then the ERR where the authentication result would be, then close.
        raw = Raw(p.host, p.port)
        try:
            raw.greeting()
            raw.send_packet(raw.handshake_response("app", "app_pw"), 1)
            seq, payload = raw.expect_packet()
            err = parse_err(payload)
            assert (seq, err.code, err.sqlstate, err.message) == (2, 1040, "08004", "Too many connections")
            raw.expect_closed()
        finally:
            raw.close()
        # The mariadb CLI (Connector/C) prints it as the server's own error.
        if shutil.which("mariadb"):
            res = subprocess.run(
                ["mariadb", "--no-defaults", f"-h{p.host}", f"-P{p.port}", "-uapp", "-papp_pw", "-e", "SELECT 1"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            assert res.returncode == 1 and "ERROR 1040 (08004): Too many connections" in res.stderr, res.stderr

        # The connections inside are unaffected.
        assert _one(first, "SELECT 1") == (1,)
        assert _one(second, "SELECT 2") == (2,)
        assert p.process.poll() is None

        # One leaves, one more gets in; and the limit holds again after that.
        first.close()
        third = _eventually(lambda: _try_connect(p), what="a connection after one closed")
        try:
            assert _one(third, "SELECT 3") == (3,)
            with pytest.raises(pymysql.err.OperationalError) as e:
                p.connect()
            assert e.value.args[0] == 1040
        finally:
            _close(third)
    finally:
        _close(first, second)
    assert len(_log_lines(p, r"too many connections \(max_connections = 2\): refused")) >= 5


def test_failed_and_abandoned_connections_release_their_slot(start_proxy):
    p = start_proxy(proxy_settings={"max_connections": 2})
    held = p.connect(autocommit=True)
    try:
        for _ in range(3):  # wrong password
            with pytest.raises(pymysql.err.OperationalError) as e:
                p.connect(password="wrong")
            assert e.value.args[0] == 1045
        for _ in range(3):  # gone after the greeting, and gone halfway through the handshake
            raw = Raw(p.host, p.port)
            raw.greeting()
            raw.close()
            raw = Raw(p.host, p.port)
            raw.greeting()
            raw.send_raw(b"\x40\x00\x00\x01abc")
            raw.close()
        second = _eventually(lambda: _try_connect(p), what="the second slot to be free")
        try:
            with pytest.raises(pymysql.err.OperationalError) as e:
                p.connect()
            assert e.value.args[0] == 1040
        finally:
            _close(second)
    finally:
        _close(held)


# -- [[users]] max_connections -> ERR 1203 -----------------------------------------------------------


def test_user_over_its_max_connections_gets_1203_other_users_unaffected(start_proxy):
    p = start_proxy(users=[{"username": "app", "password": "app_pw", "max_connections": 2}, OTHER])
    apps = [p.connect(autocommit=True) for _ in range(2)]
    others: list[Any] = []
    try:
        message = "User app already has more than 'max_user_connections' active connections"
        with pytest.raises(pymysql.err.OperationalError) as e:
            p.connect()
        assert e.value.args == (1203, message)
        with pytest.raises(mysql.connector.Error) as ce:
            _connector(p)
        assert (ce.value.errno, ce.value.sqlstate, ce.value.msg) == (1203, "42000", message)
        # Authentication comes first, as in MySQL: a wrong password is still 1045.
        with pytest.raises(pymysql.err.OperationalError) as e:
            p.connect(password="wrong")
        assert e.value.args[0] == 1045

        # The other user is not limited by app's count.
        others = [p.connect(user="other", password="other_pw", autocommit=True) for _ in range(3)]
        for i, o in enumerate(others):
            assert _one(o, f"SELECT {i}") == (i,)
        for a in apps:
            assert _one(a, "SELECT 'still here'") == ("still here",)

        # Closing releases the count.
        apps.pop().close()
        apps.append(_eventually(lambda: _try_connect(p), what="an app connection after one closed"))
        assert _one(apps[-1], "SELECT 1") == (1,)
    finally:
        _close(*apps, *others)
    assert len(_log_lines(p, r"user app is at its max_connections \(2\): refused")) == 2


def test_change_user_moves_the_count_and_respects_the_limit(start_proxy):
    p = start_proxy(users=[{"username": "app", "password": "app_pw", "max_connections": 1}, OTHER])
    app = _connector(p)
    other = _connector(p, "other", "other_pw")
    try:
        # COM_CHANGE_USER to a user at its limit: ERR 1203, and the session carries on as before.
        with pytest.raises(mysql.connector.Error) as ce:
            other.cmd_change_user(username="app", password="app_pw")
        assert (ce.value.errno, ce.value.sqlstate) == (1203, "42000")
        cur = other.cursor()
        cur.execute("SELECT 'still other'")
        assert cur.fetchall() == [("still other",)]
        cur.close()
        # The app session becomes `other`: app's only slot is free again.
        app.cmd_change_user(username="other", password="other_pw")
        cur = app.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchall() == [(1,)]
        cur.close()
        fresh = p.connect(autocommit=True)
        try:
            assert _one(fresh, "SELECT 2") == (2,)
            with pytest.raises(pymysql.err.OperationalError) as e:
                p.connect()
            assert e.value.args[0] == 1203
        finally:
            _close(fresh)
        # ... and once it has gone, `other` may become app.
        _eventually(lambda: other.cmd_change_user(username="app", password="app_pw") or True, what="change_user to app")
        cur = other.cursor()
        cur.execute("SELECT 3")
        assert cur.fetchall() == [(3,)]
        cur.close()
    finally:
        _close(app, other)


# -- [proxy] client_idle_timeout -> ERR 4031 ----------------------------------------------------------


def test_idle_clients_get_4031_and_what_they_held_is_freed(start_proxy, cluster, schema, direct):
    p = start_proxy(proxy_settings={"client_idle_timeout": 1})
    raw = Raw(p.host, p.port)
    raw.login()
    started = time.monotonic()
    idle = p.connect(autocommit=True)
    # The idle session holds something real: an open transaction with a row lock on the primary.
    with direct.cursor() as cur:
        cur.execute(f"CREATE TABLE `{schema}`.locked (id INT PRIMARY KEY, v INT)")
        cur.execute(f"INSERT INTO `{schema}`.locked VALUES (1, 0)")
    with idle.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute(f"UPDATE `{schema}`.locked SET v = 1 WHERE id = 1")
    conn = _connector(p)
    try:
        # The raw client sees exactly what MySQL 8.0.24+ sends on wait_timeout: ERR 4031, seq 0, close.
        raw.sock.settimeout(10)
        seq, payload = raw.expect_packet()
        waited = time.monotonic() - started
        err = parse_err(payload)
        assert (seq, err.code, err.sqlstate) == (0, 4031, "HY000")
        assert err.message.startswith("The client was disconnected by the server because of inactivity.")
        raw.expect_closed()
        assert 1.0 <= waited < 5.0, waited

        # The PyMySQL and mysql-connector clients are past their timeout too.
        _eventually(lambda: len(_log_lines(p, r"closed: no command for")) == 3, what="all three idle sessions to be closed")
        with pytest.raises(pymysql.err.OperationalError) as e:
            _one(idle, "SELECT 1")
        assert e.value.args[0] in (4031, 2013), e.value.args  # PyMySQL reports an unsolicited ERR as 2013
        with pytest.raises(mysql.connector.Error) as ce:
            conn.cmd_query("SELECT 1")
        assert (ce.value.errno, ce.value.sqlstate) == (4031, "HY000")  # mysql-connector reads the unsolicited ERR

        # What the session held is freed: its transaction was rolled back (the pooled connection is
        # reset on its way back to the pool), so the row lock is gone and the update is undone.
        with direct.cursor() as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout = 3")
            cur.execute(f"UPDATE `{schema}`.locked SET v = 2 WHERE id = 1")
            cur.execute(f"SELECT v FROM `{schema}`.locked WHERE id = 1")
            assert cur.fetchone() == (2,)
    finally:
        _close(raw, idle, conn)
    assert len(_log_lines(p, r"closed: no command for .*client_idle_timeout = 1s")) == 3
    assert p.process.poll() is None
    fresh = p.connect(autocommit=True)  # the proxy itself carries on
    try:
        assert _one(fresh, "SELECT 1") == (1,)
    finally:
        _close(fresh)


def test_a_running_statement_is_not_idleness(start_proxy):
    p = start_proxy(proxy_settings={"client_idle_timeout": 1})
    conn = p.connect(autocommit=True)
    try:
        assert _one(conn, "SELECT SLEEP(2)") == (0,)
        # Idleness counts from the end of the reply: the next statement, right away, still works.
        assert _one(conn, "SELECT 'after'") == ("after",)
        time.sleep(0.6)  # and a pause shorter than the timeout is fine too
        assert _one(conn, "SELECT 'later'") == ("later",)
    finally:
        _close(conn)
    assert not _log_lines(p, r"closed: no command")


# -- SIGTERM: graceful shutdown ------------------------------------------------------------------------


def test_sigterm_lets_a_transaction_finish_closes_idle_clients_refuses_new_ones(start_proxy, direct, schema):
    p = start_proxy(proxy_settings={"shutdown_timeout": 10})
    with direct.cursor() as cur:
        cur.execute(f"CREATE TABLE `{schema}`.t (id INT PRIMARY KEY)")
    txn = p.connect(autocommit=True, database=schema)
    with txn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO t VALUES (1)")
    idle_raw = Raw(p.host, p.port)
    idle_raw.login()
    idle = p.connect(autocommit=True)
    assert _one(idle, "SELECT 1") == (1,)
    # autocommit=0 (PyMySQL's default) with nothing open since its COMMIT: nothing to lose, so idle.
    no_autocommit = p.connect(database=schema)
    assert _one(no_autocommit, "SELECT COUNT(*) FROM t") == (0,)
    no_autocommit.commit()
    busy = p.connect(autocommit=True)
    busy_result: list[Any] = []
    sleeper = threading.Thread(target=lambda: busy_result.append(_one(busy, "SELECT SLEEP(2)")))
    sleeper.start()
    time.sleep(0.5)  # the SLEEP is in flight

    signalled = time.monotonic()
    p.process.send_signal(signal.SIGTERM)
    try:
        # The idle client is told at once (ERR 1053, seq 0, as MariaDB does) and closed.
        idle_raw.sock.settimeout(5)
        seq, payload = idle_raw.expect_packet()
        err = parse_err(payload)
        assert (seq, err.code, err.sqlstate, err.message) == (0, 1053, "08S01", "Server shutdown in progress")
        idle_raw.expect_closed()
        assert time.monotonic() - signalled < 3
        for conn in (idle, no_autocommit):
            with pytest.raises(pymysql.err.OperationalError):
                _one(conn, "SELECT 1")
        # New connections are refused.
        _eventually(lambda: _refused(p), timeout=3, what="new connections to be refused")

        # The transaction carries on and commits; the running statement completes.
        with txn.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (2)")
            cur.execute("COMMIT")
        sleeper.join(10)
        assert busy_result == [(0,)]

        # Both were closed as soon as they were done, so the proxy exits well before the deadline.
        assert p.process.wait(timeout=8) == 0
        assert time.monotonic() - signalled < 8
    finally:
        _close(idle_raw, txn, idle, no_autocommit, busy)
    with direct.cursor() as cur:
        cur.execute(f"SELECT id FROM `{schema}`.t ORDER BY id")
        assert cur.fetchall() == ((1,), (2,))
    assert _log_lines(p, r"shutting down: listener closed; 3 session\(s\) closed at once .*; 2 session\(s\) in a transaction")
    assert _log_lines(p, r"shutdown: 2 session\(s\) finished in time, 0 cut")


def test_sigterm_cuts_an_unfinished_transaction_at_the_deadline(start_proxy, direct, schema, cluster):
    p = start_proxy(proxy_settings={"shutdown_timeout": 1})
    with direct.cursor() as cur:
        cur.execute(f"CREATE TABLE `{schema}`.t (id INT PRIMARY KEY)")
    txn = p.connect(autocommit=True, database=schema)
    try:
        with txn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("INSERT INTO t VALUES (1)")
            cur.execute("SELECT CONNECTION_ID()")  # in a transaction: on the writer
            (thread_id,) = cur.fetchone()
        signalled = time.monotonic()
        p.process.send_signal(signal.SIGTERM)
        assert p.process.wait(timeout=8) == 0
        took = time.monotonic() - signalled
        assert 0.9 <= took < 5, took
        with pytest.raises(pymysql.err.OperationalError):
            _one(txn, "COMMIT")
    finally:
        _close(txn)
    _eventually(lambda: not _thread_alive(cluster.primary, thread_id), what="the cut session's backend thread to close")
    with direct.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{schema}`.t")
        assert cur.fetchone() == (0,)  # rolled back by the server
    assert _log_lines(p, r"cut at shutdown: transaction still open on hostgroup 0")
    assert _log_lines(p, r"shutdown: 0 session\(s\) finished in time, 1 cut")


def test_second_signal_cuts_at_once(start_proxy):
    p = start_proxy(proxy_settings={"shutdown_timeout": 30})
    txn = p.connect(autocommit=True)
    try:
        with txn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT 1")
        p.process.send_signal(signal.SIGTERM)
        _eventually(lambda: _log_lines(p, r"shutting down: listener closed"), what="the drain to start")
        assert p.process.poll() is None  # waiting for the transaction
        signalled = time.monotonic()
        p.process.send_signal(signal.SIGINT)
        assert p.process.wait(timeout=5) == 0
        assert time.monotonic() - signalled < 3
    finally:
        _close(txn)
    assert _log_lines(p, r"second signal: closing the remaining 1 session\(s\) now")
