"""The stats registry: counters the data path bumps, tables and metrics computed when read.

Theory of operation
-------------------
One `StatsRegistry` per process. The data path records into it with plain integer arithmetic and
never waits on it; everything derived (sums, averages, the ProxySQL ``stats_*`` tables, the
Prometheus families in proxy.metrics) is computed by whoever reads, from these counters plus the live
objects the registry is given as `Sources` (sessions, pools, servers, users, rule ids, the
classifier's cache counters). So there is one set of numbers and no double bookkeeping: the admin
tables and Prometheus read the same counters.

Hot path — one call per statement, when its reply has ended::

    stats.statement_done(srv, fp, kind, schema, username, rule_ids, start_ns, rows_affected, error)

`srv` is the `ServerStats` handle of the (hostgroup, server) that ran it (`registry.server(hg,
address)`, looked up once per acquisition and kept with the connection; `registry.local` for a
statement the proxy answered itself), `fp` anything with ``.digest`` (int) and ``.text`` (str) —
a rules.digest.Fingerprint —, `kind` a rules.classify.Kind (or a str), `start_ns` the
``time.monotonic_ns()`` stamped when the command arrived (so the time includes waiting for a
connection and replaying session state, as ProxySQL measures it). The call costs ~0.4 us on a
known digest (bench/bench_stats.py: clock read ~50 ns, server counters ~80, digest lookup ~80, entry
update ~100) and ~1.3 us when it creates an entry and evicts one. It updates the server's time
and latency histogram (fixed buckets, found from t.bit_length(); the histogram's count is the server's Queries)
and the statement's digest entry. Per-(hostgroup, kind) statement counts are not kept per
statement: each digest entry remembers its kind, and the counts are summed from the entries at read
time (plus what evicted and reset entries had, folded into `_retired`), so they stay monotonic for
Prometheus.

Other recording points (none per statement): `client_connected` / `client_aborted` (per client
connection), `acquire_done` / `acquire_failed` (pool slow path; the hot path bumps
``srv.acquire_immediate += 1`` when `Pool.try_acquire` hands out an idle connection at once),
`connect_error` (a backend connect failed), `error` (an ERR sent outside a statement: login, too
many connections, protocol errors). Backend byte counts are plain ints the backend connection may
bump directly: ``srv.bytes_sent += n`` / ``srv.bytes_recv += n``.

The digest table (``stats_mysql_query_digest``) is keyed like ProxySQL's, (hostgroup, schemaname,
username, digest), and bounded: at most `max_digests` entries, the least recently seen evicted first.
It is an OrderedDict: get + move_to_end on a hit, popitem(last=False) to evict, both O(1). (A plain
dict with pop-and-reinsert is ~25 ns cheaper per hit, but finding its oldest entry scans the deleted
slots at its front: ~1.8 us per eviction, measured.) An entry moves to the recent end at most once
per `lru_resolution` (1 s by default; 0 = on every hit): a hot digest pays move_to_end once a second
instead of per statement (~50 ns saved), and eviction order is least-recently-seen to within that
resolution. Digest texts are cut at `max_digest_text` characters (ProxySQL's
``mysql-query_digests_max_digest_length``), so memory is bounded: ~650 bytes plus the text per entry
(bench: 10,000 entries with ~75-char texts = 6.5 MiB; 1,000,000 unbounded = 570 MiB).
`max_digests=0` keeps no entries (statement counts by kind still work). ``sum_rows_sent`` is 0
unless the caller passes `rows_sent` (results are relayed unparsed; nothing counts rows today).

Per-server pool figures (ConnUsed, ConnFree, ConnOK = connections created, reused, connecting) are
read from the live pools when a table or metric is read. MaxConnUsed is a sampled high-water mark
of the lent connections: updated at every read and by `sample()` (call it from a periodic task);
connections lent and returned between two samples are not seen.

Times: digest and server times are kept in ns and shown in µs (ProxySQL's unit); first_seen /
last_seen are monotonic ns shown as unix seconds, converted at read time.

What this module must never do: import prometheus_client (proxy.metrics does the exposition), do
I/O, or hold a lock. It is not thread-safe by design: the data path, the admin server and the
metrics endpoint all run on the event loop thread. Readers snapshot every live collection with
``list()`` before iterating it.

Sources (what the composition root passes; duck-typed, see the Protocols below)::

    Sources(
        sessions=lambda: app.sessions.values(),          # SessionLike (proxy.client.ClientSession)
        pools=lambda: app.pools.values(),                # PoolLike (proxy.pool.Pool)
        servers=lambda: ((hg, s) for hg, ss in app.router.hostgroups.members.items() for s in ss),
        users=lambda: app.config.users.values(),         # UserLike (proxy.config.User)
        rules=lambda: (r.rule_id for r in app.config.ruleset.rules),
        session_clock=lambda: app.clock(),               # the clock of SessionLike.last_activity
    )
"""

