"""The layer contracts (pyproject.toml [tool.importlinter], docs/architecture.md) hold, and would catch a
break: each is run once on the real tree and once on a copy with one forbidden import added.

import-linter builds the import graph statically (grimp), so imports under `if TYPE_CHECKING:` and
inside functions count: a type-only cycle is a cycle.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(LINT, cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120)


def test_the_layer_contracts_hold() -> None:
    done = lint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


# (file to change, line added, the contract that must break)
BREAKS = [
    ("proxy/protocol/framing.py", "import asyncio", "proxy.protocol is a sans-IO codec"),
    ("proxy/protocol/packets.py", "from proxy.session import PinReason", "proxy.protocol is a sans-IO codec"),
    ("rules/engine.py", "from proxy.config import Server", "rules is pure policy"),
    ("proxy/pool.py", "from admin.store import ConfigStore", "the data plane never imports the control plane"),
    ("admin/commands.py", "from proxy.__main__ import serve", "nothing imports the composition root"),
    ("proxy/stats.py", "import prometheus_client", "the stats registry never imports prometheus_client"),
    # A type-only import back up the chain is a cycle too (lending -> client -> lending).
    ("proxy/lending.py", "if TYPE_CHECKING:\n    from .client import ClientSession", "no import cycles"),
    ("proxy/config.py", "from .pool import Pool", "no import cycles"),
]


@pytest.mark.parametrize(("path", "line", "contract"), BREAKS, ids=[f"{p}:{c.split()[0]}" for p, _, c in BREAKS])
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, path: str, line: str, contract: str) -> None:
    for package in ("proxy", "rules", "admin"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / path
    text = target.read_text()
    if "TYPE_CHECKING" in line and "from typing import" not in text.split("\n\n\n")[0]:
        line = "from typing import TYPE_CHECKING\n" + line
    target.write_text(text + "\n" + line + "\n")
    done = lint(tmp_path)
    assert done.returncode != 0, done.stdout
    broken = done.stdout.split("Broken contracts")[-1]
    assert contract in broken, done.stdout


def _external_imports(package: str) -> dict[str, set[str]]:
    """Top-level names of what each module of `package` imports from outside the project."""
    graph = grimp.build_graph("proxy", "rules", "admin", include_external_packages=True)
    out: dict[str, set[str]] = {}
    for module in graph.find_descendants(package) | {package}:
        for imported in graph.find_modules_directly_imported_by(module):
            top = imported.split(".")[0]
            if top not in ("proxy", "rules", "admin"):
                out.setdefault(module, set()).add(top)
    return out


@pytest.mark.parametrize(("package", "allowed"), [("proxy.protocol", set()), ("rules", {"sqlglot"})])
def test_only_the_standard_library_beyond_what_a_layer_may_use(package: str, allowed: set[str]) -> None:
    # An allow-list, where the contracts above are deny-lists: a third-party package added later is
    # caught here even before anyone names it in a contract.
    foreign = {m: sorted(n for n in names if n not in sys.stdlib_module_names and n not in allowed) for m, names in _external_imports(package).items()}
    assert {m: n for m, n in foreign.items() if n} == {}
