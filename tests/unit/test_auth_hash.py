"""Stored mysql_native_password hashes: verifying clients against '*'+HEX(SHA1(SHA1(pw))) and deriving
SHA1(pw) from a client's token so the proxy can log in to a backend as the same account."""

from __future__ import annotations

import hashlib

import pytest

from proxy.protocol import auth

# MySQL's documented example (SELECT PASSWORD('password') on MySQL 5.x / MariaDB).
PASSWORD_HASH = "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"


def test_native_hash_is_the_servers():
    assert auth.native_hash("password") == PASSWORD_HASH
    assert auth.native_hash("") == ""
    assert auth.native_hash(PASSWORD_HASH.lower()) == PASSWORD_HASH  # hashing a hash changes nothing
    assert auth.is_native_hash(PASSWORD_HASH) and auth.is_native_hash(PASSWORD_HASH.lower())
    for not_hash in ("password", "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E1", "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E1G", ""):
        assert not auth.is_native_hash(not_hash)


@pytest.mark.parametrize("stored", ["s3cret", auth.native_hash("s3cret")])
def test_verify_with_clear_or_hashed_password(stored):
    scramble = auth.new_scramble()
    assert auth.verify("mysql_native_password", stored, scramble, auth.native_token("s3cret", scramble))
    assert not auth.verify("mysql_native_password", stored, scramble, auth.native_token("s3creT", scramble))
    assert not auth.verify("mysql_native_password", stored, scramble, b"")
    assert not auth.verify("mysql_native_password", stored, scramble, b"\x00" * 19)
    # a token for another scramble is refused
    assert not auth.verify("mysql_native_password", stored, scramble, auth.native_token("s3cret", auth.new_scramble()))


def test_hashed_password_does_not_log_in_with_the_hash_text_as_password():
    scramble = auth.new_scramble()
    stored = auth.native_hash("s3cret")
    assert not auth.verify("mysql_native_password", stored, scramble, auth.native_token(stored, scramble))


def test_caching_sha2_cannot_use_a_native_hash():
    scramble = auth.new_scramble()
    stored = auth.native_hash("pw")
    assert not auth.verify("caching_sha2_password", stored, scramble, auth.caching_sha2_token("pw", scramble))
    assert auth.verify("caching_sha2_password", "pw", scramble, auth.caching_sha2_token("pw", scramble))


def test_stage1_derived_from_a_client_token_logs_in_to_a_backend():
    client_scramble, backend_scramble = auth.new_scramble(), auth.new_scramble()
    stored = auth.native_hash("app_pw")
    token = auth.native_token("app_pw", client_scramble)
    stage1 = auth.native_stage1_from_token(token, client_scramble, stored)
    assert stage1 == hashlib.sha1(b"app_pw").digest()
    # the backend's check: the same token a client knowing the clear password would send
    assert auth.native_token_from_stage1(stage1, backend_scramble) == auth.native_token("app_pw", backend_scramble)
    assert auth.verify("mysql_native_password", stored, backend_scramble, auth.native_token_from_stage1(stage1, backend_scramble))


def test_stage1_is_not_derived_from_a_wrong_token():
    scramble = auth.new_scramble()
    stored = auth.native_hash("app_pw")
    assert auth.native_stage1_from_token(auth.native_token("nope", scramble), scramble, stored) is None
    assert auth.native_stage1_from_token(b"", scramble, stored) is None
    assert auth.native_stage1_from_token(b"x" * 32, scramble, stored) is None
    assert auth.native_stage1_from_token(auth.native_token("", scramble), scramble, "") is None
    with pytest.raises(ValueError):
        auth.native_token_from_stage1(b"short", scramble)


def test_stage1_from_a_clear_stored_password_too():
    scramble = auth.new_scramble()
    assert auth.native_stage1_from_token(auth.native_token("pw", scramble), scramble, "pw") == hashlib.sha1(b"pw").digest()
