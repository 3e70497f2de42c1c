"""The running data plane: config -> data and metrics listeners -> sessions and pools; orderly shutdown.

Theory of operation: ProxyApp holds the per-process state explicitly (config, sessions, what was
learned about the writer) so several processes can later each own one. Startup learns the writer's
server version string and default collation from its greeting, because drivers switch behaviour on
them; if no writer answers yet, a MariaDB-looking default is used and replaced by the first real
greeting a backend connection sees.

Client-side limits live here too, as plain per-process state:
- `admitted` counts client connections against [proxy] max_connections from accept to close
  (logged in or not, as MySQL counts them); `user_sessions` counts logged-in sessions per frontend
  user against [[users]] max_connections. Sessions report in and out through `admit`,
  `login_user`/`logout_user` and `forget`, which `ClientSession._teardown` calls exactly once.
- Idle clients: sessions stamp `last_activity` when bytes arrive and when a reply ends; one sweeper
  task (`_sweep_idle`) looks at every session every min(client_idle_timeout / 4, 1 s) and closes the
  ones that are logged in, not busy and idle past the limit. Nothing is armed per statement.
- Shutdown (`stop`): the listener closes at once; sessions that are idle outside a transaction
  (no SERVER_STATUS_IN_TRANS in their last reply) are closed at once; the rest are marked
  `draining` and close themselves as soon as they are free outside a transaction
  (ClientSession.reply_done); whatever is left at shutdown_timeout is cut.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import resource
import time

from .backend import BackendConnection, BackendError, read_server_handshake
from .backend import connect as backend_connect
from .client import ClientSession
from .config import Config, Server, refresh_secrets
from .causal import Positions
from .monitor import Monitor
from .pool import Pool, ServerBudget
from .router import Router
from .lending import opened_state
from .session import PinReason
from .logsafe import LogLimiter
from .protocol import auth
from .protocol.constants import ErrorCode
from .stats import StatsRegistry
from .throttle import LoginThrottle
from .tls import CLIENT_CONTEXTS, ClientContexts, FrontendTLS
from .topology import Topology

log = logging.getLogger("rwproxy")
_limited = LogLimiter(log)  # warnings an attacker could make the proxy repeat

DEFAULT_VERSION = "5.5.5-10.11.0-MariaDB-rwproxy"
DEFAULT_COLLATION = 45  # utf8mb4_general_ci


class ProxyApp:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.router = Router(config)
        self.sessions: dict[int, ClientSession] = {}  # every client connection, logged in or not
        self.admitted = 0  # of those, how many count against [proxy] max_connections
        self.user_sessions: dict[str, int] = {}  # logged-in sessions per frontend user
        self.server_version = DEFAULT_VERSION
        self.collation = DEFAULT_COLLATION
        self.mariadb_capabilities = 0  # the writer's MariaDB extended capabilities (its greeting's)
        self.clock = time.monotonic  # replaced by the running loop's clock in start()
        self.draining = False  # set by stop(): no new clients, sessions close as soon as they are free
        self._version_learned = False
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.Task | None = None
        self._drained: asyncio.Event | None = None  # set when the last session is gone (or on a 2nd signal)
        # Backend pools: one budget per server, one pool per (server, backend user, wire settings).
        self.budgets: dict[str, ServerBudget] = {}
        self.pools: dict[tuple, Pool] = {}
        self._maintainer: asyncio.Task | None = None
        self.pins: collections.Counter[PinReason] = collections.Counter()  # sessions pinned, by reason
        # One stats registry per process: the data path bumps it, admin stats_* tables and
        # Prometheus read it (computed on read).
        self.stats = StatsRegistry(config.stats.max_digests, max_digest_text=config.stats.max_digest_text)
        self.stats.bind(
            sessions=lambda: list(self.sessions.values()),
            pools=lambda: list(self.pools.values()),
            servers=lambda: [(s.hostgroup_id, s) for s in self.monitor.topology.servers],  # live statuses
            users=lambda: list(self.config.users.values()),
            rules=lambda: [r.rule_id for r in self.config.ruleset.rules],
            session_clock=lambda: self.clock(),  # the clock of ClientSession.last_activity
        )
        self.store = None  # admin.store.ConfigStore when the admin port is configured (set by __main__)
        self._snapshot_waiters: list[asyncio.Future] = []  # sessions waiting for the next routing snapshot
        # Hostile clients: failed logins (proxy.throttle), connections still in their handshake (oldest
        # first, and per address), bytes of unfinished packets held per session (over 1 MiB only).
        self.throttle = LoginThrottle(config, lambda: self.clock())
        self.handshaking: collections.OrderedDict[int, ClientSession] = collections.OrderedDict()
        self._handshakes_from: collections.Counter[str] = collections.Counter()
        self._partial: dict[int, int] = {}
        # Server health ([monitor]): publishes the live server list (placement, statuses), which
        # `go_live` makes the Router's; `config` stays the configured one (what the admin port edits).
        self.monitor = Monitor(config, self.stats, self.go_live)
        # Consistent reads: the newest write's GTID and what each server has applied (the monitor's
        # readings of @@gtid_current_pos, and waits that succeeded), and how far each server was
        # behind at the monitor's last lag check (lag-bounded reads).
        self.positions = Positions(
            lambda address: getattr(self.monitor.health.get(address), "gtid_position", None),
            lambda address: getattr(self.monitor.health.get(address), "behind", None),
        )
        self.stats.bind(health=lambda: self.monitor.topology.health)
        self.backend_secrets = _backend_secrets(config)  # backend username -> its password now
        # Backend accounts kept only as a native hash: username -> (the hash, SHA1(password) learned
        # from a client's login of the same account). See backend_secret.
        self._stage1: dict[str, tuple[str, auth.Stage1]] = {}
        # TLS for clients ([tls]; loaded in start) and caching_sha2_password's cache of checks.
        addresses = tuple(li.address for li in config.listeners.values())
        self.tls = FrontendTLS(config.tls, config.admin.data_dir, addresses)
        self.sha2_checks: dict[str, tuple[str, bytes]] = {}

    def pool_for(self, server: Server, username: str, password: str, capabilities: int, collation: int) -> Pool:
        """The pool of `server` connections for this backend user and wire settings (and TLS
        settings: connections made under other ones are not lent once those change)."""
        key = (server.address, username, capabilities, collation, server.tls)
        pool = self.pools.get(key)
        if pool is None:
            budget = self.budgets.get(server.address)
            if budget is None:
                budget = self.budgets[server.address] = ServerBudget(server.address, server.max_connections, self.config.pool)
            config = self.config
            learned: list[str] = []  # what the server makes of `collation` at login (lending.opened_state)

            async def connector() -> BackendConnection:
                try:
                    conn = await backend_connect(
                        # the password as configured now: a rotated secret (LOAD, SIGHUP) reaches
                        # the pools' new connections; open ones stay logged in
                        server, username, self.backend_secret(server, username, password), database=None,
                        client_capabilities=capabilities, collation=collation,
                        attributes={"_client_name": "rwproxy", "program_name": "rwproxy"},
                        timeout=config.connect_timeout, max_packet=config.max_allowed_packet,
                    )  # fmt: skip
                except BackendError as e:
                    self.stats.connect_error(server.address)  # ProxySQL's ConnERR
                    self.monitor.connect_error(server, e)  # counts toward shun_on_failures
                    raise
                self.learn_server(conn)
                conn.cstate = await opened_state(conn, collation, learned, config.connect_timeout)
                return conn

            pool = self.pools[key] = Pool(budget, connector, f"{username}@{server.address}")
        return pool

    async def _maintain_pools(self) -> None:
        interval = max(0.05, min(1.0, self.config.pool.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            for pool in list(self.pools.values()):
                try:
                    pool.maintain()
                    if pool.settings.min_idle:
                        await pool.fill()
                except Exception:  # a bug here must not stop the maintenance
                    log.exception("pool maintenance failed for %s", pool.label)

    def writer_hostgroup(self) -> int:
        return min(u.default_hostgroup for u in self.config.users.values())

    async def learn_writer(self) -> None:
        hg = self.writer_hostgroup()
        for server in self.config.hostgroup(hg):
            try:
                hs = await read_server_handshake(server, self.config.connect_timeout)
            except BackendError as e:
                log.warning("writer %s (hostgroup %d) did not greet: %s", server.address, hg, e.cause)
                continue
            self._set_version(hs.server_version, hs.collation, hs.mariadb_capabilities)
            log.info("writer %s: server version %s, collation id %d", server.address, hs.server_version, hs.collation)
            return
        log.warning("no writer answered in hostgroup %d; advertising %s until one does", hg, DEFAULT_VERSION)

    def _set_version(self, version: str, collation: int, mariadb_capabilities: int = 0) -> None:
        self.server_version, self.collation, self._version_learned = version, collation or DEFAULT_COLLATION, True
        self.mariadb_capabilities = mariadb_capabilities

    def learn_server(self, conn: BackendConnection) -> None:
        if not self._version_learned and conn.handshake is not None and conn.server.hostgroup_id == self.writer_hostgroup():
            self._set_version(conn.handshake.server_version, conn.handshake.collation, conn.handshake.mariadb_capabilities)

    async def start(self) -> None:
        log.info("TLS for clients: %s", self.tls.load())  # TLSSetupError (an OSError): cannot start
        await self.learn_writer()
        loop = asyncio.get_running_loop()
        self.clock = loop.time
        self._raise_fd_limit()
        lst = self.config.listeners["data"]
        server = await loop.create_server(lambda: ClientSession(self), lst.address, lst.port, reuse_address=True, backlog=4096)
        self._servers.append(server)
        log.info("listening on %s:%d (data)", lst.address, lst.port)
        self._sweeper = loop.create_task(self._sweep_idle())
        if "metrics" in self.config.listeners:
            from .metrics import start_metrics_server

            lst = self.config.listeners["metrics"]
            self._servers.append(await start_metrics_server(self.stats, lst.address, lst.port))
            log.info("listening on %s:%d (metrics)", lst.address, lst.port)
        if self.config.multiplexing:
            self._maintainer = loop.create_task(self._maintain_pools())
        self.monitor.start()

    # ---- runtime configuration ------------------------------------------------------------------

    def apply_config(self, config: Config) -> None:
        """Make `config` live (the admin port's LOAD ... TO RUNTIME, already validated).

        Synchronous on the event loop, so no statement sees half of it: the monitor follows the new
        servers and settings and publishes the live server list derived from them at once
        (`go_live`). Listeners and [admin] are not changed at runtime (a restart applies them)."""
        self.config = config
        self.throttle.config = config
        self.backend_secrets = _backend_secrets(config)
        self.monitor.reconfigure(config)

    def reload_tls(self) -> str:
        """PROXYSQL RELOAD TLS and SIGHUP: read the certificates and keys again -- the clients'
        (generated ones stay as they are unless deleted), the servers' CAs, client certificates and
        pinned public keys. New connections use them; established ones keep their TLS sessions.
        Everything is read before anything is swapped: on TLSSetupError nothing has changed."""
        contexts = ClientContexts()
        contexts.prepare([s.tls for s in self.config.servers])
        summary = self.tls.load()
        CLIENT_CONTEXTS.replace(contexts)
        log.info("TLS reloaded: %s", summary)
        return summary

    def go_live(self, topology: Topology) -> None:
        """A new live server list (from the monitor, or a new configuration): every session's next
        statement routes by it; statements and transactions in flight finish where they run. Pools
        of servers that are gone, OFFLINE_HARD or SHUNNED stop lending: their idle connections
        close now, lent ones when they come back (a server back ONLINE gets new pools)."""
        config = self.config
        self.router = router = Router(dataclasses.replace(config, servers=topology.servers))
        limits: dict[str, int] = {}
        tls: set[tuple] = set()
        for s in topology.servers:
            if s.status not in ("OFFLINE_HARD", "SHUNNED"):
                limits[s.address] = max(limits.get(s.address, 0), s.max_connections)
                tls.add((s.address, s.tls))
        for address, budget in self.budgets.items():
            budget.settings = config.pool
            if address in limits:
                budget.max_connections = limits[address]
            budget.wake()  # a raised limit lets waiting sessions in
        for key, pool in list(self.pools.items()):
            pool.settings = config.pool
            if key[0] not in limits:
                gone = [s.status for s in topology.servers if s.address == key[0]]
                pool.close(f"server {key[0]} is {gone[0]}" if gone else f"server {key[0]} was taken out of the configuration")
                del self.pools[key]
            elif (key[0], key[4]) not in tls:  # its ssl_mode, CA, ... changed: new connections only
                pool.close(f"the TLS settings of server {key[0]} changed")
                del self.pools[key]
        for sess in self.sessions.values():
            sess.config_changed(router)
        self._snapshot_published()

    async def topology_changed(self, timeout: float) -> None:
        """Return when the next routing snapshot is live (a session waiting for a hostgroup to have
        a reachable server: a promotion, a server back ONLINE), or after `timeout` seconds."""
        fut = asyncio.get_running_loop().create_future()
        self._snapshot_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            if fut in self._snapshot_waiters:
                self._snapshot_waiters.remove(fut)

    def _snapshot_published(self) -> None:
        waiters, self._snapshot_waiters = self._snapshot_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def add_listener(self, server: asyncio.AbstractServer) -> None:
        """A listener the composition root started beside the data port (the admin port): closed
        with the others at shutdown."""
        self._servers.append(server)

    def backend_secret(self, server: Server, username: str, configured: str) -> str | auth.Stage1:
        """What logs in to `server` as `username` now: the password as configured now (rotated
        secrets included), or — for an account the admin port keeps only as its native hash — the
        SHA1(password) learned from a client's login (ProxySQL's trick). BackendError before any
        client of such an account logged in."""
        secret = self.backend_secrets.get(username, configured)
        if not auth.is_native_hash(secret):
            return secret
        learned = self._stage1.get(username)
        if learned is not None and learned[0] == secret.upper():
            return learned[1]
        raise BackendError(server, f"the password of backend account '{username}' is kept only as its hash, and no client of it has logged in yet to prove it")

    def learn_stage1(self, username: str, stored_hash: str, stage1: bytes) -> None:
        """A client proved the password of an account stored as `stored_hash` (its backend account)."""
        self._stage1[username] = (stored_hash.upper(), auth.Stage1(stage1))

    def reload_secrets(self) -> None:
        """SIGHUP: read every secret that came from a file or an environment variable again and make
        the result live (apply_config): new backend connections log in with a rotated password,
        open ones keep working. (Small local files, read on the loop at an operator's request.)"""
        config, changed = refresh_secrets(self.config)
        if config is not self.config:
            self.apply_config(config)
        log.info("SIGHUP: secrets read again: %s", "; ".join(changed) if changed else "none changed")

    def _raise_fd_limit(self) -> None:
        """Like mysqld with open_files_limit: make room for max_connections clients and their backends."""
        hostgroups = len({s.hostgroup_id for s in self.config.servers})
        needed = self.config.max_connections * (1 + hostgroups) + 64
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if soft != resource.RLIM_INFINITY and soft < needed:
                target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
                if target > soft:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                    soft = target
        except (ValueError, OSError) as e:
            log.warning("cannot read or raise the open files limit: %s", e)
            return
        if soft < needed:
            log.warning(
                "open files limit is %d but max_connections = %d (with one backend connection per hostgroup) may need %d; "
                "raise `ulimit -n` or lower [proxy] max_connections",
                soft, self.config.max_connections, needed,
            )  # fmt: skip

    # ---- client accounting (called by ClientSession) ------------------------------------------

    def admit(self, session: ClientSession) -> tuple[int, str] | None:
        """A new client connection: register it. Returns the ERR (code, message) that refuses it at
        once: its address is blocked for failed logins (ERR 1129, proxy.throttle), or it already has
        [proxy] max_handshakes_per_address connections not logged in (ERR 1040). Past
        max_handshakes in all, the oldest connection still in its handshake is closed instead: a
        flood of silent sockets cannot lock logged-in-to-be clients out."""
        self.sessions[session.id] = session
        address = session.client_ip or "?"
        if self.throttle.address_blocked(address):
            _limited.log(logging.WARNING, ("blocked", address), "connection from %s refused: blocked after %d failed logins", address, self.config.max_connect_errors)
            return ErrorCode.HOST_IS_BLOCKED, f"Host '{address}' is blocked because of many connection errors; it is unblocked after host_block_time ({self.config.host_block_time:g}s)"
        if self._handshakes_from[address] >= self.config.max_handshakes_per_address:
            _limited.log(logging.WARNING, ("handshakes", address), "connection from %s refused: %d connections from it are still in their handshake", address, self.config.max_handshakes_per_address)
            return ErrorCode.CON_COUNT_ERROR, "Too many connections (from this address, not logged in yet)"
        if len(self.handshaking) >= self.config.max_handshakes:
            _, oldest = self.handshaking.popitem(last=False)
            self._handshakes_from[oldest.client_ip or "?"] -= 1
            _limited.log(logging.WARNING, "evicted", "%d connections in their handshake: the oldest (%s) closed", self.config.max_handshakes, oldest.peer)
            oldest.close()
        self.handshaking[session.id] = session
        self._handshakes_from[address] += 1
        return None

    def handshake_over(self, session: ClientSession) -> None:
        """The session logged in (or closed): it no longer counts among the handshakes."""
        if self.handshaking.pop(session.id, None) is not None:
            self._handshakes_from[session.client_ip or "?"] -= 1

    def count_client(self, session: ClientSession) -> bool:
        """A client that answered the greeting counts against [proxy] max_connections; False when
        that is reached (it gets ERR 1040)."""
        if self.admitted >= self.config.max_connections:
            return False
        self.admitted += 1
        session.admitted = True
        return True

    def partial_packet(self, session: ClientSession, size: int) -> None:
        """A client holds `size` bytes of a packet not yet whole (over 1 MiB): within [proxy]
        partial_packet_budget for all clients together, or the largest holders are closed."""
        self._partial[session.id] = size
        total = sum(self._partial.values())
        budget = self.config.partial_packet_budget
        while total > budget and self._partial:
            sid, biggest = max(self._partial.items(), key=lambda kv: kv[1])
            del self._partial[sid]
            total -= biggest
            victim = self.sessions.get(sid)
            if victim is not None:
                _limited.log(logging.WARNING, "budget", "unfinished client packets hold %d bytes (partial_packet_budget %d): closing %s (%d bytes)", total + biggest, budget, victim.peer, biggest)
                victim.close_for_budget()

    def packet_done(self, session: ClientSession) -> None:
        self._partial.pop(session.id, None)

    def login_user(self, username: str, limit: int) -> bool:
        """Count one more logged-in session for `username`; False (nothing counted) when at `limit`."""
        n = self.user_sessions.get(username, 0)
        if n >= limit:
            return False
        self.user_sessions[username] = n + 1
        return True

    def logout_user(self, username: str) -> None:
        n = self.user_sessions.get(username, 0) - 1
        if n > 0:
            self.user_sessions[username] = n
        else:
            self.user_sessions.pop(username, None)

    def forget(self, session: ClientSession) -> None:
        """A client connection is gone: release everything it was counted against."""
        if self.sessions.pop(session.id, None) is None:
            return
        self.handshake_over(session)
        self._partial.pop(session.id, None)
        if session.admitted:
            self.admitted -= 1
        if session.counted_user is not None:
            self.logout_user(session.counted_user)
            session.counted_user = None
        if self.draining and not self.sessions and self._drained is not None:
            self._drained.set()

    # ---- idle clients ---------------------------------------------------------------------------

    def _sweep_interval(self) -> float:
        """How often the sweeper looks: a quarter of the shortest timeout it enforces, within [0.05, 1] s."""
        config = self.config
        limits = [config.client_idle_timeout / 4, config.pool.last_insert_id_hold / 2, config.default_query_timeout / 4, config.net_read_timeout / 4]
        limits += [r.timeout / 4000 for r in config.ruleset.rules if r.timeout]
        return max(0.05, min([1.0] + [x for x in limits if x > 0]))

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval())
            try:
                now = self.clock()
                self.sweep_idle(now)
                self.end_insert_id_holds(now - self.config.pool.last_insert_id_hold)
                self.stop_overdue_statements()
                self.stop_slow_packets(now)
                self.stats.sample()  # MaxConnUsed: the pools' high-water mark, sampled
            except Exception:  # a bug here must not stop the sweeping
                log.exception("idle sweep failed")

    def stop_slow_packets(self, now: float) -> int:
        """Close clients whose command packet began more than [proxy] net_read_timeout ago and is
        still incomplete (a client dripping a 64 MB packet a byte at a time is not idle, but it must
        not hold the buffer forever)."""
        limit = self.config.net_read_timeout
        slow = [s for s in self.sessions.values() if s.partial_since and not s.busy and now - s.partial_since > limit and not s.closed]
        for sess in slow:
            sess.close_read_timeout()
        return len(slow)

    def stop_overdue_statements(self) -> int:
        """Statements past their timeout ([proxy] default_query_timeout or a rule's `timeout`) are
        stopped (CommandLoop.overdue: KILL QUERY, or the connection dropped when the server does
        not answer). Nothing is armed per statement: this sweep reads each busy session's start time."""
        now_ns, default = time.monotonic_ns(), self.config.default_query_timeout
        return sum(1 for sess in list(self.sessions.values()) if sess.busy and sess.commands.recovery.overdue(now_ns, default))

    def end_insert_id_holds(self, cutoff: float) -> None:
        """Sessions idle since before `cutoff` that keep a writer connection only for LAST_INSERT_ID()
        give it back ([pool] last_insert_id_hold): a client that inserts and goes quiet must not
        hold a backend connection."""
        for sess in self.sessions.values():
            if sess.holding_insert_id and not sess.busy and sess.last_activity < cutoff:
                sess.end_insert_id_hold()

    def sweep_idle(self, now: float) -> int:
        """Close every logged-in, free session silent for longer than its idle limit (the client's
        SET wait_timeout, else [proxy] client_idle_timeout; 0 = never)."""
        expired = []
        for s in self.sessions.values():
            if not s.busy and s.logged_in and not s.closed:
                limit = s.idle_limit()
                if limit > 0 and now - s.last_activity > limit:
                    expired.append(s)
        for sess in expired:
            sess.close_idle()
        return len(expired)

    def log_sessions(self) -> None:
        """SIGUSR1: one line per client session with its state (for operators and debugging)."""
        log.warning("%d client session(s)", len(self.sessions))
        for sess in list(self.sessions.values()):
            log.warning("%s", sess.describe())

    async def stop(self) -> None:
        """Graceful shutdown: refuse new clients, let busy and in-transaction sessions finish
        within [proxy] shutdown_timeout, close everything else at once."""
        timeout = self.config.shutdown_timeout
        self.draining = True
        self._drained = asyncio.Event()
        for s in self._servers:
            s.close()  # the listening socket goes now: new connections are refused
        if self._sweeper is not None:
            self._sweeper.cancel()
        closed_now = waiting = 0
        for sess in list(self.sessions.values()):
            if sess.logged_in and (sess.busy or sess.in_transaction):
                sess.draining = True  # it closes itself once free outside a transaction
                waiting += 1
            else:  # idle, or not logged in yet
                sess.close_for_shutdown()
                closed_now += 1
        if closed_now or waiting:
            log.info(
                "shutting down: listener closed; %d session(s) closed at once (idle, or not logged in yet); %d session(s) "
                "in a transaction or running a statement get up to %gs to finish",
                closed_now, waiting, timeout,
            )  # fmt: skip
        else:
            log.info("shutting down: listener closed; no client sessions")
        if self.sessions and timeout > 0:
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                pass
        left = list(self.sessions.values())
        for sess in left:
            sess.close_for_shutdown(cut=True)
        if waiting or left:
            log.info("shutdown: %d session(s) finished in time, %d cut", waiting - len(left), len(left))
        if self._maintainer is not None:
            self._maintainer.cancel()
        await self.monitor.stop()
        for pool in self.pools.values():
            pool.close()
        for s in self._servers:
            await s.wait_closed()
        await asyncio.sleep(0)  # let the closing transports flush their last packets

    def cut_now(self) -> None:
        """A second SIGTERM/SIGINT while draining: stop waiting for sessions to finish."""
        if self._drained is not None and not self._drained.is_set():
            log.warning("second signal: closing the remaining %d session(s) now", len(self.sessions))
            self._drained.set()


def _backend_secrets(config: Config) -> dict[str, str]:
    out: dict[str, str] = {}
    for u in config.users.values():
        out.setdefault(u.backend_username, u.backend_password)
    return out
