"""Backend lending: which backend connection a client session holds in each hostgroup.

Theory of operation: a session runs each statement on a connection of the hostgroup its routing
decision named. `BackendLending` is the session's room for that: it holds at most one connection
per hostgroup (`conns`), borrows them from the host's pools (one pool per server, backend user and
wire settings) and gives them back.

- Choosing a server: once per session and hostgroup, by weight among the ONLINE servers
  (proxy.hostgroups.candidates); the session keeps meeting the same server's caches. A preferred
  server that left ONLINE, or a new routing snapshot, makes the session choose again.
- `try_acquire(hg)` is the hot path: an idle pooled connection of the preferred server,
  synchronously, or None. `acquire(hg)` is the slow path: every ONLINE server of the hostgroup in
  weighted order, waiting on a pool when the server is at its limits.
- `ready(hg)` brings a connection up to the session's state (proxy.session: a pipelined diff, a
  reset where only a reset can undo what another client left). When a reader hostgroup cannot be
  used, the read runs on the writer (`reader_fallback_to_writer`; only reads are ever routed to a
  reader hostgroup).
- `release(conn, reset)` gives a connection back (reset first when it carries state nobody else may
  inherit); `discard(conn)` closes one that failed mid-conversation before its pool can lend it to
  the next waiting session.

Whether a session keeps a connection after a reply (a transaction, a pin, a cursor) is the
session's decision (ClientSession._holds); this room only carries it out. Failures become
HostgroupError, which the session turns into the client's ERR. It never writes to the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from rules.gtid import Position, format_position

from .backend import BackendConnection, BackendError, ReplySink
from .causal import CausalReads
from .config import Server
from .hostgroups import candidates
from .interfaces import SessionCore
from .logsafe import LogLimiter
from .pins import Pins
from .pool import Pool, PoolTimeout
from .protocol.constants import Command, ErrorCode
from .protocol.packets import ERR
from .session import LOGIN_CHARSET_QUERY, LOGIN_CHARSET_VARIABLES, ConnState, login_charset_assignment, login_values, setup_assignments

if TYPE_CHECKING:
    from .interfaces import SessionHost

log = logging.getLogger("rwproxy.session")
# Warnings about a server or a hostgroup every session would repeat: one line, then a count.
_limited = LogLimiter(log)
_monotonic_ns = time.monotonic_ns
AVOID_FOR = 2.0  # seconds a session keeps away from a server that just failed it (the monitor decides after)
RETRY_PAUSE = 0.5  # seconds between rounds of connection attempts while a hostgroup has no reachable server


async def opened_state(conn: BackendConnection, collation: int, learned: list[str], timeout: float) -> ConnState:
    """The state of a backend connection its pool just opened with the client's `collation`.

    What the server made of that collation at login is learned from the server the first time
    (`learned`, kept by the pool's connector: every connection of a pool logs in with the same
    collation), so that restoring it replays exactly that, whatever the id was (MariaDB replaces
    an id it does not know, such as MySQL 8's 255, by its own defaults)."""
    if not learned:
        try:
            rows = await asyncio.wait_for(conn.query_rows(LOGIN_CHARSET_QUERY), timeout)
        except (asyncio.TimeoutError, ConnectionError) as e:
            conn.close()
            raise BackendError(conn.server, f"no answer to a character set query: {failure(e, timeout)}") from None
        if isinstance(rows, ERR):
            conn.close()
            raise BackendError(conn.server, f"could not read the connection's character sets: {rows.message}")
        values = {bytes(r[0] or b"").decode().lower(): (r[1] or b"").decode("utf-8", "replace") for r in rows if len(r) == 2}
        learned.append(login_charset_assignment(*(values.get(v) or None for v in LOGIN_CHARSET_VARIABLES)))
    restore = login_values(conn.capabilities)
    hs = conn.handshake
    setup = setup_assignments(
        tracks=conn.tracks, mariadb=hs is None or "mariadb" in hs.server_version.lower(), login_charset=learned[0], restore=restore
    )
    return ConnState(login_collation=collation, login_charset=learned[0], restore=restore, setup=setup)


class Borrower(SessionCore, Protocol):
    """The session a lending room serves (proxy.client.ClientSession)."""

    commands: ReplySink  # where a lent connection's replies and events go
    pins: Pins  # a pinned session's state is on its writer: nothing runs elsewhere
    causal: CausalReads  # its consistent-read mode


class HostgroupError(Exception):
    """No usable connection to a hostgroup. `err` is the server's own ERR when it gave one."""

    def __init__(self, hostgroup: int, message: str, err: ERR | None = None) -> None:
        super().__init__(message)
        self.hostgroup, self.err = hostgroup, err

    def client_err(self) -> tuple[int, str, str | None]:
        if self.err is not None:
            return self.err.code, self.err.message, self.err.sqlstate
        return ErrorCode.HOSTGROUP_UNREACHABLE, str(self), None


def failure(e: BaseException, timeout: float) -> str:
    """Why talking to a backend failed, in words (a TimeoutError's str() is empty)."""
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer within {timeout:g}s (connect_timeout)"
    return str(e) or type(e).__name__


class BackendLending:
    __slots__ = ("session", "host", "conns", "wire", "_pools", "_preferred", "_released", "_avoid")

    def __init__(self, session: Borrower, host: SessionHost, released: Callable[[BackendConnection], None]) -> None:
        self.session = session
        self.host = host
        self.conns: dict[int, BackendConnection] = {}  # hostgroup -> the session's connection there
        self.wire: tuple[int, int] = (0, 0)  # mirrored capabilities and collation: part of the pool key
        self._pools: dict[str, Pool] = {}  # server address -> the pool for this session's user and wire
        self._preferred: dict[int, Server] = {}  # hostgroup -> the server this session prefers there
        self._released = released  # the session forgets a connection it no longer holds (backpressure)
        self._avoid: dict[str, float] = {}  # server address -> until when this session keeps away from it

    def start(self, wire: tuple[int, int]) -> None:
        """A (new) login: nothing held, pools chosen afresh for the user's backend account and `wire`."""
        self.wire = wire
        self._pools = {}

    def config_changed(self) -> None:
        """A new routing snapshot: servers are chosen again, by the new weights and statuses; the
        connections the session holds to a server that is down (SHUNNED, OFFLINE_HARD) are dropped
        at once, a statement in flight on one included (`backend_lost` retries it where that is safe)."""
        self._preferred.clear()
        self._pools.clear()
        self._avoid.clear()
        down = self.session.router.down
        if down:
            for conn in list(self.conns.values()):
                if conn.server.address in down:
                    conn.abort(f"server {conn.server.address} is SHUNNED or OFFLINE_HARD")

    def pool(self, server: Server) -> Pool:
        pool = self._pools.get(server.address)
        if pool is None:
            user = self.session.user
            pool = self._pools[server.address] = self.host.pool_for(server, user.backend_username, user.backend_password, *self.wire)
        return pool

    def take(self, conn: BackendConnection, hostgroup: int) -> BackendConnection:
        conn.hostgroup = hostgroup
        if conn.stats.hostgroup != hostgroup:  # its stats handle: per (hostgroup, server)
            conn.stats = self.host.stats.server(hostgroup, conn.server.address)
        conn.attach(self.session.commands)  # its replies and events go to the command loop
        self.conns[hostgroup] = conn
        return conn

    # ---- borrowing ----------------------------------------------------------------------------

    def try_acquire(self, hostgroup: int) -> BackendConnection | None:
        """Hot path: an idle pooled connection of a server of `hostgroup`, synchronously, or None."""
        server = self._preferred.get(hostgroup)
        if server is None or server.status != "ONLINE":
            # Chosen once per session by weight (the spread over servers is per session, and a
            # session's statements keep meeting the same server's caches).
            picks = self._choices(hostgroup)
            if not picks:
                return None
            server = self._preferred[hostgroup] = picks[0]
        conn = self.pool(server).try_acquire()
        if conn is None:
            return None
        conn = self.take(conn, hostgroup)
        conn.stats.acquire_immediate += 1
        return conn

    def _choices(self, hostgroup: int) -> list[Server]:
        """The ONLINE servers of `hostgroup` in weighted-random order, minus those this session saw
        fail a moment ago (until the monitor's next snapshot, or AVOID_FOR seconds)."""
        picks = candidates(self.session.router.hostgroups.servers(hostgroup))
        avoid = self._avoid
        if avoid:
            now = time.monotonic()
            for address, until in list(avoid.items()):
                if until < now:
                    del avoid[address]
            picks = [p for p in picks if p.address not in avoid]
        return picks

    def avoid(self, server: Server) -> None:
        """`server` failed this session's statement: choose another for it and the next ones."""
        self._avoid[server.address] = time.monotonic() + AVOID_FOR
        for hg, preferred in list(self._preferred.items()):
            if preferred.address == server.address:
                del self._preferred[hg]

    async def acquire(self, hostgroup: int, wait: float = 0.0) -> BackendConnection:
        """A connection to a server of `hostgroup` (its ONLINE servers tried in weighted order).

        When none can be reached, wait up to `wait` seconds for the topology to change (a new
        snapshot: a promotion, a server back ONLINE) and try again; then HostgroupError (ERR 9001)."""
        session, stats = self.session, self.host.stats
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        last: Exception | None = None
        while True:
            servers = self._choices(hostgroup)
            preferred = self._preferred.get(hostgroup)
            if preferred in servers:
                servers.remove(preferred)
                servers.insert(0, preferred)
            for server in servers:
                t0 = _monotonic_ns()
                try:
                    conn = await self.pool(server).acquire()
                except BackendError as e:
                    if e.err is not None and e.err.code != ErrorCode.CON_COUNT_ERROR and "refused connection" not in e.cause:
                        # The server answered and said no (access denied for the backend user): that
                        # is the client's answer, exactly as the server gave it.
                        session.log(logging.WARNING, "backend %s (hostgroup %d) refused login: %d %s", server.address, hostgroup, e.err.code, e.err.message)
                        raise HostgroupError(hostgroup, e.err.message, e.err) from None
                    _limited.log(logging.WARNING, ("unavailable", server.address), "backend %s (hostgroup %d) unavailable: %s", server.address, hostgroup, e.cause)
                    self.avoid(server)
                    last = e
                    continue
                except PoolTimeout as e:
                    stats.acquire_failed(stats.server(hostgroup, server.address), _monotonic_ns() - t0)
                    session.log(logging.WARNING, "hostgroup %d: %s", hostgroup, e)
                    raise HostgroupError(
                        hostgroup,
                        f"rwproxy: hostgroup {hostgroup}: waited {e.waited:g}s for a backend connection ({e.why}); "
                        "the server's max_connections or [pool] limits are too low for this load",
                    ) from None
                if session.closed:
                    conn.pool.release(conn)
                    raise HostgroupError(hostgroup, "client went away")
                conn = self.take(conn, hostgroup)
                stats.acquire_done(conn.stats, _monotonic_ns() - t0)
                return conn
            remaining = deadline - loop.time()
            if remaining <= 0 or session.closed:
                why = f"{last}" if last is not None else "no ONLINE server"
                # A server that refused with ER_CON_COUNT_ERROR said what the client would hear
                # directly: 1040 Too many connections, passed on as the server's.
                full = getattr(last, "err", None)
                raise HostgroupError(
                    hostgroup,
                    f"rwproxy: Max connect timeout reached while reaching hostgroup {hostgroup} after {wait * 1000:.0f}ms "
                    f"({why}); check that its servers are running and reachable, and [monitor] for their status",
                    full if full is not None and full.code == ErrorCode.CON_COUNT_ERROR else None,
                )
            # Nothing to try now: wait for a new snapshot (the monitor promoting a writer, a server
            # back ONLINE), or retry the same servers a little later.
            await self.host.topology_changed(min(remaining, RETRY_PAUSE))
            self._avoid.clear()

    async def ready(self, hostgroup: int, read: bool = False, wait: float | None = None, replayable: bool = False) -> BackendConnection:
        """The session's connection to `hostgroup`, carrying the session's state.

        `read`: the statement is a provable read (rules.classify), so when a reader hostgroup cannot
        be used it runs on the writer ([replication_hostgroups] reader_fallback_to_writer, outside a
        transaction); any other statement gets an ERR naming the hostgroup. `replayable`: a SET of
        session state the proxy replays (rules.engine.replayable_set), which runs on the pair's
        reader while the writer has no reachable server: a client connecting during a failover
        (drivers send SET autocommit / NAMES at connect) can still log in and read. `wait`: how long
        to wait for the hostgroup to have a reachable server (default: no wait for a statement that
        can run elsewhere, else [monitor] connect_timeout_server_max, so a promotion costs latency,
        not errors; a wait for a free connection of a reachable server is the pool's, [pool]
        acquire_timeout)."""
        session = self.session
        free = session.txn_hg is None and not session.pins.pinned
        if hostgroup != session.writer_hg:
            elsewhere = session.writer_hg if read and free and session.router.ruleset.reader_fallback_to_writer else None
        else:
            elsewhere = session.router.ruleset.reader_of.get(hostgroup) if replayable and free else None
        if wait is None:
            wait = 0.0 if elsewhere is not None else self.host.config.monitor.connect_timeout_server_max / 1000
        try:
            conn = self.conns.get(hostgroup)
            if conn is None:
                conn = await self.acquire(hostgroup, wait)
            return await self._bring_up(conn, hostgroup)
        except HostgroupError as e:
            if elsewhere is None:
                raise
            # Only a read falls back to the writer, and only a replayable SET to a reader.
            _limited.log(logging.WARNING, ("fallback", hostgroup), "hostgroup %d unusable (%s); running on hostgroup %d", hostgroup, e, elsewhere)
            return await self.ready(elsewhere, read=read)

    def preferred(self, hostgroup: int) -> Server | None:
        return self._preferred.get(hostgroup)

    def prefer(self, hostgroup: int, server: Server) -> None:
        """Run this session's next statements in `hostgroup` on `server` (a replica known to have
        applied the writes a consistent read must see)."""
        if self._preferred.get(hostgroup) is not server:
            self._preferred[hostgroup] = server
            held = self.conns.get(hostgroup)
            if held is not None and held.server.address != server.address and self.session.txn_hg != hostgroup and not held.scanner:
                self.release(held)

    async def ready_caught_up(self, hostgroup: int, required: Position, wait: float, mode: str | None = None) -> BackendConnection:
        """A connection to a server of `hostgroup` that has applied `required`: one of the session's
        choice, made to wait for it (MASTER_GTID_WAIT, up to `wait` seconds). When the wait runs out
        (the replica lags) or fails, the writer's connection instead (its hostgroup tells the
        caller which it got). `mode`: the causal_reads mode the counters name (a query rule's, or
        by default the session's)."""
        stats, positions = self.host.stats, self.host.positions
        mode = mode or self.session.causal.mode
        conn = await self.ready(hostgroup, read=True)
        if conn.hostgroup == self.session.writer_hg:  # the read fell back to the writer already
            return conn
        t0 = _monotonic_ns()
        text = format_position(required)
        try:
            got = await asyncio.wait_for(conn.query_value(f"SELECT MASTER_GTID_WAIT('{text}', {wait:g})"), wait + self.host.config.connect_timeout)
        except (asyncio.TimeoutError, ConnectionError) as e:
            self.discard(conn)
            got = e
        stats.causal_wait_ns += _monotonic_ns() - t0
        if got == b"0":
            positions.reached(conn.server.address, required)
            stats.causal[(mode, "waited")] = stats.causal.get((mode, "waited"), 0) + 1
            return conn
        stats.causal[(mode, "timeout")] = stats.causal.get((mode, "timeout"), 0) + 1
        _limited.log(logging.WARNING, ("causal", conn.server.address), "replica %s did not apply %s within %gs (%s): the read runs on the writer",
                     conn.server.address, text, wait, getattr(got, "message", got))
        if not conn.closed and self.conns.get(hostgroup) is conn:
            self.release(conn)
        self.avoid(conn.server)
        return await self.ready(self.session.writer_hg, read=True)

    async def _bring_up(self, conn: BackendConnection, hostgroup: int) -> BackendConnection:
        """Make `conn` carry the session's state: a pipelined diff, or a reset where only a reset can
        undo what another client left."""
        session = self.session
        timeout = self.host.config.connect_timeout
        state = session.state
        cs = conn.cstate
        if state.schema is None and cs.schema is not None:
            # Only COM_CHANGE_USER leaves a connection with no default schema.
            user = session.user
            try:
                secret = self.host.backend_secret(conn.server, user.backend_username, user.backend_password)
                err = await asyncio.wait_for(conn.change_user(user.backend_username, secret, None, session.collation), timeout)
            except (asyncio.TimeoutError, ConnectionError, BackendError) as e:
                self.discard(conn)
                raise HostgroupError(hostgroup, f"rwproxy: backend {conn.server.address} (hostgroup {hostgroup}) failed while resetting a connection: {failure(e, timeout)}") from None
            if err is not None:
                self.release(conn, reset=True)
                raise HostgroupError(hostgroup, f"rwproxy: could not reset a connection to {conn.server.address} (hostgroup {hostgroup}): {err.message}", err)
            cs = conn.cstate = cs.after_reset(None)  # (no schema: that is what COM_CHANGE_USER was for)
            conn.prepared.clear()
        cmds = state.replay_for(cs)
        if state.needs_reset(cs):
            cmds = [bytes((Command.RESET_CONNECTION,))] + state.replay_for(cs.after_reset(cs.schema))
            conn.prepared.clear()
        if cmds:
            try:
                err = await asyncio.wait_for(conn.replay(cmds), timeout)
            except (asyncio.TimeoutError, ConnectionError) as e:
                self.discard(conn)
                raise HostgroupError(hostgroup, f"rwproxy: backend {conn.server.address} (hostgroup {hostgroup}) failed while restoring session state: {failure(e, timeout)}") from None
            if err is not None:
                session.log(logging.WARNING, "restoring session state on %s (hostgroup %d) failed: %d %s", conn.server.address, hostgroup, err.code, err.message)
                self.release(conn, reset=True)  # its state is now unknown
                raise HostgroupError(hostgroup, f"rwproxy: could not restore this session's state on {conn.server.address} (hostgroup {hostgroup}): {err.message}", err)
        state.mark_synced(conn.cstate)
        conn.cstate.set_up = True
        return conn

    # ---- giving back --------------------------------------------------------------------------

    def release(self, conn: BackendConnection, reset: bool = False) -> None:
        if self.conns.get(conn.hostgroup) is conn:
            del self.conns[conn.hostgroup]
        conn.detach()
        self._released(conn)
        if conn.scanner is not None:
            conn.close()  # mid-reply: nobody can use the rest of it
        pool = getattr(conn, "pool", None)
        if pool is not None:
            pool.release(conn, reset=reset)
        else:
            conn.close()

    def discard(self, conn: BackendConnection) -> None:
        """A connection that failed mid-conversation: closed first, so its pool drops it rather than
        lending it to the next session waiting."""
        conn.close()
        self.release(conn)

    def release_all(self, dirty: bool, txn_hg: int | None, keep: BackendConnection | None = None, also: BackendConnection | None = None) -> None:
        """Give back every held connection; those with state nobody can replay (`dirty`, the
        transaction's, or `also`) are reset first."""
        for conn in list(self.conns.values()):
            if conn is not keep:
                self.release(conn, reset=dirty or conn.hostgroup == txn_hg or conn is also)
