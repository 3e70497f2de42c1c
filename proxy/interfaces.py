"""The narrow interfaces between a client session, its rooms and the process that hosts them.

Theory of operation: the data plane's modules depend one way only (client -> command_loop ->
login / prepared / local_answers / tracking -> lending -> pool -> backend), type-only imports
included. Where a part must call back up that chain, it is typed against a typing.Protocol that
names exactly what it uses, never against the class above it:
- `SessionHost`: what a ClientSession and its rooms may ask of the running proxy (the live
  configuration and routing snapshot, the stats registry, the pools, the client counters, the other
  sessions for KILL). proxy.app.ProxyApp satisfies it structurally; the session modules never import
  proxy.app, and a test can host sessions without the whole app.
- `SessionCore`: what every room may read or call of the session it serves (who the client is, the
  session's state on the servers, writing to the client). Each room extends it with the few things
  only it needs (lending.Borrower, prepared.StatementOwner, ...), so a room's module says in one
  place what it depends on.

Nothing here runs; these are types.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .config import Config, Server, User
    from .pool import Pool
    from .protocol.auth import Stage1
    from .protocol.framing import ProtocolError
    from .router import Router
    from .session import PinReason, SessionState
    from .stats import StatsRegistry
    from .throttle import LoginThrottle
    from .causal import Positions
    from .tls import FrontendTLS


class SessionHost(Protocol):
    config: Config  # the live configuration (replaced whole by LOAD ... TO RUNTIME)
    router: Router  # the live routing snapshot (rules, hostgroups, statuses)
    stats: StatsRegistry
    throttle: LoginThrottle  # failed logins per address and account
    positions: Positions  # GTIDs: the newest write, what each server has applied (proxy.causal)
    clock: Callable[[], float]  # the event loop's clock: ClientSession.last_activity is on it
    pins: collections.Counter[PinReason]  # sessions pinned to the writer, by reason (counted once each)
    draining: bool  # shutting down: sessions close as soon as they are free outside a transaction
    server_version: str  # what the greeting advertises (the writer's own version string)
    collation: int  # the greeting's collation id (the writer's default)
    tls: FrontendTLS  # the clients' TLS context (None when off) and the caching_sha2 RSA key pair
    # caching_sha2_password's cache, as a server keeps it: username -> (the stored secret it was
    # verified against, SHA256(SHA256(password))) after a full authentication
    sha2_checks: dict[str, tuple[str, bytes]]
    mariadb_capabilities: int  # the writer's MariaDB extended capabilities (what the greeting may offer of them)

    @property
    def sessions(self) -> Mapping[int, object]: ...  # every client session by its connection id (KILL)

    def pool_for(self, server: Server, username: str, password: str, capabilities: int, collation: int) -> Pool: ...
    async def topology_changed(self, timeout: float) -> None: ...
    def backend_secret(self, server: Server, username: str, configured: str) -> str | Stage1: ...  # the password now
    def learn_stage1(self, username: str, stored_hash: str, stage1: bytes) -> None: ...  # returns at the next routing snapshot, or after timeout
    def admit(self, session: object) -> tuple[int, str] | None: ...
    def count_client(self, session: object) -> bool: ...
    def handshake_over(self, session: object) -> None: ...
    def partial_packet(self, session: object, size: int) -> None: ...
    def packet_done(self, session: object) -> None: ...
    def login_user(self, username: str, limit: int) -> bool: ...
    def logout_user(self, username: str) -> None: ...
    def forget(self, session: object) -> None: ...


class SessionCore(Protocol):
    host: SessionHost
    id: int  # the proxy's connection id (the handshake's, CONNECTION_ID()'s, KILL's)
    user: User | None
    username: str
    capabilities: int  # what the client negotiated (cut to the proxy's; MariaDB's extended ones in bits 32..63)
    collation: int
    closed: bool
    busy: bool  # a command is in flight (or the session is logging in)
    status: int  # server status flags of the last reply
    writer_hg: int
    txn_hg: int | None  # the hostgroup holding the session's open transaction
    multiplexing: bool
    state: SessionState  # the variables and schema every connection running its statements must carry
    router: Router  # the routing snapshot its next statement uses

    def log(self, level: int, msg: str, *args: object) -> None: ...
    def send(self, payload: bytes, seq: int) -> None: ...
    def send_err(self, seq: int, code: int, message: str, sqlstate: str | None = None) -> None: ...
    def protocol_error(self, seq: int, e: ProtocolError) -> None: ...
    def spawn(self, work: Coroutine[object, object, None]) -> None: ...
    def free(self) -> None: ...
    def close(self) -> None: ...
