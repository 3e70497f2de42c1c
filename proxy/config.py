"""Configuration file: TOML -> validated, frozen dataclasses.

Theory of operation: `load_config(path)` reads the file with tomllib, resolves secrets
(`password` / `password_env` / `password_file`), and checks every key it knows and rejects every key it
does not, so a typo is an error rather than a silently ignored setting. Any problem raises
ConfigError naming the file, the key (dotted, with list indexes) and the reason; the entry point
prints that one line and exits with status 2. Nothing here starts I/O beyond reading files.

A secret read from a file or an environment variable remembers where it came from
(`User.password_source`, ``"file:/abs/path"`` or ``"env:NAME"``), so it can be read again without a
restart: `refresh_secrets(config)` (SIGHUP) and the admin port's LOAD MYSQL USERS TO RUNTIME (whose
rows hold the reference, never the secret) pick up a rotated password. A password may also be the
server's mysql_native_password hash (``*`` + 40 hex digits; see proxy.protocol.auth).
"""

from __future__ import annotations

import contextvars
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rules.model import RuleSet, validate_replication_hostgroups, validate_rules

from .protocol.constants import SUPPORTED_AUTH_PLUGINS

SERVER_STATUSES = ("ONLINE", "SHUNNED", "OFFLINE_SOFT", "OFFLINE_HARD")
# MaxScale's causal_reads modes (readwritesplit): what a read after a write may see.
CAUSAL_READS = ("none", "local", "fast", "global")  # what [[servers]] status may say
LOG_LEVELS = ("debug", "info", "warning", "error")
# TLS towards a server, as the MySQL client's --ssl-mode (lower-case here): disabled: never;
# preferred: when the server offers it, unverified; required: always, unverified; verify_ca: the
# certificate must chain to ssl_ca (or the system's CAs); verify_identity: and name the server's
# hostname (or IP address).
SSL_MODES = ("disabled", "preferred", "required", "verify_ca", "verify_identity")
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")  # lowest protocol version accepted (older ones are unsafe)
# BackendTLS keys a [[servers]] entry may set for itself (min_version and ciphers are [backend_tls]'s only).
SERVER_TLS_KEYS = ("ssl_mode", "ssl_ca", "ssl_cert", "ssl_key", "server_public_key", "get_server_public_key")


class ConfigError(Exception):
    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(f"{file}: {key}: {reason}" if key else f"{file}: {reason}")
        self.file, self.key, self.reason = file, key, reason


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class User:
    username: str
    password: str = field(repr=False)  # clear text, or the server's native hash ('*' + 40 hex)
    auth_plugin: str
    default_hostgroup: int
    backend_username: str
    backend_password: str = field(repr=False)
    max_connections: int = 10000
    transaction_persistent: bool = True
    # Consistent reads (proxy.lending / proxy.causal): None = [proxy] causal_reads.
    causal_reads: str | None = None
    # Where a secret was read from ("file:/abs/path" or "env:NAME"; None: given inline), so that
    # refresh_secrets and the admin port can read it again after a rotation.
    password_source: str | None = None
    backend_password_source: str | None = None
    # The client must use TLS (ProxySQL's mysql_users.use_ssl): a plaintext login is refused with
    # ERR 1045, as MariaDB refuses an account created with REQUIRE SSL.
    require_ssl: bool = False


@dataclass(frozen=True, slots=True)
class BackendTLS:
    """TLS towards one server and how caching_sha2_password full authentication reaches it without
    TLS: [backend_tls] with the server's own [[servers]] keys on top (ProxySQL's use_ssl and
    mysql-ssl_p2s_*). Paths are absolute ("" = none)."""

    ssl_mode: str = "disabled"  # one of SSL_MODES
    ssl_ca: str = ""  # CA bundle for verify_ca / verify_identity ("" = the system's CAs)
    ssl_cert: str = ""  # client certificate (with ssl_key) for servers that ask for one
    ssl_key: str = ""
    min_version: str = "TLSv1.2"
    ciphers: str = ""  # OpenSSL cipher list for TLS 1.2 ("" = Python's defaults); TLS 1.3 suites are OpenSSL's
    # caching_sha2_password full authentication without TLS: the server's RSA public key (PEM),
    # pinned; or, only when get_server_public_key, asked of the server (which a man in the
    # middle could answer with its own).
    server_public_key: str = ""
    get_server_public_key: bool = False

    @property
    def verify(self) -> bool:
        return self.ssl_mode in ("verify_ca", "verify_identity")


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """[tls]: TLS for the proxy's own clients, and its RSA key pair for caching_sha2_password full
    authentication without TLS. Empty paths: a pair generated into [admin] data_dir at first start
    (rwproxy-ca.pem, rwproxy-cert.pem, rwproxy-key.pem; rwproxy-rsa-private.pem, rwproxy-rsa-public.pem),
    as ProxySQL does. Paths are absolute."""

    enabled: bool = True  # offer TLS (CLIENT_SSL in the greeting); ProxySQL's mysql-have_ssl
    certificate: str = ""  # PEM certificate chain (the server certificate first)
    key: str = ""  # its private key (PEM)
    min_version: str = "TLSv1.2"
    ciphers: str = ""  # OpenSSL cipher list for TLS 1.2 ("" = Python's defaults)
    rsa_private_key: str = ""
    rsa_public_key: str = ""


