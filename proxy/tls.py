"""Transport security: the proxy's certificates and keys, the TLS contexts built from them, and the
switch to TLS in the middle of a MySQL handshake, on both sides of the proxy.

Theory of operation
-------------------
MySQL starts TLS inside its own protocol: the server's greeting says CLIENT_SSL, the client answers
with an SSLRequest (the 32-byte head of its HandshakeResponse41) and then, without waiting for any
reply, begins the TLS handshake on the same socket; the full HandshakeResponse41 and everything
after it travel inside TLS. asyncio's `loop.start_tls` (uvloop's too) layers TLS under an existing
transport and keeps the protocol object, so a ClientSession or BackendConnection stays what it was;
only its `transport` is replaced by the TLS one.

One trap: the client's first TLS bytes may have been read together with its SSLRequest (one read
of the socket took both), and `start_tls` cannot be told about bytes already read. `accept` hands
them to the TLS protocol right after `start_tls` has installed it and before anything more is read
from the socket: the call is queued before `start_tls` queues its own start, and `start_tls` stops
reading until then (the order is pinned by tests/integration/test_tls.py, which sends both in one
write). The server side of a backend connection says nothing until the client's TLS hello, so
nothing can be read ahead there.

What lives here:
- `FrontendTLS`: the data port's TLS context, from [tls] certificate/key or from a pair generated
  into the data directory at first start (a CA and a server certificate for localhost, the host's
  name and its loopback and listener addresses, like ProxySQL's proxysql-ca.pem / -cert.pem /
  -key.pem); `reload()` builds a new context from the files (PROXYSQL RELOAD TLS, SIGHUP): new
  connections use it, established ones keep theirs. It also holds the RSA key pair clients use for
  caching_sha2_password full authentication without TLS (loaded, or generated the first time one is
  needed, off the event loop).
- `CLIENT_CONTEXTS`: the contexts towards servers, one per distinct BackendTLS, built on first use
  and dropped at reload.
- `accept` / `connect`: the two directions of the switch; `rsa_encrypt_password`: a client's side
  of the RSA exchange (backend connections).

Costs: nothing per statement for plaintext sessions (their transport is the plain one). A TLS
session pays the record layer (OpenSSL) per chunk, and the SSL protocol of uvloop keeps a 256 KiB
read buffer per connection (virtual memory; only the pages used become resident).

Never: log a key or a password; fall back to plaintext once a peer asked for TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from .config import BackendTLS, TLSSettings

log = logging.getLogger("rwproxy.tls")

_TLS_VERSION = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}

# Files generated into the data directory when [tls] names none.
CA_FILE = "rwproxy-ca.pem"
CA_KEY_FILE = "rwproxy-ca-key.pem"
CERT_FILE = "rwproxy-cert.pem"
KEY_FILE = "rwproxy-key.pem"
RSA_PRIVATE_FILE = "rwproxy-rsa-private.pem"
RSA_PUBLIC_FILE = "rwproxy-rsa-public.pem"


class TLSSetupError(OSError):
    """Certificates or keys cannot be read, generated or used; the message says which and why. (An
    OSError: the entry point reports it as any other reason the proxy cannot start.)"""


# ---- the switch to TLS --------------------------------------------------------------------------


async def accept(transport: asyncio.Transport, protocol: asyncio.BaseProtocol, context: ssl.SSLContext, early: bytes, timeout: float) -> asyncio.Transport:
    """Server side: TLS over `transport` after a client's SSLRequest. `early`: bytes the client sent
    after the SSLRequest that were already read (the start of its TLS handshake). Returns the TLS
    transport; raises ssl.SSLError (handshake refused) or ConnectionError (closed, or no handshake
    within `timeout` seconds)."""
    loop = asyncio.get_running_loop()
    if early:
        # Queued before start_tls queues the TLS protocol's start and the resumed reading: runs
        # after start_tls installed the TLS protocol on the transport, before any more is read.
        loop.call_soon(_feed_early, transport, protocol, early)
    return await loop.start_tls(transport, protocol, context, server_side=True, ssl_handshake_timeout=timeout)


def _feed_early(transport: asyncio.Transport, app_protocol: asyncio.BaseProtocol, data: bytes) -> None:
    tls_protocol = transport.get_protocol()
    if tls_protocol is app_protocol:  # start_tls did not take over: nothing can use these bytes
        log.error("TLS: early handshake bytes could not be handed to the TLS layer; connection dropped")
        transport.abort()
        return
    if isinstance(tls_protocol, asyncio.BufferedProtocol) or hasattr(tls_protocol, "get_buffer"):
        view = memoryview(data)
        while view:
            buf = tls_protocol.get_buffer(len(view))  # type: ignore[attr-defined]
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            tls_protocol.buffer_updated(n)  # type: ignore[attr-defined]
            view = view[n:]
    else:
        tls_protocol.data_received(data)  # type: ignore[attr-defined]


async def connect(transport: asyncio.Transport, protocol: asyncio.BaseProtocol, context: ssl.SSLContext, server_hostname: str, timeout: float) -> asyncio.Transport:
    """Client side: TLS over `transport` after our SSLRequest. Raises ssl.SSLCertVerificationError
    when the server's certificate fails verification, ssl.SSLError / ConnectionError otherwise."""
    loop = asyncio.get_running_loop()
    return await loop.start_tls(
        transport, protocol, context, server_side=False, server_hostname=server_hostname if context.check_hostname else None,
        ssl_handshake_timeout=timeout,
    )  # fmt: skip


