"""Entry point: `rwproxy --config FILE` or `python -m proxy --config FILE`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rwproxy", description="MySQL read/write-splitting proxy")
    p.add_argument("--config", required=True, metavar="FILE", help="TOML configuration file")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="overrides [proxy].log_level")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"rwproxy: configuration error: {e}", file=sys.stderr)
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
