"""Scramble math for mysql_native_password and caching_sha2_password (sans-IO, hashlib only).

mysql_native_password
(https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_authentication_methods_native_password_authentication.html):
    token = SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password)))
caching_sha2_password fast path
(https://dev.mysql.com/doc/dev/mysql-server/latest/page_caching_sha2_authentication_exchanges.html):
    token = SHA256(password) XOR SHA256(SHA256(SHA256(password)) + scramble)
An empty password is sent as an empty token by both.

The proxy verifies a client token by computing the expected one and comparing in constant time.

Stored passwords may be the server's own mysql_native_password hash instead of the clear text:
``*`` + 40 upper-case hex digits of SHA1(SHA1(password)) -- what ``mysql.user.authentication_string``
(MySQL) / ``Password`` (MariaDB) holds and what ``SELECT PASSWORD('pw')`` returns on MariaDB.
Knowing only that hash (stage2) is enough to check a client's token:

    stage1' = token XOR SHA1(scramble + stage2)        and accept when SHA1(stage1') == stage2

and, as a side effect, it recovers stage1 = SHA1(password) from a token that passed. stage1 is
all a *client* needs to log in to a server with mysql_native_password (the token above is built
from stage1, never from the clear text), so a proxy that stores only hashes can still log in to
its backends as the same account: `native_stage1_from_token` at the client's login, then
`native_token_from_stage1` for each backend scramble (ProxySQL does the same with
admin-hash_passwords). stage1 is as good as the password for that account: keep it in memory
only, never log or store it.

caching_sha2_password full authentication: a server answers a fast-path token with "perform full
authentication" when it has no cached SHA256(SHA256(password)) for the account. The client then
sends its password in clear over TLS, or, without TLS, XOR'd with the scramble (repeated) and
encrypted with the server's RSA public key (OAEP padding; the key is the server's own file, or
sent on request: AuthMoreData 0x02). The proxy has no cached check for an account it stores only
as a native hash (the fast path cannot work from it): it takes the full path once, checks the clear
password against the hash (`verify_clear_password`), and from then on keeps the fast path's check
(`caching_sha2_check_from_clear`) for the account, as the server's cache does. The RSA part needs a
crypto library and lives in proxy.tls; the byte shuffling is here.
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


_HEX = frozenset("0123456789ABCDEFabcdef")


def is_native_hash(stored: str) -> bool:
    """Is `stored` a mysql_native_password hash ('*' + 40 hex digits) rather than a clear password?"""
    return len(stored) == 41 and stored[0] == "*" and all(c in _HEX for c in stored[1:])


def native_hash(password: str) -> str:
    """The server's mysql_native_password hash of `password`: '*' + upper hex SHA1(SHA1(pw)); '' stays ''
    (an account without a password). A value that already is such a hash is returned unchanged
    (upper-cased), so hashing twice is harmless."""
    if not password:
        return ""
    if is_native_hash(password):
        return password.upper()
    return "*" + hashlib.sha1(hashlib.sha1(password.encode("utf-8")).digest()).hexdigest().upper()


def _stage2(stored: str) -> bytes:
    if is_native_hash(stored):
        return bytes.fromhex(stored[1:])
    return hashlib.sha1(hashlib.sha1(stored.encode("utf-8")).digest()).digest()


def native_stage1_from_token(token: bytes, scramble: bytes, stored: str) -> bytes | None:
    """A client's mysql_native_password `token` for `scramble`, checked against `stored` (a clear
    password or its native hash): SHA1(password) when the token proves the password, else None.

    This is what lets a proxy that keeps only the hash log in to a backend as the same account:
    pass the result to `native_token_from_stage1` with the backend's scramble. An empty stored
    password has no stage1 (None; the client's empty token is checked by `verify`)."""
    token = bytes(token)
    if not stored or len(token) != 20:
        return None
    stage2 = _stage2(stored)
    stage1 = _xor(token, hashlib.sha1(scramble[:20] + stage2).digest())
    if hmac.compare_digest(hashlib.sha1(stage1).digest(), stage2):
        return stage1
    return None


def native_token_from_stage1(stage1: bytes, scramble: bytes) -> bytes:
    """Client side of mysql_native_password from SHA1(password) instead of the password itself."""
    if len(stage1) != 20:
        raise ValueError("stage1 is SHA1(password): 20 bytes")
    return _xor(stage1, hashlib.sha1(scramble[:20] + hashlib.sha1(stage1).digest()).digest())


class Stage1(bytes):
    """SHA1(password) of an account whose clear password the proxy does not keep (only its native
    hash): learned from a client's successful mysql_native_password login
    (`native_stage1_from_token`), it answers a server's mysql_native_password challenge as the
    password would. It cannot answer caching_sha2_password (which needs the clear text)."""

    def __repr__(self) -> str:  # never print the secret
        return "Stage1(...)"


def native_token(password: str | Stage1, scramble: bytes) -> bytes:
    if isinstance(password, Stage1):
        return native_token_from_stage1(password, scramble)
    if not password:
        return b""
    return native_token_from_stage1(hashlib.sha1(password.encode("utf-8")).digest(), scramble)


def caching_sha2_token(password: str | Stage1, scramble: bytes) -> bytes:
    if isinstance(password, Stage1):
        raise ValueError("caching_sha2_password needs the account's clear password; the proxy keeps only its native hash")
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
    """Server side: does `token` prove knowledge of `password` for this scramble? `password` is the
    stored secret: the clear text, or (mysql_native_password only) its native hash."""
    fn = TOKEN_FUNCTIONS.get(plugin)
    if fn is None:
        return False
    # Some clients send a trailing NUL after an empty token.
    if token in (b"", b"\0"):
        return not password
    if not password:
        return False
    if plugin == NATIVE_PASSWORD:
        return native_stage1_from_token(token, scramble, password) is not None
    if is_native_hash(password):  # caching_sha2 needs SHA256(clear): a native hash cannot answer it
        return False
    return hmac.compare_digest(fn(password, scramble), bytes(token))


# ---- caching_sha2_password: the server's cache and full authentication -----------------------

def caching_sha2_check(stored: str) -> bytes | None:
    """What the fast path verifies a token against: SHA256(SHA256(password)) -- the value a
    server keeps in its cache after a full authentication. None when `stored` is a hash of the
    password (the fast path needs the clear text once: full authentication)."""
    if is_native_hash(stored):
        return None
    return hashlib.sha256(hashlib.sha256(stored.encode("utf-8")).digest()).digest()


def caching_sha2_check_from_clear(password: bytes) -> bytes:
    """The fast path's check from a clear password received in a full authentication."""
    return hashlib.sha256(hashlib.sha256(password).digest()).digest()


def verify_caching_sha2_fast(check: bytes, scramble: bytes, token: bytes) -> bool:
    """Server side of the fast path from the cached check alone (as a server does):
    SHA256(password) = token XOR SHA256(check + scramble), accepted when its SHA256 is `check`."""
    token = bytes(token)
    if len(token) != 32:
        return False
    p1 = _xor(token, hashlib.sha256(check + scramble[:20]).digest())
    return hmac.compare_digest(hashlib.sha256(p1).digest(), check)


def verify_clear_password(stored: str, password: bytes) -> bool:
    """Does the clear `password` (full authentication) match `stored`: the clear text, or its
    mysql_native_password hash? Constant time."""
    if is_native_hash(stored):
        digest = hashlib.sha1(hashlib.sha1(password).digest()).hexdigest().upper()
        return hmac.compare_digest(digest, stored[1:].upper())
    return hmac.compare_digest(stored.encode("utf-8"), password)


def xor_with_scramble(data: bytes, scramble: bytes) -> bytes:
    """caching_sha2_password's RSA payload before encryption (and after decryption): each byte of
    password + NUL XOR'd with the scramble, repeated."""
    n = len(scramble)
    return bytes(b ^ scramble[i % n] for i, b in enumerate(data))
