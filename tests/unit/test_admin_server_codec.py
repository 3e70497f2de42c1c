"""Result-set encoding (proxy.protocol.packets, used by the admin port): round trips with our own
parsers and the result scanner, and a cross-check with PyMySQL's packet parser."""

from __future__ import annotations

import pymysql.protocol
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.protocol.constants import (
    BINARY_COLLATION,
    UTF8MB4_COLLATION,
    Capability,
    ColumnFlag,
    ColumnType,
    ServerStatus,
)
from proxy.protocol.framing import PacketFramer, ProtocolError, make_packet
from proxy.protocol.packets import (
    ColumnDefinition,
    column_definitions,
    lenenc_int,
    make_column_definition,
    make_result_set,
    make_result_terminator,
    make_text_row,
    parse_column_definition,
    parse_eof,
    parse_ok,
    parse_text_row,
)
from proxy.protocol.results import Reply, ResultScanner

AC = int(ServerStatus.AUTOCOMMIT)
CAPS = int(Capability.PROTOCOL_41)
CAPS_DEPRECATE = CAPS | Capability.DEPRECATE_EOF


def test_column_definition_round_trip():
    c = ColumnDefinition("Queries", ColumnType.LONGLONG, BINARY_COLLATION, 21, ColumnFlag.NUM | ColumnFlag.BINARY, 0, "stats", "t", "t", "q")
    assert parse_column_definition(make_column_definition(c)) == c


def test_column_definition_read_by_pymysql():
    c = ColumnDefinition("hostname", ColumnType.VAR_STRING, UTF8MB4_COLLATION, 1024, 0, 0, "main", "mysql_servers")
    raw = make_column_definition(c)
    f = pymysql.protocol.FieldDescriptorPacket(raw, "utf8")
    assert (f.name, f.type_code, f.charsetnr, f.length, f.db, f.table_name) == ("hostname", 0xFD, UTF8MB4_COLLATION, 1024, b"main", "mysql_servers")


def test_column_definition_bad_fixed_length_is_a_protocol_error():
    raw = bytearray(make_column_definition(ColumnDefinition("a")))
    raw[raw.index(0x0C, 10)] = 0x0B
    with pytest.raises(ProtocolError):
        parse_column_definition(bytes(raw))


def test_text_row_values_and_null():
    row = make_text_row([1, "é", None, 0.25, b"\x00\xff", True, "x" * 300])
    assert parse_text_row(row, 7) == [b"1", "é".encode(), None, b"0.25", b"\x00\xff", b"1", b"x" * 300]
    with pytest.raises(ProtocolError):
        parse_text_row(row + b"\x00", 7)  # trailing garbage
    with pytest.raises(ProtocolError):
        parse_text_row(row[:-5], 7)  # truncated


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=300), st.binary(max_size=300)), max_size=8))
def test_text_row_round_trip(values):
    def text(v):
        return None if v is None else v if isinstance(v, bytes) else str(v).encode()

    assert parse_text_row(make_text_row(values), len(values)) == [text(v) for v in values]


def test_column_types_follow_the_values():
    cols = column_definitions(("i", "f", "s", "b", "n", "mixed"), [(1, 0.5, "a", b"x", None, 1), (2, 1, "bb", b"yy", None, "t")])
    assert [c.type for c in cols] == [ColumnType.LONGLONG, ColumnType.DOUBLE, ColumnType.VAR_STRING, ColumnType.BLOB, ColumnType.VAR_STRING, ColumnType.VAR_STRING]
    assert [c.charset for c in cols] == [BINARY_COLLATION, BINARY_COLLATION, UTF8MB4_COLLATION, BINARY_COLLATION, UTF8MB4_COLLATION, UTF8MB4_COLLATION]
    assert cols[0].flags & ColumnFlag.NUM and not cols[2].flags & ColumnFlag.NUM
    assert cols[2].length == 2 * 4  # utf8mb4: 4 bytes a character, as servers report it


def _wire(payloads: list[bytes]) -> bytes:
    return b"".join(make_packet(p, i + 1) for i, p in enumerate(payloads))


@pytest.mark.parametrize("caps", [CAPS, CAPS_DEPRECATE], ids=["eof", "deprecate_eof"])
@pytest.mark.parametrize("nrows", [0, 1, 50])
def test_result_set_is_read_whole_by_the_scanner(caps, nrows):
    """The proxy's own result scanner (what it uses on backend replies) finds where the result
    set ends and its status flags: the encoding follows the protocol, EOF or DEPRECATE_EOF."""
    rows = [(i, f"row {i}", None) for i in range(nrows)]
    payloads = make_result_set(column_definitions(("id", "name", "n"), rows), rows, caps, AC | ServerStatus.NO_INDEX_USED)
    data = _wire(payloads) + b"trailing"
    sc = ResultScanner(Reply.RESULT, bool(caps & Capability.DEPRECATE_EOF))
    assert sc.feed(data) == len(data) - len(b"trailing")
    assert sc.done and sc.error is None
    assert sc.status == AC | ServerStatus.NO_INDEX_USED


@pytest.mark.parametrize("caps", [CAPS, CAPS_DEPRECATE], ids=["eof", "deprecate_eof"])
def test_result_set_layout(caps):
    rows = [(1, "a"), (None, "b")]
    payloads = make_result_set(column_definitions(("x", "y"), rows), rows, caps, AC)
    f = PacketFramer()
    f.feed(_wire(payloads))
    pkts = [bytes(p.payload) for p in iter(f.next_packet, None)]
    assert pkts[0] == lenenc_int(2)
    assert [parse_column_definition(p).name for p in pkts[1:3]] == ["x", "y"]
    rest = pkts[3:] if caps & Capability.DEPRECATE_EOF else pkts[4:]
    if not caps & Capability.DEPRECATE_EOF:
        assert parse_eof(pkts[3]).status == AC
    assert [parse_text_row(p, 2) for p in rest[:-1]] == [[b"1", b"a"], [None, b"b"]]
    end = rest[-1]
    assert end[0] == 0xFE
    if caps & Capability.DEPRECATE_EOF:
        assert len(end) >= 7 and parse_ok(end, caps).status == AC  # OK with the EOF header
    else:
        assert len(end) == 5 and parse_eof(end).status == AC


def test_terminator_is_what_com_field_list_ends_with():
    for caps in (CAPS, CAPS_DEPRECATE):
        data = make_packet(make_result_terminator(caps, AC), 1)
        sc = ResultScanner(Reply.FIELDS, bool(caps & Capability.DEPRECATE_EOF))
        assert sc.feed(data) == len(data) and sc.status == AC


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 6))
def test_any_bytes_parse_or_raise_the_protocol_error(data, columns):
    for parse in (parse_column_definition, lambda d: parse_text_row(d, columns)):
        try:
            parse(data)
        except ProtocolError:
            pass
