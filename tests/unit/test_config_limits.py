"""[proxy] max_connections, client_idle_timeout, shutdown_timeout and [[users]] max_connections:
defaults, accepted values, and a ConfigError naming the key for anything else. No servers needed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from proxy.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]


def _raw(proxy: dict[str, Any] | None = None, user: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "proxy": proxy or {},
        "listeners": {"data": {"port": 6033}},
        "users": [{"username": "app", "password": "pw", **(user or {})}],
        "servers": [{"hostgroup_id": 0, "hostname": "127.0.0.1"}],
    }


def test_defaults_match_mysql():
    c = parse_config(_raw())
    assert c.max_connections == 2048  # ProxySQL's mysql-max_connections default
    assert c.client_idle_timeout == 28800.0  # the server's wait_timeout default
    assert c.shutdown_timeout == 30.0
    assert c.users["app"].max_connections == 10000


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("max_connections", 1, 1),
        ("max_connections", 1_000_000, 1_000_000),
        ("client_idle_timeout", 0, 0.0),  # never
        ("client_idle_timeout", 1, 1.0),  # an int is fine for a number of seconds
        ("client_idle_timeout", 0.5, 0.5),
        ("client_idle_timeout", 31_536_000, 31_536_000.0),
        ("shutdown_timeout", 0, 0.0),  # cut at once
        ("shutdown_timeout", 2.5, 2.5),
        ("shutdown_timeout", 86_400, 86_400.0),
    ],
)
def test_accepted_values(key, value, expected):
    c = parse_config(_raw({key: value}))
    assert getattr(c, key) == expected
    assert type(getattr(c, key)) is type(expected)


@pytest.mark.parametrize(
    "key,value,reason",
    [
        ("max_connections", 0, "must be between 1 and 1000000"),
        ("max_connections", -5, "must be between 1 and 1000000"),
        ("max_connections", 1_000_001, "must be between 1 and 1000000"),
        ("max_connections", 10.5, "expected int, got float 10.5"),
        ("max_connections", "100", "expected int, got str '100'"),
        ("max_connections", True, "expected int, got bool True"),
        ("client_idle_timeout", -1, "must be between 0 and 31536000 (0 = never)"),
        ("client_idle_timeout", 31_536_001, "must be between 0 and 31536000 (0 = never)"),
        ("client_idle_timeout", math.inf, "must be between 0 and 31536000 (0 = never)"),
        ("client_idle_timeout", math.nan, "must be between 0 and 31536000 (0 = never)"),
        ("client_idle_timeout", "8h", "expected float, got str '8h'"),
        ("client_idle_timeout", False, "expected float, got bool False"),
        ("shutdown_timeout", -0.1, "must be between 0 and 86400"),
        ("shutdown_timeout", 86_401, "must be between 0 and 86400"),
        ("shutdown_timeout", "30s", "expected float, got str '30s'"),
    ],
)
def test_bad_values_name_the_key(key, value, reason):
    with pytest.raises(ConfigError) as e:
        parse_config(_raw({key: value}), "limits.toml")
    assert (e.value.key, e.value.reason) == (f"proxy.{key}", reason)
    assert str(e.value) == f"limits.toml: proxy.{key}: {reason}"


@pytest.mark.parametrize("value,reason", [(0, "must be greater than 0"), ("2", "expected int, got str '2'")])
def test_bad_user_max_connections_names_the_key(value, reason):
    with pytest.raises(ConfigError) as e:
        parse_config(_raw(user={"max_connections": value}))
    assert (e.value.key, e.value.reason) == ("users[0].max_connections", reason)


def test_user_max_connections_is_per_user():
    raw = _raw(user={"max_connections": 2})
    raw["users"].append({"username": "other", "password": "pw"})
    c = parse_config(raw)
    assert (c.users["app"].max_connections, c.users["other"].max_connections) == (2, 10000)


def test_example_config_documents_and_sets_every_new_key(monkeypatch):
    monkeypatch.setenv("RWPROXY_APP_PASSWORD", "x")
    path = REPO / "config" / "rwproxy.example.toml"
    c = load_config(path)
    assert (c.max_connections, c.client_idle_timeout, c.shutdown_timeout) == (2048, 28800.0, 30.0)
    assert c.users["app"].max_connections == 10000
    text = path.read_text()
    for key in ("max_connections", "client_idle_timeout", "shutdown_timeout"):
        assert f"\n{key} = " in text, key