@dataclass(frozen=True, slots=True)
class Server:
    hostgroup_id: int
    hostname: str
    port: int
    status: str = "ONLINE"
    weight: int = 1
    max_connections: int = 1000
    max_replication_lag: int = 0
    comment: str = ""
    tls: BackendTLS = field(default_factory=BackendTLS)
    # Which of tls's keys this [[servers]] entry gave itself (the rest are [backend_tls]'s): the
    # admin tables show the others as NULL.
    tls_keys: frozenset[str] = frozenset()

    @property
    def address(self) -> str:
        return f"{self.hostname}:{self.port}"


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """[pool]: how backend connections are pooled and lent (proxy.pool applies it)."""

    min_idle: int = 0
    idle_timeout: float = 60.0  # close idle connections beyond min_idle after this long
    max_lifetime: float = 3600.0  # retire a connection after this long (±10% jitter); 0 = never
    connect_concurrency: int = 8  # simultaneous connection attempts per server
    connect_rate: float = 200.0  # new connections per second per server, evenly spaced; 0 = unlimited
    acquire_timeout: float = 10.0  # how long a session waits for a connection before ERR
    validate_after: float = 30.0  # COM_PING a connection idle longer than this before lending it
    max_prepared: int = 64  # prepared statements kept per connection (least recently used closed first)
    last_insert_id_hold: float = 1.0  # an idle session keeps its writer connection this long after an insert


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin port's login, where its disk layer lives, and its limits ([admin])."""

    username: str = "admin"
    password: str = field(default="admin", repr=False)
    data_dir: str = "."  # the disk layer is <data_dir>/rwproxy.db
    max_connections: int = 64  # admin client connections at once (logged in or not); more get ERR 1040
    statement_timeout: float = 1.0  # seconds an admin client's SQL may run before ERR 3024
    max_result_rows: int = 1_000_000  # rows of one admin result set; more is ERR 1104
    max_result_bytes: int = 32 << 20  # bytes of one admin result set (values as sent); more is ERR 1104
    password_source: str | None = None  # "file:..." / "env:..." when read from there (re-read at SIGHUP)


@dataclass(frozen=True, slots=True)
class StatsSettings:
    """[stats]: what the stats registry keeps."""

    max_digests: int = 10_000  # rows of stats_mysql_query_digest; the least recently seen go first
    max_digest_text: int = 2048  # characters of digest_text kept per row


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """[monitor]: the health checks (proxy.monitor), in ProxySQL's names, defaults and units.

    Intervals and timeouts are in milliseconds (as ProxySQL's mysql-monitor_* variables);
    lag_when_null and shun_recovery_time_sec are in seconds (as theirs). `enabled` is off when the
    section is absent (ProxySQL's monitor_enabled defaults to true): checks need an account on
    every server, see config/rwproxy.example.toml."""

    enabled: bool = False
    username: str = "monitor"
    password: str = field(default="monitor", repr=False)
    connect_interval: int = 120_000  # ms: a fresh connection (login included) to each server
    connect_timeout: int = 600  # ms
    ping_interval: int = 8_000  # ms: COM_PING over the monitor's kept-open connection
    ping_timeout: int = 1_000  # ms
    ping_max_failures: int = 3  # consecutive missed pings -> SHUNNED
    read_only_interval: int = 1_000  # ms: the replication hostgroup's check_type (and the GTID position)
    read_only_timeout: int = 800  # ms
    replication_lag_interval: int = 10_000  # ms: SHOW SLAVE STATUS / SHOW REPLICA STATUS
    replication_lag_timeout: int = 1_000  # ms
    replication_lag_count: int = 1  # consecutive checks over max_replication_lag -> SHUNNED_REPLICATION_LAG
    lag_when_null: int = 60  # s: the lag of a replica whose threads stopped or whose lag is NULL
    shun_on_failures: int = 5  # connect errors within one second -> SHUNNED (0 = never)
    shun_recovery_time_sec: int = 10  # s a SHUNNED server waits before a successful check brings it back
    # Read by the session (not the monitor): how long a statement waits for a hostgroup to have an
    # ONLINE server (ms), and how many times a failed safe read is retried elsewhere.
    connect_timeout_server_max: int = 10_000
    query_retries_on_failure: int = 1


