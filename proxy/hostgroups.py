"""Hostgroups: which servers may take a statement, and a weighted choice among them.

Theory of operation: `Hostgroups` is an immutable snapshot built from the configured servers and the
replication hostgroup pairs. Membership follows ProxySQL: a server belongs to the hostgroup it is
configured in, and when a pair says `writer_is_also_reader` the writer's servers are members of the
reader hostgroup too (so reads still have somewhere to go with no replica). Only ONLINE servers with
a positive weight are candidates; the choice is weighted random so load spreads in proportion to
weight. The order `candidates` returns is the order of connection attempts, so a dead server costs
one connect timeout, not a failed session. The monitor (a later issue) will publish new snapshots
as server statuses change; sessions read the snapshot per statement.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from rules.model import ReplicationHostgroup

from .config import Server


class Hostgroups:
    __slots__ = ("members", "online")

    def __init__(self, servers: Iterable[Server], pairs: Iterable[ReplicationHostgroup] = ()) -> None:
        members: dict[int, list[Server]] = {}
        servers = tuple(servers)
        for s in servers:
            members.setdefault(s.hostgroup_id, []).append(s)
        for p in pairs:
            if p.writer_is_also_reader:
                readers = members.setdefault(p.reader_hostgroup, [])
                for s in members.get(p.writer_hostgroup, ()):
                    if all(r.address != s.address for r in readers):
                        readers.append(s)
        self.members: dict[int, tuple[Server, ...]] = {hg: tuple(v) for hg, v in members.items()}
        # Hostgroups with at least one server that can take traffic now.
        self.online: frozenset[int] = frozenset(hg for hg, v in self.members.items() if any(_usable(s) for s in v))

    def servers(self, hostgroup: int) -> tuple[Server, ...]:
        return self.members.get(hostgroup, ())


def _usable(s: Server) -> bool:
    return s.status == "ONLINE" and s.weight > 0


def candidates(servers: Iterable[Server], rng: random.Random = random._inst) -> list[Server]:  # type: ignore[attr-defined]
    """ONLINE servers in weighted-random order (each pick removes the server from the draw)."""
    pool = [s for s in servers if _usable(s)]
    out: list[Server] = []
    while pool:
        pick = pool[0] if len(pool) == 1 else rng.choices(pool, weights=[s.weight for s in pool])[0]
        out.append(pick)
        pool.remove(pick)
    return out
