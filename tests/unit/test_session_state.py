"""proxy.session: what a connection must be sent to carry a session's state (no servers).

The integration tests (tests/integration/test_transparency.py) check the same against MariaDB; these
pin down the replay text itself.
"""

from __future__ import annotations

from proxy.protocol.constants import Capability, Command
from proxy.protocol.packets import DEFAULT_TRACKING, NO_TRACKING, TrackingMask
from proxy.session import ConnState, SessionState, login_charset_assignment, login_values, setup_assignments, tracking_assignment
from rules.classify import SetScope, SetTarget, classify

S = SetScope.SESSION


def conn(collation: int = 45, caps: int = 0, **kw) -> ConnState:
    restore = login_values(caps)
    login = "NAMES utf8mb4 COLLATE utf8mb4_general_ci"
    setup = setup_assignments(tracks=True, mariadb=True, login_charset=login, restore=restore)
    return ConnState(login_collation=collation, login_charset=login, restore=restore, setup=setup, set_up=True, **kw)


def sql(cmds: list[bytes]) -> list[str]:
    return [("USE " if c[0] == Command.INIT_DB else "") + c[1:].decode() for c in cmds]


def test_a_set_by_expression_is_replayed_as_the_reported_value():
    st = SessionState("db", 45)
    targets = classify("set autocommit=1, sql_mode = concat(@@sql_mode,',STRICT_TRANS_TABLES')").set_targets
    assert not st.apply(targets)  # nothing reported: it cannot be replayed (the caller pins)
    st = SessionState("db", 45)
    assert st.apply(targets, {"autocommit": "ON", "sql_mode": "IGNORE_SPACE,STRICT_TRANS_TABLES"})
    assert sql(st.replay_for(conn(schema="db"))) == ["SET autocommit=1, sql_mode='IGNORE_SPACE,STRICT_TRANS_TABLES'"]


def test_reported_values_are_written_as_literals_the_server_takes_back():
    st = SessionState(None, 45)
    cls = classify("SET wait_timeout = 2 * 3600, character_set_results = IF(1, NULL, 'x'), lc_time_names = LOWER('DE_de'), time_zone = CONCAT('+0', '2:00')")
    assert st.apply(cls.set_targets, {"wait_timeout": "7200", "character_set_results": "", "lc_time_names": "de_DE", "time_zone": "+02:00"})
    assert sql(st.replay_for(conn())) == ["SET wait_timeout=7200, character_set_results=NULL, lc_time_names='de_DE', time_zone='+02:00'"]
    st = SessionState(None, 45)
    assert not st.apply(classify("SET sql_mode = CONCAT(@@sql_mode, 'x')").set_targets, {"sql_mode": "a\\b"})  # (a backslash)


def test_another_sessions_variable_goes_back_to_the_login_value():
    """SET x=DEFAULT is the global value; a login with CLIENT_IGNORE_SPACE had IGNORE_SPACE in
    sql_mode, and with CLIENT_INTERACTIVE the interactive_timeout as wait_timeout."""
    caps = Capability.IGNORE_SPACE | Capability.INTERACTIVE
    c = conn(caps=caps, schema="db", values={"sql_mode": "sql_mode='ANSI'", "wait_timeout": "wait_timeout=5", "time_zone": "time_zone='+01:00'"})
    (cmd,) = sql(SessionState("db", 45).replay_for(c))
    assert cmd.startswith("SET sql_mode=IF(FIND_IN_SET('IGNORE_SPACE', @@global.sql_mode)")
    assert "wait_timeout=@@global.interactive_timeout" in cmd and cmd.endswith("time_zone=DEFAULT")


def test_a_reset_connection_gets_its_setup_again():
    c = conn(caps=Capability.IGNORE_SPACE, schema="db")
    fresh = c.after_reset("db")
    (cmd,) = sql(SessionState("db", 45).replay_for(fresh))  # the schema is kept by the reset: no USE
    assert cmd == "SET " + c.setup
    assert tracking_assignment(True) in cmd and "NAMES utf8mb4 COLLATE utf8mb4_general_ci" in cmd
    assert "IGNORE_SPACE" in cmd and cmd.endswith("collation_database=DEFAULT")
    assert "transaction_isolation" not in tracking_assignment(True) and "tx_isolation" in tracking_assignment(True)
    assert "tx_isolation" not in tracking_assignment(False)


def test_the_login_charset_is_what_the_server_chose():
    # MariaDB for id 255 (unknown to it): its global defaults; for 224: that collation.
    assert login_charset_assignment("utf8mb4", "utf8mb4", "utf8mb4_general_ci", "utf8mb4") == "NAMES utf8mb4 COLLATE utf8mb4_general_ci"
    assert login_charset_assignment("utf8mb4", "utf8mb4", "utf8mb4_unicode_ci", "utf8mb4") == "NAMES utf8mb4 COLLATE utf8mb4_unicode_ci"
    assert login_charset_assignment("latin1", "utf8mb4", "utf8mb4_general_ci", None) == (
        "character_set_client='latin1', collation_connection='utf8mb4_general_ci', character_set_results=NULL"
    )
    # A session that did not SET NAMES, on a connection another one did: the connection's login text.
    c = conn(values={"\0charset": "NAMES latin1"})
    assert sql(SessionState(None, 45).replay_for(c)) == ["SET NAMES utf8mb4 COLLATE utf8mb4_general_ci"]


def test_the_schema_reported_is_what_a_replay_compares_with():
    st = SessionState("d", 45)
    c = conn(schema=None)  # the server said: no schema (DROP DATABASE d)
    assert sql(st.replay_for(c)) == ["USE d"]


def test_the_clients_own_tracking_settings_shape_what_it_sees():
    st = SessionState(None, 45, DEFAULT_TRACKING)
    assert st.apply(classify("SET session_track_state_change = ON, session_track_system_variables = 'sql_mode,time_zone'").set_targets)
    assert st.tracking == TrackingMask(state_change=True, variables=frozenset({"sql_mode", "time_zone"}))
    assert st.values == {}  # never replayed: the backend keeps the proxy's tracking
    assert st.apply(classify("SET session_track_system_variables = '*', session_track_schema = 0").set_targets)
    assert st.tracking == TrackingMask(schema=False, state_change=True, variables=None)
    st.reset()
    assert st.tracking == DEFAULT_TRACKING
    off = SessionState(None, 45, NO_TRACKING)
    assert off.apply(classify("SET session_track_state_change = ON").set_targets) and off.tracking == NO_TRACKING


def test_the_clients_own_reset_is_mariadbs():
    st = SessionState("d", 45)
    st.apply((SetTarget(S, "time_zone", "'+01:00'"),))
    st.reset(Capability.IGNORE_SPACE)
    assert st.values == {"sql_mode": "sql_mode=DEFAULT", "collation_database": "collation_database=@@global.collation_database"}


def test_a_change_of_schema_gives_the_schemas_character_set_back():
    """After the client's reset (the server's global collation_database) or its own SET
    character_set_database, COM_INIT_DB / USE make it the schema's again, as on the server."""
    st = SessionState("d", 45)
    st.reset()
    st.set_schema("latin1_db")
    assert "collation_database" not in st.values
    st.apply((SetTarget(S, "character_set_database", "'euckr'"),))
    st.set_schema("latin1_db")  # (USE of the same schema recomputes it too)
    assert st.values == {}
