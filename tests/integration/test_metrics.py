"""Statistics through a real proxy: the Prometheus scrape after sysbench, and agreement with the servers.

Acceptance (issue 5): after a sysbench run, a scrape parsed with prometheus_client's own text parser
has every metric the issue lists with plausible values, and the proxy's per-server statement counts
and its digest table agree with the backends' own counters within 1 %.

What is compared with what, and why it is the same quantity:

* Per server, the proxy's ``Queries`` (stats_mysql_connection_pool; in Prometheus
  ``rwproxy_backend_queries_total`` summed over the hostgroups the server serves) counts the client
  statements (COM_QUERY, COM_STMT_EXECUTE) whose reply the proxy relayed from that server. The
  server's ``Questions`` counts every statement a client connection sent it: COM_QUERY,
  COM_STMT_EXECUTE and also COM_INIT_DB, but not COM_PING, COM_STMT_PREPARE/CLOSE/RESET, and not
  what the replication applier runs (measured: a replica's Questions does not move while it applies
  the primary's writes, although its Com_insert/Com_update do). Seen from the server, the proxy is
  the client, so Questions delta = the proxy's Queries delta + the proxy's own commands + our readings.
  Our readings are ``SHOW GLOBAL STATUS`` over one connection per server as the monitor user; what
  one reading costs is measured (two back to back) and subtracted. The proxy logs in to the servers
  as an account of the test's own, so that its threads on each server are exactly that proxy's
  backend connections (compared with rwproxy_backend_connections). The proxy's own
  commands are the session state it puts on a new backend connection (COM_INIT_DB of the schema and
  one SET for session tracking and the charset), and on the first connection of each pool one SHOW
  VARIABLES that learns the character sets its login gave it (proxy.lending.opened_state):
  sysbench's threads all share one schema and charset, so nothing else is replayed, and the residual
  must lie between 0 and 2 per connection opened (ConnOK delta) plus 1 (one pool per server here),
  plus 2 per connection the proxy reset on its own (``rwproxy_backend_resets``: the reset and the
  SET that sets tracking and the login's state again; a connection whose last statement left an
  error, such as a deadlock sysbench ignores, is reset before another client may see it) — and
  within 1 % of the statements.
* The digest table: the sum of its ``count_star`` (in Prometheus ``rwproxy_statements_total``, which
  is summed from the same entries and keeps the counts of evicted ones) must equal the statements
  sysbench sent. sysbench's ``total`` counts the statements that succeeded; a statement that failed
  with an error in ``--mysql-ignore-errors`` was sent and answered too (the proxy counts it, and
  the ERR in ``rwproxy_errors_total``) but sysbench counts it under ``ignored errors``. So
  sum(count_star) delta == total + ignored errors, exactly; and the servers' side of the same
  number is the sum of the per-server Queries above.

Both sides are read twice: the ProxySQL tables over the admin SQL port (stats_mysql_connection_pool
``Queries``, stats_mysql_query_digest ``count_star``, emptied through stats_mysql_query_digest_reset
before the run) and the Prometheus scrape; they come from one registry and must agree exactly.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter

import mysql.connector
import pymysql
import pymysql.cursors
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rules.digest import fingerprint
from tests.sysbench import TABLE_SIZE, TABLES
from tests.sysbench import stat as _stat

SPLIT_ARGS = ("--skip-trx=on", "--db-ps-mode=disable", "--mysql-ignore-errors=1213,1020,1205,1062")
WORKLOAD_ERRORS = {1062, 1213, 1205, 1020}
RULE_ID = 10  # counts oltp_read_write's distinct-range SELECTs (one per event), changes nothing
RULES = f"""
[[query_rules]]
rule_id = {RULE_ID}
match_digest = "^SELECT DISTINCT"
apply = false
"""

# The families the issue asks for (names as prometheus_client's parser gives them: counters
# without their _total suffix).
REQUIRED = {
    "client connections": "rwproxy_client_connections",
    "backend connections by server and state": "rwproxy_backend_connections",
    "pool acquire-wait histogram": "rwproxy_pool_acquire_wait_seconds",
    "backend connections created": "rwproxy_backend_connections_created",
    "backend connections reused": "rwproxy_backend_connections_reused",
    "statements by hostgroup and kind": "rwproxy_statements",
    "statement latency histogram": "rwproxy_statement_latency_seconds",
    "errors by code": "rwproxy_errors",
    "rule hits": "rwproxy_query_rule_hits",
    "pinned sessions by reason": "rwproxy_pinned_sessions",
    "classification cache hit ratio": "rwproxy_classifier_cache_hit_ratio",
    "server status": "rwproxy_server_status",
}


# ---- helpers ------------------------------------------------------------------------------------


class Scrape:
    """One /metrics scrape, parsed by prometheus_client's own text parser."""

    def __init__(self, port: int) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            self.text = resp.read().decode()
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}

    def samples(self, sample: str, **labels: str) -> list:
        family = sample
        for suffix in ("_total", "_bucket", "_count", "_sum"):
            if sample.endswith(suffix) and sample[: -len(suffix)] in self.families:
                family = sample[: -len(suffix)]
        fam = self.families.get(family)
        if fam is None:
            return []
        return [s for s in fam.samples if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, sample: str, **labels: str) -> float:
        """Sum of the samples named `sample` whose labels include `labels` (0 if none)."""
        return sum(s.value for s in self.samples(sample, **labels))

    def by(self, sample: str, label: str, **labels: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.samples(sample, **labels):
            out[s.labels[label]] = out.get(s.labels[label], 0) + s.value
        return out


def admin_rows(proxy, sql: str) -> list[dict]:
    with proxy.admin_connect(cursorclass=pymysql.cursors.DictCursor) as c, c.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def pool_queries(proxy) -> dict[str, int]:
    """stats_mysql_connection_pool: Queries per server (summed over the hostgroups it serves)."""
    out: dict[str, int] = {}
    for r in admin_rows(proxy, "SELECT hostgroup, srv_host, srv_port, Queries FROM stats_mysql_connection_pool"):
        address = f"{r['srv_host']}:{r['srv_port']}"
        out[address] = out.get(address, 0) + int(r["Queries"])
    return out


def _delta(after: dict, before: dict) -> dict:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}


