#!/usr/bin/env bash
# The test command (README step b; .ci/run calls exactly this). Installs what it needs first:
# the MariaDB server and client, sysbench, docker-compose, the virtualenv and Python deps.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "scripts/test.sh: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
