"""The scanner agrees with a real server about where every kind of reply ends.

Each case sends one command on a real backend connection (opened by proxy.backend, with and without
CLIENT_DEPRECATE_EOF) and relays the reply into a collector. The reply must be reported complete, no
byte may arrive after it, and a COM_PING right after must get its own OK — proof that the scanner
stopped exactly at the end. This pins down vendor quirks (MariaDB's prepare and cursor replies).
"""

from __future__ import annotations

import asyncio
import struct

import pytest

from proxy import backend
from proxy.config import Server
from proxy.protocol.constants import Capability, Command, ServerStatus
from proxy.protocol.framing import make_packet
from proxy.protocol.results import Reply, ResultScanner, execute_reply

BASE_CAPS = Capability.MULTI_STATEMENTS | Capability.MULTI_RESULTS | Capability.PS_MULTI_RESULTS | Capability.SESSION_TRACK | Capability.LOCAL_FILES


class Collector:
    def __init__(self) -> None:
        self.data = bytearray()
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.scanner: ResultScanner | None = None

    def relay(self, data: bytes) -> None:
        self.data += data

    def reply_done(self, scanner: ResultScanner) -> None:
        self.scanner = scanner
        if not self.done.done():
            self.done.set_result(scanner)

    def infile_requested(self) -> None:
        self.done.set_result("infile")

    def backend_lost(self, b, exc) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"lost: {exc}"))

    def backend_write_paused(self, paused: bool) -> None:
        pass


async def run(conn: backend.BackendConnection, payload: bytes, reply: Reply, deprecate: bool) -> tuple[ResultScanner, bytes]:
    col = Collector()
    conn.attach(col)
    sc = ResultScanner(reply, deprecate)
    if reply is Reply.NONE:
        conn.write(make_packet(payload, 0))
        return sc, b""
    conn.relay(make_packet(payload, 0), sc)
    await asyncio.wait_for(col.done, 5)
    await asyncio.sleep(0.05)
    return sc, bytes(col.data)


async def ping_ok(conn: backend.BackendConnection, deprecate: bool) -> None:
    sc, data = await run(conn, bytes((Command.PING,)), Reply.SIMPLE, deprecate)
    assert data[4] == 0x00, f"PING answered {data!r}: the previous reply was not fully consumed"


def query(sql: str) -> bytes:
    return bytes((Command.QUERY,)) + sql.encode()


