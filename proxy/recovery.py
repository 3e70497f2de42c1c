"""Recovery: when a statement's backend connection fails, or the statement runs too long.

Theory of operation: a CommandLoop hands a statement to one backend connection and relays the reply.
This room decides what happens when that goes wrong, so the failure is invisible where it is safe
and a clear, fast error where it is not:
- `lost(conn, exc)`: a connection the session holds closed (the server died, the monitor SHUNNED
  it, the proxy dropped it). Before any byte of the statement's reply reached the client, a
  provable read with no session state at stake runs again on another server ([monitor]
  query_retries_on_failure times; the failed server is avoided): the client sees nothing. Anything
  else may have run — a write is never run twice — so the client gets ERR 1158 saying so (1317
  after a timeout). Mid-reply nothing coherent can be said: the session ends, as a direct
  connection would. A lost connection that held the session's transaction or pinned state makes
  the session's next command get ERR 1927 (then it closes); an idle one is just reopened on demand.
- `overdue(now_ns, default)`: the host's sweeper asks, for each busy session, whether the
  statement in flight ran past its timeout (a query rule's `timeout`, else [proxy]
  default_query_timeout). It is stopped once: KILL QUERY on its server over a connection of the
  proxy's own (the client gets the server's own ERR 1317); a server that does not answer the KILL
  within min(connect_timeout, 1 s) — frozen, unreachable — loses the connection, which `lost`
  then handles (retry of a read that had not started replying).

Nothing is armed per statement: the sweeper reads each busy session's start time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from rules.classify import Classification

from .backend import BackendConnection, BackendError, kill_query
from .interfaces import SessionCore
from .lending import BackendLending
from .logsafe import LogLimiter
from .pins import Pins
from .prepared import PreparedStatements
from .protocol.constants import Command, ErrorCode
from .protocol.framing import Packet

log = logging.getLogger("rwproxy.session")
_limited = LogLimiter(log)  # warnings every session would repeat about one server: one line, then a count
_RETRYABLE = frozenset((Command.QUERY, Command.STMT_EXECUTE))  # commands a failed read may be run again for


class Statement(Protocol):
    """The command loop, as recovery sees the statement in flight (proxy.command_loop.CommandLoop)."""

    current: BackendConnection | None
    post: tuple | None
    stat: Classification | None
    t0: int
    packet: Packet | None
    first_chunk: bool
    conns: dict[int, BackendConnection]

    def is_read(self) -> bool: ...
    def answered_here(self) -> None: ...
    def redispatch(self, packet: Packet) -> None: ...


class Recovering(SessionCore, Protocol):
    """The session whose statement recovers (proxy.client.ClientSession)."""

    passthrough: bool
    lost: str | None
    pins: Pins
    lending: BackendLending
    prepared: PreparedStatements


def _lost_message(conn: BackendConnection) -> str:
    return (
        f"Lost connection to backend server {conn.server.address} (hostgroup {conn.hostgroup}); this session's "
        "transaction or session state (temporary tables, user variables, locks) is gone: reconnect"
    )


class Recovery:
    __slots__ = ("session", "loop", "retries", "killing")

    def __init__(self, session: Recovering, loop: Statement) -> None:
        self.session = session
        self.loop = loop
        self.retries: tuple[Packet, int] | None = None  # (packet, how often it was run again elsewhere)
        self.killing: tuple[BackendConnection, int] | None = None  # (connection, t0) of a statement past its timeout

    # ---- a connection lost ---------------------------------------------------------------------

    def lost(self, conn: BackendConnection, exc: Exception | None) -> None:
        s, loop = self.session, self.loop
        if s.closed:
            return
        hg = conn.hostgroup
        if loop.conns.get(hg) is conn:
            s.lending.release(conn)
        why = exc or "closed by server"
        state_lost = hg == s.txn_hg or (hg == s.writer_hg and (s.pins.pinned or s.passthrough))
        if conn is loop.current and conn.scanner is not None:
            if loop.first_chunk:
                self._before_reply(conn, why, state_lost)
                return
            # Mid-reply the client cannot be given a coherent ERR: the session is over, as it would
            # be if the client had been connected to the server directly.
            s.log(logging.WARNING, "backend %s (hostgroup %d) lost during a reply: %s", conn.server.address, hg, why)
            s.close()
        elif conn.lost_sync:  # the client was told (proxy.backend): nothing it reads can be trusted now
            s.log(logging.WARNING, "backend %s (hostgroup %d) dropped: %s", conn.server.address, hg, why)
            s.close()
        elif state_lost:
            # (In passthrough mode nothing is classified, so what the writer held is unknown.)
            s.log(logging.WARNING, "backend %s (hostgroup %d) lost with session state on it: %s", conn.server.address, hg, why)
            s.lost = _lost_message(conn)
        else:
            s.log(logging.INFO, "backend %s (hostgroup %d) closed an idle connection (%s); reopened on demand", conn.server.address, hg, why)

    def _before_reply(self, conn: BackendConnection, why: object, state_lost: bool) -> None:
        """The statement in flight lost its connection before any byte of its reply reached the
        client: run a safe read again elsewhere, else tell the client."""
        s, loop = self.session, self.loop
        timed_out = self._stopping(conn)
        loop.current = None
        address, hg = conn.server.address, conn.hostgroup
        packet = loop.packet
        r = self.retries
        retried = r[1] if r is not None and r[0] is packet else 0  # (a new statement is a new packet)
        if (
            not state_lost and s.multiplexing and s.txn_hg is None and not s.pins.pinned and loop.is_read()
            and packet is not None and packet.payload[0] in _RETRYABLE and not s.prepared.long_data_sent
            and retried < s.host.config.monitor.query_retries_on_failure
        ):  # fmt: skip
            self.retries = (packet, retried + 1)
            _limited.log(logging.WARNING, ("retry", address), "backend %s (hostgroup %d) lost before replying (%s); read retried on another server", address, hg, why)
            s.lending.avoid(conn.server)
            loop.post = None
            loop.redispatch(packet)
            return
        s.log(logging.WARNING, "backend %s (hostgroup %d) lost before replying: %s", address, hg, why)
        if state_lost:
            s.lost = _lost_message(conn)
        loop.post = None
        if timed_out:
            s.send_err(1, ErrorCode.QUERY_INTERRUPTED, f"Query execution was interrupted (rwproxy: {why})")
        else:
            s.send_err(
                1, ErrorCode.NET_READ_ERROR,
                f"rwproxy: lost the connection to backend {address} (hostgroup {hg}) while it ran this statement ({why}); "
                + ("it was not retried because it may have been applied: check before running it again" if not loop.is_read() else "no other server could run it"),
            )  # fmt: skip
        loop.answered_here()
        s.free()

    # ---- statement timeouts --------------------------------------------------------------------

    def overdue(self, now_ns: int, default: float) -> bool:
        """Has the statement in flight run past its timeout? Then stop it, once."""
        loop = self.loop
        conn = loop.current
        if conn is None or loop.stat is None or self._stopping(conn):
            return False
        post = loop.post  # (a COM_QUERY's: classification, its decision or None when unrouted, text)
        decision = None if post is None or isinstance(post[0], int) else post[1]
        rule_ms = None if decision is None else decision.timeout_ms
        limit = rule_ms / 1000 if rule_ms else default
        if not limit or now_ns - loop.t0 < limit * 1e9:
            return False
        self.killing = (conn, loop.t0)
        self.session.log(logging.WARNING, "statement ran past its %gs timeout on %s (hostgroup %d): KILL QUERY", limit, conn.server.address, conn.hostgroup)
        asyncio.get_running_loop().create_task(self._stop(conn, limit))
        return True

    async def _stop(self, conn: BackendConnection, limit: float) -> None:
        s = self.session
        bound = min(s.host.config.connect_timeout, 1.0)
        user = s.user
        try:
            secret = s.host.backend_secret(conn.server, user.backend_username, user.backend_password)
            err = await kill_query(conn.server, user.backend_username, secret, conn.thread_id, timeout=bound)
        except BackendError as e:
            err = e.cause
        if err is not None and self._stopping(conn):
            s.log(logging.WARNING, "could not stop the statement on %s (%s): dropping the connection", conn.server.address, getattr(err, "message", err))
            conn.abort(f"the statement ran past its {limit:g}s timeout and the server did not answer KILL QUERY")

    def _stopping(self, conn: BackendConnection) -> bool:
        """Is the statement in flight on `conn` one whose timeout passed?"""
        k, loop = self.killing, self.loop
        return k is not None and k[0] is conn and k[1] == loop.t0 and conn is loop.current
