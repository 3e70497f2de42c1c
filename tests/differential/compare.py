"""Compare two transcripts of the same scenarios (directly against MariaDB, and through the proxy).

A transcript is the list of records a runner wrote (see ``runners/README.md``). Before comparing,
`normalize` removes what differs by construction, and nothing else. Each rule says why; a rule that
hid a real difference would be a defect of the harness, so the list is short on purpose:

* ``elapsed`` — wall time of a step: timing is never the same twice.
* ``thread_id`` of a ``connect`` step — the connection id in the server's handshake. Directly it
  is the server's thread id, through the proxy the proxy's own session id: two counters that are
  never equal. Whether the id the client got agrees with ``CONNECTION_ID()`` and ``KILL`` is
  checked by the ``connection_id`` and ``kill`` steps instead, which compare ids within one run.
* The port the client dialed, where Connector/J names it in a connect error
  (``address=(host=127.0.0.1)(port=3306)``): the server's port directly, the proxy's through it.
* Connection ids inside texts — the same two counters: the statement a ``kill`` step built from
  the handshake's id (``KILL 123`` becomes ``KILL <id>``), and MariaDB Connector/J's prefix on
  every exception message, ``(conn=123)``, which is the handshake's id too.

Everything else — values and their types, column metadata, affected rows, insert ids, warnings,
status flags, errors (code, SQLSTATE, message) — must be identical.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterator


@dataclass(frozen=True)
class Difference:
    driver: str
    mode: str
    scenario: str
    step: int | str
    op: str
    field: str
    direct: Any
    proxy: Any
    sql: str = ""

    def __str__(self) -> str:
        where = f"{self.driver}/{self.mode} {self.scenario}#{self.step} {self.op}"
        sql = f" [{_short(self.sql, 90)}]" if self.sql else ""
        return f"{where}{sql}: {self.field}: direct={_short(self.direct)} proxy={_short(self.proxy)}"


def _short(v: Any, limit: int = 160) -> str:
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_ID_IN_KILL = re.compile(r"(?i)\b(KILL(?:\s+(?:HARD|SOFT))?(?:\s+(?:QUERY|CONNECTION))?(?:\s+ID)?\s+)\d+")
_CONNECTOR_J_CONN = re.compile(r"\(conn=\d+\)")
_CONNECTOR_J_ADDRESS = re.compile(r"(address=\(host=[^)]*\))\(port=\d+\)")


def normalize(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of one step record without what differs by construction (see the module docstring)."""
    r = dict(record)
    r.pop("elapsed", None)  # timing
    out = r.get("out")
    if isinstance(out, dict):
        out = dict(out)
        if r.get("op") == "connect":
            out.pop("thread_id", None)  # the server's thread id vs the proxy's session id
        text = json.dumps(out, ensure_ascii=False)
        if r.get("op") == "kill":
            text = _ID_IN_KILL.sub(r"\1<id>", text)
        text = _CONNECTOR_J_ADDRESS.sub(r"\1(port=<port>)", text)
        out = json.loads(_CONNECTOR_J_CONN.sub("(conn=<id>)", text))
        r["out"] = out
    return r


def steps_by_key(transcript: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["scenario"], r["index"]): r for r in transcript if r.get("type") == "step"}


def _walk(path: str, a: Any, b: Any) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a:
                yield f"{path}.{k}", "<absent>", b[k]
            elif k not in b:
                yield f"{path}.{k}", a[k], "<absent>"
            else:
                yield from _walk(f"{path}.{k}", a[k], b[k])
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from _walk(f"{path}[{i}]", x, y)
    elif isinstance(a, list) and isinstance(b, list):
        yield f"{path} (length {len(a)} vs {len(b)})", a, b
    elif a != b:
        yield path, a, b


def compare(driver: str, mode: str, scenarios: list[dict[str, Any]], direct: list[dict[str, Any]], proxy: list[dict[str, Any]]) -> list[Difference]:
    """Every difference between the two transcripts, step by step, in scenario order."""
    d_steps, p_steps = steps_by_key(direct), steps_by_key(proxy)
    diffs: list[Difference] = []
    for sc in scenarios:
        name = sc["name"]
        for i, step in enumerate(sc["steps"]):
            sql = step.get("sql", "")
            a, b = d_steps.get((name, i)), p_steps.get((name, i))
            if a is None or b is None:
                diffs.append(Difference(driver, mode, name, i, step["op"], "step recorded", a is not None, b is not None, sql))
                continue
            na, nb = normalize(a), normalize(b)
            for field, x, y in _walk("out", na.get("out"), nb.get("out")):
                diffs.append(Difference(driver, mode, name, i, step["op"], field, x, y, sql))
    for label, t in (("direct", direct), ("proxy", proxy)):
        if not any(r.get("type") == "done" for r in t):
            diffs.append(Difference(driver, mode, "-", "-", "-", f"{label} runner finished", False, True) if label == "direct"
                         else Difference(driver, mode, "-", "-", "-", "proxy runner finished", True, False))  # fmt: skip
    return diffs
