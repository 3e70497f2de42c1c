"""The integration test bed: a replicated cluster and rwproxy in front of it.

Two ways to get the cluster, both exposing the same small interface
(``cluster.primary`` / ``cluster.replicas`` with ``.host .port .server_id .role .name .sql() .rows()
.value() .stop() .kill() .start()``; ``cluster.app_user/app_password``, ``monitor_user/...``,
``cluster.flavor``, ``cluster.wait_replicated()``):

* default — local MariaDB processes (`proxy.sandbox.start_cluster`): a primary and two replicas
  with GTID replication on free 127.0.0.1 ports under pytest's tmp dir. Needs ``mariadbd``,
  ``mariadb-install-db`` and ``mariadb`` on PATH (``scripts/setup.sh`` installs them). No Docker.
  Starting takes a few seconds, once per session.
* ``RWPROXY_TEST_DOCKER=1`` — MySQL 8.4 containers through testcontainers (one primary, two
  replicas, GTID auto-positioning, ``caching_sha2_password`` users). If no Docker engine answers
  ``docker info`` the session aborts rather than silently testing MariaDB instead.

On top of the cluster:

* ``proxy`` (session) — ``python -m proxy --config <tmp>/proxy.toml`` as a subprocess: primary in
  hostgroup 0, replicas in hostgroup 1, user app/app_pw, listener on a free port; output goes to
  ``proxy.log_path``, whose tail is attached to the report of a failing test.
* ``start_proxy`` (function) — factory for proxies with a custom config:
  ``start_proxy(extra_toml="", users=None, servers=None, replication_hostgroups=None,
  proxy_settings=None, metrics=False)``; ``users``, ``servers`` and ``replication_hostgroups`` replace the default
  rows (lists of dicts; the default pair 0 -> 1 only comes with the default servers), ``proxy_settings``
  merges into [proxy], ``extra_toml`` is appended (new tables only); ``metrics=True`` adds
  [listeners.metrics] on a free port (``handle.metrics_port``); ``admin=True`` adds
  [listeners.admin] on a free port (``handle.admin_port``, login ``handle.admin_user`` /
  ``admin_password``, ``handle.admin_connect()``) with its own [admin] data_dir
  (``handle.admin_data_dir``). Stopped after the test.
* ``direct`` (function) — a PyMySQL connection (autocommit) to the primary as the app user.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pymysql
import pytest

from proxy.sandbox import ProxyProcess, SandboxError, free_port, render_proxy_config, start_cluster, wait_for_port

USE_DOCKER = os.environ.get("RWPROXY_TEST_DOCKER") == "1"


# -- cluster -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if USE_DOCKER:
        c = _start_docker_cluster()
    else:
        c = start_cluster(tmp_path_factory.mktemp("mariadb"), replicas=2)
    try:
        yield c
    finally:
        c.stop()


# -- proxy ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class ProxyHandle(ProxyProcess):
    """A running proxy: where it listens, how to log in, where it logs."""

    user: str = "app"
    password: str = "app_pw"
    metrics_port: int | None = None  # [listeners.metrics] port when started with metrics=True
    admin_port: int | None = None  # [listeners.admin] port when started with admin=True
    admin_data_dir: Path | None = None  # its [admin] data_dir (the disk layer rwproxy.db lives there)
    admin_user: str = "admin"
    admin_password: str = "admin"

    def start(self, timeout: float = 20.0) -> None:
        super().start(timeout)
        if self.admin_port is not None:  # opened right after the data port
            wait_for_port(self.host, self.admin_port, timeout, process=self.process, what="proxy admin port", log_path=self.log_path)
        if self.metrics_port is not None:  # opened after the data (and admin) ports
            wait_for_port(self.host, self.metrics_port, timeout, process=self.process, what="proxy metrics port", log_path=self.log_path)

    def admin_connect(self, **kw: Any) -> pymysql.connections.Connection:
        """A PyMySQL connection to the admin port."""
        args = {"host": self.host, "port": self.admin_port, "user": self.admin_user, "password": self.admin_password, "connect_timeout": 10, "read_timeout": 60}
        return pymysql.connect(**(args | kw))

    def connect(self, **kw: Any) -> pymysql.connections.Connection:
        """A PyMySQL connection through the proxy (keyword arguments override the defaults)."""
        # read_timeout: a proxy that stops relaying fails the test instead of hanging the suite.
        args = {"host": self.host, "port": self.port, "user": self.user, "password": self.password, "connect_timeout": 10, "read_timeout": 60}
        return pymysql.connect(**(args | kw))


def _launch_proxy(
    cluster: Any,
    workdir: Path,
    name: str,
    *,
    extra_toml: str = "",
    users: list[dict[str, Any]] | None = None,
    servers: list[dict[str, Any]] | None = None,
    replication_hostgroups: list[dict[str, Any]] | None = None,
    proxy_settings: dict[str, Any] | None = None,
    metrics: bool = False,
    admin: bool = False,
) -> ProxyHandle:
    port = free_port()
    admin_port = free_port() if admin else None
    admin_data_dir = workdir / f"{name}-admin" if admin else None
    if admin_data_dir is not None:  # each proxy its own disk layer; kept across restarts of the handle
        admin_data_dir.mkdir(exist_ok=True)
    metrics_port = free_port() if metrics else None
    if metrics_port is not None:  # Prometheus endpoint (proxy.metrics) on a free loopback port
        extra_toml = f'{extra_toml}\n[listeners.metrics]\naddress = "127.0.0.1"\nport = {metrics_port}\n'
    config_path = workdir / f"{name}.toml"
    config_path.write_text(
        render_proxy_config(
            cluster,
            port,
            users=users,
            servers=servers,
            replication_hostgroups=replication_hostgroups,
            proxy_settings=proxy_settings,
            extra_toml=extra_toml,
            admin_port=admin_port,
            admin_settings={"data_dir": str(admin_data_dir)} if admin_data_dir is not None else None,
        )
    )
    first = (users or [{}])[0]
    handle = ProxyHandle(
        config_path=config_path,
        host="127.0.0.1",
        port=port,
        log_path=workdir / f"{name}.log",
        user=first.get("username", cluster.app_user),
        password=first.get("password", cluster.app_password),
        metrics_port=metrics_port,
        admin_port=admin_port,
        admin_data_dir=admin_data_dir,
    )
    handle.start(timeout=60)  # generous: only a loaded machine needs it
    return handle


@pytest.fixture(scope="session")
def proxy(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyHandle]:
    handle = _launch_proxy(cluster, tmp_path_factory.mktemp("proxy"), "proxy")
    try:
        yield handle
    finally:
        handle.stop(timeout=10)


@pytest.fixture
def start_proxy(cluster: Any, tmp_path: Path) -> Iterator[Callable[..., ProxyHandle]]:
    started: list[ProxyHandle] = []

    def start(
        extra_toml: str = "",
        users: list[dict[str, Any]] | None = None,
        servers: list[dict[str, Any]] | None = None,
        replication_hostgroups: list[dict[str, Any]] | None = None,
        proxy_settings: dict[str, Any] | None = None,
        metrics: bool = False,
        admin: bool = False,
    ) -> ProxyHandle:
        handle = _launch_proxy(
            cluster,
            tmp_path,
            f"proxy{len(started)}",
            extra_toml=extra_toml,
            users=users,
            servers=servers,
            replication_hostgroups=replication_hostgroups,
            proxy_settings=proxy_settings,
            metrics=metrics,
            admin=admin,
        )
        started.append(handle)
        return handle

    start.started = started  # type: ignore[attr-defined]  # read by the report hook below
    try:
        yield start
    finally:
        for handle in started:
            handle.stop(timeout=10)


@pytest.fixture
def schema(direct: pymysql.connections.Connection, cluster: Any) -> Iterator[str]:
    """A fresh, uniquely named schema (replicated to every server), dropped afterwards."""
    import uuid

    name = f"t_{uuid.uuid4().hex[:10]}"
    with direct.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    cluster.wait_replicated()
    yield name
    with direct.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def direct(cluster: Any) -> Iterator[pymysql.connections.Connection]:
    p = cluster.primary
    conn = pymysql.connect(
        host=p.host, port=p.port, user=cluster.app_user, password=cluster.app_password, autocommit=True, connect_timeout=10
    )
    try:
        yield conn
    finally:
        conn.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the tail of every proxy log a failing test used to its report."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    handles = [v for v in funcargs.values() if isinstance(v, ProxyHandle)]
    for v in funcargs.values():  # start_proxy factories carry the handles they started
        started = getattr(v, "started", None) if callable(v) else None
        if isinstance(started, list):
            handles += [h for h in started if isinstance(h, ProxyHandle)]
    for h in handles:
        report.sections.append((f"proxy log tail ({h.log_path})", h.log_tail(40)))


# -- Docker: MySQL 8.4 via testcontainers -----------------------------------------------------------

MYSQL_IMAGE = "mysql:8.4"
_ROOT_PASSWORD = "root_pw"


@dataclass(eq=False)
class ContainerServer:
    """One MySQL container, shaped like `proxy.sandbox.Server` (no datadir/socket)."""

    name: str
    role: str
    server_id: int
    container: Any = field(repr=False)
    host: str = ""
    port: int = 0

    def refresh_address(self) -> None:
        self.host = self.container.get_container_host_ip()
        self.port = int(self.container.get_exposed_port(3306))

    @property
    def is_running(self) -> bool:
        w = self.container.get_wrapped_container()
        w.reload()
        return w.status == "running"

    def sql(self, statement: str, user: str = "root", password: str | None = None, **_: Any) -> str:
        """Like `Server.sql`: rows as tab-separated lines, NULL as "NULL"; `;`-separated statements."""
        conn = pymysql.connect(
            host=self.host,
            port=self.port,
            user=user,
            password=_ROOT_PASSWORD if password is None and user == "root" else (password or ""),
            autocommit=True,
            client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
            connect_timeout=10,
        )
        lines = []
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                while True:
                    lines += ["\t".join("NULL" if v is None else str(v) for v in row) for row in cur.fetchall()]
                    if not cur.nextset():
                        break
        finally:
            conn.close()
        return "".join(line + "\n" for line in lines)

    def rows(self, statement: str, user: str = "root", password: str | None = None) -> list[dict[str, Any]]:
        conn = pymysql.connect(
            host=self.host, port=self.port, user=user, password=password or _ROOT_PASSWORD, autocommit=True,
            cursorclass=pymysql.cursors.DictCursor,
        )  # fmt: skip
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall())
        finally:
            conn.close()

    def value(self, statement: str) -> str:
        return self.sql(statement).strip()

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sql("SELECT 1")
                return
            except pymysql.err.MySQLError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self, timeout: float = 20.0) -> None:
        self.container.get_wrapped_container().stop(timeout=int(timeout))

    def kill(self) -> None:
        self.container.get_wrapped_container().kill()

    def start(self, timeout: float = 120.0) -> None:
        """Restart; Docker may map a different host port, so the address is re-read."""
        self.container.get_wrapped_container().start()
        self.refresh_address()
        self.wait_ready(timeout)


@dataclass(eq=False)
class DockerCluster:
    primary: ContainerServer
    replicas: list[ContainerServer]
    network: Any = field(repr=False)

    flavor = "mysql"
    app_user = "app"
    app_password = "app_pw"
    monitor_user = "monitor"
    monitor_password = "monitor_pw"
    repl_user = "repl"
    repl_password = "repl_pw"

    @property
    def servers(self) -> list[ContainerServer]:
        return [self.primary, *self.replicas]

    def wait_replicated(self, timeout: float = 10.0, replicas: list[ContainerServer] | None = None) -> None:
        target = self.primary.value("SELECT @@gtid_executed").replace("\n", "")
        deadline = time.monotonic() + timeout
        for r in replicas if replicas is not None else [r for r in self.replicas if r.is_running]:
            remaining = max(deadline - time.monotonic(), 0.001)
            if r.value(f"SELECT WAIT_FOR_EXECUTED_GTID_SET('{target}', {remaining:.3f})") != "0":
                status = (r.rows("SHOW REPLICA STATUS") or [{}])[0]
                raise SandboxError(
                    f"{r.name} did not reach {target!r} within {timeout}s: "
                    f"IO={status.get('Replica_IO_Running')} SQL={status.get('Replica_SQL_Running')} "
                    f"Last_IO_Error={status.get('Last_IO_Error')!r} Last_SQL_Error={status.get('Last_SQL_Error')!r}"
                )

    def stop(self, keep: bool = False) -> None:
        for s in self.servers:
            try:
                s.container.stop()
            except Exception as exc:  # keep tearing down the rest
                print(f"warning: removing {s.name}: {exc}")
        self.network.remove()


def _start_docker_cluster() -> DockerCluster:
    try:
        ok = subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        pytest.exit(
            "RWPROXY_TEST_DOCKER=1 but no Docker engine answers `docker info`; "
            "start Docker or unset RWPROXY_TEST_DOCKER to test against local MariaDB",
            returncode=3,
        )
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    network = Network().create()
    servers: list[ContainerServer] = []
    try:
        for i, name in enumerate(["primary", "replica1", "replica2"]):
            args = [
                f"--server-id={i + 1}",
                "--gtid-mode=ON",
                "--enforce-gtid-consistency=ON",
                "--log-bin=mysql-bin",
                "--binlog-format=ROW",
                "--skip-name-resolve",
                "--max-connections=2000",
                "--max-allowed-packet=64M",
                "--innodb-buffer-pool-size=64M",
                "--innodb-flush-log-at-trx-commit=2",
            ] + (["--read-only=ON"] if i else [])
            container = (
                DockerContainer(MYSQL_IMAGE, command=args, network=network, network_aliases=[name])
                .with_env("MYSQL_ROOT_PASSWORD", _ROOT_PASSWORD)
                .with_env("MYSQL_INITDB_SKIP_TZINFO", "1")
                .with_exposed_ports(3306)
                # The entrypoint's temporary server also logs "ready for connections" (port: 0).
                .waiting_for(
                    LogMessageWaitStrategy(re.compile(r"ready for connections\. Version:.*port: 3306\b"))
                    .with_startup_timeout(180)
                )
            )
            servers.append(ContainerServer(name, "primary" if i == 0 else "replica", i + 1, container))
        for s in servers:  # sequential: testcontainers starts block until ready
            s.container.start()
            s.refresh_address()
            s.wait_ready()
        cluster = DockerCluster(servers[0], servers[1:], network)
        c = cluster
        for s in servers:
            # The entrypoint's init may have written GTIDs; start every server from an empty history.
            s.sql(
                "SET sql_log_bin=0;"
                f"CREATE USER '{c.repl_user}'@'%' IDENTIFIED BY '{c.repl_password}';"
                f"GRANT REPLICATION SLAVE ON *.* TO '{c.repl_user}'@'%';"
                "SET sql_log_bin=1;"
                "RESET BINARY LOGS AND GTIDS;"
            )
        for r in c.replicas:
            r.sql(
                f"CHANGE REPLICATION SOURCE TO SOURCE_HOST='primary', SOURCE_PORT=3306, "
                f"SOURCE_USER='{c.repl_user}', SOURCE_PASSWORD='{c.repl_password}', "
                "SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1, SOURCE_CONNECT_RETRY=1;"
                "START REPLICA;"
            )
        app = f"'{c.app_user}'@'%', '{c.app_user}'@'localhost'"
        c.primary.sql(
            # MySQL applies an IDENTIFIED clause to one account only, hence two statements.
            f"CREATE USER '{c.app_user}'@'%' IDENTIFIED WITH caching_sha2_password BY '{c.app_password}';"
            f"CREATE USER '{c.app_user}'@'localhost' IDENTIFIED WITH caching_sha2_password BY '{c.app_password}';"
            f"GRANT ALL PRIVILEGES ON *.* TO {app} WITH GRANT OPTION;"
            # SUPER/CONNECTION_ADMIN bypass read_only: a mis-routed write must fail on a replica.
            f"REVOKE SUPER, CONNECTION_ADMIN ON *.* FROM {app};"
            f"CREATE USER '{c.monitor_user}'@'%' IDENTIFIED WITH caching_sha2_password BY '{c.monitor_password}';"
            f"GRANT REPLICATION CLIENT, PROCESS ON *.* TO '{c.monitor_user}'@'%';"
        )
        cluster.wait_replicated(timeout=60)
        return cluster
    except BaseException:
        for s in servers:
            try:
                s.container.stop()
            except Exception:
                pass
        network.remove()
        raise
