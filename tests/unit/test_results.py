"""ResultScanner: finds the exact end of a reply and its final status, however the bytes are chunked."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.protocol.constants import ServerStatus
from proxy.protocol.results import Reply, ResultScanner

from .replies import Wire, err, ok, result_set

AC = ServerStatus.AUTOCOMMIT
MORE = ServerStatus.MORE_RESULTS_EXISTS


def feed_all(scanner: ResultScanner, data: bytes, cuts: list[int]) -> int:
    """Feed `data` cut at `cuts`; return the absolute end offset reported (or -1)."""
    bounds = sorted(set(c for c in cuts if 0 < c < len(data))) + [len(data)]
    start = 0
    for b in bounds:
        r = scanner.feed(data[start:b])
        if r >= 0:
            return start + r
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
    kind = draw(st.sampled_from(["ok", "err", "result", "multi", "empty_rows", "row_fe", "prepare", "fetch", "fields", "simple"]))
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
    sc = ResultScanner(Reply.RESULT, False)
    assert sc.feed(bytes(w.data)) == len(w.data)
    assert sc.status & ServerStatus.CURSOR_EXISTS


def test_no_reply_commands_are_done_at_once():
    assert ResultScanner(Reply.NONE, False).done


def test_statistics_reply_is_any_single_packet():
    data = bytes(Wire().add(b"Uptime: 5  Threads: 1").data)
    sc = ResultScanner(Reply.ANY_ONE, False)
    assert sc.feed(data) == len(data)
