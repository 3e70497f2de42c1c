"""proxy.metrics: the scrape, parsed with prometheus_client's own parsers, has every family the issue
asks for with the values fed into the stats registry; the asyncio endpoint serves it."""

from __future__ import annotations

import asyncio
import gzip
import logging
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

import proxy.stats as stats_mod
from proxy.config import Server
from proxy.metrics import METRIC_NAMES, make_registry, start_metrics_server
from proxy.config import PoolSettings
from proxy.pool import Pool, ServerBudget
from proxy.session import PinReason
from proxy.stats import Sources, StatsRegistry
from rules.classify import Kind
from rules.digest import fingerprint

from .test_stats import FakeClock

US = 1000
MS = 1_000_000

# The list, as (family name, type). Counters are named without _total by the parser.
REQUIRED = {
    "rwproxy_client_connections": "gauge",  # client connections
    "rwproxy_backend_connections": "gauge",  # backend connections by server and state
    "rwproxy_pool_acquire_wait_seconds": "histogram",  # pool acquire-wait histogram
    "rwproxy_backend_connections_created": "counter",  # backend connections created ...
    "rwproxy_backend_connections_reused": "counter",  # ... versus reused
    "rwproxy_statements": "counter",  # statements by hostgroup and kind
    "rwproxy_statement_latency_seconds": "histogram",  # statement latency histogram
    "rwproxy_errors": "counter",  # errors by code
    "rwproxy_query_rule_hits": "counter",  # rule hits
    "rwproxy_pinned_sessions": "gauge",  # pinned sessions by reason
    "rwproxy_classifier_cache_hit_ratio": "gauge",  # classification cache hit ratio
    "rwproxy_server_status": "gauge",  # server status
}


@pytest.fixture
def fed(monkeypatch: pytest.MonkeyPatch) -> StatsRegistry:
    """A registry fed known values, over real Pool/ServerBudget/Server objects and stand-in sessions."""
    clock = FakeClock()
    monkeypatch.setattr(stats_mod, "_monotonic_ns", clock)
    settings = PoolSettings()
    w = Server(0, "10.0.0.1", 3306)
    r = Server(1, "10.0.0.2", 3306, status="SHUNNED")
    bw, br = ServerBudget(w.address, 100, settings), ServerBudget(r.address, 100, settings)

    async def connector():  # never called
        raise AssertionError

    pw, pr = Pool(bw, connector, "app@w"), Pool(br, connector, "app@r")
    pw.lent, pw.idle = 2, [(object(), 0.0)] * 3
    pr.lent = 1
    bw.open, bw.connecting, bw.created, bw.reused = 6, 1, 8, 90
    br.open, br.created, br.reused = 1, 1, 40
    sessions = [
        SimpleNamespace(pin_reasons={PinReason.TEMP_TABLE}, txn_hg=0),
        SimpleNamespace(pin_reasons={PinReason.TEMP_TABLE, PinReason.USER_VARIABLE}, txn_hg=None),
        SimpleNamespace(pin_reasons=set(), txn_hg=None),
    ]
    reg = StatsRegistry(
        max_digests=100,
        sources=Sources(
            sessions=lambda: sessions,
            pools=lambda: [pw, pr],
            servers=lambda: [(0, w), (1, r)],
            rules=lambda: [1, 2],
            classifier_cache=lambda: {"hits": 90, "misses": 10, "raw_hits": 60, "digest_hits": 30, "size": 70, "digest_size": 9},
        ),
    )

    def run(srv, sql, kind, took, rules=(), error=0):
        start = clock.now
        clock.now += took
        reg.statement_done(srv, fingerprint(sql), kind, "sbtest", "app", rules, start, 0, error)

    sw, sr = reg.server(0, w.address), reg.server(1, r.address)
    run(sw, "INSERT INTO t VALUES (1)", Kind.INSERT, 2 * MS, rules=(1,))
    run(sw, "UPDATE t SET a=1", Kind.UPDATE, 3 * MS, error=1213)
    run(sr, "SELECT 1", Kind.SELECT, 40 * US, rules=(1,))
    run(sr, "SELECT 2", Kind.SELECT, 300 * US)
    run(reg.local, "DROP TABLE t", Kind.DDL, 10 * US, rules=(2,), error=1148)
    sw.bytes_sent, sw.bytes_recv = 111, 2222
    sw.acquire_immediate = 4
    reg.acquire_done(sw, 20 * MS)
    reg.acquire_failed(sr, 10_000 * MS)
    reg.connect_error(r.address)
    reg.error(1045)
    reg.client_connected()
    reg.client_connected()
    reg.client_aborted()
    return reg


def scrape(reg: StatsRegistry) -> dict:
    text = generate_latest(make_registry(reg)).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family, suffix: str = "") -> dict[tuple, float]:
    """{sorted label items: value} of the samples named family.name + suffix."""
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == family.name + suffix}


