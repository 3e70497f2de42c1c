"""A reply the proxy misreads never leaves the client waiting (proxy.backend `_lost_sync`).

Should the reply scanner ever stop before the server's reply really ends (a reply shape it does not
know), or a server send bytes nobody asked for, the proxy cannot know where the next reply begins.
The client gets what belonged to the reply, then an ERR with the sequence id it expects next, and
its session is closed; the backend connection is dropped, never pooled. Driven here with a real
ClientSession in passthrough and split mode whose backend transport answers with canned bytes.
"""

from __future__ import annotations

import pytest

from proxy.backend import BackendConnection
from proxy.config import Server
from proxy.protocol.results import Reply, ResultScanner

from .test_stats_wiring import EOF_PKT, ROWS, make_session, pkt

TRAILING = pkt(EOF_PKT, 6)  # one more packet after a complete 1-row result (sequence ids 1..5)


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.done = False
        self.lost = False

    def relay(self, data: bytes) -> None:
        self.data += data

    def reply_done(self, scanner: ResultScanner) -> None:
        self.done = True

    def infile_requested(self) -> None: ...

    def backend_lost(self, backend: BackendConnection, exc: Exception | None) -> None:
        self.lost = True

    def backend_write_paused(self, paused: bool) -> None: ...


class Transport:
    def __init__(self, conn: BackendConnection) -> None:
        self.conn, self.aborted = conn, False

    def write(self, data: bytes) -> None: ...

    def abort(self) -> None:
        self.aborted = True
        self.conn.connection_lost(None)  # (asyncio calls it soon after)

    def close(self) -> None: ...


def packets(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 3], "little")
        out.append((data[pos + 3], bytes(data[pos + 4 : pos + 4 + n])))
        pos += 4 + n
    return out


def attached() -> tuple[BackendConnection, Sink, Transport]:
    conn = BackendConnection(Server(0, "127.0.0.1", 3306))
    sink = Sink()
    conn.transport = t = Transport(conn)
    conn.attach(sink)
    return conn, sink, t


def test_bytes_after_the_end_of_a_reply_end_it_with_an_err_and_drop_the_connection():
    conn, sink, t = attached()
    conn.relay(pkt(b"\x03SELECT 1", 0), ResultScanner(Reply.RESULT, False))
    conn.data_received(ROWS + TRAILING)
    got = packets(bytes(sink.data))
    assert bytes(sink.data).startswith(ROWS)  # the reply as it was read
    seq, err = got[-1]
    assert (seq, err[:3]) == (6, b"\xff\x2b\x07") and b"reconnect" in err  # 1835, with the next sequence id
    assert t.aborted and conn.lost_sync and sink.lost and not sink.done


def test_bytes_while_no_command_is_in_flight_drop_the_connection():
    conn, sink, t = attached()
    conn.data_received(pkt(b"\x01x", 4))  # (e.g. the rows of a reply taken to have ended)
    assert packets(bytes(sink.data)) and packets(bytes(sink.data))[0][0] == 4
    assert t.aborted and conn.lost_sync and sink.lost


def test_a_servers_goodbye_is_not_a_lost_reply():
    conn, sink, t = attached()
    conn.data_received(pkt(b"\xff\x87\x07#HY000The client was disconnected by the server because of inactivity", 0))
    assert not t.aborted and not conn.lost_sync and not sink.data


def test_a_pooled_connection_is_no_ones_to_tell():
    conn, sink, t = attached()
    conn.detach()
    conn.data_received(pkt(b"\x01x", 4))
    assert not t.aborted and not sink.data


class AbortingServer:
    """A backend transport that answers a command with `reply` and records an abort."""

    def __init__(self, conn: BackendConnection, reply: bytes) -> None:
        self.conn, self.reply, self.aborted = conn, reply, False

    def write(self, data: bytes) -> None:
        if self.reply:
            reply, self.reply = self.reply, b""
            self.conn.data_received(reply)

    def abort(self) -> None:
        self.aborted = True
        self.conn.connection_lost(None)

    def get_extra_info(self, name, default=None):
        return default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


@pytest.mark.parametrize("split", [False, True], ids=["passthrough", "split"])
def test_the_client_is_told_and_its_session_closed(split):
    app, sess, fakes = make_session(split=split)
    conn = next(iter(sess.conns.values())) if sess.conns else None
    servers = {}
    for hg, fake in fakes.items():
        c = fake.conn
        c.transport = servers[hg] = AbortingServer(c, ROWS + TRAILING)
    sess.data_received(pkt(b"\x03SELECT c FROM t WHERE id = 1", 0))
    got = packets(bytes(sess.transport.out))
    assert got[-1][0] == 6 and got[-1][1][:1] == b"\xff"  # the ERR, where the client expects the next packet
    assert sess.closed
    assert any(s.aborted for s in servers.values())
    if conn is not None:
        assert conn.pool is None or conn not in [c for c, _ in conn.pool.idle]
