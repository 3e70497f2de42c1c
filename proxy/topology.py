"""Server health and the live topology: pure data and pure functions (no I/O, no asyncio, no clock).

Theory of operation
-------------------
The monitor (proxy.monitor) turns check results into a `ServerHealth` per server address, only
through the transition functions below (`connect_failed`, `ping_failed`, `check_succeeded`,
`read_only_seen`, `replication_seen`): each takes the old value, the observation and `now`, and
returns a new frozen value. From the configured servers, the replication hostgroup pairs and those
health values, `runtime_servers` derives the live server list, with ProxySQL's replication-hostgroup
semantics:

* placement: a server configured in a pair's writer or reader hostgroup goes where its last
  successful read_only check puts it: read_only=0 -> the writer hostgroup, read_only=1 -> the
  reader hostgroup (a writer is also a member of the reader hostgroup only when the pair says
  writer_is_also_reader: proxy.hostgroups adds that). Never checked, or only failed checks: where it
  is configured. A server in no pair never moves.
* status: OFFLINE_SOFT / OFFLINE_HARD are the operator's and kept as configured. Otherwise:
  - SHUNNED while the health says so: `shun_on_failures` connect errors within one second, or
    `ping_max_failures` missed pings in a row. Lifted once `shun_recovery_time_sec` has passed, the
    server answered a ping or connect since it was shunned and -- when its read_only was ever known
    -- a read_only check has answered again too: a server back from the dead may have changed role
    (a restarted old primary comes back read_only) and must not rejoin where it used to be.
  - SHUNNED_REPLICATION_LAG while the last `replication_lag_count` lag checks all exceeded the row's
    `max_replication_lag` (a stopped or broken replica counts `lag_when_null` seconds).
  - ONLINE otherwise. With no health for a server (the monitor is off, or has not looked yet) the
    configured status stands.

`Topology` is the immutable snapshot the monitor publishes: the derived server list plus the health
of every monitored server (read_only, lag, GTID position, ping latency). The application builds its
Router from `Topology.servers`; sessions read it, nobody mutates it. `changes` and `new_writers`
compare two snapshots (for the one log line per status change, and the failover counter).
"""

from __future__ import annotations

import dataclasses
import enum
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rules.model import ReplicationHostgroup

from .config import Server

__all__ = [
    "MAX_LAG_COUNT",
    "Change",
    "Replication",
    "ServerHealth",
    "Status",
    "Thresholds",
    "Topology",
    "changes",
    "check_succeeded",
    "connect_failed",
    "new_writers",
    "ping_failed",
    "read_only_seen",
    "replication_seen",
    "runtime_servers",
]

MAX_LAG_COUNT = 10  # replication_lag_count's upper limit: the lags a ServerHealth remembers


class Status(enum.StrEnum):
    """Live server statuses (ProxySQL's). A Server's `status` holds the plain string value."""

    ONLINE = "ONLINE"
    SHUNNED = "SHUNNED"
    SHUNNED_REPLICATION_LAG = "SHUNNED_REPLICATION_LAG"
    OFFLINE_SOFT = "OFFLINE_SOFT"
    OFFLINE_HARD = "OFFLINE_HARD"


_OPERATOR = (Status.OFFLINE_SOFT.value, Status.OFFLINE_HARD.value)


class Thresholds(Protocol):
    """The [monitor] settings the transitions read (proxy.config.MonitorSettings)."""

    ping_max_failures: int
    shun_on_failures: int
    shun_recovery_time_sec: int
    replication_lag_count: int
    lag_when_null: int


@dataclass(frozen=True, slots=True)
class Replication:
    """A replica's state from SHOW SLAVE STATUS / SHOW REPLICA STATUS (the first channel)."""

    seconds_behind: int | None  # Seconds_Behind_Master; None when the server reports NULL
    io_running: bool
    sql_running: bool
    last_error: str = ""  # Last_SQL_Error or Last_IO_Error, when a thread stopped on one

    @property
    def broken(self) -> bool:
        return not (self.io_running and self.sql_running) or self.seconds_behind is None


