"""Login throttling: failed logins per client address and per account slow down, then block.

Theory of operation: a password guesser is slowed where it costs it and nobody else. Each failed
login counts against the client's address and against the account it named:
- after `login_delay_after` failures (address or account, whichever has more), each further failure
  is answered after a delay that doubles from 0.1 s up to `max_login_delay` (the client waits for its
  ERR 1045; a guesser that opens connections in parallel is held by the per-address handshake cap,
  proxy.app, so its rate falls too);
- after `max_connect_errors` failures an address is blocked for `host_block_time` seconds: its new
  connections get ERR 1129, as MariaDB says for max_connect_errors (which needs FLUSH HOSTS; here the
  block expires);
- after `max_password_errors` failures an account is blocked the same way: ERR 4150, MariaDB's
  max_password_errors (0, the default, = never: a block on an account is a lock-out anyone can cause).
A successful login clears its address's and account's counts, as the server does. Counts of an
address or account that stops failing expire after `host_block_time`; the tables are bounded, so a
spray over many addresses cannot grow them without limit.

Pure bookkeeping with an injected clock: no I/O, no sleeping (the login room awaits the delay).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

from .config import Config

MAX_TRACKED = 100_000  # addresses (and accounts) remembered at once; the least recently failing go first
FIRST_DELAY = 0.1


@dataclass(slots=True)
class _Count:
    failures: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


class LoginThrottle:
    def __init__(self, config: Config, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self._addresses: collections.OrderedDict[str, _Count] = collections.OrderedDict()
        self._accounts: collections.OrderedDict[str, _Count] = collections.OrderedDict()
        self.failures = 0  # failed logins counted (stats)
        self.refused = 0  # connections refused because their address or account was blocked

    def _get(self, table: collections.OrderedDict[str, _Count], key: str, now: float) -> _Count | None:
        c = table.get(key)
        if c is not None and c.blocked_until <= now and now - c.last > self.config.host_block_time:
            del table[key]  # stopped failing long ago: forgiven
            return None
        return c

    def address_blocked(self, address: str) -> bool:
        c = self._get(self._addresses, address, self.clock())
        blocked = c is not None and c.blocked_until > self.clock()
        self.refused += blocked
        return blocked

    def account_blocked(self, username: str) -> bool:
        c = self._get(self._accounts, username, self.clock())
        blocked = c is not None and c.blocked_until > self.clock()
        self.refused += blocked
        return blocked

    def failed(self, address: str, username: str) -> float:
        """A failed login: count it; returns the seconds to wait before answering."""
        now = self.clock()
        config = self.config
        self.failures += 1
        worst = 0
        for table, key, limit in ((self._addresses, address, config.max_connect_errors), (self._accounts, username, config.max_password_errors)):
            c = self._get(table, key, now)
            if c is None:
                c = table[key] = _Count()
                if len(table) > MAX_TRACKED:
                    table.popitem(last=False)
            else:
                table.move_to_end(key)
            c.failures += 1
            c.last = now
            if limit and c.failures >= limit:
                c.blocked_until = now + config.host_block_time
            worst = max(worst, c.failures)
        over = worst - config.login_delay_after
        if over <= 0:
            return 0.0
        return min(config.max_login_delay, FIRST_DELAY * 2 ** min(over - 1, 32))

    def succeeded(self, address: str, username: str) -> None:
        self._addresses.pop(address, None)
        self._accounts.pop(username, None)