# [monitor] keys with their ranges (used by parse_config and, through admin.validate, by the admin
# port's global_variables; a unit test keeps the two in agreement).
MONITOR_LIMITS: dict[str, tuple[int, int]] = {
    "connect_interval": (100, 86_400_000),
    "connect_timeout": (10, 600_000),
    "ping_interval": (100, 86_400_000),
    "ping_timeout": (10, 600_000),
    "ping_max_failures": (1, 1_000_000),
    "read_only_interval": (100, 86_400_000),
    "read_only_timeout": (10, 600_000),
    "replication_lag_interval": (100, 86_400_000),
    "replication_lag_timeout": (10, 600_000),
    "replication_lag_count": (1, 10),
    "lag_when_null": (0, 604_800),
    "shun_on_failures": (0, 1_000_000),
    "shun_recovery_time_sec": (0, 31_536_000),
    "connect_timeout_server_max": (1, 86_400_000),
    "query_retries_on_failure": (0, 1000),
}


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    log_level: str
    handshake_timeout: float
    connect_timeout: float
    max_allowed_packet: int
    listeners: dict[str, Listener]
    users: dict[str, User]
    servers: tuple[Server, ...]
    ruleset: RuleSet = field(default_factory=RuleSet)
    # Client-side limits (proxy.app owns the counting, the idle sweeper and the drain).
    max_connections: int = 2048  # client connections at once, logged in or not; more get ERR 1040
    client_idle_timeout: float = 28800.0  # seconds without a command before a client is closed; 0 = never
    shutdown_timeout: float = 30.0  # seconds a SIGTERM leaves busy / in-transaction sessions to finish
    # Seconds a statement may run before the proxy stops it (KILL QUERY); a query rule's `timeout`
    # (ms) overrides it. 0 = never. ProxySQL's mysql-default_query_timeout (10 h).
    default_query_timeout: float = 36000.0
    # Hostile clients (proxy.throttle): failed logins from one address / for one account slow down
    # (a growing delay before the ERR), then block (ERR 1129 / 4150) for host_block_time seconds;
    # connections still in the handshake have caps of their own, apart from logged-in clients; a
    # command packet must arrive whole within net_read_timeout; partial packets share a budget.
    max_connect_errors: int = 100  # failed logins from one address before it is blocked (MariaDB's default); 0 = never
    max_password_errors: int = 0  # failed logins for one account before it is blocked; 0 = never (MariaDB's default)
    host_block_time: float = 300.0  # seconds a blocked address / account stays blocked
    login_delay_after: int = 3  # failed logins (address or account) before answers are delayed
    max_login_delay: float = 5.0  # the delay doubles from 0.1 s per further failure, up to this
    max_handshakes: int = 1024  # connections not logged in yet; one more evicts the oldest
    max_handshakes_per_address: int = 64  # of those, from one client address; one more is refused (ERR 1040)
    net_read_timeout: float = 30.0  # a command packet begun must arrive whole within this (ERR 1159)
    # Consistent reads (MaxScale's causal_reads): none | local | fast | global; a user's own
    # causal_reads wins. A read that must wait for a replica to catch up waits at most
    # causal_reads_timeout seconds, then runs on the writer.
    causal_reads: str = "none"
    causal_reads_timeout: float = 10.0
    partial_packet_budget: int = 256 << 20  # bytes of unfinished packets held for all clients together
    # Backend connections: pooled and lent per statement or transaction (multiplexing), or one set
    # per client session (multiplexing = false).
    multiplexing: bool = True
    pool: PoolSettings = field(default_factory=PoolSettings)
    # Control plane: [listeners.admin] (the SQL admin port) and [listeners.metrics] (Prometheus)
    # are optional listeners; [admin] holds the admin login, [stats] the registry's bounds.
    admin: AdminSettings = field(default_factory=AdminSettings)
    stats: StatsSettings = field(default_factory=StatsSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    # TLS: [tls] for clients (proxy.tls builds the contexts), [backend_tls] the servers' defaults
    # (each Server carries its resolved BackendTLS).
    tls: TLSSettings = field(default_factory=TLSSettings)
    backend_tls: BackendTLS = field(default_factory=BackendTLS)

    def hostgroup(self, hostgroup_id: int) -> tuple[Server, ...]:
        return tuple(s for s in self.servers if s.hostgroup_id == hostgroup_id)


class _Section:
    """Typed access to one TOML table that remembers its dotted key for error messages."""

    def __init__(self, file: str, key: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise ConfigError(file, key, f"expected a table, got {type(table).__name__}")
        self.file, self.key, self.table = file, key, table
        self.used: set[str] = set()
        self.sources: dict[str, str] = {}  # secret prefix -> "env:NAME" / "file:/abs/path"

    def _k(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ..., check=None, hint: str = "") -> Any:
        self.used.add(name)
        if name not in self.table:
            if default is ...:
                raise ConfigError(self.file, self._k(name), "required key is missing" + (f" ({hint})" if hint else ""))
            return default
        value = self.table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(self.file, self._k(name), f"expected {names}, got {type(value).__name__} {value!r}")
        if check is not None:
            reason = check(value)
            if reason:
                raise ConfigError(self.file, self._k(name), reason)
        return value

    def secret(self, prefix: str, default: str | None = None) -> str:
        """`prefix`, `prefix_env` or `prefix_file`: exactly one (or none when a default exists).
        Where a secret came from is kept in `self.sources[prefix]` ("env:NAME" / "file:/abs/path")."""
        given = [k for k in (prefix, f"{prefix}_env", f"{prefix}_file") if k in self.table]
        self.used.update((prefix, f"{prefix}_env", f"{prefix}_file"))
        if len(given) > 1:
            raise ConfigError(self.file, self._k(given[1]), f"give only one of {', '.join(given)}")
        if not given:
            if default is not None:
                return default
            raise ConfigError(self.file, self._k(prefix), f"required: one of {prefix}, {prefix}_env, {prefix}_file")
        key = given[0]
        value = self.table[key]
        if not isinstance(value, str):
            raise ConfigError(self.file, self._k(key), f"expected string, got {type(value).__name__}")
        if key == prefix:
            return value
        if key.endswith("_env"):
            source = f"env:{value}"
        else:
            path = Path(value)
            if not path.is_absolute():
                path = Path(self.file).parent / path
            source = f"file:{path}"
        self.sources[prefix] = source
        if not _READ_SECRETS.get():
            return ""  # (a tool that routes, e.g. `rwproxy explain`, needs no passwords)
        try:
            return read_secret(source)
        except ValueError as e:
            raise ConfigError(self.file, self._k(key), str(e)) from None

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise ConfigError(self.file, self._k(unknown[0]), "unknown key (check the spelling against config/rwproxy.example.toml)")


SECRET_SOURCE_KINDS = ("env:", "file:")


def is_secret_source(text: str) -> bool:
    """Is `text` a reference to a secret ("env:NAME" or "file:/abs/path") rather than the secret?"""
    return text.startswith(SECRET_SOURCE_KINDS)


def read_secret(source: str) -> str:
    """The secret a reference names: "env:NAME" (the variable's value) or "file:/abs/path" (the
    file's text without one trailing newline). Raises ValueError saying what is wrong."""
    if source.startswith("env:"):
        name = source[4:]
        if not name or name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        return os.environ[name]
    if source.startswith("file:"):
        path = Path(source[5:])
        if not path.is_absolute():
            raise ValueError(f"{source!r}: the path must be absolute")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"cannot read {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ValueError(f"cannot read {path}: not UTF-8 text") from None
        return text[:-1] if text.endswith("\n") else text
    raise ValueError(f"{source!r} is not a secret reference (env:NAME or file:/absolute/path)")


def refresh_secrets(config: Config) -> tuple[Config, list[str]]:
    """`config` with every secret that came from a file or an environment variable read again
    (a rotation without restart: SIGHUP). Returns the new Config and what changed ("user app:
    backend_password", never a value). A secret that cannot be read any more keeps its old value
    and is reported as "... (unreadable: reason)"."""
    changed: list[str] = []

    def reread(label: str, source: str | None, old: str) -> str:
        if source is None:
            return old
        try:
            new = read_secret(source)
        except ValueError as e:
            changed.append(f"{label} (unreadable, kept: {e})")
            return old
        if new != old:
            changed.append(label)
        return new

    users = {}
    for name, u in config.users.items():
        password = reread(f"user {name}: password", u.password_source, u.password)
        if u.backend_password_source == u.password_source and u.backend_password == u.password:
            backend = password  # the backend secret defaults to the frontend one: one read, one report
        else:
            backend = reread(f"user {name}: backend_password", u.backend_password_source, u.backend_password)
        users[name] = u if (password, backend) == (u.password, u.backend_password) else replace(u, password=password, backend_password=backend)
    admin = config.admin
    admin_password = reread("[admin] password", admin.password_source, admin.password)
    if admin_password != admin.password:
        admin = replace(admin, password=admin_password)
    if not changed:
        return config, changed
    return replace(config, users=users, admin=admin), changed


# Passwords that must not guard an admin port reachable from other machines (compared
# case-insensitively): the defaults of rwproxy and ProxySQL, and the commonest guesses.
WELL_KNOWN_PASSWORDS = frozenset({
    "admin", "radmin", "proxysql", "rwproxy", "password", "passw0rd", "p@ssw0rd", "root", "toor", "mysql",
    "mariadb", "secret", "changeme", "default", "test", "letmein", "welcome", "qwerty", "abc123", "admin123",
    "123456", "1234", "12345", "1234567", "12345678", "123456789", "1234567890", "111111", "000000",
})  # fmt: skip


def weak_admin_password(username: str, password: str) -> str | None:
    """Why `password` must not guard an admin port beyond loopback, or None when it may."""
    folded = password.strip().casefold()
    if not folded:
        return "an empty password"
    if folded == "admin":
        return "the default password"
    if folded in WELL_KNOWN_PASSWORDS:
        return "a well-known password"
    if folded == username.strip().casefold():
        return "the username as password"
    return None


# Listeners this version has, with their default ports (None: the port must be given).
LISTENER_PORTS = {"data": None, "admin": 6032, "metrics": 6070}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else "must be between 0 and 65535"


def _one_of(choices: tuple[str, ...]):
    def check(v: str) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)}"

    return check


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _between(low: int, high: int, note: str = ""):
    def check(v: float) -> str | None:
        # (NaN fails both comparisons, so it is refused too.)
        return None if low <= v <= high else f"must be between {low} and {high}{note}"

    return check


