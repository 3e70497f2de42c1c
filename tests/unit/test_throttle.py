"""proxy.throttle: failed logins slow down, then block, per address and per account (no servers)."""

from __future__ import annotations

from proxy.config import parse_config
from proxy.throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def throttle(**proxy) -> tuple[LoginThrottle, Clock]:
    config = parse_config({"proxy": proxy, "listeners": {"data": {"port": 6033}}, "users": [{"username": "app", "password": "pw"}],
                           "servers": [{"hostgroup_id": 0, "hostname": "127.0.0.1"}]})
    clock = Clock()
    return LoginThrottle(config, clock), clock


def test_delay_grows_after_the_first_failures_then_the_address_is_blocked():
    t, clock = throttle(login_delay_after=3, max_login_delay=5, max_connect_errors=10, host_block_time=60)
    delays = [t.failed("10.0.0.9", "app") for _ in range(9)]
    assert delays == [0, 0, 0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    assert not t.address_blocked("10.0.0.9")
    assert t.failed("10.0.0.9", "app") == 5.0  # the tenth: capped, and now blocked
    assert t.address_blocked("10.0.0.9") and not t.address_blocked("10.0.0.10")
    clock.t += 61
    assert not t.address_blocked("10.0.0.9")  # the block expires (MariaDB needs FLUSH HOSTS)


def test_other_addresses_and_accounts_are_not_slowed():
    t, _ = throttle(login_delay_after=2, max_connect_errors=0)
    for _ in range(20):
        t.failed("10.0.0.9", f"guess{_}")  # a spray over accounts from one address
    assert t.failed("10.0.0.9", "x") > 0
    assert t.failed("10.0.0.1", "other") == 0  # another address, another account: no delay
    assert not t.address_blocked("10.0.0.9")  # max_connect_errors = 0: never blocked


def test_an_account_is_blocked_only_when_max_password_errors_is_set():
    t, _ = throttle(login_delay_after=100)
    for i in range(50):
        t.failed(f"10.0.1.{i}", "app")  # one account from many addresses
    assert not t.account_blocked("app")  # default 0: never (a lock-out anyone could cause)
    t2, _ = throttle(login_delay_after=100, max_password_errors=5)
    for i in range(5):
        t2.failed(f"10.0.1.{i}", "app")
    assert t2.account_blocked("app") and not t2.account_blocked("other")


def test_success_forgives_and_old_failures_expire():
    t, clock = throttle(login_delay_after=1, host_block_time=30)
    t.failed("10.0.0.9", "app")
    assert t.failed("10.0.0.9", "app") == 0.1
    t.succeeded("10.0.0.9", "app")
    assert t.failed("10.0.0.9", "app") == 0  # counted from zero again
    clock.t += 31
    assert t.failed("10.0.0.9", "app") == 0  # the earlier failure expired
