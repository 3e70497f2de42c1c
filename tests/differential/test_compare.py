"""The comparison itself: it names every difference and excuses only what differs by construction."""

from __future__ import annotations

import copy

import pytest

from tests.differential.compare import compare, normalize
from tests.differential.harness import HarnessError, RunResult, check_direct

SCENARIOS = [{"name": "s", "steps": [{"op": "connect"}, {"op": "query", "sql": "SELECT 1"}, {"op": "kill", "target": "b"}]}]


def transcript(value: str = "1", thread_id: int = 7, kill_id: int = 7, elapsed: float = 0.1) -> list[dict]:
    return [
        {"type": "step", "scenario": "s", "index": 0, "op": "connect", "conn": "a", "out": {"connected": True, "thread_id": thread_id}, "elapsed": elapsed},
        {"type": "step", "scenario": "s", "index": 1, "op": "query", "conn": "a", "out": {"results": [{"rows": [[["int", value]]]}]}, "elapsed": elapsed},
        {"type": "step", "scenario": "s", "index": 2, "op": "kill", "conn": "a",
         "out": {"error": {"code": 1094, "message": f"(conn={kill_id}) Unknown thread id: 1", "sql": f"KILL QUERY {kill_id}"}}, "elapsed": elapsed},
        {"type": "done"},
    ]  # fmt: skip


def test_ids_and_timing_are_not_differences() -> None:
    assert compare("d", "m", SCENARIOS, transcript(), transcript(thread_id=9001, kill_id=9001, elapsed=3.0)) == []


def test_a_value_difference_is_named_with_driver_mode_scenario_step_field_and_both_values() -> None:
    (d,) = compare("pymysql", "split", SCENARIOS, transcript("1"), transcript("2"))
    assert (d.driver, d.mode, d.scenario, d.step, d.op, d.field, d.direct, d.proxy, d.sql) == (
        "pymysql", "split", "s", 1, "query", "out.results[0].rows[0][0][1]", "1", "2", "SELECT 1",
    )  # fmt: skip
    assert "pymysql/split s#1 query [SELECT 1]: out.results[0].rows[0][0][1]: direct=1 proxy=2" == str(d)


def test_a_missing_step_and_a_runner_that_did_not_finish_are_differences() -> None:
    proxy = transcript()[:1]
    fields = {(d.step, d.field) for d in compare("d", "m", SCENARIOS, transcript(), proxy)}
    assert (1, "step recorded") in fields and (2, "step recorded") in fields and ("-", "proxy runner finished") in fields


def test_normalize_touches_nothing_else() -> None:
    rec = transcript()[1]
    before = copy.deepcopy(rec)
    n = normalize(rec)
    assert rec == before and "elapsed" not in n and n["out"] == rec["out"]


def test_a_direct_run_whose_login_failed_is_refused_not_compared() -> None:
    """Two transcripts of a driver that cannot log in are equal and prove nothing."""
    broken = transcript()
    broken[0]["out"] = {"error": {"message": "'float' object cannot be interpreted as an integer"}}
    with pytest.raises(HarnessError, match="could not log in"):
        check_direct("mysqlclient", SCENARIOS, RunResult(broken, "", 0))
    check_direct("mysqlclient", SCENARIOS, RunResult(transcript(), "", 0))
    buggy = transcript()
    buggy[1]["out"] = {"results": [], "error": {"class": "AttributeError", "message": "no attribute 'db'", "runner_bug": True}}
    with pytest.raises(HarnessError, match="runner itself failed"):
        check_direct("asyncmy", SCENARIOS, RunResult(buggy, "", 0))
    with pytest.raises(HarnessError, match="failed directly"):
        check_direct("mysqlclient", SCENARIOS, RunResult(transcript()[:-1], "", 0))
