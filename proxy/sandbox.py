"""Throw-away MariaDB topologies on loopback: one primary and N GTID replicas.

Theory of operation
-------------------
`start_cluster()` gives every server its own data directory (made by ``mariadb-install-db``), starts
all ``mariadbd`` processes at once with ``--no-defaults`` and explicit options only (nothing from
/etc/mysql leaks in), waits until each accepts a connection on its unix socket, then wires
replication:

1. a ``repl`` user on *every* server, baked into the data directory at bootstrap (no binlog, no
   GTID), so any replica can later be promoted and serve the others; the primary is installed
   once and its fresh data directory copied for the replicas,
2. ``CHANGE MASTER TO ... master_use_gtid=slave_pos`` + ``START SLAVE`` on each replica,
3. the ``app`` and ``monitor`` users on the primary, binlogged, so they reach the replicas through
   replication; `Cluster.wait_replicated` proves the chain works before we return.

Administration goes through the ``mariadb`` CLI over the unix socket, authenticated by
``unix_socket`` as the OS user running the sandbox ("root" in `Server.sql`), so no root password
exists anywhere. Clients (the proxy, tests) use TCP on 127.0.0.1 as ``app``.

Invariants: the caller owns teardown (nothing is registered globally: no atexit, no signal
handlers); a failed start stops whatever it started and raises with the tail of the error log;
servers run in their own sessions (``start_new_session=True``) so a terminal's Ctrl-C reaches the
Python process, which decides the shutdown order. Replicas run with ``read_only=1`` and the ``app``
user lacks ``READ_ONLY ADMIN``, so a write mis-routed to a replica fails with ERR 1290 instead of
silently diverging the replica.

Stdlib only. ``python -m proxy.sandbox`` starts a cluster plus the proxy for hands-on use.
"""

from __future__ import annotations

import argparse
import enum
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "Cluster",
    "ProxyProcess",
    "Role",
    "SandboxError",
    "Server",
    "free_port",
    "render_proxy_config",
    "start_cluster",
    "wait_for_port",
]

MARIADBD = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin") or "mariadbd"
MARIADB = shutil.which("mariadb") or "mariadb"
MARIADB_INSTALL_DB = shutil.which("mariadb-install-db") or "mariadb-install-db"

# Unix socket paths are limited to sizeof(sun_path) - 1 bytes on Linux.
_MAX_SOCKET_PATH = 107
_IS_ROOT = os.geteuid() == 0
# The unix_socket-authenticated superuser: `root` when we run as root, else the OS user's name
# (mariadb-install-db --auth-root-socket-user).
_SOCKET_SUPERUSER = "root" if _IS_ROOT else pwd.getpwuid(os.geteuid()).pw_name

REPL_USER, REPL_PASSWORD = "repl", "repl_pw"


class SandboxError(RuntimeError):
    """A sandbox server failed to install, start, answer SQL or replicate."""


