"""Statement timeouts: [proxy] default_query_timeout and a query rule's `timeout` stop a statement on
its server (KILL QUERY over a connection of the proxy's own), so the client gets the server's own
interruption error, soon after the limit, and the session carries on."""

from __future__ import annotations

import time

import pymysql
import pytest

# MariaDB answers a SLEEP() stopped by KILL QUERY with ERR 1317 (a stopped BENCHMARK() returns 0).
SLOW = "SELECT SLEEP(5)"


def running(cluster, text: str) -> list[str]:
    """Statements containing `text` that some server is still running."""
    out = []
    for server in [cluster.primary, *cluster.replicas]:
        out += [r["INFO"] for r in server.rows("SELECT INFO FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query'") if r["INFO"] and text in r["INFO"]]
    return out


def timed(conn, sql: str) -> tuple[float, tuple | None]:
    t0 = time.monotonic()
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            cur.fetchall()
        return time.monotonic() - t0, None
    except pymysql.err.MySQLError as e:
        return time.monotonic() - t0, e.args


@pytest.mark.parametrize("split", [False, True], ids=["passthrough", "split"])
def test_default_query_timeout_stops_the_statement_on_its_server(start_proxy, cluster, split):
    kw = {} if split else {"servers": [{"hostgroup_id": 0, "hostname": cluster.primary.host, "port": cluster.primary.port}]}
    p = start_proxy(proxy_settings={"default_query_timeout": 0.5}, **kw)
    c = p.connect(autocommit=True)
    took, err = timed(c, f"{SLOW} /* default timeout */")
    assert err is not None and err[0] == 1317, err  # ER_QUERY_INTERRUPTED, from the server itself
    assert took < 3.0, took  # 0.5 s + at most a sweep interval + the KILL round trip
    assert not running(cluster, "default timeout")
    with c.cursor() as cur:  # the session carries on
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    c.close()


def test_a_rule_timeout_applies_to_its_statements_only(start_proxy, cluster):
    p = start_proxy(extra_toml="""
[[query_rules]]
rule_id = 1
active = true
match_pattern = "short leash"
timeout = 300
""")
    c = p.connect(autocommit=True)
    took, err = timed(c, f"{SLOW} /* short leash */")
    assert err is not None and err[0] == 1317, err
    assert took < 2.5, took
    assert not running(cluster, "short leash")
    # Another statement is not stopped at 300 ms (the default is 10 hours).
    took, err = timed(c, "SELECT SLEEP(0.8) /* no leash */")
    assert err is None and took >= 0.8, (took, err)
    c.close()


def test_default_query_timeout_stops_a_slow_set_in_passthrough(start_proxy, cluster):
    # MariaDB's own test suite through the proxy found it: the timeout sweep read a passthrough
    # SET's missing routing decision, failed ("idle sweep failed" and a traceback), and the
    # statement ran on past its limit.
    p = start_proxy(proxy_settings={"default_query_timeout": 0.5}, servers=[{"hostgroup_id": 0, "hostname": cluster.primary.host, "port": cluster.primary.port}])
    c = p.connect(autocommit=True)
    took, err = timed(c, "SET @slow = SLEEP(5) /* set timeout */")
    assert err is not None and err[0] == 1317, err
    assert took < 3.0, took
    assert not running(cluster, "set timeout")
    c.close()
    assert "sweep failed" not in open(p.log_path).read()
