"""The monitor's checks, one round trip each, over a BackendConnection in packet mode.

Theory of operation: `open_connection` logs in with the [monitor] account (proxy.backend.connect:
the same dialing and authentication as the data path). `ping` is COM_PING. `query` sends a
COM_QUERY and reads a text result set whole into strings: monitor queries return a row or a few
(never the hot path), so a simple reader is right here; it understands both the EOF and the
DEPRECATE_EOF shapes. `read_only` and `replication` run the queries for the checks and turn the
rows into values (proxy.topology.Replication), for MariaDB and MySQL alike, which the server's
greeting tells apart.

Every failure is a `CheckError` whose text says what happened (the server's error code and message,
or the transport's); timeouts are the caller's (asyncio.timeout around the call). Nothing here
decides health: proxy.monitor feeds the outcomes to proxy.topology.
"""

from __future__ import annotations

from .backend import BackendConnection, BackendError
from .backend import connect as backend_connect
from .config import MonitorSettings, Server
from .protocol.constants import ERR_HEADER, OK_HEADER, Capability, Command
from .protocol.framing import ProtocolError, make_packet
from .protocol.packets import Reader, parse_err, parse_text_row
from .topology import Replication

__all__ = ["CheckError", "is_mariadb", "open_connection", "ping", "query", "read_only", "replication"]

UTF8MB4_GENERAL_CI = 45
_ATTRIBUTES = {"_client_name": "rwproxy", "program_name": "rwproxy-monitor"}
# (server version, query, column count) -> column names: the names of a monitor query's columns
# are read once per server version, not at every check (SHOW SLAVE STATUS has ~60).
_NAMES: dict[tuple[str, str, int], list[str]] = {}


