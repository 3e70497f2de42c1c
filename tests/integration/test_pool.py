"""proxy.pool against a real server: reuse, limits, waiting, storm rate, reset, idle and lifetime."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy import backend
from proxy.config import Server
from proxy.config import PoolSettings
from proxy.pool import Pool, PoolTimeout, ServerBudget
from proxy.protocol.constants import Capability
from proxy.protocol.framing import make_packet
from proxy.session import ConnState


def make_pool(cluster, max_connections=10, **settings) -> Pool:
    p = cluster.primary
    server = Server(0, p.host, p.port, max_connections=max_connections)

    async def connector():
        conn = await backend.connect(server, cluster.app_user, cluster.app_password, database=None,
                                     client_capabilities=int(Capability.MULTI_RESULTS), collation=45, attributes={}, timeout=5)
        conn.cstate = ConnState()
        return conn

    budget = ServerBudget(server.address, max_connections, PoolSettings(**settings))
    return Pool(budget, connector, "test")


async def query_value(conn, sql: str) -> bytes:
    """Run a one-row, one-column text query on `conn` in packet mode and return the value's bytes."""
    conn.write(make_packet(b"\x03" + sql.encode(), 0))
    packets = []
    while True:
        pkt = await conn.read_packet()
        packets.append(bytes(pkt.payload))
        if pkt.payload[0] == 0xFF:
            raise AssertionError(packets[-1])
        if pkt.payload[0] == 0xFE and len(pkt.payload) < 9 and len(packets) > 3:
            break
    row = packets[3]
    if row[0] == 0xFB:
        return None
    return row[1 : 1 + row[0]]


def run(coro):
    return asyncio.run(coro)


def test_release_then_acquire_reuses_the_connection(cluster):
    async def main():
        pool = make_pool(cluster)
        a = await pool.acquire()
        tid = a.thread_id
        pool.release(a)
        b = pool.try_acquire()
        assert b is a and b.thread_id == tid
        assert (pool.budget.created, pool.budget.reused) == (1, 1)
        pool.release(b)
        pool.close()

    run(main())


def test_max_connections_then_waiters_get_released_connections(cluster):
    async def main():
        pool = make_pool(cluster, max_connections=2, acquire_timeout=0.3)
        a, b = await pool.acquire(), await pool.acquire()
        with pytest.raises(PoolTimeout) as e:
            await pool.acquire()
        assert "max_connections=2" in str(e.value)
        waiter = asyncio.create_task(pool.acquire(timeout=5))
        await asyncio.sleep(0.05)
        pool.release(a)
        c = await waiter
        assert c is a and pool.budget.open == 2
        pool.release(b)
        pool.release(c)
        pool.close()

    run(main())


def test_connection_storm_respects_the_rate_and_concurrency(cluster):
    async def main():
        rate = 10
        pool = make_pool(cluster, max_connections=50, connect_rate=rate, connect_concurrency=3, acquire_timeout=10)
        opened_at = []
        inner = pool.connector
        peak = 0

        async def counting():
            nonlocal peak
            peak = max(peak, pool.budget.connecting)
            opened_at.append(time.monotonic())  # when the attempt starts: that is what the rate limits
            return await inner()

        pool.connector = counting
        start = time.monotonic()
        conns = await asyncio.gather(*(pool.acquire() for _ in range(25)))
        assert len({c.thread_id for c in conns}) == 25
        assert peak <= 3
        # evenly spaced at 1/rate: 25 connections need >= 2.4 s, and no 1 s window holds more than `rate`
        assert opened_at[-1] - start >= (25 - 1) / rate - 0.1
        assert max(sum(1 for t in opened_at if t0 <= t < t0 + 1.0) for t0 in opened_at) <= rate
        for c in conns:
            pool.release(c)
        pool.close()

    run(main())