def _address(v: str) -> str | None:
    if v in ("localhost", "*", ""):
        return None
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return f"{v!r} is not an IP address"
    return None


def _given(sec: _Section, prefix: str) -> bool:
    return any(k in sec.table for k in (prefix, f"{prefix}_env", f"{prefix}_file"))


def _list_of_tables(file: str, root: _Section, name: str) -> list[_Section]:
    items = root.get(name, list, default=[])
    return [_Section(file, f"{name}[{i}]", t) for i, t in enumerate(items)]


def _tls_version(v: str) -> str | None:
    return None if v in TLS_VERSIONS else f"must be one of {', '.join(TLS_VERSIONS)}"


def _ssl_mode(v: str) -> str | None:
    return None if v.lower() in SSL_MODES else f"must be one of {', '.join(SSL_MODES)}"


def _ciphers(v: str) -> str | None:
    if not v:
        return None
    import ssl  # (only here: config imports nothing of the data plane)

    try:
        ssl.create_default_context().set_ciphers(v)
    except ssl.SSLError:
        return f"no cipher matches {v!r} (an OpenSSL cipher list, e.g. ECDHE+AESGCM)"
    return None


def _file(sec: _Section, name: str, default: str = "") -> str:
    """An optional path key ("" = none): relative to the config file's directory, made absolute,
    and it must be a readable file."""
    if name not in sec.table:
        sec.used.add(name)
        return default
    value = sec.get(name, str)
    if not value:
        return ""
    path = Path(value)
    if not path.is_absolute():
        path = (Path.cwd() if sec.file.startswith("<") else Path(sec.file).parent) / path
    if not os.access(path, os.R_OK) or not path.is_file():
        raise ConfigError(sec.file, sec._k(name), f"{path} is not a readable file")
    return str(path.resolve())