class CheckError(Exception):
    """A check failed; the text is the reason (logged and shown in the monitor tables).
    `answered`: the server itself refused (e.g. the monitor user's login), so it is up."""

    def __init__(self, message: str, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


async def open_connection(server: Server, settings: MonitorSettings, timeout: float) -> BackendConnection:
    """Log in as the monitor user (no default schema). Raises CheckError."""
    try:
        return await backend_connect(
            server, settings.username, settings.password, database=None, client_capabilities=0,
            collation=UTF8MB4_GENERAL_CI, attributes=_ATTRIBUTES, timeout=timeout, max_packet=16 << 20,
        )  # fmt: skip
    except BackendError as e:
        # ER_CON_COUNT_ERROR (too many connections) is a server that cannot take more: not "up".
        raise CheckError(e.cause, answered=e.err is not None and e.err.code != 1040) from None


def is_mariadb(conn: BackendConnection) -> bool:
    hs = conn.handshake
    return hs is not None and "mariadb" in hs.server_version.lower()


async def _read(conn: BackendConnection):
    try:
        return await conn.read_packet()
    except (ConnectionError, OSError) as e:
        raise CheckError(f"connection lost: {e}" if str(e) else "connection lost") from None


def column_name(payload: bytes | memoryview) -> str:
    """The name of a ColumnDefinition41 (its fifth length-encoded string), without parsing the
    rest: SHOW SLAVE STATUS has ~60 columns and only their names are needed here."""
    r = Reader(payload, "column definition")
    for _ in range(4):  # catalog, schema, table, org_table
        n = r.lenenc_int()
        r.pos += n
    return bytes(r.lenenc_bytes()).decode("utf-8", "replace")


def _err_text(payload: bytes | memoryview) -> str:
    err = parse_err(payload)
    return f"{err.code} {err.message}"


async def ping(conn: BackendConnection) -> None:
    """COM_PING: OK or CheckError."""
    if conn.closed:
        raise CheckError("connection lost")
    conn.transport.write(make_packet(bytes((Command.PING,)), 0))
    pkt = await _read(conn)
    head = pkt.payload[0] if pkt.payload else ERR_HEADER
    if head != OK_HEADER:
        raise CheckError(_err_text(pkt.payload) if head == ERR_HEADER and len(pkt.payload) > 3 else f"unexpected answer 0x{head:02x} to COM_PING")


async def query(conn: BackendConnection, sql: str) -> tuple[list[str], list[list[str | None]]]:
    """A COM_QUERY's text result set: (column names, rows of str or None). ERR -> CheckError."""
    if conn.closed:
        raise CheckError("connection lost")
    conn.transport.write(make_packet(bytes((Command.QUERY,)) + sql.encode(), 0))
    try:
        pkt = await _read(conn)
        p = pkt.payload
        if not p or p[0] == ERR_HEADER:
            raise CheckError(_err_text(p) if p else "empty reply")
        if p[0] == OK_HEADER:
            return [], []
        count = Reader(p, "column count").lenenc_int()
        key = (conn.handshake.server_version if conn.handshake else "", sql, count)
        names = _NAMES.get(key)
        if names is None:
            names = [column_name((await _read(conn)).payload) for _ in range(count)]
            if len(_NAMES) < 64:
                _NAMES[key] = names
        else:
            for _ in range(count):
                await _read(conn)
        if not conn.capabilities & Capability.DEPRECATE_EOF:
            await _read(conn)  # the EOF after the column definitions
        rows: list[list[str | None]] = []
        while True:
            p = (await _read(conn)).payload
            if p and p[0] == ERR_HEADER:
                raise CheckError(_err_text(p))
            if p and p[0] == 0xFE and len(p) < 0xFFFFFF:  # EOF, or the OK that ends the rows
                return names, rows
            rows.append([None if v is None else v.decode("utf-8", "replace") for v in parse_text_row(p, count)])
    except ProtocolError as e:
        raise CheckError(f"malformed reply: {e}") from None


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    v = value.strip().upper()
    if v in ("1", "ON", "YES"):
        return True
    if v in ("0", "OFF", "NO"):
        return False
    return None


async def read_only(conn: BackendConnection, check_type: str = "read_only") -> tuple[bool, str | None]:
    """(the check_type variable's value, the server's GTID position) in one round trip."""
    gtid = "@@global.gtid_current_pos" if is_mariadb(conn) else "@@global.gtid_executed"
    _, rows = await query(conn, f"SELECT @@global.{check_type}, {gtid}")
    if len(rows) != 1 or len(rows[0]) != 2:
        raise CheckError(f"unexpected answer to SELECT @@global.{check_type}: {rows!r}")
    value = _flag(rows[0][0])
    if value is None:
        raise CheckError(f"@@global.{check_type} is {rows[0][0]!r}, expected 0 or 1")
    return value, rows[0][1]


def parse_replication(names: list[str], rows: list[list[str | None]]) -> Replication | None:
    """SHOW [ALL] SLAVE STATUS / SHOW REPLICA STATUS rows -> the worst channel's state; None when
    the server replicates from nobody (no rows). Column names of MariaDB and MySQL 8 (Slave_* /
    Replica_*, Seconds_Behind_Master / _Source) are both understood."""
    if not rows:
        return None
    idx = {n.lower(): i for i, n in enumerate(names)}

    def col(row: list[str | None], *candidates: str) -> str | None:
        for c in candidates:
            i = idx.get(c)
            if i is not None:
                return row[i]
        return None

    worst: Replication | None = None
    for row in rows:
        behind = col(row, "seconds_behind_master", "seconds_behind_source")
        io = (col(row, "slave_io_running", "replica_io_running") or "").strip().lower() == "yes"
        sql = (col(row, "slave_sql_running", "replica_sql_running") or "").strip().lower() == "yes"
        error = ""
        if not sql:
            error = col(row, "last_sql_error") or ""
        if not io and not error:
            error = col(row, "last_io_error") or ""
        r = Replication(int(behind) if behind not in (None, "") and behind.strip().lstrip("-").isdigit() else None, io, sql, error)
        if worst is None or (r.broken, r.seconds_behind or 0) > (worst.broken, worst.seconds_behind or 0):
            worst = r
    return worst


async def replication(conn: BackendConnection) -> Replication | None:
    """The server's replication state (every channel; the worst one counts)."""
    if is_mariadb(conn):
        names, rows = await query(conn, "SHOW ALL SLAVES STATUS")
    else:
        try:
            names, rows = await query(conn, "SHOW REPLICA STATUS")  # MySQL 8.0.22+
        except CheckError as e:
            if not str(e).startswith("1064 "):
                raise
            names, rows = await query(conn, "SHOW SLAVE STATUS")
    return parse_replication(names, rows)
