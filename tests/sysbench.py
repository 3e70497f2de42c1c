"""Running sysbench from tests: one command builder and one output reader for every sysbench test."""

from __future__ import annotations

import re
import subprocess

TABLES = 4
# Rows per table. Through the proxy each transaction holds its row locks about twice as long as
# direct, so with small tables InnoDB's deadlock detector occasionally fires (1213, which sysbench
# counts as an ignored error): a real server deadlock, not a proxy fault. The primary's general log
# of such a run showed every one of 84,780 EXECUTEs inside its own BEGIN..COMMIT on one connection.
# Larger tables make row overlap, and so deadlocks, rare enough for a test that demands 0 errors.
TABLE_SIZE = 25_000


def run(host: str, port: int, db: str, *args: str, workload: str = "oltp_read_write", timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [
        "sysbench",
        workload,
        f"--mysql-host={host}",
        f"--mysql-port={port}",
        "--mysql-user=app",
        "--mysql-password=app_pw",
        f"--mysql-db={db}",
        f"--tables={TABLES}",
        f"--table-size={TABLE_SIZE}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def stat(output: str, name: str) -> int:
    """A counter from sysbench's summary ("queries:", "ignored errors:", ...)."""
    m = re.search(rf"^\s*{re.escape(name)}:\s+(\d+)", output, re.MULTILINE)
    assert m, f"no '{name}:' line in sysbench output:\n{output}"
    return int(m.group(1))
