"""The admin listener in process, without database servers: a ProxyApp on a config whose servers are
never contacted, `start_admin` on a free port, real clients (PyMySQL in a thread, raw packets)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

from admin.server import start_admin
from proxy.app import ProxyApp
from proxy.config import parse_config
from proxy.protocol import auth
from proxy.protocol.constants import Capability, ServerStatus
from proxy.protocol.framing import PacketFramer, make_packet
from proxy.protocol.packets import (
    HandshakeResponse41,
    make_handshake_response,
    parse_err,
    parse_handshake_v10,
    parse_ok,
    parse_text_row,
)
from rules.classify import Kind
from rules.digest import fingerprint

RAW = {
    "listeners": {"data": {"port": 1}, "admin": {"port": 1}},
    "admin": {"username": "radmin", "password": "s3cret"},
    "users": [{"username": "app", "password": "app_pw", "default_hostgroup": 0}],
    "servers": [
        {"hostgroup_id": 0, "hostname": "192.0.2.1", "port": 3306},
        {"hostgroup_id": 1, "hostname": "192.0.2.2", "port": 3306},
    ],
    "replication_hostgroups": [{"writer_hostgroup": 0, "reader_hostgroup": 1, "writer_is_also_reader": False}],
}


def run(scenario: Callable[[ProxyApp, int], Any]) -> Any:
    """Start the admin port for a fresh app, run `scenario(app, port)` in a thread (blocking clients), stop."""

    async def main() -> Any:
        app = ProxyApp(parse_config(RAW, "<test>"))
        server = await start_admin(app, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await asyncio.wait_for(asyncio.to_thread(scenario, app, port), 30)
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(main())


def connect(port: int, **kw: Any) -> pymysql.connections.Connection:
    args = {"host": "127.0.0.1", "port": port, "user": "radmin", "password": "s3cret", "connect_timeout": 5, "read_timeout": 10}
    return pymysql.connect(**(args | kw))


def errno_of(cur: Any, sql: str) -> int:
    with pytest.raises(pymysql.MySQLError) as e:
        cur.execute(sql)
    return e.value.args[0]


def test_login_and_select_with_types():
    def scenario(app, port):
        with connect(port) as c, c.cursor() as cur:
            cur.execute("SELECT hostgroup_id, hostname, port FROM runtime_mysql_servers ORDER BY hostgroup_id")
            assert cur.fetchall() == ((0, "192.0.2.1", 3306), (1, "192.0.2.2", 3306))
            cur.execute("SELECT @@version_comment, CONNECTION_ID()")
            assert cur.fetchone()[0] == "rwproxy admin"
            c.ping()
            c.select_db("stats")

    run(scenario)


@pytest.mark.parametrize("user,password", [("radmin", "wrong"), ("admin", "s3cret"), ("radmin", "")])
def test_wrong_login_is_1045(user, password):
    def scenario(app, port):
        with pytest.raises(pymysql.err.OperationalError) as e:
            connect(port, user=user, password=password)
        assert e.value.args[0] == 1045
        assert f"Access denied for user '{user}'" in e.value.args[1]

    run(scenario)


def test_errors_keep_the_session_and_other_sessions():
    def scenario(app, port):
        with connect(port) as c, connect(port) as other, c.cursor() as cur, other.cursor() as ocur:
            assert errno_of(cur, "FROBNICATE everything") == 1064
            assert errno_of(cur, "INSERT INTO mysql_servers (hostgroup_id, hostname, gtid_port) VALUES (1, 'h', 1)") == 1054
            assert errno_of(cur, "INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES (1, 'h', 'abc')") == 3819
            assert errno_of(cur, "DELETE FROM runtime_mysql_servers") == 1142
            assert errno_of(cur, "DROP TABLE mysql_servers") == 1227
            assert errno_of(cur, "KILL 424242") == 1094
            cur.execute("SHOW WARNINGS")
            ((level, code, message),) = cur.fetchall()
            assert (level, code) == ("Error", 1094) and message.startswith("Unknown thread id: 424242")
            cur.execute("SELECT COUNT(*) FROM mysql_servers")
            assert cur.fetchone() == (2,)
            ocur.execute("SELECT COUNT(*) FROM mysql_users")
            assert ocur.fetchone() == (1,)

    run(scenario)


def test_show_warnings_lists_each_validation_error():
    def scenario(app, port):
        with connect(port) as c, c.cursor() as cur:
            cur.execute("INSERT INTO mysql_query_rules (rule_id, match_digest, destination_hostgroup) VALUES (7, '^SELECT (', 0), (8, 'x', 9)")
            with pytest.raises(pymysql.MySQLError) as e:
                cur.execute("LOAD MYSQL QUERY RULES TO RUNTIME")
            assert e.value.args[0] == 1105
            assert "rule_id=7: match_digest: regex does not compile" in e.value.args[1]
            assert "rule_id=8: destination_hostgroup: hostgroup 9 has no server" in e.value.args[1]
            cur.execute("SHOW WARNINGS")
            rows = cur.fetchall()
            assert [r[1] for r in rows] == [1105, 1105]
            assert "rule_id=7" in rows[0][2] and "rule_id=8" in rows[1][2]

    app_before: dict[str, Any] = {}

    def checked(app, port):
        app_before["config"] = app.config
        scenario(app, port)
        assert app.config is app_before["config"]  # refused: the runtime is the same object

    run(checked)


def test_load_to_runtime_swaps_the_config():
    def scenario(app, port):
        with connect(port) as c, c.cursor() as cur:
            cur.execute("INSERT INTO mysql_servers (hostgroup_id, hostname, port, weight) VALUES (1, '192.0.2.3', 3307, 5)")
            assert cur.rowcount == 1
            cur.execute("DIFF MYSQL SERVERS")
            assert cur.fetchall() == (("mysql_servers", "added", "hostgroup_id=1,hostname=192.0.2.3,port=3307", ""),)
            cur.execute("LOAD MYSQL SERVERS TO RUN")  # ProxySQL's alias
            assert ("192.0.2.3", 3307, 5) in [(s.hostname, s.port, s.weight) for s in app.config.servers]
            cur.execute("SELECT COUNT(*) FROM runtime_mysql_servers")
            assert cur.fetchone() == (3,)
            cur.execute("DIFF MYSQL SERVERS")
            assert cur.fetchall() == ()

    run(scenario)


def _statement(app: ProxyApp, sql: str, hostgroup: int, n: int, user: str = "app") -> None:
    srv = app.stats.server(hostgroup, "192.0.2.1:3306" if hostgroup == 0 else "192.0.2.2:3306")
    fp = fingerprint(sql)
    for _ in range(n):
        app.stats.statement_done(srv, fp, Kind.SELECT, "shop", user, (), time.monotonic_ns() - 1000)


def test_stats_tables_take_any_select_and_reset_clears():
    def scenario(app, port):
        _statement(app, "SELECT * FROM orders WHERE id = 1", 1, 5)
        _statement(app, "SELECT * FROM users WHERE id = 2", 1, 3)
        _statement(app, "UPDATE t SET a = 1", 0, 2)
        with connect(port) as c, c.cursor() as cur:
            cur.execute("SELECT digest_text, count_star FROM stats.stats_mysql_query_digest WHERE hostgroup = 1 ORDER BY count_star DESC LIMIT 1")
            assert cur.fetchall() == ((fingerprint("SELECT * FROM orders WHERE id = 1").text, 5),)
            cur.execute("SELECT COUNT(*), SUM(count_star) FROM stats_mysql_query_digest")
            assert cur.fetchone() == (3, 10)
            cur.execute("SELECT hostgroup, srv_host, Queries FROM stats_mysql_connection_pool ORDER BY hostgroup")
            assert cur.fetchall() == ((0, "192.0.2.1", 2), (1, "192.0.2.2", 8))
            cur.execute("SELECT SUM(count_star) FROM stats_mysql_query_digest_reset")
            assert cur.fetchone() == (10,)
            cur.execute("SELECT COUNT(*) FROM stats_mysql_query_digest")
            assert cur.fetchone() == (0,)
            assert errno_of(cur, "DELETE FROM stats_mysql_query_digest") == 1142
            cur.execute("SHOW TABLES FROM stats")
            assert ("stats_mysql_processlist",) in cur.fetchall()
            cur.execute("SHOW MYSQL STATUS")
            assert ("Questions", "10") in cur.fetchall()

    run(scenario)


def test_explain_route_and_diff_routes():
    def scenario(app, port):
        _statement(app, "SELECT * FROM orders WHERE id = 1", 1, 4)
        with connect(port) as c, c.cursor() as cur:
            cur.execute("EXPLAIN ROUTE SELECT * FROM orders WHERE id = 7")
            steps = dict(cur.fetchall())
            assert steps["decision"] == "route to hostgroup 1"
            cur.execute("DIFF MYSQL ROUTES")
            assert cur.fetchall() == ()
            cur.execute("INSERT INTO mysql_query_rules (rule_id, match_digest, destination_hostgroup, apply) VALUES (1, 'FROM orders', 0, 1)")
            cur.execute("DIFF MYSQL ROUTES")
            rows = cur.fetchall()
            cols = [d[0] for d in cur.description]
            assert len(rows) == 1
            row = dict(zip(cols, rows[0]))
            assert (row["digest_text"], row["count_star"], row["runtime_destination"], row["memory_destination"], row["memory_rules"]) == (
                fingerprint("SELECT * FROM orders WHERE id = 1").text, 4, "hostgroup 1", "hostgroup 0", "1")

    run(scenario)


# ---- raw protocol: what drivers rarely send -------------------------------------------------------


class RawClient:
    def __init__(self, port: int, caps: int = Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH, plugin: str = "mysql_native_password") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.framer = PacketFramer()
        hs = parse_handshake_v10(self.read().payload)
        self.server_caps = hs.capabilities
        token = auth.native_token("s3cret", hs.auth_data) if plugin == "mysql_native_password" else b"\x01" * 32
        self.sock.sendall(make_packet(make_handshake_response(HandshakeResponse41(caps, 1 << 24, 45, "radmin", token, None, plugin)), 1))
        reply = self.read()
        if reply.payload[0] == 0xFE:  # AuthSwitchRequest
            scramble = bytes(reply.payload[1:]).split(b"\0", 1)[1].rstrip(b"\0")
            self.sock.sendall(make_packet(auth.native_token("s3cret", scramble), reply.seq + 1))
            reply = self.read()
        assert reply.payload[0] == 0x00, parse_err(reply.payload)
        self.caps = caps

    def read(self):
        while True:
            p = self.framer.next_packet()
            if p is not None:
                return p
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.framer.feed(data)

    def command(self, payload: bytes):
        self.sock.sendall(make_packet(payload, 0))
        return self.read()


def test_unknown_command_is_1047_field_list_is_empty_and_quit_closes():
    def scenario(app, port):
        c = RawClient(port)
        err = parse_err(c.command(b"\x09").payload)  # COM_STATISTICS
        assert err.code == 1047 and "COM_STATISTICS" in err.message
        p = c.command(b"\x04mysql_servers\0")  # COM_FIELD_LIST
        assert bytes(p.payload[:1]) == b"\xfe" and len(p.payload) == 5  # EOF, no fields
        assert c.command(b"\x0e").payload[0] == 0x00  # COM_PING
        err = parse_err(c.command(b"\x02nosuchdb").payload)  # COM_INIT_DB
        assert err.code == 1049
        c.sock.sendall(make_packet(b"\x01", 0))  # COM_QUIT
        assert c.sock.recv(10) == b""

    run(scenario)


def test_deprecate_eof_client_gets_ok_terminators():
    def scenario(app, port):
        caps = Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH | Capability.DEPRECATE_EOF
        c = RawClient(port, caps)
        assert c.server_caps & Capability.DEPRECATE_EOF
        first = c.command(b"\x03SELECT hostname FROM mysql_servers ORDER BY hostname")
        assert bytes(first.payload) == b"\x01"
        c.read()  # the column definition; no EOF follows
        rows = [parse_text_row(c.read().payload, 1) for _ in range(2)]
        assert rows == [[b"192.0.2.1"], [b"192.0.2.2"]]
        end = c.read()
        assert end.payload[0] == 0xFE and parse_ok(end.payload, caps).status & ServerStatus.AUTOCOMMIT
        assert c.command(b"\x0e").payload[0] == 0x00  # the stream is in step

    run(scenario)


def test_client_offering_another_plugin_is_switched_to_native():
    def scenario(app, port):
        c = RawClient(port, plugin="caching_sha2_password")
        assert c.command(b"\x0e").payload[0] == 0x00

    run(scenario)


def test_ok_info_message_reaches_the_client():
    def scenario(app, port):
        with connect(port) as c, c.cursor() as cur:
            cur.execute("SET mysql-max_connections = 50")
            assert "LOAD MYSQL VARIABLES TO RUNTIME" in c._result.message.decode()
            cur.execute("LOAD MYSQL VARIABLES TO RUNTIME")
            assert app.config.max_connections == 50

    run(scenario)


def test_handshake_timeout_closes_a_silent_client():
    raw = {**RAW, "proxy": {"handshake_timeout": 0.2}}

    async def main() -> None:
        app = ProxyApp(parse_config(raw, "<test>"))
        server = await start_admin(app, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            data = await asyncio.wait_for(reader.read(), 5)  # greeting, ERR 1159, then EOF
            framer = PacketFramer()
            framer.feed(data)
            framer.next_packet()
            err = parse_err(framer.next_packet().payload)
            assert err.code == 1159
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_closing_the_server_closes_its_sessions():
    async def main() -> None:
        app = ProxyApp(parse_config(RAW, "<test>"))
        server = await start_admin(app, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.read(1)
        server.close()
        assert await asyncio.wait_for(reader.read(), 5) is not None
        assert reader.at_eof()
        writer.close()
        await server.wait_closed()

    asyncio.run(main())



# ---- the entry point's startup: which source per section ----------------------------------------


CONFIG_TOML = """
[listeners.data]
port = 1
[listeners.admin]
port = 2
[admin]
data_dir = "{data_dir}"
[[users]]
username = "app"
password = "pw"
[[servers]]
hostgroup_id = 0
hostname = "192.0.2.1"
"""


def _startup(path, initial=False):
    from proxy.__main__ import _admin_startup
    from proxy.config import load_config

    return _admin_startup(str(path), load_config(path), initial)


def test_startup_precedence_is_printed_and_saved_sections_win(tmp_path, caplog):
    from admin.commands import Section

    path = tmp_path / "p.toml"
    path.write_text(CONFIG_TOML.format(data_dir=tmp_path))
    with caplog.at_level("INFO", logger="rwproxy.startup"):
        config, store = _startup(path)
    assert f"MYSQL QUERY RULES: from the config file {path} (never saved to the disk layer {tmp_path}/rwproxy.db)" in caplog.messages
    assert not config.ruleset.rules
    assert store.rows("mysql_users", store_layer("RUNTIME"))[0]["username"] == "app"  # runtime_* filled
    store.execute("INSERT INTO mysql_query_rules (rule_id, match_digest, destination_hostgroup, apply) VALUES (5, 'x', 0, 1)")
    store.save_to_disk(Section.QUERY_RULES)
    store.close()

    caplog.clear()
    with caplog.at_level("INFO", logger="rwproxy.startup"):
        config, store = _startup(path)
    store.close()
    assert [r.rule_id for r in config.ruleset.rules] == [5]
    text = "\n".join(caplog.messages)
    assert f"MYSQL QUERY RULES: from the disk layer {tmp_path}/rwproxy.db" in text
    assert "MYSQL QUERY RULES: the config file" in text and "is NOT used for this section" in text  # a WARNING
    assert any(r.levelname == "WARNING" for r in caplog.records)
    assert f"MYSQL SERVERS: from the config file {path}" in text

    caplog.clear()
    with caplog.at_level("INFO", logger="rwproxy.startup"):
        config, store = _startup(path, initial=True)  # --initial: the file for everything
    store.close()
    assert not config.ruleset.rules
    assert "--initial: the disk layer's copy saved" in "\n".join(caplog.messages)


def test_startup_refuses_a_disk_layer_that_does_not_validate(tmp_path, capsys):
    from admin.commands import Section

    path = tmp_path / "p.toml"
    path.write_text(CONFIG_TOML.format(data_dir=tmp_path))
    _, store = _startup(path)
    store.execute("INSERT INTO mysql_query_rules (rule_id, match_digest, destination_hostgroup) VALUES (5, 'x', 9), (6, '(', 0)")
    store.save_to_disk(Section.QUERY_RULES)
    store.close()
    assert _startup(path) is None
    err = capsys.readouterr().err
    assert "startup (LOAD MYSQL ALL TO RUNTIME) refused, runtime unchanged: 2 errors" in err
    assert "rule_id=5: destination_hostgroup: hostgroup 9 has no server" in err and "rule_id=6: match_digest" in err
    assert "--initial" in err
    _, store = _startup(path, initial=True)  # the way out
    store.close()


def test_startup_with_a_missing_data_dir_says_so(tmp_path, capsys):
    path = tmp_path / "p.toml"
    path.write_text(CONFIG_TOML.format(data_dir=tmp_path / "nowhere"))
    assert _startup(path) is None
    assert "data directory" in capsys.readouterr().err


def store_layer(name):
    from admin.commands import Layer

    return Layer[name]
