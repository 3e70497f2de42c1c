#!/usr/bin/env bash
# Prepare a machine (fresh Debian 12 is the reference) to develop and test rwproxy:
#   - MariaDB server + client, sysbench, docker-compose from apt (only if something is missing),
#   - .venv in the repo root with `pip install -e '.[test]'` (redone only when pyproject.toml changes).
# Idempotent: a second run does nothing but check. Run as root (or with sudo available).
# PYTHON=python3.12 scripts/setup.sh picks another interpreter for the venv (needs >= 3.11).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
python=${PYTHON:-python3}

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo="sudo" || sudo="__need_root__"
fi

have() {  # a command on PATH, or in the sbin dirs a non-root PATH may lack
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]
}

# -- system packages ----------------------------------------------------------------------------
packages=()
missing=()
for cmd in mariadbd mariadb mariadb-dump sysbench docker-compose; do
    have "$cmd" || missing+=("$cmd")
done
if [ ${#missing[@]} -gt 0 ]; then
    packages+=(mariadb-server mariadb-client sysbench docker-compose)
fi
if ! have "$python"; then
    [ -z "${PYTHON:-}" ] || die "PYTHON=$PYTHON not found"
    packages+=(python3 python3-venv)
    missing+=(python3)
elif [ ! -x .venv/bin/python ] && ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    # Debian splits ensurepip (needed by `python3 -m venv`) into python3-venv.
    packages+=(python3-venv)
    missing+=(python3-venv)
fi

if [ ${#packages[@]} -gt 0 ]; then
    [ "$sudo" != "__need_root__" ] || die "missing ${missing[*]}; run as root (or install sudo) to apt-get install ${packages[*]}"
    say "missing ${missing[*]}: apt-get install ${packages[*]}"
    $sudo apt-get update -qq
    # Debian's container images ship a policy-rc.d that keeps the packaged mariadb service from
    # starting; if one does start on 3306, it is left alone (the tests use their own free ports).
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    for cmd in mariadbd mariadb mariadb-dump sysbench docker-compose; do
        have "$cmd" || die "$cmd still missing after apt-get install"
    done
    say "system packages installed"
else
    say "system packages present (mariadbd, mariadb, mariadb-dump, sysbench, docker-compose)"
fi

# -- the differential harness's drivers (tests/differential) ---------------------------------------
# MariaDB Connector/J and gson for the Java runner (compiled by the tests with javac), the MariaDB
# Connector/C headers and pkg-config that pip needs to build mysqlclient, Node and npm for mysql2,
# mariadb-test for bench/run_mtr.py (MariaDB's own test suite through the proxy).
diff_packages=()
[ -f /usr/share/java/mariadb-java-client.jar ] || diff_packages+=(libmariadb-java)
[ -f /usr/share/java/gson.jar ] || diff_packages+=(libgoogle-gson-java)
have javac || diff_packages+=(openjdk-17-jdk-headless)
have pkg-config || diff_packages+=(pkg-config)
{ have pkg-config && pkg-config --exists libmariadb; } || diff_packages+=(libmariadb-dev)
have node || diff_packages+=(nodejs)
have npm || diff_packages+=(npm)
have mariadb-test || diff_packages+=(mariadb-test)
if [ ${#diff_packages[@]} -gt 0 ]; then
    [ "$sudo" != "__need_root__" ] || die "missing ${diff_packages[*]}; run as root (or install sudo)"
    say "differential harness: apt-get install ${diff_packages[*]}"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${diff_packages[@]}" >/dev/null
else
    say "differential harness packages present (Connector/J, gson, javac, libmariadb-dev, node, npm, mariadb-test)"
fi
node_dir=tests/differential/node
if [ ! -f "$node_dir/node_modules/.package-lock.json" ] || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    say "npm ci in $node_dir (mysql2)"
else
    say "mysql2 installed in $node_dir/node_modules"
fi

# -- Python venv ----------------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$python is $("$python" -V 2>&1); rwproxy needs Python >= 3.11 (set PYTHON=/path/to/python3.11)"
    "$python" -m venv .venv
    say "created .venv with $("$python" -V 2>&1)"
else
    .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die ".venv uses $(.venv/bin/python -V 2>&1); rwproxy needs >= 3.11: remove .venv and rerun"
    say ".venv exists ($(.venv/bin/python -V 2>&1))"
fi

stamp=.venv/.installed
if [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
    say "installed rwproxy (editable) with test extras into .venv"
else
    say "dependencies up to date (pyproject.toml older than $stamp)"
fi

say "done: run tests with  $repo/.venv/bin/python -m pytest -q"
