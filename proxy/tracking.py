"""What a finished command changed in its client session, learned from the command and its reply.

Theory of operation: after every routed command's reply (`record`, called by the command loop with
what the command was), the session's picture of its own state is brought up to date:
- a successful SET, USE or COM_INIT_DB changes the tracked state (proxy.session.SessionState) that
  every connection running the session's next statement must carry; a SET that cannot be replayed
  elsewhere pins the session instead (proxy.pins);
- a statement that leaves state only its own connection has (a temporary table, a lock, a user
  variable, ...) pins the session, and one that ends such a cause unpins it;
- the server's own session tracking is ground truth. The default schema it reports after any command
  (USE, COM_INIT_DB, DROP DATABASE of the current schema, which leaves none) becomes the session's
  and the connection's, in every mode, passthrough included (`schema_reported`); a variable a SET
  assigned by an expression is replayed as the value the server reports it computed
  (SessionState.apply); SERVER_SESSION_STATE_CHANGED after a statement whose text does not show the
  change (a procedure, a function or a trigger did it) pins the session and has its connection reset
  before anyone else gets it (`state_changed_unseen`);
- COM_RESET_CONNECTION drops everything the session had set, pinned or prepared;
- statement commands are recorded by the prepared-statement room.
When the change ran on the connection that is already synced to the session, that connection is
marked as carrying the new state (no replay next time).

Pure bookkeeping on the session's rooms: no I/O of its own (a reset releases connections through
the lending room).
"""

from __future__ import annotations

import logging
import re
from typing import Protocol

from rules.classify import Classification, Kind, SetScope
from rules.model import Decision

from .backend import BackendConnection
from .interfaces import SessionCore
from .causal import CausalReads
from .pins import Pins
from .prepared import PreparedStatements
from .protocol.constants import Command
from .protocol.framing import ProtocolError
from .protocol.packets import StateChanges, parse_state_changes
from .protocol.results import ResultScanner
from .session import GTID_VARIABLE, PinReason


class _Reply(Protocol):
    """The command loop's flags for the reply in flight (proxy.command_loop.CommandLoop)."""

    rewrite_id: bytes | None
    reset_on_release: bool


class Tracked(SessionCore, Protocol):
    """The session whose state is recorded (proxy.client.ClientSession)."""

    pins: Pins
    prepared: PreparedStatements
    commands: _Reply
    wait_timeout: float | None  # the client's own SET wait_timeout, enforced by the host's sweeper
    causal: CausalReads  # learns the GTID of each write the session commits

    def release_all(self, keep: BackendConnection | None = None) -> None: ...
    def view_changed(self) -> None: ...

_USE = Kind.USE
_GTID_ONLY = frozenset((GTID_VARIABLE,))
_STMT_EXECUTE = int(Command.STMT_EXECUTE)
_STMT_FETCH = int(Command.STMT_FETCH)
# Statements whose own text says which session state they change (and which the session records or
# pins for): the server's SERVER_SESSION_STATE_CHANGED after them is no news.
_STATE_SHOWN = frozenset((
    Kind.SET, Kind.USE, Kind.DDL, Kind.LOCK_TABLES, Kind.UNLOCK_TABLES, Kind.PREPARE, Kind.DEALLOCATE,
    Kind.BEGIN, Kind.COMMIT, Kind.ROLLBACK, Kind.SAVEPOINT, Kind.RELEASE_SAVEPOINT, Kind.XA, Kind.FLUSH,
))  # fmt: skip
_TRACKING_SETTINGS = frozenset(("session_track_schema", "session_track_state_change", "session_track_system_variables"))
_USE_TARGET = re.compile(r"\s*(?:(?:/\*.*?\*/|(?:--\s|#)[^\n]*(?:\n|$))\s*)*USE\s+(`(?:[^`]|``)+`|[^\s;`]+)\s*;?\s*$", re.I | re.S)


