#!/usr/bin/env bash
# The main job: build greenhook into a project venv and run the demo (greened vs ungreened
# sample C clients, side by side, on the built-in hub).  Extra arguments go to the demo,
# e.g. scripts/demo.sh --hub gevent --n 20
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GREENHOOK_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
    echo "demo: installing a C compiler (build-essential)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential python3-dev python3-venv >/dev/null
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
echo "demo: building greenhook into $VENV (Cython core + sample C clients)" >&2
"$VENV/bin/python" -m pip install -q --disable-pip-version-check . 2>&1 | sed '/^WARNING: Location/d' >&2   # pipefail: a failed build stops here
"$VENV/bin/python" -c 'import greenhook._hooks, greenhook.samples' || { echo "demo: build failed" >&2; exit 1; }
cd "${TMPDIR:-/tmp}"   # run from outside the checkout: the installed package, not src/
exec "$OLDPWD/$VENV/bin/python" -m greenhook demo "$@"
