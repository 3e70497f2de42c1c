"""Prometheus exposition of proxy.stats: one custom collector, read at scrape time.

Theory of operation: `StatsCollector.collect()` builds Gauge/Counter/Histogram metric families from
the `StatsRegistry` counters and its live sources when Prometheus scrapes, so the data path never
calls prometheus_client and nothing is counted twice: the admin ``stats_*`` tables and this endpoint
read the same numbers. The collector is registered on its own `CollectorRegistry` (not the library's
global one, whose process/platform collectors would need a thread-safe world and mix in numbers that
are not the proxy's).

`start_metrics_server(stats, address, port)` serves ``GET /metrics`` from the event loop (asyncio
streams), not from prometheus_client's `start_http_server` thread. Why: collect() walks the registry's
dicts, the session table and the pools, which the event loop mutates; in the loop thread a scrape
sees one consistent moment and needs no locks. A thread would also compete with the loop for the GIL
and hold it in slices of up to ``sys.getswitchinterval()`` (5 ms), which shows up as latency spikes
on statements. A scrape costs the loop a few milliseconds every scrape interval; the text and
OpenMetrics formats are negotiated with prometheus_client's own `choose_encoder`, and gzip is used
when the scraper accepts it.

The listener binds 127.0.0.1 unless [listeners.metrics] address says otherwise; bound beyond
loopback it logs a warning at start: the endpoint has no authentication, and its labels name every
server, user and hostgroup.

Names follow Prometheus conventions: prefix ``rwproxy_``, base units in the name (``_seconds``,
``_bytes``), ``_total`` on counters (added by the client library), label ``server`` = ``host:port``.
Every family the issue asks for is always present, with zero-valued series where nothing happened
yet (pinned sessions list every PinReason, server status every status), so dashboards and alerts
never see a family vanish.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import logging
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from .stats import ACQUIRE_WAIT_BUCKETS, CHECK_BUCKETS, LATENCY_BUCKETS, SERVER_STATUSES, StatsRegistry

__all__ = ["METRIC_NAMES", "StatsCollector", "make_registry", "start_metrics_server"]

log = logging.getLogger("rwproxy.metrics")

# Every family collect() yields (names as the text format shows them, without _total/_bucket...).
METRIC_NAMES = (
    "rwproxy_uptime_seconds",
    "rwproxy_client_connections",
    "rwproxy_client_connections_created",
    "rwproxy_client_connections_aborted",
    "rwproxy_active_transactions",
    "rwproxy_backend_connections",
    "rwproxy_backend_connections_created",
    "rwproxy_backend_connections_reused",
    "rwproxy_backend_connect_errors",
    "rwproxy_pool_acquire_wait_seconds",
    "rwproxy_pool_acquire_timeouts",
    "rwproxy_statements",
    "rwproxy_statement_latency_seconds",
    "rwproxy_backend_queries",
    "rwproxy_backend_resets",
    "rwproxy_causal_reads",
    "rwproxy_causal_wait_seconds",
    "rwproxy_lag_bounded_reads",
    "rwproxy_backend_query_seconds",
    "rwproxy_backend_sent_bytes",
    "rwproxy_backend_received_bytes",
    "rwproxy_errors",
    "rwproxy_query_rule_hits",
    "rwproxy_pinned_sessions",
    "rwproxy_classifier_cache_hit_ratio",
    "rwproxy_classifier_cache_hits",
    "rwproxy_classifier_cache_misses",
    "rwproxy_classifier_cache_entries",
    "rwproxy_server_status",
    "rwproxy_server_read_only",
    "rwproxy_server_replication_lag_seconds",
    "rwproxy_monitor_check_seconds",
    "rwproxy_monitor_check_errors",
    "rwproxy_failovers",
    "rwproxy_query_digest_entries",
    "rwproxy_query_digest_max_entries",
    "rwproxy_query_digest_evictions",
)

_LATENCY_LE = [floatToGoString(b) for b in LATENCY_BUCKETS] + ["+Inf"]
_ACQUIRE_LE = [floatToGoString(b) for b in ACQUIRE_WAIT_BUCKETS] + ["+Inf"]
_CHECK_LE = [floatToGoString(b) for b in CHECK_BUCKETS] + ["+Inf"]


def _buckets(les: list[str], counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts -> Prometheus' cumulative (le, count) pairs, +Inf last."""
    out = []
    total = 0
    for le, n in zip(les, counts, strict=True):
        total += n
        out.append((le, total))
    return out