def record(s: Tracked, post: tuple | None, scanner: ResultScanner, conn: BackendConnection) -> None:
    """After a reply: take note of what the command (`post`; None for an unclassified COM_QUERY,
    passthrough) changed in the session's state."""
    state = s.state
    before = state.gen
    ok = scanner.error is None
    if scanner.gtid is not None:  # a write committed (the OK's only state information)
        s.causal.wrote(scanner.gtid.decode("ascii", "replace"))
    reported = None if scanner.states is None else schema_reported(s, scanner.states, conn)
    # The server's SERVER_SESSION_STATE_CHANGED says state changed where the statement may not show
    # it; a committed write's GTID alone (the proxy's own tracking) is not such a change.
    unseen = scanner.changed and not (
        reported is not None and not reported.other and not reported.schema_changed and reported.variables.keys() <= _GTID_ONLY
    )
    first = None if post is None else post[0]
    if first is None:
        pass  # passthrough: nothing is classified (its connection is reset when the session ends)
    elif isinstance(first, int):  # a command other than COM_QUERY (a Command or its byte)
        if first == _STMT_EXECUTE or first == _STMT_FETCH:
            if unseen:
                state_changed_unseen(s)  # e.g. a prepared CALL that set a variable
            s.prepared.record(post, scanner, conn)
            return
        if not ok:
            s.commands.rewrite_id = None
            return
        if first == Command.STMT_PREPARE:
            s.prepared.record(post, scanner, conn)
            return
        if first == Command.INIT_DB:
            state.set_schema(bytes(post[1][1:]).decode("utf-8", "surrogateescape"))
        elif first == Command.RESET_CONNECTION:
            # Variables, temporary tables, locks and user variables are gone on the writer; the
            # other connections are dropped rather than reset one by one.
            s.release_all(keep=conn)
            state.reset(s.capabilities)
            cs = conn.cstate
            # At the login state again (after the setup the reset undid: the proxy's session tracking
            # and the login's effects), which is not the session's: it has what MariaDB's reset
            # gives (SessionState.reset), replayed before its next statement.
            cs.values, cs.owner, cs.set_up = {}, None, False
            conn.prepared.clear()
            s.prepared.clear()
            s.pins.clear()
            s.wait_timeout = None
        s.view_changed()
    elif post[1] is None:  # passthrough: an unrouted SET
        cls = first
        if ok and state.apply_tracking(cls.set_targets, None if reported is None else reported.variables):
            conn.cstate.set_up = False  # the client changed its own tracking: the proxy's is set again
    else:
        cls: Classification = first
        decision: Decision = post[1]
        pins = s.pins
        if decision.pin_writer or not cls.read_only:
            # (Multi-statements can change anything; what they changed is not known here.)
            pins.take(cls, decision)
        if unseen and cls.kind not in _STATE_SHOWN and cls.temp_table is None and not cls.assigns_user_vars:
            # The server says session state changed, and the statement does not show how (a
            # procedure, function or trigger did it): it cannot be replayed, so it stays here.
            state_changed_unseen(s)
        if ok:
            if pins.reasons or cls.temp_table is not None:
                pins.track_causes(cls, state.schema)
            if cls.set_targets:
                if not state.apply(cls.set_targets, None if reported is None else reported.variables):
                    pins.pin(PinReason.UNTRACKABLE_SET)
                note_wait_timeout(s, cls.set_targets, None if reported is None else reported.variables)
                if any(t.name in _TRACKING_SETTINGS for t in cls.set_targets):
                    # The client changed its own tracking, on this connection too: the proxy's is
                    # set again before the connection's next statement (the setup).
                    conn.cstate.set_up = False
            if cls.kind is _USE:
                m = _USE_TARGET.match(post[2])
                if m is None:
                    pins.pin(PinReason.OTHER)
                else:
                    name = m.group(1)
                    state.set_schema(name[1:-1].replace("``", "`") if name.startswith("`") else name)
                    s.view_changed()
    cs = conn.cstate
    if state.gen != before and cs.owner is state and cs.gen == before:
        state.mark_synced(cs)  # the change ran on this connection: it already has it


def note_wait_timeout(s: Tracked, targets: tuple, reported: dict[str, str] | None = None) -> None:
    """A SET of the session's wait_timeout (or interactive_timeout's twin for this purpose): the
    proxy closes the client after that much silence, as the server would (the client's own setting
    wins over [proxy] client_idle_timeout). An expression's value is the one the server reported
    (`reported`, session tracking), else it is ignored."""
    for t in targets:
        if t.scope is SetScope.SESSION and t.name.lower() == "wait_timeout":
            value = t.value if t.value is not None else None if reported is None else reported.get("wait_timeout")
            if value is None:
                continue
            try:
                seconds = float(value.strip("'\""))
            except ValueError:
                continue
            s.wait_timeout = seconds if seconds > 0 else None


def schema_reported(s: Tracked, states: list[bytes], conn: BackendConnection) -> StateChanges | None:
    """Read what the server's session tracking reported in a reply's OK packets. A new default
    schema is the connection's and the session's from now on (it ran the session's command)."""
    try:
        changes = parse_state_changes(states)
    except ProtocolError as e:
        s.log(logging.WARNING, "unreadable session state information from %s: %s", conn.server.address, e)
        return None
    gtid = changes.variables.get(GTID_VARIABLE)
    if gtid:
        s.causal.wrote(gtid)
    if changes.schema_changed:
        conn.cstate.schema = changes.schema
        if changes.schema != s.state.schema:
            s.state.set_schema(changes.schema)
            s.view_changed()
    return changes


def state_changed_unseen(s: Tracked) -> None:
    """The server changed session state that no statement text shows: keep it on the writer, and
    reset the connection it ran on before anyone else gets it."""
    s.pins.pin(PinReason.SERVER_STATE)
    s.commands.reset_on_release = True  # (if it ran on a reader: the change must not reach the next user)
