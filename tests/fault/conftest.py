"""Fault tests: servers killed, frozen, lagging and promoted under load, with the monitor on.

Every test module gets a cluster of its own (`fcluster`: a MariaDB primary and two GTID replicas,
proxy.sandbox.start_cluster) because these tests stop, freeze and promote servers; a module leaves
its cluster in whatever state its last test made. Proxies are started with `launch` (the root
conftest's launcher, with the admin port) and the monitor at the short intervals of `FAST_MONITOR`:

    ping every 300 ms (timeout 250 ms, 2 missed pings shun), read_only every 200 ms (timeout 500 ms),
    replication lag every 300 ms (timeout 500 ms, 1 check over the limit shuns, a stopped replica
    counts 60 s), connect check every 1 s (timeout 500 ms), 3 failed connects within 1 s shun,
    a SHUNNED server may come back after 1 s; backend connect_timeout 1 s.

So an unreachable server is SHUNNED within ~0.85 s (2 pings + a timeout) at worst, and sooner
when sessions fail to connect to it. The load generator is tests/fault/loadgen.py. Each test is
bounded (waits have timeouts, loads have a max_seconds) and the directory runs in under 3 minutes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from proxy.sandbox import Cluster, start_cluster
from tests.conftest import ProxyHandle, _launch_proxy

FAST_MONITOR: dict[str, Any] = {
    "enabled": True,
    "connect_interval": 1000,
    "connect_timeout": 500,
    "ping_interval": 300,
    "ping_timeout": 250,
    "ping_max_failures": 2,
    "read_only_interval": 200,
    "read_only_timeout": 500,
    "replication_lag_interval": 300,
    "replication_lag_timeout": 500,
    "replication_lag_count": 1,
    "lag_when_null": 60,
    "shun_on_failures": 3,
    "shun_recovery_time_sec": 1,
}
PROXY_SETTINGS = {"connect_timeout": 1.0}


@pytest.fixture(scope="module")
def fcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(tmp_path_factory.mktemp("fault"), replicas=2)
    try:
        c.primary.sql(
            "CREATE DATABASE ft;"
            "CREATE TABLE ft.w (k VARCHAR(64) PRIMARY KEY, sid INT NOT NULL, at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));"
            "CREATE TABLE ft.t (id INT PRIMARY KEY, v INT NOT NULL); INSERT INTO ft.t VALUES (1, 1)"
        )
        c.wait_replicated()
        yield c
    finally:
        for s in c.servers:
            s.thaw()  # a test that failed mid-freeze must not leave a stopped process behind
        c.stop()


def servers_toml(cluster: Cluster, max_replication_lag: int = 0) -> list[dict[str, Any]]:
    """The primary in hostgroup 0, the replicas in hostgroup 1 (as the root conftest does)."""
    rows = [{"hostgroup_id": 0, "hostname": cluster.primary.host, "port": cluster.primary.port, "comment": cluster.primary.name}]
    for r in cluster.replicas:
        rows.append({"hostgroup_id": 1, "hostname": r.host, "port": r.port, "max_replication_lag": max_replication_lag, "comment": r.name})
    return rows


def monitor_toml(cluster: Cluster, **overrides: Any) -> str:
    values = {"username": cluster.monitor_user, "password": cluster.monitor_password, **FAST_MONITOR, **overrides}
    body = "\n".join(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, str) else v}" for k, v in values.items())
    return "[monitor]\n" + body.replace("'", '"') + "\n"


def launch(cluster: Cluster, workdir: Path, name: str, *, servers: list[dict[str, Any]] | None = None, monitor: dict[str, Any] | None = None,
           extra_toml: str = "", pair: bool = True, **kw: Any) -> ProxyHandle:
    """A proxy for `cluster` with the admin port and the FAST_MONITOR settings (plus `monitor`)."""
    return _launch_proxy(
        cluster, workdir, name,
        servers=servers if servers is not None else servers_toml(cluster),
        replication_hostgroups=[{"writer_hostgroup": 0, "reader_hostgroup": 1, "writer_is_also_reader": False}] if pair else [],
        proxy_settings={**PROXY_SETTINGS, **kw.pop("proxy_settings", {})},
        extra_toml=monitor_toml(cluster, **(monitor or {})) + extra_toml,
        admin=True, **kw,
    )  # fmt: skip


@pytest.fixture
def fproxy(fcluster: Cluster, tmp_path: Path) -> Iterator[Callable[..., ProxyHandle]]:
    """Factory: `fproxy(**launch options)`; every proxy it started is stopped after the test."""
    started: list[ProxyHandle] = []

    def start(**kw: Any) -> ProxyHandle:
        h = launch(fcluster, tmp_path, f"proxy{len(started)}", **kw)
        started.append(h)
        return h

    start.started = started  # type: ignore[attr-defined]  # the root conftest attaches their log tails to failures
    try:
        yield start
    finally:
        for h in started:
            h.stop(timeout=10)


def connector(handle: ProxyHandle, **kw: Any) -> Callable[[], Any]:
    """Connections through the proxy for the load generator (autocommit, bounded timeouts)."""
    args = {"host": handle.host, "port": handle.port, "user": handle.user, "password": handle.password,
            "autocommit": True, "connect_timeout": 5, "read_timeout": 40, "write_timeout": 10, **kw}  # fmt: skip
    return lambda: pymysql.connect(**args)


def probe_reads(handle: ProxyHandle, n: int = 24) -> dict[int, int]:
    """server_id -> how many of `n` fresh sessions' first read it served. A session chooses its
    reader once (by weight), so fresh sessions are what shows every server in rotation."""
    out: dict[int, int] = {}
    for _ in range(n):
        conn = connector(handle)()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@server_id")
                sid = int(cur.fetchone()[0])
            out[sid] = out.get(sid, 0) + 1
        finally:
            conn.close()
    return out


class Admin:
    """The proxy's admin port, for what the monitor made of the servers."""

    def __init__(self, handle: ProxyHandle) -> None:
        self.handle = handle
        self.conn = handle.admin_connect(autocommit=True)

    def rows(self, sql: str) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    def placement(self, port: int) -> list[tuple[int, str]]:
        """(hostgroup, status) rows of runtime_mysql_servers for the server on `port`."""
        return [(hg, st) for hg, st in self.rows(f"SELECT hostgroup_id, status FROM runtime_mysql_servers WHERE port = {port} ORDER BY hostgroup_id")]

    def pool_status(self, port: int) -> list[tuple[int, str]]:
        """(hostgroup, status) of stats_mysql_connection_pool (it tells SHUNNED_REPLICATION_LAG apart)."""
        return [(hg, st) for hg, st in self.rows(f"SELECT hostgroup, status FROM stats.stats_mysql_connection_pool WHERE srv_port = {port} ORDER BY hostgroup")]

    def wait(self, what: str, check: Callable[[], bool], timeout: float, interval: float = 0.03) -> float:
        """Poll `check` until it is true; the time.monotonic() it first was. AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return time.monotonic()
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout:g}s: {what}\nproxy log tail:\n{self.handle.log_tail(30)}")
            time.sleep(interval)

    def wait_checked(self, servers: int, where: str = "read_only IS NOT NULL", timeout: float = 5) -> float:
        """Until the monitor's health table has `servers` rows matching `where` (the checks ran)."""
        return self.wait(
            f"{servers} servers checked by the monitor ({where})",
            lambda: len(self.rows(f"SELECT * FROM monitor.mysql_server_health WHERE {where}")) == servers, timeout,
        )

    def close(self) -> None:
        self.conn.close()


def report(scenario: str, **figures: Any) -> None:
    """Append a scenario's measured timings to $RWPROXY_FAULT_TIMINGS (JSON lines), when set: how
    docs/benchmarks.md's failover timings are produced."""
    path = os.environ.get("RWPROXY_FAULT_TIMINGS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"scenario": scenario, **{k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}}) + "\n")


def log_lines(handle: ProxyHandle, needle: str, since_line: int = 0) -> list[str]:
    lines = Path(handle.log_path).read_text(errors="replace").splitlines()
    return [line for line in lines[since_line:] if needle in line]


def log_length(handle: ProxyHandle) -> int:
    return len(Path(handle.log_path).read_text(errors="replace").splitlines())
