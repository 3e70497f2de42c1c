"""admin.secrets through the config store: passwords are never stored or shown in clear (hashes and
env:/file: references), a clear password typed in is sealed in the same transaction, references are
read again at every LOAD MYSQL USERS TO RUNTIME. No servers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from admin.commands import ALL_SECTIONS, Layer, Section
from admin.secrets import SealError
from admin.store import ConfigStore, ValidationFailed
from admin.validate import read_config_file
from proxy.config import Config
from proxy.protocol import auth

CONFIG = """
[listeners.data]
port = 6033

[[users]]
username = "app"
password = "app-literal-pw"

[[users]]
username = "report"
password = "report-pw"
backend_username = "report_ro"
backend_password_file = "backend.pw"
auth_plugin = "caching_sha2_password"

[[servers]]
hostgroup_id = 0
hostname = "127.0.0.1"
"""


class Live:
    """The running proxy as far as the store is concerned: its Config and the swap."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def apply(self, config: Config) -> None:
        self.config = config


@pytest.fixture
def env(tmp_path: Path):
    (tmp_path / "backend.pw").write_text("ro-secret-1\n")
    path = tmp_path / "rwproxy.toml"
    path.write_text(CONFIG)
    cf = read_config_file(path)
    store = ConfigStore(tmp_path / "rwproxy.db")
    store.startup(cf)
    result = store.build(ALL_SECTIONS, cf.config)
    assert result.ok, result.errors
    store.set_runtime(result)
    return store, Live(result.config), tmp_path


def load_users(store: ConfigStore, live: Live) -> Config:
    return store.load_to_runtime(Section.USERS, live.config, live.apply)


def test_the_tables_show_hashes_and_references_never_secrets(env):
    store, live, tmp = env
    rows = {r["username"]: r for r in store.rows("mysql_users")}
    assert rows["app"]["password"] == auth.native_hash("app-literal-pw") and rows["app"]["backend_password"] is None
    assert rows["report"]["password"] == auth.native_hash("report-pw")
    assert rows["report"]["backend_password"] == f"file:{tmp / 'backend.pw'}"
    assert store.rows("mysql_users", Layer.RUNTIME) == store.rows("mysql_users")
    # ... while the running config has what it needs in clear
    assert live.config.users["app"].password == "app-literal-pw"
    assert (live.config.users["report"].password, live.config.users["report"].backend_password) == ("report-pw", "ro-secret-1")
    store.save_to_disk()
    disk = (tmp / "rwproxy.db").read_bytes()
    for secret in (b"app-literal-pw", b"report-pw", b"ro-secret-1"):
        assert secret not in disk
    shown = store.execute("SELECT group_concat(password || coalesce(backend_password, '')) FROM runtime_mysql_users").rows[0][0]
    assert "app-literal-pw" not in shown and "ro-secret-1" not in shown


def test_a_clear_native_password_is_sealed_at_insert_and_still_works(env):
    store, live, _ = env
    store.execute("INSERT INTO mysql_users (username, password, default_hostgroup) VALUES ('bob', 'Bob-pw-1', 0)")
    assert store.execute("SELECT password FROM mysql_users WHERE username = 'bob'").rows == [(auth.native_hash("Bob-pw-1"),)]
    store.execute("UPDATE mysql_users SET password = 'App-pw-2' WHERE username = 'app'")
    assert store.rows("mysql_users")[0]["password"] == auth.native_hash("App-pw-2")
    config = load_users(store, live)
    bob = config.users["bob"]
    # typed in this process: the clear text is known (in memory) for the backend login
    assert (bob.password, bob.backend_password) == ("Bob-pw-1", "Bob-pw-1")
    scramble = auth.new_scramble()
    assert auth.verify("mysql_native_password", bob.password, scramble, auth.native_token("Bob-pw-1", scramble))


def test_a_stored_hash_verifies_clients(env):
    store, live, _ = env
    h = auth.native_hash("from-the-server")
    store.execute(f"INSERT INTO mysql_users (username, password, default_hostgroup) VALUES ('carol', '{h.lower()}', 0)")
    assert store.execute("SELECT password FROM mysql_users WHERE username = 'carol'").rows == [(h,)]
    carol = load_users(store, live).users["carol"]
    assert carol.password == h and carol.backend_password == h  # the backend login derives SHA1(pw) from the client's
    scramble = auth.new_scramble()
    assert auth.verify("mysql_native_password", carol.password, scramble, auth.native_token("from-the-server", scramble))
    assert not auth.verify("mysql_native_password", carol.password, scramble, auth.native_token(h, scramble))