def test_reset_on_release_clears_session_state(cluster):
    async def main():
        pool = make_pool(cluster, max_connections=1)
        a = await pool.acquire()
        assert await query_value(a, "SELECT @marker := 7") == b"7"
        pool.release(a, reset=True)
        b = await pool.acquire()  # waits for the reset to finish
        assert b is a
        assert await query_value(b, "SELECT @marker") is None
        pool.release(b)
        pool.close()

    run(main())


def test_idle_connections_are_closed_down_to_min_idle(cluster):
    async def main():
        pool = make_pool(cluster, idle_timeout=0.1, min_idle=1)
        conns = [await pool.acquire() for _ in range(3)]
        ids = {c.thread_id for c in conns}
        for c in conns:
            pool.release(c)
        await asyncio.sleep(0.2)
        pool.maintain()
        assert len(pool.idle) == 1 and pool.budget.open == 1
        await asyncio.sleep(0.2)
        alive = {int(x) for x in cluster.primary.sql("SELECT ID FROM information_schema.PROCESSLIST").split()}
        assert len(ids & alive) == 1
        pool.close()

    run(main())


def test_a_connection_killed_while_idle_is_replaced(cluster):
    async def main():
        pool = make_pool(cluster, validate_after=0.0)
        a = await pool.acquire()
        dead = a.thread_id
        pool.release(a)
        cluster.primary.sql(f"KILL {dead}")
        await asyncio.sleep(0.2)
        b = await pool.acquire()
        assert b.thread_id != dead
        assert await query_value(b, "SELECT 1") == b"1"
        pool.release(b)
        pool.close()

    run(main())


def test_old_connections_are_retired_on_release(cluster):
    async def main():
        pool = make_pool(cluster, max_lifetime=0.1)
        a = await pool.acquire()
        await asyncio.sleep(0.2)
        pool.release(a)
        assert a.closed and not pool.idle and pool.budget.open == 0
        pool.close()

    run(main())


def sibling_pools(cluster, max_connections: int, **settings) -> tuple[Pool, Pool]:
    """Two pools of one server sharing its budget, as the proxy keeps for clients with different
    capabilities or collations (mysql-connector and PyMySQL, say)."""
    p = cluster.primary
    server = Server(0, p.host, p.port, max_connections=max_connections)
    budget = ServerBudget(server.address, max_connections, PoolSettings(**settings))

    def connector_for(collation: int):
        async def connector():
            conn = await backend.connect(server, cluster.app_user, cluster.app_password, database=None,
                                         client_capabilities=int(Capability.MULTI_RESULTS), collation=collation, attributes={}, timeout=5)
            conn.cstate = ConnState()
            return conn
        return connector

    return Pool(budget, connector_for(45), "utf8mb4"), Pool(budget, connector_for(8), "latin1")


def test_an_idle_connection_of_another_pool_makes_room_at_the_servers_cap(cluster):
    async def main():
        a, b = sibling_pools(cluster, max_connections=1, acquire_timeout=2)
        conn = await a.acquire()
        a.release(conn)  # idle in pool a: the server's only slot
        t0 = time.monotonic()
        other = await b.acquire()  # must not wait for a's idle_timeout (nor time out)
        assert time.monotonic() - t0 < 1.0
        assert conn.closed and not a.idle and a.budget.open == 1
        assert await query_value(other, "SELECT @@collation_connection") == b"latin1_swedish_ci"
        b.release(other)
        a.close()
        b.close()

    run(main())


def test_a_release_frees_the_slot_for_a_session_waiting_in_another_pool(cluster):
    async def main():
        a, b = sibling_pools(cluster, max_connections=1, acquire_timeout=5)
        conn = await a.acquire()  # lent: the server's only slot
        waiter = asyncio.create_task(b.acquire())
        await asyncio.sleep(0.1)
        assert not waiter.done()
        t0 = time.monotonic()
        a.release(conn)  # nobody waits in a: closed, so b's session gets the slot
        other = await waiter
        assert time.monotonic() - t0 < 1.0
        assert conn.closed and other is not conn and a.budget.open == 1
        b.release(other)
        a.close()
        b.close()

    run(main())