@pytest.mark.parametrize("deprecate", [False, True], ids=["eof", "deprecate_eof"])
def test_reply_shapes_against_real_server(cluster, deprecate):
    p = cluster.primary
    server = Server(0, p.host, p.port)
    caps = BASE_CAPS | (Capability.DEPRECATE_EOF if deprecate else 0)

    async def main() -> None:
        conn = await backend.connect(server, cluster.app_user, cluster.app_password, database=None, client_capabilities=caps, collation=45, attributes={}, timeout=5)
        assert bool(conn.capabilities & Capability.DEPRECATE_EOF) == deprecate
        # text results, multi-statements, errors, empty results
        for sql in ("SELECT 1, 'a', NULL", "SELECT 1 FROM DUAL WHERE 0", "SELECT 1; SELECT 2, 3; DO 1", "SELECT * FROM no_such_db.t", "DO 1", "SELECT seq FROM seq_1_to_3000"):
            sc, data = await run(conn, query(sql), Reply.RESULT, deprecate)
            assert sc.done and data
            await ping_ok(conn, deprecate)
        await run(conn, query("CREATE DATABASE IF NOT EXISTS shapes"), Reply.RESULT, deprecate)
        await run(conn, query("CREATE OR REPLACE PROCEDURE shapes.two() BEGIN SELECT 1; SELECT 2, 3; END"), Reply.RESULT, deprecate)
        sc, _ = await run(conn, query("CALL shapes.two()"), Reply.RESULT, deprecate)
        assert sc.results == 3  # two result sets and the CALL's own OK
        await ping_ok(conn, deprecate)
        # Compound statements and stored programs with a cursor loop: one result per SELECT they
        # run, with SERVER_STATUS_CURSOR_EXISTS in the column EOF (MariaDB), rows after it.
        await run(conn, query("CREATE OR REPLACE TABLE shapes.cs (n VARCHAR(10))"), Reply.RESULT, deprecate)
        await run(conn, query("INSERT INTO shapes.cs VALUES ('a'), ('b'), ('c')"), Reply.RESULT, deprecate)
        loop = "FOR rec IN (SELECT n FROM shapes.cs) DO EXECUTE IMMEDIATE CONCAT('SELECT ''', rec.n, ''' AS x LIMIT {}'); END FOR;"
        for limit, rows in ((0, 0), (1, 1)):
            sc, data = await run(conn, query(f"BEGIN NOT ATOMIC {loop.format(limit)} END"), Reply.RESULT, deprecate)
            assert sc.error is None and sc.results == 4  # three results and the block's OK
            assert data.count(b"\x01a") == rows
            await ping_ok(conn, deprecate)
        await run(conn, query(f"CREATE OR REPLACE PROCEDURE shapes.loop() BEGIN {loop.format(1)} SELECT COUNT(*) FROM shapes.cs; END"), Reply.RESULT, deprecate)
        sc, _ = await run(conn, query("CALL shapes.loop()"), Reply.RESULT, deprecate)
        assert sc.error is None and sc.results == 5
        await ping_ok(conn, deprecate)
        # COM_INIT_DB, COM_FIELD_LIST, COM_STATISTICS, COM_SET_OPTION, COM_RESET_CONNECTION
        sc, _ = await run(conn, bytes((Command.INIT_DB,)) + b"shapes", Reply.SIMPLE, deprecate)
        assert sc.error is None
        await run(conn, query("CREATE OR REPLACE TABLE f (a INT, b TEXT)"), Reply.RESULT, deprecate)
        sc, data = await run(conn, bytes((Command.FIELD_LIST,)) + b"f\0", Reply.FIELDS, deprecate)
        assert b"\x01a" in data and b"\x01b" in data
        await ping_ok(conn, deprecate)
        sc, data = await run(conn, bytes((Command.STATISTICS,)), Reply.ANY_ONE, deprecate)
        assert b"Uptime" in data
        await ping_ok(conn, deprecate)
        sc, _ = await run(conn, bytes((Command.SET_OPTION,)) + struct.pack("<H", 0), Reply.SIMPLE, deprecate)
        await ping_ok(conn, deprecate)
        sc, _ = await run(conn, bytes((Command.RESET_CONNECTION,)), Reply.SIMPLE, deprecate)
        await ping_ok(conn, deprecate)
        await run(conn, bytes((Command.INIT_DB,)) + b"shapes", Reply.SIMPLE, deprecate)
        # prepared statements: prepare with params and columns, execute, cursor + fetch, close
        sc, _ = await run(conn, bytes((Command.STMT_PREPARE,)) + b"SELECT seq, ? FROM seq_1_to_10 WHERE seq > ?", Reply.PREPARE, deprecate)
        assert sc.error is None and sc.stmt_id
        await ping_ok(conn, deprecate)
        stmt = sc.stmt_id
        params = struct.pack("<IBI", stmt, 0, 1) + b"\x00" + b"\x01" + b"\x08\x00\x08\x00" + struct.pack("<qq", 7, 2)
        sc, data = await run(conn, bytes((Command.STMT_EXECUTE,)) + params, Reply.RESULT, deprecate)
        assert sc.error is None and sc.results == 1
        await ping_ok(conn, deprecate)
        cursor = struct.pack("<IBI", stmt, 1, 1) + b"\x00" + b"\x01" + b"\x08\x00\x08\x00" + struct.pack("<qq", 7, 2)
        sc, _ = await run(conn, bytes((Command.STMT_EXECUTE,)) + cursor, execute_reply(bytes((Command.STMT_EXECUTE,)) + cursor), deprecate)
        assert sc.status & ServerStatus.CURSOR_EXISTS
        await ping_ok(conn, deprecate)
        fetched = 0
        while True:
            sc, data = await run(conn, bytes((Command.STMT_FETCH,)) + struct.pack("<II", stmt, 3), Reply.FETCH, deprecate)
            assert sc.error is None
            fetched += 1
            if sc.status & ServerStatus.LAST_ROW_SENT:
                break
        assert fetched == 3  # 8 rows, 3 per fetch
        await ping_ok(conn, deprecate)
        sc, _ = await run(conn, bytes((Command.STMT_RESET,)) + struct.pack("<I", stmt), Reply.SIMPLE, deprecate)
        await run(conn, bytes((Command.STMT_CLOSE,)) + struct.pack("<I", stmt), Reply.NONE, deprecate)
        await ping_ok(conn, deprecate)
        sc, _ = await run(conn, bytes((Command.STMT_PREPARE,)) + b"DO ?", Reply.PREPARE, deprecate)
        await ping_ok(conn, deprecate)
        sc, _ = await run(conn, bytes((Command.STMT_PREPARE,)) + b"SELEKT", Reply.PREPARE, deprecate)
        assert sc.error is not None
        await ping_ok(conn, deprecate)
        # transaction status flags come from the server
        sc, _ = await run(conn, query("BEGIN"), Reply.RESULT, deprecate)
        assert sc.status & ServerStatus.IN_TRANS
        sc, _ = await run(conn, query("SELECT 1"), Reply.RESULT, deprecate)
        assert sc.status & ServerStatus.IN_TRANS
        sc, _ = await run(conn, query("COMMIT"), Reply.RESULT, deprecate)
        assert not sc.status & ServerStatus.IN_TRANS
        conn.close()

    asyncio.run(main())
