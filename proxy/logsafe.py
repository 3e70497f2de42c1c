"""Log hygiene: what a client sends cannot forge log lines, and a flood cannot fill the disk.

Theory of operation
-------------------
Two threats, two tools.

Injection. Usernames, schema names, SQL text and error messages come from clients and end up in
log messages. A username such as ``"x\\n2026-01-01 INFO rwproxy: session=1 user=admin logged in"``
would otherwise print a second, forged line. The fix is at the root, not per call site:
`install()` puts an `EscapeControlChars` filter and a `SafeFormatter` on the handlers where
logging is configured (the composition root, `proxy.__main__`), so every record of every module,
whatever builds it, goes out as one line:

* the message (``msg % args``) has its control characters escaped: ``\\n`` ``\\r`` ``\\t`` as
  those two-character escapes, other C0/C1 controls, DEL and the Unicode line/paragraph
  separators as ``\\xNN`` / ``\\uNNNN`` (`escape`);
* a traceback or stack attached to the record keeps its lines (it is for developers), but every
  line after the first is prefixed with ``"  | "``, so no line of it can start like a record.

Backslashes are not escaped: a literal backslash-n in a username reads the same as an escaped
newline, but it cannot start a line, which is what forging needs. Code that builds a message
outside logging (an error text that is then logged) needs nothing more.

Floods. A client can cause one warning per connection (bad handshake, wrong password, unknown
command); 10,000 connections a second must not become 10,000 lines a second. `LogLimiter` lets
`burst` records per key through in each `window` seconds, counts the rest, and writes one summary
when the window ends: ``"<the last suppressed message> (repeated 431 times in the last 10 s)"``.
Keys are chosen by the call site: the kind of event ("access denied"), not the client, so a
flood from many addresses still collapses; at most `max_keys` keys are tracked (the oldest is
summarised and dropped first). The summary is written by a timer on the running event loop, or
by the next event of that key when no loop runs; so an event is reported at most one window late.

Never: drop a record silently (suppressed ones are counted and summarised), take a lock, or do I/O
other than the logging call itself. `LogLimiter` is for the event loop's thread only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

__all__ = ["EscapeControlChars", "LogLimiter", "SafeFormatter", "escape", "install"]


def _escape_table() -> dict[int, str]:
    table = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
    table.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})
    return table


_TABLE = _escape_table()
_TABLE_KEEP_NEWLINE = {k: v for k, v in _TABLE.items() if k != 0x0A}


def escape(text: str) -> str:
    """`text` with every control character (and U+2028/U+2029) written as an escape: one line."""
    return text.translate(_TABLE)


class EscapeControlChars(logging.Filter):
    """Handler filter: the record's message is rendered once, escaped, and frozen (args cleared)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: the handler reports it as usual
            return True
        record.msg = escape(message)
        record.args = None
        return True


_CONTINUATION = "\n  | "


class SafeFormatter(logging.Formatter):
    """A Formatter whose traceback and stack lines are marked as continuations of their record."""

    def formatException(self, ei: object) -> str:  # noqa: N802 - logging's name
        return _mark(super().formatException(ei))  # type: ignore[arg-type]

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return _mark(super().formatStack(stack_info))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        # exc_text is cached on the record by Formatter.format (already marked by formatException);
        # a message that still holds a newline (a record that bypassed the filter) is marked too.
        return text.replace("\n", _CONTINUATION) if "\n" in text and not record.exc_info and not record.stack_info else text


def _mark(text: str) -> str:
    return text.translate(_TABLE_KEEP_NEWLINE).replace("\n", _CONTINUATION)


def install(logger: logging.Logger | None = None) -> None:
    """Escape control characters in every record that `logger`'s handlers (default: the root's)
    write. Call once, after logging is configured. Idempotent."""
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, EscapeControlChars) for f in handler.filters):
            handler.addFilter(EscapeControlChars())
        current = handler.formatter
        if not isinstance(current, SafeFormatter):
            fmt = current._fmt if current is not None else None  # noqa: SLF001 - re-use the configured format
            datefmt = current.datefmt if current is not None else None
            handler.setFormatter(SafeFormatter(fmt, datefmt))


# ---- rate limiting -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0
    last: tuple[int, str, tuple[object, ...]] = (logging.INFO, "", ())
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class LogLimiter:
    """At most `burst` records per key every `window` seconds through `logger`; the rest are
    counted and summarised once per window ("... (repeated N times in the last 10 s)")."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        window: float = 10.0,
        burst: int = 5,
        max_keys: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("window > 0, burst >= 1 and max_keys >= 1")
        self.logger = logger
        self.window = window
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._windows: dict[Hashable, _Window] = {}
        self.suppressed_total = 0  # for tests and operators: records counted instead of written

    def log(self, level: int, key: Hashable, msg: str, *args: object) -> bool:
        """Log `msg % args` at `level` unless `key` used up its burst in this window. Returns
        whether the record was written now (False: counted, summarised later)."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self.clock()
        w = self._windows.get(key)
        if w is None or now - w.start >= self.window:
            if w is not None:
                self._close(key, w)
            elif len(self._windows) >= self.max_keys:
                oldest = next(iter(self._windows))
                self._close(oldest, self._windows[oldest])
            w = self._windows[key] = _Window(now)
        if w.logged < self.burst:
            w.logged += 1
            self.logger.log(level, msg, *args)
            return True
        w.suppressed += 1
        self.suppressed_total += 1
        w.last = (level, msg, args)
        if w.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass  # no loop: the next event of this key writes the summary
            else:
                w.timer = loop.call_later(max(0.0, w.start + self.window - now), self._expire, key, w)
        return False

    def _expire(self, key: Hashable, w: _Window) -> None:
        w.timer = None
        if self._windows.get(key) is w:
            self._close(key, w)

    def _close(self, key: Hashable, w: _Window) -> None:
        self._windows.pop(key, None)
        if w.timer is not None:
            w.timer.cancel()
            w.timer = None
        if w.suppressed:
            level, msg, args = w.last
            self.logger.log(level, msg + " (repeated %d times in the last %g s)", *args, w.suppressed, self.window)

    def flush(self) -> None:
        """Write the summaries of every open window now (e.g. at shutdown)."""
        for key, w in list(self._windows.items()):
            self._close(key, w)
