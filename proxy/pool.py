"""Backend connection pools: few server connections for many client sessions.

Theory of operation: a `Pool` holds the connections of one server opened for one backend user with
one set of mirrored capabilities and one connection collation (everything that fixes a connection's
wire behaviour at login; the rest of its session state is tracked and replayed by proxy.session).
Pools of the same server share one `ServerBudget`: the server's `max_connections`, a cap on
concurrent connection attempts and a token-bucket rate of new connections per second — the storm
protection that keeps 2,000 clients arriving in one second from becoming 2,000 logins on the server.

- `try_acquire()` is the hot path: pop the most recently used idle connection (LIFO keeps a small
  warm set busy and lets the rest age out), synchronously, or return None.
- `acquire(timeout)` is the slow path: reuse, else open a connection when the budget allows, else
  wait in FIFO order for a release or a budget slot. Past the deadline it raises PoolTimeout, which
  the session turns into a MySQL ERR naming the hostgroup and the wait.
- `release(conn, reset=False)` gives a connection back: straight to the longest waiter, else to the
  idle list. A connection that carries state the proxy cannot replay is reset first
  (COM_RESET_CONNECTION) in the background; a broken or too old one is closed.
- `maintain()` (called periodically by the app) closes connections idle past `idle_timeout` down to
  `min_idle`, retires connections past `max_lifetime` (with jitter, so a pool opened in a storm does
  not expire in one), and opens connections up to `min_idle`.

A connection that sat idle longer than `validate_after` gets a COM_PING before it is lent (the
cheap check: a server that closed the socket is already known from connection_lost). Nothing here
decides routing or touches client sockets.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .config import PoolSettings
from .protocol.constants import Command

if TYPE_CHECKING:
    from .backend import BackendConnection

log = logging.getLogger("rwproxy.pool")

Connector = Callable[[], Awaitable["BackendConnection"]]


class PoolTimeout(Exception):
    def __init__(self, server: str, waited: float, why: str) -> None:
        super().__init__(f"no connection to {server} within {waited:.3g}s ({why})")
        self.server, self.waited, self.why = server, waited, why


class ServerBudget:
    """What one server allows, shared by all pools of that server."""

    __slots__ = ("address", "max_connections", "open", "connecting", "settings", "_tokens", "_stamp", "waiters", "created", "reused", "pools")

    def __init__(self, address: str, max_connections: int, settings: PoolSettings) -> None:
        self.address = address
        self.max_connections = max_connections
        self.settings = settings
        self.open = 0  # connections counted against max_connections (idle + lent + connecting)
        self.connecting = 0
        # A bucket of one token: new connections are spaced 1/connect_rate apart, so no one-second
        # window ever sees more than connect_rate of them (a bigger bucket would let a cold pool
        # open up to twice the rate in its first second).
        self._tokens = 1.0
        self._stamp = time.monotonic()
        self.waiters: collections.deque[Pool] = collections.deque()  # pools with sessions waiting on this budget
        self.created = 0
        self.reused = 0
        self.pools: list[Pool] = []  # every pool of this server (one per backend user and wire settings)

    def _refill(self, now: float) -> None:
        rate = self.settings.connect_rate
        if rate > 0:
            self._tokens = min(1.0, self._tokens + (now - self._stamp) * rate)
        self._stamp = now

    def try_reserve(self) -> float:
        """Reserve a new-connection slot: 0.0 on success, else seconds until one may free up (-1: wait for a release)."""
        if self.open >= self.max_connections or self.connecting >= self.settings.connect_concurrency:
            return -1.0
        now = time.monotonic()
        if self.settings.connect_rate > 0:
            self._refill(now)
            if self._tokens < 1.0:
                return (1.0 - self._tokens) / self.settings.connect_rate
            self._tokens -= 1.0
        self.open += 1
        self.connecting += 1
        return 0.0

    def connected(self, ok: bool) -> None:
        self.connecting -= 1
        if not ok:
            self.open -= 1
        self.wake()

    def closed(self) -> None:
        self.open -= 1
        self.wake()

    def reclaim_idle(self, requester: "Pool") -> bool:
        """At max_connections, a session of `requester` needs a connection while another pool of
        this server sits on an idle one (clients with other capabilities or collation): close the
        longest idle of those to make room. True if one was closed."""
        if self.open < self.max_connections:
            return False
        oldest: tuple[Pool, BackendConnection, float] | None = None
        for pool in self.pools:
            if pool is not requester and pool.idle:
                conn, since = pool.idle[0]
                if oldest is None or since < oldest[2]:
                    oldest = (pool, conn, since)
        if oldest is None:
            return False
        pool, conn, _ = oldest
        pool.idle.pop(0)
        pool._discard(conn)
        return True

    def wake(self) -> None:
        """A slot may be free: let a waiting pool try again."""
        while self.waiters:
            pool = self.waiters.popleft()
            if pool._wake_one():
                return


class Pool:
    __slots__ = ("budget", "connector", "label", "idle", "lent", "_waiters", "settings", "_closed", "weak")

    def __init__(self, budget: ServerBudget, connector: Connector, label: str) -> None:
        self.budget = budget
        self.connector = connector
        self.label = label
        self.settings = budget.settings
        self.idle: list[tuple[BackendConnection, float]] = []  # (conn, idle since), most recent last
        self.lent = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._closed = False
        # Lent connections their session keeps only for convenience (the diagnostics of its last
        # statement): when the pool is at max_connections, a waiting session takes one of them
        # (`give_up(conn)` releases it, or says False when it cannot be spared now).
        self.weak: dict[BackendConnection, Callable[[BackendConnection], bool]] = {}
        budget.pools.append(self)

    # ---- hot path -----------------------------------------------------------------------------

    def try_acquire(self) -> BackendConnection | None:
        """An idle connection that needs no check, or None (then use `acquire`)."""
        idle = self.idle
        while idle:
            conn, since = idle[-1]
            if conn.closed:
                idle.pop()
                self._forget(conn)
                continue
            if time.monotonic() - since > self.settings.validate_after:
                return None  # needs a ping: slow path
            idle.pop()
            self.lent += 1
            self.budget.reused += 1
            return conn
        return None

    def release(self, conn: BackendConnection, reset: bool = False) -> None:
        """Give a connection back. `reset`: it carries state that cannot be replayed."""
        if self.weak:
            self.weak.pop(conn, None)
        self.lent -= 1
        if conn.closed or self._closed or self._expired(conn):
            self._discard(conn)
            return
        if reset:
            asyncio.get_running_loop().create_task(self._reset_then_release(conn))
            return
        self._give(conn)

    def _give(self, conn: BackendConnection) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                self.lent += 1
                self.budget.reused += 1
                w.set_result(conn)
                return
        budget = self.budget
        if budget.waiters and budget.open >= budget.max_connections and any(
            pool is not self and pool.waiting for pool in budget.waiters
        ):
            # Sessions of another pool of this server (other capabilities or collation) wait for a
            # slot that only a closed connection frees.
            self._discard(conn)
            return
        self.idle.append((conn, time.monotonic()))

    # ---- slow path ----------------------------------------------------------------------------

    async def acquire(self, timeout: float | None = None) -> BackendConnection:
        loop = asyncio.get_running_loop()
        timeout = self.settings.acquire_timeout if timeout is None else timeout
        deadline = loop.time() + timeout
        why = "all connections in use"
        while True:
            conn = self.try_acquire()
            if conn is not None:
                return conn
            if self.idle:  # the most recent idle connection needs a check
                conn, _ = self.idle.pop()
                self.lent += 1
                if await self._alive(conn):
                    self.budget.reused += 1
                    return conn
                self.lent -= 1
                self._discard(conn)
                continue
            wait = self.budget.try_reserve()
            if wait == 0.0:
                return await self._open()
            if wait < 0 and self.budget.reclaim_idle(self):
                continue  # another pool's idle connection made room
            if wait < 0 and self.weak and self._reclaim_weak():
                continue  # a session gave back a connection it kept only for its diagnostics
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise PoolTimeout(self.budget.address, timeout, why)
            why = "connection rate limit" if wait > 0 else (
                f"max_connections={self.budget.max_connections} reached" if self.budget.open >= self.budget.max_connections else "connection attempts in progress"
            )
            fut = loop.create_future()
            self._waiters.append(fut)
            self.budget.waiters.append(self)
            try:
                conn = await asyncio.wait_for(fut, min(remaining, wait) if wait > 0 else remaining)
            except asyncio.TimeoutError:
                if wait > 0 and loop.time() < deadline:
                    continue  # a rate-limit token is due: try again
                raise PoolTimeout(self.budget.address, timeout, why) from None
            finally:
                if not fut.done():
                    fut.cancel()
            if conn is not None:
                return conn
            # woken without a connection: a budget slot may be free; loop and try

    def _reclaim_weak(self) -> bool:
        while self.weak:
            conn = next(iter(self.weak))
            give_up = self.weak.pop(conn)
            if give_up(conn):
                return True
        return False

    @property
    def waiting(self) -> bool:
        """Some session waits on this pool for a connection."""
        return any(not w.done() for w in self._waiters)

    def _wake_one(self) -> bool:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return True
        return False

    async def _open(self) -> BackendConnection:
        ok = False
        try:
            conn = await self.connector()
            ok = True
        finally:
            self.budget.connected(ok)
        conn.born = time.monotonic()  # type: ignore[attr-defined]
        conn.lifetime = self.settings.max_lifetime * random.uniform(0.9, 1.1)  # type: ignore[attr-defined]
        conn.pool = self  # type: ignore[attr-defined]
        self.lent += 1
        self.budget.created += 1
        return conn

    async def _alive(self, conn: BackendConnection) -> bool:
        try:
            err = await asyncio.wait_for(conn.replay([bytes((Command.PING,))]), 5.0)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            return False
        return err is None and not conn.closed

    async def _reset_then_release(self, conn: BackendConnection) -> None:
        self.lent += 1  # still ours until the reset is done
        conn.stats.resets += 1
        try:
            cmds = [bytes((Command.RESET_CONNECTION,))]
            cs = conn.cstate
            if cs is not None and cs.setup:
                # What the reset undid: the proxy's session tracking and what the login and the schema
                # set (proxy.session.setup_assignments).
                cmds.append(b"\x03SET " + cs.setup.encode())
            err = await asyncio.wait_for(conn.replay(cmds), 5.0)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            err = True
        self.lent -= 1
        if err is not None or conn.closed:
            self._discard(conn)
            return
        if conn.cstate is not None:
            cs = conn.cstate
            cs.values, cs.owner, cs.gen = {}, None, -1  # nobody's state any more
        conn.prepared.clear()  # the reset closed them
        self._give(conn)

    # ---- housekeeping -------------------------------------------------------------------------

    def _expired(self, conn: BackendConnection) -> bool:
        life = getattr(conn, "lifetime", 0.0)
        return bool(self.settings.max_lifetime) and time.monotonic() - getattr(conn, "born", 0.0) > life

    def _discard(self, conn: BackendConnection) -> None:
        conn.close()
        self._forget(conn)

    def _forget(self, conn: BackendConnection) -> None:
        if getattr(conn, "pool", None) is self:
            conn.pool = None  # type: ignore[attr-defined]
            self.budget.closed()

    def maintain(self) -> None:
        """Close idle connections past idle_timeout (keeping min_idle) and retire old ones."""
        now = time.monotonic()
        keep: list[tuple[BackendConnection, float]] = []
        surplus = len(self.idle) - self.settings.min_idle
        for conn, since in self.idle:  # oldest first
            if conn.closed or self._expired(conn) or (surplus > 0 and now - since > self.settings.idle_timeout):
                self._discard(conn)
                surplus -= 1
            else:
                keep.append((conn, since))
        self.idle = keep

    async def fill(self) -> None:
        """Open connections up to min_idle (within the server's budget)."""
        while len(self.idle) + self.lent < self.settings.min_idle and self.budget.try_reserve() == 0.0:
            try:
                conn = await self._open()
            except Exception as e:  # noqa: BLE001 - a failed warm-up is logged, not fatal
                log.warning("pool %s: opening an idle connection failed: %s", self.label, e)
                return
            self.lent -= 1
            self._give(conn)

    def close(self, why: str = "proxy shutting down") -> None:
        """No more lending: idle connections close now, lent ones when they come back."""
        self._closed = True
        if self in self.budget.pools:
            self.budget.pools.remove(self)
        for conn, _ in self.idle:
            self._discard(conn)
        self.idle = []
        for w in self._waiters:
            if not w.done():
                w.set_exception(PoolTimeout(self.budget.address, 0, why))

    @property
    def size(self) -> int:
        return len(self.idle) + self.lent