@dataclass(frozen=True, slots=True)
class ServerHealth:
    """What the checks know about one server (by address). Replaced, never mutated."""

    address: str
    shunned: bool = False
    shun_reason: str = ""  # why it is SHUNNED ("" when it is not)
    shunned_at: float = 0.0  # monitor clock (seconds)
    ping_failures: int = 0  # consecutive missed pings
    connect_errors: tuple[float, ...] = ()  # times of recent connect errors (the last second's)
    read_only: bool | None = None  # the last successful read_only check; None: never answered
    replication: Replication | None = None  # None: not a replica (no status rows) or never checked
    lag: int | None = None  # seconds counted against max_replication_lag (lag_when_null if broken)
    recent_lags: tuple[int | None, ...] = ()  # the last MAX_LAG_COUNT lags, most recent last
    gtid_position: str | None = None  # @@gtid_current_pos (MariaDB) / @@gtid_executed (MySQL)
    ping_us: int | None = None  # the last successful ping's round trip
    answered_at: float = float("-inf")  # the last successful ping or connect check (monitor clock)
    read_only_at: float = float("-inf")  # the last successful read_only check

    @property
    def behind(self) -> int | None:
        """Seconds behind its source for a lag-bounded read (proxy.causal): the last lag check's
        reading (lag_when_null for a stopped or broken replica); 0 for a server known to be
        writable and not replicating (a writer serving reads); None when unknown."""
        if self.replication is not None:
            return self.lag
        if self.read_only is False:
            return 0
        return None

    def lagging(self, max_lag: int, count: int) -> bool:
        """The last `count` lag checks all exceeded `max_lag` seconds (0 = no limit)."""
        if max_lag <= 0 or count <= 0 or len(self.recent_lags) < count:
            return False
        return all(lag is not None and lag > max_lag for lag in self.recent_lags[-count:])


# ---- transitions --------------------------------------------------------------------------------------


def connect_failed(h: ServerHealth, now: float, cause: str, t: Thresholds) -> ServerHealth:
    """A connection to the server failed (the monitor's, or a session's): shun at
    `shun_on_failures` within one second."""
    if t.shun_on_failures <= 0:
        return h
    window = (*(x for x in h.connect_errors if now - x < 1.0), now)[-t.shun_on_failures:]
    if not h.shunned and len(window) >= t.shun_on_failures:
        return dataclasses.replace(
            h, shunned=True, shunned_at=now, connect_errors=(),
            shun_reason=f"{len(window)} connect errors within 1 s (last: {cause})",
        )  # fmt: skip
    return dataclasses.replace(h, connect_errors=window)


def ping_failed(h: ServerHealth, now: float, error: str, t: Thresholds) -> ServerHealth:
    """A ping got no answer in time (or an error): shun at `ping_max_failures` in a row."""
    n = h.ping_failures + 1
    if not h.shunned and n >= t.ping_max_failures:
        return dataclasses.replace(
            h, ping_failures=n, ping_us=None, shunned=True, shunned_at=now,
            shun_reason=f"{n} ping(s) missed in a row (last: {error})",
        )  # fmt: skip
    return dataclasses.replace(h, ping_failures=n, ping_us=None)


def _recovered(h: ServerHealth, now: float, t: Thresholds) -> ServerHealth:
    """Lift a SHUNNED status when the server has earned it back (see the module docstring)."""
    if (
        h.shunned
        and now - h.shunned_at >= t.shun_recovery_time_sec
        and h.answered_at > h.shunned_at
        and (h.read_only is None or h.read_only_at > h.shunned_at)
    ):
        return dataclasses.replace(h, shunned=False, shun_reason="", connect_errors=())
    return h


def check_succeeded(h: ServerHealth, now: float, t: Thresholds, ping_us: int | None = None) -> ServerHealth:
    """A ping (`ping_us` given) or a connect check succeeded."""
    if ping_us is not None:
        h = dataclasses.replace(h, answered_at=now, ping_failures=0, ping_us=ping_us)
    else:
        h = dataclasses.replace(h, answered_at=now)
    return _recovered(h, now, t)


def read_only_seen(h: ServerHealth, now: float, read_only: bool, gtid_position: str | None, t: Thresholds) -> ServerHealth:
    """A read_only check answered (and the GTID position read with it, when it was). A replica
    that became writable was promoted: what its lag checks said belongs to its old role."""
    changes: dict = {"read_only": read_only, "read_only_at": now}
    if gtid_position is not None:
        changes["gtid_position"] = gtid_position
    if h.read_only and not read_only:
        changes.update(replication=None, lag=None, recent_lags=())
    return _recovered(dataclasses.replace(h, **changes), now, t)


def replication_seen(h: ServerHealth, repl: Replication | None, t: Thresholds) -> ServerHealth:
    """A replication lag check answered: `repl` None means the server is not a replica."""
    lag = None if repl is None else t.lag_when_null if repl.broken else repl.seconds_behind
    recent = (*h.recent_lags, lag)[-MAX_LAG_COUNT:]
    return dataclasses.replace(h, replication=repl, lag=lag, recent_lags=recent)


# ---- derivation ---------------------------------------------------------------------------------------


def live_status(row: Server, h: ServerHealth | None, lag_count: int) -> str:
    """A configured row's live status given its server's health."""
    if row.status in _OPERATOR or h is None:
        return row.status
    if h.shunned:
        return Status.SHUNNED.value
    if h.lagging(row.max_replication_lag, lag_count):
        return Status.SHUNNED_REPLICATION_LAG.value
    return Status.ONLINE.value