class ServerCounters:
    """SHOW GLOBAL STATUS on every server over one monitor-user connection each."""

    NAMES = ("Questions", "Com_select", "Com_insert", "Com_update", "Com_delete")

    def __init__(self, cluster) -> None:
        self.conns = {
            f"{s.host}:{s.port}": pymysql.connect(
                host=s.host, port=s.port, user=cluster.monitor_user, password=cluster.monitor_password, autocommit=True, connect_timeout=10
            )
            for s in cluster.servers
        }

    def read(self) -> dict[str, dict[str, int]]:
        names = ", ".join(f"'{n}'" for n in self.NAMES)
        out = {}
        for address, conn in self.conns.items():
            with conn.cursor() as cur:
                cur.execute(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})")
                out[address] = {k: int(v) for k, v in cur.fetchall()}
        return out

    def threads_of(self, user: str) -> dict[str, int]:
        """`user`'s connections on each server."""
        out = {}
        for address, conn in self.conns.items():
            with conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
                out[address] = cur.fetchone()[0]
        return out

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


def sysbench(host: str, port: int, db: str, *args: str, timeout: float = 120) -> subprocess.Popen:
    cmd = [
        "sysbench", "oltp_read_write", f"--mysql-host={host}", f"--mysql-port={port}", "--mysql-user=app",
        "--mysql-password=app_pw", f"--mysql-db={db}", f"--tables={TABLES}", f"--table-size={TABLE_SIZE}", *args,
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def ignored_codes(out: str) -> list[int]:
    """Codes of the errors sysbench ignored (``--verbosity=5``; repeats folded by its logger)."""
    codes: list[int] = []
    previous = None
    for line in out.splitlines():
        if m := re.search(r"Ignoring error (\d+)", line):
            codes.append(int(m[1]))
            previous = int(m[1])
        elif (m := re.fullmatch(r"\s*\(last message repeated (\d+) times\)\s*", line)) and previous:
            codes += [previous] * int(m[1])
        else:
            previous = None
    return codes


@pytest.fixture
def backend_user(cluster):
    """A server account of the test's own for the proxy's backend connections, so that its threads on
    each server are exactly this proxy's connections (other proxies of the session log in as app).
    Created as root on the primary; it reaches the replicas through the binlog."""
    name = f"mx_{uuid.uuid4().hex[:8]}"
    cluster.primary.sql(f"CREATE USER '{name}'@'%' IDENTIFIED BY 'mx_pw'; GRANT ALL PRIVILEGES ON *.* TO '{name}'@'%'")
    cluster.wait_replicated(timeout=60)
    yield name
    cluster.primary.sql(f"DROP USER IF EXISTS '{name}'@'%'")


@pytest.fixture
def sbdb(direct, cluster):
    """A sysbench data set of its own, prepared straight on the primary and replicated."""
    db = f"sbmetrics_{uuid.uuid4().hex[:10]}"
    with direct.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{db}`")
    try:
        p = cluster.primary
        prep = sysbench(p.host, p.port, db, "--threads=2", "prepare")
        out, _ = prep.communicate(timeout=300)
        assert prep.returncode == 0, out
        cluster.wait_replicated(timeout=60)
        yield db
    finally:
        with direct.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")


# ---- the acceptance test ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sysbench") is None, reason="sysbench is not installed")
def test_scrape_after_sysbench_has_every_metric_and_agrees_with_the_servers(start_proxy, cluster, sbdb, backend_user):
    # Split: primary hg 0, replicas hg 1, pair 0 -> 1. Clients log in as app; the proxy logs in to the
    # servers as `backend_user`.
    users = [{"username": "app", "password": "app_pw", "default_hostgroup": 0, "backend_username": backend_user, "backend_password": "mx_pw"}]
    proxy = start_proxy(metrics=True, admin=True, extra_toml=RULES, users=users)
    servers = {f"{s.host}:{s.port}": s for s in cluster.servers}
    primary = f"{cluster.primary.host}:{cluster.primary.port}"
    replicas = [f"{r.host}:{r.port}" for r in cluster.replicas]
    counters = ServerCounters(cluster)
    try:
        c1 = counters.read()
        c2 = counters.read()  # back to back: what one reading costs each server
        probe = {a: _delta(c2[a], c1[a]) for a in c1}
        m0 = Scrape(proxy.metrics_port)
        table0 = pool_queries(proxy)
        admin_rows(proxy, "SELECT COUNT(*) FROM stats_mysql_query_digest_reset")  # reads and empties the digest table

        run = sysbench(proxy.host, proxy.port, sbdb, *SPLIT_ARGS, "--threads=8", "--time=10", "--verbosity=5", "--report-interval=0", "run")
        during = None
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and run.poll() is None:  # a scrape while sysbench runs
            time.sleep(0.5)
            s = Scrape(proxy.metrics_port)
            if s.value("rwproxy_client_connections") >= 8:
                during = s
                if time.monotonic() > deadline - 3:
                    break
        out, _ = run.communicate(timeout=120)
        m1 = Scrape(proxy.metrics_port)
        table1 = pool_queries(proxy)
        digests = admin_rows(proxy, "SELECT * FROM stats_mysql_query_digest")
        c3 = counters.read()

        assert run.returncode == 0 and "FATAL" not in out, out
        total, reads, writes, other = (_stat(out, k) for k in ("total", "read", "write", "other"))
        ignored, transactions = _stat(out, "ignored errors"), _stat(out, "transactions")
        codes = ignored_codes(out)
        assert len(codes) == ignored and set(codes) <= WORKLOAD_ERRORS, out
        assert total > 1000 and reads > 0 and writes > 0, out

        # -- every family the issue lists is in the scrape ----------------------------------------
        for what, name in REQUIRED.items():
            assert name in m1.families, f"{what}: no {name} in the scrape:\n{m1.text}"

        # -- client connections: sysbench's 8 threads, seen during the run ---------------------------
        assert during is not None, "no scrape during the run saw sysbench's 8 client connections"
        assert during.value("rwproxy_client_connections") >= 8

        # -- statements by hostgroup and kind: reads on the readers, writes on the writer -------------
        def kinds(m: Scrape, hg: str) -> dict[str, float]:
            return m.by("rwproxy_statements_total", "kind", hostgroup=hg)

        reader, writer = _delta(kinds(m1, "1"), kinds(m0, "1")), _delta(kinds(m1, "0"), kinds(m0, "0"))
        local = _delta(kinds(m1, "-1"), kinds(m0, "-1"))
        print(f"\nsysbench: read {reads} write {writes} other {other} total {total} ignored {ignored} ({Counter(codes)}) "
              f"transactions {transactions}; proxy: hostgroup 1 {reader}, hostgroup 0 {writer}")
        assert {k: v for k, v in reader.items() if v} == {"SELECT": reads}, (reader, out)
        assert writer.get("SELECT", 0) == 0, writer
        assert {k for k, v in writer.items() if v} <= {"INSERT", "UPDATE", "DELETE", "ROLLBACK"}, writer
        # (sysbench counts some writes as "other", and not the ones that failed with an ignored error.)
        assert sum(writer.values()) == writes + other + ignored, (writer, out)
        assert not any(local.values()), local

        # -- the digest table (admin port) vs what sysbench sent, and vs Prometheus ----------------
        statements = sum(reader.values()) + sum(writer.values())
        count_star = sum(int(r["count_star"]) for r in digests)
        assert count_star == total + ignored, f"sum(count_star) {count_star}; sysbench: total {total} + ignored {ignored}"
        assert statements == count_star, (statements, count_star)
        assert {r["username"] for r in digests} == {"app"} and {r["schemaname"] for r in digests} == {sbdb}
        for r in digests:
            text, hg = r["digest_text"], int(r["hostgroup"])
            assert hg == (1 if text.startswith("SELECT") else 0), r
            assert r["digest"].startswith("0x") and len(r["digest"]) == 18, r
            assert 0 < int(r["min_time"]) <= int(r["max_time"]) and int(r["sum_time"]) >= int(r["count_star"]) * int(r["min_time"]), r
            assert int(r["first_seen"]) <= int(r["last_seen"]), r
        affected = sum(int(r["sum_rows_affected"]) for r in digests if r["digest_text"].startswith(("UPDATE", "DELETE", "INSERT")))
        # Each of sysbench's writes changes one row (bar a race without transactions: a row another
        # thread deleted just before).
        assert 0.9 * writes <= affected <= writes + other + ignored, (affected, writes)
        # sysbench's 4 tables x (point, simple range, sum, order, distinct) SELECT shapes on the readers.
        assert sum(1 for r in digests if int(r["hostgroup"]) == 1) == 4 * 5, digests

        # -- latency histogram: one observation per statement, per hostgroup ---------------------------
        for hg in ("0", "1"):
            n = m1.value("rwproxy_statement_latency_seconds_count", hostgroup=hg)
            assert n == sum(kinds(m1, hg).values()), hg
            buckets = m1.samples("rwproxy_statement_latency_seconds_bucket", hostgroup=hg)
            assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == n
            assert 0 < m1.value("rwproxy_statement_latency_seconds_sum", hostgroup=hg) < n  # well under 1 s each

        # -- per server: the proxy's Queries vs the server's own Questions (within 1 %) -------------
        queries0 = m0.by("rwproxy_backend_queries_total", "server")
        queries1 = m1.by("rwproxy_backend_queries_total", "server")
        created0 = m0.by("rwproxy_backend_connections_created_total", "server")
        created1 = m1.by("rwproxy_backend_connections_created_total", "server")
        resets0 = m0.by("rwproxy_backend_resets_total", "server")
        resets1 = m1.by("rwproxy_backend_resets_total", "server")
        report = []
        for address in servers:
            proxy_q = queries1.get(address, 0) - queries0.get(address, 0)
            assert table1.get(address, 0) - table0.get(address, 0) == proxy_q, (address, table0, table1)  # one registry
            server_q = c3[address]["Questions"] - c2[address]["Questions"] - probe[address]["Questions"]
            opened = created1.get(address, 0) - created0.get(address, 0)
            reset = resets1.get(address, 0) - resets0.get(address, 0)
            residual = server_q - proxy_q
            report.append(f"{address}: proxy Queries {proxy_q:.0f}, server Questions {server_q}, residual {residual:.0f}, "
                          f"connections opened {opened:.0f}, reset {reset:.0f}")
            assert 0 <= residual <= 2 * opened + (1 if opened else 0) + 2 * reset, "\n".join(report)
            assert abs(residual) <= 0.01 * max(proxy_q, 1), "\n".join(report)
        print("\n" + "\n".join(report))
        # The same statements, counted per server and per digest.
        assert sum(queries1.get(a, 0) - queries0.get(a, 0) for a in servers) == statements
        # Reads on replicas only: the replicas' SELECTs are exactly hostgroup 1's.
        assert sum(c3[a]["Com_select"] - c2[a]["Com_select"] - probe[a]["Com_select"] for a in replicas) == reads
        assert c3[primary]["Com_select"] - c2[primary]["Com_select"] - probe[primary]["Com_select"] == 0

        # -- backend connections: created vs reused, acquire waits ----------------------------------
        reused = m1.by("rwproxy_backend_connections_reused_total", "server")
        for address in servers:
            if not queries1.get(address, 0):
                continue  # (a replica no session chose: reads spread by weighted random choice per session)
            assert created1[address] >= 1
            assert reused[address] >= 50 * created1[address], (address, reused, created1)
            waits = m1.value("rwproxy_pool_acquire_wait_seconds_count", server=address)
            assert m1.value("rwproxy_pool_acquire_wait_seconds_sum", server=address) >= 0
            if address in replicas:
                # No transaction, no pin: every read borrows a reader connection, once.
                assert waits == queries1[address], (address, waits, queries1[address])
            else:
                # Writes too, except the statement after an INSERT (the session keeps the writer
                # connection for LAST_INSERT_ID()); plus each session's login.
                assert 0.5 * queries1[address] <= waits <= queries1[address] + 8, (address, waits, queries1[address])

        # -- errors by code: sysbench's ignored errors, and one provoked 1146 -----------------------
        errors1 = m1.by("rwproxy_errors_total", "code")
        errors0 = m0.by("rwproxy_errors_total", "code")
        assert {int(c): n for c, n in _delta(errors1, errors0).items() if n} == dict(Counter(codes)), (errors1, codes)
        with proxy.connect(database=sbdb, autocommit=True) as conn, conn.cursor() as cur:
            with pytest.raises(pymysql.err.ProgrammingError) as e:
                cur.execute("SELECT * FROM no_such_table_here")
            assert e.value.args[0] == 1146

        # -- rule hits: the distinct-range SELECT, one per sysbench event ---------------------------
        hits = m1.value("rwproxy_query_rule_hits_total", rule_id=str(RULE_ID)) - m0.value("rwproxy_query_rule_hits_total", rule_id=str(RULE_ID))
        assert transactions <= hits <= transactions + ignored, (hits, transactions, ignored)

        # -- a pinned session held open during the scrape -------------------------------------------
        with proxy.connect(database=sbdb, autocommit=True) as pinned, pinned.cursor() as cur:
            cur.execute("SET @pinned = 1")
            cur.execute("SELECT @pinned, CONNECTION_ID()")
            one, session_id = cur.fetchone()
            assert one == 1
            m2 = Scrape(proxy.metrics_port)
            threads = counters.threads_of(backend_user)
            plist = admin_rows(proxy, "SELECT * FROM stats_mysql_processlist")
            users = admin_rows(proxy, "SELECT * FROM stats_mysql_users")
            status = {r["Variable_Name"]: r["Variable_Value"] for r in admin_rows(proxy, "SELECT * FROM stats_mysql_global")}
        held = m2.by("rwproxy_pinned_sessions", "reason")
        assert [(r["SessionID"], r["user"], r["db"], r["command"], r["hostgroup"]) for r in plist] == [(session_id, "app", sbdb, "Sleep", 0)], plist
        reasons = set(plist[0]["pin_reasons"].split(","))
        assert "USER_VARIABLE" in reasons, plist
        assert users == [{"username": "app", "frontend_connections": 1, "frontend_max_connections": users[0]["frontend_max_connections"]}]
        assert int(status["Client_Connections_connected"]) == 1 and int(status["Client_Connections_hostgroup_locked"]) == 1
        assert int(status["Questions"]) == m2.value("rwproxy_statements_total"), status
        assert int(status["Server_Connections_created"]) == m2.value("rwproxy_backend_connections_created_total"), status
        assert {r for r, n in held.items() if n} == reasons and all(n in (0, 1) for n in held.values()), (held, reasons)
        assert m2.value("rwproxy_errors_total", code="1146") == errors1.get("1146", 0) + 1
        assert m2.value("rwproxy_client_connections") == 1

        # -- backend connections by server and state = the backend user's threads on each server -----
        conns = {a: m2.by("rwproxy_backend_connections", "state", server=a) for a in servers}
        for address in servers:
            assert set(conns[address]) == {"used", "idle", "connecting"}, conns
            assert sum(conns[address].values()) == threads[address], (address, conns, threads)
        assert conns[primary]["used"] == 1, conns  # the pinned session's writer connection

        # -- classification cache, server status --------------------------------------------------
        ratio = m2.value("rwproxy_classifier_cache_hit_ratio")
        assert 0 < ratio <= 1, ratio
        for hg, members in (("0", [primary]), ("1", replicas)):
            for address in members:
                status = m2.by("rwproxy_server_status", "status", hostgroup=hg, server=address)
                assert status["ONLINE"] == 1 and sum(status.values()) == 1, (hg, address, status)
    finally:
        counters.close()


# ---- the digest table's bound -------------------------------------------------------------------


def test_digest_table_stays_within_max_digests(start_proxy):
    proxy = start_proxy(metrics=True, extra_toml="[stats]\nmax_digests = 50\n")
    with proxy.connect(autocommit=True) as conn, conn.cursor() as cur:
        before = Scrape(proxy.metrics_port)  # (after the driver's own SET at connect)
        assert before.value("rwproxy_query_digest_max_entries") == 50
        for n in range(500):
            cur.execute(f"SELECT {n} AS c{n}")  # 500 digests: the column alias differs
            assert cur.fetchone() == (n,)
            if n % 100 == 99:
                assert Scrape(proxy.metrics_port).value("rwproxy_query_digest_entries") <= 50
    after = Scrape(proxy.metrics_port)
    entries = after.value("rwproxy_query_digest_entries")
    evicted = after.value("rwproxy_query_digest_evictions_total") - before.value("rwproxy_query_digest_evictions_total")
    counted = after.value("rwproxy_statements_total") - before.value("rwproxy_statements_total")
    assert entries == 50
    assert counted == 500  # evicted entries' counts are kept: the counter never goes back
    assert evicted >= 500 - 50


# ---- what counts, in both modes -------------------------------------------------------------------


def _connector(p, **kw):
    return mysql.connector.connect(host=p.host, port=p.port, user=p.user, password=p.password, use_pure=True, autocommit=True, **kw)


@pytest.mark.parametrize("mode", ["passthrough", "split"])
def test_prepared_executes_and_local_answers_are_counted(start_proxy, cluster, mode):
    p = cluster.primary
    servers = [{"hostgroup_id": 0, "hostname": p.host, "port": p.port}] if mode == "passthrough" else None
    rules = "" if mode == "passthrough" else '[[query_rules]]\nrule_id = 3\nmatch_pattern = "^SELECT \'refused\'"\nerror_msg = "refused by rule 3"\napply = true\n'
    proxy = start_proxy(metrics=True, admin=True, servers=servers, extra_toml=rules)
    c = _connector(proxy)
    before = Scrape(proxy.metrics_port)  # (after the driver's own statements at connect)
    try:
        cur = c.cursor(prepared=True)
        for i in range(20):
            cur.execute("SELECT ? + 1", (i,))
            assert cur.fetchall() == [(i + 1,)]
        cur.close()
        plain = c.cursor()
        plain.execute("SELECT 1")
        plain.fetchall()
        if mode == "split":
            with pytest.raises(mysql.connector.Error) as e:
                plain.execute("SELECT 'refused'")
            assert e.value.errno == 1148
        plain.close()
    finally:
        c.close()
    after = Scrape(proxy.metrics_port)
    stmts = _delta(after.by("rwproxy_statements_total", "hostgroup"), before.by("rwproxy_statements_total", "hostgroup"))
    if mode == "passthrough":
        # Nothing is routed, but every statement is counted: 20 executes + 1 query, all on the writer.
        assert {hg: n for hg, n in stmts.items() if n} == {"0": 21}, stmts
    else:
        assert stmts.get("-1", 0) == 1, stmts  # refused by the rule: answered by the proxy
        assert stmts.get("0", 0) + stmts.get("1", 0) == 21, stmts
        assert after.value("rwproxy_query_rule_hits_total", rule_id="3") == 1
        assert after.value("rwproxy_errors_total", code="1148") == 1
    aborted = after.value("rwproxy_client_connections_aborted_total") - before.value("rwproxy_client_connections_aborted_total")
    assert aborted == 0  # the client said COM_QUIT
    # The executes count under the digest of the statement they execute, like ProxySQL's table.
    rows = admin_rows(proxy, "SELECT hostgroup, digest_text, count_star FROM stats_mysql_query_digest")
    by_text = {r["digest_text"]: (int(r["hostgroup"]), int(r["count_star"])) for r in rows}
    executed = by_text[fingerprint("SELECT ? + 1").text]
    assert executed[1] == 20 and executed[0] in ((0,) if mode == "passthrough" else (0, 1)), rows
    if mode == "split":
        assert by_text[fingerprint("SELECT 'refused'").text] == (-1, 1), rows


def test_bytes_and_queries_per_server_count_relayed_traffic(start_proxy, cluster):
    proxy = start_proxy(metrics=True)
    with proxy.connect(autocommit=True) as conn, conn.cursor() as cur:
        before = Scrape(proxy.metrics_port)  # (after the driver's own SET at connect)
        cur.execute("SELECT REPEAT('x', 100000)")
        assert len(cur.fetchone()[0]) == 100_000
    after = Scrape(proxy.metrics_port)
    recv = sum(_delta(after.by("rwproxy_backend_received_bytes_total", "server"), before.by("rwproxy_backend_received_bytes_total", "server")).values())
    sent = sum(_delta(after.by("rwproxy_backend_sent_bytes_total", "server"), before.by("rwproxy_backend_sent_bytes_total", "server")).values())
    assert 100_000 < recv < 101_000, recv  # the row and a few packet headers, counted once
    assert sent == 4 + 1 + len("SELECT REPEAT('x', 100000)"), sent  # header + COM_QUERY + text


def test_processlist_shows_the_statement_in_flight(start_proxy):
    proxy = start_proxy(admin=True)
    with proxy.connect(autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        session_id = cur.fetchone()[0]
        worker = threading.Thread(target=cur.execute, args=("SELECT SLEEP(1.5) AS napping",))
        worker.start()
        try:
            deadline = time.monotonic() + 10
            row = None
            while time.monotonic() < deadline:
                rows = admin_rows(proxy, f"SELECT command, info, time_ms, hostgroup, srv_port FROM stats_mysql_processlist WHERE SessionID = {session_id}")
                if rows and rows[0]["command"] == "Query":
                    row = rows[0]
                    break
                time.sleep(0.05)
        finally:
            worker.join()
        assert row is not None and row["info"] == "SELECT SLEEP(1.5) AS napping", row
        assert int(row["hostgroup"]) == 1 and int(row["srv_port"]) > 0, row
        # The reply ended: the text is let go.
        rows = admin_rows(proxy, f"SELECT command, info FROM stats_mysql_processlist WHERE SessionID = {session_id}")
        assert rows == [{"command": "Sleep", "info": ""}], rows