from __future__ import annotations

import itertools
import json
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from rules.classify import cache_info as _classifier_cache_info
from rules.digest import digest_hex

from .session import PinReason

__all__ = [
    "ACQUIRE_WAIT_BUCKETS",
    "CHECK_BUCKETS",
    "CheckStats",
    "LATENCY_BUCKETS",
    "SERVER_STATUSES",
    "TABLES",
    "DigestStats",
    "ServerStats",
    "Sources",
    "StatsRegistry",
    "Table",
]

# Histogram upper bounds, in seconds (Prometheus convention); the data path compares ns.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
ACQUIRE_WAIT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
)  # fmt: skip
_LATENCY_NS = tuple(round(b * 1e9) for b in LATENCY_BUCKETS)
_ACQUIRE_NS = tuple(round(b * 1e9) for b in ACQUIRE_WAIT_BUCKETS)


def _bucket_tables(bounds: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per bit length of t (ns): how many bounds lie below the interval [2**(n-1), 2**n) t is in, and
    the one bound inside it (at most one: consecutive bounds are at least 2x apart). Then
    ``i = BASE[n] + (t > EDGE[n])`` is ``bisect_left(bounds, t)`` (Prometheus' le: t <= bound
    counts in that bucket) for a bit_length and two tuple reads instead of a bisection (measured with
    callgrind: ~265 fewer instructions per statement_done, of ~7,400)."""
    assert all(b2 >= 2 * b1 for b1, b2 in itertools.pairwise(bounds)), "bounds must be >= 2x apart"
    base, edge = [], []
    for n in range(65):
        lo, hi = (1 << (n - 1) if n else 0), 1 << n  # t in [lo, hi)
        base.append(sum(1 for b in bounds if b < lo))
        inside = [b for b in bounds if lo <= b < hi]
        edge.append(inside[0] if inside else 1 << 64)
    return tuple(base), tuple(edge)


_LATENCY_BASE, _LATENCY_EDGE = _bucket_tables(_LATENCY_NS)

# Every live status a server can have (proxy.topology.Status): the configured ones plus the
# monitor's SHUNNED_REPLICATION_LAG.
SERVER_STATUSES = ("ONLINE", "SHUNNED", "SHUNNED_REPLICATION_LAG", "OFFLINE_SOFT", "OFFLINE_HARD")
# Monitor check latency buckets, in seconds (a check's timeout is 10 ms .. 600 s).
CHECK_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_CHECK_NS = tuple(round(b * 1e9) for b in CHECK_BUCKETS)
LOCAL_HOSTGROUP = -1  # statements the proxy answered itself (ProxySQL shows -1 for query-cache hits)

_monotonic_ns = time.monotonic_ns
_bisect = bisect_left


# ---- what the registry reads from the live objects ------------------------------------------------


class BackendLike(Protocol):
    """proxy.backend.BackendConnection: the hostgroup it serves and its server."""

    hostgroup: int
    server: ServerLike


class _HasSchema(Protocol):
    schema: str | None


class SessionLike(Protocol):
    """proxy.client.ClientSession as the processlist, users, pins and global tables read it.

    `current_sql` (the text of the statement in flight, None when idle) is read with getattr and may
    be absent; everything else ClientSession already has.
    """

    id: int
    username: str
    peer: str  # "host:port" of the client
    logged_in: bool
    busy: bool  # a command is in flight
    last_activity: float  # Sources.session_clock() time of the last bytes in / reply end
    pin_reasons: Collection[PinReason]
    txn_hg: int | None  # hostgroup holding an open transaction
    status: int  # server status flags of the last reply
    current: BackendLike | None  # the connection running the command in flight
    conns: Mapping[int, BackendLike]  # hostgroup -> connection the session holds
    state: _HasSchema


class BudgetLike(Protocol):
    """proxy.pool.ServerBudget."""

    address: str
    open: int
    connecting: int
    created: int
    reused: int


class PoolLike(Protocol):
    """proxy.pool.Pool."""

    budget: BudgetLike
    idle: Collection[Any]
    lent: int


class ServerLike(Protocol):
    """proxy.config.Server."""

    hostname: str
    port: int
    status: str
    address: str


class UserLike(Protocol):
    """proxy.config.User."""

    username: str
    max_connections: int


def _nothing() -> tuple:
    return ()


@dataclass(slots=True)
class Sources:
    """Callables the registry reads at read time (each returns a fresh iterable)."""

    sessions: Callable[[], Iterable[SessionLike]] = _nothing
    pools: Callable[[], Iterable[PoolLike]] = _nothing
    servers: Callable[[], Iterable[tuple[int, ServerLike]]] = _nothing  # (hostgroup, server) membership
    users: Callable[[], Iterable[UserLike]] = _nothing
    rules: Callable[[], Iterable[int]] = _nothing  # rule_ids of the runtime rules (listed with 0 hits)
    # The monitor's health per server address (proxy.topology.ServerHealth: read_only, lag, ...).
    health: Callable[[], Mapping[str, Any]] = dict
    classifier_cache: Callable[[], Mapping[str, int]] = _classifier_cache_info
    session_clock: Callable[[], float] = time.monotonic


class Table(NamedTuple):
    columns: tuple[str, ...]
    rows: list[tuple]


# ---- the counters ----------------------------------------------------------------------------------


class ServerStats:
    """Counters of one (hostgroup, server). A handle: the data path keeps it and bumps its fields."""

    __slots__ = (
        "acquire_immediate",
        "acquire_timeouts",
        "acquire_wait_ns",
        "acquire_waits",
        "address",
        "bytes_recv",
        "bytes_sent",
        "hostgroup",
        "latency",
        "resets",
        "time_ns",
    )

    def __init__(self, hostgroup: int, address: str) -> None:
        self.hostgroup = hostgroup
        self.address = address
        self.time_ns = 0  # summed time of the statements run (their replies ended)
        self.latency = [0] * (len(_LATENCY_NS) + 1)  # statements per bucket (not cumulative); last = +Inf
        self.bytes_sent = 0
        self.bytes_recv = 0
        self.acquire_immediate = 0  # Pool.try_acquire handed out an idle connection at once
        self.acquire_waits = [0] * (len(_ACQUIRE_NS) + 1)  # slow-path acquisitions by wait
        self.acquire_wait_ns = 0
        self.acquire_timeouts = 0
        # COM_RESET_CONNECTION the proxy sent on its own (a connection back to its pool with state no
        # one else may inherit: temporary tables, a client's warnings...), each followed by the SET
        # that turns session tracking on again.
        self.resets = 0

    @property
    def queries(self) -> int:
        """Statements run: the latency histogram's count (one increment less per statement)."""
        return sum(self.latency)

    def __repr__(self) -> str:
        return f"ServerStats(hg={self.hostgroup}, {self.address}, queries={self.queries})"


class CheckStats:
    """One (server, monitor check)'s counters: how many ran, how many failed, latency histogram."""

    __slots__ = ("buckets", "errors", "sum_ns")

    def __init__(self) -> None:
        self.buckets = [0] * (len(_CHECK_NS) + 1)  # checks per bucket (not cumulative); last = +Inf
        self.sum_ns = 0
        self.errors = 0

    @property
    def count(self) -> int:
        return sum(self.buckets)


class DigestStats:
    """One stats_mysql_query_digest row's counters (times in ns; seen times monotonic ns)."""

    __slots__ = ("count", "first_seen", "kind", "last_seen", "max_time", "min_time", "moved", "rows_affected", "rows_sent", "sum_time", "text")

    def __init__(self, text: str, kind: object, now: int) -> None:
        self.text = text
        self.kind = kind
        self.count = 0
        self.first_seen = now
        self.last_seen = now
        self.moved = now  # when it last moved to the most-recent end of the LRU order
        self.sum_time = 0
        self.min_time = 1 << 62
        self.max_time = 0
        self.rows_affected = 0
        self.rows_sent = 0


def _kind_name(kind: object) -> str:
    v = getattr(kind, "value", kind)
    return v if isinstance(v, str) else str(v)


# ---- the registry ---------------------------------------------------------------------------------


class StatsRegistry:
    def __init__(
        self,
        max_digests: int = 10_000,
        *,
        max_digest_text: int = 2048,
        lru_resolution: float = 1.0,
        sources: Sources | None = None,
    ) -> None:
        if max_digests < 0:
            raise ValueError("max_digests must be >= 0")
        self.max_digests = max_digests
        self.max_digest_text = max_digest_text
        self.lru_resolution_ns = round(lru_resolution * 1e9)
        self.sources = sources or Sources()
        self.started_ns = _monotonic_ns()
        self._digests: OrderedDict[tuple, DigestStats] = OrderedDict()
        self.digest_evictions = 0
        # Statement counts of digest entries that are gone (evicted or reset), by (hostgroup, kind name).
        self._retired: dict[tuple[int, str], int] = {}
        self._servers: dict[tuple[int, str], ServerStats] = {}
        self.local = self.server(LOCAL_HOSTGROUP, "")
        self.rule_hits: dict[int, int] = {}
        self.errors: dict[int, int] = {}
        self.conn_errors: dict[str, int] = {}  # server address -> failed backend connects
        self.max_used: dict[str, int] = {}  # server address -> sampled high-water mark of lent connections
        self.clients_created = 0
        self.clients_aborted = 0
        self.checks: dict[tuple[str, str], CheckStats] = {}  # (server address, check) -> counters
        self.failovers: dict[int, int] = {}  # writer hostgroup -> writer changes the monitor followed
        # Consistent reads (proxy.causal): (mode, outcome) -> reads; outcome: at_position (a server
        # known to have applied the write), waited (MASTER_GTID_WAIT succeeded), timeout (the wait
        # ran out; the read went to the writer), writer (mode fast: no server known to have it).
        self.causal: dict[tuple[str, str], int] = {}
        self.causal_wait_ns = 0  # time spent waiting for replicas, summed
        # Lag-bounded reads (a max_lag_ms rule or hint): served by a replica within the bound, or
        # sent to the writer (no replica of the hostgroup within it, or a causal requirement did).
        self.lag_bounded_reads: dict[str, int] = {"replica": 0, "writer": 0}

    def bind(self, **sources: Callable) -> None:
        """Set sources late (the composition root builds the registry before the app's objects)."""
        for name, fn in sources.items():
            setattr(self.sources, name, fn)

    # ---- recording: per statement ------------------------------------------------------------------

    def server(self, hostgroup: int, address: str) -> ServerStats:
        """The counters handle of `address` serving `hostgroup` (created on first use). Keep it."""
        key = (hostgroup, address)
        srv = self._servers.get(key)
        if srv is None:
            srv = self._servers[key] = ServerStats(hostgroup, address)
        return srv

    def statement_done(
        self,
        srv: ServerStats,
        fp: Any,
        kind: object,
        schema: str | None,
        username: str,
        rule_ids: tuple[int, ...],
        start_ns: int,
        rows_affected: int = 0,
        error: int = 0,
        rows_sent: int = 0,
    ) -> None:
        """One statement's reply ended (pass arguments by position: keywords cost more)."""
        now = _monotonic_ns()
        t = now - start_ns
        srv.time_ns += t
        n = t.bit_length()  # (t >= 0: a monotonic clock; < 2**64 ns: 584 years)
        srv.latency[_LATENCY_BASE[n] + (t > _LATENCY_EDGE[n])] += 1
        key = (srv.hostgroup, schema, username, fp.digest)
        digests = self._digests
        e = digests.get(key)
        if e is None:
            e = self._new_digest(key, fp, kind, now)
        elif now - e.moved > self.lru_resolution_ns:
            digests.move_to_end(key)
            e.moved = now
        e.count += 1
        e.last_seen = now
        e.sum_time += t
        if t < e.min_time:  # noqa: PLR1730 - min() is a call: twice the cost of a compare
            e.min_time = t
        if t > e.max_time:  # noqa: PLR1730
            e.max_time = t
        if rows_affected:
            e.rows_affected += rows_affected
        if rows_sent:
            e.rows_sent += rows_sent
        if rule_ids:
            hits = self.rule_hits
            for r in rule_ids:
                hits[r] = hits.get(r, 0) + 1
        if error:
            self.errors[error] = self.errors.get(error, 0) + 1

    def _new_digest(self, key: tuple, fp: Any, kind: object, now: int) -> DigestStats:
        text = fp.text
        if len(text) > self.max_digest_text:
            text = text[: self.max_digest_text]
        e = DigestStats(text, kind, now)
        digests = self._digests
        if self.max_digests == 0:
            # No table: the entry is thrown away after this statement; its count goes to the totals.
            self._retire(key[0], kind, 1)
            return e
        while len(digests) >= self.max_digests:
            (hg, _, _, _), old = digests.popitem(last=False)
            self._retire(hg, old.kind, old.count)
            self.digest_evictions += 1
        digests[key] = e
        return e

    def _retire(self, hostgroup: int, kind: object, count: int) -> None:
        k = (hostgroup, _kind_name(kind))
        self._retired[k] = self._retired.get(k, 0) + count

    # ---- recording: not per statement ---------------------------------------------------------------

    def client_connected(self) -> None:
        """A client connection was accepted."""
        self.clients_created += 1

    def client_aborted(self) -> None:
        """A client connection ended without COM_QUIT (dropped, timed out, refused, failed login)."""
        self.clients_aborted += 1

    def acquire_done(self, srv: ServerStats, wait_ns: int) -> None:
        """Pool slow path (`Pool.acquire`) handed out a connection after `wait_ns`."""
        srv.acquire_waits[_bisect(_ACQUIRE_NS, wait_ns)] += 1
        srv.acquire_wait_ns += wait_ns

    def acquire_failed(self, srv: ServerStats, wait_ns: int) -> None:
        """Pool slow path gave up (PoolTimeout) after `wait_ns`."""
        srv.acquire_timeouts += 1

    def connect_error(self, address: str) -> None:
        """A new backend connection to `address` failed (ProxySQL's ConnERR)."""
        self.conn_errors[address] = self.conn_errors.get(address, 0) + 1

    def check_done(self, address: str, check: str, elapsed_ns: int, ok: bool) -> None:
        """The monitor ran `check` on `address` (proxy.monitor; never per statement)."""
        st = self.checks.get((address, check))
        if st is None:
            st = self.checks[(address, check)] = CheckStats()
        st.buckets[bisect_left(_CHECK_NS, elapsed_ns)] += 1
        st.sum_ns += elapsed_ns
        if not ok:
            st.errors += 1

    def failover(self, hostgroup: int) -> None:
        """The monitor placed a new server in writer hostgroup `hostgroup` (read_only=0 seen)."""
        self.failovers[hostgroup] = self.failovers.get(hostgroup, 0) + 1

    def error(self, code: int) -> None:
        """An ERR packet with `code` went to a client outside statement_done (login, limits, protocol)."""
        self.errors[code] = self.errors.get(code, 0) + 1

    def sample(self) -> None:
        """Update MaxConnUsed from the pools (also done at every read). Call it from a periodic task
        for a finer high-water mark: connections lent and returned between samples are not seen."""
        self.pool_state()

    # ---- reading: aggregates ------------------------------------------------------------------------

    @property
    def digest_count(self) -> int:
        return len(self._digests)

    def server_stats(self) -> list[ServerStats]:
        """Every (hostgroup, server) handle, the proxy's own (hostgroup -1) included."""
        return list(self._servers.values())

    def statements_by_kind(self) -> dict[tuple[int, str], int]:
        """(hostgroup, kind name) -> statements, since start (monotonic: survives eviction and reset)."""
        out = dict(self._retired)
        for (hg, _, _, _), e in list(self._digests.items()):
            k = (hg, _kind_name(e.kind))
            out[k] = out.get(k, 0) + e.count
        return out

    def questions(self) -> int:
        return sum(s.queries for s in list(self._servers.values()))

    def latency_histograms(self) -> dict[int, tuple[list[int], int]]:
        """hostgroup -> (per-bucket counts, sum ns) of statement latency (servers summed)."""
        out: dict[int, tuple[list[int], int]] = {}
        for s in list(self._servers.values()):
            if s.hostgroup == LOCAL_HOSTGROUP and not s.queries:
                continue  # the proxy answered nothing itself: no hostgroup -1 series
            counts, total = out.get(s.hostgroup, (None, 0))
            if counts is None:
                counts = [0] * len(s.latency)
            out[s.hostgroup] = ([a + b for a, b in zip(counts, s.latency, strict=True)], total + s.time_ns)
        return out

    def acquire_histograms(self) -> dict[str, tuple[list[int], int, int]]:
        """server address -> (per-bucket counts, sum ns, timeouts) of pool acquisitions; the
        immediate ones (no wait) are in the first bucket."""
        out: dict[str, tuple[list[int], int, int]] = {}
        for s in list(self._servers.values()):
            if s.hostgroup == LOCAL_HOSTGROUP:
                continue
            counts, total, timeouts = out.get(s.address, (None, 0, 0))
            if counts is None:
                counts = [0] * len(s.acquire_waits)
            counts = [a + b for a, b in zip(counts, s.acquire_waits, strict=True)]
            counts[0] += s.acquire_immediate
            out[s.address] = (counts, total + s.acquire_wait_ns, timeouts + s.acquire_timeouts)
        return out

    def pool_state(self) -> dict[str, dict[str, int]]:
        """server address -> {used, idle, connecting, open, created, reused} from the live pools."""
        out: dict[str, dict[str, int]] = {}
        for pool in list(self.sources.pools()):
            b = pool.budget
            st = out.get(b.address)
            if st is None:
                st = out[b.address] = {"used": 0, "idle": 0, "connecting": b.connecting, "open": b.open, "created": b.created, "reused": b.reused}
            st["used"] += pool.lent
            st["idle"] += len(pool.idle)
        for address, st in out.items():
            if st["used"] > self.max_used.get(address, 0):
                self.max_used[address] = st["used"]
        return out

    def servers(self) -> list[tuple[int, ServerLike]]:
        return list(self.sources.servers())

    def sessions(self) -> list[SessionLike]:
        return list(self.sources.sessions())

    def pinned_sessions(self, sessions: Iterable[SessionLike] | None = None) -> dict[PinReason, int]:
        """PinReason -> sessions pinned for it now (every reason listed, 0 included)."""
        out = dict.fromkeys(PinReason, 0)
        for s in self.sessions() if sessions is None else sessions:
            for r in s.pin_reasons:
                out[r] = out.get(r, 0) + 1
        return out

    def classifier_cache(self) -> dict[str, float]:
        """The classifier's cache counters, with hit_ratio = hits / (hits + misses) (0 before any)."""
        info = dict(self.sources.classifier_cache())
        hits, misses = info.get("hits", 0), info.get("misses", 0)
        info["hit_ratio"] = hits / (hits + misses) if hits + misses else 0.0
        return info

    def uptime(self) -> float:
        return (_monotonic_ns() - self.started_ns) / 1e9

    # ---- reading: the ProxySQL tables ----------------------------------------------------------------

    def table(self, name: str) -> Table:
        """The stats table `name` (a key of TABLES)."""
        try:
            return TABLES[name](self)
        except KeyError:
            raise KeyError(f"no stats table {name!r}; known: {', '.join(TABLES)}") from None

    def query_digest(self) -> Table:
        """stats_mysql_query_digest: one row per entry, least recently seen first."""
        return Table(DIGEST_COLUMNS, _digest_rows(list(self._digests.items())))

    def reset(self) -> Table:
        """stats_mysql_query_digest_reset: the digest table as it was, then empty. (The statement
        counts by kind keep what the entries had: Prometheus counters never go back.)"""
        return Table(DIGEST_COLUMNS, _digest_rows(self._take_digests()))

    def _take_digests(self) -> list[tuple[tuple, DigestStats]]:
        digests = self._digests
        items = list(digests.items())
        for (hg, _, _, _), e in items:
            self._retire(hg, e.kind, e.count)
        digests.clear()
        return items

    def table_chunks(self, name: str, rows_per_chunk: int = 256) -> tuple[tuple[str, ...], Iterator[list[tuple]]]:
        """The stats table `name` as (columns, an iterator of row lists), for a reader on the event
        loop that must not stall it on a big table (the admin port takes one chunk per loop turn).

        What is read when: the live collection (digest entries, sessions) is copied now, in one
        C-level list(); each chunk's rows are then built from those objects when the chunk is taken.
        So every row is consistent in itself (it is built between two statements, on the loop), the
        table holds exactly the entries and sessions of the moment of the call, and a counter may
        include statements that ended while earlier chunks were taken (a few milliseconds).
        stats_mysql_query_digest_reset empties the table now; its rows are exact (entries that left
        the registry are updated no more). Small tables come as one chunk."""
        if name in ("stats_mysql_query_digest", "stats_mysql_query_digest_reset"):
            items = self._take_digests() if name.endswith("_reset") else list(self._digests.items())
            return DIGEST_COLUMNS, _chunked(items, rows_per_chunk, _digest_rows)
        if name == "stats_mysql_processlist":
            sessions = sorted(self.sessions(), key=lambda s: s.id)
            now = self.sources.session_clock()
            return PROCESSLIST_COLUMNS, _chunked(sessions, rows_per_chunk, lambda part: self._processlist_rows(part, now))
        table = self.table(name)
        return table.columns, iter((table.rows,))

    query_digest_reset = reset

    def query_rules(self) -> Table:
        """stats_mysql_query_rules: every runtime rule (0 hits included), then any other rule that hit."""
        hits = dict(self.rule_hits)
        rows = [(rid, hits.pop(rid, 0)) for rid in sorted(set(self.sources.rules()))]
        rows.extend(sorted(hits.items()))
        return Table(("rule_id", "hits"), rows)

    def connection_pool(self) -> Table:
        """stats_mysql_connection_pool: one row per (hostgroup, server).

        ConnUsed, ConnFree, ConnOK (connections created), ConnERR and MaxConnUsed are per server (its
        pools are shared by the hostgroups it serves), so a server in two hostgroups shows them in
        both rows. Queries, bytes and Latency_us (mean statement time, µs; ProxySQL shows the
        monitor's ping time there) are per (hostgroup, server)."""
        pools = self.pool_state()
        members: dict[tuple[int, str], ServerLike] = {}
        for hg, s in self.servers():
            members[(hg, s.address)] = s
        keys = list(members)
        keys.extend(k for k in list(self._servers) if k not in members and k[0] != LOCAL_HOSTGROUP)
        rows = []
        for hg, address in sorted(keys):
            s = members.get((hg, address))
            if s is not None:
                host, port, status = s.hostname, s.port, s.status
            else:  # no longer configured: counters kept, shown as ProxySQL shows removed servers
                host, _, port_s = address.rpartition(":")
                port, status = int(port_s) if port_s.isdigit() else 0, "OFFLINE_HARD"
            p = pools.get(address, {})
            st = self._servers.get((hg, address))
            queries = st.queries if st else 0
            rows.append(
                (
                    hg, host, port, status, p.get("used", 0), p.get("idle", 0), p.get("created", 0),
                    self.conn_errors.get(address, 0), self.max_used.get(address, 0), queries, 0,
                    st.bytes_sent if st else 0, st.bytes_recv if st else 0,
                    st.time_ns // 1000 // queries if queries else 0,
                )
            )  # fmt: skip
        return Table(CONNECTION_POOL_COLUMNS, rows)

    def processlist(self) -> Table:
        """stats_mysql_processlist: one row per client connection; ProxySQL's columns, then
        ``pin_reasons`` (comma-separated PinReason names, '' when not pinned)."""
        now = self.sources.session_clock()
        return Table(PROCESSLIST_COLUMNS, self._processlist_rows(sorted(self.sessions(), key=lambda s: s.id), now))

    def _processlist_rows(self, sessions: Iterable[SessionLike], now: float) -> list[tuple]:
        rows = []
        for s in sessions:
            cur = s.current
            conns = dict(s.conns)
            if cur is None and conns:
                txn = s.txn_hg
                cur = conns.get(txn) if txn is not None and txn in conns else next(iter(conns.values()))
            hg = cur.hostgroup if cur is not None else -1
            srv_host, srv_port, l_host, l_port = "", 0, "", 0
            if cur is not None:
                srv_host, srv_port = cur.server.hostname, cur.server.port
                l_host, l_port = _sockname(cur)
            cli_host, sep, cli_port = s.peer.rpartition(":")
            if not sep:
                cli_host = s.peer
            command = "Query" if s.busy and s.logged_in else "Sleep" if s.logged_in else "Connect"
            info = (getattr(s, "current_sql", None) or "") if s.busy else ""
            extended = {
                "in_transaction": s.txn_hg is not None,
                "txn_hostgroup": s.txn_hg,
                "backends": [{"hostgroup": h, "server": c.server.address} for h, c in conns.items()],
            }
            rows.append(
                (
                    0, s.id, s.username, (s.state.schema or "") if s.logged_in else "", cli_host,
                    int(cli_port) if cli_port.isdigit() else 0, hg, l_host, l_port, srv_host, srv_port,
                    command, max(0, int((now - s.last_activity) * 1000)), info, s.status,
                    json.dumps(extended, separators=(",", ":")), ",".join(sorted(r.name for r in s.pin_reasons)),
                )
            )  # fmt: skip
        return rows

    def users(self) -> Table:
        """stats_mysql_users: logged-in client connections per configured user, and its limit."""
        counts: dict[str, int] = {}
        for s in self.sessions():
            if s.logged_in:
                counts[s.username] = counts.get(s.username, 0) + 1
        rows = [(u.username, counts.pop(u.username, 0), u.max_connections) for u in list(self.sources.users())]
        rows.extend((name, n, 0) for name, n in sorted(counts.items()))  # users since removed from config
        return Table(("username", "frontend_connections", "frontend_max_connections"), rows)

    def global_status(self) -> Table:
        """stats_mysql_global (SHOW MYSQL STATUS): ProxySQL's names where one fits, then rwproxy's own."""
        sessions = self.sessions()
        pools = self.pool_state()
        backends = [s for s in self.server_stats() if s.hostgroup != LOCAL_HOSTGROUP]
        immediate = sum(s.acquire_immediate for s in backends)
        waited = sum(sum(s.acquire_waits) for s in backends)
        cache = self.classifier_cache()
        values: list[tuple[str, object]] = [
            ("ProxySQL_Uptime", int(self.uptime())),
            ("Active_Transactions", sum(1 for s in sessions if s.txn_hg is not None)),
            ("Client_Connections_aborted", self.clients_aborted),
            ("Client_Connections_connected", len(sessions)),
            ("Client_Connections_created", self.clients_created),
            ("Client_Connections_non_idle", sum(1 for s in sessions if s.busy)),
            ("Client_Connections_hostgroup_locked", sum(1 for s in sessions if s.pin_reasons)),
            ("Server_Connections_aborted", sum(self.conn_errors.values())),
            ("Server_Connections_connected", sum(p["open"] - p["connecting"] for p in pools.values())),
            ("Server_Connections_created", sum(p["created"] for p in pools.values())),
            ("Questions", self.questions()),
            ("Backend_query_time_nsec", sum(s.time_ns for s in backends)),
            ("Queries_backends_bytes_sent", sum(s.bytes_sent for s in backends)),
            ("Queries_backends_bytes_recv", sum(s.bytes_recv for s in backends)),
            ("ConnPool_get_conn_immediate", immediate),
            ("ConnPool_get_conn_success", immediate + waited),
            ("ConnPool_get_conn_failure", sum(s.acquire_timeouts for s in backends)),
            ("Backend_connections_reused", sum(p["reused"] for p in pools.values())),
            ("Com_backend_reset_connection", sum(s.resets for s in backends)),
            ("Client_error_packets", sum(self.errors.values())),
            ("Query_digest_entries", len(self._digests)),
            ("Query_digest_max_entries", self.max_digests),
            ("Query_digest_evictions", self.digest_evictions),
            *((f"Causal_reads_{mode}_{outcome}", n) for (mode, outcome), n in sorted(self.causal.items())),
            ("Causal_reads_wait_time_us", self.causal_wait_ns // 1000),
            ("Lag_bounded_reads_replica", self.lag_bounded_reads["replica"]),
            ("Lag_bounded_reads_writer", self.lag_bounded_reads["writer"]),
            ("Classifier_cache_hits", cache.get("hits", 0)),
            ("Classifier_cache_misses", cache.get("misses", 0)),
            ("Classifier_cache_hit_ratio", f"{cache['hit_ratio']:.4f}"),
        ]
        return Table(("Variable_Name", "Variable_Value"), [(k, str(v)) for k, v in values])


def _digest_rows(items: Sequence[tuple[tuple, DigestStats]]) -> list[tuple]:
    offset = time.time_ns() - _monotonic_ns()
    rows = []
    for (hg, schema, user, digest), e in items:
        rows.append(
            (
                hg, schema or "", user, "", digest_hex(digest), e.text, e.count,
                (e.first_seen + offset) // 1_000_000_000, (e.last_seen + offset) // 1_000_000_000,
                e.sum_time // 1000, e.min_time // 1000 if e.count else 0, e.max_time // 1000,
                e.rows_affected, e.rows_sent,
            )
        )  # fmt: skip
    return rows


def _chunked(items: Sequence[Any], size: int, build: Callable[[Sequence[Any]], list[tuple]]) -> Iterator[list[tuple]]:
    for i in range(0, len(items), max(1, size)):
        yield build(items[i:i + size])


def _sockname(conn: object) -> tuple[str, int]:
    transport = getattr(conn, "transport", None)
    if transport is None:
        return "", 0
    try:
        name = transport.get_extra_info("sockname")
    except Exception:  # noqa: BLE001 - a closing transport: no local address to show
        return "", 0
    if isinstance(name, tuple) and len(name) >= 2:
        return str(name[0]), int(name[1])
    return "", 0


# ProxySQL's column names (lib/ProxySQL_Admin.cpp STATS_SQLITE_TABLE_*), in its order.
DIGEST_COLUMNS = (
    "hostgroup", "schemaname", "username", "client_address", "digest", "digest_text", "count_star",
    "first_seen", "last_seen", "sum_time", "min_time", "max_time", "sum_rows_affected", "sum_rows_sent",
)  # fmt: skip
CONNECTION_POOL_COLUMNS = (
    "hostgroup", "srv_host", "srv_port", "status", "ConnUsed", "ConnFree", "ConnOK", "ConnERR", "MaxConnUsed",
    "Queries", "Queries_GTID_sync", "Bytes_data_sent", "Bytes_data_recv", "Latency_us",
)  # fmt: skip
PROCESSLIST_COLUMNS = (
    "ThreadID", "SessionID", "user", "db", "cli_host", "cli_port", "hostgroup", "l_srv_host", "l_srv_port",
    "srv_host", "srv_port", "command", "time_ms", "info", "status_flags", "extended_info", "pin_reasons",
)  # fmt: skip

TABLES: dict[str, Callable[[StatsRegistry], Table]] = {
    "stats_mysql_query_digest": StatsRegistry.query_digest,
    "stats_mysql_query_digest_reset": StatsRegistry.query_digest_reset,
    "stats_mysql_query_rules": StatsRegistry.query_rules,
    "stats_mysql_connection_pool": StatsRegistry.connection_pool,
    "stats_mysql_processlist": StatsRegistry.processlist,
    "stats_mysql_global": StatsRegistry.global_status,
    "stats_mysql_users": StatsRegistry.users,
}
