"""explain(): why a statement would run where it runs -- the routing decision, shown step by step.

Theory of operation
-------------------
`explain(sql, view, ruleset, online_hostgroups)` classifies the text (`rules.classify.classify`, the
same cached call the proxy makes) and runs `rules.engine.decide` with a trace list, so the explanation
is produced by the very code path that routes traffic -- nothing here re-implements a routing step.
Around that trace it adds what the engine does not need to say: the digest, the classification summary
and, when the statement is not read-only, every reason the classifier could not prove it is.

`str(explanation)` is a readable multi-line text; `explanation.rows()` yields (step, detail) pairs for
the admin port (a two-column result set), ending with the causal decision (consistent reads: the
effective causal_reads mode, a max_lag_ms bound and its source, a min_gtid hint). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass

from .classify import Classification, Kind, classify
from .digest import digest_hex
from .engine import SessionView, decide, pin_reason
from .model import Decision, Deny, Respond, RouteTo, RuleSet

__all__ = ["Explanation", "explain", "why_not_read_only"]

_READ_KINDS = frozenset({Kind.SELECT, Kind.DESCRIBE, Kind.EXPLAIN})
_SESSION_KINDS = frozenset(
    {Kind.SET, Kind.USE, Kind.BEGIN, Kind.COMMIT, Kind.ROLLBACK, Kind.SAVEPOINT, Kind.RELEASE_SAVEPOINT, Kind.XA}
)


def why_not_read_only(cls: Classification) -> list[str]:
    """Every reason the classifier could not prove the statement safe on a replica ([] when read_only)."""
    if cls.read_only:
        return []
    out: list[str] = []
    if cls.parse_error:
        out.append(f"parse error: {cls.parse_error}")
    if cls.multi_statement:
        out.append("multi-statement")
    if cls.kind in _SESSION_KINDS:
        out.append(f"{cls.kind.name} is session or transaction control (routed by kind)")
    elif cls.kind is Kind.SHOW:
        out.append("SHOW answers are server-specific")
    elif cls.kind not in _READ_KINDS:
        out.append(f"{cls.kind.name} statement may write")
    if cls.locking_read:
        out.append("locking read (FOR UPDATE / FOR SHARE / LOCK IN SHARE MODE)")
    if cls.select_into:
        out.append(f"SELECT ... INTO {cls.select_into}")
    if cls.session_functions:
        out.append("session function " + ", ".join(sorted(cls.session_functions)))
    if cls.assigns_user_vars:
        out.append("assigns a user variable")
    if cls.reads_user_vars:
        out.append("reads a user variable")
    if cls.temp_table:
        out.append(f"{cls.temp_table} TEMPORARY TABLE")
    if cls.calc_found_rows:
        out.append("SQL_CALC_FOUND_ROWS")
    if cls.tables_written:
        out.append("writes " + ", ".join(sorted(cls.tables_written)))
    if not out:
        out.append("unknown function or construct: could not prove it is a read")
    return out


def _action_text(d: Decision) -> str:
    a = d.action
    if type(a) is Deny:
        return f"deny: ERR {a.errno} ({a.sqlstate}) {a.error_msg!r}"
    if type(a) is Respond:
        return f"answer OK without running it: {a.ok_msg!r}"
    return f"route to hostgroup {a.hostgroup}"


@dataclass(frozen=True, slots=True)
class Explanation:
    sql: str
    classification: Classification
    decision: Decision
    trace: tuple[tuple[str, str], ...]  # the engine's own steps, in order
    session_pinned: bool  # the session was already pinned to the writer
    pin_why: str | None  # why this statement would pin the session, or None
    causal_reads: str | None = None  # the session user's causal_reads mode (None: not known)

    @property
    def digest(self) -> str:
        return digest_hex(self.classification.fingerprint.digest)

    @property
    def digest_text(self) -> str:
        return self.classification.fingerprint.text

    @property
    def hostgroup(self) -> int | None:
        return self.decision.hostgroup

    def rows(self) -> Iterator[tuple[str, str]]:
        c, d = self.classification, self.decision
        yield ("query", self.sql)
        yield ("digest", self.digest)
        yield ("digest_text", self.digest_text)
        yield ("kind", c.kind.name)
        why = why_not_read_only(c)
        yield ("read_only", "yes" if c.read_only else "no: " + "; ".join(why))
        tables = sorted(c.tables_read | c.tables_written)
        if tables:
            yield ("tables", ", ".join(tables))
        if c.fingerprint.hints:
            yield ("hints", ", ".join(f"{k}={v}" for k, v in c.fingerprint.hints))
        yield from self.trace
        if self.pin_why is not None:
            yield ("pin_writer", f"yes: {self.pin_why}")
        elif self.session_pinned:
            yield ("pin_writer", "session already pinned to the writer")
        else:
            yield ("pin_writer", "no")
        yield ("matched_rules", ", ".join(map(str, d.rule_ids)) if d.rule_ids else "none")
        if d.sql is not None:
            yield ("rewritten", d.sql)
        extras = [f"{k}={v}" for k, v in (("timeout_ms", d.timeout_ms), ("multiplex", d.multiplex),
                                           ("log", None if d.log is None else int(d.log))) if v is not None]
        if extras:
            yield ("attributes", ", ".join(extras))
        yield ("decision", _action_text(d))
        yield ("reason", str(d.reason))
        if type(d.action) is RouteTo:
            yield from self._consistency_rows()

    def _consistency_rows(self) -> Iterator[tuple[str, str]]:
        """The causal decision (consistent reads): the effective causal_reads mode and whose it is,
        the max_lag_ms bound and where it came from, a min_gtid hint. (They apply to reads routed
        to a reader hostgroup; the proxy picks the server when the statement runs.)"""
        reads = self.decision.reads
        user = self.causal_reads
        if reads is not None and reads.causal_reads is not None:
            overrides = f", overriding the user's {user}" if user is not None else ""
            yield ("causal_reads", f"{reads.causal_reads} ({reads.causal_reads_from}{overrides})")
        elif user is not None:
            yield ("causal_reads", f"{user} (the user's)")
        if reads is not None and reads.max_lag_ms is not None:
            yield ("max_lag_ms", f"{reads.max_lag_ms} ({reads.max_lag_from}): only replicas the monitor sees at most "
                                 f"{reads.max_lag_ms} ms behind, else the writer")
        gtids = [v for k, v in self.classification.fingerprint.hints if k == "min_gtid"]
        if gtids:
            mode = reads.causal_reads if reads is not None and reads.causal_reads is not None else user
            how = "" if mode == "fast" else " (or one made to wait for it up to causal_reads_timeout)"
            yield ("min_gtid", f"{', '.join(gtids)} (hint): only a replica known to have applied it{how}, else the writer")

    def __str__(self) -> str:
        rows = list(self.rows())
        width = max(len(step) for step, _ in rows)
        return "\n".join(f"{step.ljust(width)}  {detail}" for step, detail in rows)


def explain(
    sql: str, view: SessionView, ruleset: RuleSet, online_hostgroups: Container[int], causal_reads: str | None = None
) -> Explanation:
    """`causal_reads`: the session user's mode (shown with the rules' override, if any)."""
    cls = classify(sql)
    trace: list[tuple[str, str]] = []
    decision = decide(cls, view, ruleset, online_hostgroups, sql=sql, trace=trace)
    return Explanation(
        sql=sql,
        classification=cls,
        decision=decision,
        trace=tuple(trace),
        session_pinned=view.pinned_writer,
        pin_why=pin_reason(cls) if decision.pin_writer else None,
        causal_reads=causal_reads,
    )
