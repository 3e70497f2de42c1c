"""caching_sha2_password full authentication (issue 12), both sides of the proxy.

The proxy takes the full path for an account it stores only as a hash (here MariaDB's native hash,
'*' + SHA1(SHA1(password))): it cannot compute the fast path's check until it has seen the clear
password once, as a server with an empty cache. Over TLS the client sends the clear password; without
TLS it is RSA-encrypted with the proxy's key pair. After one full authentication the account takes
the fast path (the proxy keeps the check, as the server's cache does).

MariaDB 10.11 has no caching_sha2_password server plugin, so the backend side is tested by chaining:
proxy A (such an account) is the server of proxy B, whose backend login must follow A's full path."""

from __future__ import annotations

import hashlib
import subprocess

import mysql.connector
import pymysql
import pytest

from tests.tlsutil import rsa_pair


def native_hash(password: str) -> str:
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


def sha_user(name: str, password: str, **extra):
    return {"username": name, "password": native_hash(password), "auth_plugin": "caching_sha2_password",
            "backend_username": "app", "backend_password": "app_pw", **extra}  # fmt: skip


def login(proxy, user: str, password: str, **kw) -> int:
    c = pymysql.connect(host=proxy.host, port=proxy.port, user=user, password=password, connect_timeout=10, **kw)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT @@port")
            return cur.fetchone()[0]
    finally:
        c.close()


def test_full_authentication_over_tls_then_the_fast_path(start_proxy, cluster):
    proxy = start_proxy(users=[sha_user("sha", "sha_pw")])
    ca = str(proxy.config_path.parent / "rwproxy-ca.pem")
    # No check cached yet and no TLS: the full path. mysql-connector (pure) answers it with the
    # password in clear even without TLS; the proxy, as a MySQL server, takes only an RSA-encrypted
    # one there and refuses.
    with pytest.raises(mysql.connector.Error) as e:
        mysql.connector.connect(host=proxy.host, port=proxy.port, user="sha", password="sha_pw", use_pure=True, ssl_disabled=True)
    assert e.value.errno == 1045, e.value
    # A wrong password over TLS: 1045.
    with pytest.raises(pymysql.err.OperationalError) as e:
        login(proxy, "sha", "nope", ssl_ca=ca, ssl_verify_cert=True)
    assert e.value.args[0] == 1045
    # Over TLS the clear password logs in ...
    assert login(proxy, "sha", "sha_pw", ssl_ca=ca, ssl_verify_cert=True) == cluster.primary.port
    # ... and from now on the fast path: no TLS and no RSA needed, even for mysql-connector.
    m = mysql.connector.connect(host=proxy.host, port=proxy.port, user="sha", password="sha_pw", use_pure=True, ssl_disabled=True)
    assert not m.is_secure
    cur = m.cursor()
    cur.execute("SELECT @@port")
    assert cur.fetchall() == [(cluster.primary.port,)]
    m.close()
    with pytest.raises(pymysql.err.OperationalError) as e:
        login(proxy, "sha", "nope", ssl_disabled=True)
    assert e.value.args[0] == 1045


def test_full_authentication_by_rsa_without_tls(start_proxy, cluster):
    proxy = start_proxy(users=[sha_user("sha", "sha_pw"), sha_user("pinned", "pinned_pw"), sha_user("wrong", "right_pw")])
    # PyMySQL asks for the proxy's public key (AuthMoreData 0x02), the proxy generates its pair.
    assert login(proxy, "sha", "sha_pw", ssl_disabled=True) == cluster.primary.port
    public = proxy.config_path.parent / "rwproxy-rsa-public.pem"
    assert public.exists() and (proxy.config_path.parent / "rwproxy-rsa-private.pem").stat().st_mode & 0o077 == 0
    # A client that has the key already encrypts at once.
    assert login(proxy, "pinned", "pinned_pw", ssl_disabled=True, server_public_key=public.read_bytes()) == cluster.primary.port
    with pytest.raises(pymysql.err.OperationalError) as e:
        login(proxy, "wrong", "not_it", ssl_disabled=True)
    assert e.value.args == (1045, "Access denied for user 'wrong'@'127.0.0.1' (using password: YES)")
    # The mariadb CLI (libmariadb) asks for the key too.
    res = subprocess.run(
        ["mariadb", "--no-defaults", "--skip-ssl", "-h", proxy.host, "-P", str(proxy.port), "-u", "wrong", "-pright_pw", "-N", "-e", "SELECT @@port"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0 and res.stdout.strip() == str(cluster.primary.port), res.stderr


def test_require_ssl_hashed_account_in_plaintext_is_1045(start_proxy):
    proxy = start_proxy(users=[sha_user("sha", "sha_pw", require_ssl=True)])
    with pytest.raises(pymysql.err.OperationalError) as e:
        login(proxy, "sha", "sha_pw", ssl_disabled=True)
    assert e.value.args == (1045, "Access denied for user 'sha'@'127.0.0.1' (using password: YES)")
    assert login(proxy, "sha", "sha_pw", ssl_ca=str(proxy.config_path.parent / "rwproxy-ca.pem"), ssl_verify_cert=True) > 0


# ---- the backend side: proxy B logs in to proxy A --------------------------------------------------


def chain(start_proxy, front_of, **server):
    return start_proxy(
        users=[{"username": "chain", "password": "chain_pw", "backend_username": "sha", "backend_password": "sha_pw"}],
        servers=[{"hostgroup_id": 0, "hostname": "127.0.0.1", "port": front_of.port, **server}],
    )


def test_backend_full_authentication_over_tls(start_proxy, cluster):
    a = start_proxy(users=[sha_user("sha", "sha_pw")])
    ca = str(a.config_path.parent / "rwproxy-ca.pem")
    # Without TLS and without A's public key, B cannot answer A's full authentication; it says why.
    b = chain(start_proxy, a)
    with pytest.raises(pymysql.err.OperationalError) as e:
        login(b, "chain", "chain_pw", ssl_disabled=True)
    assert "needs the server's RSA public key: set server_public_key" in e.value.args[1], e.value.args
    # Over TLS (A's certificate verified, by name) B sends the clear password.
    b = chain(start_proxy, a, ssl_mode="verify_identity", ssl_ca=ca)
    assert login(b, "chain", "chain_pw", ssl_disabled=True) == cluster.primary.port


def test_backend_full_authentication_by_rsa(start_proxy, cluster, tmp_path):
    private, public = rsa_pair(tmp_path, "a-rsa")
    rsa_files = f'[tls]\nrsa_private_key = "{private}"\nrsa_public_key = "{public}"\n'
    # A pinned key (the server's file): B encrypts with it, never asking.
    a = start_proxy(users=[sha_user("sha", "sha_pw")], extra_toml=rsa_files)
    b = chain(start_proxy, a, server_public_key=str(public))
    assert login(b, "chain", "chain_pw", ssl_disabled=True) == cluster.primary.port
    # Another key pinned: A cannot decrypt, so the login fails (1045 from A, relayed).
    _, stranger = rsa_pair(tmp_path, "stranger")
    a = start_proxy(users=[sha_user("sha", "sha_pw")], extra_toml=rsa_files)
    b = chain(start_proxy, a, server_public_key=str(stranger))
    with pytest.raises(pymysql.err.OperationalError) as e:
        login(b, "chain", "chain_pw", ssl_disabled=True)
    assert e.value.args[0] == 1045
    # get_server_public_key: B asks A for its key.
    b = chain(start_proxy, a, get_server_public_key=True)
    assert login(b, "chain", "chain_pw", ssl_disabled=True) == cluster.primary.port
