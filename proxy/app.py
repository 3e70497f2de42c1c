"""Composition root: config -> listeners -> running proxy; signals and orderly shutdown.

Theory of operation: ProxyApp holds the per-process state explicitly (config, sessions, what was
learned about the writer) so several processes can later each own one. Startup learns the writer's
server version string and default collation from its greeting, because drivers switch behaviour on
them; if no writer answers yet, a MariaDB-looking default is used and replaced by the first real
greeting a backend connection sees.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from .backend import BackendConnection, BackendError, read_server_handshake
from .config import Config
from .frontend import ClientSession
from .router import Router

log = logging.getLogger("rwproxy")

DEFAULT_VERSION = "5.5.5-10.11.0-MariaDB-rwproxy"
DEFAULT_COLLATION = 45  # utf8mb4_general_ci


class ProxyApp:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.router = Router(config)
        self.sessions: dict[int, ClientSession] = {}
        self.server_version = DEFAULT_VERSION
        self.collation = DEFAULT_COLLATION
        self._version_learned = False
        self._servers: list[asyncio.AbstractServer] = []

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
        lst = self.config.listeners["data"]
        server = await loop.create_server(lambda: ClientSession(self), lst.address, lst.port, reuse_address=True, backlog=4096)
        self._servers.append(server)
        log.info("listening on %s:%d (data)", lst.address, lst.port)

    def log_sessions(self) -> None:
        """SIGUSR1: one line per client session with its state (for operators and debugging)."""
        log.warning("%d client session(s)", len(self.sessions))
        for sess in list(self.sessions.values()):
            log.warning("%s", sess.describe())

    async def stop(self) -> None:
        for s in self._servers:
            s.close()
        for sess in list(self.sessions.values()):
            sess.close()
        for s in self._servers:
            await s.wait_closed()


async def serve(config: Config) -> None:
    app = ProxyApp(config)
    await app.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, app.log_sessions)
    await stop.wait()
    log.info("shutting down")
    await app.stop()
