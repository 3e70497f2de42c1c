"""Result-stream scanner: where a server's reply to one command ends (sans-IO).

Theory of operation: the proxy relays a server's reply to the client chunk by chunk, unparsed. To
know when the reply is over — and what the server's status flags say at its end — it walks the
packet headers of each chunk as it passes: 4 bytes per packet plus the first payload byte, and the
whole payload only of the few packets that end a result (OK/EOF/ERR), which are small. Rows are
skipped by length without being looked at, so the per-row cost is one header read and no copy.

Reply shapes (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response.html,
page_protocol_com_stmt_prepare.html, page_protocol_com_stmt_execute.html, page_protocol_com_stmt_fetch.html):

  RESULT   OK | ERR | LOCAL INFILE request | column-count, column defs, [EOF], rows..., EOF/OK | ERR
           and again while SERVER_MORE_RESULTS_EXISTS is set (multi-statements, CALL, compound
           statements: MariaDB's FOR loops and stored programs send one result per SELECT they run)
  CURSOR   RESULT of a COM_STMT_EXECUTE that asked for a cursor: a column EOF carrying
           SERVER_STATUS_CURSOR_EXISTS ends it (the rows come with COM_STMT_FETCH). Only then:
           MariaDB also sets that flag in the column EOF of a result a compound statement's cursor
           loop (FOR rec IN (SELECT ...)) produces, and rows follow it there.
  PREPARE  ERR | PREPARE_OK(num_columns, num_params), params + [EOF], columns + [EOF]
  FETCH    rows..., EOF/OK | ERR
  FIELDS   column defs..., EOF/OK | ERR         (COM_FIELD_LIST)
  SIMPLE   one OK | ERR | EOF packet            (PING, INIT_DB, RESET_CONNECTION, SET_OPTION, ...)
  ANY_ONE  one packet of any kind               (COM_STATISTICS answers a bare string)
  NONE     no reply at all                      (STMT_CLOSE, STMT_SEND_LONG_DATA)

[EOF] is present unless CLIENT_DEPRECATE_EOF was negotiated. A row whose first byte is 0xFE is a
terminator only when the packet is shorter than 0xFFFFFF: a row starting with a 0xFE length prefix
announces >= 16 MiB, so it always arrives in a maximal (split) packet. Pieces following a maximal
packet continue it and are never interpreted.

`ResultScanner.feed(chunk)` returns -1 while the reply continues, or the offset just past its end.
While it continues, the last `hold` bytes of the chunk were not consumed: a packet header, or a
packet whose contents matter, cut by the end of the chunk. The caller keeps them back (does not
relay them yet) and feeds them again in front of the next chunk, so every packet the scanner reads
is whole in the buffer the caller holds, and can be rewritten before it is relayed.
A LOCAL INFILE request ends the server's turn: `local_infile` is set and the caller streams the
client's file, then calls `expect_infile_reply()` and keeps feeding.

Session tracking: the proxy's backend connections negotiate CLIENT_SESSION_TRACK whatever the
client did, and track more than a client's own settings would (the schema, the variables the proxy
replays, every state change). `changed` is set when any OK/EOF of the reply carries
SERVER_SESSION_STATE_CHANGED (the server's own word that session state changed: a user variable, a
temporary table, a variable, the schema...), and `states` lists the payloads of the OKs that carry
state information, for the session to read after the reply (never per row: only flagged OKs are
kept, and a reply without the flag costs nothing more). With a `mask` (the client's own tracking,
proxy.protocol.packets.TrackingMask), the flagged OKs and EOFs are listed in `rewrites` (start, end)
for the caller to pass through `apply_rewrites` before relaying them, so the client sees exactly
what its own settings produce; mask None relays them untouched.
"""

from __future__ import annotations

import enum

from .constants import MAX_PAYLOAD, ServerStatus
from .framing import ProtocolError, make_packet
from .packets import TrackingMask, filter_session_state


class Reply(enum.IntEnum):
    RESULT = 1
    PREPARE = 2
    FETCH = 3
    FIELDS = 4
    SIMPLE = 5
    ANY_ONE = 6
    NONE = 7
    CURSOR = 8


