"""Which server a read for a reader hostgroup may run on, when it must see a write or may lag at most
so much: the decision both the text protocol (proxy.command_loop) and COM_STMT_EXECUTE
(proxy.prepared) take before running a read.

Theory of operation (proxy.causal says what a read must see; rules.model.Reads what a rule or a
hint adds: a causal_reads mode for this statement, a max_lag_ms bound):
- nothing required and no bound: the usual path (`USUAL`), at no cost beyond this call, which the
  callers make only when the session has a mode, a token, hints or the rule a `Reads`;
- a bound: only the hostgroup's ONLINE servers the monitor last saw within it; none: the writer;
- a requirement: a server known to have applied it (and within the bound) is preferred and the
  read takes the usual path; else, in mode `fast` (or with no server left), the writer; else the
  caller waits on a replica within the bound (`WAIT`: proxy.lending.ready_caught_up), which runs
  it there or, when the wait runs out, on the writer.
Counters per mode and outcome (proxy.stats) are kept here, except a wait's, which the wait keeps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .causal import FAST, NONE
from .hostgroups import candidates

if TYPE_CHECKING:
    from rules.gtid import Position
    from rules.model import Reads

    from .lending import BackendLending

USUAL, WRITER, WAIT = 0, 1, 2


def consulted(causal: Any, hints: tuple, reads: Reads | None) -> bool:
    """Must `choose` be asked at all? (A session with no mode and no token, a statement with no
    hints and no rule's Reads goes on along the usual path without it.)"""
    return causal.mode != NONE or bool(causal.token) or bool(hints) or reads is not None


def choose(s: Any, lending: BackendLending, hostgroup: int, hints: tuple, reads: Reads | None) -> tuple[int, Position | None, str]:
    """(USUAL | WRITER | WAIT, the position to wait for, the causal_reads mode) for a read of
    session `s` (proxy.client.ClientSession) for `hostgroup`; a server to use may be set as the
    lending room's preference."""
    causal = s.causal
    mode = causal.mode if reads is None or reads.causal_reads is None else reads.causal_reads
    required = causal.required(hints, mode)
    max_lag = None if reads is None else reads.max_lag_ms
    if required is None and max_lag is None:
        return USUAL, None, mode
    stats, positions = s.host.stats, s.host.positions
    servers = [sv for sv in s.router.hostgroups.servers(hostgroup) if sv.status == "ONLINE" and sv.weight > 0]
    if max_lag is not None:
        servers = [sv for sv in servers if positions.lag_within(sv.address, max_lag)]
        if not servers:  # every replica lags too much (or its lag is unknown): the writer
            stats.lag_bounded_reads["writer"] += 1
            return WRITER, None, mode
        if required is None:
            _prefer(lending, hostgroup, servers)
            stats.lag_bounded_reads["replica"] += 1
            return USUAL, None, mode
    caught_up = [sv for sv in servers if positions.has(sv.address, required)]
    if caught_up:
        _prefer(lending, hostgroup, caught_up)
        stats.causal[(mode, "at_position")] = stats.causal.get((mode, "at_position"), 0) + 1
        if max_lag is not None:
            stats.lag_bounded_reads["replica"] += 1
        return USUAL, None, mode
    if mode == FAST or not servers:
        stats.causal[(mode, "writer")] = stats.causal.get((mode, "writer"), 0) + 1
        if max_lag is not None:
            stats.lag_bounded_reads["writer"] += 1
        return WRITER, None, mode
    if max_lag is not None:
        _prefer(lending, hostgroup, servers)  # the replica to wait on is one within the bound
    return WAIT, required, mode


def counted_wait(s: Any, conn: Any, reads: Reads | None) -> None:
    """After a WAIT: a lag-bounded read counts where it ended up running."""
    if reads is not None and reads.max_lag_ms is not None:
        s.host.stats.lag_bounded_reads["writer" if conn.hostgroup == s.writer_hg else "replica"] += 1


def _prefer(lending: BackendLending, hostgroup: int, servers: list) -> None:
    """Run the read on one of `servers`: the session's usual one when it is among them."""
    if lending.preferred(hostgroup) not in servers:
        lending.prefer(hostgroup, servers[0] if len(servers) == 1 else candidates(servers)[0])
