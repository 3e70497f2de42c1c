"""Pins: why a client session keeps its writer connection, and when that ends.

Theory of operation: under multiplexing a session gives its backend connection back after every
statement, unless the connection holds state that cannot be replayed elsewhere: a temporary table,
LOCK TABLES, GET_LOCK, user variables, SQL_CALC_FOUND_ROWS, an untrackable SET, state the server's
session tracking reported inside a statement. Each cause is a PinReason (proxy.session); a session
with any reason is pinned: it routes everything to the writer and keeps that connection.

`Pins` is the per-session set of reasons. It takes reasons from a classified statement and its
decision (`take`), and drops the ones whose cause ended: the last temporary table dropped, UNLOCK
TABLES, RELEASE_ALL_LOCKS() (`track_causes`). User variables, SQL_CALC_FOUND_ROWS, untrackable SETs
and the like leave no sign of ending: those pins last for the session (or until a reset). Every
reason is counted once per session in the host's `pins` counter (admin and metrics read it).

Pure bookkeeping: no I/O, no connection handling (the session releases or keeps connections).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

from rules.classify import Classification, Kind
from rules.model import Decision

from .session import PinReason, pin_reasons_of

_SET = Kind.SET


class Pins:
    __slots__ = ("reasons", "pinned", "temp_tables", "_counter", "_changed", "_log")

    def __init__(self, counter: collections.Counter[PinReason], changed: Callable[[], None], log: Callable[..., None]) -> None:
        self.reasons: set[PinReason] = set()
        self.pinned = False  # routed to and holding the writer
        self.temp_tables: set[str] = set()  # "schema.table" of the temporary tables the session created
        self._counter = counter
        self._changed = changed  # the routing view must be rebuilt (pinned changed)
        self._log = log

    def clear(self) -> None:
        """A new login or COM_RESET_CONNECTION: the state behind every pin is gone."""
        self.reasons, self.temp_tables = set(), set()
        if self.pinned:
            self.pinned = False
            self._changed()

    def pin(self, reason: PinReason) -> None:
        """The session keeps its writer connection (and routes everything there) from now on."""
        if reason not in self.reasons:
            self.reasons.add(reason)
            self._counter[reason] += 1
            self._log(logging.DEBUG, "session pinned to the writer: %s", reason.value)
        if not self.pinned:
            self.pinned = True
            self._changed()

    def unpin(self, reason: PinReason) -> None:
        if reason in self.reasons:
            self.reasons.discard(reason)
            self._log(logging.DEBUG, "pin ended: %s", reason.value)
            if not self.reasons:
                self.pinned = False
                self._changed()

    def take(self, cls: Classification, decision: Decision) -> None:
        """The pins a statement that ran gives its session (whether it succeeded or not: a failed
        multi-statement may still have changed anything)."""
        reasons = pin_reasons_of(cls)
        if decision.pin_writer and not reasons:
            reasons = {PinReason.UNTRACKABLE_SET if cls.set_targets or cls.kind is _SET else PinReason.OTHER}
        for reason in reasons:
            self.pin(reason)

    def track_causes(self, cls: Classification, schema: str | None) -> None:
        """A statement succeeded: end the pins whose cause it ended (and note new temporary tables)."""
        names = {t if "." in t else f"{schema}.{t}" for t in cls.tables_written}
        if cls.temp_table == "CREATE":
            self.temp_tables |= names
        elif cls.temp_table == "DROP" or (cls.kind.name == "DDL" and cls.fingerprint.text.startswith("DROP TABLE")):
            self.temp_tables -= names  # (DROP TABLE drops a temporary table of that name first)
            if not self.temp_tables:
                self.unpin(PinReason.TEMP_TABLE)
        if cls.kind.name == "UNLOCK_TABLES":
            self.unpin(PinReason.LOCK_TABLES)
        if "RELEASE_ALL_LOCKS" in cls.session_functions:
            self.unpin(PinReason.GET_LOCK)
