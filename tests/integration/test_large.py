"""Big values and big results: intact, and streamed with bounded proxy memory.

The proxy relays a result frame by frame and pauses reading from the server while the client is
slow, so neither a 200 MB result nor a slow reader may grow its RSS much. RSS is read from
/proc/<pid>/status (VmRSS) of the proxy subprocess, sampled every 50 ms while the client reads.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pymysql.cursors
import pytest

MB = 1 << 20


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Max RSS of a process, sampled in a thread every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.peak = _rss(pid)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, _rss(self.pid))
            except (OSError, AssertionError):
                return
            self.samples += 1

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss(self.pid))


def test_20mb_blob_round_trip(proxy, cluster, schema, direct):
    blob = os.urandom(20 * MB)
    digest = hashlib.sha256(blob).hexdigest()
    with direct.cursor() as cur:
        cur.execute(f"CREATE TABLE `{schema}`.b (id INT PRIMARY KEY, data LONGBLOB)")
    conn = proxy.connect(database=schema, autocommit=True)
    try:
        with conn.cursor() as cur:
            # The escaped query is > 16 MiB: it crosses the proxy as split packets.
            assert cur.execute("INSERT INTO b VALUES (1, %s)", (blob,)) == 1
        cluster.wait_replicated(timeout=30)
        with conn.cursor() as cur:
            cur.execute("SELECT LENGTH(data), SHA2(data, 256) FROM b WHERE id = 1")
            assert cur.fetchone() == (len(blob), digest)
            cur.execute("SELECT data FROM b WHERE id = 1")
            (back,) = cur.fetchone()
            assert back == blob
            cur.execute("SELECT 'after'")
            assert cur.fetchone() == ("after",)
    finally:
        conn.close()
    # On the primary itself, too.
    with direct.cursor() as cur:
        cur.execute(f"SELECT LENGTH(data), SHA2(data, 256) FROM `{schema}`.b WHERE id = 1")
        assert cur.fetchone() == (len(blob), digest)
    # And through the binary protocol. (mysql-connector's pure-Python reader mishandles binary rows
    # of 16 MiB and more even when talking to the server directly, so take 15 MB of it.)
    c = mysql.connector.connect(host=proxy.host, port=proxy.port, user="app", password="app_pw", database=schema, use_pure=True)
    try:
        cur = c.cursor(prepared=True)
        cur.execute("SELECT SUBSTRING(data, ?, 15000000), LENGTH(data) FROM b WHERE id = ?", (11, 1))
        ((data, length),) = cur.fetchall()
        assert length == len(blob) and bytes(data) == blob[10:15000010]
        cur.execute("SELECT ? + 1", (1,))
        assert cur.fetchall() == [(2,)]
        cur.close()
    finally:
        c.close()


def _warm(p: Any, schema: str) -> None:
    """One ordinary session first, so lazy imports and first-use allocations are in the baseline."""
    conn = p.connect(database=schema, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SELECT REPEAT('w', 1000) FROM seq_1_to_2000")
        cur.fetchall()
    conn.close()
    time.sleep(0.2)


@pytest.mark.slow
def test_200mb_result_streams_with_bounded_proxy_memory(cluster, start_proxy, schema):
    p = start_proxy()
    _warm(p, schema)
    base = _rss(p.pid)
    rows = 220_000
    conn = p.connect(database=schema, cursorclass=pymysql.cursors.SSCursor, autocommit=True, read_timeout=120)
    try:
        with RssSampler(p.pid) as sampler:
            with conn.cursor() as cur:
                cur.execute(f"SELECT REPEAT('x', 1000) FROM seq_1_to_{rows}")
                count = nbytes = 0
                while True:
                    batch = cur.fetchmany(2000)
                    if not batch:
                        break
                    count += len(batch)
                    nbytes += sum(len(r[0]) for r in batch)
        with conn.cursor() as cur:
            cur.execute("SELECT 'after'")
            assert list(cur.fetchall()) == [("after",)]
    finally:
        conn.close()
    assert count == rows
    assert nbytes >= 200 * 1000 * 1000
    growth = sampler.peak - base
    assert sampler.samples > 5
    assert growth < 32 * MB, f"proxy RSS grew by {growth / MB:.1f} MB (base {base / MB:.1f} MB, peak {sampler.peak / MB:.1f} MB)"


@pytest.mark.slow
def test_slow_reader_applies_backpressure(cluster, start_proxy, schema):
    """A client that reads slowly must hold the server back, not make the proxy buffer the result."""
    p = start_proxy()
    _warm(p, schema)
    base = _rss(p.pid)
    rows = 150_000  # 150 MB: far more than the memory bound if it were buffered
    conn = p.connect(database=schema, cursorclass=pymysql.cursors.SSCursor, autocommit=True, read_timeout=120)
    try:
        with RssSampler(p.pid) as sampler:
            with conn.cursor() as cur:
                cur.execute(f"SELECT seq, REPEAT('s', 1000) FROM seq_1_to_{rows}")
                count = 0
                last = 0
                slow_until = time.monotonic() + 3.0
                while time.monotonic() < slow_until:
                    batch = cur.fetchmany(50)
                    assert batch
                    count += len(batch)
                    last = batch[-1][0]
                    time.sleep(0.01)
                slow_count = count
                slow_peak = sampler.peak
                # then read the rest at full speed: nothing lost across the pauses
                while True:
                    batch = cur.fetchmany(2000)
                    if not batch:
                        break
                    assert batch[0][0] == last + 1
                    last = batch[-1][0]
                    count += len(batch)
        with conn.cursor() as cur:
            cur.execute("SELECT 'after'")
            assert list(cur.fetchall()) == [("after",)]
    finally:
        conn.close()
    assert slow_count < rows // 2, "the slow phase was not slow enough to prove anything"
    assert (count, last) == (rows, rows)
    assert slow_peak - base < 32 * MB, f"proxy RSS grew by {(slow_peak - base) / MB:.1f} MB while the client read slowly"
    assert sampler.peak - base < 32 * MB, f"proxy RSS grew by {(sampler.peak - base) / MB:.1f} MB"
