"""Run the scripted sessions with one driver, directly against MariaDB and through the proxy.

The pieces:

* scenarios — ``scenarios/*.json``: databases to create, then steps (connect, query, prepared,
  cursor, load_data, kill, change_user, reset_connection, init_db, ping, close, sync, sleep).
* runners — one per driver ecosystem, each reading the same scenario files and writing a
  transcript of what the application sees, one JSON line per step (``runners/README.md``):
  ``runners/python_runner.py`` (PyMySQL, mysql-connector pure and C, mysqlclient, asyncmy),
  ``node/runner.js`` (mysql2), ``java/DiffRunner.java`` (MariaDB Connector/J, server-side prepared
  statements on and off), ``runners/cli_runner.py`` (libmariadb, through the ``mariadb`` CLI).
* modes — ``direct`` (the primary), ``passthrough`` (a proxy with the primary as its only
  hostgroup) and ``split`` (a proxy with the primary as writer and the replicas as readers). A
  ``sync`` step waits until every replica has applied the primary's binlog, so a read that
  follows the script's own writes sees them on any server.
* `compare.compare` names every difference.

A runner talks back through one request, the barrier: it writes ``{"type": "barrier", "action":
"sync"}`` and waits for a line ``ok`` on its stdin. Every runner and the whole run have timeouts,
so a proxy that stops answering shows up as an error in the transcript, never as a hung test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tests.differential.compare import Difference, compare

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCENARIO_DIR = HERE / "scenarios"
NODE_DIR = HERE / "node"
JAVA_SRC = HERE / "java" / "DiffRunner.java"
CONNECTOR_J = Path("/usr/share/java/mariadb-java-client.jar")  # Debian libmariadb-java
GSON = Path("/usr/share/java/gson.jar")  # Debian libgoogle-gson-java (the Java runner's JSON)

MODES = ("passthrough", "split")
PYTHON_DRIVERS = ("pymysql", "mysqlconnector_pure", "mysqlconnector_c", "mysqlclient", "asyncmy")
DRIVERS = PYTHON_DRIVERS + ("mysql2", "connectorj_ssps", "connectorj_text", "mariadb_cli")

# The second login change_user switches to (and the proxy knows as a frontend user).
OTHER_USER, OTHER_PASSWORD = "dt_other", "other_pw"
RUN_TIMEOUT = 300.0  # a whole runner run; every statement also has the runner's own read timeout
# Each step's read timeout (RWPROXY_DIFF_READ_TIMEOUT, seconds). Directly, MariaDB never hangs on
# these scenarios and only a loaded machine delays a reply: a long timeout costs nothing. Through
# the proxy a hang (issue 10's defect 9) costs this much per affected step, so it is shorter, but
# long enough for a busy 2-core CI box.
DIRECT_READ_TIMEOUT = 30.0
PROXY_READ_TIMEOUT = 8.0


class HarnessError(RuntimeError):
    """A runner could not be built or started, or broke the transcript protocol."""


def load_scenarios(names: list[str] | None = None) -> list[dict[str, Any]]:
    out = []
    for path in sorted(SCENARIO_DIR.glob("*.json")):
        sc = json.loads(path.read_text())
        sc["path"] = str(path)
        if names is None or sc["name"] in names:
            out.append(sc)
    return out


# -- runner command lines --------------------------------------------------------------------------


_java_lock = threading.Lock()


def java_classes(build_dir: Path) -> Path:
    """Compile the Java runner once into `build_dir` (javac from the machine's JDK 17)."""
    out = build_dir / "java-classes"
    with _java_lock:
        stamp = out / "DiffRunner.class"
        if stamp.exists() and stamp.stat().st_mtime >= JAVA_SRC.stat().st_mtime:
            return out
        for jar in (CONNECTOR_J, GSON):
            if not jar.exists():
                raise HarnessError(f"{jar} missing: run scripts/setup.sh (Debian libmariadb-java, libgoogle-gson-java)")
        javac = shutil.which("javac")
        if javac is None:
            raise HarnessError("javac not found: run scripts/setup.sh (Debian openjdk-17-jdk-headless)")
        out.mkdir(parents=True, exist_ok=True)
        res = subprocess.run([javac, "-d", str(out), "-cp", f"{CONNECTOR_J}:{GSON}", str(JAVA_SRC)], capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise HarnessError(f"javac failed:\n{res.stdout}{res.stderr}")
    return out


def driver_scenarios(driver: str, scenarios: list[dict[str, Any]], build_dir: Path) -> list[str]:
    """The scenario files as `driver` runs them: a step whose ``skip`` names the driver (a crash of
    that driver's own, say) becomes ``{"op": "skip"}`` with the reason, the same on both sides."""
    out = build_dir / "scenarios" / driver
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for sc in scenarios:
        steps = []
        for step in sc["steps"]:
            why = step.get("skip", {}).get(driver)
            steps.append({"op": "skip", "conn": step.get("conn", "a"), "reason": why} if why else step)
        path = out / Path(sc["path"]).name
        path.write_text(json.dumps(sc | {"steps": steps}, ensure_ascii=False))
        paths.append(str(path))
    return paths


def runner_command(driver: str, host: str, port: int, user: str, password: str, scenarios: list[dict[str, Any]], build_dir: Path) -> list[str]:
    paths = driver_scenarios(driver, scenarios, build_dir)
    common = ["--host", host, "--port", str(port), "--user", user, "--password", password]
    if driver in PYTHON_DRIVERS:
        return [sys.executable, "-m", "tests.differential.runners.python_runner", "--driver", driver, *common, *paths]
    if driver == "mariadb_cli":
        return [sys.executable, "-m", "tests.differential.runners.cli_runner", *common, *paths]
    if driver == "mysql2":
        if not (NODE_DIR / "node_modules" / "mysql2").is_dir():
            raise HarnessError(f"mysql2 is not installed: run `npm ci` in {NODE_DIR} (scripts/setup.sh does)")
        node = shutil.which("node")
        if node is None:
            raise HarnessError("node not found: run scripts/setup.sh (Debian nodejs)")
        return [node, str(NODE_DIR / "runner.js"), *common, *paths]
    if driver in ("connectorj_ssps", "connectorj_text"):
        classes = java_classes(build_dir)
        java = shutil.which("java") or "java"
        ssps = "true" if driver == "connectorj_ssps" else "false"
        # -Xshare:auto and a small heap: the JVM starts in ~0.3 s on a 2-core box.
        return [java, "-Xss1m", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{classes}:{CONNECTOR_J}:{GSON}",
                "DiffRunner", "--server-prep", ssps, *common, *paths]  # fmt: skip
    raise HarnessError(f"unknown driver {driver!r}; known: {', '.join(DRIVERS)}")


# -- one run ---------------------------------------------------------------------------------------


@dataclass
class RunResult:
    transcript: list[dict[str, Any]]
    stderr: str
    returncode: int | None


def run_driver(command: list[str], on_sync: Callable[[], None], read_timeout: float = PROXY_READ_TIMEOUT, timeout: float = RUN_TIMEOUT) -> RunResult:
    """Start a runner, answer its barriers, collect its transcript (killed after `timeout`)."""
    env = dict(os.environ, TZ="UTC", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", RWPROXY_DIFF_READ_TIMEOUT=str(read_timeout))
    proc = subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, encoding="utf-8")
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    stderr_lines: list[str] = []
    drain = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    drain.start()
    transcript: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None and proc.stdin is not None
        for line in proc.stdout:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                stderr_lines.append(f"(non-JSON on stdout) {line}")
                continue
            if rec.get("type") == "barrier":
                on_sync()
                proc.stdin.write("ok\n")
                proc.stdin.flush()
                continue
            transcript.append(rec)
        proc.wait(timeout=10)
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        drain.join(timeout=5)
    return RunResult(transcript, "".join(stderr_lines), proc.returncode)


# -- the servers ------------------------------------------------------------------------------------


def prepare_databases(cluster: Any, scenarios: list[dict[str, Any]]) -> None:
    """Fresh databases for the scenarios (every `dt_%` one dropped first), the second login, and
    the replicas caught up: each run starts from the same state."""
    names = [row for row in cluster.primary.sql("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'dt\\_%'").split()]
    stmts = [f"DROP DATABASE IF EXISTS `{n}`" for n in names]
    for sc in scenarios:
        for db in sc.get("databases", []):
            stmts.append(f"CREATE DATABASE `{db['name']}` CHARACTER SET {db.get('charset', 'utf8mb4')}")
    stmts += [
        f"CREATE USER IF NOT EXISTS '{OTHER_USER}'@'%' IDENTIFIED BY '{OTHER_PASSWORD}'",
        f"GRANT ALL PRIVILEGES ON `dt\\_%`.* TO '{OTHER_USER}'@'%'",
    ]
    cluster.primary.sql(";".join(stmts))
    cluster.wait_replicated(timeout=30)


def proxy_users(cluster: Any) -> list[dict[str, Any]]:
    return [
        {"username": cluster.app_user, "password": cluster.app_password, "default_hostgroup": 0},
        {"username": OTHER_USER, "password": OTHER_PASSWORD, "default_hostgroup": 0},
    ]


def proxy_layout(cluster: Any, mode: str) -> dict[str, Any]:
    """`start_proxy`/`render_proxy_config` arguments for a mode."""
    primary = {"hostgroup_id": 0, "hostname": cluster.primary.host, "port": cluster.primary.port, "comment": "primary"}
    if mode == "passthrough":  # one hostgroup: nothing is split, every statement on the primary
        return {"users": proxy_users(cluster), "servers": [primary], "replication_hostgroups": []}
    if mode == "split":
        replicas = [{"hostgroup_id": 1, "hostname": r.host, "port": r.port, "comment": r.name} for r in cluster.replicas]
        pair = [{"writer_hostgroup": 0, "reader_hostgroup": 1, "writer_is_also_reader": False, "comment": "differential"}]
        return {"users": proxy_users(cluster), "servers": [primary, *replicas], "replication_hostgroups": pair}
    raise HarnessError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")


def run_side(cluster: Any, driver: str, host: str, port: int, scenarios: list[dict[str, Any]], build_dir: Path) -> RunResult:
    """One run of every scenario; directly against the primary when `port` is the primary's."""
    prepare_databases(cluster, scenarios)
    cmd = runner_command(driver, host, port, cluster.app_user, cluster.app_password, scenarios, build_dir)
    direct = port == cluster.primary.port
    return run_driver(cmd, on_sync=lambda: cluster.wait_replicated(timeout=30), read_timeout=DIRECT_READ_TIMEOUT if direct else PROXY_READ_TIMEOUT)


def check_direct(driver: str, scenarios: list[dict[str, Any]], direct: RunResult) -> None:
    """The baseline must be sound, or equal transcripts prove nothing (a driver that cannot even
    connect, or a runner that trips over its own bug, looks the same on both sides): the runner
    finished, hit no bug of its own, and every login the scenarios expect to succeed succeeded."""
    if direct.returncode != 0 or not any(r.get("type") == "done" for r in direct.transcript):
        raise HarnessError(f"{driver} runner failed directly against MariaDB (status {direct.returncode}):\n{direct.stderr[-4000:]}")
    steps = {(r["scenario"], r["index"]): r for r in direct.transcript if r.get("type") == "step"}
    bugs = [f"{r['scenario']}#{r['index']}" for r in steps.values() if '"runner_bug": true' in json.dumps(r.get("out"))]
    if bugs:
        raise HarnessError(f"{driver}: the runner itself failed (not the driver) at {', '.join(bugs[:10])}: fix the runner")
    for sc in scenarios:
        for i, step in enumerate(sc["steps"]):
            out = steps.get((sc["name"], i), {}).get("out", {})
            if step["op"] == "connect" and step.get("expect") != "error" and "unsupported" not in out and not out.get("connected"):
                raise HarnessError(f"{driver} could not log in directly against MariaDB at {sc['name']}#{i}: {json.dumps(out)[:500]}\n{direct.stderr[-2000:]}")


def differences(driver: str, mode: str, scenarios: list[dict[str, Any]], direct: RunResult, proxied: RunResult) -> list[Difference]:
    check_direct(driver, scenarios, direct)
    diffs = compare(driver, mode, scenarios, direct.transcript, proxied.transcript)
    if proxied.returncode != 0:
        diffs.append(Difference(driver, mode, "-", "-", "-", "runner exit status", direct.returncode, proxied.returncode, proxied.stderr[-2000:]))
    return diffs


def report(diffs: list[Difference]) -> str:
    if not diffs:
        return "no differences"
    lines = [f"{len(diffs)} difference(s):"]
    lines += [f"  {d}" for d in diffs]
    return "\n".join(lines)

