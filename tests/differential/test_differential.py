"""Transparency, measured: each driver sees the same through the proxy as directly (issue 10).

One test per (driver, mode). Each runs every scenario in ``tests/differential/scenarios`` with the
driver directly against the primary (once per driver, reused by both modes) and then through a
fresh proxy — ``passthrough`` (the primary as the only hostgroup) or ``split`` (primary as writer,
both replicas as readers; ``sync`` steps wait for the replicas, so reads of the script's own writes
meet caught-up replicas) — and fails with the list of every difference: driver, scenario, step,
field, the direct value and the proxy's. What differs by construction (connection ids, timing) is
normalized in ``compare.py``, each rule with its reason; nothing else is excused. A difference a
known defect causes fails the test until the defect is fixed: that is the point.

``python -m tests.differential --driver X --mode Y`` prints the same list outside pytest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import DRIVERS, MODES, RunResult, differences, load_scenarios, proxy_layout, report, run_side

_direct: dict[str, RunResult] = {}  # driver -> its direct transcript, shared by the two modes


@pytest.fixture(scope="session")
def differential_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the Java runner is compiled, once per session."""
    return tmp_path_factory.mktemp("differential")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("driver", DRIVERS)
def test_driver_sees_no_difference(driver: str, mode: str, cluster: Any, start_proxy: Any, differential_build: Path) -> None:
    if getattr(cluster, "flavor", "mariadb") != "mariadb":
        pytest.skip("the scenarios are written for MariaDB (extended types, compound statements)")
    scenarios = load_scenarios()
    if driver not in _direct:
        _direct[driver] = run_side(cluster, driver, cluster.primary.host, cluster.primary.port, scenarios, differential_build)
    direct = _direct[driver]
    proxy = start_proxy(**proxy_layout(cluster, mode))
    proxied = run_side(cluster, driver, proxy.host, proxy.port, scenarios, differential_build)
    diffs = differences(driver, mode, scenarios, direct, proxied)
    assert not diffs, report(diffs)
