"""Config: the admin password check beyond loopback, [admin] limits, and secrets that can be read again."""

from __future__ import annotations

import dataclasses

import pytest

from proxy.config import ConfigError, parse_config, read_secret, refresh_secrets, weak_admin_password


def raw(admin_address="0.0.0.0", **admin):
    return {
        "listeners": {"data": {"port": 6033}, "admin": {"address": admin_address, "port": 6032}},
        "admin": admin,
        "users": [{"username": "app", "password": "pw"}],
        "servers": [{"hostgroup_id": 0, "hostname": "127.0.0.1"}],
    }


@pytest.mark.parametrize(
    "password,says",
    [
        ("admin", "the default password"),
        ("Admin", "the default password"),
        (" ADMIN ", "the default password"),
        ("", "an empty password"),
        ("   ", "an empty password"),
        ("Password", "a well-known password"),
        ("proxysql", "a well-known password"),
        ("root", "a well-known password"),
        ("123456", "a well-known password"),
        ("RAdmin", "a well-known password"),
    ],
)
def test_weak_admin_password_beyond_loopback_is_refused(password, says):
    with pytest.raises(ConfigError) as e:
        parse_config(raw(password=password), "f.toml")
    assert e.value.key == "admin.password"
    assert f"the admin port listens on 0.0.0.0, beyond this machine, with {says}" in str(e.value)


def test_default_password_beyond_loopback_is_refused():
    with pytest.raises(ConfigError, match="with the default password"):
        parse_config(raw(), "f.toml")


def test_username_as_password_is_refused_and_every_address_is_named():
    with pytest.raises(ConfigError, match="listens on every address, beyond this machine, with the username as password"):
        parse_config(raw("", username="Operator", password="operator"), "f.toml")


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "localhost"])
def test_weak_passwords_are_fine_on_loopback(address):
    assert parse_config(raw(address, password="Admin"), "f.toml").admin.password == "Admin"


def test_strong_password_beyond_loopback_is_accepted():
    assert weak_admin_password("admin", "c0rrect-horse-battery") is None
    assert parse_config(raw(password="c0rrect-horse-battery"), "f.toml").admin.password == "c0rrect-horse-battery"


def test_admin_limits_defaults_and_bounds():
    a = parse_config(raw("127.0.0.1"), "f.toml").admin
    assert (a.max_connections, a.statement_timeout, a.max_result_rows, a.max_result_bytes) == (64, 1.0, 1_000_000, 32 << 20)
    a = parse_config(raw("127.0.0.1", max_connections=3, statement_timeout=0.5, max_result_rows=10, max_result_bytes=4096), "f.toml").admin
    assert (a.max_connections, a.statement_timeout, a.max_result_rows, a.max_result_bytes) == (3, 0.5, 10, 4096)
    with pytest.raises(ConfigError, match="admin.max_connections: must be between 1 and 100000"):
        parse_config(raw("127.0.0.1", max_connections=0), "f.toml")


def test_secret_sources_are_remembered_and_refreshed(tmp_path, monkeypatch):
    secret = tmp_path / "app.pw"
    secret.write_text("one\n")
    monkeypatch.setenv("RWPROXY_TEST_BACKEND_PW", "b-one")
    monkeypatch.setenv("RWPROXY_TEST_ADMIN_PW", "adm-one-strong")
    config = parse_config(
        {
            "listeners": {"data": {"port": 6033}},
            "admin": {"password_env": "RWPROXY_TEST_ADMIN_PW"},
            "users": [
                {"username": "app", "password_file": "app.pw"},  # relative to the config file
                {"username": "rep", "password": "inline", "backend_username": "ro", "backend_password_env": "RWPROXY_TEST_BACKEND_PW"},
                {"username": "both", "password_file": str(secret)},
            ],
            "servers": [{"hostgroup_id": 0, "hostname": "127.0.0.1"}],
        },
        str(tmp_path / "rwproxy.toml"),
    )
    app, rep = config.users["app"], config.users["rep"]
    assert (app.password, app.backend_password) == ("one", "one")
    assert app.password_source == app.backend_password_source == f"file:{secret}"
    assert rep.password_source is None and rep.backend_password_source == "env:RWPROXY_TEST_BACKEND_PW"
    assert config.admin.password_source == "env:RWPROXY_TEST_ADMIN_PW"

    same, changed = refresh_secrets(config)
    assert same is config and changed == []

    secret.write_text("two")
    monkeypatch.setenv("RWPROXY_TEST_BACKEND_PW", "b-two")
    monkeypatch.setenv("RWPROXY_TEST_ADMIN_PW", "adm-two-strong")
    new, changed = refresh_secrets(config)
    assert (new.users["app"].password, new.users["app"].backend_password) == ("two", "two")
    assert (new.users["rep"].password, new.users["rep"].backend_password) == ("inline", "b-two")
    assert new.admin.password == "adm-two-strong"
    assert sorted(changed) == ["[admin] password", "user app: password", "user both: password", "user rep: backend_password"]
    assert "two" not in " ".join(changed)

    secret.unlink()
    kept, changed = refresh_secrets(new)
    assert kept.users["app"].password == "two"
    assert any(c.startswith("user app: password (unreadable, kept: cannot read") for c in changed)


def test_read_secret_errors():
    with pytest.raises(ValueError, match="must be absolute"):
        read_secret("file:relative/path")
    with pytest.raises(ValueError, match="is not set"):
        read_secret("env:RWPROXY_NO_SUCH_VARIABLE_X")
    with pytest.raises(ValueError, match="not a secret reference"):
        read_secret("vault:x")


def test_user_repr_never_shows_secrets():
    u = parse_config(raw("127.0.0.1"), "f.toml").users["app"]
    assert "pw" not in repr(dataclasses.replace(u, password="pw-secret-x")).replace("password_source", "")
