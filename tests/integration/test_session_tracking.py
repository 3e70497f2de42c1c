"""The server's own session tracking as ground truth: state a statement's text does not show.

A procedure, a stored function or a trigger can set a user variable or create a temporary table;
the statement that ran it (CALL p(), SELECT f(), INSERT ...) looks harmless to the classifier. The
proxy asks every backend connection for CLIENT_SESSION_TRACK with session_track_state_change=ON, so
the server flags such a change in its OK/EOF (SERVER_SESSION_STATE_CHANGED); the session then keeps
that connection (pin reason "state changed inside a statement"). Clients that did not negotiate
session tracking (PyMySQL here) get their OK packets exactly as the server would have sent them.

These run with real PyMySQL clients under multiplexing, with other sessions sharing the writer,
so a lost pin shows up as a NULL variable or a missing table.
"""

from __future__ import annotations

import re
import signal
import time
from typing import Any

import pymysql
import pytest

from .test_multiplexing import MUX_USER, W, Load, close, eventually, log_lines, mux_proxy, mux_user, one  # noqa: F401 - fixtures

PIN = "state changed inside a statement (server session tracking)"


@pytest.fixture
def routines(cluster: Any, schema: str, mux_user: str, direct: Any) -> str:
    """A procedure that sets a user variable and creates a temporary table, and a function that
    sets a user variable, in `schema` (the proxy's backend user may only run them)."""
    with direct.cursor() as cur:
        cur.execute(f"USE `{schema}`")
        cur.execute(
            "CREATE PROCEDURE make_state() BEGIN SET @from_proc = 7; "
            "CREATE TEMPORARY TABLE tmp_from_proc (n INT); INSERT INTO tmp_from_proc VALUES (1), (2); END"
        )
        cur.execute("CREATE PROCEDURE nothing() BEGIN DO 1; END")
        cur.execute("CREATE FUNCTION mark() RETURNS INT NO SQL BEGIN SET @from_func = 5; RETURN 1; END")
    cluster.primary.sql(f"GRANT EXECUTE ON `{schema}`.* TO '{MUX_USER}'@'%', '{MUX_USER}'@'localhost'")
    cluster.wait_replicated()
    return schema


def _others(cur: Any, i: int) -> None:
    cur.execute(f"{W}SELECT @from_proc, @@pseudo_thread_id")  # never another session's state
    assert cur.fetchone()[0] is None


def test_state_made_inside_a_procedure_stays_with_the_session(mux_proxy, routines):
    p = mux_proxy(writer_max=3)
    a = p.connect(autocommit=True, database=routines)
    try:
        with Load(p, 6, _others) as load:
            before = load.rounds
            with a.cursor() as cur:
                cur.execute("CALL make_state()")
            tids = set()
            for _ in range(8):
                assert one(a, "SELECT @from_proc") == (7,)
                assert one(a, "SELECT COUNT(*) FROM tmp_from_proc") == (2,)
                tids.add(one(a, f"{W}SELECT @@pseudo_thread_id")[0])
                time.sleep(0.02)
            assert load.rounds > before, "the other sessions did not run meanwhile"
        assert len(tids) == 1, f"the session's statements ran on several connections: {tids}"
        # The operator can see why (SIGUSR1 lists every session with its pin reasons).
        p.process.send_signal(signal.SIGUSR1)
        eventually(lambda: log_lines(p, re.escape(f"pins=[{PIN}]")), 3.0, "the pin reason in the session report")
    finally:
        close(a)


def test_a_procedure_that_changes_nothing_does_not_pin(mux_proxy, routines):
    p = mux_proxy(writer_max=3)
    a = p.connect(autocommit=True, database=routines)
    try:
        with a.cursor() as cur:
            cur.execute("CALL nothing()")
        p.process.send_signal(signal.SIGUSR1)
        line = eventually(lambda: log_lines(p, r"session=\d+ .*pins=\["), 3.0, "the session report")
        assert "pins=[]" in line[-1], line
    finally:
        close(a)


def test_a_function_with_a_side_effect_pins_and_does_not_leak_to_other_sessions(mux_proxy, routines, cluster):
    p = mux_proxy(writer_max=2)
    a = p.connect(autocommit=True, database=routines)
    try:
        # A stored function may write, so the classifier sends it to the writer; the server says
        # it changed session state, and the session keeps that connection.
        assert one(a, "SELECT mark(), @@server_id") == (1, cluster.primary.server_id)
        tid = one(a, f"{W}SELECT @@pseudo_thread_id")
        for _ in range(5):
            assert one(a, "SELECT @from_func") == (5,)
            c = p.connect(autocommit=True)
            try:
                row = one(c, f"{W}SELECT @from_func, @@pseudo_thread_id")
            finally:
                close(c)
            assert row[0] is None and (row[1],) != tid, f"another session got the pinned connection: {row}"
            assert one(a, f"{W}SELECT @@pseudo_thread_id") == tid
    finally:
        close(a)
    # Given back at the end, the connection is reset: nobody inherits the variable.
    c = p.connect(autocommit=True)
    try:
        for _ in range(3):
            assert one(c, f"{W}SELECT @from_func") == (None,)
    finally:
        close(c)


def test_client_without_session_track_gets_the_servers_plain_ok(mux_proxy, routines, direct):
    """PyMySQL does not negotiate CLIENT_SESSION_TRACK: no state bytes, no 0x4000 flag, the same
    info text as connecting directly."""
    p = mux_proxy()
    a = p.connect(autocommit=True, database=routines)
    try:
        for sql in ("SET @v = 1", "SET time_zone = '+02:00'", f"USE `{routines}`", "CALL make_state()", "CREATE TABLE IF NOT EXISTS t (n INT)", "INSERT INTO t VALUES (1), (2)", "UPDATE t SET n = n + 1"):
            with a.cursor() as cur:
                cur.execute(sql)
            via_proxy = (a.server_status & 0x4000, a._result.message)
            with direct.cursor() as cur:
                cur.execute(f"USE `{routines}`")
                cur.execute(sql)
            assert via_proxy == (0, direct._result.message), sql
    finally:
        close(a)