def runtime_servers(
    configured: Iterable[Server],
    pairs: Iterable[ReplicationHostgroup],
    health: Mapping[str, ServerHealth],
    lag_count: int = 1,
) -> tuple[Server, ...]:
    """The live server list: each configured row placed by its server's read_only and given its
    live status. A server configured in both hostgroups of a pair appears once per hostgroup it
    is placed in (the row configured in that hostgroup wins). In configuration order (a moved row
    keeps its place), so with no health at all the result equals `configured`."""
    pair_of: dict[int, ReplicationHostgroup] = {}
    for p in pairs:
        pair_of[p.writer_hostgroup] = p
        pair_of[p.reader_hostgroup] = p
    placed: dict[tuple[int, str], tuple[Server, bool]] = {}
    for row in configured:
        h = health.get(row.address)
        hg = row.hostgroup_id
        pair = pair_of.get(hg)
        if pair is not None and h is not None and h.read_only is not None:
            hg = pair.reader_hostgroup if h.read_only else pair.writer_hostgroup
        key = (hg, row.address)
        own = hg == row.hostgroup_id
        prev = placed.get(key)
        if prev is not None and (prev[1] or not own):
            continue  # a row configured in this hostgroup is already there
        status = live_status(row, h, lag_count)
        server = row if own and status == row.status else dataclasses.replace(row, hostgroup_id=hg, status=status)
        placed[key] = (server, own)  # (replacing a moved row keeps the moved row's place)
    return tuple(s for s, _ in placed.values())


@dataclass(frozen=True, slots=True)
class Topology:
    """One published view: the live server list and the health behind it.

    `servers`: proxy.config.Server rows with live `hostgroup_id` (placement) and `status`; build a
    Router from them. `health`: per server address (read-only mapping); empty when the monitor is
    off. `generation` grows by one per published snapshot."""

    generation: int
    servers: tuple[Server, ...]
    health: Mapping[str, ServerHealth] = field(default_factory=lambda: types.MappingProxyType({}))
    monitored: bool = False

    def server(self, address: str) -> ServerHealth | None:
        return self.health.get(address)

    def hostgroup(self, hostgroup_id: int) -> tuple[Server, ...]:
        return tuple(s for s in self.servers if s.hostgroup_id == hostgroup_id)

    def online(self, hostgroup_id: int) -> tuple[Server, ...]:
        """The ONLINE servers placed in a hostgroup (writer_is_also_reader copies not included)."""
        return tuple(s for s in self.servers if s.hostgroup_id == hostgroup_id and s.status == Status.ONLINE.value)


def make_topology(
    generation: int,
    configured: Sequence[Server],
    pairs: Iterable[ReplicationHostgroup],
    health: Mapping[str, ServerHealth],
    lag_count: int,
    monitored: bool,
) -> Topology:
    return Topology(generation, runtime_servers(configured, pairs, health, lag_count), types.MappingProxyType(dict(health)), monitored)


# ---- comparing snapshots ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """A server whose placement or status changed: `before` / `after` as "STATUS in hostgroup N"
    phrases ("" when it was not / is no longer in the list); `moved`: its hostgroups changed."""

    address: str
    before: str
    after: str
    moved: bool = False


def _where(servers: Iterable[Server]) -> dict[str, list[Server]]:
    out: dict[str, list[Server]] = {}
    for s in servers:
        out.setdefault(s.address, []).append(s)
    return out


def _phrase(servers: Iterable[Server]) -> str:
    return ", ".join(f"{s.status} in hostgroup {s.hostgroup_id}" for s in servers)


def changes(before: Iterable[Server], after: Iterable[Server]) -> list[Change]:
    """Servers whose (hostgroup, status) set differs between two server lists, by address."""
    b, a = _where(before), _where(after)
    out = []
    for addr in dict.fromkeys([*b, *a]):
        pb, pa = _phrase(b.get(addr, ())), _phrase(a.get(addr, ()))
        if pb != pa:
            moved = {s.hostgroup_id for s in b.get(addr, ())} != {s.hostgroup_id for s in a.get(addr, ())}
            out.append(Change(addr, pb, pa, moved))
    return out


def new_writers(before: Iterable[Server], after: Iterable[Server], pairs: Iterable[ReplicationHostgroup]) -> list[tuple[int, str]]:
    """(writer hostgroup, address) for each server placed in a pair's writer hostgroup in `after`
    that was not in it in `before`: a failover or switchover the monitor followed."""
    writers = {p.writer_hostgroup for p in pairs}
    had = {(s.hostgroup_id, s.address) for s in before if s.hostgroup_id in writers}
    return [(s.hostgroup_id, s.address) for s in after if s.hostgroup_id in writers and (s.hostgroup_id, s.address) not in had]
