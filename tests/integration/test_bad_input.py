"""Bad input from a client gets an ERR or a clean close, is logged once, and harms nobody else.

These speak the protocol by hand over raw sockets (a deliberately independent, minimal client: no
code from proxy.protocol), so they can send what no driver would. For every case a client that was
connected through the same proxy beforehand must keep working afterwards, and the proxy's log must
hold exactly one line about the bad session (found by its `session=<id>`, which is the connection id
the proxy's greeting announced).
"""

from __future__ import annotations

import random
import re
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.rawclient import CLIENT_CAPS, Raw, parse_err


# -- helpers -------------------------------------------------------------------------------------------


def session_lines(log_path: Path, session_id: int) -> list[str]:
    pat = re.compile(rf"\bsession={session_id} ")
    return [line for line in Path(log_path).read_text(errors="replace").splitlines() if pat.search(line)]


def one_log_line(log_path: Path, session_id: int, timeout: float = 5.0) -> str:
    """Wait for the session's line, give any second one a moment to appear, then insist on one."""
    deadline = time.monotonic() + timeout
    while not session_lines(log_path, session_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    lines = session_lines(log_path, session_id)
    assert len(lines) == 1, f"expected exactly one log line for session={session_id}, got {lines}"
    return lines[0]


def assert_alive(proxy: Any, conn: pymysql.connections.Connection, cluster: Any) -> None:
    """The proxy process runs, the earlier session still answers, and a new one can log in."""
    assert proxy.process.poll() is None, "the proxy exited"
    with conn.cursor() as cur:
        cur.execute("SELECT 1 + 1")
        assert cur.fetchone() == (2,)
    fresh = proxy.connect(autocommit=True)
    try:
        with fresh.cursor() as cur:
            cur.execute("SELECT 'fresh'")
            assert cur.fetchone() == ("fresh",)
    finally:
        fresh.close()


@pytest.fixture
def bystander(proxy: Any):
    """A client connected through the shared proxy before the bad one arrives."""
    conn = proxy.connect(autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
    yield conn
    conn.close()


# -- the cases -----------------------------------------------------------------------------------------


def test_garbage_handshake_response_gets_err_1043(proxy, cluster, bystander):
    raw = Raw(proxy.host, proxy.port)
    try:
        raw.greeting()
        garbage = bytes(random.Random(7).randrange(256) for _ in range(48))
        garbage = b"\x00\x00\x00\x00" + garbage[4:]  # capability flags without CLIENT_PROTOCOL_41
        raw.send_packet(garbage, 1)
        _, payload = raw.expect_packet()
        err = parse_err(payload)
        assert (err.code, err.sqlstate) == (1043, "08S01")
        assert err.message.startswith("Bad handshake")
        raw.expect_closed()
    finally:
        raw.close()
    line = one_log_line(proxy.log_path, raw.connection_id)
    assert "WARNING" in line and "bad handshake" in line.lower()
    assert_alive(proxy, bystander, cluster)


def test_short_handshake_response_gets_err_1043(proxy, cluster, bystander):
    raw = Raw(proxy.host, proxy.port)
    try:
        raw.greeting()
        raw.send_packet(b"\x05\xa2", 1)
        _, payload = raw.expect_packet()
        assert parse_err(payload).code == 1043
        raw.expect_closed()
    finally:
        raw.close()
    one_log_line(proxy.log_path, raw.connection_id)
    assert_alive(proxy, bystander, cluster)


def test_truncated_handshake_packet_then_close(proxy, cluster, bystander):
    raw = Raw(proxy.host, proxy.port)
    try:
        raw.greeting()
        raw.send_raw((100).to_bytes(3, "little") + b"\x01" + b"0123456789")  # says 100 bytes, sends 10
    finally:
        raw.close()
    line = one_log_line(proxy.log_path, raw.connection_id)
    assert "closed" in line
    assert_alive(proxy, bystander, cluster)


def test_truncated_command_packet_then_close(proxy, cluster, bystander):
    raw = Raw(proxy.host, proxy.port)
    try:
        raw.login()
        raw.send_raw((100).to_bytes(3, "little") + b"\x00" + b"\x03SELECT 1")  # says 100 bytes, sends 9
    finally:
        raw.close()
    one_log_line(proxy.log_path, raw.connection_id)
    assert_alive(proxy, bystander, cluster)


def test_wrong_sequence_id_on_a_command_gets_err_1156(proxy, cluster, bystander):
    raw = Raw(proxy.host, proxy.port)
    try:
        raw.login()
        assert raw.query("SELECT 1") == [b"\x011"]
        raw.send_packet(b"\x03SELECT 2", 5)  # a command must start with sequence id 0
        _, payload = raw.expect_packet()
        err = parse_err(payload)
        assert (err.code, err.sqlstate) == (1156, "08S01")
        assert "out of order" in err.message
        raw.expect_closed()
    finally:
        raw.close()
    line = one_log_line(proxy.log_path, raw.connection_id)
    assert "WARNING" in line
    assert_alive(proxy, bystander, cluster)


def test_unknown_command_gets_err_1047_and_session_goes_on(proxy, cluster, bystander):
    raw = Raw(proxy.host, proxy.port)
    try:
        raw.login()
        raw.send_packet(b"\x63whatever", 0)
        seq, payload = raw.expect_packet()
        assert seq == 1
        err = parse_err(payload)
        assert (err.code, err.sqlstate) == (1047, "08S01")
        assert "0x63" in err.message
        assert raw.query("SELECT 1") == [b"\x011"]
        assert raw.query("SELECT 'still', 'here'") == [b"\x05still\x04here"]
        line = one_log_line(proxy.log_path, raw.connection_id)
        assert "0x63" in line
        raw.send_packet(b"\x01", 0)  # COM_QUIT
        raw.expect_closed()
    finally:
        raw.close()
    assert len(session_lines(proxy.log_path, raw.connection_id)) == 1
    assert_alive(proxy, bystander, cluster)


def test_silent_client_gets_err_1159_after_handshake_timeout(cluster, start_proxy):
    p = start_proxy(proxy_settings={"handshake_timeout": 1.0})
    early = p.connect(autocommit=True)
    try:
        raw = Raw(p.host, p.port)
        try:
            raw.greeting()
            t0 = time.monotonic()
            _, payload = raw.expect_packet()
            waited = time.monotonic() - t0
            err = parse_err(payload)
            assert (err.code, err.sqlstate) == (1159, "08S01")
            assert 0.8 <= waited < 5, waited
            raw.expect_closed()
        finally:
            raw.close()
        line = one_log_line(p.log_path, raw.connection_id)
        assert "timeout" in line
        assert_alive(p, early, cluster)
    finally:
        early.close()


def test_client_silent_after_connect_without_reading_greeting(cluster, start_proxy):
    """Even a client that never reads gets closed after the timeout (no session is left behind)."""
    p = start_proxy(proxy_settings={"handshake_timeout": 1.0})
    socks = [socket.create_connection((p.host, p.port), timeout=10) for _ in range(20)]
    try:
        time.sleep(2.0)
        for s in socks:
            s.settimeout(5)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            # greeting then the 1159 ERR, then EOF
            n = int.from_bytes(data[:3], "little")
            rest = data[4 + n :]
            assert parse_err(rest[4:]).code == 1159
    finally:
        for s in socks:
            s.close()
    assert p.process.poll() is None
    conn = p.connect()
    conn.close()


def test_random_handshake_responses_never_crash_the_proxy(cluster, start_proxy):
    p = start_proxy(proxy_settings={"handshake_timeout": 2.0})
    early = p.connect(autocommit=True)
    rng = random.Random(20240229)
    outcomes = {"err": 0, "closed": 0}
    try:
        for i in range(200):
            raw = Raw(p.host, p.port, timeout=5)
            try:
                raw.greeting()
                body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
                mode = i % 3
                if mode == 0:  # a well-framed packet with random contents
                    raw.send_packet(body, 1)
                elif mode == 1:  # well-framed, random sequence id, sometimes a real-looking prefix
                    if rng.random() < 0.5:
                        body = struct.pack("<IIB", CLIENT_CAPS | rng.getrandbits(32), rng.getrandbits(32), rng.randrange(256)) + body
                    raw.send_packet(body, rng.randrange(256))
                else:  # raw bytes, no framing at all, then end of input
                    raw.send_raw(body)
                    raw.sock.shutdown(socket.SHUT_WR)
                pkt = raw.read_packet()
                if pkt is None:
                    assert mode == 2, f"case {i}: a well-framed packet got no ERR"
                    outcomes["closed"] += 1
                else:
                    parse_err(pkt[1])  # any reply must be an ERR packet ...
                    raw.expect_closed()  # ... followed by a close
                    outcomes["err"] += 1
            finally:
                raw.close()
        assert outcomes["err"] >= 134  # every framed case
        assert p.process.poll() is None
        assert_alive(p, early, cluster)
    finally:
        early.close()
    log = Path(p.log_path).read_text(errors="replace")
    assert "Traceback" not in log
    assert "unexpected error" not in log
