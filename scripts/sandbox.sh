#!/usr/bin/env bash
# README step a: set everything up and run the proxy (health monitor on) against a local primary + replica.
# Ctrl-C stops the proxy and both servers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m proxy.sandbox --data-dir sandbox-data --replicas 1 "$@"
