"""A bad configuration file stops `python -m proxy` with status 2 and one line `FILE: KEY: reason`.

Each case starts from a configuration that loads cleanly (checked in-process first, so the failure
is the mutation's doing) and changes one thing. No servers are needed: configuration errors are
reported before anything is dialled or bound.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import load_config

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
[proxy]
log_level = "info"
handshake_timeout = 5.0

[listeners.data]
address = "127.0.0.1"
port = 1

[[users]]
username = "app"
password = "app_pw"
default_hostgroup = 0

[[servers]]
hostgroup_id = 0
hostname = "127.0.0.1"
port = 3306
"""

UNSET_VAR = "RWPROXY_TEST_SURELY_UNSET_VARIABLE"


def _run(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != UNSET_VAR} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "proxy", "--config", str(config)],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )


# (id, replace old -> new in GOOD, expected "KEY: reason" after "FILE: ")
CASES = [
    (
        "unknown_key",
        ('handshake_timeout = 5.0', 'handshake_timout = 5.0'),
        "proxy.handshake_timout: unknown key (check the spelling against config/rwproxy.example.toml)",
    ),
    (
        "wrong_type",
        ("port = 1\n", 'port = "6033"\n'),
        "listeners.data.port: expected int, got str '6033'",
    ),
    (
        "bad_value",
        ('log_level = "info"', 'log_level = "loud"'),
        "proxy.log_level: must be one of debug, info, warning, error",
    ),
    (
        "missing_env_var",
        ('password = "app_pw"', f'password_env = "{UNSET_VAR}"'),
        f"users[0].password_env: environment variable {UNSET_VAR} is not set",
    ),
    (
        "missing_password_file",
        ('password = "app_pw"', 'password_file = "no/such/secret"'),
        "users[0].password_file: cannot read ",
    ),
    (
        "unknown_hostgroup",
        ("default_hostgroup = 0", "default_hostgroup = 7"),
        "users[0].default_hostgroup: hostgroup 7 has no server in [[servers]]",
    ),
]


def test_base_config_is_valid(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.users["app"].password == "app_pw"


@pytest.mark.parametrize("change,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_exits_2_with_file_key_reason(tmp_path, change, expected):
    old, new = change
    assert old in GOOD
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace(old, new, 1))
    res = _run(path)
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert f"{path}: {expected}" in lines[0]


def test_missing_config_file(tmp_path):
    path = tmp_path / "absent.toml"
    res = _run(path)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].endswith(f"{path}: file not found")


def test_invalid_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(GOOD + "\n[[servers]\n")
    res = _run(path)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert f"{path}: not valid TOML" in lines[0]


def test_env_var_password_is_accepted_when_set(tmp_path, monkeypatch):
    """The same file that failed for a missing variable loads when the variable is set."""
    path = tmp_path / "env.toml"
    path.write_text(GOOD.replace('password = "app_pw"', f'password_env = "{UNSET_VAR}"'))
    monkeypatch.setenv(UNSET_VAR, "from_env")
    assert load_config(path).users["app"].password == "from_env"


def test_the_readmes_explain_command_works_as_written(monkeypatch):
    # README: `rwproxy explain --config config/rwproxy.example.toml "SELECT ... FOR UPDATE"`. The
    # example config takes the app's password from RWPROXY_APP_PASSWORD; routing needs no password,
    # so explain must not require it (it exited 2 "environment variable ... is not set").
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RWPROXY_")}
    out = subprocess.run(
        [sys.executable, "-m", "proxy", "explain", "--config", "config/rwproxy.example.toml", "SELECT * FROM t WHERE id = 1 FOR UPDATE"],
        cwd=root, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "route to hostgroup 0" in out.stdout
