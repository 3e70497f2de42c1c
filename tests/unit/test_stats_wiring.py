"""The data path's stats hooks (proxy.command_loop / proxy.backend -> proxy.stats), without servers.

A ClientSession is driven with whole command packets; its backend connections have a fake transport
that answers every command at once with canned reply bytes, so each statement runs the real hot path
(_dispatch -> _query/_run -> _start -> BackendConnection.relay/data_received -> reply_done).
"""

from __future__ import annotations

import time

from proxy.app import ProxyApp
from proxy.backend import BackendConnection
from proxy.client import ClientSession
from proxy.config import parse_config
from proxy.protocol.constants import MIRRORED_CAPABILITIES, PROXY_CAPABILITIES, Capability
from proxy.session import ConnState, SessionState
from rules.digest import fingerprint


def pkt(payload: bytes, seq: int) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes((seq,)) + payload


EOF_PKT = b"\xfe\x00\x00\x02\x00"
COLDEF = b"\x03def\x00\x00\x00\x01c\x01c\x0c\x2d\x00\x78\x00\x00\x00\xfe\x00\x00\x00\x00\x00"
ROWS = b"".join(pkt(p, i + 1) for i, p in enumerate([b"\x01", COLDEF, EOF_PKT, b"\x01x", EOF_PKT]))
OK_3_ROWS = pkt(b"\x00\x03\x00\x02\x00\x00\x00", 1)  # 3 affected rows
ERR_1146 = pkt(b"\xff\x7a\x04#42S02Table 'db.nope' doesn't exist", 1)
ERR_1049 = pkt(b"\xff\x19\x04#42000Unknown database 'nope'", 1)
PREPARED = pkt(b"\x00" + (7).to_bytes(4, "little") + b"\x01\x00\x01\x00\x00\x00\x00", 1) + b"".join(
    pkt(p, i + 2) for i, p in enumerate([COLDEF, EOF_PKT, COLDEF, EOF_PKT])
)


class FakeClient:
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    def get_extra_info(self, name, default=None):
        return default

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class FakeServer:
    """A backend connection's transport: answers each command with `reply` (by default a 1-row result)."""

    def __init__(self, conn: BackendConnection) -> None:
        self.conn = conn
        self.reply = ROWS
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))
        if data[4] in (0x18, 0x19):  # COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE: a server says nothing
            return
        reply, self.reply = self.reply, ROWS
        self.conn.data_received(reply)

    def get_extra_info(self, name, default=None):
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_session(split: bool, rules: list[dict] | None = None) -> tuple[ProxyApp, ClientSession, dict[int, FakeServer]]:
    servers = [{"hostgroup_id": 0, "hostname": "127.0.0.1", "port": 3306}]
    raw = {"proxy": {}, "listeners": {"data": {"port": 6033}}, "users": [{"username": "app", "password": "pw"}], "servers": servers}
    if split:
        raw["servers"] = servers + [{"hostgroup_id": 1, "hostname": "127.0.0.2", "port": 3306}]
        raw["replication_hostgroups"] = [{"writer_hostgroup": 0, "reader_hostgroup": 1, "writer_is_also_reader": False}]
    if rules:
        raw["query_rules"] = rules
    app = ProxyApp(parse_config(raw))
    sess = ClientSession(app)
    sess.transport = FakeClient()
    sess.user, sess.username, sess.writer_hg = app.config.users["app"], "app", 0
    sess.capabilities = PROXY_CAPABILITIES & ~Capability.DEPRECATE_EOF
    sess.collation = 45
    sess.lending.wire = (sess.capabilities & MIRRORED_CAPABILITIES, 45)
    sess.state = SessionState("db", 45)
    sess.busy, sess.logged_in = False, True
    fakes = {}
    for server in app.config.servers:
        conn = BackendConnection(server)
        conn.transport = fakes[server.hostgroup_id] = FakeServer(conn)
        conn.cstate = ConnState(login_collation=45, set_up=True)
        sess.state.mark_synced(conn.cstate)
        pool = sess.lending.pool(server)
        conn.pool, conn.born, conn.lifetime = pool, time.monotonic(), 1e9
        pool.budget.open += 1
        if sess.multiplexing:
            pool.idle.append((conn, time.monotonic() + 1e6))
        else:
            pool.lent += 1
            sess.lending.take(conn, server.hostgroup_id)
    return app, sess, fakes


def query(sess: ClientSession, sql: str) -> None:
    sess.data_received(pkt(b"\x03" + sql.encode(), 0))
    assert not sess.busy


def digest_rows(app: ProxyApp) -> dict[str, tuple]:
    """digest_text -> (hostgroup, count_star, sum_rows_affected)."""
    return {r[5]: (r[0], r[6], r[12]) for r in app.stats.query_digest().rows}


