"""Entry point: `rwproxy --config FILE` (or `python -m proxy --config FILE`) runs the proxy;
`rwproxy explain --config FILE "SQL"` says where a statement would go and why."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .config import Config, ConfigError, load_config


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rwproxy", description="MySQL read/write-splitting proxy (subcommand: explain)")
    p.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="overrides [proxy].log_level")
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


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"rwproxy: configuration error: {e}", file=sys.stderr)
        return None


def explain_main(argv: list[str]) -> int:
    args = _explain_parser().parse_args(argv)
    config = _load(args.config)
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
    print(explain(args.sql, view, router.ruleset, router.online))
    return 0


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
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        runner = asyncio.run
    else:
        runner = uvloop.run
    from .app import serve

    try:
        runner(serve(config))
    except OSError as e:
        logging.getLogger("rwproxy").error("cannot start: %s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
