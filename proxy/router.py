"""Per-statement routing glue: classify (cached) -> decide -> hostgroup. No I/O.

Theory of operation: one Router per process holds the routing snapshot (rule set, hostgroup
membership, which hostgroups have an ONLINE server). The session asks it where a COM_QUERY goes;
everything else about the statement (connecting, replaying session state, relaying) is the session's
job. With a single hostgroup and nothing to decide the router is in passthrough mode and the
session skips classification entirely. Statements longer than `MAX_CLASSIFIED` are classified from their first `MAX_CLASSIFIED`
characters (as ProxySQL digests only a prefix): that prefix does not parse as a whole statement, so
the classification fails safe to "write", while query rules still see the digest of the prefix and
match_pattern rules the whole text — a blocking rule cannot be dodged by padding a statement.
"""

from __future__ import annotations

from rules.classify import Classification, classify
from rules.engine import SessionView, decide
from rules.model import Decision, RuleSet

from .config import Config
from .hostgroups import Hostgroups

MAX_CLASSIFIED = 65536
DOWN_STATUSES = ("SHUNNED", "OFFLINE_HARD")


def classify_text(sql: str) -> Classification:
    """The (cached) classification of a statement's text, or of its first MAX_CLASSIFIED characters."""
    return classify(sql if len(sql) <= MAX_CLASSIFIED else sql[:MAX_CLASSIFIED])


class Router:
    __slots__ = ("ruleset", "hostgroups", "online", "passthrough", "down")

    def __init__(self, config: Config) -> None:
        self.ruleset: RuleSet = config.ruleset
        self.hostgroups = Hostgroups(config.servers, self.ruleset.replication_hostgroups)
        self.online = self.hostgroups.online
        # Servers whose connections must not be used even mid-statement: SHUNNED (the monitor saw it
        # fail) or OFFLINE_HARD (the operator took it out at once). Sessions drop theirs.
        self.down: frozenset[str] = frozenset(s.address for s in config.servers if s.status in DOWN_STATUSES)
        # Nothing to decide: one hostgroup, no rules, no replication pair. Every statement goes to
        # the user's default hostgroup and is not classified at all (no session state to track
        # either: there is only ever one connection).
        self.passthrough = not self.ruleset.rules and not self.ruleset.replication_hostgroups and len(self.hostgroups.members) == 1

    def route(self, sql: str, view: SessionView) -> tuple[Classification, Decision]:
        cls = classify_text(sql)
        return cls, self.decide(cls, sql, view)

    def decide(self, cls: Classification, sql: str, view: SessionView) -> Decision:
        """Where the statement `sql`, classified as `cls`, goes for the session seen as `view`."""
        ruleset = self.ruleset
        return decide(cls, view, ruleset, self.online, sql=sql if ruleset.needs_sql else None)
