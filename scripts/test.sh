#!/usr/bin/env bash
# The test command: install what the tests need, start the real servers on 127.0.0.1, run
# pytest, stop what was started.  Extra arguments go to pytest (e.g. -k matrix, -x).
#
#   1. Debian packages: MariaDB, PostgreSQL, memcached, client libraries, unixODBC + ODBC drivers,
#      slapd, Redis, wrk, the aarch64 cross toolchain and qemu-user (scripts/install_system_deps.sh)
#   2. the project venv (.venv): greenhook[test] built from this checkout, the C drivers built
#      from source against the system libraries (scripts/install_drivers.sh), and .venv-binary
#      with psycopg2-binary for the bundled-library test
#   3. servers in .run/services (scripts/services.py: MariaDB, PostgreSQL, memcached, HTTP,
#      slapd, Redis), stopped by PID on exit
#   4. pytest, from the venv, on tests/
#
# Every install step stops the script when it fails, and the greenhook each venv imports must
# carry the build stamp of this checkout's sources (scripts/source_digest.py; the test
# session checks it again).  Under CI=true nothing is skipped: a missing server, driver or
# tool fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
VENV="${GREENHOOK_VENV:-$ROOT/.venv}"
RUN="$ROOT/.run/services"
PYTHON="${PYTHON:-python3}"
step() { printf '\n== %s\n' "$*" >&2; }
# pip, minus the noisy "WARNING: Location" lines; pipefail keeps pip's exit status (sed's is 0)
pip_install() { "$@" 2>&1 | sed '/^WARNING: Location/d' >&2; }

step "system packages"
bash scripts/install_system_deps.sh

step "project venv $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_install "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
pip_install "$VENV/bin/python" -m pip install -q --disable-pip-version-check ".[test]"
"$VENV/bin/python" -c 'import greenhook._hooks, greenhook.samples, gevent, pytest'

step "drivers built from source"
PYTHON="$PYTHON" bash scripts/install_drivers.sh "$VENV"
pip_install "$VENV-binary/bin/python" -m pip install -q --disable-pip-version-check ".[test]"

step "installed builds are this checkout's ($("$PYTHON" scripts/source_digest.py | cut -c1-12)...)"
"$PYTHON" scripts/source_digest.py --check "$VENV/bin/python" "$VENV-binary/bin/python"

step "servers"
stop_services() { "$PYTHON" scripts/services.py stop --dir "$RUN" >&2 || true; }
trap stop_services EXIT
"$PYTHON" scripts/services.py start --dir "$RUN"

step "pytest"
export GREENHOOK_SERVICES="$RUN/services.json"
export GREENHOOK_BINARY_VENV="$VENV-binary"
set +e
"$VENV/bin/python" -m pytest "$@"
status=$?
set -e
exit $status
