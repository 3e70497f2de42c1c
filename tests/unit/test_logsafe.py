"""proxy.logsafe: one record = one line whatever a client sends; floods are counted, not written."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from proxy.logsafe import LogLimiter, escape, install


def _logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    logger = logging.getLogger(name)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    return logger, stream


def test_escape_makes_one_line():
    assert escape("a\nb\rc\td\x00e\x1bf\x7fg\x85h\u2028i") == "a\\nb\\rc\\td\\x00e\\x1bf\\x7fg\\x85h\\u2028i"
    assert escape("plain ünïcode 日本") == "plain ünïcode 日本"


def test_a_username_with_a_newline_cannot_forge_a_line():
    logger, stream = _logger("test.logsafe.forge")
    install(logger)
    forged = "x\n2026-01-01 00:00:00,000 INFO rwproxy: session=1 client=127.0.0.1:1 user=admin logged in"
    logger.warning("session=%d user=%s access denied", 7, forged)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "user=x\\n2026-01-01" in lines[0]


def test_tracebacks_keep_their_lines_but_cannot_start_a_record():
    logger, stream = _logger("test.logsafe.tb")
    install(logger)
    try:
        raise ValueError("bad name 'x\nINFO rwproxy: forged'")
    except ValueError:
        logger.exception("unexpected error for user=%s", "u\nv")
    lines = stream.getvalue().splitlines()
    assert "user=u\\nv" in lines[0]
    assert lines[1] == "Traceback (most recent call last):"
    assert all(line.startswith("  | ") for line in lines[2:]), lines
    assert not any(line.startswith("INFO") for line in lines)


def test_install_is_idempotent():
    logger, _ = _logger("test.logsafe.idem")
    install(logger)
    install(logger)
    assert len(logger.handlers[0].filters) == 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_limiter_writes_burst_then_a_summary_with_the_count():
    logger, stream = _logger("test.logsafe.limit")
    clock = Clock()
    limiter = LogLimiter(logger, window=10, burst=3, clock=clock)
    for i in range(434):
        limiter.log(logging.WARNING, "access denied", "access denied for user=%s", f"u{i}")
    assert len(stream.getvalue().splitlines()) == 3
    clock.now += 10
    limiter.log(logging.WARNING, "access denied", "access denied for user=%s", "next")
    lines = stream.getvalue().splitlines()
    assert "access denied for user=u433 (repeated 431 times in the last 10 s)" in lines[3]
    assert lines[4].endswith("access denied for user=next")
    assert limiter.suppressed_total == 431


def test_limiter_keys_are_independent_and_bounded():
    logger, stream = _logger("test.logsafe.keys")
    clock = Clock()
    limiter = LogLimiter(logger, window=10, burst=1, max_keys=2, clock=clock)
    for key in ("a", "b", "a", "b"):
        limiter.log(logging.WARNING, key, "event %s", key)
    assert stream.getvalue().count("\n") == 2
    limiter.log(logging.WARNING, "c", "event %s", "c")  # evicts "a": its count is written first
    text = stream.getvalue()
    assert "event a (repeated 1 times in the last 10 s)" in text
    assert text.rstrip().endswith("event c")
    limiter.flush()
    assert "event b (repeated 1 times" in stream.getvalue()


def test_limiter_summary_is_written_by_the_loop_without_a_next_event():
    logger, stream = _logger("test.logsafe.timer")

    async def main() -> None:
        limiter = LogLimiter(logger, window=0.2, burst=1)
        for _ in range(50):
            limiter.log(logging.WARNING, "k", "flood")
        await asyncio.sleep(0.4)

    asyncio.run(main())
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].endswith("flood (repeated 49 times in the last 0.2 s)"), lines


def test_limiter_does_nothing_below_the_level():
    logger, stream = _logger("test.logsafe.level")
    logger.setLevel(logging.ERROR)
    limiter = LogLimiter(logger)
    assert limiter.log(logging.WARNING, "k", "x") is False
    assert stream.getvalue() == "" and limiter.suppressed_total == 0


def test_limiter_arguments():
    with pytest.raises(ValueError):
        LogLimiter(logging.getLogger("x"), burst=0)
