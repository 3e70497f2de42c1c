"""ProxyApp's client accounting and idle sweep, with stand-in sessions (no sockets, no servers)."""

from __future__ import annotations

from types import SimpleNamespace

from proxy.app import ProxyApp
from proxy.config import parse_config


def _app(**proxy) -> ProxyApp:
    return ProxyApp(
        parse_config(
            {
                "proxy": proxy,
                "listeners": {"data": {"port": 6033}},
                "users": [{"username": "app", "password": "pw"}],
                "servers": [{"hostgroup_id": 0, "hostname": "127.0.0.1"}],
            }
        )
    )


def _session(i: int, idle_limit: float = 1.0, **kw) -> SimpleNamespace:
    s = SimpleNamespace(id=i, admitted=False, counted_user=None, busy=False, logged_in=True, closed=False, last_activity=0.0, idle_closed=False,
                        client_ip=f"10.0.0.{i}", peer=f"10.0.0.{i}:1000", partial_since=0.0)
    s.close_idle = lambda: setattr(s, "idle_closed", True)
    s.idle_limit = lambda: idle_limit
    s.__dict__.update(kw)
    return s


def test_admit_counts_up_to_max_connections_and_forget_releases():
    app = _app(max_connections=2)
    a, b, c = _session(1), _session(2), _session(3)
    assert [app.admit(s) for s in (a, b, c)] == [None, None, None]  # registered (handshake caps apart)
    assert [app.count_client(s) for s in (a, b, c)] == [True, True, False]
    assert [s.admitted for s in (a, b, c)] == [True, True, False]
    assert app.admitted == 2 and len(app.sessions) == 3  # the refused one is tracked, not counted
    app.forget(c)
    assert app.admitted == 2
    app.forget(a)
    app.forget(a)  # a second teardown changes nothing
    assert app.admitted == 1
    d = _session(4)
    assert app.admit(d) is None and app.count_client(d)


def test_user_counts_move_and_release():
    app = _app()
    assert app.login_user("app", 2) and app.login_user("app", 2)
    assert not app.login_user("app", 2)
    assert app.user_sessions == {"app": 2}
    s = _session(1, counted_user="app", admitted=True)
    app.admit(s)
    app.forget(s)
    assert app.user_sessions == {"app": 1} and s.counted_user is None
    app.logout_user("app")
    assert app.user_sessions == {}


def test_sweep_closes_only_logged_in_free_sessions_idle_past_their_limit():
    app = _app(client_idle_timeout=1)
    idle = _session(1, last_activity=10.0, idle_limit=5.0)
    busy = _session(2, last_activity=10.0, busy=True, idle_limit=5.0)  # a statement in flight is not idleness
    handshaking = _session(3, last_activity=0.0, logged_in=False, busy=True, idle_limit=5.0)
    recent = _session(4, last_activity=12.0, idle_limit=5.0)
    patient = _session(5, last_activity=1.0, idle_limit=30.0)  # its own SET wait_timeout = 30
    never = _session(6, last_activity=0.0, idle_limit=0.0)  # 0 = never
    for s in (idle, busy, handshaking, recent, patient, never):
        app.admit(s)
    assert app.sweep_idle(now=16.0) == 1
    assert [s.idle_closed for s in (idle, busy, handshaking, recent, patient, never)] == [True, False, False, False, False, False]