def describe_failure(e: BaseException) -> str:
    """Why a TLS handshake failed, in one line (the verification reason when there is one)."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {e.verify_message or e.reason}"
    if isinstance(e, ssl.SSLError):
        return f"TLS handshake failed: {e.reason or e}"
    if isinstance(e, ConnectionError) and not str(e):
        return "the peer closed the connection during the TLS handshake"
    if isinstance(e, ConnectionAbortedError) and "taking longer" in str(e):  # asyncio's / uvloop's handshake timeout
        return "the TLS handshake did not finish in time (handshake_timeout)"
    return f"TLS handshake failed: {str(e) or type(e).__name__}"


def session_cipher(transport: asyncio.BaseTransport | None) -> str | None:
    """'TLSv1.3 TLS_AES_256_GCM_SHA384' for a TLS transport, None for a plain one."""
    obj = transport.get_extra_info("ssl_object") if transport is not None else None
    if obj is None:
        return None
    cipher = obj.cipher()
    return f"{obj.version()} {cipher[0]}" if cipher else obj.version()


# ---- contexts -----------------------------------------------------------------------------------


def _tune(ctx: ssl.SSLContext, min_version: str, ciphers: str) -> None:
    ctx.minimum_version = _TLS_VERSION[min_version]
    if ciphers:
        ctx.set_ciphers(ciphers)


def server_context(certificate: str, key: str, min_version: str = "TLSv1.2", ciphers: str = "") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _tune(ctx, min_version, ciphers)
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as e:
        raise TLSSetupError(f"cannot use certificate {certificate} with key {key}: {getattr(e, 'strerror', None) or e}") from None
    return ctx


def client_context(tls: BackendTLS) -> ssl.SSLContext:
    """The context towards servers with these settings (modes as the MySQL client's --ssl-mode)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _tune(ctx, tls.min_version, tls.ciphers)
    if tls.verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = tls.ssl_mode == "verify_identity"
        try:
            if tls.ssl_ca:
                ctx.load_verify_locations(cafile=tls.ssl_ca)
            else:
                ctx.load_default_certs()
        except (OSError, ssl.SSLError) as e:
            raise TLSSetupError(f"cannot read the CA file {tls.ssl_ca}: {getattr(e, 'strerror', None) or e}") from None
    else:  # preferred / required: encrypted, but anyone's certificate is accepted
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.ssl_cert:
        try:
            ctx.load_cert_chain(tls.ssl_cert, tls.ssl_key)
        except (OSError, ssl.SSLError) as e:
            raise TLSSetupError(f"cannot use client certificate {tls.ssl_cert} with key {tls.ssl_key}: {getattr(e, 'strerror', None) or e}") from None
    return ctx


class ClientContexts:
    """Contexts towards servers, one per distinct BackendTLS, and the servers' pinned RSA public
    keys, read when first needed (a few file reads: once per setting, not per connection) and read
    again after a reload (`replace`)."""

    def __init__(self) -> None:
        self._contexts: dict[BackendTLS, ssl.SSLContext] = {}
        self._keys: dict[str, bytes] = {}

    def get(self, tls: BackendTLS) -> ssl.SSLContext:
        ctx = self._contexts.get(tls)
        if ctx is None:
            ctx = self._contexts[tls] = client_context(tls)
        return ctx

    def public_key(self, path: str) -> bytes:
        pem = self._keys.get(path)
        if pem is None:
            try:
                pem = Path(path).read_bytes()
            except OSError as e:
                raise TLSSetupError(f"cannot read the server public key {path}: {e.strerror}") from None
            self._keys[path] = pem
        return pem

    def prepare(self, settings: list[BackendTLS]) -> None:
        """Read everything these settings name now (TLSSetupError names what cannot be used)."""
        for tls in settings:
            if tls.ssl_mode != "disabled":
                self.get(tls)
            if tls.server_public_key:
                self.public_key(tls.server_public_key)

    def replace(self, other: ClientContexts) -> None:
        self._contexts, self._keys = other._contexts, other._keys


CLIENT_CONTEXTS = ClientContexts()


# ---- the frontend: certificate, reload, RSA key pair --------------------------------------------


class FrontendTLS:
    """TLS for the proxy's clients ([tls]); `context` is None when it is off."""

    def __init__(self, settings: TLSSettings, data_dir: str, listen_addresses: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.listen_addresses = listen_addresses
        self.context: ssl.SSLContext | None = None
        self.certificate = ""  # the files in use
        self.key = ""
        self._rsa: RSAKeyPair | None = None
        self._rsa_task: asyncio.Future | None = None

    def load(self) -> str:
        """(Re)build the context from the certificate files (generating the self-signed pair when
        [tls] names none and it does not exist yet). Returns what is in use, for the log and the
        admin port. Raises TLSSetupError; the old context then stays in use."""
        s = self.settings
        if not s.enabled:
            self.context = None
            return "TLS for clients is disabled ([tls] enabled = false)"
        if s.certificate:
            cert, key, generated = s.certificate, s.key, False
        else:
            cert, key, generated = *ensure_self_signed(self.data_dir, self.listen_addresses), True
        self.context = server_context(cert, key, s.min_version, s.ciphers)
        self.certificate, self.key = cert, key
        self._rsa, self._rsa_task = None, None  # the RSA pair is read again when next needed
        return f"certificate {cert}{' (generated)' if generated else ''}: {describe_certificate(cert)}; minimum {s.min_version}"

    async def rsa_keys(self) -> RSAKeyPair:
        """The key pair for caching_sha2_password's RSA exchange: [tls] rsa_private_key /
        rsa_public_key, or the pair in the data directory, generated there the first time."""
        if self._rsa is not None:
            return self._rsa
        if self._rsa_task is None:
            self._rsa_task = asyncio.ensure_future(asyncio.to_thread(self._load_rsa))
        task = self._rsa_task
        try:
            self._rsa = await asyncio.shield(task)
        except Exception:
            if self._rsa_task is task:
                self._rsa_task = None  # try again next time
            raise
        return self._rsa

    def _load_rsa(self) -> RSAKeyPair:
        s = self.settings
        if s.rsa_private_key:
            return RSAKeyPair.load(Path(s.rsa_private_key), Path(s.rsa_public_key))
        private, public = self.data_dir / RSA_PRIVATE_FILE, self.data_dir / RSA_PUBLIC_FILE
        if not private.exists():
            try:
                with _generating(self.data_dir):
                    if not private.exists():
                        generate_rsa_pair(private, public)
                        log.info("generated an RSA key pair for caching_sha2_password into %s and %s", private, public)
            except OSError as e:
                raise TLSSetupError(f"cannot write an RSA key pair into {self.data_dir}: {e.strerror}") from None
        return RSAKeyPair.load(private, public)


@dataclass(frozen=True)
class RSAKeyPair:
    private_key: object  # cryptography's RSAPrivateKey
    public_pem: bytes

    @classmethod
    def load(cls, private: Path, public: Path) -> RSAKeyPair:
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_private_key(private.read_bytes(), password=None)
            pem = public.read_bytes()
            serialization.load_pem_public_key(pem)
        except (OSError, ValueError, TypeError) as e:
            raise TLSSetupError(f"cannot read the RSA key pair {private} / {public}: {getattr(e, 'strerror', None) or e}") from None
        return cls(key, pem)

    def decrypt(self, blob: bytes) -> bytes:
        """Undo the client's RSA encryption (OAEP, SHA-1, as MySQL's clients use). ValueError if
        it was not encrypted with our public key."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return self.private_key.decrypt(blob, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))  # type: ignore[attr-defined]


def rsa_encrypt_password(pem: bytes, password: str, scramble: bytes) -> bytes:
    """Client side of caching_sha2_password's RSA exchange: (password + NUL) XOR scramble,
    encrypted with the server's public key. ValueError for a key that is not an RSA PEM."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    from .protocol.auth import xor_with_scramble

    key = serialization.load_pem_public_key(pem)
    data = xor_with_scramble(password.encode("utf-8") + b"\0", scramble)
    return key.encrypt(data, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))  # type: ignore[union-attr]


# ---- generated material -------------------------------------------------------------------------


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write a new file (0600 for keys) whole: a temporary name, then renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _names(listen_addresses: tuple[str, ...]) -> list:
    from cryptography import x509

    dns = {"localhost", socket.gethostname()}
    ips = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    for a in listen_addresses:
        try:
            ip = ipaddress.ip_address(a)
        except ValueError:
            if a and a not in ("*",):
                dns.add(a)
            continue
        if not ip.is_unspecified:
            ips.add(ip)
    return [x509.DNSName(d) for d in sorted(dns) if d] + [x509.IPAddress(ip) for ip in sorted(ips, key=str)]


def ensure_self_signed(data_dir: Path, listen_addresses: tuple[str, ...] = ()) -> tuple[str, str]:
    """The generated certificate and key in `data_dir` (made now if missing): a CA of its own
    (rwproxy-ca.pem: what clients give as --ssl-ca to verify the proxy) and a server certificate it
    signed, ECDSA P-256, valid ten years. Returns (certificate path, key path)."""
    cert_path, key_path, ca_path = data_dir / CERT_FILE, data_dir / KEY_FILE, data_dir / CA_FILE
    if cert_path.exists() and key_path.exists():
        return str(cert_path), str(key_path)
    try:
        with _generating(data_dir):
            if not (cert_path.exists() and key_path.exists()):  # another process may have made them meanwhile
                _generate_certificate(data_dir, listen_addresses)
    except OSError as e:
        raise TLSSetupError(
            f"cannot write a generated certificate into {data_dir} ({e.strerror}): make [admin] data_dir writable, "
            "name a certificate and key in [tls], or set [tls] enabled = false"
        ) from None
    return str(cert_path), str(key_path)


@contextlib.contextmanager
def _generating(data_dir: Path):
    """One process at a time generates into a data directory (two proxies starting together must
    not end up with one's certificate and the other's key)."""
    with open(data_dir / ".rwproxy-tls.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _generate_certificate(data_dir: Path, listen_addresses: tuple[str, ...]) -> None:
    cert_path, key_path, ca_path = data_dir / CERT_FILE, data_dir / KEY_FILE, data_dir / CA_FILE
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    until = now + datetime.timedelta(days=3650)
    host = socket.gethostname()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"rwproxy auto-generated CA ({host})")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"rwproxy auto-generated server certificate ({host})")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_names(listen_addresses)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    _write(ca_path, ca.public_bytes(pem), private=False)
    _write(data_dir / CA_KEY_FILE, ca_key.private_bytes(pem, pkcs8, serialization.NoEncryption()), private=True)
    _write(key_path, key.private_bytes(pem, pkcs8, serialization.NoEncryption()), private=True)
    _write(cert_path, cert.public_bytes(pem) + ca.public_bytes(pem), private=False)
    log.info("generated a self-signed CA and server certificate into %s (clients verify the proxy with --ssl-ca=%s)", data_dir, ca_path)


def generate_rsa_pair(private: Path, public: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = serialization.Encoding.PEM
        _write(private, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), private=True)
        _write(public, key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo), private=False)
    except OSError as e:
        raise TLSSetupError(f"cannot write an RSA key pair into {private.parent}: {e.strerror}") from None


def describe_certificate(path: str) -> str:
    """Subject and expiry of the first certificate in `path`, for logs ("?" if unreadable)."""
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
        return f"{cert.subject.rfc4514_string()}, valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    except (OSError, ValueError):
        return "?"
