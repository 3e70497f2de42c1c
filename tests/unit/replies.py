"""Builders for server replies, as wire bytes, for scanner and codec tests."""

from __future__ import annotations

from proxy.protocol.constants import ServerStatus
from proxy.protocol.framing import make_packet
from proxy.protocol.packets import OK, lenenc_bytes, lenenc_int, make_eof, make_err, make_ok
from proxy.protocol.constants import Capability

CAPS = Capability.PROTOCOL_41 | Capability.SESSION_TRACK


class Wire:
    """Accumulates packets with running sequence ids, as a server would send them."""

    def __init__(self, seq: int = 1) -> None:
        self.seq = seq
        self.data = bytearray()

    def add(self, payload: bytes) -> "Wire":
        raw = make_packet(payload, self.seq)
        self.data += raw
        self.seq += len(payload) // 0xFFFFFF + 1
        return self


def column_def(name: str) -> bytes:
    return b"".join(lenenc_bytes(x) for x in (b"def", b"db", b"t", b"t", name.encode(), name.encode())) + b"\x0c" + b"\x21\x00" + b"\xff\x00\x00\x00" + b"\xfd" + b"\x00\x00" + b"\x00" + b"\x00\x00"


def text_row(values: list[bytes | None]) -> bytes:
    return b"".join(b"\xfb" if v is None else lenenc_bytes(v) for v in values)


def ok(status: int = ServerStatus.AUTOCOMMIT, affected: int = 0, insert_id: int = 0, eof_header: bool = False) -> bytes:
    p = make_ok(OK(affected, insert_id, status, 0), CAPS)
    return (b"\xfe" + p[1:]) if eof_header else p


def result_set(w: Wire, columns: int, rows: list[list[bytes | None]], deprecate_eof: bool, status: int, columns_status: int = ServerStatus.AUTOCOMMIT) -> None:
    """A text result set. `columns_status`: the status flags of the EOF after the column definitions
    (MariaDB's compound statements set MORE_RESULTS_EXISTS and even CURSOR_EXISTS there)."""
    w.add(lenenc_int(columns))
    for i in range(columns):
        w.add(column_def(f"c{i}"))
    if not deprecate_eof:
        w.add(make_eof(columns_status))
    for r in rows:
        w.add(text_row(r))
    w.add(ok(status, eof_header=True) if deprecate_eof else make_eof(status))


def err(code: int = 1064, msg: str = "You have an error") -> bytes:
    return make_err(code, msg, "42000")
