"""Composition root: config -> listeners -> running proxy; signals and orderly shutdown.

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
import logging
import resource
import signal
import time

from .backend import BackendConnection, BackendError, read_server_handshake
from .config import Config, refresh_secrets
from .backend import connect as backend_connect
from .config import Server
from .frontend import ClientSession
from .pool import Pool, ServerBudget
from .session import ConnState, PinReason, charset_entry
from .router import Router
from .stats import StatsRegistry

log = logging.getLogger("rwproxy")

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
            servers=lambda: [(s.hostgroup_id, s) for s in self.config.servers],
            users=lambda: list(self.config.users.values()),
            rules=lambda: [r.rule_id for r in self.config.ruleset.rules],
            session_clock=lambda: self.clock(),  # the clock of ClientSession.last_activity
        )
        self.store = None  # admin.store.ConfigStore when the admin port is configured (set by __main__)
        self.backend_secrets = _backend_secrets(config)  # backend username -> its password now

    def pool_for(self, server: Server, username: str, password: str, capabilities: int, collation: int) -> Pool:
        """The pool of `server` connections for this backend user and wire settings."""
        key = (server.address, username, capabilities, collation)
        pool = self.pools.get(key)
        if pool is None:
            budget = self.budgets.get(server.address)
            if budget is None:
                budget = self.budgets[server.address] = ServerBudget(server.address, server.max_connections, self.config.pool)
            config = self.config

            async def connector() -> BackendConnection:
                try:
                    conn = await backend_connect(
                        # the password as configured now: a rotated secret (LOAD, SIGHUP) reaches
                        # the pools' new connections; open ones stay logged in
                        server, username, self.backend_secrets.get(username, password), database=None,
                        client_capabilities=capabilities, collation=collation,
                        attributes={"_client_name": "rwproxy", "program_name": "rwproxy"},
                        timeout=config.connect_timeout, max_packet=config.max_allowed_packet,
                    )  # fmt: skip
                except BackendError:
                    self.stats.connect_error(server.address)  # ProxySQL's ConnERR
                    raise
                self.learn_server(conn)
                conn.cstate = ConnState(login_charset=charset_entry(collation), tracking=not conn.tracks)
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
            self._set_version(hs.server_version, hs.collation)
            log.info("writer %s: server version %s, collation id %d", server.address, hs.server_version, hs.collation)
            return
        log.warning("no writer answered in hostgroup %d; advertising %s until one does", hg, DEFAULT_VERSION)

    def _set_version(self, version: str, collation: int) -> None:
        self.server_version, self.collation, self._version_learned = version, collation or DEFAULT_COLLATION, True

    def learn_server(self, conn: BackendConnection) -> None:
        if not self._version_learned and conn.handshake is not None and conn.server.hostgroup_id == self.writer_hostgroup():
            self._set_version(conn.handshake.server_version, conn.handshake.collation)

    async def start(self) -> None:
        await self.learn_writer()
        loop = asyncio.get_running_loop()
        self.clock = loop.time
        self._raise_fd_limit()
        lst = self.config.listeners["data"]
        server = await loop.create_server(lambda: ClientSession(self), lst.address, lst.port, reuse_address=True, backlog=4096)
        self._servers.append(server)
        log.info("listening on %s:%d (data)", lst.address, lst.port)
        self._sweeper = loop.create_task(self._sweep_idle())
        if "admin" in self.config.listeners:
            from admin.server import start_admin  # the control plane, wired in by the composition root

            lst = self.config.listeners["admin"]
            self._servers.append(await start_admin(self, lst.address, lst.port))
            log.info("listening on %s:%d (admin)", lst.address, lst.port)
        if "metrics" in self.config.listeners:
            from .metrics import start_metrics_server

            lst = self.config.listeners["metrics"]
            self._servers.append(await start_metrics_server(self.stats, lst.address, lst.port))
            log.info("listening on %s:%d (metrics)", lst.address, lst.port)
        if self.config.multiplexing:
            self._maintainer = loop.create_task(self._maintain_pools())

    # ---- runtime configuration ------------------------------------------------------------------

    def apply_config(self, config: Config) -> None:
        """Make `config` live (the admin port's LOAD ... TO RUNTIME, already validated).

        Synchronous on the event loop, so no statement sees half of it: every session's next
        statement routes by the new rules and servers; statements and transactions in flight finish
        where they run. Pools of servers that are gone (or OFFLINE_HARD) stop lending: their idle
        connections close now, lent ones when they come back. Listeners and [admin] are not changed
        at runtime (a restart applies them)."""
        self.config = config
        self.router = router = Router(config)
        self.backend_secrets = _backend_secrets(config)
        limits: dict[str, int] = {}
        for s in config.servers:
            if s.status != "OFFLINE_HARD":
                limits[s.address] = max(limits.get(s.address, 0), s.max_connections)
        for address, budget in self.budgets.items():
            budget.settings = config.pool
            if address in limits:
                budget.max_connections = limits[address]
            budget.wake()  # a raised limit lets waiting sessions in
        for key, pool in list(self.pools.items()):
            pool.settings = config.pool
            if key[0] not in limits:
                pool.close(f"server {key[0]} was taken out of the configuration")
                del self.pools[key]
        for sess in self.sessions.values():
            sess.config_changed(router)

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

    def admit(self, session: ClientSession) -> bool:
        """A new client connection: register it; False when it is over [proxy] max_connections."""
        self.sessions[session.id] = session
        if self.admitted >= self.config.max_connections:
            return False
        self.admitted += 1
        return True

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
        if session.admitted:
            self.admitted -= 1
        if session.counted_user is not None:
            self.logout_user(session.counted_user)
            session.counted_user = None
        if self.draining and not self.sessions and self._drained is not None:
            self._drained.set()

    # ---- idle clients ---------------------------------------------------------------------------

    async def _sweep_idle(self) -> None:
        timeout = self.config.client_idle_timeout
        hold = self.config.pool.last_insert_id_hold
        interval = max(0.05, min(timeout / 4 if timeout > 0 else 1.0, hold / 2 if hold > 0 else 1.0, 1.0))
        while True:
            await asyncio.sleep(interval)
            try:
                now = self.clock()
                if timeout > 0:
                    self.sweep_idle(now - timeout)
                self.end_insert_id_holds(now - hold)
                self.stats.sample()  # MaxConnUsed: the pools' high-water mark, sampled
            except Exception:  # a bug here must not stop the sweeping
                log.exception("idle sweep failed")

    def end_insert_id_holds(self, cutoff: float) -> None:
        """Sessions idle since before `cutoff` that keep a writer connection only for LAST_INSERT_ID()
        give it back ([pool] last_insert_id_hold): a client that inserts and goes quiet must not
        hold a backend connection."""
        for sess in self.sessions.values():
            if sess.holding_insert_id and not sess.busy and sess.last_activity < cutoff:
                sess.end_insert_id_hold()

    def sweep_idle(self, cutoff: float) -> int:
        """Close every logged-in, free session whose last activity is older than `cutoff`."""
        expired = [s for s in self.sessions.values() if not s.busy and s.last_activity < cutoff and s.logged_in and not s.closed]
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


async def serve(config: Config, store: object | None = None) -> None:
    app = ProxyApp(config)
    app.store = store  # the admin port's config store (admin.store.ConfigStore), built by __main__
    await app.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            app.cut_now()
        else:
            log.info("%s received", sig.name)
            stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGUSR1, app.log_sessions)
    loop.add_signal_handler(signal.SIGHUP, app.reload_secrets)
    await stop.wait()
    await app.stop()
    log.info("stopped")
