"""sysbench oltp_read_write through the proxy, with its default server-side prepared statements.

The tables are prepared directly on the primary in a database of their own; the run goes through
the proxy (4 threads, 10 s). Tables are big enough relative to the thread count that InnoDB
deadlocks (which sysbench counts as "ignored errors" and retries) practically never happen, so
any error is the proxy's. Afterwards the data must still be consistent: oltp_read_write deletes and
re-inserts the same ids, so every table keeps its size, and the replicas hold the same data.
"""

from __future__ import annotations

import shutil
import uuid

import pytest

from tests.sysbench import TABLE_SIZE, TABLES
from tests.sysbench import run as _sysbench
from tests.sysbench import stat as _stat



@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sysbench") is None, reason="sysbench is not installed")
def test_sysbench_oltp_read_write_through_proxy(proxy, cluster, direct):
    db = f"sbtest_{uuid.uuid4().hex[:10]}"
    p = cluster.primary
    with direct.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{db}`")
    try:
        prep = _sysbench(p.host, p.port, db, "prepare")
        assert prep.returncode == 0, prep.stdout + prep.stderr
        cluster.wait_replicated(timeout=30)

        run = _sysbench(proxy.host, proxy.port, db, "--threads=4", "--time=10", "--db-ps-mode=auto", "--report-interval=0", "run")
        out = run.stdout + run.stderr
        assert run.returncode == 0, out
        assert "FATAL" not in out, out
        assert "error" not in run.stderr.lower(), run.stderr
        assert _stat(out, "ignored errors") == 0, out
        assert _stat(out, "reconnects") == 0, out
        transactions = _stat(out, "transactions")
        assert transactions > 0, out
        assert _stat(out, "read") > 0 and _stat(out, "write") > 0, out

        with direct.cursor() as cur:
            for i in range(1, TABLES + 1):
                cur.execute(f"SELECT COUNT(*) FROM `{db}`.sbtest{i}")
                assert cur.fetchone() == (TABLE_SIZE,), f"sbtest{i}"
            cur.execute("CHECKSUM TABLE " + ", ".join(f"`{db}`.sbtest{i}" for i in range(1, TABLES + 1)))
            on_primary = cur.fetchall()
        cluster.wait_replicated(timeout=30)
        for r in cluster.replicas:
            sums = r.sql("CHECKSUM TABLE " + ", ".join(f"`{db}`.sbtest{i}" for i in range(1, TABLES + 1)))
            assert [tuple(line.split("\t")) for line in sums.splitlines()] == [(t, str(c)) for t, c in on_primary], r.name
    finally:
        with direct.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