def test_every_required_family_is_present_with_its_type(fed):
    families = scrape(fed)
    for name, kind in REQUIRED.items():
        assert name in families, name
        assert families[name].type == kind, name
    assert set(METRIC_NAMES) <= set(families)
    assert all(name.startswith("rwproxy_") for name in families)


def test_every_family_is_present_before_anything_happened():
    families = scrape(StatsRegistry())
    assert set(REQUIRED) <= set(families) and set(METRIC_NAMES) <= set(families)


def test_values(fed):
    f = scrape(fed)
    assert samples(f["rwproxy_client_connections"]) == {(): 3}
    assert samples(f["rwproxy_client_connections_created"], "_total") == {(): 2}
    assert samples(f["rwproxy_client_connections_aborted"], "_total") == {(): 1}
    assert samples(f["rwproxy_active_transactions"]) == {(): 1}

    conns = samples(f["rwproxy_backend_connections"])
    assert conns[(("server", "10.0.0.1:3306"), ("state", "used"))] == 2
    assert conns[(("server", "10.0.0.1:3306"), ("state", "idle"))] == 3
    assert conns[(("server", "10.0.0.1:3306"), ("state", "connecting"))] == 1
    assert conns[(("server", "10.0.0.2:3306"), ("state", "used"))] == 1
    assert samples(f["rwproxy_backend_connections_created"], "_total") == {(("server", "10.0.0.1:3306"),): 8, (("server", "10.0.0.2:3306"),): 1}
    assert samples(f["rwproxy_backend_connections_reused"], "_total") == {(("server", "10.0.0.1:3306"),): 90, (("server", "10.0.0.2:3306"),): 40}
    assert samples(f["rwproxy_backend_connect_errors"], "_total") == {(("server", "10.0.0.2:3306"),): 1}

    wait = f["rwproxy_pool_acquire_wait_seconds"]
    w = (("server", "10.0.0.1:3306"),)
    buckets = {s.labels["le"]: s.value for s in wait.samples if s.name.endswith("_bucket") and s.labels["server"] == "10.0.0.1:3306"}
    assert buckets["0.0001"] == 4 and buckets["0.01"] == 4 and buckets["0.05"] == 5 and buckets["+Inf"] == 5
    assert samples(wait, "_count")[w] == 5 and samples(wait, "_sum")[w] == pytest.approx(0.02)
    assert samples(f["rwproxy_pool_acquire_timeouts"], "_total")[(("server", "10.0.0.2:3306"),)] == 1

    assert samples(f["rwproxy_statements"], "_total") == {
        (("hostgroup", "0"), ("kind", "INSERT")): 1,
        (("hostgroup", "0"), ("kind", "UPDATE")): 1,
        (("hostgroup", "1"), ("kind", "SELECT")): 2,
        (("hostgroup", "-1"), ("kind", "DDL")): 1,
    }
    lat = f["rwproxy_statement_latency_seconds"]
    assert samples(lat, "_count") == {(("hostgroup", "0"),): 2, (("hostgroup", "1"),): 2, (("hostgroup", "-1"),): 1}
    assert samples(lat, "_sum")[(("hostgroup", "0"),)] == pytest.approx(0.005)
    hg1 = {s.labels["le"]: s.value for s in lat.samples if s.name.endswith("_bucket") and s.labels["hostgroup"] == "1"}
    assert hg1["5e-05"] == 1 and hg1["0.00025"] == 1 and hg1["0.0005"] == 2 and hg1["+Inf"] == 2
    values = [hg1[le] for le in hg1]
    assert values == sorted(values)  # cumulative

    q = samples(f["rwproxy_backend_queries"], "_total")
    assert q == {(("hostgroup", "0"), ("server", "10.0.0.1:3306")): 2, (("hostgroup", "1"), ("server", "10.0.0.2:3306")): 2}
    assert samples(f["rwproxy_backend_query_seconds"], "_total")[(("hostgroup", "0"), ("server", "10.0.0.1:3306"))] == pytest.approx(0.005)
    assert samples(f["rwproxy_backend_sent_bytes"], "_total")[(("hostgroup", "0"), ("server", "10.0.0.1:3306"))] == 111
    assert samples(f["rwproxy_backend_received_bytes"], "_total")[(("hostgroup", "0"), ("server", "10.0.0.1:3306"))] == 2222

    assert samples(f["rwproxy_errors"], "_total") == {(("code", "1213"),): 1, (("code", "1148"),): 1, (("code", "1045"),): 1}
    assert samples(f["rwproxy_query_rule_hits"], "_total") == {(("rule_id", "1"),): 2, (("rule_id", "2"),): 1}

    pinned = samples(f["rwproxy_pinned_sessions"])
    assert len(pinned) == len(PinReason)
    assert pinned[(("reason", "TEMP_TABLE"),)] == 2 and pinned[(("reason", "USER_VARIABLE"),)] == 1
    assert pinned[(("reason", "LOCK_TABLES"),)] == 0

    assert samples(f["rwproxy_classifier_cache_hit_ratio"]) == {(): 0.9}
    assert samples(f["rwproxy_classifier_cache_hits"], "_total") == {(("cache", "raw"),): 60, (("cache", "digest"),): 30}
    assert samples(f["rwproxy_classifier_cache_misses"], "_total") == {(): 10}
    assert samples(f["rwproxy_classifier_cache_entries"]) == {(("cache", "raw"),): 70, (("cache", "digest"),): 9}

    status = samples(f["rwproxy_server_status"])
    assert status[(("hostgroup", "0"), ("server", "10.0.0.1:3306"), ("status", "ONLINE"))] == 1
    assert status[(("hostgroup", "0"), ("server", "10.0.0.1:3306"), ("status", "SHUNNED"))] == 0
    assert status[(("hostgroup", "1"), ("server", "10.0.0.2:3306"), ("status", "SHUNNED"))] == 1
    assert sum(status.values()) == 2 and len(status) == 10  # every status of proxy.stats.SERVER_STATUSES

    assert samples(f["rwproxy_query_digest_entries"]) == {(): 4}  # SELECT 1 and SELECT 2 share a digest
    assert samples(f["rwproxy_query_digest_max_entries"]) == {(): 100}
    assert samples(f["rwproxy_query_digest_evictions"], "_total") == {(): 0}


