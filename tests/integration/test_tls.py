"""TLS between clients and the proxy (issue 12): real clients (the `mariadb` CLI, PyMySQL,
mysql-connector-python, asyncmy, sysbench) against a proxy with TLS on by default (its generated,
self-signed CA) or with certificates of the test's own; require_ssl accounts; a client asking for
TLS never gets plaintext; certificates reloaded without dropping sessions."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
import struct
import subprocess
import time
from pathlib import Path

import asyncmy
import mysql.connector
import pymysql
import pytest

from tests import sysbench
from tests.rawclient import CLIENT_CAPS, parse_err
from tests.tlsutil import CLIENT_SSL, TLSRaw, make_ca


def generated_ca(proxy) -> Path:
    """The CA the proxy generated at first start (its data directory is the config file's)."""
    return proxy.config_path.parent / "rwproxy-ca.pem"


def cli(proxy, *args: str, user: str = "app", password: str = "app_pw") -> subprocess.CompletedProcess:
    cmd = ["mariadb", "--no-defaults", "-h", proxy.host, "-P", str(proxy.port), "-u", user, f"-p{password}", "--connect-timeout=10", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_mariadb_cli_verifies_the_proxy_with_its_generated_ca(start_proxy, cluster, tmp_path):
    proxy = start_proxy()
    ca = generated_ca(proxy)
    assert ca.exists()
    res = cli(proxy, "--ssl", "--ssl-verify-server-cert", f"--ssl-ca={ca}", "-N", "-e", "SELECT @@port")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(cluster.primary.port)
    status = cli(proxy, "--ssl", "--ssl-verify-server-cert", f"--ssl-ca={ca}", "-e", "status")
    assert "Cipher in use is TLS_" in status.stdout, status.stdout
    # A CA that did not sign the proxy's certificate: the client refuses it (so verification is real),
    # and the proxy logs one line saying why the handshake failed.
    other = make_ca(tmp_path / "other", "other")
    bad = cli(proxy, "--ssl", "--ssl-verify-server-cert", f"--ssl-ca={other.cert}", "-e", "SELECT 1")
    assert bad.returncode != 0 and "2026" in bad.stderr, bad.stderr
    deadline = time.monotonic() + 5
    while "TLS handshake failed" not in proxy.log_tail(20) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "TLS handshake failed: TLSV1_ALERT_UNKNOWN_CA" in proxy.log_tail(20)


def test_a_client_asking_for_tls_gets_tls(start_proxy):
    # `mariadb --ssl` (and --ssl-ca without verification) silently ran in plaintext when the proxy
    # offered no TLS (issue 12); with TLS on by default they get TLS.
    proxy = start_proxy()
    for args in (["--ssl"], [f"--ssl-ca={generated_ca(proxy)}"]):
        res = cli(proxy, *args, "-e", "status")
        assert res.returncode == 0, res.stderr
        assert "Cipher in use is TLS_" in res.stdout, (args, res.stdout)


def test_ssl_request_without_tls_offered_is_refused_not_answered_in_plaintext(start_proxy, cluster):
    proxy = start_proxy(extra_toml="[tls]\nenabled = false\n")
    raw = TLSRaw(proxy.host, proxy.port)
    seq, greeting = raw.expect_packet()
    caps = int.from_bytes(greeting[greeting.index(b"\0", 1) + 14 : greeting.index(b"\0", 1) + 16], "little")
    assert not caps & (1 << 11)  # CLIENT_SSL not offered
    raw.send_packet(struct.pack("<IIB", CLIENT_CAPS | CLIENT_SSL, 1 << 24, 45) + b"\0" * 23, 1)
    _, reply = raw.expect_packet()
    err = parse_err(reply)
    assert (err.code, err.sqlstate) == (1043, "08S01") and "SSL was requested but the proxy did not offer it" in err.message
    raw.expect_closed()


@pytest.mark.parametrize("together", [True, False], ids=["same-write", "separate-writes"])
def test_tls_handshake_bytes_sent_with_the_ssl_request(start_proxy, cluster, together):
    # A client writes its SSLRequest and, without waiting, its TLS ClientHello: both can reach the
    # proxy in one read. The proxy must hand the early bytes to TLS (proxy.tls.accept).
    proxy = start_proxy()
    context = ssl.create_default_context(cafile=str(generated_ca(proxy)))
    raw = TLSRaw(proxy.host, proxy.port)
    raw.greeting()
    raw.start_tls(context, together=together)
    assert raw.tls.version() in ("TLSv1.2", "TLSv1.3")
    raw.send_packet(raw.tls_handshake_response("app", "app_pw"), 2)
    seq, ok = raw.expect_packet()
    assert (seq, ok[0]) == (3, 0), ok
    rows = raw.query("SELECT @@port")
    assert rows == [bytes((len(str(cluster.primary.port)),)) + str(cluster.primary.port).encode()]
    raw.close()


def test_pymysql_connector_and_asyncmy_verify_the_proxy(start_proxy, cluster):
    proxy = start_proxy()
    ca = str(generated_ca(proxy))
    c = pymysql.connect(host=proxy.host, port=proxy.port, user="app", password="app_pw", ssl_ca=ca, ssl_verify_cert=True, ssl_verify_identity=True)
    assert c._sock.version() in ("TLSv1.2", "TLSv1.3")
    with c.cursor() as cur:
        cur.execute("SELECT @@port")
        assert cur.fetchone() == (cluster.primary.port,)
    c.close()

    m = mysql.connector.connect(host=proxy.host, port=proxy.port, user="app", password="app_pw", use_pure=True, ssl_ca=ca, ssl_verify_cert=True, ssl_verify_identity=True)
    assert m.is_secure
    cur = m.cursor()
    cur.execute("SELECT @@port")
    assert cur.fetchall() == [(cluster.primary.port,)]
    m.close()

    async def go() -> tuple[object, int]:
        conn = await asyncmy.connect(host=proxy.host, port=proxy.port, user="app", password="app_pw", ssl=ssl.create_default_context(cafile=ca))
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT @@port")
                (port,) = await cur.fetchone()
            return conn._transport.get_extra_info("ssl_object"), port
        finally:
            conn.close()

    ssl_object, port = asyncio.run(go())
    assert ssl_object is not None and ssl_object.version() in ("TLSv1.2", "TLSv1.3")
    assert port == cluster.primary.port


def test_sysbench_over_tls(start_proxy, direct, schema, tmp_path):
    proxy = start_proxy()
    # sysbench 1.0 reads its TLS files from the working directory under fixed names.
    workdir = tmp_path / "sysbench"
    workdir.mkdir()
    shutil.copy(generated_ca(proxy), workdir / "cacert.pem")
    client = make_ca(tmp_path / "clientca", "client").issue(workdir, "client")
    shutil.move(client.cert, workdir / "client-cert.pem")
    shutil.move(client.key, workdir / "client-key.pem")
    args = ["--tables=1", "--table-size=1000", f"--mysql-db={schema}"]
    prep = subprocess.run(
        ["sysbench", "oltp_point_select", f"--mysql-host={proxy.host}", f"--mysql-port={proxy.port}", "--mysql-user=app", "--mysql-password=app_pw", *args, "prepare"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert prep.returncode == 0, prep.stderr
    run = subprocess.Popen(
        ["sysbench", "oltp_point_select", "--mysql-ssl=on", f"--mysql-host={proxy.host}", f"--mysql-port={proxy.port}",
         "--mysql-user=app", "--mysql-password=app_pw", *args, "--threads=4", "--time=3", "run"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    time.sleep(1.5)
    os.kill(proxy.pid, signal.SIGUSR1)  # one line per session, with tls=True/False
    out, _ = run.communicate(timeout=60)
    assert run.returncode == 0, out
    assert sysbench.stat(out, "transactions") > 0 and sysbench.stat(out, "ignored errors") == 0, out
    sessions = [line for line in proxy.log_tail(200).splitlines() if "user=app tls=" in line]
    assert len(sessions) >= 4, proxy.log_tail(40)
    assert all("tls=True" in line for line in sessions), sessions


def test_require_ssl_user_is_refused_in_plaintext_as_the_server_refuses(start_proxy, cluster, direct):
    # What MariaDB itself answers a plaintext login of an account created REQUIRE SSL ...
    with direct.cursor() as cur:
        cur.execute("CREATE USER 'tls_only'@'%' IDENTIFIED BY 'tls_pw' REQUIRE SSL")
    try:
        cluster.wait_replicated()
        with pytest.raises(pymysql.err.OperationalError) as server:
            pymysql.connect(host=cluster.primary.host, port=cluster.primary.port, user="tls_only", password="tls_pw", ssl_disabled=True)
    finally:
        with direct.cursor() as cur:
            cur.execute("DROP USER 'tls_only'@'%'")
    # ... the proxy answers a plaintext login of a require_ssl user.
    proxy = start_proxy(users=[{"username": "tls_only", "password": "tls_pw", "backend_username": "app", "backend_password": "app_pw", "require_ssl": True}])
    with pytest.raises(pymysql.err.OperationalError) as through:
        pymysql.connect(host=proxy.host, port=proxy.port, user="tls_only", password="tls_pw", ssl_disabled=True)  # (PyMySQL 2 prefers TLS)
    assert through.value.args == server.value.args == (1045, "Access denied for user 'tls_only'@'127.0.0.1' (using password: YES)")
    assert "has require_ssl and the client did not use TLS" in proxy.log_tail(10)
    # Over TLS the same account logs in.
    c = pymysql.connect(host=proxy.host, port=proxy.port, user="tls_only", password="tls_pw", ssl_ca=str(generated_ca(proxy)), ssl_verify_cert=True)
    with c.cursor() as cur:
        cur.execute("SELECT @@port")
        assert cur.fetchone() == (cluster.primary.port,)
    c.close()


def _verified_port(proxy, ca: Path) -> int:
    c = pymysql.connect(host=proxy.host, port=proxy.port, user="app", password="app_pw", ssl_ca=str(ca), ssl_verify_cert=True, ssl_verify_identity=True, connect_timeout=10)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT @@port")
            return cur.fetchone()[0]
    finally:
        c.close()


def test_certificates_reload_without_dropping_sessions(start_proxy, cluster, tmp_path):
    one, two = make_ca(tmp_path / "one", "one"), make_ca(tmp_path / "two", "two")
    live = tmp_path / "live"
    live.mkdir()
    first = one.issue(tmp_path / "one", "proxy", dns=("localhost",), ips=("127.0.0.1",))
    second = two.issue(tmp_path / "two", "proxy", dns=("localhost",), ips=("127.0.0.1",))
    cert, key = live / "cert.pem", live / "key.pem"
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    proxy = start_proxy(admin=True, extra_toml=f'[tls]\ncertificate = "{cert}"\nkey = "{key}"\n')
    assert _verified_port(proxy, one.cert) == cluster.primary.port
    held = pymysql.connect(host=proxy.host, port=proxy.port, user="app", password="app_pw", ssl_ca=str(one.cert), ssl_verify_cert=True)
    in_txn = held.cursor()
    in_txn.execute("BEGIN")
    in_txn.execute("SELECT @@port")

    # New files: nothing changes until the reload.
    shutil.copy(second.cert, cert)
    shutil.copy(second.key, key)
    with pytest.raises(pymysql.err.OperationalError):
        _verified_port(proxy, two.cert)
    admin = proxy.admin_connect()
    with admin.cursor() as cur:
        cur.execute("PROXYSQL RELOAD TLS")
    assert _verified_port(proxy, two.cert) == cluster.primary.port
    with pytest.raises(pymysql.err.OperationalError):
        _verified_port(proxy, one.cert)
    in_txn.execute("SELECT @@port")  # the session (and its transaction) carried on
    assert in_txn.fetchone() == (cluster.primary.port,)

    # A broken key: the reload is refused with the reason and the certificate in use stays.
    key.write_text("not a key\n")
    with admin.cursor() as cur, pytest.raises(pymysql.err.MySQLError) as e:
        cur.execute("PROXYSQL RELOAD TLS")
    assert "the previous certificates stay in use" in str(e.value)
    assert _verified_port(proxy, two.cert) == cluster.primary.port

    # SIGHUP reloads too.
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    os.kill(proxy.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        try:
            assert _verified_port(proxy, one.cert) == cluster.primary.port
            break
        except pymysql.err.OperationalError:
            assert time.monotonic() < deadline, proxy.log_tail(20)
            time.sleep(0.1)
    in_txn.execute("SELECT @@port")
    assert in_txn.fetchone() == (cluster.primary.port,)
    in_txn.execute("COMMIT")
    held.close()
    admin.close()


def test_admin_port_offers_tls_too(start_proxy):
    proxy = start_proxy(admin=True)
    ca = proxy.admin_data_dir / "rwproxy-ca.pem"  # the data directory is [admin] data_dir here
    res = subprocess.run(
        ["mariadb", "--no-defaults", "-h", proxy.host, "-P", str(proxy.admin_port), "-u", "admin", "-padmin",
         "--ssl", "--ssl-verify-server-cert", f"--ssl-ca={ca}", "-e", "status"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "Cipher in use is TLS_" in res.stdout
    admin = proxy.admin_connect(ssl_ca=str(ca), ssl_verify_cert=True, ssl_verify_identity=True)
    assert admin._sock.version() in ("TLSv1.2", "TLSv1.3")
    with admin.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM mysql_users")
        assert cur.fetchone() == (1,)
    admin.close()
    plain = proxy.admin_connect(ssl_disabled=True)  # plaintext still works (no require_ssl for the admin login)
    with plain.cursor() as cur:
        cur.execute("SELECT 1")
    plain.close()
    # The TLS bytes sent with the SSLRequest are handed over here too.
    raw = TLSRaw(proxy.host, proxy.admin_port)
    raw.greeting()
    raw.start_tls(ssl.create_default_context(cafile=str(ca)), together=True)
    raw.send_packet(raw.tls_handshake_response("admin", "admin"), 2)
    seq, ok = raw.expect_packet()
    assert (seq, ok[0]) == (3, 0), ok
    raw.close()
