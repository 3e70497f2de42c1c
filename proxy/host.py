"""What a client session may ask of the process that hosts it: a narrow interface, not the app.

Theory of operation: a ClientSession and its rooms (proxy.login, proxy.lending, proxy.prepared,
proxy.local_answers) need a handful of things from the running proxy: the live configuration and
routing snapshot, the stats registry, the pools, the client counters and the other sessions (for
KILL). `SessionHost` names exactly those, as a typing.Protocol that proxy.app.ProxyApp satisfies
structurally. The session modules import this module, never proxy.app, so the data plane has no
import cycle (type-only imports included) and a test can host sessions without the whole app.

Nothing here runs; it is a type.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .config import Config, Server
    from .pool import Pool
    from .router import Router
    from .session import PinReason
    from .stats import StatsRegistry


class SessionHost(Protocol):
    config: Config  # the live configuration (replaced whole by LOAD ... TO RUNTIME)
    router: Router  # the live routing snapshot (rules, hostgroups, statuses)
    stats: StatsRegistry
    clock: Callable[[], float]  # the event loop's clock: ClientSession.last_activity is on it
    pins: collections.Counter[PinReason]  # sessions pinned to the writer, by reason (counted once each)
    draining: bool  # shutting down: sessions close as soon as they are free outside a transaction
    server_version: str  # what the greeting advertises (the writer's own version string)
    collation: int  # the greeting's collation id (the writer's default)

    @property
    def sessions(self) -> Mapping[int, object]: ...  # every client session by its connection id (KILL)

    def pool_for(self, server: Server, username: str, password: str, capabilities: int, collation: int) -> Pool: ...
    def admit(self, session: object) -> bool: ...
    def login_user(self, username: str, limit: int) -> bool: ...
    def logout_user(self, username: str) -> None: ...
    def forget(self, session: object) -> None: ...
