"""Framing, packets and auth: round trips, split/join at 16 MiB, known answers."""

from __future__ import annotations

import hashlib

import pytest

from proxy.protocol import auth
from proxy.protocol.constants import PROXY_CAPABILITIES, Capability, ServerStatus
from proxy.protocol.framing import PacketFramer, PacketTooLarge, ProtocolError, make_packet
from proxy.protocol.packets import (
    OK,
    HandshakeResponse41,
    HandshakeV10,
    make_eof,
    make_err,
    make_handshake_response,
    make_handshake_v10,
    make_ok,
    parse_eof,
    parse_err,
    parse_handshake_response,
    parse_handshake_v10,
    parse_ok,
)


def test_framer_single_packet_no_copy():
    raw = make_packet(b"\x03select 1", 0)
    f = PacketFramer()
    f.feed(raw)
    p = f.next_packet()
    assert p.raw is raw and bytes(p.payload) == b"\x03select 1" and p.seq == 0
    assert f.next_packet() is None


def test_framer_byte_by_byte_and_several_packets():
    raw = make_packet(b"abc", 3) + make_packet(b"", 4) + make_packet(b"x" * 300, 5)
    f = PacketFramer()
    got = []
    for i in range(len(raw)):
        f.feed(raw[i : i + 1])
        while (p := f.next_packet()) is not None:
            got.append((p.seq, bytes(p.payload)))
    assert got == [(3, b"abc"), (4, b""), (5, b"x" * 300)]


@pytest.mark.parametrize("size", [0xFFFFFF - 1, 0xFFFFFF, 0xFFFFFF + 1, 2 * 0xFFFFFF])
def test_split_and_join_at_16mib(size):
    payload = bytes(range(256)) * (size // 256) + b"\x07" * (size % 256)
    raw = make_packet(payload, 0)
    pieces = size // 0xFFFFFF + 1
    assert len(raw) == size + 4 * pieces
    f = PacketFramer()
    for i in range(0, len(raw), 1 << 20):
        f.feed(raw[i : i + (1 << 20)])
    p = f.next_packet()
    assert bytes(p.payload) == payload and bytes(p.raw) == raw
    assert p.last_seq == pieces - 1


def test_split_pieces_must_have_consecutive_sequence_ids():
    raw = bytearray(make_packet(b"y" * (0xFFFFFF + 5), 0))
    raw[4 + 0xFFFFFF + 3] = 9  # second piece's sequence id
    f = PacketFramer()
    f.feed(bytes(raw))
    with pytest.raises(ProtocolError) as e:
        f.next_packet()
    assert e.value.code == 1156


def test_packet_larger_than_max_allowed_is_refused_early():
    f = PacketFramer(max_payload=1000)
    f.feed(make_packet(b"z" * 2000, 0)[:10])
    with pytest.raises(PacketTooLarge) as e:
        f.next_packet()
    assert e.value.code == 1153


def test_handshake_v10_round_trip():
    hs = HandshakeV10("5.5.5-10.11.19-MariaDB-log", 42, bytes(range(1, 21)), int(PROXY_CAPABILITIES), 45, ServerStatus.AUTOCOMMIT, "mysql_native_password")
    back = parse_handshake_v10(make_handshake_v10(hs))
    assert back == hs


def test_handshake_response_round_trip():
    caps = int(Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA | Capability.CONNECT_WITH_DB | Capability.CONNECT_ATTRS | Capability.LONG_PASSWORD)
    r = HandshakeResponse41(caps, 1 << 24, 45, "app", b"\x01" * 20, "shop", "mysql_native_password", {"_client_name": "t", "program": "x"})
    assert parse_handshake_response(make_handshake_response(r)) == r


def test_handshake_response_garbage_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        parse_handshake_response(b"\x00" * 40)  # no PROTOCOL_41
    with pytest.raises(ProtocolError):
        parse_handshake_response(b"GET / HTTP/1.1\r\n")


def test_ok_and_err_round_trip():
    caps = Capability.PROTOCOL_41 | Capability.SESSION_TRACK
    ok = OK(5, 1 << 33, ServerStatus.AUTOCOMMIT | ServerStatus.IN_TRANS, 2, b"Rows matched: 5")
    assert parse_ok(make_ok(ok, caps), caps) == ok
    eof = parse_eof(make_eof(ServerStatus.AUTOCOMMIT | ServerStatus.MORE_RESULTS_EXISTS, warnings=3))
    assert (eof.warnings, eof.status) == (3, ServerStatus.AUTOCOMMIT | ServerStatus.MORE_RESULTS_EXISTS)
    e = parse_err(make_err(1045, "Access denied for user 'a'@'b' (using password: YES)"))
    assert (e.code, e.sqlstate) == (1045, "28000")


def test_native_password_known_answer():
    # token = SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw)))
    scramble = b"abcdefghijklmnopqrst"
    s1 = hashlib.sha1(b"secret").digest()
    expect = bytes(a ^ b for a, b in zip(s1, hashlib.sha1(scramble + hashlib.sha1(s1).digest()).digest()))
    assert auth.native_token("secret", scramble) == expect
    assert auth.verify("mysql_native_password", "secret", scramble, expect)
    assert not auth.verify("mysql_native_password", "other", scramble, expect)


def test_caching_sha2_verify_and_empty_password():
    sc = auth.new_scramble()
    tok = auth.caching_sha2_token("pw", sc)
    assert len(tok) == 32 and auth.verify("caching_sha2_password", "pw", sc, tok)
    assert auth.verify("caching_sha2_password", "", sc, b"")
    assert not auth.verify("caching_sha2_password", "pw", sc, b"")
    assert not auth.verify("client_ed25519", "pw", sc, tok)


def test_scramble_has_no_nul():
    for _ in range(200):
        s = auth.new_scramble()
        assert len(s) == 20 and b"\0" not in s


def test_err_packets_never_carry_a_client_library_code():
    # libmariadb (the mariadb CLI, sysbench) shows "2027 Received malformed packet" for an ERR
    # packet with a code in 2000-2999, and the proxy's message is lost.
    for code in (2003, 2013, 2027, 2999):
        with pytest.raises(ValueError, match="client-library"):
            make_err(code, "backend down")
    assert parse_err(make_err(9001, "Max connect timeout reached while reaching hostgroup 0")).code == 9001
    assert parse_err(make_err(1927, "Connection was killed")).sqlstate == "70100"


def test_text_row_gives_surrogate_escaped_text_its_bytes_back():
    from proxy.protocol.packets import make_text_row

    text = b"caf\xe9 \xff".decode("utf-8", "surrogateescape")  # client bytes that are not UTF-8
    assert make_text_row([text, "é", None]) == b"\x06caf\xe9 \xff" + b"\x02\xc3\xa9" + b"\xfb"