def test_passthrough_counts_every_query_under_its_digest():
    app, sess, fakes = make_session(split=False)
    assert sess.passthrough
    for i in range(3):
        query(sess, f"SELECT c FROM t WHERE id = {i}")
    fakes[0].reply = OK_3_ROWS
    query(sess, "UPDATE t SET c = 1 WHERE id = 9")
    rows = digest_rows(app)
    assert rows[fingerprint("SELECT c FROM t WHERE id = 1").text] == (0, 3, 0)
    assert rows[fingerprint("UPDATE t SET c = 1 WHERE id = 9").text] == (0, 1, 3)
    assert app.stats.statements_by_kind() == {(0, "SELECT"): 3, (0, "UPDATE"): 1}
    srv = app.stats.server(0, "127.0.0.1:3306")
    assert srv.queries == 4 and sess.conns[0].stats is srv
    assert srv.bytes_sent == sum(len(s) for s in fakes[0].sent)
    assert srv.bytes_recv == 3 * len(ROWS) + len(OK_3_ROWS)
    assert sess.current_sql is None and sess.commands.stat is None  # let go at reply end


def test_current_sql_is_set_while_the_statement_runs():
    _, sess, fakes = make_session(split=False)
    seen = []
    conn = sess.conns[0]

    def write(data: bytes) -> None:  # the server has the statement: the session is mid-reply
        seen.append((sess.current_sql, sess.busy))
        conn.data_received(ROWS)

    fakes[0].write = write
    query(sess, "SELECT 'in flight'")
    assert seen == [("SELECT 'in flight'", True)]
    assert sess.current_sql is None


def test_prepared_executes_count_under_the_prepare_digest_without_multiplexing():
    app, sess, fakes = make_session(split=False)
    fakes[0].reply = PREPARED
    sess.data_received(pkt(b"\x16SELECT c FROM t WHERE id = ?", 0))
    assert not sess.busy and app.stats.digest_count == 0  # a PREPARE is not a statement
    execute = pkt(b"\x17" + (7).to_bytes(4, "little") + b"\x00\x01\x00\x00\x00\x00\x01\x08\x00" + (5).to_bytes(8, "little"), 0)
    for _ in range(4):
        sess.data_received(execute)
    assert digest_rows(app) == {fingerprint("SELECT c FROM t WHERE id = ?").text: (0, 4, 0)}
    sess.data_received(pkt(b"\x19" + (7).to_bytes(4, "little"), 0))  # COM_STMT_CLOSE
    assert sess.prepared.classes == {}


def test_split_routes_count_per_hostgroup_and_local_answers_in_minus_one():
    rules = [{"rule_id": 4, "match_pattern": "^SELECT 'no'", "error_msg": "refused", "apply": True}]
    app, sess, fakes = make_session(split=True, rules=rules)
    query(sess, "SELECT c FROM t WHERE id = 1")
    fakes[0].reply = OK_3_ROWS
    query(sess, "DELETE FROM t WHERE id = 1")
    query(sess, "SELECT 'no'")
    by_kind = app.stats.statements_by_kind()
    assert by_kind == {(1, "SELECT"): 1, (0, "DELETE"): 1, (-1, "SELECT"): 1}
    assert app.stats.rule_hits == {4: 1}
    assert app.stats.errors == {1148: 1}
    assert app.stats.server(1, "127.0.0.2:3306").acquire_immediate == 1  # pooled, lent at once
    assert app.stats.server(0, "127.0.0.1:3306").acquire_immediate == 1
    assert app.stats.local.queries == 1


def test_server_errors_are_counted_once_by_code():
    app, sess, fakes = make_session(split=False)
    fakes[0].reply = ERR_1146
    query(sess, "SELECT * FROM nope")
    assert app.stats.errors == {1146: 1}
    assert digest_rows(app)[fingerprint("SELECT * FROM nope").text][1] == 1  # still a statement
    fakes[0].reply = ERR_1049
    sess.data_received(pkt(b"\x02nope", 0))  # COM_INIT_DB: not a statement, its ERR still counts
    assert not sess.busy
    assert app.stats.errors == {1146: 1, 1049: 1}
    assert app.stats.questions() == 1


def test_client_connections_aborted_unless_they_quit():
    app, sess, _ = make_session(split=True)  # (multiplexing: no backend connection held at rest)
    sess.data_received(pkt(b"\x01", 0))  # COM_QUIT: not aborted
    assert app.stats.clients_aborted == 0
    other = ClientSession(app)
    other.transport = FakeClient()
    other.connection_lost(None)  # dropped without COM_QUIT
    assert app.stats.clients_aborted == 1