class Role(enum.StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the kernel's choice; racy by nature)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _stop_process(proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM, wait up to `timeout` seconds, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass


@dataclass(eq=False)
class Server:
    """One mariadbd: its address, identity, files and (while running) its process handle."""

    host: str
    port: int
    server_id: int
    datadir: Path
    socket: Path
    role: Role
    process: subprocess.Popen | None = field(default=None, repr=False)
    name: str = ""
    # More mariadbd options, after the sandbox's own (a later option wins), e.g. --ssl-ca/--ssl-cert/--ssl-key.
    extra_args: list[str] = field(default_factory=list)

    @property
    def error_log(self) -> Path:
        return self.datadir / "error.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def args(self) -> list[str]:
        d = self.datadir
        args = [
            MARIADBD,
            "--no-defaults",
            f"--datadir={d}",
            f"--tmpdir={_own_tmpdir(d)}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--server-id={self.server_id}",
            f"--pid-file={d / 'mariadbd.pid'}",
            f"--log-error={self.error_log}",
            # Explicit names: the defaults derive from the hostname, which breaks a restart
            # in a container whose hostname changed.
            "--log-bin=mariadb-bin",
            "--relay-log=relay-bin",
            "--binlog-format=ROW",
            "--gtid-strict-mode=1",
            "--log-slave-updates=1",
            f"--report-host={self.host}",
            f"--report-port={self.port}",
            "--skip-name-resolve",
            "--max-connections=2000",
            "--max-allowed-packet=64M",
            # Same default character set as MySQL 8 and Debian's packaged config.
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
            # Small footprint: three servers share a 2-core box with the test suite.
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=48M",
            "--innodb-log-buffer-size=8M",
            "--key-buffer-size=8M",
            "--aria-pagecache-buffer-size=8M",
            # Survives a killed process (only an OS crash loses the last second); much faster
            # on slow disks. Benchmarks compare direct vs proxied on the same servers.
            "--innodb-flush-log-at-trx-commit=2",
        ]
        if self.role == Role.REPLICA:
            args.append("--read-only=1")
        if _IS_ROOT:
            args.append("--user=root")
        return args + list(self.extra_args)

    # -- lifecycle -------------------------------------------------------------------------

    def spawn(self) -> None:
        """Start mariadbd without waiting for it (see `wait_ready`)."""
        if self.is_running:
            raise SandboxError(f"{self.name} is already running (pid {self.pid})")
        with open(self.error_log, "ab") as log:  # early failures (bad option) land here too
            self.process = subprocess.Popen(
                self.args(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C goes to us, not straight to mariadbd
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the server greets on its unix socket; raise with the error log if it dies or stalls."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise SandboxError(
                    f"{self.name} (port {self.port}) exited with status {code} while starting; "
                    f"tail of {self.error_log}:\n{_tail(self.error_log)}"
                )
            if self._greets():
                return
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"{self.name} (port {self.port}) not ready after {timeout:.0f}s; "
                    f"tail of {self.error_log}:\n{_tail(self.error_log)}"
                )
            time.sleep(0.05)

    def _greets(self) -> bool:
        # The unix socket is ours alone (a TCP port could belong to someone else after a race);
        # a server that accepted us sends its HandshakeV10 at once.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            try:
                s.connect(str(self.socket))
                return len(s.recv(4)) == 4
            except OSError:
                return False

    def start(self, timeout: float = 60.0) -> None:
        """(Re)start on the same data dir and port and wait until it accepts connections."""
        self.spawn()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout: float = 20.0) -> None:
        """Clean shutdown: SIGTERM, then SIGKILL after `timeout` seconds."""
        _stop_process(self.process, timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, for fault tests. InnoDB recovers on the next `start`."""
        if self.is_running:
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung host), until `thaw`."""
        if self.is_running:
            os.kill(self.pid, signal.SIGSTOP)  # type: ignore[arg-type]

    def thaw(self) -> None:
        """SIGCONT after `freeze`."""
        if self.is_running:
            os.kill(self.pid, signal.SIGCONT)  # type: ignore[arg-type]

    # -- SQL ---------------------------------------------------------------------------------

    def sql(
        self,
        statement: str,
        user: str = "root",
        password: str | None = None,
        *,
        database: str | None = None,
        headers: bool = False,
        timeout: float = 60.0,
    ) -> str:
        """Run `statement` (one or more, `;`-separated) with the mariadb CLI over the unix socket.

        Returns stdout in batch format: rows as lines, columns tab-separated, NULL as "NULL",
        no column names unless `headers`. "root" means the socket-authenticated superuser.
        """
        if user == "root":
            user = _SOCKET_SUPERUSER
        cmd = [MARIADB, "--no-defaults", f"--socket={self.socket}", f"--user={user}", "-B"]
        if not headers:
            cmd.append("-N")
        if password is not None:
            cmd.append(f"--password={password}")
        if database is not None:
            cmd.append(f"--database={database}")
        cmd += ["-e", statement]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise SandboxError(f"{self.name}: {statement!r} timed out after {timeout}s") from exc
        if res.returncode != 0:
            raise SandboxError(f"{self.name} (port {self.port}): {statement!r} failed: {res.stderr.strip()}")
        return res.stdout

    def rows(self, statement: str, user: str = "root", password: str | None = None) -> list[dict[str, str]]:
        """Result rows as dicts keyed by column name (values are strings, NULL is "NULL")."""
        lines = self.sql(statement, user, password, headers=True).splitlines()
        if not lines:
            return []
        names = lines[0].split("\t")
        return [dict(zip(names, line.split("\t"))) for line in lines[1:]]

    def value(self, statement: str) -> str:
        """The single value a statement returns, e.g. ``value("SELECT @@server_id")``."""
        return self.sql(statement).strip()


@dataclass(eq=False)
class Cluster:
    """A primary and its replicas; `stop` tears it all down."""

    primary: Server
    replicas: list[Server]
    base_dir: Path
    _scratch_dirs: list[Path] = field(default_factory=list, repr=False)

    flavor = "mariadb"
    app_user = "app"
    app_password = "app_pw"
    monitor_user = "monitor"
    monitor_password = "monitor_pw"
    repl_user = REPL_USER
    repl_password = REPL_PASSWORD

    @property
    def servers(self) -> list[Server]:
        return [self.primary, *self.replicas]

    def wait_replicated(self, timeout: float = 10.0, replicas: Iterable[Server] | None = None) -> None:
        """Until each running replica has applied everything in the primary's binlog.

        Uses MASTER_GTID_WAIT on the primary's @@gtid_binlog_pos; stopped replicas are skipped
        unless passed explicitly.
        """
        target = self.primary.value("SELECT @@gtid_binlog_pos")
        chosen = list(replicas) if replicas is not None else [r for r in self.replicas if r.is_running]
        deadline = time.monotonic() + timeout
        for replica in chosen:
            remaining = max(deadline - time.monotonic(), 0.001)
            got = replica.value(f"SELECT MASTER_GTID_WAIT('{target}', {remaining:.3f})")
            if got != "0":
                status = replica.rows("SHOW SLAVE STATUS")
                s = status[0] if status else {}
                raise SandboxError(
                    f"{replica.name} did not reach primary GTID {target!r} within {timeout}s: "
                    f"Gtid_Slave_Pos={s.get('Gtid_Slave_Pos')!r} "
                    f"IO={s.get('Slave_IO_Running')} SQL={s.get('Slave_SQL_Running')} "
                    f"Last_IO_Error={s.get('Last_IO_Error')!r} Last_SQL_Error={s.get('Last_SQL_Error')!r}"
                )

    # -- topology changes (fault tests, the sandbox) ---------------------------------------------

    def point_to(self, replica: Server, source: Server, *, use_gtid: str = "slave_pos", strict: bool = True, gtid_slave_pos: str | None = None) -> None:
        """(Re)attach `replica` to `source` with GTID replication and start it. `gtid_slave_pos`
        sets where it starts (e.g. a promoted replica's position, for an old primary that may hold
        transactions the new one never received: then also `strict=False`, as an operator would
        before rebuilding it)."""
        stmts = ["STOP SLAVE", "SET GLOBAL read_only=1", f"SET GLOBAL gtid_strict_mode={1 if strict else 0}"]
        if gtid_slave_pos is not None:
            stmts.append(f"SET GLOBAL gtid_slave_pos='{gtid_slave_pos}'")
        stmts += [
            f"CHANGE MASTER TO master_host='{source.host}', master_port={source.port}, master_user='{self.repl_user}', "
            f"master_password='{self.repl_password}', master_use_gtid={use_gtid}, master_connect_retry=1",
            "START SLAVE",
        ]
        replica.sql(";".join(stmts))
        replica.role = Role.REPLICA

    def promote(self, replica: Server) -> str:
        """Make `replica` the primary as a failover tool would: STOP SLAVE; RESET SLAVE ALL;
        SET GLOBAL read_only=0. The others are not re-pointed (see `point_to`). Returns the
        replica's @@gtid_slave_pos when it stopped replicating (where the new primary took over)."""
        position = replica.sql("STOP SLAVE; SELECT @@gtid_slave_pos").strip()
        replica.sql("RESET SLAVE ALL; SET GLOBAL read_only=0")
        old = self.primary
        replica.role = Role.PRIMARY
        self.replicas = [r for r in self.replicas if r is not replica] + [old]
        self.primary = replica
        old.role = Role.REPLICA  # a restart now brings it back with --read-only=1
        return position

    def stop(self, keep: bool = False, timeout: float = 20.0) -> None:
        """Stop every server (in parallel); remove `base_dir` unless `keep`."""
        threads = [threading.Thread(target=s.stop, args=(timeout,)) for s in self.servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for d in self._scratch_dirs:
            shutil.rmtree(d, ignore_errors=True)
        if not keep:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _install(datadir: Path, log_path: Path) -> None:
    """mariadb-install-db into `datadir`, with the (unreplicated) `repl` user baked in.

    Bootstrap runs without a binlog, so nothing here has a GTID; copies of this data dir are
    interchangeable (MariaDB replication identifies servers by server_id only).
    """
    datadir.mkdir(parents=True, exist_ok=True)
    bootstrap = log_path.with_suffix(".sql")
    # One statement per line: the bootstrap reader does not split lines on ';'.
    bootstrap.write_text(
        "FLUSH PRIVILEGES;\n"
        f"CREATE USER '{REPL_USER}'@'%' IDENTIFIED BY '{REPL_PASSWORD}';\n"
        f"GRANT REPLICATION SLAVE, SLAVE MONITOR ON *.* TO '{REPL_USER}'@'%';\n"
        # install-db grants root@<hostname> proxy rights; with --skip-name-resolve that row only
        # earns a warning at every start.
        "DELETE FROM mysql.proxies_priv WHERE Host <> 'localhost';\n"
    )
    cmd = [
        MARIADB_INSTALL_DB,
        "--no-defaults",
        f"--datadir={datadir}",
        "--auth-root-authentication-method=socket",
        f"--auth-root-socket-user={_SOCKET_SUPERUSER}",
        "--skip-test-db",
        "--skip-name-resolve",
        # Match the server's redo log size so the first start does not resize it.
        "--innodb-log-file-size=48M",
        f"--extra-file={bootstrap}",
        f"--tmpdir={_own_tmpdir(datadir)}",  # (passed on to the bootstrap server)
    ]
    if _IS_ROOT:
        cmd.append("--user=root")
    with open(log_path, "wb") as log:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise SandboxError(f"mariadb-install-db failed (status {res.returncode}); tail of {log_path}:\n{_tail(log_path)}")


def _own_tmpdir(datadir: Path) -> Path:
    """A server's own temporary directory beside its data dir: servers that share /tmp collide on
    internal temporary table names when many start at once (seen: "Could not remove temporary
    table '/tmp/#sql-temptable-...'" failing mariadb-install-db). Not inside the data dir, where
    it would be a database."""
    tmp = datadir.parent / f"{datadir.name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


def _copy_datadirs(source: Path, targets: list[Path]) -> None:
    """Parallel sparse copies: the redo log is mostly zeros, so each copy costs ~6 MB, not ~65 MB."""
    copies = [
        (t, subprocess.Popen(["cp", "-a", "--sparse=always", str(source), str(t)], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for t in targets
    ]
    for target, proc in copies:
        if proc.wait() != 0:  # not GNU cp: plain copy
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)


def _port_in_use(server: Server) -> bool:
    text = _tail(server.error_log, 15)
    return "Bind on TCP/IP port" in text or "Address already in use" in text


def start_cluster(
    base_dir: Path,
    replicas: int = 2,
    ports: list[int] | None = None,
    *,
    timeout: float = 60.0,
    extra_args: list[str] | None = None,
) -> Cluster:
    """Install, start and wire up a primary plus `replicas` replicas under `base_dir`.

    `extra_args`: more mariadbd options for every server (Server.extra_args), e.g. TLS files.

    `ports` (primary first) pins the TCP ports; otherwise free ports are chosen, and a server that
    loses a port race is retried on another. On failure everything started is stopped (the data
    dirs are kept for inspection) and SandboxError carries the error log tail.
    """
    for tool in (MARIADBD, MARIADB, MARIADB_INSTALL_DB):
        if not os.path.isabs(tool):
            raise SandboxError(f"{tool} not found on PATH (or /usr/sbin); run scripts/setup.sh to install MariaDB")
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    if (base_dir / "primary").exists():
        raise SandboxError(f"{base_dir} already holds a cluster; start_cluster needs a fresh directory")
    count = 1 + replicas
    if ports is not None and len(ports) != count:
        raise ValueError(f"need {count} ports (primary first), got {len(ports)}")
    chosen: list[int] = list(ports) if ports is not None else []
    while len(chosen) < count:
        p = free_port()
        if p not in chosen:
            chosen.append(p)

    sock_dir = base_dir
    scratch: list[Path] = []
    if len(str(base_dir / "replica99" / "mariadbd.sock")) > _MAX_SOCKET_PATH:
        sock_dir = Path(tempfile.mkdtemp(prefix="rwproxy-"))
        scratch.append(sock_dir)

    servers = []
    for i in range(count):
        name = "primary" if i == 0 else f"replica{i}"
        servers.append(
            Server(
                host="127.0.0.1",
                port=chosen[i],
                server_id=i + 1,
                datadir=base_dir / name,
                socket=(sock_dir / f"{name}.sock") if sock_dir != base_dir else base_dir / name / "mariadbd.sock",
                role=Role.PRIMARY if i == 0 else Role.REPLICA,
                name=name,
                extra_args=list(extra_args or ()),
            )
        )
    cluster = Cluster(primary=servers[0], replicas=servers[1:], base_dir=base_dir, _scratch_dirs=scratch)
    try:
        # Installing once and copying is ~2x faster than parallel installs on a 2-core box.
        _install(servers[0].datadir, base_dir / "install.log")
        _copy_datadirs(servers[0].datadir, [s.datadir for s in servers[1:]])
        for s in servers:
            s.spawn()
        deadline = time.monotonic() + timeout
        for s in servers:
            for attempt in range(3):
                try:
                    s.wait_ready(max(deadline - time.monotonic(), 1.0))
                    break
                except SandboxError:
                    if ports is not None or attempt == 2 or s.is_running or not _port_in_use(s):
                        raise
                    s.port = free_port()  # lost a race for the port: try another
                    s.spawn()
        _wire_replication(cluster)
        cluster.wait_replicated(timeout=30)
    except BaseException:
        cluster.stop(keep=True)
        raise
    return cluster


def _wire_replication(cluster: Cluster) -> None:
    """Attach the replicas (the `repl` user exists everywhere, from bootstrap), then create the
    app/monitor users on the primary so that they replicate."""
    c = cluster
    for r in c.replicas:
        r.sql(
            f"CHANGE MASTER TO master_host='{c.primary.host}', master_port={c.primary.port}, "
            f"master_user='{c.repl_user}', master_password='{c.repl_password}', "
            "master_use_gtid=slave_pos, master_connect_retry=1;"
            "START SLAVE;"
        )
    app = f"'{c.app_user}'@'%', '{c.app_user}'@'localhost'"
    c.primary.sql(
        f"CREATE USER '{c.app_user}'@'%' IDENTIFIED BY '{c.app_password}';"
        f"CREATE USER '{c.app_user}'@'localhost' IDENTIFIED BY '{c.app_password}';"
        f"GRANT ALL PRIVILEGES ON *.* TO {app} WITH GRANT OPTION;"
        # Writes that reach a read_only replica must fail, not succeed quietly.
        f"REVOKE READ_ONLY ADMIN ON *.* FROM {app};"
        f"CREATE USER '{c.monitor_user}'@'%' IDENTIFIED BY '{c.monitor_password}';"
        f"GRANT REPLICATION CLIENT, SLAVE MONITOR, PROCESS ON *.* TO '{c.monitor_user}'@'%';"
    )


# -- the proxy as a subprocess -----------------------------------------------------------------


def wait_for_port(
    host: str,
    port: int,
    timeout: float,
    *,
    process: subprocess.Popen | None = None,
    what: str = "server",
    log_path: Path | None = None,
) -> None:
    """Until `host:port` accepts TCP; raise early if `process` exits, with `log_path`'s tail."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            msg = f"{what} exited with status {process.returncode} before listening on {host}:{port}"
            raise SandboxError(msg + (f"; tail of {log_path}:\n{_tail(log_path)}" if log_path else ""))
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            msg = f"{what} not listening on {host}:{port} after {timeout:.0f}s"
            raise SandboxError(msg + (f"; tail of {log_path}:\n{_tail(log_path)}" if log_path else ""))
        time.sleep(0.05)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML: {v!r}")


def _toml_table(header: str, values: dict[str, Any]) -> str:
    return "\n".join([header, *(f"{k} = {_toml_value(v)}" for k, v in values.items())]) + "\n"


def default_users(cluster: Any) -> list[dict[str, Any]]:
    return [{"username": cluster.app_user, "password": cluster.app_password, "default_hostgroup": 0}]


def default_servers(cluster: Any) -> list[dict[str, Any]]:
    """Primary in hostgroup 0 (writer), replicas in hostgroup 1 (readers)."""
    rows = [{"hostgroup_id": 0, "hostname": cluster.primary.host, "port": cluster.primary.port, "comment": "primary"}]
    for i, r in enumerate(cluster.replicas, 1):
        rows.append({"hostgroup_id": 1, "hostname": r.host, "port": r.port, "comment": f"replica {i}"})
    return rows


def default_replication_hostgroups(cluster: Any) -> list[dict[str, Any]]:
    """Reads of hostgroup 0 go to hostgroup 1 (the replicas only: writer_is_also_reader off)."""
    if not cluster.replicas:
        return []
    return [{"writer_hostgroup": 0, "reader_hostgroup": 1, "writer_is_also_reader": False, "comment": "sandbox"}]


def render_proxy_config(
    cluster: Any,
    listen_port: int,
    *,
    listen_host: str = "127.0.0.1",
    users: list[dict[str, Any]] | None = None,
    servers: list[dict[str, Any]] | None = None,
    replication_hostgroups: list[dict[str, Any]] | None = None,
    proxy_settings: dict[str, Any] | None = None,
    extra_toml: str = "",
    admin_port: int | None = None,
    admin_settings: dict[str, Any] | None = None,
    metrics_port: int | None = None,
    monitor: dict[str, Any] | None = None,
) -> str:
    """rwproxy TOML (see config/rwproxy.example.toml) for `cluster` (anything with primary/replicas).

    `users`/`servers` replace the defaults (app user; primary hg 0, replicas hg 1);
    `replication_hostgroups` defaults to the 0 -> 1 pair with the default servers, none with custom ones;
    `proxy_settings` are merged into [proxy]; `extra_toml` is appended verbatim (new tables only);
    `admin_port` adds [listeners.admin] on 127.0.0.1 (the SQL admin port, docs/admin.md) and
    `admin_settings` an [admin] table (username, password, data_dir); `metrics_port` adds
    [listeners.metrics] on 127.0.0.1 (Prometheus, /metrics); `monitor` adds a [monitor] table with
    the cluster's monitor account and these settings (e.g. ``{"enabled": True, "ping_interval": 500}``).
    """
    proxy = {"log_level": "info", **(proxy_settings or {})}
    parts = [
        "# Generated by proxy.sandbox for a throw-away cluster.\n",
        _toml_table("[proxy]", proxy),
        _toml_table("[listeners.data]", {"address": listen_host, "port": listen_port}),
    ]
    if admin_port is not None:
        parts.append(_toml_table("[listeners.admin]", {"address": "127.0.0.1", "port": admin_port}))
    if admin_settings:
        parts.append(_toml_table("[admin]", admin_settings))
    if metrics_port is not None:
        parts.append(_toml_table("[listeners.metrics]", {"address": "127.0.0.1", "port": metrics_port}))
    if monitor is not None:
        parts.append(_toml_table("[monitor]", {"username": cluster.monitor_user, "password": cluster.monitor_password, **monitor}))
    parts += [_toml_table("[[users]]", u) for u in (users if users is not None else default_users(cluster))]
    parts += [_toml_table("[[servers]]", s) for s in (servers if servers is not None else default_servers(cluster))]
    if replication_hostgroups is None:
        replication_hostgroups = default_replication_hostgroups(cluster) if servers is None else []
    parts += [_toml_table("[[replication_hostgroups]]", p) for p in replication_hostgroups]
    if extra_toml:
        parts.append(extra_toml.rstrip("\n") + "\n")
    text = "\n".join(parts)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"generated proxy config is not valid TOML ({exc}):\n{text}") from exc
    return text


@dataclass(eq=False)
class ProxyProcess:
    """``python -m proxy --config ...`` as a child process in its own session."""

    config_path: Path
    host: str
    port: int
    log_path: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = 20.0) -> None:
        """Spawn and wait until the data port accepts TCP (stdout/stderr to `log_path`, else inherited)."""
        cmd = [sys.executable, "-m", "proxy", "--config", str(self.config_path)]
        log = open(self.log_path, "ab") if self.log_path is not None else None
        try:
            self.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        finally:
            if log is not None:
                log.close()
        try:
            wait_for_port(self.host, self.port, timeout, process=self.process, what="proxy", log_path=self.log_path)
        except BaseException:
            self.stop(timeout=2)
            raise

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, SIGKILL after `timeout`; returns the exit status."""
        _stop_process(self.process, timeout)
        return None if self.process is None else self.process.returncode

    def log_tail(self, lines: int = 50) -> str:
        return _tail(self.log_path, lines) if self.log_path is not None else ""


# -- python -m proxy.sandbox ----------------------------------------------------------------------

# The sandbox's [monitor]: ProxySQL's defaults except shorter ping and lag intervals, so that a
# killed primary, a promotion or a stopped replica shows within a second or two.
SANDBOX_MONITOR: dict[str, Any] = {
    "enabled": True,
    "ping_interval": 1000,
    "ping_max_failures": 2,
    "read_only_interval": 500,
    "replication_lag_interval": 1000,
    "connect_interval": 10000,
    "shun_recovery_time_sec": 2,
}

_MARKER = ".rwproxy-sandbox"


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


def _prepare_data_dir(path: Path) -> None:
    """Wipe and recreate `path`, but only if it is empty or one we made (and is not in use)."""
    if path.exists():
        if any(path.iterdir()) and not (path / _MARKER).exists():
            raise SandboxError(f"{path} is not empty and was not created by proxy.sandbox; refusing to wipe it")
        for pidfile in path.glob("*/mariadbd.pid"):
            try:
                os.kill(int(pidfile.read_text().strip()), 0)
            except (ValueError, OSError):
                continue
            raise SandboxError(f"a server from an earlier sandbox is still running ({pidfile}); stop it first")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / _MARKER).write_text("created by python -m proxy.sandbox; wiped on its next run\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m proxy.sandbox",
        description="Start a MariaDB primary + replicas and rwproxy in front of them; Ctrl-C stops all.",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("sandbox-data"), help="wiped and recreated (default: %(default)s)")
    parser.add_argument("--replicas", type=int, default=1, help="number of replicas (default: %(default)s)")
    parser.add_argument("--port", type=int, default=6033, help="proxy listener port (default: %(default)s)")
    parser.add_argument("--admin-port", type=int, help="admin port (default: 6032 if free, else a free port)")
    parser.add_argument("--primary-port", type=int, help="primary's port; replicas take the next ones (default: free ports)")
    parser.add_argument("--no-proxy", action="store_true", help="only the servers; do not start the proxy")
    args = parser.parse_args(argv)

    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        # Only the first signal interrupts; later ones must not cut the cleanup short
        # (which is bounded anyway: SIGKILL after the stop timeouts).
        if not received:
            received.append(signum)
            raise _Interrupted(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    data_dir = args.data_dir.resolve()
    try:
        _prepare_data_dir(data_dir)
    except SandboxError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    ports = None if args.primary_port is None else [args.primary_port + i for i in range(1 + args.replicas)]
    print(f"sandbox: starting MariaDB primary + {args.replicas} replica(s) in {data_dir} ...", flush=True)
    t0 = time.monotonic()
    try:
        cluster = start_cluster(data_dir, replicas=args.replicas, ports=ports)
    except SandboxError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    except _Interrupted as exc:
        print(f"sandbox: {exc}: startup aborted, servers stopped", file=sys.stderr)
        return 0
    proxy: ProxyProcess | None = None
    code = 0
    try:
        print(f"sandbox: servers up in {time.monotonic() - t0:.1f}s", flush=True)
        if not args.no_proxy:
            config = data_dir / "rwproxy.toml"
            admin_port = args.admin_port or (6032 if _port_free(6032) else free_port())
            # The admin login is ProxySQL's default (admin/admin): accepted on loopback only.
            metrics_port = 6070 if _port_free(6070) else free_port()
            # The monitor is on, with intervals short enough to watch a failover (the banner says how).
            servers = default_servers(cluster)
            for row in servers[1:]:
                row["max_replication_lag"] = 10
            config.write_text(render_proxy_config(
                cluster, args.port, admin_port=admin_port, admin_settings={"data_dir": str(data_dir)}, metrics_port=metrics_port,
                servers=servers, replication_hostgroups=default_replication_hostgroups(cluster), monitor=SANDBOX_MONITOR,
            ))  # fmt: skip
            proxy = ProxyProcess(config_path=config, host="127.0.0.1", port=args.port)
            print(f"sandbox: starting python -m proxy --config {config}", flush=True)
            proxy.start(timeout=20)
            wait_for_port("127.0.0.1", admin_port, 10, process=proxy.process, what="proxy admin port")
        _print_banner(cluster, args.port if proxy else None, data_dir, admin_port if proxy else None, metrics_port if proxy else None)
        while True:
            time.sleep(0.2)
            if proxy is not None and proxy.process is not None and proxy.process.poll() is not None:
                rc = proxy.process.returncode
                code = rc if rc >= 0 else 128 - rc  # killed by a signal: shell convention
                print(f"sandbox: proxy exited with status {rc}; stopping the servers", file=sys.stderr)
                break
    except SandboxError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        code = 1
    except _Interrupted as exc:
        print(f"\nsandbox: {exc}: stopping", flush=True)
        code = 0
    finally:
        received.append(0)  # from here on, signals are ignored: let the cleanup finish
        if proxy is not None:
            proxy.stop()
        cluster.stop(keep=True)
        print(f"sandbox: stopped; logs are under {data_dir}", flush=True)
    return code


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _print_banner(cluster: Cluster, proxy_port: int | None, data_dir: Path, admin_port: int | None = None, metrics_port: int | None = None) -> None:
    c = cluster
    lines = [""]
    if proxy_port is not None:
        lines += [
            "Connect through the proxy:",
            f"  mariadb -h127.0.0.1 -P{proxy_port} -u{c.app_user} -p{c.app_password}",
            "",
        ]
    if admin_port is not None:
        lines += [
            "Admin port (ProxySQL-style SQL: SELECT * FROM mysql_servers; LOAD MYSQL SERVERS TO RUNTIME; docs/admin.md):",
            f"  mariadb -h127.0.0.1 -P{admin_port} -uadmin -padmin",
            "",
        ]
    if metrics_port is not None:
        lines += ["Prometheus metrics:", f"  curl -s http://127.0.0.1:{metrics_port}/metrics", ""]
    if admin_port is not None:
        admin = f"mariadb -h127.0.0.1 -P{admin_port} -uadmin -padmin"
        new = c.replicas[0] if c.replicas else None
        lines += [
            "Watch a failover (the monitor follows read_only; docs/monitoring.md):",
            f"  live servers:     {admin} -e 'SELECT hostgroup_id, port, status FROM runtime_mysql_servers'",
            f"  check log:        {admin} -e 'SELECT * FROM monitor.mysql_server_health'",
            f"  kill the primary: kill -9 $(cat {c.primary.datadir / 'mariadbd.pid'})",
        ]
        if new is not None:
            lines += [
                f"  promote {new.name}: mariadb -S{new.socket} -u{_SOCKET_SUPERUSER} -e "
                "'STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=0'",
                f"  stop replication: mariadb -S{new.socket} -u{_SOCKET_SUPERUSER} -e 'STOP SLAVE SQL_THREAD'"
                "   (a replica behind max_replication_lag = 10 leaves the readers)",
            ]
        lines.append("")
    lines.append("Servers directly:")
    for s in c.servers:
        lines.append(f"  {s.name:<9} mariadb -h{s.host} -P{s.port} -u{c.app_user} -p{c.app_password}   (server_id {s.server_id})")
    lines += [
        f"  superuser: mariadb -S{c.primary.socket} -u{_SOCKET_SUPERUSER}",
        "",
        f"Data and error logs: {data_dir}",
        "Press Ctrl-C to stop everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
