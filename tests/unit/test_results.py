"""ResultScanner: finds the exact end of a reply and its final status, however the bytes are chunked."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.protocol.constants import Capability, ServerStatus
from proxy.protocol.framing import make_packet
from proxy.protocol.packets import DEFAULT_TRACKING, NO_TRACKING, OK, TrackingMask, lenenc_bytes, make_ok, parse_ok, parse_state_changes
from proxy.protocol.results import Reply, ResultScanner, apply_rewrites, execute_reply

from .replies import CAPS, Wire, err, ok, result_set

AC = ServerStatus.AUTOCOMMIT
MORE = ServerStatus.MORE_RESULTS_EXISTS


def feed_all(scanner: ResultScanner, data: bytes, cuts: list[int]) -> int:
    """Feed `data` cut at `cuts` as BackendConnection does (bytes the scanner holds back are fed
    again in front of the next chunk); return the absolute end offset reported (or -1)."""
    bounds = sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]
    start = 0  # absolute offset of the next chunk's first byte
    held = b""
    for b in bounds:
        chunk = held + data[start:b]
        base = start - len(held)
        r = scanner.feed(chunk)
        if r >= 0:
            return base + r
        held = chunk[len(chunk) - scanner.hold :] if scanner.hold else b""
        start = b
    return -1


def one_result(deprecate: bool, rows: int = 3, status: int = AC) -> bytes:
    w = Wire()
    result_set(w, 2, [[b"a" * i, None] for i in range(rows)], deprecate, status)
    return bytes(w.data)


# A grammar of replies: (reply kind, bytes, expected final status flags)
@st.composite
def replies(draw):
    deprecate = draw(st.booleans())
    kind = draw(st.sampled_from(["ok", "err", "result", "multi", "compound", "empty_rows", "row_fe", "prepare", "fetch", "fields", "simple", "cursor"]))
    w = Wire()
    status = AC | draw(st.sampled_from([0, ServerStatus.IN_TRANS]))
    reply = Reply.RESULT
    if kind == "ok":
        w.add(ok(status, affected=draw(st.integers(0, 1 << 40)), insert_id=draw(st.integers(0, 1 << 20))))
    elif kind == "err":
        w.add(err())
        status = -1  # no status flags in an ERR
    elif kind in ("result", "empty_rows", "row_fe"):
        nrows = 0 if kind == "empty_rows" else draw(st.integers(1, 20))
        rows = [[draw(st.binary(max_size=300)), None] for _ in range(nrows)]
        if kind == "row_fe":  # rows whose first byte is 0xFE/0xFF-like data must not end the result
            rows = [[b"\xfe" * 5, b"\xff"], [bytes(250) + b"x", b"y"]] + rows
        result_set(w, draw(st.integers(1, 5)), rows, deprecate, status)
    elif kind == "compound":
        # MariaDB's compound statements and stored programs (BEGIN NOT ATOMIC FOR rec IN (SELECT ...)
        # DO EXECUTE IMMEDIATE 'SELECT ... LIMIT 0' ...): one result per SELECT they run, whose column
        # EOF carries whatever flags the server has at that moment -- MORE_RESULTS_EXISTS, and
        # CURSOR_EXISTS from the loop's own cursor -- then the program's OK. Rows follow the column
        # EOF whatever it says: only a cursor requested by COM_STMT_EXECUTE ends a reply there.
        cursor = ServerStatus.CURSOR_EXISTS
        for _ in range(draw(st.integers(1, 4))):
            flags = draw(st.sampled_from([0, MORE, MORE | cursor, cursor, MORE | cursor | ServerStatus.NO_INDEX_USED]))
            rows = [[draw(st.binary(max_size=40))] for _ in range(draw(st.integers(0, 3)))]
            result_set(w, 1, rows, deprecate, status | MORE | (flags & cursor), columns_status=AC | flags)
        w.add(ok(status))
    elif kind == "cursor":
        # COM_STMT_EXECUTE asking for a cursor: the column EOF with CURSOR_EXISTS ends the reply.
        reply = Reply.CURSOR
        w.add(b"\x02")
        from .replies import column_def
        from proxy.protocol.packets import make_eof

        w.add(column_def("a")).add(column_def("b"))
        status |= ServerStatus.CURSOR_EXISTS
        w.add(ok(status, eof_header=True) if deprecate else make_eof(status))
    elif kind == "multi":
        n = draw(st.integers(2, 4))
        for i in range(n):
            last = i == n - 1
            if draw(st.booleans()):
                result_set(w, 1, [[b"x"]], deprecate, status | (0 if last else MORE))
            else:
                w.add(ok(status | (0 if last else MORE)))
    elif kind == "prepare":
        reply = Reply.PREPARE
        cols, params = draw(st.integers(0, 4)), draw(st.integers(0, 4))
        w.add(b"\x00" + (7).to_bytes(4, "little") + cols.to_bytes(2, "little") + params.to_bytes(2, "little") + b"\x00\x00\x00")
        from .replies import column_def
        from proxy.protocol.packets import make_eof

        for _ in range(params):
            w.add(column_def("?"))
        if params and not deprecate:
            w.add(make_eof(AC))
        for i in range(cols):
            w.add(column_def(f"c{i}"))
        if cols and not deprecate:
            w.add(make_eof(AC))
        status = None
    elif kind == "fetch":
        reply = Reply.FETCH
        for _ in range(draw(st.integers(0, 5))):
            w.add(b"\x00\x00" + b"\x03abc")
        from proxy.protocol.packets import make_eof

        w.add(ok(status | ServerStatus.LAST_ROW_SENT, eof_header=True) if deprecate else make_eof(status | ServerStatus.LAST_ROW_SENT))
        status |= ServerStatus.LAST_ROW_SENT
    elif kind == "fields":
        reply = Reply.FIELDS
        from .replies import column_def
        from proxy.protocol.packets import make_eof

        for i in range(draw(st.integers(0, 4))):
            w.add(column_def(f"f{i}"))
        w.add(make_eof(status))
    else:
        reply = Reply.SIMPLE
        w.add(ok(status))
    return reply, deprecate, bytes(w.data), status


@settings(max_examples=400, deadline=None)
@given(replies(), st.lists(st.integers(0, 4000), max_size=12), st.binary(max_size=20))
@example(  # regression: the last packet of a reply ends exactly where a chunk ends, after a skip
    (Reply.PREPARE, True, b"\x0c\x00\x00\x01\x00\x07\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x1c\x00\x00\x02\x03def\x02db\x01t\x01t\x01?\x01?\x0c!\x00\xff\x00\x00\x00\xfd\x00\x00\x00\x00\x00", None),
    [20],
    b"",
)
def test_end_found_under_any_chunking(reply_case, cuts, trailing):
    reply, deprecate, data, status = reply_case
    sc = ResultScanner(reply, deprecate)
    end = feed_all(sc, data + trailing, cuts + [len(data)] if trailing else cuts)
    assert end == len(data)
    assert sc.done
    if status is not None:
        assert sc.status == status


def test_ok_fields_parsed():
    sc = ResultScanner(Reply.RESULT, True)
    data = Wire().add(ok(AC | ServerStatus.IN_TRANS, affected=300, insert_id=70000)).data
    assert sc.feed(bytes(data)) == len(data)
    assert (sc.affected_rows, sc.last_insert_id) == (300, 70000)
    assert sc.status & ServerStatus.IN_TRANS


def test_err_is_captured():
    sc = ResultScanner(Reply.RESULT, False)
    data = bytes(Wire().add(err(1146, "Table 'x.y' doesn't exist")).data)
    assert sc.feed(data) == len(data)
    assert sc.error is not None and sc.error[1:3] == (1146).to_bytes(2, "little")


def test_err_in_the_middle_of_rows_ends_the_reply():
    w = Wire()
    from .replies import column_def, text_row

    w.add(b"\x01").add(column_def("a")).add(text_row([b"1"])).add(err(1317, "Query execution was interrupted"))
    sc = ResultScanner(Reply.RESULT, True)
    assert feed_all(sc, bytes(w.data), [3, 9]) == len(w.data)
    assert sc.error is not None


def test_local_infile_pauses_then_resumes():
    sc = ResultScanner(Reply.RESULT, False)
    req = bytes(Wire().add(b"\xfb/tmp/data.csv").data)
    assert sc.feed(req) == len(req)
    assert sc.local_infile and not sc.done
    sc.expect_infile_reply()
    reply = bytes(Wire(seq=5).add(ok(AC, affected=10)).data)
    assert sc.feed(reply) == len(reply)
    assert sc.done and sc.affected_rows == 10


@pytest.mark.parametrize("deprecate", [False, True])
def test_row_larger_than_16mib_is_not_mistaken_for_a_terminator(deprecate):
    # A row whose first column is a 17 MB string starts with 0xFE (8-byte length prefix) and is
    # split into a 0xFFFFFF packet plus a continuation; neither may end the result.
    big = b"\xfe" + (17_000_000).to_bytes(8, "little") + b"z" * 17_000_000
    w = Wire()
    from .replies import column_def

    w.add(b"\x01").add(column_def("a"))
    if not deprecate:
        from proxy.protocol.packets import make_eof

        w.add(make_eof(AC))
    w.add(big)
    w.add(ok(AC, eof_header=True) if deprecate else __import__("proxy.protocol.packets", fromlist=["make_eof"]).make_eof(AC))
    data = bytes(w.data)
    sc = ResultScanner(Reply.RESULT, deprecate)
    assert feed_all(sc, data, list(range(0, len(data), 65536))) == len(data)


def test_cursor_result_ends_after_column_eof():
    from proxy.protocol.packets import make_eof

    from .replies import column_def

    w = Wire().add(b"\x01").add(column_def("a")).add(make_eof(AC | ServerStatus.CURSOR_EXISTS))
    sc = ResultScanner(Reply.CURSOR, False)
    assert sc.feed(bytes(w.data)) == len(w.data)
    assert sc.status & ServerStatus.CURSOR_EXISTS


def test_cursor_flag_in_a_compound_statements_column_eof_does_not_end_a_query_reply():
    """What MariaDB sends for BEGIN NOT ATOMIC FOR rec IN (SELECT ...) DO EXECUTE IMMEDIATE
    'SELECT ... LIMIT 0'; END FOR; END without CLIENT_DEPRECATE_EOF (captured from 10.11): the
    column EOF says 0x6A (MORE_RESULTS_EXISTS | NO_INDEX_USED | CURSOR_EXISTS), then the row EOF."""
    from proxy.protocol.packets import make_eof

    from .replies import column_def

    w = Wire()
    for _ in range(2):
        w.add(b"\x01").add(column_def("x")).add(make_eof(0x6A)).add(make_eof(0x6A))
    w.add(ok(AC | ServerStatus.NO_INDEX_USED))
    data = bytes(w.data)
    sc = ResultScanner(Reply.RESULT, False)
    assert sc.feed(data) == len(data)
    assert sc.results == 3 and sc.status == AC | ServerStatus.NO_INDEX_USED


def test_execute_reply_asks_for_a_cursor_only_with_a_cursor_flag():
    head = b"\x17" + (7).to_bytes(4, "little")
    assert execute_reply(head + b"\x00" + b"\x01\x00\x00\x00") is Reply.RESULT
    assert execute_reply(head + b"\x01" + b"\x01\x00\x00\x00") is Reply.CURSOR
    assert execute_reply(head + b"\x08" + b"\x01\x00\x00\x00") is Reply.RESULT  # MariaDB's PARAMETER_COUNT_AVAILABLE


def test_no_reply_commands_are_done_at_once():
    assert ResultScanner(Reply.NONE, False).done


def test_statistics_reply_is_any_single_packet():
    data = bytes(Wire().add(b"Uptime: 5  Threads: 1").data)
    sc = ResultScanner(Reply.ANY_ONE, False)
    assert sc.feed(data) == len(data)


# ---- session tracking: the flag is seen, and stripped for clients that did not ask for it --------

CHANGED = ServerStatus.SESSION_STATE_CHANGED
STATE = b"\x02\x02\x011"  # SESSION_TRACK_STATE_CHANGE "1", as MariaDB sends it


def relay_all(scanner: ResultScanner, data: bytes, cuts: list[int]) -> bytes:
    """What BackendConnection relays of `data` cut at `cuts` (held bytes wait, rewrites applied)."""
    bounds = sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]
    out, held, start = [], b"", 0
    for b in bounds:
        chunk = held + data[start:b]
        start = b
        r = scanner.feed(chunk)
        held = b""
        if r < 0 and scanner.hold:
            held, chunk = chunk[-scanner.hold :], chunk[: -scanner.hold]
        elif r >= 0:
            chunk = chunk[:r]
        out.append(apply_rewrites(chunk, scanner.rewrites, scanner.mask) if scanner.rewrites else chunk)
        if r >= 0:
            break
    return b"".join(out)


def tracked_ok(status: int, info: bytes = b"", insert_id: int = 0) -> bytes:
    return make_ok(OK(1, insert_id, status | CHANGED, 0, info, STATE), CAPS)


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(0, 200), max_size=6), info=st.sampled_from([b"", b"Rows matched: 1  Changed: 1  Warnings: 0"]))
def test_state_info_is_stripped_for_a_client_without_session_track(cuts, info):
    reply = make_packet(tracked_ok(AC, info, insert_id=7), 1)
    sc = ResultScanner(Reply.RESULT, False, NO_TRACKING)
    relayed = relay_all(sc, reply, cuts)
    assert sc.done and sc.changed
    # Exactly what the server sends a client without CLIENT_SESSION_TRACK: flag off, no state, info
    # still length-encoded.
    expected = b"\x00\x01\x07" + int(AC).to_bytes(2, "little") + b"\x00\x00" + (lenenc_bytes(info) if info else b"")
    assert relayed == make_packet(expected, 1)
    assert parse_ok(relayed[4:], Capability.PROTOCOL_41).status == AC


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(0, 400), max_size=8), deprecate=st.booleans())
def test_flag_in_a_result_set_terminator_is_seen_and_cleared(cuts, deprecate):
    w = Wire()
    result_set(w, 2, [[b"x" * 40, None]] * 3, deprecate, int(AC | MORE | CHANGED))
    w.add(tracked_ok(AC))
    data = bytes(w.data)
    sc = ResultScanner(Reply.RESULT, deprecate, NO_TRACKING)
    relayed = relay_all(sc, data, cuts)
    assert sc.done and sc.changed and sc.status == AC | CHANGED  # as the server said
    assert not any(p & CHANGED for p in statuses(relayed, deprecate)), relayed
    # Stripping changed only the flagged packets: the rows are intact.
    assert relayed.count(b"x" * 40) == 3


def statuses(data: bytes, deprecate: bool) -> list[int]:
    """Status flags of every OK/EOF-like packet in `data` (small packets starting 0x00/0xFE)."""
    out, pos = [], 0
    while pos + 4 <= len(data):
        n = int.from_bytes(data[pos : pos + 3], "little")
        p = data[pos + 4 : pos + 4 + n]
        if p[:1] == b"\xfe" and n < 9 and not deprecate:
            out.append(int.from_bytes(p[3:5], "little"))
        elif p[:1] in (b"\x00", b"\xfe") and n >= 7:
            out.append(parse_ok(p, Capability.PROTOCOL_41).status)
        pos += 4 + n
    return out


def test_without_strip_the_reply_is_relayed_untouched():
    reply = make_packet(tracked_ok(AC), 1)
    sc = ResultScanner(Reply.RESULT, False)
    assert relay_all(sc, reply, [3, 9]) == reply
    assert sc.changed and sc.rewrites is None


def test_plain_ok_is_not_flagged():
    sc = ResultScanner(Reply.RESULT, False, NO_TRACKING)
    reply = make_packet(ok(AC), 1)
    assert relay_all(sc, reply, []) == reply
    assert not sc.changed

    assert sc.states is None


# ---- session tracking for a client that negotiated it: exactly what its own settings produce ------


def sysvar(name: bytes, value: bytes) -> bytes:
    data = lenenc_bytes(name) + lenenc_bytes(value)
    return b"\x00" + lenenc_bytes(data)


def schema_entry(name: bytes) -> bytes:
    return b"\x01" + lenenc_bytes(lenenc_bytes(name))


def ok_with(entries: bytes, status: int = AC, info: bytes = b"") -> bytes:
    return make_ok(OK(0, 0, status | CHANGED, 0, info, entries), CAPS)


@pytest.mark.parametrize(
    "mask, entries, kept",
    [
        # MariaDB's defaults: the schema and five variables, no state-change entry.
        (DEFAULT_TRACKING, sysvar(b"time_zone", b"+01:00") + STATE, sysvar(b"time_zone", b"+01:00")),
        (DEFAULT_TRACKING, sysvar(b"sql_mode", b"ANSI") + STATE, b""),  # SET sql_mode: nothing to report
        (DEFAULT_TRACKING, STATE, b""),  # SET @v, CALL p(): nothing
        (DEFAULT_TRACKING, schema_entry(b"d") + STATE, schema_entry(b"d")),  # USE d
        (DEFAULT_TRACKING, b"\x05\x02\x01T", b"\x05\x02\x01T"),  # transaction state: the client's own setting
        (TrackingMask(state_change=True), sysvar(b"sql_mode", b"ANSI") + STATE, STATE),
        (TrackingMask(variables=None), sysvar(b"sql_mode", b"ANSI") + STATE, sysvar(b"sql_mode", b"ANSI")),
        (TrackingMask(schema=False), schema_entry(b"d") + STATE, b""),
        (NO_TRACKING, sysvar(b"time_zone", b"+01:00") + schema_entry(b"d"), b""),
    ],
)
def test_state_information_is_filtered_to_the_clients_own_tracking(mask, entries, kept):
    info = b"Rows matched: 1"
    reply = make_packet(ok_with(entries, info=info), 1)
    sc = ResultScanner(Reply.RESULT, False, mask)
    relayed = relay_all(sc, reply, [5])
    assert sc.changed and sc.states == [reply[4:]]
    out = parse_ok(relayed[4:], CAPS if mask.enabled else Capability.PROTOCOL_41)
    assert out.info == info
    if kept:
        assert (out.status & CHANGED, out.session_state) == (CHANGED, kept)
    else:
        assert out.status & CHANGED == 0 and out.session_state == b""
        direct = make_ok(OK(0, 0, AC, 0, info), CAPS)  # what the server sends when nothing is reported
        assert relayed[4:] == direct


def test_reported_schema_and_variables_are_read_from_the_oks():
    oks = [ok_with(sysvar(b"sql_mode", b"STRICT_TRANS_TABLES") + schema_entry(b"d") + STATE), ok(AC), ok_with(schema_entry(b"") + sysvar(b"time_zone", b"SYSTEM"))]
    changes = parse_state_changes(oks)
    assert changes.schema_changed and changes.schema is None  # DROP DATABASE of the current one
    assert changes.variables == {"sql_mode": "STRICT_TRANS_TABLES", "time_zone": "SYSTEM"}


@pytest.mark.parametrize("info", [b"", b"Rows matched: 1  Changed: 1  Warnings: 0"])
@pytest.mark.parametrize(
    "mask", [DEFAULT_TRACKING, NO_TRACKING, TrackingMask(variables=None), TrackingMask(variables=frozenset({"last_gtid"}))]
)
def test_a_write_ok_with_only_last_gtid_is_read_without_parsing_and_shown_as_the_filter_would(info, mask):
    # Every write's OK carries last_gtid (the proxy's own tracking, for consistent reads): the
    # scanner notes it, does not call it an unseen state change, and gives the client exactly
    # what the general filter would (the entry only to a client that tracks the variable).
    from proxy.protocol.packets import filter_session_state

    state = b"\x00\x11\tlast_gtid\x060-1-10"
    payload = make_ok(OK(1, 5, ServerStatus.AUTOCOMMIT | ServerStatus.SESSION_STATE_CHANGED, 0, info, state), Capability.SESSION_TRACK)
    data = make_packet(payload, 1)
    scanner = ResultScanner(Reply.RESULT, False, mask)
    scanner.feed(data)
    assert scanner.gtid == b"0-1-10"
    assert not scanner.changed and scanner.states is None
    relayed = apply_rewrites(data, scanner.rewrites, mask) if scanner.rewrites else data
    assert relayed == make_packet(filter_session_state(payload, mask), 1)
    assert bool(parse_ok(relayed[4:]).status & ServerStatus.SESSION_STATE_CHANGED) == (b"last_gtid" in relayed)


def test_an_ok_with_last_gtid_and_more_takes_the_general_path():
    state = b"\x00\x11\tlast_gtid\x060-1-10" + b"\x02\x02\x011"  # and a state change entry
    payload = make_ok(OK(1, 0, ServerStatus.AUTOCOMMIT | ServerStatus.SESSION_STATE_CHANGED, 0, b"", state), Capability.SESSION_TRACK)
    scanner = ResultScanner(Reply.RESULT, False, DEFAULT_TRACKING)
    scanner.feed(make_packet(payload, 1))
    assert scanner.gtid is None and scanner.changed and scanner.states == [payload]
    changes = parse_state_changes(scanner.states)
    assert changes.variables == {"last_gtid": "0-1-10"} and changes.other
