"""Scramble math for mysql_native_password and caching_sha2_password (sans-IO, hashlib only).

mysql_native_password
(https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_authentication_methods_native_password_authentication.html):
    token = SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password)))
caching_sha2_password fast path
(https://dev.mysql.com/doc/dev/mysql-server/latest/page_caching_sha2_authentication_exchanges.html):
    token = SHA256(password) XOR SHA256(SHA256(SHA256(password)) + scramble)
An empty password is sent as an empty token by both.

The proxy knows its users' passwords, so it verifies a client token by computing the expected one
and comparing in constant time; it never needs the full caching_sha2 path for its own clients.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from .constants import CACHING_SHA2_PASSWORD, NATIVE_PASSWORD


def new_scramble() -> bytes:
    """20 random bytes with no NUL and no '$' (some clients truncate at NUL)."""
    out = bytearray(os.urandom(20))
    for i, b in enumerate(out):
        b &= 0x7F
        if b in (0, 0x24):
            b += 1
        out[i] = b
    return bytes(out)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def native_token(password: str, scramble: bytes) -> bytes:
    if not password:
        return b""
    pw = password.encode("utf-8")
    stage1 = hashlib.sha1(pw).digest()
    stage2 = hashlib.sha1(stage1).digest()
    return _xor(stage1, hashlib.sha1(scramble[:20] + stage2).digest())


def caching_sha2_token(password: str, scramble: bytes) -> bytes:
    if not password:
        return b""
    pw = password.encode("utf-8")
    p1 = hashlib.sha256(pw).digest()
    p2 = hashlib.sha256(p1).digest()
    return _xor(p1, hashlib.sha256(p2 + scramble[:20]).digest())


TOKEN_FUNCTIONS = {NATIVE_PASSWORD: native_token, CACHING_SHA2_PASSWORD: caching_sha2_token}


def scramble_for(plugin: str, password: str, scramble: bytes) -> bytes:
    """Client side: the auth response for `plugin`. Raises KeyError for an unsupported plugin."""
    return TOKEN_FUNCTIONS[plugin](password, scramble)


def verify(plugin: str, password: str, scramble: bytes, token: bytes) -> bool:
    """Server side: does `token` prove knowledge of `password` for this scramble?"""
    fn = TOKEN_FUNCTIONS.get(plugin)
    if fn is None:
        return False
    # Some clients send a trailing NUL after an empty token.
    if token in (b"", b"\0"):
        return not password
    return hmac.compare_digest(fn(password, scramble), bytes(token))