# scanner states
_FIRST = 0  # first packet of a result: OK / ERR / 0xFB / column count
_COLUMNS = 1  # skipping column definitions (self._left of them)
_COLUMNS_EOF = 2  # the EOF after column definitions (old style only)
_ROWS = 3  # rows until a terminator
_PREP_FIRST = 4
_PREP_SKIP = 5  # skipping param/column definitions and their EOFs (self._left packets)
_ONE = 6  # one OK / ERR / EOF packet ends it
_ANY = 7  # one packet of any content ends it
_DONE = 8


# Plain ints on the hot path: enum.Flag arithmetic allocates.
_MORE_RESULTS = int(ServerStatus.MORE_RESULTS_EXISTS)
_CURSOR_EXISTS = int(ServerStatus.CURSOR_EXISTS)
_STATE_CHANGED = int(ServerStatus.SESSION_STATE_CHANGED)
_STATE_CHANGED_HIGH = ~(_STATE_CHANGED >> 8) & 0xFF  # clears the flag in the status' high byte
_GTID_NAME = b"\tlast_gtid"  # the variable's name, length-encoded
# COM_STMT_EXECUTE flags asking for a cursor (READ_ONLY, FOR_UPDATE, SCROLLABLE; MariaDB's 0x08,
# PARAMETER_COUNT_AVAILABLE, is not one).
_CURSOR_FLAGS = 0x07


# The scanner state each kind of reply starts in (a dict: enum attribute lookups cost per statement).
_START = {
    Reply.RESULT: _FIRST, Reply.CURSOR: _FIRST, Reply.PREPARE: _PREP_FIRST, Reply.FETCH: _ROWS, Reply.FIELDS: _ROWS,
    Reply.SIMPLE: _ONE, Reply.ANY_ONE: _ANY, Reply.NONE: _DONE,
}  # fmt: skip
_RESULT_REPLY = Reply.RESULT
_CURSOR_REPLY = Reply.CURSOR


def execute_reply(payload: bytes | memoryview) -> Reply:
    """The reply a COM_STMT_EXECUTE payload gets: CURSOR when its flags ask for a cursor."""
    return _CURSOR_REPLY if len(payload) > 5 and payload[5] & _CURSOR_FLAGS else _RESULT_REPLY


def _read_lenenc(buf, pos: int) -> tuple[int, int]:
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFC:
        return buf[pos + 1] | buf[pos + 2] << 8, pos + 3
    if first == 0xFD:
        return buf[pos + 1] | buf[pos + 2] << 8 | buf[pos + 3] << 16, pos + 4
    return int.from_bytes(buf[pos + 1 : pos + 9], "little"), pos + 9


