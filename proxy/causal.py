"""Consistent reads: which replica may run a read so that it sees the writes it must see.

Theory of operation (MaxScale's causal_reads, with MariaDB GTIDs; rules.gtid does the arithmetic):
- Every backend connection reports `last_gtid` through the server's session tracking, so each
  session learns the GTID of its own last write from the write's OK (`CausalReads.wrote`). The
  process keeps the newest GTID of every session's writes (`Positions.newest`, for mode `global`)
  and what each server is known to have applied: its `@@gtid_current_pos` from the monitor's checks,
  raised by every wait that succeeded on it (`Positions.applied`).
- A session's requirement for its next reads (`CausalReads.required`): nothing in mode `none`; its
  own last write in `local` and `fast`; the newest write of any session in `global`; in every mode
  also a position the client presented (the statement's `/* rwproxy:min_gtid=D-S-N */` hint, or
  `SET rwproxy_min_gtid = 'D-S-N,...'` for the session): a token from another connection or
  another proxy, e.g. a serverless function's previous request.
- A read with a requirement goes to a server of its hostgroup known to have applied it (no wait);
  else, in `fast`, to the writer; else it waits on a replica (MASTER_GTID_WAIT, up to
  causal_reads_timeout) and then runs there, or on the writer if the wait ran out. The waiting is
  the lending room's slow path; this module only decides.
- A query rule's `causal_reads` overrides the session's mode for the statements it matches
  (rules.model.Reads; `required(hints, mode)`).
- Lag-bounded reads (a rule's `max_lag_ms`, or the statement's `/* max_lag_ms=N */` hint) go only to
  a server the monitor last saw at most N ms behind its source (`Positions.lag_within`; the monitor
  reads Seconds_Behind_Master, so whole seconds; a stopped replica counts lag_when_null; unknown lag
  counts as too much, a writer is 0 behind), else to the writer.
- `SELECT @@last_gtid` answers the session's own last write (a multiplexed connection's own
  @@last_gtid is somebody else's): the token to hand to the next request.

Counters (served at position / waited / timed out / fell back to the writer, wait time) live in
the stats registry (proxy.stats), per mode.
"""

from __future__ import annotations

from collections.abc import Callable

from rules.gtid import Position, covers, format_position, merge_into, parse_position

NONE, LOCAL, FAST, GLOBAL = "none", "local", "fast", "global"


class Positions:
    """What the process knows of GTIDs: the newest write of any session, and per server what it
    has applied (from the monitor's checks and from waits that succeeded)."""

    __slots__ = ("newest", "applied", "_checked", "_behind")

    def __init__(
        self, checked: Callable[[str], str | None] = lambda address: None, behind: Callable[[str], int | None] = lambda address: None
    ) -> None:
        self.newest: Position = {}
        self.applied: dict[str, Position] = {}  # server address -> its position
        self._checked = checked  # the monitor's last reading of a server's @@gtid_current_pos
        self._behind = behind  # the monitor's last reading of a server's lag, in seconds (None: unknown)

    def lag_within(self, address: str, max_lag_ms: int) -> bool:
        """The monitor last saw `address` at most `max_lag_ms` behind its source (unknown: no)."""
        seconds = self._behind(address)
        return seconds is not None and seconds * 1000 <= max_lag_ms

    def wrote(self, gtid: Position) -> None:
        merge_into(self.newest, gtid.items())

    def reached(self, address: str, position: Position) -> None:
        """`address` has applied at least `position` (a check read it, or a wait returned 0)."""
        merge_into(self.applied.setdefault(address, {}), position.items())

    def has(self, address: str, required: Position) -> bool:
        if covers(self.applied.get(address, {}), required):
            return True
        text = self._checked(address)
        if text:
            self.reached(address, parse_position(text))
            return covers(self.applied[address], required)
        return False


class CausalReads:
    """One session's consistent-read state: its mode, its own last write, a presented token."""

    __slots__ = ("mode", "timeout", "last", "token", "positions")

    def __init__(self, positions: Positions) -> None:
        self.positions = positions
        self.mode = NONE
        self.timeout = 10.0
        self.last: Position = {}  # the session's own last write
        self.token: Position = {}  # SET rwproxy_min_gtid (other connections' writes it must see)

    def configure(self, mode: str, timeout: float) -> None:
        self.mode, self.timeout = mode, timeout

    def wrote(self, last_gtid: str) -> None:
        """The server reported the session's write as `last_gtid` (session tracking)."""
        gtid = parse_position(last_gtid)
        if gtid:
            merge_into(self.last, gtid.items())
            self.positions.wrote(gtid)

    def set_token(self, text: str) -> bool:
        """SET rwproxy_min_gtid = '...': False when the text names no GTID ('' clears it)."""
        position = parse_position(text)
        if text.strip() and not position:
            return False
        self.token = position
        return True

    def required(self, hints: tuple[tuple[str, str], ...], mode: str | None = None) -> Position | None:
        """The position a read must see now, or None (nothing to wait for). `mode`: a query rule's
        causal_reads for this statement (None: the session's)."""
        if mode is None:
            mode = self.mode
        need: Position = {}
        if mode == LOCAL or mode == FAST:
            need = dict(self.last)
        elif mode == GLOBAL:
            need = dict(self.positions.newest)
        if self.token:
            merge_into(need, self.token.items())
        for key, value in hints:
            if key == "min_gtid":
                merge_into(need, parse_position(value).items())
        return need or None

    def last_gtid(self) -> str:
        """The session's last write, as @@last_gtid prints it ('' before any)."""
        return format_position(self.last)
