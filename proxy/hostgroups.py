"""Hostgroups: which servers may take a statement, and a weighted choice among them.

Theory of operation: pure functions over the configured servers. Only ONLINE servers with a positive
weight are candidates; the choice is weighted random so load spreads in proportion to weight. The
order returned by `candidates` is the order in which connection attempts are made, so a dead server
costs one connect timeout, not a failed session.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from .config import Server


def candidates(servers: Iterable[Server], rng: random.Random = random._inst) -> list[Server]:  # type: ignore[attr-defined]
    """ONLINE servers in weighted-random order (each pick removes the server from the draw)."""
    pool = [s for s in servers if s.status == "ONLINE" and s.weight > 0]
    out: list[Server] = []
    while pool:
        pick = rng.choices(pool, weights=[s.weight for s in pool])[0]
        out.append(pick)
        pool.remove(pick)
    return out