@pytest.mark.parametrize(
    "sql,says",
    [
        ("INSERT INTO mysql_users (username, password, auth_plugin) VALUES ('s', 'clear', 'caching_sha2_password')",
         "a caching_sha2_password password is not stored in clear"),
        ("INSERT INTO mysql_users (username, password, backend_password) VALUES ('s', 'one', 'two')",
         "backend_password is not stored in clear"),
        ("UPDATE mysql_users SET backend_password = 'other' WHERE username = 'app'", "backend_password is not stored in clear"),
    ],
)  # fmt: skip
def test_clear_secrets_that_cannot_be_hashed_are_refused_and_nothing_is_written(env, sql, says):
    store, _, _ = env
    before = store.rows("mysql_users")
    with pytest.raises(SealError) as e:
        store.execute(sql)
    assert (e.value.errno, e.value.sqlstate) == (1372, "HY000") and says in e.value.message
    assert "env:NAME" in e.value.message and "file:/absolute/path" in e.value.message
    assert store.rows("mysql_users") == before


def test_a_backend_password_equal_to_the_password_becomes_null(env):
    store, _, _ = env
    store.execute("INSERT INTO mysql_users (username, password, backend_password) VALUES ('dan', 'same-pw', 'same-pw')")
    row = store.execute("SELECT password, backend_password FROM mysql_users WHERE username = 'dan'").rows[0]
    assert row == (auth.native_hash("same-pw"), None)


def test_references_are_read_again_at_every_load(env, monkeypatch):
    store, live, tmp = env
    secret = tmp / "erin.pw"
    secret.write_text("erin-1\n")
    monkeypatch.setenv("RWPROXY_TEST_ERIN_BACKEND", "erin-backend-1")
    store.execute(
        f"INSERT INTO mysql_users (username, password, backend_password, default_hostgroup, auth_plugin) "
        f"VALUES ('erin', 'file:{secret}', 'env:RWPROXY_TEST_ERIN_BACKEND', 0, 'caching_sha2_password')"
    )
    erin = load_users(store, live).users["erin"]
    assert (erin.password, erin.backend_password, erin.password_source) == ("erin-1", "erin-backend-1", f"file:{secret}")
    assert store.rows("mysql_users", Layer.RUNTIME)[-1]["password"] == f"file:{secret}"
    secret.write_text("erin-2")
    monkeypatch.setenv("RWPROXY_TEST_ERIN_BACKEND", "erin-backend-2")
    (tmp / "backend.pw").write_text("ro-secret-2\n")
    config = load_users(store, live)
    assert (config.users["erin"].password, config.users["erin"].backend_password) == ("erin-2", "erin-backend-2")
    assert config.users["report"].backend_password == "ro-secret-2"  # the config file's password_file too


def test_unreadable_references_refuse_the_load_and_name_each(env):
    store, live, tmp = env
    store.execute("INSERT INTO mysql_users (username, password, backend_password) VALUES ('f', 'file:relative/x', 'env:RWPROXY_NO_SUCH_VAR_Q')")
    (tmp / "backend.pw").unlink()
    with pytest.raises(ValidationFailed) as e:
        load_users(store, live)
    text = "\n".join(str(v) for v in e.value.errors)
    assert "username=f: password: file:relative/x: 'file:relative/x': the path must be absolute" in text
    assert "username=f: backend_password: env:RWPROXY_NO_SUCH_VAR_Q: environment variable RWPROXY_NO_SUCH_VAR_Q is not set" in text
    assert "username=report: backend_password: file:" in text and "cannot read" in text
    assert "f" not in live.config.users  # nothing changed


def test_loading_other_sections_does_not_read_user_secrets_again(env):
    store, live, tmp = env
    (tmp / "backend.pw").unlink()  # would fail a LOAD MYSQL USERS
    config = store.load_to_runtime(Section.SERVERS, live.config, live.apply)
    assert config.users["report"].backend_password == "ro-secret-1"


def test_hashes_whose_clear_text_is_unknown_after_a_restart(env, tmp_path):
    store, live, tmp = env
    h = auth.native_hash("lost-pw")
    store.execute(f"INSERT INTO mysql_users (username, password, auth_plugin) VALUES ('g', '{h}', 'caching_sha2_password')")
    store.execute(f"INSERT INTO mysql_users (username, password, backend_username, backend_password) VALUES ('h', 'pw-h', 'ro', '{h}')")
    with pytest.raises(ValidationFailed) as e:
        load_users(store, live)
    text = "\n".join(str(v) for v in e.value.errors)
    assert "username=g: password: caching_sha2_password needs the clear password" in text
    assert "username=h: backend_password: the proxy needs this secret in clear" in text


def test_sealing_refusal_is_an_admin_error_so_the_port_answers_it(env):
    from admin.commands import AdminError

    store, _, _ = env
    with pytest.raises(AdminError):  # TEXT affinity: 1 and 2 arrive as '1' and '2'
        store.execute("INSERT INTO mysql_users (username, password, backend_password) VALUES ('x', 1, 2)")


def test_rows_from_a_config_with_sources_keep_the_reference(env, tmp_path):
    store, live, tmp = env
    u = live.config.users["app"]
    moved = dataclasses.replace(u, password_source=f"file:{tmp}/app.pw", backend_password_source=f"file:{tmp}/app.pw")
    from admin.validate import rows_from_config

    row = rows_from_config(dataclasses.replace(live.config, users={"app": moved}))["mysql_users"][0]
    assert (row["password"], row["backend_password"]) == (f"file:{tmp}/app.pw", None)
