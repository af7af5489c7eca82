#!/usr/bin/env bash
# greenhook's benchmarks, side by side with what users would pick instead.
#
#   bench/run.sh [--quick] [--runs N] [--only fastpath,pingpong,scaling,drivers,watch]
#
# One command from a clean clone (Debian 12/13, root): it installs what it needs, starts
# throwaway servers on 127.0.0.1, runs every scenario several times interleaved
# (A B C A B C ..., each measurement in its own subprocess), stops the servers (EXIT trap)
# and writes
#
#   bench/results/latest.json   every measurement, the machine, the versions
#   bench/results/latest.md     min / median / max tables, ratios, which targets are met
#   bench/results/*.png         scaling curves and bar charts (matplotlib, Agg)
#
# Setup, all idempotent (a re-run skips what is already there):
#   scripts/install_system_deps.sh      MariaDB, PostgreSQL, memcached, -dev headers, strace (apt)
#   scripts/install_drivers.sh VENV     mysqlclient, psycopg2, pylibmc built from source,
#                                       PyMySQL, psycogreen, gevent (pinned there)
#   pip install greenify matplotlib     pinned below
#   greenhook from this work tree       built from a snapshot copy (so a build here never
#                                       touches the tree's build/ directory); rebuilt only when
#                                       cython/ src/ cext_samples/ setup.py pyproject.toml change
#   bench/delayserver.c, bench/ghbench.c  compiled by run_all.py with the system cc into
#                                       .run/bench-build (GREENHOOK_BENCH_BUILD) when missing or
#                                       older than the source; never committed as binaries
#
# Environment:
#   GREENHOOK_BENCH_VENV   venv to use (default: .venv-bench at the repository root)
#   PYTHON                 interpreter for a new venv (default: python3)
#   GREENHOOK_BENCH_DIR    state directory for the servers (default: .run/bench)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
VENV="${GREENHOOK_BENCH_VENV:-$ROOT/.venv-bench}"
STATE="${GREENHOOK_BENCH_DIR:-$ROOT/.run/bench}"
export PYTHON="${PYTHON:-python3}"

GREENIFY_VERSION=0.5.0
MATPLOTLIB_VERSION=3.11.2

T0=$(date +%s)
log() { echo "bench/run.sh [$(( $(date +%s) - T0 ))s]: $*"; }

# --- system packages, drivers, venv -------------------------------------------------------
log "system packages"
"$ROOT/scripts/install_system_deps.sh"
log "drivers into $VENV"
"$ROOT/scripts/install_drivers.sh" "$VENV"
PY="$VENV/bin/python"

need=()
"$PY" -c "import greenify" 2>/dev/null && \
    [ "$("$PY" -c 'from importlib.metadata import version; print(version("greenify"))')" = "$GREENIFY_VERSION" ] \
    || need+=("greenify==$GREENIFY_VERSION")
"$PY" -c "import matplotlib" 2>/dev/null && \
    [ "$("$PY" -c 'from importlib.metadata import version; print(version("matplotlib"))')" = "$MATPLOTLIB_VERSION" ] \
    || need+=("matplotlib==$MATPLOTLIB_VERSION")
if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    "$PY" -m pip install -q "${need[@]}"
fi

# --- greenhook from this work tree ---------------------------------------------------------
SRC_HASH="$(cd "$ROOT" && find cython src cext_samples setup.py pyproject.toml -type f \
    \( -name '*.py' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.h' -o -name '*.c' -o -name '*.toml' \) \
    -not -path '*/__pycache__/*' -not -path 'src/greenhook/samples/_bin/*' \
    -not -name '_hooks.c' -not -name '_elf.c' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
STAMP="$VENV/.greenhook-src-hash"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$SRC_HASH" ] || ! "$PY" -c "import greenhook._hooks, greenhook.samples; greenhook.samples.library_path('now')" 2>/dev/null; then
    log "building greenhook from the work tree (source hash $SRC_HASH)"
    SNAP="$(mktemp -d -t greenhook-bench-src.XXXXXX)"
    (cd "$ROOT" && tar cf - --exclude='./.venv*' --exclude=./.git --exclude=./build --exclude=./.run \
        --exclude='*.egg-info' --exclude=./bench/results --exclude='__pycache__' \
        --exclude='./src/greenhook/samples/_bin' --exclude='./cython/greenhook/*.c' . ) | (cd "$SNAP" && tar xf -)
    "$PY" -m pip install -q --no-deps --force-reinstall "$SNAP"
    rm -rf "$SNAP"
    echo "$SRC_HASH" > "$STAMP"
else
    log "greenhook already built from this source (hash $SRC_HASH)"
fi

# --- servers --------------------------------------------------------------------------------
mkdir -p "$STATE"
stop_services() {
    "$PY" "$ROOT/scripts/services.py" stop --dir "$STATE" --clean >/dev/null 2>&1 || true
}
trap stop_services EXIT
log "starting MariaDB, PostgreSQL, memcached in $STATE"
"$PY" "$ROOT/scripts/services.py" start --dir "$STATE" --services mysql,postgres,memcached >/dev/null

# --- the benchmarks ---------------------------------------------------------------------------
log "running the scenarios"
"$PY" "$HERE/run_all.py" --services "$STATE/services.json" --setup-seconds "$(( $(date +%s) - T0 ))" "$@"
log "done in $(( $(date +%s) - T0 )) s: bench/results/latest.md"
