"""TLS and caching_sha2_password full authentication without servers: the [tls] / [backend_tls]
config, the SSLRequest codec, the full-authentication math, the generated certificate (verified by
Python's own ssl), the contexts per ssl_mode, the switch to TLS with early bytes (both event loops,
real loopback sockets), and the admin tables' TLS columns (rows, validation, an older disk layer)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import sqlite3
import ssl
import struct

import pytest
import uvloop

from admin.commands import ALL_SECTIONS
from admin.store import SCHEMA_VERSION, ConfigStore
from admin.validate import build_config, read_config_file, rows_from_config
from proxy import tls
from proxy.config import BackendTLS, ConfigError, TLSSettings, parse_config
from proxy.protocol import auth
from proxy.protocol.constants import Capability
from proxy.protocol.framing import PacketFramer, ProtocolError, make_packet
from proxy.protocol.packets import (
    HandshakeResponse41,
    is_ssl_request,
    make_handshake_response,
    make_ssl_request,
    parse_handshake_response,
)
from tests.tlsutil import make_ca, rsa_pair
from tests.unit.disklayer import older_disk_layer

BASE = {"listeners": {"data": {"port": 6033}}, "users": [{"username": "u", "password": "p"}]}


def _config(**extra):
    raw = {**BASE, "servers": [{"hostgroup_id": 0, "hostname": "db"}], **extra}
    return parse_config(raw)


# ---- config -------------------------------------------------------------------------------------


def test_defaults_tls_on_for_clients_off_towards_servers():
    c = _config()
    assert c.tls == TLSSettings(enabled=True)
    assert c.backend_tls == BackendTLS() and c.backend_tls.ssl_mode == "disabled"
    assert c.servers[0].tls == BackendTLS() and c.servers[0].tls_keys == frozenset()
    assert c.users["u"].require_ssl is False


def test_backend_tls_defaults_and_per_server_overrides(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    key = tmp_path / "server.pub"
    key.write_text("x")
    c = _config(
        backend_tls={"ssl_mode": "VERIFY_IDENTITY", "ssl_ca": str(ca), "min_version": "TLSv1.3", "ciphers": "ECDHE+AESGCM"},
        servers=[
            {"hostgroup_id": 0, "hostname": "a"},
            {"hostgroup_id": 0, "hostname": "b", "ssl_mode": "disabled", "server_public_key": str(key), "get_server_public_key": True},
        ],
        users=[{"username": "u", "password": "p", "require_ssl": True}],
    )
    a, b = c.servers
    assert a.tls == BackendTLS("verify_identity", str(ca), "", "", "TLSv1.3", "ECDHE+AESGCM") and a.tls_keys == frozenset()
    assert b.tls.ssl_mode == "disabled" and b.tls.ssl_ca == str(ca) and b.tls.min_version == "TLSv1.3"
    assert b.tls.server_public_key == str(key) and b.tls.get_server_public_key
    assert b.tls_keys == {"ssl_mode", "server_public_key", "get_server_public_key"}
    assert c.users["u"].require_ssl


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "c.pem").write_text("x")
    (tmp_path / "certs" / "k.pem").write_text("x")
    c = parse_config({**BASE, "servers": [{"hostgroup_id": 0, "hostname": "db"}], "tls": {"certificate": "certs/c.pem", "key": "certs/k.pem"}},
                     str(tmp_path / "rwproxy.toml"))  # fmt: skip
    assert c.tls.certificate == str(tmp_path / "certs" / "c.pem")


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        ({"tls": {"min_version": "TLSv1.1"}}, "tls.min_version", "must be one of TLSv1.2, TLSv1.3"),
        ({"tls": {"ciphers": "NOSUCHCIPHER"}}, "tls.ciphers", "no cipher matches 'NOSUCHCIPHER'"),
        ({"tls": {"certificate": "/nonexistent/cert.pem", "key": "/nonexistent/key.pem"}}, "tls.certificate", "/nonexistent/cert.pem is not a readable file"),
        ({"tls": {"enable": True}}, "tls.enable", "unknown key"),
        ({"backend_tls": {"ssl_mode": "sometimes"}}, "backend_tls.ssl_mode", "must be one of disabled, preferred, required, verify_ca, verify_identity"),
        ({"servers": [{"hostgroup_id": 0, "hostname": "db", "ssl_mode": "on"}]}, "servers[0].ssl_mode", "must be one of disabled"),
        ({"servers": [{"hostgroup_id": 0, "hostname": "db", "min_version": "TLSv1.3"}]}, "servers[0].min_version", "unknown key"),
        ({"users": [{"username": "u", "password": "p", "require_ssl": "yes"}]}, "users[0].require_ssl", "expected bool"),
    ],
)
def test_config_errors_name_the_key(extra, key, reason):
    with pytest.raises(ConfigError) as e:
        _config(**extra)
    assert e.value.key == key and reason in e.value.reason


def test_pairs_must_be_given_together(tmp_path):
    f = tmp_path / "f.pem"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"tls.key: certificate and key go together"):
        _config(tls={"certificate": str(f)})
    with pytest.raises(ConfigError, match=r"servers\[0\].ssl_key: ssl_cert and ssl_key go together"):
        _config(servers=[{"hostgroup_id": 0, "hostname": "db", "ssl_cert": str(f)}])


# ---- codec and auth math ------------------------------------------------------------------------


def test_ssl_request_is_the_head_of_the_handshake_response():
    payload = make_ssl_request(Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION, 1 << 24, 45)
    assert len(payload) == 32 and is_ssl_request(payload)
    assert struct.unpack("<I", payload[:4])[0] & Capability.SSL
    assert not is_ssl_request(payload[:4] + b"\0" * 27)  # short
    full = make_handshake_response(HandshakeResponse41(Capability.PROTOCOL_41 | Capability.SSL | Capability.SECURE_CONNECTION, 1 << 24, 45, "u", b"", None, ""))
    assert full[:32] == make_ssl_request(Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION, 1 << 24, 45)
    assert not is_ssl_request(full)  # the full response (over TLS) is longer
    with pytest.raises(ProtocolError, match="SSL was requested but the proxy did not offer it"):
        parse_handshake_response(full)
    assert parse_handshake_response(full, tls=True).username == "u"


def test_framer_hands_over_what_follows_the_ssl_request():
    f = PacketFramer()
    f.feed(make_packet(make_ssl_request(Capability.PROTOCOL_41, 1 << 24, 45), 1) + b"\x16\x03\x01hello")
    assert is_ssl_request(f.next_packet().payload)
    assert f.take_rest() == b"\x16\x03\x01hello"
    assert f.buffered == 0 and f.next_packet() is None


def test_caching_sha2_fast_path_from_the_cached_check():
    scramble = auth.new_scramble()
    token = auth.caching_sha2_token("s3cret", scramble)
    check = auth.caching_sha2_check("s3cret")
    assert check == hashlib.sha256(hashlib.sha256(b"s3cret").digest()).digest() == auth.caching_sha2_check_from_clear(b"s3cret")
    assert auth.verify_caching_sha2_fast(check, scramble, token)
    assert not auth.verify_caching_sha2_fast(check, scramble, auth.caching_sha2_token("other", scramble))
    assert not auth.verify_caching_sha2_fast(check, auth.new_scramble(), token)
    assert not auth.verify_caching_sha2_fast(check, scramble, token[:-1])


def test_a_hashed_password_has_no_fast_path_check_but_verifies_a_clear_password():
    stored = "*" + hashlib.sha1(hashlib.sha1(b"pw").digest()).hexdigest().upper()
    assert auth.is_native_hash(stored) and not auth.is_native_hash("pw") and not auth.is_native_hash("*" + "g" * 40)
    assert auth.caching_sha2_check(stored) is None
    assert auth.verify_clear_password(stored, b"pw") and auth.verify_clear_password(stored.lower().replace("*", "*"), b"pw")
    assert not auth.verify_clear_password(stored, b"pw2")
    assert auth.verify_clear_password("pw", b"pw") and not auth.verify_clear_password("pw", b"pW")


def test_rsa_exchange_round_trip(tmp_path):
    private, public = rsa_pair(tmp_path, "k")
    keys = tls.RSAKeyPair.load(private, public)
    scramble = auth.new_scramble()
    blob = tls.rsa_encrypt_password(public.read_bytes(), "pässword", scramble)
    assert auth.xor_with_scramble(keys.decrypt(blob), scramble) == "pässword".encode() + b"\0"
    _, other = rsa_pair(tmp_path, "other")
    with pytest.raises(ValueError):
        keys.decrypt(tls.rsa_encrypt_password(other.read_bytes(), "x", scramble))


# ---- generated material and contexts ------------------------------------------------------------


def test_generated_certificate_verifies_by_name_and_address(tmp_path):
    cert, key = tls.ensure_self_signed(tmp_path, ("127.0.0.1", "0.0.0.0"))
    assert (tmp_path / tls.KEY_FILE).stat().st_mode & 0o077 == 0 and (tmp_path / tls.CA_KEY_FILE).stat().st_mode & 0o077 == 0
    assert tls.ensure_self_signed(tmp_path) == (cert, key)  # kept, not made again
    server = tls.server_context(cert, key)
    for name in ("localhost", "127.0.0.1", socket.gethostname()):
        client = ssl.create_default_context(cafile=str(tmp_path / tls.CA_FILE))
        assert _handshake(server, client, name) in ("TLSv1.2", "TLSv1.3")
    client = ssl.create_default_context(cafile=str(tmp_path / tls.CA_FILE))
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _handshake(server, client, "db.example.com")


def test_generation_failure_says_what_to_do(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(tls.TLSSetupError, match=r"make \[admin\] data_dir writable, name a certificate and key in \[tls\], or set \[tls\] enabled = false"):
        tls.ensure_self_signed(not_a_dir)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> str:
    """A TLS handshake between two contexts in memory; the negotiated version (or the client's error)."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname=name)
    done = [False, False]
    for _ in range(10):
        for i, (obj, out, peer_in) in enumerate(((cli, c_out, s_in), (srv, s_out, c_in))):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError:
                    if obj is srv:  # the client refused: its own error says why
                        peer_in.write(out.read())
                        continue
                    raise
            peer_in.write(out.read())
        if all(done):
            return cli.version()
    raise AssertionError("handshake did not finish")


def test_client_contexts_per_ssl_mode(tmp_path):
    ca = make_ca(tmp_path, "c")
    for mode, verify, hostname in (("preferred", ssl.CERT_NONE, False), ("required", ssl.CERT_NONE, False),
                                   ("verify_ca", ssl.CERT_REQUIRED, False), ("verify_identity", ssl.CERT_REQUIRED, True)):  # fmt: skip
        ctx = tls.client_context(BackendTLS(ssl_mode=mode, ssl_ca=str(ca.cert), min_version="TLSv1.3"))
        assert (ctx.verify_mode, ctx.check_hostname, ctx.minimum_version) == (verify, hostname, ssl.TLSVersion.TLSv1_3)
    contexts = tls.ClientContexts()
    settings = BackendTLS(ssl_mode="verify_ca", ssl_ca=str(ca.cert))
    assert contexts.get(settings) is contexts.get(settings)
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(tls.TLSSetupError, match="cannot read the CA file"):
        contexts.prepare([BackendTLS(ssl_mode="verify_ca", ssl_ca=str(bad))])


def test_frontend_reload_keeps_the_old_context_when_the_new_files_are_bad(tmp_path):
    ca = make_ca(tmp_path, "c")
    issued = ca.issue(tmp_path, "p", ips=("127.0.0.1",))
    front = tls.FrontendTLS(TLSSettings(certificate=str(issued.cert), key=str(issued.key)), str(tmp_path))
    assert "CN=p" in front.load()
    before = front.context
    issued.key.write_text("garbage")
    with pytest.raises(tls.TLSSetupError, match="cannot use certificate"):
        front.load()
    assert front.context is before
    assert tls.FrontendTLS(TLSSettings(enabled=False), str(tmp_path)).load().startswith("TLS for clients is disabled")


# ---- the switch with early bytes, on both event loops -------------------------------------------


class _Echo(asyncio.Protocol):
    """Upgrades after a fixed 4-byte preamble; then echoes what arrives inside TLS (app data can
    arrive before `accept` returns the TLS transport: it is held until then, as Login holds it)."""

    def __init__(self, context: ssl.SSLContext, done: asyncio.Future) -> None:
        self.context, self.done, self.buf, self.transport, self.task = context, done, b"", None, None
        self.secure = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.secure:
            self.transport.write(self.buf)
            self.buf = b""
        elif self.task is None and len(self.buf) >= 4:
            early, self.buf = self.buf[4:], b""
            self.task = asyncio.ensure_future(self._upgrade(early))

    async def _upgrade(self, early: bytes) -> None:
        try:
            self.transport = await tls.accept(self.transport, self, self.context, early, 5.0)
            self.secure = True
            self.done.set_result(len(early))
            if self.buf:
                self.data_received(b"")
        except Exception as e:  # noqa: BLE001 - reported to the test
            self.done.set_exception(e)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_accept_hands_bytes_read_with_the_request_to_tls(tmp_path, loop_kind):
    cert, key = tls.ensure_self_signed(tmp_path)
    server_ctx = tls.server_context(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / tls.CA_FILE))

    async def main() -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        server = await loop.create_server(lambda: _Echo(server_ctx, done), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        def client() -> bytes:
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = client_ctx.wrap_bio(inc, out, server_hostname="localhost")
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                try:
                    obj.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                sock.sendall(b"STLS" + out.read())  # the request and the ClientHello in one write
                while True:
                    try:
                        obj.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        sock.sendall(out.read())
                        inc.write(sock.recv(65536))
                obj.write(b"ping")
                sock.sendall(out.read())
                while True:
                    try:
                        return obj.read(4)
                    except ssl.SSLWantReadError:
                        inc.write(sock.recv(65536))

        echoed = await asyncio.wait_for(loop.run_in_executor(None, client), 10)
        early = await done
        server.close()
        return early, echoed

    runner = asyncio.run if loop_kind == "asyncio" else uvloop.run
    early, echoed = runner(main())
    assert early > 0  # the ClientHello came in the same read as the request
    assert echoed == b"ping"


# ---- admin tables -------------------------------------------------------------------------------

CONFIG = """
[listeners.data]
port = 6033

[backend_tls]
ssl_mode = "required"

[[users]]
username = "app"
password = "app_pw"

[[users]]
username = "secure"
password = "s_pw"
require_ssl = true

[[servers]]
hostgroup_id = 0
hostname = "10.0.0.1"

[[servers]]
hostgroup_id = 0
hostname = "10.0.0.2"
ssl_mode = "disabled"
get_server_public_key = true
"""


def test_admin_rows_show_use_ssl_and_the_servers_own_tls_keys(tmp_path):
    path = tmp_path / "rwproxy.toml"
    path.write_text(CONFIG)
    cf = read_config_file(path)
    rows = rows_from_config(cf.config)
    assert [r["use_ssl"] for r in rows["mysql_users"]] == [0, 1]
    one, two = rows["mysql_servers"]
    assert (one["ssl_mode"], one["get_server_public_key"]) == (None, None)  # [backend_tls]'s
    assert (two["ssl_mode"], two["get_server_public_key"], two["ssl_ca"]) == ("disabled", 1, None)
    result = build_config(rows, ALL_SECTIONS, cf.config)
    assert result.ok, result.errors
    assert [s.tls.ssl_mode for s in result.config.servers] == ["required", "disabled"]
    assert result.config.users["secure"].require_ssl and result.config.tls == cf.config.tls
    # Rows written on the admin port: a bad mode is refused with the column named.
    rows["mysql_servers"][0]["ssl_mode"] = "sometimes"
    bad = build_config(rows, ALL_SECTIONS, cf.config)
    assert not bad.ok and any(e.column == "ssl_mode" and "must be one of" in e.reason for e in bad.errors)


def test_an_older_disk_layer_gets_the_new_columns(tmp_path):
    db, cf = older_disk_layer(tmp_path, CONFIG, 2)  # what rwproxy wrote before TLS: schema version 2
    store = ConfigStore(db)
    store.load_from_disk(ALL_SECTIONS)
    assert [r["use_ssl"] for r in store.rows("mysql_users")] == [0, 0]
    assert [r["ssl_mode"] for r in store.rows("mysql_servers")] == [None, None]
    result = store.build(ALL_SECTIONS, cf.config)
    assert result.ok, result.errors
    assert [s.tls.ssl_mode for s in result.config.servers] == ["required", "required"]
    store.close()
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
