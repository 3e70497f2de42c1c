"""Transaction-level multiplexing, as the clients see it: many sessions, few server connections.

A session borrows a pooled backend connection per statement (or per transaction) and gives it
back, unless it holds something a connection cannot be rebuilt with (temporary table, GET_LOCK,
user variable, SQL_CALC_FOUND_ROWS...), in which case it is pinned to its writer connection. What
the client set (time_zone, sql_mode, SET NAMES...) is replayed on whichever connection runs its next
statement. Every test here runs real PyMySQL clients against a proxy of its own whose servers have
a small `max_connections`, while other sessions run at the same time, so connections really are
shared, and checks what a user would see: results, errors, and the servers' own process lists.

The proxies here log in to the servers as a dedicated backend user (`mux`), so the servers'
PROCESSLIST rows of that user are exactly this proxy's connections, whatever else the test session
(or another proxy) holds as `app`.
"""

from __future__ import annotations

import random
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from proxy.sandbox import default_replication_hostgroups, default_servers

MUX_USER, MUX_PASSWORD = "mux", "mux_pw"


# -- fixtures and helpers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mux_user(cluster: Any) -> Iterator[str]:
    """The backend user the proxies of this module log in with (created on the primary, replicated)."""
    accounts = f"'{MUX_USER}'@'%', '{MUX_USER}'@'localhost'"
    cluster.primary.sql(
        f"CREATE USER IF NOT EXISTS '{MUX_USER}'@'%' IDENTIFIED BY '{MUX_PASSWORD}';"
        f"CREATE USER IF NOT EXISTS '{MUX_USER}'@'localhost' IDENTIFIED BY '{MUX_PASSWORD}';"
        # No SUPER / READ ONLY ADMIN: a write that reached a replica would fail.
        "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER, CREATE TEMPORARY TABLES, LOCK TABLES "
        f"ON *.* TO {accounts}"
    )
    cluster.wait_replicated()
    yield MUX_USER
    cluster.primary.sql(f"DROP USER IF EXISTS {accounts}")


@pytest.fixture
def mux_proxy(start_proxy: Callable[..., Any], cluster: Any, mux_user: str) -> Callable[..., Any]:
    """start_proxy with every server capped at `writer_max` / `reader_max` backend connections,
    the app user mapped to the `mux` backend user, and `pool` settings as a [pool] table."""

    def start(writer_max: int = 10, reader_max: int = 10, pool: dict[str, Any] | None = None, **kw: Any) -> Any:
        servers = default_servers(cluster)
        for s in servers:
            s["max_connections"] = writer_max if s["hostgroup_id"] == 0 else reader_max
        users = [{"username": cluster.app_user, "password": cluster.app_password, "default_hostgroup": 0,
                  "backend_username": MUX_USER, "backend_password": MUX_PASSWORD}]  # fmt: skip
        extra = ""
        if pool:
            extra = "[pool]\n" + "".join(f"{k} = {v!r}\n".replace("True", "true").replace("False", "false") for k, v in pool.items())
        return start_proxy(servers=servers, users=users, replication_hostgroups=default_replication_hostgroups(cluster), extra_toml=extra, **kw)

    return start


@pytest.fixture(scope="module")
def ids(cluster: Any) -> dict[str, Any]:
    return {"writer": cluster.primary.server_id, "readers": {r.server_id for r in cluster.replicas}}


