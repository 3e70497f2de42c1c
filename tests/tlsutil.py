"""Certificates for TLS tests: a CA of the test's own and certificates it signs (ECDSA P-256, made
with `cryptography`), and a raw MySQL client that speaks TLS over a socket it controls byte by byte.

Independent of proxy.tls (which generates the proxy's own pair): the tests check the proxy against
material it did not make.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.rawclient import CLIENT_CAPS, Raw

CLIENT_SSL = 1 << 11


@dataclass
class Issued:
    cert: Path
    key: Path


@dataclass
class CA:
    name: str
    cert: Path
    key: ec.EllipticCurvePrivateKey

    def issue(self, directory: Path, name: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), days: int = 30) -> Issued:
        """A leaf certificate (server and client use) for these names, signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        ca_cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        out = Issued(directory / f"{name}-cert.pem", directory / f"{name}-key.pem")
        out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        out.key.chmod(0o600)
        return out


def make_ca(directory: Path, name: str) -> CA:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test CA {name}")])
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    path = directory / f"ca-{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CA(name, path, key)


def rsa_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """An RSA key pair (private, public PEM files), as a server keeps for caching_sha2_password."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = directory / f"{name}-private.pem", directory / f"{name}-public.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


class TLSRaw(Raw):
    """Raw, switched to TLS after the greeting by `start_tls`: the SSLRequest and the first TLS
    bytes can go out in one write (as a client's two writes may reach the proxy in one read)."""

    tls: ssl.SSLObject | None = None

    def start_tls(self, context: ssl.SSLContext, *, together: bool, server_hostname: str = "localhost") -> None:
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = context.wrap_bio(self._in, self._out, server_hostname=server_hostname)
        request = struct.pack("<IIB", CLIENT_CAPS | CLIENT_SSL, 1 << 24, 45) + b"\0" * 23
        packet = len(request).to_bytes(3, "little") + b"\x01" + request
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = self._out.read()
        if together:
            self.sock.sendall(packet + hello)
        else:
            self.sock.sendall(packet)
            time.sleep(0.2)
            self.sock.sendall(hello)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                assert data, "the proxy closed the connection during the TLS handshake"
                self._in.write(data)
        self._flush()
        self.tls = obj

    def _flush(self) -> None:
        data = self._out.read()
        if data:
            self.sock.sendall(data)

    def _fill(self, n: int) -> bool:
        if self.tls is None:
            return super()._fill(n)
        while len(self.buf) < n:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                try:
                    data = self.sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    return False
                self._in.write(data)
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return False
            if not chunk:
                return False
            self.buf += chunk
        return True

    def send_raw(self, data: bytes) -> None:
        if self.tls is None:
            return super().send_raw(data)
        self.tls.write(data)
        self._flush()

    def send_packet(self, payload: bytes, seq: int) -> None:
        self.send_raw(len(payload).to_bytes(3, "little") + bytes((seq,)) + payload)

    def tls_handshake_response(self, user: str, password: str) -> bytes:
        """HandshakeResponse41 for mysql_native_password, with CLIENT_SSL (as sent inside TLS)."""
        payload = self.handshake_response(user, password)
        caps = struct.unpack("<I", payload[:4])[0] | CLIENT_SSL
        return struct.pack("<I", caps) + payload[4:]

