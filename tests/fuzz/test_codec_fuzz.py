"""Any bytes either parse or raise ProtocolError — nothing else (h11's invariant)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.protocol.constants import Capability
from proxy.protocol.framing import PacketFramer, ProtocolError
from proxy.protocol.packets import parse_change_user, parse_eof, parse_err, parse_handshake_response, parse_handshake_v10, parse_ok
from proxy.protocol.results import Reply, ResultScanner

PARSERS = [parse_handshake_response, parse_handshake_v10, parse_ok, parse_err, parse_eof, lambda b: parse_change_user(b, 0xFFFFFFFF)]


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(range(len(PARSERS))))
def test_parsers_raise_only_protocol_error(data, which):
    try:
        PARSERS[which](data)
    except ProtocolError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_framer_raises_only_protocol_error(chunks):
    f = PacketFramer(max_payload=1 << 16)
    try:
        for c in chunks:
            f.feed(c)
            while f.next_packet() is not None:
                pass
    except ProtocolError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20), st.sampled_from(list(Reply)), st.booleans())
def test_scanner_never_raises_on_garbage(chunks, reply, deprecate):
    # A misbehaving server must not crash the relay: the scanner may end early or wait, not raise.
    sc = ResultScanner(reply, deprecate)
    for c in chunks:
        r = sc.feed(c)
        assert -1 <= r <= len(c)
        if r >= 0:
            break


def test_handshake_response_needs_protocol_41():
    try:
        parse_handshake_response(b"\x00\x00\x00\x00" + b"\x00" * 40)
    except ProtocolError as e:
        assert "4.1" in str(e)
    else:
        raise AssertionError("accepted a pre-4.1 handshake")
    assert Capability.PROTOCOL_41