def one(conn: pymysql.connections.Connection, sql: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()


def close(*conns: Any) -> None:
    for c in conns:
        try:
            c.close()
        except Exception:  # noqa: BLE001 - already closed by the proxy
            pass


def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def log_lines(p: Any, pattern: str) -> list[str]:
    pat = re.compile(pattern)
    return [line for line in Path(p.log_path).read_text(errors="replace").splitlines() if pat.search(line)]


W = "/* rwproxy:route=writer */ "


class BackendWatch(threading.Thread):
    """Samples, on every server, how many connections the `mux` user has (information_schema
    .PROCESSLIST, read as the monitor user, which has PROCESS) until stopped; keeps the maximum."""

    def __init__(self, cluster: Any, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.servers = {s.name or f"{s.host}:{s.port}": s for s in [cluster.primary, *cluster.replicas]}
        self.conns = {
            name: pymysql.connect(host=s.host, port=s.port, user=cluster.monitor_user, password=cluster.monitor_password, autocommit=True)
            for name, s in self.servers.items()
        }  # fmt: skip
        self.interval = interval
        self.max = dict.fromkeys(self.servers, 0)
        self.samples = 0
        self._halt = threading.Event()
        self._lock = threading.Lock()  # count() is called from the sampling thread and the test
        self.error: Exception | None = None

    def count(self) -> dict[str, int]:
        out = {}
        with self._lock:  # one connection per server, shared by both threads
            for name, c in self.conns.items():
                with c.cursor() as cur:
                    cur.execute(f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{MUX_USER}'")
                    out[name] = cur.fetchone()[0]
        return out

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                for name, n in self.count().items():
                    self.max[name] = max(self.max[name], n)
                self.samples += 1
                self._halt.wait(self.interval)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.error = e

    def stop(self) -> dict[str, int]:
        self._halt.set()
        self.join(10)
        if self.error is not None:
            raise self.error
        return self.max

    def close(self) -> None:
        close(*self.conns.values())


class Load:
    """`n` other client sessions through proxy `p`, each running `work(cursor, i)` in a loop until the
    block ends. Entering waits until every session has run at least once (they really run alongside)."""

    def __init__(self, p: Any, n: int, work: Callable[[Any, int], None]) -> None:
        self.p, self.n, self.work = p, n, work
        self.errors: list[str] = []
        self.rounds = 0
        self._started = threading.Semaphore(0)
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def _run(self, i: int) -> None:
        signalled = False
        try:
            conn = self.p.connect(autocommit=True)
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"session {i} connect: {e!r}")
            self._started.release()
            return
        try:
            with conn.cursor() as cur:
                while not self._halt.is_set():
                    self.work(cur, i)
                    with self._lock:
                        self.rounds += 1
                    if not signalled:
                        self._started.release()
                        signalled = True
        except Exception as e:  # noqa: BLE001 - collected, asserted by the test
            self.errors.append(f"session {i}: {e!r}")
        finally:
            if not signalled:
                self._started.release()
            close(conn)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        for _ in self.threads:
            assert self._started.acquire(timeout=30), "background sessions did not start"
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._halt.set()
        for t in self.threads:
            t.join(30)
        if exc_type is None:
            assert not self.errors, self.errors[:5]


# -- pin reasons: the state survives --------------------------------------------------------------


def test_temporary_table_survives_while_other_sessions_share_the_writer(mux_proxy, schema):
    # Writer capped at 3: the pinned session holds one, six other sessions share the other two.
    p = mux_proxy(writer_max=3)
    seen: set[int] = set()

    def others(cur: Any, i: int) -> None:
        # Temporary tables are per connection: another session must never land on the pinned one.
        try:
            cur.execute(f"{W}SELECT COUNT(*) FROM `{schema}`.tmp")
        except pymysql.err.ProgrammingError as e:
            assert e.args[0] == 1146, e.args
        else:
            raise AssertionError(f"session {i} saw another session's temporary table: {cur.fetchone()}")
        cur.execute(f"{W}SELECT @@pseudo_thread_id")
        seen.add(cur.fetchone()[0])

    a = p.connect(autocommit=True, database=schema)
    try:
        with a.cursor() as cur:
            cur.execute("CREATE TEMPORARY TABLE tmp (n INT)")
        with Load(p, 6, others) as load:
            tids = set()
            before = load.rounds
            for n in range(1, 11):
                with a.cursor() as cur:
                    cur.execute("INSERT INTO tmp VALUES (%s)", (n,))
                tids.add(one(a, f"{W}SELECT @@pseudo_thread_id")[0])
                time.sleep(0.02)
            assert one(a, "SELECT COUNT(*), SUM(n) FROM tmp") == (10, 55)
            during = load.rounds - before
        assert during > 0, "the other sessions did not run while the pinned one did"
        assert len(tids) == 1, f"the pinned session ran on several connections: {tids}"
        assert tids.isdisjoint(seen)
        assert len(seen) <= 2, f"six sessions used {len(seen)} writer connections with a cap of 3 (one pinned)"
    finally:
        close(a)
    # The pinned connection is reset on its way back: nobody inherits the temporary table.
    with Load(p, 3, others):
        time.sleep(0.5)


def test_get_lock_is_held_by_the_session_and_released_by_it(mux_proxy):
    p = mux_proxy(writer_max=3)
    lock = f"mux_{uuid.uuid4().hex[:8]}"
    a, b = p.connect(autocommit=True), p.connect(autocommit=True)

    def others(cur: Any, i: int) -> None:
        cur.execute(f"{W}SELECT @@pseudo_thread_id, SLEEP(0.005)")

    try:
        with Load(p, 6, others):
            assert one(a, f"SELECT GET_LOCK('{lock}', 0)") == (1,)
            holder = one(a, f"{W}SELECT @@pseudo_thread_id")[0]
            for _ in range(5):
                assert one(b, f"SELECT IS_USED_LOCK('{lock}')") == (holder,)
                assert one(a, f"{W}SELECT @@pseudo_thread_id") == (holder,)
                time.sleep(0.02)
            assert one(b, f"SELECT IS_FREE_LOCK('{lock}')") == (0,)
            assert one(a, f"SELECT RELEASE_LOCK('{lock}')") == (1,)  # 0 or NULL on any other connection
            assert one(b, f"SELECT IS_USED_LOCK('{lock}')") == (None,)
    finally:
        close(a, b)


def test_user_variable_reads_back(mux_proxy):
    p = mux_proxy(writer_max=3)
    a, b = p.connect(autocommit=True), p.connect(autocommit=True)

    def others(cur: Any, i: int) -> None:
        cur.execute(f"{W}SELECT @x")  # never another session's value
        assert cur.fetchone() == (None,)

    try:
        with Load(p, 6, others):
            with a.cursor() as cur:
                cur.execute("SET @x = 42")
            for _ in range(5):
                assert one(a, "SELECT @x") == (42,)
                assert one(b, f"{W}SELECT @x") == (None,)
                time.sleep(0.02)
            assert one(a, "SELECT @x := @x + 1") == (43,)
            assert one(a, "SELECT @x, @x * 2") == (43, 86)
    finally:
        close(a, b)


LAST_INSERT_ID_SPELLINGS = (
    "SELECT LAST_INSERT_ID()",
    "select last_insert_id() as id",
    "SELECT LAST_INSERT_ID() FROM DUAL;",
    "SELECT 1 + LAST_INSERT_ID() - 1",
)


def test_last_insert_id_is_each_sessions_own_under_50_concurrent_inserters(mux_proxy, schema, cluster):
    with pymysql.connect(host=cluster.primary.host, port=cluster.primary.port, user=cluster.app_user, password=cluster.app_password, autocommit=True) as d:
        with d.cursor() as cur:
            cur.execute(f"CREATE TABLE `{schema}`.ai (id BIGINT AUTO_INCREMENT PRIMARY KEY, who INT, k INT)")
    cluster.wait_replicated()
    p = mux_proxy(writer_max=10)  # 50 sessions, 10 writer connections
    clients, rounds = 50, 3
    wrong: list[str] = []
    errors: list[str] = []
    start = threading.Barrier(clients)

    def client(i: int) -> None:
        try:
            conn = p.connect(autocommit=True, database=schema)
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {i} connect: {e!r}")
            start.abort()
            return
        try:
            start.wait(30)
            with conn.cursor() as cur:
                for r in range(rounds):
                    for s, spelling in enumerate(LAST_INSERT_ID_SPELLINGS):
                        if (r + s) % 3 == 0:
                            cur.execute("INSERT INTO ai (who, k) VALUES (%s, 1), (%s, 2)", (i, i))  # the first id of the two
                        else:
                            cur.execute("INSERT INTO ai (who, k) VALUES (%s, 0)", (i,))
                        mine = cur.lastrowid
                        if r == 1:
                            cur.execute("SELECT COUNT(*) FROM ai WHERE who = -1")  # a read in between, on a replica
                        cur.execute(spelling)
                        got = cur.fetchone()[0]
                        if int(got) != mine:
                            wrong.append(f"client {i}: {spelling!r} -> {got}, its insert got id {mine}")
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {i}: {e!r}")
        finally:
            close(conn)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]
    assert not wrong, f"{len(wrong)} wrong LAST_INSERT_ID() answers, e.g. {wrong[:5]}"
    expected_rows = clients * sum(2 if (r + s) % 3 == 0 else 1 for r in range(rounds) for s in range(len(LAST_INSERT_ID_SPELLINGS)))
    assert cluster.primary.value(f"SELECT COUNT(*) FROM `{schema}`.ai") == str(expected_rows)


def test_last_insert_id_after_the_hold_ends_comes_from_the_inserts_ok(mux_proxy, schema, cluster):
    """A session that inserts and goes quiet keeps its writer connection only [pool]
    last_insert_id_hold; LAST_INSERT_ID() afterwards is still its own (from the insert's OK), even
    after others inserted on that very connection."""
    cluster.primary.sql(f"CREATE TABLE `{schema}`.ai2 (id BIGINT AUTO_INCREMENT PRIMARY KEY, who INT)")
    cluster.wait_replicated()
    p = mux_proxy(writer_max=1, pool={"last_insert_id_hold": 0.3})  # one writer connection for everyone
    a, b = p.connect(autocommit=True, database=schema), p.connect(autocommit=True, database=schema)
    try:
        with a.cursor() as cur:
            cur.execute("INSERT INTO ai2 (who) VALUES (1), (1)")
            mine = cur.lastrowid
        # b needs the only writer connection, which a holds for its LAST_INSERT_ID(): it waits for
        # the hold to end (0.3 s), not for a's next statement.
        t0 = time.monotonic()
        with b.cursor() as cur:
            cur.execute("INSERT INTO ai2 (who) VALUES (2)")
            theirs = cur.lastrowid
        waited = time.monotonic() - t0
        assert 0.15 < waited < 2.0, f"b waited {waited:.2f}s for the writer connection"
        assert theirs > mine
        for spelling in LAST_INSERT_ID_SPELLINGS:
            assert int(one(a, spelling)[0]) == mine, spelling
        assert int(one(b, "SELECT LAST_INSERT_ID()")[0]) == theirs
        # Inside a transaction the server answers (the connection is the session's).
        a.begin()
        with a.cursor() as cur:
            cur.execute("INSERT INTO ai2 (who) VALUES (3)")
            newer = cur.lastrowid
        assert one(a, "SELECT LAST_INSERT_ID()") == (newer,)
        a.commit()
    finally:
        close(a, b)


def test_row_count_is_the_sessions_previous_statements(mux_proxy, schema, cluster, direct):
    """ROW_COUNT() means the session's previous statement, whichever connection ran it (answered
    from that statement's OK), as it does connected directly."""
    cluster.primary.sql(f"CREATE TABLE `{schema}`.rc (id INT PRIMARY KEY, v INT)")
    cluster.wait_replicated()
    p = mux_proxy(writer_max=3)

    def others(cur: Any, i: int) -> None:
        cur.execute(f"{W}DO 1")  # ROW_COUNT() 0 on whatever connection this ran on

    steps = [
        ("INSERT INTO rc VALUES ({k}1, 1), ({k}2, 2), ({k}3, 3)", None),
        ("SELECT ROW_COUNT()", 3),
        ("UPDATE rc SET v = v + 1 WHERE id IN ({k}1, {k}2)", None),
        ("select row_count() AS n", 2),
        ("SELECT COUNT(*) FROM rc", None),
        ("SELECT ROW_COUNT() FROM DUAL;", -1),
        ("DELETE FROM rc WHERE id = {k}3", None),
        ("SELECT 10 + ROW_COUNT()", 11),
        ("UPDATE rc SET v = v WHERE id = {k}1", None),
        ("SELECT ROW_COUNT()", None),  # 0 or 1: depends on CLIENT_FOUND_ROWS; compared with direct
    ]
    a = p.connect(autocommit=True, database=schema)
    try:
        with Load(p, 6, others):
            results = {}
            for name, conn, k in (("proxy", a, 1), ("direct", direct, 2)):
                conn.select_db(schema)
                got = []
                for sql, _ in steps:
                    with conn.cursor() as cur:
                        cur.execute(sql.format(k=k))
                        if sql.upper().startswith("SELECT") and "ROW_COUNT" in sql.upper():
                            got.append(int(cur.fetchone()[0]))
                        time.sleep(0.01)
                results[name] = got
        expected = [want for sql, want in steps if "ROW_COUNT" in sql.upper()]
        assert results["proxy"] == results["direct"], results
        assert [g for g, w in zip(results["proxy"], expected) if w is not None] == [w for w in expected if w is not None]
    finally:
        close(a)


def test_found_rows_after_sql_calc_found_rows(mux_proxy, schema, cluster):
    cluster.primary.sql(f"CREATE TABLE `{schema}`.fr (id INT PRIMARY KEY); INSERT INTO `{schema}`.fr SELECT seq FROM `{schema}`.seq_1_to_40")
    cluster.wait_replicated()
    p = mux_proxy(writer_max=3)

    def others(cur: Any, i: int) -> None:
        # Each of these sets FOUND_ROWS() to 7 on the connection it ran on.
        cur.execute(f"{W}SELECT id FROM `{schema}`.fr WHERE id <= 7")
        assert len(cur.fetchall()) == 7

    a = p.connect(autocommit=True, database=schema)
    try:
        with Load(p, 6, others):
            for total in (25, 31, 12, 40):
                with a.cursor() as cur:
                    cur.execute(f"SELECT SQL_CALC_FOUND_ROWS id FROM fr WHERE id <= {total} ORDER BY id LIMIT 3")
                    assert cur.fetchall() == ((1,), (2,), (3,))
                time.sleep(0.02)  # let the other sessions run a few statements in between
                assert one(a, "SELECT FOUND_ROWS()") == (total,)
    finally:
        close(a)


def test_session_variables_follow_the_session_onto_shared_connections(mux_proxy, ids, cluster):
    # Two writer connections, three sessions with different settings, and other sessions in the
    # background: the sessions see their own settings on connections the others used just before.
    p = mux_proxy(writer_max=2, reader_max=2)
    default_mode = cluster.primary.value("SELECT @@GLOBAL.sql_mode")
    settings = {
        "a": ("+05:00", "PIPES_AS_CONCAT", "latin1"),
        "b": ("-03:00", "ANSI_QUOTES", "latin2"),
    }
    conns = {name: p.connect(autocommit=True) for name in ("a", "b", "c")}
    for name, (tz, mode, names) in settings.items():
        with conns[name].cursor() as cur:
            cur.execute(f"SET time_zone = '{tz}'")
            cur.execute(f"SET sql_mode = '{mode}'")
            cur.execute(f"SET NAMES {names}")
    expect = {**settings, "c": ("SYSTEM", default_mode, "utf8mb4")}
    concat = {"a": "ab", "b": 0, "c": 0}  # || is CONCAT only under PIPES_AS_CONCAT

    def others(cur: Any, i: int) -> None:
        cur.execute(f"{W}SELECT @@session.time_zone, @@session.sql_mode")
        assert cur.fetchone() == ("SYSTEM", default_mode)

    seen: dict[str, set[int]] = {name: set() for name in conns}
    try:
        with Load(p, 2, others):
            for _ in range(15):
                for name, conn in conns.items():
                    tz, mode, names = expect[name]
                    row = one(conn, f"{W}SELECT @@pseudo_thread_id, @@server_id, @@session.time_zone, @@session.sql_mode, @@character_set_client")
                    seen[name].add(row[0])
                    assert row[1:] == (ids["writer"], tz, mode, names), name
                    # On a reader too, and the setting is in force, not just displayed.
                    row = one(conn, "SELECT @@server_id, @@session.time_zone, @@session.sql_mode, @@character_set_client, 'a' || 'b'")
                    assert row[0] in ids["readers"] and row[1:4] == (tz, mode, names), (name, row)
                    assert row[4] in (concat[name], str(concat[name])), (name, row)
    finally:
        close(*conns.values())
    # The same backend connections served all three sessions (and the state was swapped each time).
    assert seen["a"] & seen["b"] and seen["b"] & seen["c"], seen
    assert len(set().union(*seen.values())) <= 2, seen


# -- multiplexing under load ----------------------------------------------------------------------


@pytest.mark.slow
def test_200_clients_share_10_connections_per_server(mux_proxy, schema, cluster):
    rows, clients, statements = 1000, 200, 20
    cluster.primary.sql(f"CREATE TABLE `{schema}`.mt (id INT PRIMARY KEY, v INT NOT NULL DEFAULT 0); INSERT INTO `{schema}`.mt (id) SELECT seq FROM `{schema}`.seq_1_to_{rows}")
    cluster.wait_replicated()
    # Timeouts are generous: 200 sessions log in at once and queue for 10 connections per server on
    # a shared 2-core box; what is asserted is that nobody fails and the cap holds.
    p = mux_proxy(writer_max=10, reader_max=10, pool={"acquire_timeout": 30.0}, proxy_settings={"handshake_timeout": 60})
    errors: list[str] = []
    done = [0] * clients
    updates = [0] * clients
    start = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        rnd = random.Random(i)
        try:
            conn = p.connect(autocommit=True, database=schema, connect_timeout=60)
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {i} connect: {e!r}")
            start.abort()
            return
        try:
            start.wait(120)
            with conn.cursor() as cur:
                for n in range(statements):
                    key = rnd.randint(1, rows)
                    if n % 2:
                        assert cur.execute("UPDATE mt SET v = v + 1 WHERE id = %s", (key,)) == 1
                        updates[i] += 1
                    else:
                        cur.execute("SELECT id, v FROM mt WHERE id = %s", (key,))
                        assert cur.fetchone()[0] == key
                    done[i] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {i}: {e!r}")
        finally:
            close(conn)

    watch = BackendWatch(cluster)
    watch.start()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    try:
        for t in threads:
            t.start()
        started = time.monotonic()
        try:
            start.wait(120)
        except threading.BrokenBarrierError:
            pass  # a client could not connect: its error is asserted below
        for t in threads:
            t.join(120)
        elapsed = time.monotonic() - started
        peak = watch.stop()
    finally:
        watch.close()
    print(f"\n200 clients x {statements} statements in {elapsed:.1f}s; backend connections of the proxy, max seen per server "
          f"({watch.samples} samples): {peak}")
    assert not errors, f"{len(errors)} errors, e.g. {errors[:5]}"
    assert sum(done) == clients * statements
    assert cluster.primary.value(f"SELECT SUM(v) FROM `{schema}`.mt") == str(sum(updates))
    assert all(n <= 10 for n in peak.values()), peak
    assert peak[next(iter(peak))] > 0 and watch.samples > 10, (peak, watch.samples)


# -- transactions hold their connection -----------------------------------------------------------


def test_a_transaction_keeps_its_connection_while_others_run(mux_proxy, schema, cluster):
    cluster.primary.sql(f"CREATE TABLE `{schema}`.tx (id INT PRIMARY KEY, v INT); INSERT INTO `{schema}`.tx SELECT seq, 0 FROM `{schema}`.seq_1_to_20")
    cluster.wait_replicated()
    p = mux_proxy(writer_max=3)
    committed = threading.Event()
    dirty: list[Any] = []

    def others(cur: Any, i: int) -> None:
        cur.execute(f"UPDATE `{schema}`.tx SET v = v + 1 WHERE id = %s", (10 + i,))
        cur.execute(f"{W}SELECT v FROM `{schema}`.tx WHERE id = 1")
        v = cur.fetchone()[0]
        if v != 0 and not committed.is_set():
            dirty.append(v)  # another session saw the uncommitted write

    a = p.connect(autocommit=True, database=schema)
    try:
        with Load(p, 4, others):
            with a.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute("UPDATE tx SET v = 100 WHERE id = 1")
                tid = one(a, f"{W}SELECT @@pseudo_thread_id")[0]
                for n in range(10):
                    cur.execute("INSERT INTO tx VALUES (%s, %s)", (100 + n, n))
                    assert one(a, "SELECT v FROM tx WHERE id = 1") == (100,)  # its own uncommitted write
                    assert one(a, "SELECT COUNT(*) FROM tx WHERE id >= 100") == (n + 1,)
                    assert one(a, f"{W}SELECT @@pseudo_thread_id") == (tid,)
                    time.sleep(0.02)
                committed.set()
                cur.execute("COMMIT")
        assert not dirty, f"other sessions saw uncommitted values: {dirty[:5]}"
        assert cluster.primary.value(f"SELECT CONCAT(v, ',', (SELECT COUNT(*) FROM `{schema}`.tx WHERE id >= 100)) FROM `{schema}`.tx WHERE id = 1") == "100,10"
        # autocommit off (PyMySQL's default): the implicit transaction holds the connection too,
        # and ROLLBACK undoes it.
        b = p.connect(database=schema)
        try:
            with b.cursor() as cur:
                cur.execute("INSERT INTO tx VALUES (500, 5)")
                assert one(b, "SELECT COUNT(*) FROM tx WHERE id = 500") == (1,)
                assert cluster.primary.value(f"SELECT COUNT(*) FROM `{schema}`.tx WHERE id = 500") == "0"
                b.rollback()
            assert one(b, "SELECT COUNT(*) FROM tx WHERE id = 500") == (0,)
        finally:
            close(b)
    finally:
        close(a)


# -- the pool's limits, as errors a user can act on ------------------------------------------------


def test_acquire_timeout_names_the_hostgroup_and_the_wait(mux_proxy):
    p = mux_proxy(writer_max=1, pool={"acquire_timeout": 0.5})
    a, b = p.connect(autocommit=True), p.connect(autocommit=True)  # both logged in before A takes the only connection
    try:
        with a.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(f"{W}SELECT 1")
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as e:
            one(b, f"{W}SELECT 2")
        waited = time.monotonic() - started
        code, message = e.value.args
        assert code == 9001, e.value.args  # ProxySQL's code; never a client-library 2xxx
        assert "hostgroup 0" in message and "waited" in message and "max_connections=1" in message, message
        assert 0.45 <= waited < 5, waited
        with a.cursor() as cur:
            cur.execute("COMMIT")
        # B's session carries on: the connection A gave back is B's now.
        assert one(b, f"{W}SELECT 2") == (2,)
        assert one(a, f"{W}SELECT 3") == (3,)
    finally:
        close(a, b)


@pytest.mark.slow
def test_silent_clients_are_reclaimed_and_pools_shrink_to_min_idle(mux_proxy, cluster):
    cap = 5
    p = mux_proxy(writer_max=cap, reader_max=cap, pool={"min_idle": 1, "idle_timeout": 1.0}, proxy_settings={"client_idle_timeout": 1})
    watch = BackendWatch(cluster)
    watch.start()
    conns: list[Any] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        try:
            c = p.connect(autocommit=True)
            assert one(c, "SELECT @@server_id")[0] > 0
            with lock:
                conns.append(c)
        except Exception as e:  # noqa: BLE001
            errors.append(f"client {i}: {e!r}")

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        last_query = time.monotonic()
        assert not errors and len(conns) == 50, errors[:5]
        # ...and now they say nothing. Each is closed client_idle_timeout after its query (the
        # sweeper looks every 0.25 s).
        eventually(lambda: len(log_lines(p, r"closed: no command for")) >= 50, 4.0, "50 idle sessions closed")
        reclaimed = time.monotonic() - last_query
        print(f"\n50 silent clients closed {reclaimed:.2f}s after their last query")
        assert reclaimed < 3.0, reclaimed
        # Clients are told (ERR 4031; PyMySQL may report the unsolicited ERR as 2013).
        with pytest.raises(pymysql.err.OperationalError) as e:
            one(conns[0], "SELECT 1")
        assert e.value.args[0] in (4031, 2013), e.value.args
        # The proxy holds no session any more (SIGUSR1 lists them).
        p.process.send_signal(signal.SIGUSR1)
        eventually(lambda: log_lines(p, r"\b0 client session\(s\)"), 3.0, "SIGUSR1 report of 0 sessions")
        # The pools shrink to min_idle on every server they used.
        def at_min_idle() -> dict[str, int] | None:
            counts = watch.count()
            return counts if all(n == 1 for n in counts.values()) else None

        settled = eventually(at_min_idle, 6.0, "pools back to min_idle = 1 per server")
        print(f"backend connections of the proxy afterwards: {settled}; max seen during the test: {watch.max}")
        # And the proxy keeps serving, reads and writes.
        fresh = p.connect(autocommit=True)
        try:
            assert one(fresh, "SELECT 1") == (1,)
            assert one(fresh, f"{W}SELECT 2") == (2,)
        finally:
            close(fresh)
        peak = watch.stop()
    finally:
        watch._halt.set()
        watch.close()
        close(*conns)
    assert all(n <= cap for n in peak.values()), peak