class StatsCollector(Collector):
    def __init__(self, stats: StatsRegistry) -> None:
        self.stats = stats

    def describe(self) -> list[Metric]:
        # Registration must not run collect() (the sources may not be wired yet); no name checks.
        return []

    def collect(self) -> Iterator[Metric]:
        st = self.stats
        sessions = st.sessions()
        pools = st.pool_state()
        servers = st.server_stats()

        yield GaugeMetricFamily("rwproxy_uptime_seconds", "Seconds since the stats registry started.", value=st.uptime())

        # ---- clients --------------------------------------------------------------------------
        yield GaugeMetricFamily("rwproxy_client_connections", "Client connections open now (logged in or not).", value=len(sessions))
        yield CounterMetricFamily("rwproxy_client_connections_created", "Client connections accepted.", value=st.clients_created)
        yield CounterMetricFamily(
            "rwproxy_client_connections_aborted", "Client connections that ended without COM_QUIT.", value=st.clients_aborted
        )
        yield GaugeMetricFamily(
            "rwproxy_active_transactions", "Client sessions with an open transaction.", value=sum(1 for s in sessions if s.txn_hg is not None)
        )

        # ---- backend connections and pools -----------------------------------------------------
        conns = GaugeMetricFamily("rwproxy_backend_connections", "Backend connections by server and state.", labels=["server", "state"])
        created = CounterMetricFamily(
            "rwproxy_backend_connections_created", "Backend connections opened (ProxySQL's ConnOK).", labels=["server"]
        )
        reused = CounterMetricFamily(
            "rwproxy_backend_connections_reused", "Times a pooled backend connection was lent again.", labels=["server"]
        )
        for _, server in st.servers():  # configured servers no session has used yet: zeros
            if server.address not in pools:
                pools[server.address] = dict.fromkeys(("used", "idle", "connecting", "open", "created", "reused"), 0)
        for address, p in sorted(pools.items()):
            for state in ("used", "idle", "connecting"):
                conns.add_metric([address, state], p[state])
            created.add_metric([address], p["created"])
            reused.add_metric([address], p["reused"])
        yield conns
        yield created
        yield reused
        errors = CounterMetricFamily(
            "rwproxy_backend_connect_errors", "Failed backend connection attempts (ProxySQL's ConnERR).", labels=["server"]
        )
        for address, n in sorted(st.conn_errors.items()):
            errors.add_metric([address], n)
        yield errors

        wait = HistogramMetricFamily(
            "rwproxy_pool_acquire_wait_seconds",
            "Time a session waited for a pooled backend connection (immediate hand-outs count as 0).",
            labels=["server"],
        )
        timeouts = CounterMetricFamily(
            "rwproxy_pool_acquire_timeouts", "Pool acquisitions that gave up (the client got an error).", labels=["server"]
        )
        for address, (counts, total_ns, n_timeouts) in sorted(st.acquire_histograms().items()):
            wait.add_metric([address], _buckets(_ACQUIRE_LE, counts), total_ns / 1e9)
            timeouts.add_metric([address], n_timeouts)
        yield wait
        yield timeouts

        # ---- statements -----------------------------------------------------------------------
        statements = CounterMetricFamily(
            "rwproxy_statements",
            "Statements by hostgroup (-1: answered by the proxy) and kind (rules.classify.Kind).",
            labels=["hostgroup", "kind"],
        )
        for (hg, kind), n in sorted(st.statements_by_kind().items()):
            statements.add_metric([str(hg), kind], n)
        yield statements

        latency = HistogramMetricFamily(
            "rwproxy_statement_latency_seconds",
            "Statement time from the command's arrival to the end of its reply, by hostgroup.",
            labels=["hostgroup"],
        )
        for hg, (counts, total_ns) in sorted(st.latency_histograms().items()):
            latency.add_metric([str(hg)], _buckets(_LATENCY_LE, counts), total_ns / 1e9)
        yield latency

        queries = CounterMetricFamily("rwproxy_backend_queries", "Statements run per hostgroup and server.", labels=["hostgroup", "server"])
        qtime = CounterMetricFamily(
            "rwproxy_backend_query_seconds", "Summed statement time per hostgroup and server.", labels=["hostgroup", "server"]
        )
        sent = CounterMetricFamily("rwproxy_backend_sent_bytes", "Bytes sent to backends.", labels=["hostgroup", "server"])
        recv = CounterMetricFamily("rwproxy_backend_received_bytes", "Bytes received from backends.", labels=["hostgroup", "server"])
        resets = CounterMetricFamily(
            "rwproxy_backend_resets", "COM_RESET_CONNECTION the proxy sent on its own, per hostgroup and server.", labels=["hostgroup", "server"]
        )
        for s in sorted(servers, key=lambda s: (s.hostgroup, s.address)):
            if s.hostgroup < 0:
                continue
            labels = [str(s.hostgroup), s.address]
            queries.add_metric(labels, s.queries)
            qtime.add_metric(labels, s.time_ns / 1e9)
            sent.add_metric(labels, s.bytes_sent)
            recv.add_metric(labels, s.bytes_recv)
            resets.add_metric(labels, s.resets)
        yield queries
        yield qtime
        yield sent
        yield recv
        yield resets

        causal = CounterMetricFamily("rwproxy_causal_reads", "Reads with a consistency requirement, by causal_reads mode and outcome.", labels=["mode", "outcome"])
        for (mode, outcome), n in sorted(st.causal.items()):
            causal.add_metric([mode, outcome], n)
        yield causal
        yield CounterMetricFamily("rwproxy_causal_wait_seconds", "Time reads spent waiting for a replica to apply a write they must see.", value=st.causal_wait_ns / 1e9)
        bounded = CounterMetricFamily("rwproxy_lag_bounded_reads", "Reads with a max_lag_ms bound (rule or hint), by where they ran: a replica within the bound, or the writer.", labels=["served_by"])
        for where, n in sorted(st.lag_bounded_reads.items()):
            bounded.add_metric([where], n)
        yield bounded

        errs = CounterMetricFamily("rwproxy_errors", "ERR packets sent to clients, by MySQL error code.", labels=["code"])
        for code, n in sorted(st.errors.items()):
            errs.add_metric([str(code)], n)
        yield errs

        hits = CounterMetricFamily("rwproxy_query_rule_hits", "Statements each query rule matched.", labels=["rule_id"])
        for rule_id, n in st.query_rules().rows:
            hits.add_metric([str(rule_id)], n)
        yield hits

        # ---- sessions, classifier, servers, digests -------------------------------------------
        pinned = GaugeMetricFamily(
            "rwproxy_pinned_sessions", "Client sessions pinned to their writer connection, by reason.", labels=["reason"]
        )
        for reason, n in st.pinned_sessions(sessions).items():
            pinned.add_metric([reason.name], n)
        yield pinned

        cache = st.classifier_cache()
        yield GaugeMetricFamily(
            "rwproxy_classifier_cache_hit_ratio", "Classifier cache hits / (hits + misses) since start.", value=cache["hit_ratio"]
        )
        chits = CounterMetricFamily("rwproxy_classifier_cache_hits", "Classifier cache hits, by cache.", labels=["cache"])
        chits.add_metric(["raw"], cache.get("raw_hits", cache.get("hits", 0)))
        chits.add_metric(["digest"], cache.get("digest_hits", 0))
        yield chits
        yield CounterMetricFamily("rwproxy_classifier_cache_misses", "Statements the classifier analysed in full.", value=cache.get("misses", 0))
        centries = GaugeMetricFamily("rwproxy_classifier_cache_entries", "Classifier cache entries, by cache.", labels=["cache"])
        centries.add_metric(["raw"], cache.get("size", 0))
        centries.add_metric(["digest"], cache.get("digest_size", 0))
        yield centries

        status = GaugeMetricFamily(
            "rwproxy_server_status", "1 for the server's current status in the hostgroup, 0 for the others.", labels=["hostgroup", "server", "status"]
        )
        for hg, s in sorted(st.servers(), key=lambda m: (m[0], m[1].address)):
            statuses = SERVER_STATUSES if s.status in SERVER_STATUSES else (*SERVER_STATUSES, s.status)
            for name in statuses:
                status.add_metric([str(hg), s.address, name], 1 if s.status == name else 0)
        yield status

        # ---- the monitor (families present, series only for what was checked) -----------------
        health = st.sources.health()
        read_only = GaugeMetricFamily(
            "rwproxy_server_read_only", "The server's read_only (the replication hostgroup's check_type) at the last check.", labels=["server"]
        )
        lag = GaugeMetricFamily(
            "rwproxy_server_replication_lag_seconds",
            "Replication lag at the last check (lag_when_null when replication is stopped or broken).",
            labels=["server"],
        )
        for address, h in sorted(health.items()):
            if h.read_only is not None:
                read_only.add_metric([address], int(h.read_only))
            if h.lag is not None:
                lag.add_metric([address], h.lag)
        yield read_only
        yield lag
        check_seconds = HistogramMetricFamily(
            "rwproxy_monitor_check_seconds", "Monitor check round trips (failed ones up to their timeout), by server and check.",
            labels=["server", "check"],
        )  # fmt: skip
        check_errors = CounterMetricFamily("rwproxy_monitor_check_errors", "Monitor checks that failed, by server and check.", labels=["server", "check"])
        for (address, check), c in sorted(st.checks.items()):
            check_seconds.add_metric([address, check], _buckets(_CHECK_LE, c.buckets), c.sum_ns / 1e9)
            check_errors.add_metric([address, check], c.errors)
        yield check_seconds
        yield check_errors
        failovers = CounterMetricFamily(
            "rwproxy_failovers", "Writer changes the monitor followed (a server newly placed in the writer hostgroup).", labels=["hostgroup"]
        )
        for hg, n in sorted(st.failovers.items()):
            failovers.add_metric([str(hg)], n)
        yield failovers

        yield GaugeMetricFamily("rwproxy_query_digest_entries", "Entries in the query digest table.", value=st.digest_count)
        yield GaugeMetricFamily("rwproxy_query_digest_max_entries", "The digest table's bound.", value=st.max_digests)
        yield CounterMetricFamily(
            "rwproxy_query_digest_evictions", "Digest entries evicted (least recently seen first) to keep the bound.", value=st.digest_evictions
        )


