"""A backend that stops answering mid-conversation: its connection is dropped, never lent on.

A cluster of its own (one primary, one replica) so that freezing the replica (SIGSTOP) cannot disturb
other tests. The replica has one connection in the proxy's pool and keeps one prepared statement per
connection, so session A's next execute must prepare lazily on that connection, which times out
(connect_timeout = 1 s) while session B already waits for the same connection. The timed-out
connection is closed before it goes back to the pool: B then opens a fresh one once the replica
answers again, instead of being handed the dead one (which gave B a lost connection and an
"unexpected error" in the log).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pytest

from proxy.sandbox import ProxyProcess, free_port, render_proxy_config, start_cluster


@pytest.fixture
def small_cluster(tmp_path: Path) -> Iterator[Any]:
    c = start_cluster(tmp_path / "cluster", replicas=1)
    try:
        c.primary.sql("CREATE DATABASE s; CREATE TABLE s.t (id INT PRIMARY KEY, v INT); INSERT INTO s.t VALUES (1, 10)")
        c.wait_replicated()
        yield c
    finally:
        c.stop()


def test_a_connection_that_timed_out_is_not_lent_to_the_next_session(small_cluster, tmp_path):
    c = small_cluster
    p, r = c.primary, c.replicas[0]
    port = free_port()
    cfg = tmp_path / "p.toml"
    cfg.write_text(render_proxy_config(
        c, port,
        servers=[{"hostgroup_id": 0, "hostname": p.host, "port": p.port}, {"hostgroup_id": 1, "hostname": r.host, "port": r.port, "max_connections": 1}],
        replication_hostgroups=[{"writer_hostgroup": 0, "reader_hostgroup": 1, "writer_is_also_reader": False}],
        proxy_settings={"connect_timeout": 1.0},
        extra_toml="[pool]\nmax_prepared_statements = 1\nacquire_timeout = 10.0\n",
    ))  # fmt: skip
    proxy = ProxyProcess(cfg, "127.0.0.1", port, tmp_path / "p.log")
    proxy.start(30)
    conns = []
    try:
        def connect() -> Any:
            conn = mysql.connector.connect(host="127.0.0.1", port=port, user=c.app_user, password=c.app_password,
                                           use_pure=True, autocommit=True, database="s")  # fmt: skip
            conns.append(conn)
            return conn

        a, b = connect(), connect()
        ca, cb = a.cursor(prepared=True), b.cursor(prepared=True)
        qa, qb = "SELECT @@server_id, v FROM t WHERE id = ?", "SELECT @@server_id, v + 1 FROM t WHERE id = ?"
        ca.execute(qa, (1,))
        assert ca.fetchall() == [(r.server_id, 10)]
        cb.execute(qb, (1,))  # evicts A's statement from the replica's one connection
        assert cb.fetchall() == [(r.server_id, 11)]

        out: dict[str, Any] = {}

        def run(name: str, cur: Any, sql: str) -> None:
            try:
                cur.execute(sql, (1,))
                out[name] = cur.fetchall()
            except Exception as e:  # noqa: BLE001 - asserted below
                out[name] = e

        os.kill(r.pid, signal.SIGSTOP)
        try:
            ta = threading.Thread(target=run, args=("A", ca, qa))
            ta.start()
            time.sleep(0.3)
            tb = threading.Thread(target=run, args=("B", cb, qb))  # waits for the replica's only connection
            tb.start()
            ta.join(10)
            time.sleep(0.5)
        finally:
            os.kill(r.pid, signal.SIGCONT)
        tb.join(15)
        # A's lazy PREPARE timed out: an ERR that names the wait, and A's session goes on.
        assert isinstance(out["A"], mysql.connector.Error), out
        assert "no answer within 1s" in str(out["A"]), out["A"]
        # B got a live connection once the replica answered again, not the dead one.
        assert out["B"] == [(r.server_id, 11)], out
        ca.execute(qa, (1,))
        assert ca.fetchall() == [(r.server_id, 10)]
        log = Path(proxy.log_path).read_text(errors="replace")
        assert "unexpected error" not in log, log[-2000:]
    finally:
        for conn in conns:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
        proxy.stop()
