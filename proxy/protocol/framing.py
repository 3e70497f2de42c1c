"""Packet framing: bytes in, whole packets out (sans-IO).

Theory of operation: every MySQL packet is a 3-byte little-endian payload length, a 1-byte sequence
id and the payload (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_packets.html).
A payload of 0xFFFFFF bytes or more is split into 16 MiB - 1 pieces with consecutive sequence ids,
the last piece shorter (possibly empty). `PacketFramer` buffers what it is fed and hands out complete
logical packets, joining split pieces unless asked not to; it checks that pieces of one logical packet
carry consecutive sequence ids and that no payload exceeds the configured maximum. It never does I/O.

`Packet.raw` is the exact wire bytes (all pieces, headers included) so a packet can be forwarded
unchanged; in the common case of one whole packet arriving in one read, no bytes are copied.
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import MAX_PAYLOAD


class ProtocolError(Exception):
    """The peer sent bytes that do not follow the protocol. Carries a MySQL error code."""

    def __init__(self, message: str, code: int = 1835) -> None:  # ER_MALFORMED_PACKET
        super().__init__(message)
        self.code = code


class PacketTooLarge(ProtocolError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"Got a packet bigger than 'max_allowed_packet' bytes ({size} > {limit})", code=1153
        )


@dataclass(slots=True)
class Packet:
    seq: int  # sequence id of the first piece
    last_seq: int  # sequence id of the last piece (== seq unless split)
    payload: memoryview | bytes
    raw: bytes | bytearray | memoryview  # wire bytes, all pieces


def make_packet(payload: bytes | bytearray | memoryview, seq: int) -> bytes:
    """Frame one payload, splitting at 16 MiB - 1 as the protocol requires."""
    n = len(payload)
    if n < MAX_PAYLOAD:
        return n.to_bytes(3, "little") + bytes((seq & 0xFF,)) + bytes(payload)
    out = bytearray()
    pos = 0
    while True:
        piece = payload[pos : pos + MAX_PAYLOAD]
        out += len(piece).to_bytes(3, "little") + bytes((seq & 0xFF,)) + piece
        seq += 1
        pos += len(piece)
        if len(piece) < MAX_PAYLOAD:
            return bytes(out)


class PacketFramer:
    __slots__ = ("buf", "_pos", "max_payload")

    def __init__(self, max_payload: int = 1 << 30) -> None:
        # Bytes received and not handed out as packets yet, from `_pos` on; empty (falsy) when
        # everything was: a cheap test for "a packet is still arriving".
        self.buf: bytes | bytearray = b""
        self._pos = 0
        self.max_payload = max_payload

    def feed(self, data: bytes) -> None:
        if self._pos >= len(self.buf):
            # Nothing pending: keep the chunk as-is (no copy for the common one-packet case).
            self.buf = data
            self._pos = 0
            return
        if isinstance(self.buf, bytes):
            self.buf = bytearray(memoryview(self.buf)[self._pos :])
            self._pos = 0
        elif self._pos > 65536:
            del self.buf[: self._pos]
            self._pos = 0
        self.buf += data

    @property
    def buffered(self) -> int:
        return len(self.buf) - self._pos

    def next_packet(self, join: bool = True) -> Packet | None:
        buf, pos = self.buf, self._pos
        end = len(buf)
        if end - pos < 4:
            return None
        length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
        seq = buf[pos + 3]
        stop = pos + 4 + length
        if length < MAX_PAYLOAD or not join:
            if stop > end:
                if length > self.max_payload:
                    raise PacketTooLarge(length, self.max_payload)
                return None
            if pos == 0 and stop == end and isinstance(buf, bytes):
                raw = buf
                self.buf = b""
            else:
                raw = bytes(memoryview(buf)[pos:stop])
                self._pos = stop
                if stop == end:
                    self.buf, self._pos = b"", 0
            return Packet(seq, seq, memoryview(raw)[4:], raw)
        # Split payload: walk the pieces until a short one; join only once all have arrived.
        pieces = []
        total = 0
        expect = seq
        p = pos
        while True:
            if end - p < 4:
                if total + (end - p) > self.max_payload:
                    raise PacketTooLarge(total, self.max_payload)
                return None
            plen = buf[p] | (buf[p + 1] << 8) | (buf[p + 2] << 16)
            pseq = buf[p + 3]
            if pseq != expect:
                raise ProtocolError(
                    f"Got packets out of order (expected sequence id {expect}, got {pseq})",
                    code=1156,
                )
            total += plen
            if total > self.max_payload:
                raise PacketTooLarge(total, self.max_payload)
            if p + 4 + plen > end:
                return None
            pieces.append((p + 4, p + 4 + plen))
            p += 4 + plen
            expect = (expect + 1) & 0xFF
            if plen < MAX_PAYLOAD:
                break
        mv = memoryview(buf)
        payload = b"".join(mv[a:b] for a, b in pieces)
        raw = bytes(mv[pos:p])
        self._pos = p
        if p == end:
            self.buf, self._pos = b"", 0
        return Packet(seq, (expect - 1) & 0xFF, payload, raw)

    def take_rest(self) -> bytes:
        """Every byte received and not handed out as a packet, removed from the framer: what came
        after an SSLRequest (the start of the client's TLS handshake) belongs to the TLS layer."""
        rest = bytes(memoryview(self.buf)[self._pos :])
        self.buf, self._pos = b"", 0
        return rest
