"""The server health monitor: checks every server, publishes the live topology as snapshots.

Theory of operation
-------------------
One `Monitor` per process, owned by the application. With ``[monitor] enabled`` it runs, for every
configured server address (OFFLINE_HARD-only servers excepted), four loops on the event loop, each
on its own interval and timeout (ProxySQL's checks and names, proxy.config.MonitorSettings):

* connect          a fresh login as the monitor user, closed at once;
* ping             COM_PING over the server's kept-open monitor connection (re-opened when needed);
* read_only        ``SELECT @@global.<check_type>, <GTID position>`` over that connection (the
                   replication hostgroup's check_type; the GTID position is recorded per server);
* replication_lag  SHOW ALL SLAVES STATUS (MariaDB) / SHOW REPLICA STATUS (MySQL 8): seconds behind,
                   IO and SQL threads.

The three checks that share the kept-open connection take turns on it (one asyncio.Lock per
server); a check that times out closes the connection (its state is unknown), and the next one opens
another. The sessions' own failed connects count too: the application reports them with
`connect_error` (ProxySQL's shun_on_failures counts connection errors wherever they happen).

Each outcome goes through the pure transitions of proxy.topology into a new ServerHealth; then a new
`Topology` snapshot is derived (`topology` always holds the latest). When the derived server list
differs from the last published one, the monitor logs exactly one line per server whose status or
placement changed (with the reason), counts writer changes, and hands the snapshot to `publish` —
the application's swap (a new Router, every session chooses again). Nothing here runs on a
statement's path: the data plane reads the published snapshot and never waits for a check.

Repeated identical check failures of a server are collapsed: the first is logged, the same error
again is only counted, and the count is logged when the error changes or the server answers again.
Every check is also kept in a bounded history (`HISTORY_ROWS` per table) for the admin port's
``monitor`` schema (ProxySQL's mysql_server_*_log tables) and counted into the stats registry
(latency and errors per server and check, for Prometheus).

With the monitor disabled (or switched off at runtime) no check runs and the configured statuses are
the live ones, as before there was a monitor. `reconfigure` follows LOAD ... TO RUNTIME: servers
that appeared get loops, servers that went away lose theirs (and their health), new settings are read
by the loops at their next round.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import checks
from .checks import CheckError
from .config import Config, MonitorSettings, Server
from .topology import (
    Change,
    ServerHealth,
    Status,
    Topology,
    changes,
    check_succeeded,
    connect_failed,
    make_topology,
    new_writers,
    ping_failed,
    read_only_seen,
    replication_seen,
)

if TYPE_CHECKING:
    from .backend import BackendConnection, BackendError
    from .stats import StatsRegistry

__all__ = ["HISTORY_ROWS", "MONITOR_TABLES", "CheckKind", "Monitor"]

log = logging.getLogger("rwproxy.monitor")

HISTORY_ROWS = 5000  # rows kept per monitor log table (oldest dropped first)


class CheckKind(enum.StrEnum):
    CONNECT = "connect"
    PING = "ping"
    READ_ONLY = "read_only"
    REPLICATION_LAG = "replication_lag"


# The admin port's monitor schema: ProxySQL's log tables (same columns), plus rwproxy's
# mysql_server_health (the latest health of every monitored server).
MONITOR_TABLES: dict[str, tuple[str, ...]] = {
    "mysql_server_connect_log": ("hostname", "port", "time_start_us", "connect_success_time_us", "connect_error"),
    "mysql_server_ping_log": ("hostname", "port", "time_start_us", "ping_success_time_us", "ping_error"),
    "mysql_server_read_only_log": ("hostname", "port", "time_start_us", "success_time_us", "read_only", "error"),
    "mysql_server_replication_lag_log": ("hostname", "port", "time_start_us", "success_time_us", "repl_lag", "error"),
    "mysql_server_health": (
        "hostname", "port", "status", "read_only", "repl_lag", "io_running", "sql_running", "gtid_position",
        "ping_us", "ping_failures", "shun_reason",
    ),
}  # fmt: skip
_LOG_TABLE = {
    CheckKind.CONNECT: "mysql_server_connect_log",
    CheckKind.PING: "mysql_server_ping_log",
    CheckKind.READ_ONLY: "mysql_server_read_only_log",
    CheckKind.REPLICATION_LAG: "mysql_server_replication_lag_log",
}


class _Link:
    """A server's kept-open monitor connection, shared in turn by ping, read_only and lag.

    When the server closes it (a crash, a restart, a killed thread), `lost` is set: the ping loop
    pings at once instead of at its next interval, so a dead server is counted a failed ping
    right away. (The monitor's own close detaches first, so it does not count.)"""

    __slots__ = ("server", "conn", "lock", "lost")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.conn: BackendConnection | None = None
        self.lock = asyncio.Lock()
        self.lost = asyncio.Event()

    def watch(self, conn: BackendConnection) -> BackendConnection:
        self.conn = conn
        conn.attach(self)  # type: ignore[arg-type]  # only connection events reach it: no relaying here
        return conn

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # the part of proxy.backend.ReplySink a packet-mode connection calls
    def backend_lost(self, conn: BackendConnection, exc: Exception | None) -> None:
        if conn is self.conn:
            self.lost.set()

    def backend_write_paused(self, paused: bool) -> None:
        pass


class _Repeats:
    """Collapses a server's repeated check failures: one line per distinct error of an outage,
    then only counts; one line when every check of the server succeeds again."""

    def __init__(self) -> None:
        self.failing: dict[str, dict[CheckKind, list]] = {}  # address -> kind -> [error, times]

    def failure(self, address: str, kind: CheckKind, error: str) -> str | None:
        rec = self.failing.setdefault(address, {})
        prev = rec.get(kind)
        if prev is not None and prev[0] == error:
            prev[1] += 1
            return None
        said = any(v[0] == error for v in rec.values())
        rec[kind] = [error, 1]
        return None if said else error

    def success(self, address: str, kind: CheckKind) -> str | None:
        rec = self.failing.get(address)
        if rec is None or rec.pop(kind, None) is None or rec:
            return None
        del self.failing[address]
        return "answers all checks again"

    def forget(self, address: str) -> None:
        self.failing.pop(address, None)


class Monitor:
    def __init__(
        self,
        config: Config,
        stats: StatsRegistry | None = None,
        publish: Callable[[Topology], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.stats = stats
        self.publish = publish or (lambda t: None)
        self.clock = clock
        self.health: dict[str, ServerHealth] = {}
        self.topology = make_topology(0, config.servers, config.ruleset.replication_hostgroups, {}, 1, False)
        self.history: dict[str, collections.deque] = {t: collections.deque(maxlen=HISTORY_ROWS) for t in _LOG_TABLE.values()}
        self._links: dict[str, _Link] = {}
        self._tasks: dict[str, list[asyncio.Task]] = {}
        self._repeats = _Repeats()
        self._running = False
        self._changed: asyncio.Future | None = None

    @property
    def settings(self) -> MonitorSettings:
        return self.config.monitor

    @property
    def enabled(self) -> bool:
        return self.config.monitor.enabled

    # ---- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the checks (when enabled). Call from the running event loop."""
        self._running = True
        self._sync()

    async def stop(self) -> None:
        self._running = False
        tasks = [t for ts in self._tasks.values() for t in ts]
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for link in self._links.values():
            link.drop()
        self._links.clear()

    def reconfigure(self, config: Config) -> None:
        """A new configuration is live (LOAD ... TO RUNTIME): follow its servers and settings, and
        publish the topology derived from it at once (always, even when nothing moved)."""
        self.config = config
        self._sync()
        self._update("configuration", force=True)

    def _monitored(self) -> dict[str, Server]:
        out: dict[str, Server] = {}
        for s in self.config.servers:
            if s.status != Status.OFFLINE_HARD.value:
                out.setdefault(s.address, s)
        return out

    def _sync(self) -> None:
        """Loops for exactly the monitored servers (none when disabled or stopped)."""
        wanted = self._monitored() if self._running and self.enabled else {}
        for address in [a for a in self._tasks if a not in wanted]:
            for t in self._tasks.pop(address):
                t.cancel()
            link = self._links.pop(address, None)
            if link is not None:
                link.drop()
            self.health.pop(address, None)
            self._repeats.forget(address)
        for address in [a for a in self.health if a not in wanted]:
            del self.health[address]
        for address, server in wanted.items():
            link = self._links.get(address)
            if link is None:
                self._links[address] = _Link(server)
            elif (link.server.hostname, link.server.port) != (server.hostname, server.port):
                link.server = server
            if address not in self._tasks:
                self.health[address] = ServerHealth(address)
                loop = asyncio.get_running_loop()
                self._tasks[address] = [loop.create_task(self._loop(address, kind), name=f"monitor {kind} {address}") for kind in CheckKind]

    # ---- the data path's reports ----------------------------------------------------------------------

    def connect_error(self, server: Server, error: BackendError) -> None:
        """A session failed to open a connection to `server` (called by the application). Counts
        toward shun_on_failures unless the server answered (a refused login proves it is up)."""
        if not self._running or not self.enabled:
            return
        h = self.health.get(server.address)
        if h is None or (error.err is not None and error.err.code != 1040):
            return
        self._set(server.address, connect_failed(h, self.clock(), error.cause, self.settings), "connect")

    async def wait_changed(self, timeout: float | None = None) -> bool:
        """Until the next published server list (True), or `timeout` seconds (False)."""
        if self._changed is None or self._changed.done():
            self._changed = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._changed), timeout)
            return True
        except TimeoutError:
            return False

    # ---- checks -------------------------------------------------------------------------------------

    def _interval(self, kind: CheckKind) -> float:
        s = self.settings
        ms = {CheckKind.CONNECT: s.connect_interval, CheckKind.PING: s.ping_interval,
              CheckKind.READ_ONLY: s.read_only_interval, CheckKind.REPLICATION_LAG: s.replication_lag_interval}[kind]  # fmt: skip
        return ms / 1000

    def _timeout(self, kind: CheckKind) -> float:
        s = self.settings
        ms = {CheckKind.CONNECT: s.connect_timeout, CheckKind.PING: s.ping_timeout,
              CheckKind.READ_ONLY: s.read_only_timeout, CheckKind.REPLICATION_LAG: s.replication_lag_timeout}[kind]  # fmt: skip
        return ms / 1000

    async def _loop(self, address: str, kind: CheckKind) -> None:
        await asyncio.sleep(random.uniform(0, 0.05))  # servers' checks do not all fire at once
        quick = False  # the ping loop skips its wait once per interval when the connection is lost
        while True:
            started = self.clock()
            try:
                await self._check(address, kind)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the monitoring
                log.exception("monitor: %s check of %s failed unexpectedly", kind, address)
            wait = self._interval(kind) - (self.clock() - started)
            link = self._links.get(address)
            if kind is not CheckKind.PING or link is None:
                await asyncio.sleep(max(wait, 0.01))
                continue
            h = self.health.get(address)
            if h is not None and h.shunned:
                # A SHUNNED server is looked at again as soon as it may come back.
                due = h.shunned_at + self.settings.shun_recovery_time_sec - self.clock()
                if due > 0:
                    wait = min(wait, due)
            if quick:
                quick = False
                await asyncio.sleep(max(wait, 0.01))
                continue
            link.lost.clear()
            if link.conn is not None and link.conn.closed:
                quick = True  # lost while this ping was being recorded: ping again now
                continue
            try:
                await asyncio.wait_for(link.lost.wait(), max(wait, 0.01))
                quick = True
            except TimeoutError:
                pass

    async def _check(self, address: str, kind: CheckKind) -> None:
        link = self._links.get(address)
        if link is None:
            return
        timeout = self._timeout(kind)
        wall = time.time()
        t0 = time.monotonic_ns()
        value: Any = None
        error: CheckError | None = None
        try:
            async with asyncio.timeout(timeout):
                if kind is CheckKind.CONNECT:
                    conn = await checks.open_connection(link.server, self.settings, timeout)
                    conn.close()
                else:
                    value = await self._on_link(link, kind, timeout)
                    if kind is CheckKind.PING:
                        t0 = value  # the round trip alone, not a reconnect before it
        except TimeoutError:
            error = CheckError(f"no answer within {timeout * 1000:g} ms")
        except CheckError as e:
            error = e
        elapsed_ns = time.monotonic_ns() - t0
        if address not in self._links:  # removed while the check ran
            return
        self._record(link.server, kind, wall, elapsed_ns, value, error)

    async def _on_link(self, link: _Link, kind: CheckKind, timeout: float) -> Any:
        async with link.lock:
            try:
                if link.conn is None or link.conn.closed:
                    link.watch(await checks.open_connection(link.server, self.settings, timeout))
                conn = link.conn
                if kind is CheckKind.PING:
                    start = time.monotonic_ns()
                    await checks.ping(conn)
                    return start
                if kind is CheckKind.READ_ONLY:
                    return await checks.read_only(conn, self._check_type(link.server.address))
                return await checks.replication(conn)
            except BaseException:  # failed, timed out or cancelled mid-conversation: its state is unknown
                link.drop()
                raise

    def _check_type(self, address: str) -> str:
        hostgroups = {s.hostgroup_id for s in self.config.servers if s.address == address}
        for p in self.config.ruleset.replication_hostgroups:
            if p.writer_hostgroup in hostgroups or p.reader_hostgroup in hostgroups:
                return p.check_type
        return "read_only"

    # ---- outcomes -----------------------------------------------------------------------------------

    def _record(self, server: Server, kind: CheckKind, wall: float, elapsed_ns: int, value: Any, error: CheckError | None) -> None:
        address = server.address
        ok = error is None
        if self.stats is not None:
            self.stats.check_done(address, kind.value, elapsed_ns, ok)
        us = elapsed_ns // 1000
        row: tuple
        start_us = int(wall * 1_000_000)
        text = None if ok else str(error)
        if kind is CheckKind.CONNECT or kind is CheckKind.PING:
            row = (server.hostname, server.port, start_us, us if ok else 0, text)
        elif kind is CheckKind.READ_ONLY:
            row = (server.hostname, server.port, start_us, us if ok else 0, int(value[0]) if ok else None, text)
        else:
            lag = None if not ok or value is None else (self.settings.lag_when_null if value.broken else value.seconds_behind)
            row = (server.hostname, server.port, start_us, us if ok else 0, lag, text)
        self.history[_LOG_TABLE[kind]].append(row)

        h = self.health.get(address)
        if h is None:
            return
        now = self.clock()
        if not ok:
            line = self._repeats.failure(address, kind, str(error))
            if line is not None:
                log.warning("monitor: %s check of %s failed: %s", kind, address, line)
            answered = getattr(error, "answered", False)
            if kind is CheckKind.CONNECT and not answered:
                self._set(address, connect_failed(h, now, str(error), self.settings), "connect")
            elif kind is CheckKind.PING and not answered:
                self._set(address, ping_failed(h, now, str(error), self.settings), "ping")
            return
        line = self._repeats.success(address, kind)
        if line is not None:
            log.info("monitor: %s %s", address, line)
        if kind is CheckKind.CONNECT:
            new = check_succeeded(h, now, self.settings)
        elif kind is CheckKind.PING:
            new = check_succeeded(h, now, self.settings, ping_us=us)
        elif kind is CheckKind.READ_ONLY:
            new = read_only_seen(h, now, value[0], value[1], self.settings)
        else:
            new = replication_seen(h, value, self.settings)
        self._set(address, new, kind.value)

    def _set(self, address: str, new: ServerHealth, cause: str) -> None:
        if self.health.get(address) is new:
            return
        self.health[address] = new
        self._update(cause)

    def _update(self, cause: str, force: bool = False) -> None:
        """Derive a new snapshot; publish it (and log what moved) when the server list changed."""
        old = self.topology
        config = self.config
        pairs = config.ruleset.replication_hostgroups
        monitored = self._running and self.enabled
        topo = make_topology(old.generation + 1, config.servers, pairs, self.health, self.settings.replication_lag_count, monitored)
        self.topology = topo
        if topo.servers == old.servers and not force:
            return
        if cause != "configuration":
            for change in changes(old.servers, topo.servers):
                self._log_change(change)
            for hg, address in new_writers(old.servers, topo.servers, pairs):
                if self.stats is not None:
                    self.stats.failover(hg)
                log.warning("monitor: %s is now a writer of hostgroup %d (read_only=0); writes go there", address, hg)
        self.publish(topo)
        fut = self._changed
        if fut is not None and not fut.done():
            fut.set_result(topo)

    def _log_change(self, change: Change) -> None:
        h = self.health.get(change.address)
        reason = self._reason(change.address, h, change.after)
        if change.moved and h is not None and h.read_only is not None and change.before and change.after:
            where = "the writer hostgroup" if not h.read_only else "the reader hostgroup"
            reason = f"read_only={int(h.read_only)}: placed in {where}" + ("" if reason.startswith("answers") else f"; {reason}")
        healthy = change.after and all(part.startswith("ONLINE ") for part in change.after.split(", "))
        level = logging.INFO if healthy else logging.WARNING
        log.log(level, "monitor: %s: %s -> %s: %s", change.address, change.before or "(not listed)", change.after or "(not listed)", reason)

    def _reason(self, address: str, h: ServerHealth | None, after: str) -> str:
        if h is None:
            return "no longer monitored"
        if h.shunned:
            return h.shun_reason
        if "SHUNNED_REPLICATION_LAG" in after:
            repl = h.replication
            broken = "" if repl is None or not repl.broken else (
                f" (replication {'IO' if not repl.io_running else 'SQL' if not repl.sql_running else 'lag unknown'}"
                f"{' stopped' if not (repl.io_running and repl.sql_running) else ''}"
                f"{': ' + repl.last_error if repl.last_error else ''}; counted as lag_when_null)"
            )
            return f"replication lag {h.lag} s over max_replication_lag for {self.settings.replication_lag_count} check(s){broken}"
        parts = []
        if h.read_only is not None:
            parts.append(f"read_only={int(h.read_only)}")
        if h.lag is not None:
            parts.append(f"replication lag {h.lag} s")
        return "answers checks again (" + ", ".join(parts) + ")" if parts else "answers checks again"

    # ---- reading ------------------------------------------------------------------------------------

    def table(self, name: str) -> tuple[tuple[str, ...], list[tuple]]:
        """A monitor schema table as (columns, rows), read now."""
        columns = MONITOR_TABLES[name]
        if name != "mysql_server_health":
            return columns, list(self.history[name])
        status = {}
        for s in self.topology.servers:
            status.setdefault(s.address, s.status)
        rows = []
        for address, h in sorted(self.health.items()):
            host, _, port = address.rpartition(":")
            repl = h.replication
            rows.append((
                host, int(port), status.get(address, ""), None if h.read_only is None else int(h.read_only), h.lag,
                None if repl is None else int(repl.io_running), None if repl is None else int(repl.sql_running),
                h.gtid_position, h.ping_us, h.ping_failures, h.shun_reason,
            ))  # fmt: skip
        return columns, rows

    def gtid_positions(self) -> dict[str, str]:
        """Per server address, the last GTID position read (for consistent reads)."""
        return {a: h.gtid_position for a, h in self.health.items() if h.gtid_position is not None}