def make_registry(stats: StatsRegistry) -> CollectorRegistry:
    """A CollectorRegistry holding only the proxy's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(stats))
    return registry


# ---- the endpoint ----------------------------------------------------------------------------------

_READ_TIMEOUT = 10.0
_MAX_HEAD = 16 * 1024


def _response(status: str, headers: list[tuple[str, str]], body: bytes, head_only: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers), f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + (b"" if head_only else body)


def render(registry: CollectorRegistry, accept: str = "", accept_encoding: str = "") -> tuple[bytes, list[tuple[str, str]]]:
    """The scrape body for these request headers, and its response headers."""
    encoder, content_type = choose_encoder(accept)
    body = encoder(registry)
    headers = [("Content-Type", content_type)]
    if "gzip" in accept_encoding.lower():
        body = gzip.compress(body, compresslevel=5)
        headers.append(("Content-Encoding", "gzip"))
    return body, headers


async def _serve_one(registry: CollectorRegistry, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            writer.write(_response("400 Bad Request", [("Content-Type", "text/plain")], b"bad request\n"))
            return
        method, target = parts[0], parts[1].split("?", 1)[0]
        headers = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        if method not in ("GET", "HEAD"):
            writer.write(_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")], b"use GET\n"))
            return
        if target not in ("/metrics", "/"):
            writer.write(_response("404 Not Found", [("Content-Type", "text/plain")], b"metrics are at /metrics\n"))
            return
        try:
            body, out_headers = render(registry, headers.get("accept", ""), headers.get("accept-encoding", ""))
        except Exception:
            log.exception("metrics: collecting failed")
            writer.write(_response("500 Internal Server Error", [("Content-Type", "text/plain")], b"collecting metrics failed; see the proxy log\n"))
            return
        writer.write(_response("200 OK", out_headers, body, head_only=method == "HEAD"))
    finally:
        try:
            await asyncio.wait_for(writer.drain(), _READ_TIMEOUT)
        except (TimeoutError, ConnectionError):
            pass
        writer.close()


async def start_metrics_server(stats: StatsRegistry | CollectorRegistry, address: str, port: int) -> asyncio.AbstractServer:
    """Listen for Prometheus scrapes on address:port (port 0: any free port; see server.sockets)."""
    registry = stats if isinstance(stats, CollectorRegistry) else make_registry(stats)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_one(registry, reader, writer)

    server = await asyncio.start_server(handle, address, port, reuse_address=True, limit=_MAX_HEAD)
    log.info("listening on %s:%d (metrics)", address, server.sockets[0].getsockname()[1])
    if not is_loopback(address):
        log.warning(
            "the metrics endpoint listens on %s, beyond this machine, without authentication (it names every server, user and "
            "hostgroup): bind [listeners.metrics] to 127.0.0.1 and scrape through a tunnel or an authenticating reverse proxy, or "
            "restrict the port with a firewall", address or "every address",
        )  # fmt: skip
    return server


def is_loopback(address: str) -> bool:
    """Does a listener on `address` stay on this machine? ("" and "*" mean every address.)"""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
