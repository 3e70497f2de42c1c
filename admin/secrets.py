"""How passwords live in the admin tables: never in clear.

Theory of operation
-------------------
``mysql_users.password`` and ``backend_password`` hold one of these forms -- in memory, on disk
and in the runtime_* tables alike -- so no SELECT on the admin port, no disk file and no DIFF ever
shows a password:

* ``''`` (password only): the account has no password.
* ``*`` + 40 hex digits: the server's mysql_native_password hash, SHA1(SHA1(password)) -- what
  ``SELECT PASSWORD('pw')`` returns on MariaDB and mysql.user holds. The proxy verifies clients
  against it (proxy.protocol.auth) without knowing the password.
* ``env:NAME`` / ``file:/absolute/path``: a reference, read at every LOAD MYSQL USERS TO RUNTIME
  (and at startup, and at SIGHUP for the running config), so a rotated secret needs no restart.
  This is what the config file's ``password_env`` / ``password_file`` become in the tables.
* NULL (backend_password only): the same secret as ``password``.

A clear password typed into the admin port is *sealed* in the same transaction as the statement
that wrote it (`seal`, run by ConfigStore after every write of mysql_users; ProxySQL's
admin-hash_passwords does it at LOAD, which leaves it readable in memory until then): for a
mysql_native_password user it becomes its hash. A backend_password equal to the row's password
becomes NULL. Anything else is refused with a message saying to use a reference: the proxy needs
those secrets in clear (caching_sha2_password verification and backend logins other than as the
same native account), and the admin store keeps no clear secret.

Where the clear text is still needed, the running proxy gets it from a `Keyring`: an in-process map
hash -> clear text of every clear secret the process has seen (config-file literals, passwords
typed into the admin port, the live configuration). It is never stored, never shown, and empty
after a restart. `resolve` turns a row's forms into what proxy.config.parse_config takes: a hash
whose clear text the keyring knows becomes the clear text; a reference becomes
``password_env`` / ``password_file``. A backend login with the same account as a hashed frontend
password whose clear text is unknown (after a restart, for a password typed into the admin port)
needs SHA1(password), which the proxy derives from the client's own login
(proxy.protocol.auth.native_stage1_from_token).

Never: store, log or return a clear secret where a client could read it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

from proxy.config import User, is_secret_source
from proxy.protocol.auth import is_native_hash, native_hash
from proxy.protocol.constants import NATIVE_PASSWORD

from .commands import AdminError

__all__ = ["Form", "Keyring", "SealError", "form_of", "resolve", "seal", "stored_backend", "stored_password"]


class Form(enum.Enum):
    EMPTY = "empty"
    NATIVE_HASH = "native hash"
    REFERENCE = "reference"
    NULL = "null"
    CLEAR = "clear"


def form_of(value: Any) -> Form:
    if value is None:
        return Form.NULL
    if not isinstance(value, str) or value == "":
        return Form.EMPTY if value == "" else Form.CLEAR
    if is_native_hash(value):
        return Form.NATIVE_HASH
    if is_secret_source(value):
        return Form.REFERENCE
    return Form.CLEAR


class SealError(AdminError):
    """A clear secret the admin store cannot keep (ER_PASSWORD_FORMAT 1372)."""

    errno = 1372
    sqlstate = "HY000"


class Keyring:
    """hash -> clear text of the secrets this process has seen in clear. In memory only."""

    def __init__(self) -> None:
        self._by_hash: dict[str, str] = {}

    def add(self, clear: str) -> str:
        """Remember `clear`; returns its hash (the form stored in the tables)."""
        if not clear or is_native_hash(clear):
            return native_hash(clear)
        h = native_hash(clear)
        self._by_hash[h] = clear
        return h

    def add_users(self, users: Iterable[User]) -> None:
        for u in users:
            for secret in (u.password, u.backend_password):
                self.add(secret)

    def clear_text(self, stored: str) -> str | None:
        return self._by_hash.get(stored.upper()) if is_native_hash(stored) else None

    def __len__(self) -> int:
        return len(self._by_hash)


def stored_password(u: User, keyring: Keyring | None = None) -> str:
    """What mysql_users.password shows for a configured user: its reference, else its hash."""
    if u.password_source is not None:
        return u.password_source
    return keyring.add(u.password) if keyring is not None else native_hash(u.password)


def stored_backend(u: User, keyring: Keyring | None = None) -> str | None:
    """What mysql_users.backend_password shows: NULL when it is the frontend secret, else its
    reference, else its hash."""
    if u.backend_password_source is not None:
        return None if u.backend_password_source == u.password_source else u.backend_password_source
    if u.backend_password == u.password and u.password_source is None:
        return None
    return keyring.add(u.backend_password) if keyring is not None else native_hash(u.backend_password)


def seal(row: Mapping[str, Any], keyring: Keyring) -> dict[str, Any]:
    """The changes that make a mysql_users row hold no clear secret ({} when it holds none).
    Raises SealError for a clear secret the store cannot keep as a hash."""
    changes: dict[str, Any] = {}
    user = row.get("username")
    password, backend = row.get("password"), row.get("backend_password")
    if form_of(backend) is Form.CLEAR:
        if backend == password or (form_of(password) is Form.NATIVE_HASH and native_hash(backend) == password.upper()):
            changes["backend_password"] = None  # the same secret as password
        else:
            raise SealError(
                f"mysql_users username={user}: backend_password is not stored in clear on the admin port: give it as "
                "'env:NAME' or 'file:/absolute/path' (read at LOAD MYSQL USERS TO RUNTIME, so it can rotate), or NULL "
                "for the same secret as password"
            )  # fmt: skip
    if form_of(password) is Form.CLEAR:
        if row.get("auth_plugin", NATIVE_PASSWORD) != NATIVE_PASSWORD:
            raise SealError(
                f"mysql_users username={user}: a {row.get('auth_plugin')} password is not stored in clear on the admin "
                "port and has no hash the proxy can verify with: give it as 'env:NAME' or 'file:/absolute/path', or use "
                "mysql_native_password (stored as the server's hash, '*' + 40 hex digits)"
            )  # fmt: skip
        changes["password"] = keyring.add(password)
    elif form_of(password) is Form.NATIVE_HASH and password != password.upper():
        changes["password"] = password.upper()
    return changes


def resolve(row: Mapping[str, Any], keyring: Keyring) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The config-file keys for a mysql_users row's secrets ({"password": ...} or
    {"password_file": ...}, and the backend's), and the problems found as (column, reason).
    References are not read here (parse_config reads them)."""
    out: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    password, backend = row.get("password"), row.get("backend_password")
    plugin = row.get("auth_plugin")
    pw_form = form_of(password)
    if pw_form is Form.REFERENCE:
        out.update(_reference("password", password))
    elif pw_form is Form.NATIVE_HASH:
        clear = keyring.clear_text(password)
        if clear is None and plugin != NATIVE_PASSWORD:
            problems.append(("password", f"{plugin} needs the clear password, and only its hash is known to this process: "
                                         "give it as 'env:NAME' or 'file:/absolute/path'"))  # fmt: skip
        out["password"] = clear if clear is not None else password.upper()
    elif pw_form is Form.CLEAR:  # only rows that never went through the admin port's writes
        out["password"] = password
    else:
        out["password"] = password if isinstance(password, str) else ""
    bk_form = form_of(backend)
    if bk_form is Form.REFERENCE:
        out.update(_reference("backend_password", backend))
    elif bk_form is Form.NATIVE_HASH:
        clear = keyring.clear_text(backend)
        if clear is not None:
            out["backend_password"] = clear
        elif pw_form is Form.NATIVE_HASH and backend.upper() == password.upper():
            pass  # the same secret as password: the default
        else:
            problems.append(("backend_password", "the proxy needs this secret in clear to log in to the servers, and only its "
                                                 "hash is known to this process: give it as 'env:NAME' or 'file:/absolute/path', "
                                                 "or NULL for the same secret as password"))  # fmt: skip
    elif bk_form in (Form.CLEAR, Form.EMPTY):
        out["backend_password"] = backend
    return out, problems


def _reference(key: str, ref: str) -> dict[str, str]:
    kind, _, name = ref.partition(":")
    return {f"{key}_{kind}": name}
