"""The per-connection prepared-statement cap holds under load: however many statements 200 clients
prepare, each server's Prepared_stmt_count stays within [pool] max_prepared_statements × the proxy's
backend connections to it.

Under multiplexing a client's statement is prepared lazily on whichever backend connection executes
it, and a connection keeps at most `max_prepared_statements` of them (least recently used closed
first); a client's COM_STMT_CLOSE only forgets the statement on the client's side. So the servers'
statement count is bounded by the cap times the proxy's connections, not by what the clients do.

The clients really send COM_STMT_PREPARE / COM_STMT_EXECUTE / COM_STMT_CLOSE (binary protocol): a
small asyncio client in this module (logged in by `tests.rawclient.Raw`, then handed to asyncio),
because 200 Python threads sharing one GIL with a sampler could not push 100,000 cycles through in a
reasonable time on a 2-core box. Statement texts vary (a few hot texts and many cold ones, reads and
writes), so a connection's cache keeps evicting. Every execute's result is checked against the value
computed from the statement, reads must have run on a replica (@@server_id), writes on the primary
(the final table contents).

`RWPROXY_PREPARED_CAP_CYCLES` sets the number of cycles (default 100,000, the acceptance figure).
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pymysql
import pytest
import uvloop

from tests.integration import test_multiplexing as mux
from tests.rawclient import Err, Raw, parse_err

# The multiplexing tests' fixtures (a proxy logging in to the servers as `mux`, whose PROCESSLIST
# rows are therefore exactly this proxy's connections), registered in this module too.
mux_user, mux_proxy = mux.mux_user, mux.mux_proxy

CLIENTS = 200
CYCLES = int(os.environ.get("RWPROXY_PREPARED_CAP_CYCLES", "100000"))
MAX_PREPARED = 8  # [pool] max_prepared_statements
CAP = 4  # [[servers]] max_connections, every server
ROWS = 1000  # table pc: id 1..ROWS, v = 7 * id (never written: reads may go to any replica)
VARIANTS = 64  # statement texts per template; with 4 templates, 256 distinct texts
TIMEOUT = 600  # seconds for all the cycles (about 35 s on a quiet 2-core box)
HOT = 3  # variants 0..HOT-1 are drawn half of the time: repeated texts, cache hits


# -- a prepared-statement client on asyncio -------------------------------------------------------


class ServerError(Exception):
    def __init__(self, err: Err) -> None:
        super().__init__(f"{err.code} ({err.sqlstate}): {err.message}")
        self.err = err


def lenenc(buf: bytes, pos: int) -> tuple[int, int]:
    """A length-encoded integer at `pos`: (value, position after it)."""
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
    return int.from_bytes(buf[pos + 1 : pos + 1 + size], "little"), pos + 1 + size


def column_type(coldef: bytes) -> tuple[int, bool]:
    """(type, unsigned) of a ColumnDefinition41: six length-encoded strings, then the fixed fields."""
    pos = 0
    for _ in range(6):
        n, pos = lenenc(coldef, pos)
        pos += n
    pos += 1  # length of the fixed-length fields (0x0c)
    return coldef[pos + 6], bool(int.from_bytes(coldef[pos + 7 : pos + 9], "little") & 0x20)


INT_SIZES = {1: 1, 2: 2, 13: 2, 3: 4, 9: 4, 8: 8}  # TINY, SHORT, YEAR, LONG, INT24, LONGLONG


def binary_row(p: bytes, types: list[tuple[int, bool]]) -> tuple[Any, ...]:
    """A binary-protocol result row: 0x00, NULL bitmap (offset 2), values. Integers as int,
    FLOAT/DOUBLE as float, everything else (DECIMAL, strings, temporal) as str."""
    bitmap = (len(types) + 9) // 8
    pos = 1 + bitmap
    out: list[Any] = []
    for i, (t, unsigned) in enumerate(types):
        if p[1 + (i + 2) // 8] >> ((i + 2) % 8) & 1:
            out.append(None)
        elif t in INT_SIZES:
            size = INT_SIZES[t]
            out.append(int.from_bytes(p[pos : pos + size], "little", signed=not unsigned))
            pos += size
        elif t in (4, 5):
            fmt = "<f" if t == 4 else "<d"
            out.append(struct.unpack_from(fmt, p, pos)[0])
            pos += struct.calcsize(fmt)
        else:
            n, pos = lenenc(p, pos)
            out.append(bytes(p[pos : pos + n]).decode())
            pos += n
    return tuple(out)


class StmtClient:
    """One client session: logged in by `Raw` (blocking), then COM_STMT_* over asyncio streams
    (no CLIENT_DEPRECATE_EOF: Raw does not ask for it, so result metadata ends with EOF packets)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int, database: str) -> StmtClient:
        def login() -> Raw:
            raw = Raw(host, port, timeout=60)
            raw.login(database=database)
            assert not raw.buf, raw.buf
            return raw

        raw = await asyncio.to_thread(login)
        raw.sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=raw.sock)
        return cls(reader, writer)

    def send(self, payload: bytes) -> None:
        self.writer.write(len(payload).to_bytes(3, "little") + b"\0" + payload)  # every command starts at seq 0

    async def packet(self) -> bytes:
        head = await self.reader.readexactly(4)
        p = await self.reader.readexactly(int.from_bytes(head[:3], "little"))
        if p[:1] == b"\xff":
            raise ServerError(parse_err(p))
        return p

    async def eof(self) -> None:
        p = await self.packet()
        assert p[0] == 0xFE and len(p) < 9, f"expected EOF, got {p[:20]!r}"

    async def prepare(self, sql: str) -> tuple[int, int]:
        """COM_STMT_PREPARE: (statement id, parameter count)."""
        self.send(b"\x16" + sql.encode())
        p = await self.packet()
        stmt_id, columns, params = struct.unpack_from("<IHH", p, 1)
        for n in (params, columns):
            for _ in range(n):
                await self.packet()
            if n:
                await self.eof()
        return stmt_id, params

    async def execute(self, stmt_id: int, params: list[int]) -> list[tuple[Any, ...]] | int:
        """COM_STMT_EXECUTE with BIGINT parameters: the rows, or the affected-row count of an OK."""
        body = b"\x17" + struct.pack("<IBI", stmt_id, 0, 1)
        if params:
            body += bytes((len(params) + 7) // 8) + b"\x01" + b"\x08\x00" * len(params)
            body += b"".join(struct.pack("<q", v) for v in params)
        self.send(body)
        p = await self.packet()
        if p[0] == 0x00:
            return lenenc(p, 1)[0]
        columns, _ = lenenc(p, 0)
        types = [column_type(await self.packet()) for _ in range(columns)]
        await self.eof()
        rows = []
        while True:
            p = await self.packet()
            if p[0] == 0xFE and len(p) < 9:
                return rows
            rows.append(binary_row(p, types))

    def close_statement(self, stmt_id: int) -> None:
        """COM_STMT_CLOSE: no reply."""
        self.send(b"\x19" + struct.pack("<I", stmt_id))

    async def quit(self) -> None:
        self.send(b"\x01")
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


# -- the workload ---------------------------------------------------------------------------------


@dataclass
class Tally:
    cycles: int = 0
    reads: int = 0
    replica_reads: int = 0
    updates: Counter = field(default_factory=Counter)  # client -> sum added to w.n
    inserts: Counter = field(default_factory=Counter)  # client -> rows inserted into log
    texts: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


def statement(rnd: random.Random, client: int, seq: int) -> tuple[str, list[int], Any]:
    """(SQL text, parameters, expected result) of one cycle: a hot or a cold text of one of four
    templates, two reads (to the replicas) and two writes (to the primary)."""
    k = rnd.randrange(HOT) if rnd.random() < 0.5 else rnd.randrange(HOT, VARIANTS)
    kind = rnd.random()
    if kind < 0.4:
        key = rnd.randint(1, ROWS)
        return f"SELECT @@server_id, v + {k}, id FROM pc WHERE id = ?", [key], (7 * key + k, key)
    if kind < 0.7:
        lo = rnd.randint(1, ROWS)
        hi = min(ROWS, lo + k)
        total = 7 * (lo + hi) * (hi - lo + 1) // 2
        return f"SELECT @@server_id, COUNT(*), SUM(v) FROM pc WHERE id BETWEEN ? AND ? + {k}", [lo, lo], (hi - lo + 1, total)
    if kind < 0.9:
        return f"UPDATE w SET n = n + {k + 1} WHERE client = ?", [client], ("update", k + 1)
    # An explicit key, not AUTO_INCREMENT: an insert that generates an id keeps the session on its
    # writer connection for a LAST_INSERT_ID() follow-up (until its next writer statement, or [pool]
    # last_insert_id_hold), which is not what this test is about.
    return f"INSERT INTO log (client, seq, k) VALUES (?, ?, {k})", [client, seq], ("insert", 1)


async def run_client(c: StmtClient, i: int, cycles: int, replicas: set[int], tally: Tally, go: asyncio.Event) -> None:
    rnd = random.Random(i)
    await go.wait()
    for n in range(cycles):
        sql, params, want = statement(rnd, i, n)
        tally.texts.add(sql)
        try:
            stmt_id, nparams = await c.prepare(sql)
            assert nparams == len(params), (sql, nparams)
            got = await c.execute(stmt_id, params)
            c.close_statement(stmt_id)
        except ServerError as e:
            tally.errors.append(f"client {i}: {sql!r}: {e}")
            continue
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as e:
            tally.errors.append(f"client {i}: {sql!r}: connection lost: {e!r}")
            return
        tally.cycles += 1
        if want[0] in ("update", "insert"):
            if got != 1:
                tally.wrong.append(f"client {i}: {sql!r} {params}: affected {got!r}, expected 1")
            elif want[0] == "update":
                tally.updates[i] += want[1]
            else:
                tally.inserts[i] += 1
            continue
        tally.reads += 1
        if not isinstance(got, list) or len(got) != 1:
            tally.wrong.append(f"client {i}: {sql!r} {params}: {got!r}")
            continue
        sid, *values = got[0]
        if tuple(int(v) for v in values) != want:  # SUM() is a DECIMAL: a string on the binary protocol
            tally.wrong.append(f"client {i}: {sql!r} {params}: {got[0]!r}, expected {want}")
        if sid in replicas:
            tally.replica_reads += 1
        else:
            tally.wrong.append(f"client {i}: {sql!r} ran on server_id {sid}, not on a replica {sorted(replicas)}")


class PreparedWatch(mux.BackendWatch):
    """BackendWatch (the proxy's connections per server, as `mux` PROCESSLIST rows) that reads each
    server's Prepared_stmt_count in the same statement and keeps the maximum of both."""

    QUERY = (
        "SELECT (SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s), "
        "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'PREPARED_STMT_COUNT')"
    )

    def __init__(self, cluster: Any, interval: float = 0.02) -> None:
        super().__init__(cluster, interval)
        self.stmts_max = dict.fromkeys(self.servers, 0)
        # Max over the samples of Prepared_stmt_count - max_prepared_statements × connections at that moment.
        self.excess = dict.fromkeys(self.servers, -(10**9))
        self.failed: list[str] = []  # readings the server refused (not lost connections): skipped, counted

    def count(self) -> dict[str, int]:
        out = {}
        with self._lock:
            for name, c in self.conns.items():
                try:
                    with c.cursor() as cur:
                        cur.execute(self.QUERY, (mux.MUX_USER,))
                        conns, stmts = cur.fetchone()
                except pymysql.err.MySQLError as e:
                    # Seen on this shared box: information_schema's temporary table under /tmp
                    # deleted by someone else's cleanup (error 6). One reading lost, not the test.
                    if not e.args or e.args[0] in (2006, 2013) or len(self.failed) > 100:
                        raise
                    self.failed.append(f"{name}: {e.args}")
                    continue
                stmts = int(stmts)
                out[name] = conns
                self.stmts_max[name] = max(self.stmts_max[name], stmts)
                self.excess[name] = max(self.excess[name], stmts - MAX_PREPARED * conns)
        return out


def com_stmt(cluster: Any) -> dict[str, dict[str, int]]:
    """server -> Com_stmt_prepare / _execute / _close (what reached the servers)."""
    out = {}
    for s in cluster.servers:
        rows = s.sql("SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_stmt_prepare', 'Com_stmt_execute', 'Com_stmt_close')")
        out[s.name] = {k.lower().removeprefix("com_stmt_"): int(v) for k, v in (line.split("\t") for line in rows.splitlines())}
    return out


# -- the test -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_prepared_stmt_count_stays_within_cap_times_connections(mux_proxy, schema, cluster):
    cluster.primary.sql(
        f"CREATE TABLE `{schema}`.pc (id INT PRIMARY KEY, v INT NOT NULL);"
        f"INSERT INTO `{schema}`.pc SELECT seq, 7 * seq FROM `{schema}`.seq_1_to_{ROWS};"
        f"CREATE TABLE `{schema}`.w (client INT PRIMARY KEY, n BIGINT NOT NULL DEFAULT 0);"
        f"INSERT INTO `{schema}`.w (client) SELECT seq FROM `{schema}`.seq_0_to_{CLIENTS - 1};"
        f"CREATE TABLE `{schema}`.log (client INT NOT NULL, seq INT NOT NULL, k INT NOT NULL, PRIMARY KEY (client, seq))"
    )
    cluster.wait_replicated()
    replicas = {r.server_id for r in cluster.replicas}
    # Generous timeouts: 200 clients queue for 4 connections per server on a shared 2-core box, and
    # a statement prepared on a connection that lacks it waits up to connect_timeout for the server
    # (seen to exceed the default 3 s with the machine's load average above 20).
    p = mux_proxy(writer_max=CAP, reader_max=CAP, pool={"max_prepared_statements": MAX_PREPARED, "acquire_timeout": 60.0},
                  proxy_settings={"handshake_timeout": 60, "connect_timeout": 30})  # fmt: skip
    watch = PreparedWatch(cluster)
    baseline = {name: int(s.value("SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'").split("\t")[1]) for name, s in watch.servers.items()}
    tally = Tally()

    async def main() -> float:
        clients = [await StmtClient.connect(p.host, p.port, schema) for _ in range(CLIENTS)]
        go = asyncio.Event()
        per, extra = divmod(CYCLES, CLIENTS)
        tasks = [asyncio.create_task(run_client(c, i, per + (i < extra), replicas, tally, go)) for i, c in enumerate(clients)]
        started = time.monotonic()
        go.set()
        try:
            async with asyncio.timeout(TIMEOUT):
                await asyncio.gather(*tasks)
        except TimeoutError:
            raise AssertionError(f"{tally.cycles:,} of {CYCLES:,} cycles done after {TIMEOUT} s; errors so far: {tally.errors[:5]}") from None
        elapsed = time.monotonic() - started
        for c in clients:
            await c.quit()
        return elapsed

    before = com_stmt(cluster)
    watch.start()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            elapsed = runner.run(main())
        peak = watch.stop()
    finally:
        watch._halt.set()
        watch.close()
    after = com_stmt(cluster)
    sent = {name: {k: after[name][k] - before[name][k] for k in after[name]} for name in after}
    bound = {name: MAX_PREPARED * peak[name] + baseline[name] for name in peak}
    print(
        f"\n{tally.cycles:,} prepare/execute/close cycles from {CLIENTS} clients in {elapsed:.1f} s ({tally.cycles / elapsed:,.0f}/s); "
        f"{len(tally.texts)} distinct statement texts; reads {tally.reads:,} ({tally.replica_reads:,} on replicas)\n"
        f"[pool] max_prepared_statements = {MAX_PREPARED}, max_connections = {CAP} per server; {watch.samples} samples"
        f"{f' ({len(watch.failed)} readings refused by a server and skipped: {watch.failed[:3]})' if watch.failed else ''}\n"
        f"max backend connections per server: {peak}\n"
        f"max Prepared_stmt_count per server: {watch.stmts_max} (before: {baseline}; bound cap x connections: {bound})\n"
        f"max (Prepared_stmt_count - cap x connections) in one sample: {watch.excess}\n"
        f"COM_STMT_* that reached the servers: {sent}"
    )
    assert not tally.errors, f"{len(tally.errors)} errors, e.g. {tally.errors[:5]}"
    assert not tally.wrong, f"{len(tally.wrong)} wrong results, e.g. {tally.wrong[:5]}"
    assert tally.cycles == CYCLES
    assert watch.samples > 20 and len(watch.failed) < watch.samples // 10, (watch.samples, watch.failed[:5])
    assert all(n <= CAP for n in peak.values()), peak
    assert all(0 < n for n in peak.values()), f"a server got no connection: {peak}"
    # Every execute reached a server as COM_STMT_EXECUTE (the binary protocol all the way).
    assert sum(s["execute"] for s in sent.values()) == CYCLES, sent
    # The cap was really exercised: every server had statements evicted (closed by the proxy).
    assert all(sent[name]["close"] > 0 and sent[name]["prepare"] > MAX_PREPARED * CAP for name in sent), sent
    # Reads ran on the replicas (every read checked its @@server_id), writes on the primary.
    assert tally.replica_reads == tally.reads > 0
    primary = cluster.primary
    rows = dict(tuple(map(int, line.split("\t"))) for line in primary.sql(f"SELECT client, n FROM `{schema}`.w").splitlines())
    assert rows == {i: tally.updates[i] for i in range(CLIENTS)}
    logged = dict(tuple(map(int, line.split("\t"))) for line in primary.sql(f"SELECT client, COUNT(*) FROM `{schema}`.log GROUP BY client").splitlines())
    assert logged == {i: n for i, n in tally.inserts.items() if n}
    # The bound: however many statements the clients prepared, no server ever held more than the cap
    # times the proxy's connections to it (the proxy makes room before it prepares).
    assert all(watch.stmts_max[name] <= bound[name] for name in bound), (watch.stmts_max, bound)