def _backend_tls(sec: _Section, base: BackendTLS) -> BackendTLS:
    """[backend_tls], or a [[servers]] entry's overrides of it (`base`)."""
    tls = BackendTLS(
        ssl_mode=sec.get("ssl_mode", str, base.ssl_mode, _ssl_mode).lower(),
        ssl_ca=_file(sec, "ssl_ca", base.ssl_ca),
        ssl_cert=_file(sec, "ssl_cert", base.ssl_cert),
        ssl_key=_file(sec, "ssl_key", base.ssl_key),
        min_version=base.min_version,
        ciphers=base.ciphers,
        server_public_key=_file(sec, "server_public_key", base.server_public_key),
        get_server_public_key=sec.get("get_server_public_key", bool, base.get_server_public_key),
    )
    if bool(tls.ssl_cert) != bool(tls.ssl_key):
        raise ConfigError(sec.file, sec._k("ssl_key" if tls.ssl_cert else "ssl_cert"), "ssl_cert and ssl_key go together: give both or neither")
    return tls


def _frontend_tls(sec: _Section) -> TLSSettings:
    tls = TLSSettings(
        enabled=sec.get("enabled", bool, True),
        certificate=_file(sec, "certificate"),
        key=_file(sec, "key"),
        min_version=sec.get("min_version", str, "TLSv1.2", _tls_version),
        ciphers=sec.get("ciphers", str, "", _ciphers),
        rsa_private_key=_file(sec, "rsa_private_key"),
        rsa_public_key=_file(sec, "rsa_public_key"),
    )
    for a, b in (("certificate", "key"), ("rsa_private_key", "rsa_public_key")):
        if bool(getattr(tls, a)) != bool(getattr(tls, b)):
            raise ConfigError(sec.file, sec._k(b if getattr(tls, a) else a), f"{a} and {b} go together: give both, or neither to have a pair generated")
    return tls