def test_an_unknown_server_status_gets_its_own_series():
    s = Server(1, "r", 3306, status="SHUNNED_REPLICATION_LAG")
    f = scrape(StatsRegistry(sources=Sources(servers=lambda: [(1, s)])))
    status = samples(f["rwproxy_server_status"])
    assert status[(("hostgroup", "1"), ("server", "r:3306"), ("status", "SHUNNED_REPLICATION_LAG"))] == 1
    assert len(status) == 5


def test_counters_stay_monotonic_across_digest_reset_and_eviction(fed):
    before = samples(scrape(fed)["rwproxy_statements"], "_total")
    fed.reset()
    after = samples(scrape(fed)["rwproxy_statements"], "_total")
    assert after == before


# ---- the endpoint -------------------------------------------------------------------------------


async def _get(port: int, path: str = "/metrics", headers: str = "", method: str = "GET") -> tuple[str, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return lines[0], hdrs, body


def test_endpoint_serves_text_openmetrics_gzip_and_errors(fed):
    async def main() -> None:
        server = await start_metrics_server(fed, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            status, headers, body = await _get(port)
            assert status == "HTTP/1.1 200 OK"
            assert headers["content-type"].startswith("text/plain")
            assert int(headers["content-length"]) == len(body)
            names = {f.name for f in text_string_to_metric_families(body.decode())}
            assert set(REQUIRED) <= names

            status, headers, body = await _get(port, headers="Accept: application/openmetrics-text; version=1.0.0\r\n")
            assert headers["content-type"].startswith("application/openmetrics-text")
            names = {f.name for f in parse_openmetrics(body.decode())}
            assert set(REQUIRED) <= names

            status, headers, body = await _get(port, headers="Accept-Encoding: gzip\r\n")
            assert headers["content-encoding"] == "gzip"
            assert b"rwproxy_statements_total" in gzip.decompress(body)

            status, headers, body = await _get(port, method="HEAD")
            assert status == "HTTP/1.1 200 OK" and body == b"" and int(headers["content-length"]) > 0
            assert (await _get(port, "/nope"))[0] == "HTTP/1.1 404 Not Found"
            assert (await _get(port, method="POST"))[0] == "HTTP/1.1 405 Method Not Allowed"
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_endpoint_answers_500_when_collecting_fails():
    reg = StatsRegistry(sources=Sources(pools=lambda: 1 / 0))

    async def main() -> None:
        server = await start_metrics_server(reg, "127.0.0.1", 0)
        try:
            status, _, body = await _get(server.sockets[0].getsockname()[1])
            assert status == "HTTP/1.1 500 Internal Server Error" and b"proxy log" in body
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


@pytest.mark.parametrize("address,public", [("127.0.0.1", False), ("0.0.0.0", True), ("", True)])
def test_endpoint_warns_when_bound_beyond_loopback(fed, caplog, address, public):
    async def main() -> None:
        server = await start_metrics_server(fed, address, 0)
        server.close()
        await server.wait_closed()

    with caplog.at_level(logging.WARNING, logger="rwproxy.metrics"):
        asyncio.run(main())
    warned = [r for r in caplog.records if "beyond this machine, without authentication" in r.getMessage()]
    assert bool(warned) is public, caplog.text


def test_metrics_listener_defaults_to_loopback():
    from proxy.config import parse_config

    config = parse_config({"listeners": {"data": {"port": 1}, "metrics": {}}, "users": [{"username": "a", "password": "p"}],
                           "servers": [{"hostgroup_id": 0, "hostname": "127.0.0.1"}]}, "<t>")  # fmt: skip
    assert (config.listeners["metrics"].address, config.listeners["metrics"].port) == ("127.0.0.1", 6070)
