"""TLS between the proxy and its servers (issue 12): a MariaDB started with a CA of the test's own,
and proxies with each [[servers]] ssl_mode. The server's own view says whether a connection is TLS
(its session's Ssl_version), and an account created REQUIRE SSL proves that the proxy's login
really went over TLS."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pymysql
import pytest

from proxy.sandbox import start_cluster
from tests.tlsutil import make_ca

SSL_VERSION = "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_version'"


class TLSServer:
    def __init__(self, base: Path) -> None:
        self.ca = make_ca(base / "ca", "server")
        # The certificate names the IP address only: "localhost" does not match it.
        issued = self.ca.issue(base / "ca", "mariadb", ips=("127.0.0.1",))
        self.cluster = start_cluster(
            base / "db", replicas=0,
            extra_args=[f"--ssl-ca={self.ca.cert}", f"--ssl-cert={issued.cert}", f"--ssl-key={issued.key}"],
        )  # fmt: skip
        self.server = self.cluster.primary
        # A backend account that only TLS can use: the server refuses it in plaintext.
        self.server.sql("CREATE USER 'tls_app'@'%' IDENTIFIED BY 'tls_pw' REQUIRE SSL; GRANT SELECT ON *.* TO 'tls_app'@'%';")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    s = TLSServer(tmp_path_factory.mktemp("tlsdb"))
    try:
        yield s
    finally:
        s.cluster.stop()


def _proxy(start_proxy, tls_server: TLSServer, hostname: str = "127.0.0.1", **server_tls: Any):
    return start_proxy(
        users=[{"username": "app", "password": "app_pw", "backend_username": "tls_app", "backend_password": "tls_pw"}],
        servers=[{"hostgroup_id": 0, "hostname": hostname, "port": tls_server.server.port, **server_tls}],
    )


def _session(proxy) -> tuple[int, str]:
    c = pymysql.connect(host=proxy.host, port=proxy.port, user="app", password="app_pw", ssl_disabled=True, connect_timeout=10)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT @@port")
            (port,) = cur.fetchone()
            cur.execute(SSL_VERSION)
            (version,) = cur.fetchone()
        return port, version
    finally:
        c.close()


def test_verify_identity_connects(start_proxy, tls_server):
    proxy = _proxy(start_proxy, tls_server, ssl_mode="verify_identity", ssl_ca=str(tls_server.ca.cert))
    port, version = _session(proxy)
    assert port == tls_server.server.port
    assert version in ("TLSv1.2", "TLSv1.3")  # the server's own word: this session is TLS


def test_a_certificate_from_another_ca_is_refused_and_logged(start_proxy, tls_server, tmp_path):
    other = make_ca(tmp_path / "other", "other")
    proxy = _proxy(start_proxy, tls_server, ssl_mode="verify_ca", ssl_ca=str(other.cert))
    for _ in range(8):
        with pytest.raises(pymysql.err.OperationalError) as e:
            _session(proxy)
        assert e.value.args[0] == 9001, e.value.args
        assert "certificate verification failed" in e.value.args[1]
    time.sleep(0.2)
    lines = [line for line in proxy.log_tail(200).splitlines() if "refused: certificate verification failed" in line]
    address = f"127.0.0.1:{tls_server.server.port}"
    # (MariaDB sends its CA along: OpenSSL finds a self-signed certificate nobody trusts in the chain.)
    assert lines and all(f"server {address} refused: certificate verification failed: self-signed certificate in certificate chain (ssl_mode = verify_ca)" in line for line in lines)
    assert len(lines) <= 5  # repeats are counted, not written (proxy.logsafe.LogLimiter)


def test_verify_identity_checks_the_name_verify_ca_does_not(start_proxy, tls_server):
    # The certificate names 127.0.0.1 only; the proxy reaches the server as "localhost".
    proxy = _proxy(start_proxy, tls_server, hostname="localhost", ssl_mode="verify_identity", ssl_ca=str(tls_server.ca.cert))
    with pytest.raises(pymysql.err.OperationalError) as e:
        _session(proxy)
    assert "Hostname mismatch" in e.value.args[1], e.value.args
    assert "refused: certificate verification failed: Hostname mismatch" in proxy.log_tail(20)
    proxy = _proxy(start_proxy, tls_server, hostname="localhost", ssl_mode="verify_ca", ssl_ca=str(tls_server.ca.cert))
    assert _session(proxy)[0] == tls_server.server.port


def test_required_and_preferred(start_proxy, tls_server, cluster):
    # required: TLS, unverified (no CA given).
    proxy = _proxy(start_proxy, tls_server, ssl_mode="required")
    assert _session(proxy)[1] in ("TLSv1.2", "TLSv1.3")
    # disabled: plaintext, so the REQUIRE SSL account is refused by the server itself.
    proxy = _proxy(start_proxy, tls_server, ssl_mode="disabled")
    with pytest.raises(pymysql.err.OperationalError) as e:
        _session(proxy)
    assert e.value.args[0] == 1045
    # A server without TLS: required is refused with the reason, preferred goes plaintext.
    plain = {"hostgroup_id": 0, "hostname": cluster.primary.host, "port": cluster.primary.port}
    proxy = start_proxy(servers=[{**plain, "ssl_mode": "required"}])
    with pytest.raises(pymysql.err.OperationalError) as e:
        _session(proxy)
    assert "ssl_mode = required, but the server does not offer TLS" in e.value.args[1]
    proxy = start_proxy(servers=[{**plain, "ssl_mode": "preferred"}])
    assert _session(proxy) == (cluster.primary.port, "")


def test_backend_tls_defaults_from_backend_tls_section(start_proxy, tls_server):
    # [backend_tls] is every server's default; the admin port shows the values each server uses.
    proxy = start_proxy(
        users=[{"username": "app", "password": "app_pw", "backend_username": "tls_app", "backend_password": "tls_pw"}],
        servers=[{"hostgroup_id": 0, "hostname": "127.0.0.1", "port": tls_server.server.port}],
        extra_toml=f'[backend_tls]\nssl_mode = "verify_identity"\nssl_ca = "{tls_server.ca.cert}"\n',
        admin=True,
    )
    assert _session(proxy)[1] in ("TLSv1.2", "TLSv1.3")
    admin = proxy.admin_connect()
    with admin.cursor() as cur:
        cur.execute("SELECT ssl_mode, ssl_ca FROM runtime_mysql_servers")
        assert cur.fetchall() == ((None, None),)  # NULL: [backend_tls]'s
        cur.execute("UPDATE mysql_servers SET ssl_mode = 'disabled'")
        cur.execute("LOAD MYSQL SERVERS TO RUNTIME")
        cur.execute("SELECT ssl_mode FROM runtime_mysql_servers")
        assert cur.fetchall() == (("disabled",),)
    admin.close()
    with pytest.raises(pymysql.err.OperationalError) as e:  # new connections: plaintext, refused by the server
        _session(proxy)
    assert e.value.args[0] == 1045