class ResultScanner:
    __slots__ = (
        "deprecate_eof",
        "_state",
        "_left",
        "_skip",
        "_continued",
        "hold",
        "mask",
        "changed",
        "states",
        "gtid",
        "_cursor",
        "rewrites",
        "status",
        "error",
        "local_infile",
        "last_ok",
        "stmt_id",
        "params",
        "columns",
        "affected_rows",
        "last_insert_id",
        "row_count",
        "warnings",
        "results",
    )

    def __init__(self, reply: Reply, deprecate_eof: bool, mask: TrackingMask | None = None) -> None:
        self.deprecate_eof = deprecate_eof
        self._skip = 0  # payload bytes of the current packet still to pass
        self.hold = 0  # bytes at the end of the last chunk not consumed (see feed)
        self.mask = mask  # the client's own session tracking: list flagged packets in `rewrites`
        self.changed = False  # some OK/EOF said SERVER_SESSION_STATE_CHANGED
        self.states: list[bytes] | None = None  # payloads of the OKs that carried state information
        self.gtid: bytes | None = None  # last_gtid, when an OK's only state information was that
        self._cursor = reply is _CURSOR_REPLY  # a cursor may end the reply after the column definitions
        # In the last chunk fed: (start of header, end of payload, cut, status offset); cut = 0:
        # filter the OK's state information for the client, else keep the packet up to `cut`
        # with SERVER_SESSION_STATE_CHANGED cleared (the status flags' high byte at the offset).
        self.rewrites: list[tuple[int, int, int, int]] | None = None
        self._continued = False  # the next packet continues a maximal one
        self._left = 0
        self.status = -1  # server status flags from the last OK/EOF seen; -1 = none seen (e.g. ERR)
        self.error: bytes | None = None  # payload of an ERR that ended the reply
        self.local_infile = False
        self.stmt_id = 0  # COM_STMT_PREPARE: the statement id, parameter and column counts
        self.params = 0
        self.columns = 0
        self.affected_rows = 0
        self.last_insert_id = 0
        self.results = 0  # number of result sets / OKs seen
        self.row_count = -1  # ROW_COUNT() after this reply: the last OK's affected rows, -1 after rows or ERR
        self.warnings = 0  # warning count of the last OK/EOF (what SHOW WARNINGS would list next)
        self.last_ok: bytes | None = None
        self._state = _START[reply]

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def expect_infile_reply(self) -> None:
        """After the client's file has been sent: the server answers with OK or ERR (and maybe more)."""
        self.local_infile = False
        self._state = _FIRST

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """Consume a chunk; return -1 if the reply goes on, else the offset just past its end."""
        n = len(data)
        self.hold = 0
        if self.rewrites is not None:
            self.rewrites = None
        pos = self._skip
        if pos:
            if pos >= n:
                self._skip = pos - n
                return n if pos == n and self._state == _DONE else -1
            self._skip = 0
        state = self._state
        while state != _DONE:
            if pos + 4 > n:
                break
            length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            start = pos + 4
            end = start + length
            if self._continued:
                self._continued = length == MAX_PAYLOAD
            elif state == _ROWS:
                if length == MAX_PAYLOAD:
                    self._continued = True  # a big row; it cannot be a terminator
                elif length:
                    if start >= n:
                        break  # need the first byte
                    if data[start] >= 0xFE:
                        if end > n:
                            break
                        state = self._terminator(data, start, end)
            elif state == _COLUMNS:
                self._continued = length == MAX_PAYLOAD
                self._left -= 1
                if not self._left:
                    state = _ROWS if self.deprecate_eof else _COLUMNS_EOF
            elif state == _PREP_SKIP:
                self._left -= 1
                if not self._left:
                    state = _DONE
            else:
                if end > n:
                    break  # a packet whose contents decide what comes next: need it whole
                if state == _FIRST:
                    state = self._first(data, start, end)
                    if self.local_infile:
                        self._state = state
                        return end
                elif state == _COLUMNS_EOF:
                    state = self._columns_eof(data, start, end)
                elif state == _PREP_FIRST:
                    state = self._prepare_first(data, start, end)
                elif state == _ONE:
                    if length and data[start] == 0xFF:
                        self.error = bytes(data[start:end])
                    elif length and length < 0xFFFFFF and data[start] in (0x00, 0xFE):
                        self._status_from(data, start, end)
                        if data[start] == 0x00:  # an OK (COM_PING, COM_INIT_DB...) sets ROW_COUNT() too
                            self.results += 1
                            self.row_count = self.affected_rows
                    state = _DONE
                else:  # _ANY
                    state = _DONE
            if end >= n:
                self._skip = end - n
                self._state = state
                return n if state == _DONE and end == n else -1
            pos = end
        self._state = state
        if state == _DONE:
            return pos
        self.hold = n - pos  # rare: a header or a packet that matters straddles two reads
        return -1

    # ---- packets that matter ------------------------------------------------------------------

    def _first(self, data, start: int, end: int) -> int:
        if end - start == 0:
            return _DONE  # malformed; end the reply rather than hang
        h = data[start]
        if h == 0x00:
            self.results += 1
            self._ok(data, start, end)
            self.row_count = self.affected_rows
            return _FIRST if self.status & _MORE_RESULTS else _DONE
        if h == 0xFF:
            self.error = bytes(data[start:end])
            self.row_count = -1
            return _DONE
        if h == 0xFB:
            self.local_infile = True
            return _FIRST
        count, _ = _read_lenenc(data, start)
        self._left = count
        self.results += 1
        self.row_count = -1
        return _COLUMNS if count else (_ROWS if self.deprecate_eof else _COLUMNS_EOF)

    def _columns_eof(self, data, start: int, end: int) -> int:
        h = data[start] if end > start else 0
        if h == 0xFF:
            self.error = bytes(data[start:end])
            return _DONE
        # EOF: warnings(2) status(2). A cursor opened by COM_STMT_EXECUTE ends the reply here.
        if end - start >= 5:
            self._eof_status(data, start, end)
        if self._cursor and self.status & _CURSOR_EXISTS:
            return _DONE
        return _ROWS

    def _terminator(self, data, start: int, end: int) -> int:
        h = data[start] if end > start else 0
        if h == 0xFF:
            self.error = bytes(data[start:end])
            return _DONE
        if h == 0xFE and end - start < MAX_PAYLOAD:
            if self.deprecate_eof:
                self._ok(data, start, end)
            elif end - start >= 5:
                self._eof_status(data, start, end)
            return _FIRST if self.status & _MORE_RESULTS else _DONE
        return _ROWS  # a row

    def _prepare_first(self, data, start: int, end: int) -> int:
        h = data[start] if end > start else 0xFF
        if h == 0xFF:
            self.error = bytes(data[start:end])
            return _DONE
        if end - start < 9:
            return _DONE
        self.stmt_id = int.from_bytes(data[start + 1 : start + 5], "little")
        columns = self.columns = data[start + 5] | data[start + 6] << 8
        params = self.params = data[start + 7] | data[start + 8] << 8
        eofs = 0 if self.deprecate_eof else (params > 0) + (columns > 0)
        self._left = columns + params + eofs
        return _PREP_SKIP if self._left else _DONE

    def _ok(self, data, start: int, end: int) -> None:
        self.last_ok = bytes(data[start:end])
        try:
            self.affected_rows, p = _read_lenenc(data, start + 1)
            self.last_insert_id, p = _read_lenenc(data, p)
        except IndexError:  # a malformed OK from the server: keep relaying, report nothing
            self.status = 0
            return
        if p + 2 <= end:
            status = self.status = data[p] | data[p + 1] << 8
            self.warnings = data[p + 2] | data[p + 3] << 8 if p + 4 <= end else 0
            if status & _STATE_CHANGED:
                if self._only_gtid(data, start, p, end):
                    return
                self._state_changed(start, end)
                if self.states is None:
                    self.states = []
                self.states.append(self.last_ok)

    def _only_gtid(self, data, start: int, p: int, end: int) -> bool:
        """An OK whose only state information is last_gtid (a write committed: the proxy's own
        tracking, proxy.causal): note the GTID, and keep the entry from a client that does not
        track the variable itself. The common case of every write, read here without parsing."""
        try:
            info, q = _read_lenenc(data, p + 4)
            q += info
            length, v = _read_lenenc(data, q)
        except IndexError:
            return False
        # One SYSTEM_VARIABLES entry (type 0, its length), the name "last_gtid", the value.
        if v + length != end or length < 13 or data[v] != 0 or data[v + 1] != length - 2 or data[v + 2 : v + 12] != _GTID_NAME:
            return False
        if data[v + 12] != length - 13:
            return False
        self.gtid = bytes(data[v + 13 : end])
        mask = self.mask
        if mask is not None and not (mask.enabled and (mask.variables is None or "last_gtid" in mask.variables)):
            if self.rewrites is None:
                self.rewrites = []
            self.rewrites.append((start - 4, end, q if info else p + 4, p + 1))
        return True

    def _eof_status(self, data, start: int, end: int) -> None:
        self.warnings = data[start + 1] | data[start + 2] << 8
        status = self.status = data[start + 3] | data[start + 4] << 8
        if status & _STATE_CHANGED:
            self._state_changed(start, end)

    def _state_changed(self, start: int, end: int) -> None:
        self.changed = True
        if self.mask is not None:
            if self.rewrites is None:
                self.rewrites = []
            self.rewrites.append((start - 4, end, 0, 0))

    def _status_from(self, data, start: int, end: int) -> None:
        if data[start] == 0x00 or self.deprecate_eof:
            self._ok(data, start, end)
        elif end - start >= 5:
            self._eof_status(data, start, end)


def apply_rewrites(data: bytes, rewrites: list[tuple[int, int]], mask: TrackingMask) -> bytes:
    """`data` with the packets at `rewrites` (ResultScanner.rewrites: start of header, end of payload)
    passed through filter_session_state for a client whose own tracking is `mask`, sequence ids
    kept. (A malformed OK is relayed as the server sent it.)"""
    out = []
    prev = 0
    for start, end, cut, status in rewrites:
        out.append(data[prev:start])
        if cut:
            payload = bytearray(data[start + 4 : cut])
            payload[status - start - 4] &= _STATE_CHANGED_HIGH
            out.append(make_packet(payload, data[start + 3]))
            prev = end
            continue
        try:
            out.append(make_packet(filter_session_state(data[start + 4 : end], mask), data[start + 3]))
        except ProtocolError:
            out.append(data[start:end])
        prev = end
    out.append(data[prev:])
    return b"".join(out)
