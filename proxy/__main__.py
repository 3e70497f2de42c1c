"""Entry point: `rwproxy --config FILE [--initial]` (or `python -m proxy --config FILE`) runs the
proxy; `rwproxy explain --config FILE "SQL"` says where a statement would go and why.

Without [listeners.admin] the config file is the only source of configuration. With it, the admin
port's config store (admin.store) is built here: memory is filled per section from the disk layer
(<[admin] data_dir>/rwproxy.db, for sections an operator saved there) or from the file (`--initial`:
the file for all), each section's source is logged, and the whole is validated as LOAD MYSQL ALL TO
RUNTIME would; the proxy runs what that validation built. Any configuration error exits with 2.

This module is the composition root: the only place that wires the control plane (admin) into the
running data plane (proxy.app.ProxyApp), and the only module of `proxy` that imports `admin`.
Nothing imports it (the import-linter contracts in the test suite say so)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from .config import Config, ConfigError, load_config

log = logging.getLogger("rwproxy")


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rwproxy", description="MySQL read/write-splitting proxy (subcommand: explain)")
    p.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="overrides [proxy].log_level")
    p.add_argument(
        "--initial",
        action="store_true",
        help="with the admin port: take every section from the config file, ignoring what was saved to the "
        "disk layer (ProxySQL's --initial); the disk layer is kept until the next SAVE ... TO DISK",
    )
    return p


def _explain_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rwproxy explain", description="Where would this statement go, and why?")
    p.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    p.add_argument("--user", help="frontend user (default: the first [[users]] entry)")
    p.add_argument("--schema", help="the session's default schema")
    p.add_argument("--client-addr", default="127.0.0.1", help="client IP address, for client_addr rules")
    p.add_argument("--in-transaction", type=int, metavar="HOSTGROUP", help="as if a transaction were open on this hostgroup")
    p.add_argument("sql", help="the statement")
    return p


def _load(path: str, secrets: bool = True) -> Config | None:
    try:
        return load_config(path, secrets)
    except ConfigError as e:
        print(f"rwproxy: configuration error: {e}", file=sys.stderr)
        return None


def explain_main(argv: list[str]) -> int:
    args = _explain_parser().parse_args(argv)
    config = _load(args.config, secrets=False)  # routing needs no passwords
    if config is None:
        return 2
    from rules.engine import SessionView
    from rules.explain import explain

    from .router import Router

    user = config.users.get(args.user) if args.user else next(iter(config.users.values()))
    if user is None:
        print(f"rwproxy explain: no user {args.user!r} in {args.config}", file=sys.stderr)
        return 2
    router = Router(config)
    listener = config.listeners["data"]
    view = SessionView(
        default_hostgroup=user.default_hostgroup,
        username=user.username,
        schemaname=args.schema,
        client_addr=args.client_addr,
        proxy_addr=listener.address,
        proxy_port=listener.port,
        transaction_persistent=user.transaction_persistent,
        in_transaction=args.in_transaction is not None,
        txn_hostgroup=args.in_transaction,
    )
    print(explain(args.sql, view, router.ruleset, router.online, causal_reads=user.causal_reads or config.causal_reads))
    return 0


def _admin_startup(path: str, config: Config, initial: bool) -> tuple[Config, object] | None:
    """With [listeners.admin]: the config store, filled per section from the disk layer or the file
    (the precedence is printed, section by section), validated as LOAD MYSQL ALL TO RUNTIME would.
    Returns (the config to run, the store), or None after printing why the proxy cannot start."""
    from admin.commands import ALL_SECTIONS
    from admin.store import ConfigStore, StoreError
    from admin.validate import read_config_file

    startup_log = logging.getLogger("rwproxy.startup")
    startup_log.setLevel(logging.INFO)  # the precedence is printed at every start, whatever the log level
    disk = Path(config.admin.data_dir) / "rwproxy.db"
    try:
        cf = read_config_file(path)
        store = ConfigStore(disk)
        report = store.startup(cf, initial=initial)
    except ConfigError as e:  # the file changed since it was read a moment ago
        print(f"rwproxy: configuration error: {e}", file=sys.stderr)
        return None
    except StoreError as e:
        print(f"rwproxy: admin disk layer: {e.message} (set [admin] data_dir to a writable directory)", file=sys.stderr)
        return None
    startup_log.info("configuration sources (admin port enabled; disk layer %s%s):", disk, ", --initial" if initial else "")
    for line in report.lines():
        if line.startswith("WARNING: "):
            startup_log.warning("%s", line.removeprefix("WARNING: "))
        else:
            startup_log.info("%s", line)
    result = store.build(ALL_SECTIONS, cf.config)
    if not result.ok:
        print(f"rwproxy: {result.message('startup (LOAD MYSQL ALL TO RUNTIME)')}", file=sys.stderr)
        print("rwproxy: fix the rows (disk layer sections) or start with --initial to use the config file", file=sys.stderr)
        store.close()
        return None
    store.set_runtime(result)
    assert result.config is not None
    return result.config, store


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "explain":
        return explain_main(argv[1:])
    if argv and argv[0] == "run":
        argv = argv[1:]
    args = _run_parser().parse_args(argv)
    config = _load(args.config)
    if config is None:
        return 2
    logging.basicConfig(
        level=(args.log_level or config.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from .logsafe import install as install_log_escaping

    install_log_escaping()  # every record one line: client-supplied text cannot forge log lines
    from .malloc_tuning import pin_mmap_threshold

    pin_mmap_threshold()  # a client's large packet must not pin RSS after it is freed
    store = None
    if "admin" in config.listeners:
        started = _admin_startup(args.config, config, args.initial)
        if started is None:
            return 2
        config, store = started
    elif args.initial:
        logging.getLogger("rwproxy").info("--initial has no effect without [listeners.admin]: the config file is the only source")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(config, store))
    except OSError as e:
        logging.getLogger("rwproxy").error("cannot start: %s", e)
        return 1
    return 0


async def serve(config: Config, store: object | None = None) -> None:
    """Run the proxy until SIGINT/SIGTERM: the data plane, then the admin port wired into it."""
    from .app import ProxyApp

    app = ProxyApp(config)
    app.store = store  # the admin port's config store (admin.store.ConfigStore), built above
    await app.start()
    if "admin" in config.listeners:
        from admin.server import start_admin

        lst = config.listeners["admin"]
        app.add_listener(await start_admin(app, lst.address, lst.port))
        log.info("listening on %s:%d (admin)", lst.address, lst.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            app.cut_now()
        else:
            log.info("%s received", sig.name)
            stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGUSR1, app.log_sessions)

    def on_hup() -> None:
        """SIGHUP: secrets from files / the environment, and the TLS certificates and keys, read again."""
        app.reload_secrets()
        try:
            app.reload_tls()
        except OSError as e:
            log.error("SIGHUP: TLS not reloaded, the previous certificates stay in use: %s", e)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()
    await app.stop()
    log.info("stopped")


if __name__ == "__main__":
    sys.exit(main())
