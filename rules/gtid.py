"""Replication positions (MariaDB GTIDs): parse, compare, merge. Pure: no I/O.

Theory of operation: a MariaDB GTID is domain-server-sequence (`0-1-100`); sequence numbers grow
within a domain, whatever server wrote them. A server's position (`@@gtid_current_pos`,
`@@gtid_slave_pos`) lists the last GTID it applied per domain (`0-1-100,1-2-7`). A position *covers*
a requirement when, for every domain the requirement names, its sequence number is at least the
requirement's: that replica has applied the write. Positions merge by taking the newest GTID per
domain (the proxy's view of the newest write for `causal_reads = global`).

Positions are dicts domain -> (server_id, sequence); texts are what MariaDB prints and what
MASTER_GTID_WAIT takes. A text that does not parse yields an empty position (which covers nothing
but requires nothing either): a malformed token from a client never blocks a read forever.
(MySQL's uuid:interval GTID sets are not handled here.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

Position = dict[int, tuple[int, int]]  # domain -> (server_id, sequence)

_GTID = re.compile(r"^\s*(\d+)-(\d+)-(\d+)\s*$")


def parse_position(text: str | bytes | None) -> Position:
    """`0-1-100,1-2-7` -> {0: (1, 100), 1: (2, 7)}; anything malformed is left out."""
    if text is None:
        return {}
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    out: Position = {}
    for part in text.split(","):
        m = _GTID.match(part)
        if m is None:
            continue
        domain, server, seq = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if domain not in out or out[domain][1] < seq:
            out[domain] = (server, seq)
    return out


def format_position(position: Mapping[int, tuple[int, int]]) -> str:
    return ",".join(f"{d}-{s}-{n}" for d, (s, n) in sorted(position.items()))


def covers(position: Mapping[int, tuple[int, int]], required: Mapping[int, tuple[int, int]]) -> bool:
    """Has a server at `position` applied everything `required` names?"""
    for domain, (_, seq) in required.items():
        have = position.get(domain)
        if have is None or have[1] < seq:
            return False
    return True


def merge(*positions: Mapping[int, tuple[int, int]]) -> Position:
    """The newest GTID per domain of all `positions`."""
    out: Position = {}
    for position in positions:
        for domain, gtid in position.items():
            if domain not in out or out[domain][1] < gtid[1]:
                out[domain] = gtid
    return out


def merge_into(target: Position, items: Iterable[tuple[int, tuple[int, int]]]) -> bool:
    """Merge in place; True if `target` moved."""
    moved = False
    for domain, gtid in items:
        have = target.get(domain)
        if have is None or have[1] < gtid[1]:
            target[domain] = gtid
            moved = True
    return moved