# Whether `load_config` reads password_env / password_file secrets (False: they come out empty).
_READ_SECRETS: contextvars.ContextVar[bool] = contextvars.ContextVar("read_secrets", default=True)


def load_config(path: str | os.PathLike[str], secrets: bool = True) -> Config:
    """The configuration in `path`. `secrets=False`: password_env / password_file are not read
    (their values are empty), for tools that only route statements."""
    token = _READ_SECRETS.set(secrets)
    try:
        return _load_config(path)
    finally:
        _READ_SECRETS.reset(token)


def _load_config(path: str | os.PathLike[str]) -> Config:
    file = str(path)
    try:
        with open(file, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(file, "", "file not found") from None
    except OSError as e:
        raise ConfigError(file, "", f"cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(file, "", f"not valid TOML: {e}") from None
    return parse_config(raw, file)


def parse_config(raw: dict[str, Any], file: str = "<config>") -> Config:
    root = _Section(file, "", raw)

    proxy = _Section(file, "proxy", root.get("proxy", dict, default={}))
    log_level = proxy.get("log_level", str, "info", lambda v: None if v in LOG_LEVELS else f"must be one of {', '.join(LOG_LEVELS)}")
    handshake_timeout = proxy.get("handshake_timeout", float, 10.0, _positive)
    connect_timeout = proxy.get("connect_timeout", float, 3.0, _positive)
    max_packet = proxy.get("max_allowed_packet", int, 64 << 20, lambda v: None if 1024 <= v <= 1 << 30 else "must be between 1024 and 1073741824")
    reader_fallback = proxy.get("reader_fallback_to_writer", bool, True)
    max_connections = proxy.get("max_connections", int, 2048, _between(1, 1_000_000))
    # 31536000 (365 days) is MySQL's own ceiling for wait_timeout.
    idle_timeout = proxy.get("client_idle_timeout", float, 28800.0, _between(0, 31_536_000, " (0 = never)"))
    shutdown_timeout = proxy.get("shutdown_timeout", float, 30.0, _between(0, 86_400))
    query_timeout = proxy.get("default_query_timeout", float, 36000.0, _between(0, 31_536_000, " (0 = never)"))
    hostile = {
        "max_connect_errors": proxy.get("max_connect_errors", int, 100, _between(0, 1 << 32, " (0 = never)")),
        "max_password_errors": proxy.get("max_password_errors", int, 0, _between(0, 1 << 32, " (0 = never)")),
        "host_block_time": proxy.get("host_block_time", float, 300.0, _between(1, 31_536_000)),
        "login_delay_after": proxy.get("login_delay_after", int, 3, _between(0, 1_000_000)),
        "max_login_delay": proxy.get("max_login_delay", float, 5.0, _between(0, 60)),
        "max_handshakes": proxy.get("max_handshakes", int, 1024, _between(1, 1_000_000)),
        "max_handshakes_per_address": proxy.get("max_handshakes_per_address", int, 64, _between(1, 1_000_000)),
        "net_read_timeout": proxy.get("net_read_timeout", float, 30.0, _between(1, 31_536_000)),
        "partial_packet_budget": proxy.get("partial_packet_budget", int, 256 << 20, _between(1 << 20, 1 << 40)),
        "causal_reads": proxy.get("causal_reads", str, "none", _one_of(CAUSAL_READS)),
        "causal_reads_timeout": proxy.get("causal_reads_timeout", float, 10.0, _between(0, 3600)),
    }
    proxy.finish()

    pool_sec = _Section(file, "pool", root.get("pool", dict, default={}))
    multiplexing = pool_sec.get("multiplexing", bool, True)
    pool = PoolSettings(
        min_idle=pool_sec.get("min_idle", int, 0, _between(0, 100_000)),
        idle_timeout=pool_sec.get("idle_timeout", float, 60.0, _between(0, 31_536_000)),
        max_lifetime=pool_sec.get("max_lifetime", float, 3600.0, _between(0, 31_536_000, " (0 = never)")),
        connect_concurrency=pool_sec.get("connect_concurrency", int, 8, _between(1, 10_000)),
        connect_rate=pool_sec.get("connect_rate", float, 200.0, _between(0, 1_000_000, " (0 = unlimited)")),
        acquire_timeout=pool_sec.get("acquire_timeout", float, 10.0, _between(0.001, 86_400)),
        validate_after=pool_sec.get("validate_after", float, 30.0, _between(0, 86_400)),
        max_prepared=pool_sec.get("max_prepared_statements", int, 64, _between(1, 1_000_000)),
        last_insert_id_hold=pool_sec.get("last_insert_id_hold", float, 1.0, _between(0, 86_400)),
    )
    pool_sec.finish()

    listeners: dict[str, Listener] = {}
    ls = _Section(file, "listeners", root.get("listeners", dict, hint="at least [listeners.data]"))
    for name in ls.table:
        sec = _Section(file, f"listeners.{name}", ls.get(name, dict))
        if name not in LISTENER_PORTS:
            raise ConfigError(file, f"listeners.{name}", f"unknown listener (this version has: {', '.join(LISTENER_PORTS)})")
        port = LISTENER_PORTS[name]
        listeners[name] = Listener(name, sec.get("address", str, "127.0.0.1", _address), sec.get("port", int, ... if port is None else port, _port))
        sec.finish()
    if "data" not in listeners:
        raise ConfigError(file, "listeners.data", "required: the port clients connect to")
    ls.finish()

    admin_sec = _Section(file, "admin", root.get("admin", dict, default={}))
    admin = AdminSettings(
        username=admin_sec.get("username", str, "admin", lambda v: None if v else "must not be empty"),
        password=admin_sec.secret("password", default="admin"),
        data_dir=admin_sec.get("data_dir", str, str(Path(file).parent) if file != "<config>" else "."),
        max_connections=admin_sec.get("max_connections", int, 64, _between(1, 100_000)),
        statement_timeout=admin_sec.get("statement_timeout", float, 1.0, _between(0.01, 3600)),
        max_result_rows=admin_sec.get("max_result_rows", int, 1_000_000, _between(1, 1_000_000_000)),
        max_result_bytes=admin_sec.get("max_result_bytes", int, 32 << 20, _between(1024, 1 << 31)),
        password_source=admin_sec.sources.get("password"),
    )
    admin_sec.finish()
    if "admin" in listeners:
        host = listeners["admin"].address
        weak = weak_admin_password(admin.username, admin.password)
        if not _is_loopback(host) and weak:
            raise ConfigError(
                file, "admin.password",
                f"the admin port listens on {host or 'every address'}, beyond this machine, with {weak}: set a strong one "
                "(password, password_env or password_file) or bind [listeners.admin] to 127.0.0.1",
            )  # fmt: skip
    stats_sec = _Section(file, "stats", root.get("stats", dict, default={}))
    stats = StatsSettings(
        max_digests=stats_sec.get("max_digests", int, 10_000, _between(0, 10_000_000, " (0 = no digest table)")),
        max_digest_text=stats_sec.get("max_digest_text", int, 2048, _between(16, 1_048_576)),
    )
    stats_sec.finish()

    mon_sec = _Section(file, "monitor", root.get("monitor", dict, default={}))
    defaults = MonitorSettings()
    monitor = MonitorSettings(
        enabled=mon_sec.get("enabled", bool, False),
        username=mon_sec.get("username", str, defaults.username, lambda v: None if v else "must not be empty"),
        password=mon_sec.secret("password", default=defaults.password),
        **{key: mon_sec.get(key, int, getattr(defaults, key), _between(lo, hi)) for key, (lo, hi) in MONITOR_LIMITS.items()},
    )
    mon_sec.finish()

    tls_sec = _Section(file, "tls", root.get("tls", dict, default={}))
    tls = _frontend_tls(tls_sec)
    tls_sec.finish()
    btls_sec = _Section(file, "backend_tls", root.get("backend_tls", dict, default={}))
    backend_tls = _backend_tls(btls_sec, BackendTLS(
        min_version=btls_sec.get("min_version", str, "TLSv1.2", _tls_version),
        ciphers=btls_sec.get("ciphers", str, "", _ciphers),
    ))  # fmt: skip
    btls_sec.finish()

    servers = []
    for sec in _list_of_tables(file, root, "servers"):
        servers.append(
            Server(
                hostgroup_id=sec.get("hostgroup_id", int, check=lambda v: None if v >= 0 else "must be >= 0"),
                hostname=sec.get("hostname", str, check=lambda v: None if v else "must not be empty"),
                port=sec.get("port", int, 3306, _port),
                status=sec.get("status", str, "ONLINE", lambda v: None if v in SERVER_STATUSES else f"must be one of {', '.join(SERVER_STATUSES)}"),
                weight=sec.get("weight", int, 1, lambda v: None if v >= 0 else "must be >= 0"),
                max_connections=sec.get("max_connections", int, 1000, _positive),
                max_replication_lag=sec.get("max_replication_lag", int, 0, lambda v: None if v >= 0 else "must be >= 0"),
                comment=sec.get("comment", str, ""),
                tls=_backend_tls(sec, backend_tls),
                tls_keys=frozenset(k for k in SERVER_TLS_KEYS if k in sec.table),
            )
        )
        sec.finish()
    if not servers:
        raise ConfigError(file, "servers", "at least one [[servers]] entry is required")
    seen = set()
    for i, s in enumerate(servers):
        if (s.hostgroup_id, s.hostname, s.port) in seen:
            raise ConfigError(file, f"servers[{i}]", f"duplicate server {s.address} in hostgroup {s.hostgroup_id}")
        seen.add((s.hostgroup_id, s.hostname, s.port))
    hostgroups = {s.hostgroup_id for s in servers}

    users: dict[str, User] = {}
    for sec in _list_of_tables(file, root, "users"):
        username = sec.get("username", str, check=lambda v: None if v else "must not be empty")
        if username in users:
            raise ConfigError(file, f"{sec.key}.username", f"duplicate user {username!r}")
        password = sec.secret("password")
        password_source = sec.sources.get("password")
        hg = sec.get("default_hostgroup", int, 0)
        if hg not in hostgroups:
            raise ConfigError(file, f"{sec.key}.default_hostgroup", f"hostgroup {hg} has no server in [[servers]]")
        users[username] = User(
            username=username,
            password=password,
            auth_plugin=sec.get("auth_plugin", str, "mysql_native_password", lambda v: None if v in SUPPORTED_AUTH_PLUGINS else f"must be one of {', '.join(SUPPORTED_AUTH_PLUGINS)}"),
            default_hostgroup=hg,
            backend_username=sec.get("backend_username", str, username),
            backend_password=sec.secret("backend_password", default=password),
            max_connections=sec.get("max_connections", int, 10000, _positive),
            transaction_persistent=sec.get("transaction_persistent", bool, True),
            causal_reads=sec.get("causal_reads", str, None, _one_of(CAUSAL_READS)),
            password_source=password_source,
            # the backend secret defaults to the frontend one, and then comes from the same place
            backend_password_source=sec.sources.get("backend_password", None if _given(sec, "backend_password") else password_source),
            require_ssl=sec.get("require_ssl", bool, False),
        )
        sec.finish()
    if not users:
        raise ConfigError(file, "users", "at least one [[users]] entry is required")

    pair_rows = root.get("replication_hostgroups", list, default=[])
    pairs, pair_errors = validate_replication_hostgroups(pair_rows)
    if pair_errors:
        e = pair_errors[0]
        i = next((i for i, r in enumerate(pair_rows) if isinstance(r, dict) and r.get("writer_hostgroup") == e.writer_hostgroup), 0)
        raise ConfigError(file, f"replication_hostgroups[{i}]" + (f".{e.column}" if e.column else ""), e.reason)
    for i, pair in enumerate(pairs):
        for side in ("writer_hostgroup", "reader_hostgroup"):
            hg = getattr(pair, side)
            if hg not in hostgroups and not (side == "reader_hostgroup" and pair.writer_is_also_reader):
                raise ConfigError(file, f"replication_hostgroups[{i}].{side}", f"hostgroup {hg} has no server in [[servers]]")

    rule_rows = root.get("query_rules", list, default=[])
    rules, rule_errors = validate_rules(rule_rows)
    if rule_errors:
        e = rule_errors[0]
        i = next((i for i, r in enumerate(rule_rows) if isinstance(r, dict) and r.get("rule_id") == e.rule_id), 0)
        more = f" (and {len(rule_errors) - 1} more error(s))" if len(rule_errors) > 1 else ""
        raise ConfigError(file, f"query_rules[{i}]" + (f".{e.column}" if e.column else ""), f"rule {e.rule_id}: {e.reason}{more}")
    for i, r in enumerate(rules):
        if r.destination_hostgroup is not None and r.destination_hostgroup not in hostgroups and r.destination_hostgroup not in {p.reader_hostgroup for p in pairs}:
            raise ConfigError(file, f"query_rules[{i}].destination_hostgroup", f"rule {r.rule_id}: hostgroup {r.destination_hostgroup} has no server in [[servers]]")
    ruleset = RuleSet(rules=tuple(rules), replication_hostgroups=tuple(pairs), reader_fallback_to_writer=reader_fallback)
    root.finish()
    return Config(
        file,
        log_level,
        handshake_timeout,
        connect_timeout,
        max_packet,
        listeners,
        users,
        tuple(servers),
        ruleset,
        max_connections=max_connections,
        client_idle_timeout=idle_timeout,
        default_query_timeout=query_timeout,
        **hostile,
        shutdown_timeout=shutdown_timeout,
        multiplexing=multiplexing,
        pool=pool,
        admin=admin,
        stats=stats,
        monitor=monitor,
        tls=tls,
        backend_tls=backend_tls,
    )
