#!/usr/bin/env bash
# Build the C-extension database drivers from source, against the system
# libraries, into a virtual environment, plus the pure-Python drivers and test
# tools the driver tests compare with.
#
#   scripts/install_drivers.sh VENV
#
#   VENV          gets: mysqlclient, psycopg2, pylibmc, pycurl (all built from
#                 source: they link /usr/lib's libmariadb, libpq, libmemcached,
#                 libcurl), PyMySQL, psycogreen, gevent, pytest, gunicorn,
#                 celery[redis] (the deployment tests).
#   VENV-binary   a second venv with psycopg2-binary only (it conflicts with
#                 psycopg2): its wheel bundles psycopg2_binary.libs/libpq-*.so*,
#                 which the tests use to prove discovery of bundled libraries.
#
# Each venv is created with $PYTHON (default python3) when it does not exist.
# A package already installed at the pinned version (and, for the C drivers,
# linked against the system library) is not rebuilt, so re-runs take seconds.
# The system packages come from scripts/install_system_deps.sh.
#
# Environment:
#   PYTHON                   interpreter used to create missing venvs (python3)
#   GREENHOOK_DRIVERS_FORCE=1  reinstall everything
#   PIP_* variables are honoured by pip as usual.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 VENV" >&2
    exit 2
fi
VENV="${1%/}"
BINVENV="${VENV}-binary"
PYTHON="${PYTHON:-python3}"
FORCE="${GREENHOOK_DRIVERS_FORCE:-0}"

# Pinned versions: bump here.
MYSQLCLIENT_VERSION=2.3.2
PSYCOPG2_VERSION=2.9.13
PYLIBMC_VERSION=1.6.3
PYCURL_VERSION=7.49.0
PYMYSQL_VERSION=1.2.4
PSYCOGREEN_VERSION=1.0.2
GEVENT_VERSION=26.9.0
PYTEST_VERSION=9.2.0
# deployment tests (tests/deploy/): the servers users run greenhook in
GUNICORN_VERSION=23.0.0
CELERY_VERSION=5.5.3
PYODBC_VERSION=5.5.0       # auto mode (issue 10): unixODBC dlopens the ODBC driver at connect
PYTHON_LDAP_VERSION=3.4.8  # auto mode (issue 10): libldap
PYASN1_VERSION=0.6.5       # python-ldap's pure-Python dependencies
PYASN1_MODULES_VERSION=0.4.2

# The C drivers: "dist==version import.name.of.extension system-library-soname"
C_DRIVERS=(
    "mysqlclient==$MYSQLCLIENT_VERSION MySQLdb._mysql libmariadb.so.3"
    "psycopg2==$PSYCOPG2_VERSION psycopg2._psycopg libpq.so.5"
    "pylibmc==$PYLIBMC_VERSION _pylibmc libmemcached.so"
    "pycurl==$PYCURL_VERSION pycurl libcurl.so.4"
    "pyodbc==$PYODBC_VERSION pyodbc libodbc.so.2"
    "python-ldap==$PYTHON_LDAP_VERSION _ldap libldap"
)
PURE=(
    "PyMySQL==$PYMYSQL_VERSION"
    "psycogreen==$PSYCOGREEN_VERSION"
    "gevent==$GEVENT_VERSION"
    "pytest==$PYTEST_VERSION"
    "gunicorn==$GUNICORN_VERSION"
    "celery[redis]==$CELERY_VERSION"
    "pyasn1==$PYASN1_VERSION"
    "pyasn1-modules==$PYASN1_MODULES_VERSION"
)
BINARY=(
    "psycopg2-binary==$PSYCOPG2_VERSION"
)

log() { echo "install_drivers.sh: $*"; }

for tool in pkg-config pg_config curl-config; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "install_drivers.sh: '$tool' not found: run scripts/install_system_deps.sh first" >&2
        exit 1
    fi
done

make_venv() {
    local dir="$1"
    if [ ! -x "$dir/bin/python" ]; then
        log "creating venv $dir with $PYTHON"
        "$PYTHON" -m venv "$dir"
        "$dir/bin/python" -m pip install -q --upgrade pip setuptools wheel
    fi
}

installed_version() {
    # $1 venv python, $2 distribution name
    "$1" - "$2" <<'EOF' 2>/dev/null || true
import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass
EOF
}

ext_path() {
    # $1 venv python, $2 module name: path of the extension module's file
    "$1" - "$2" <<'EOF'
import importlib, importlib.util, sys
name = sys.argv[1]
mod = importlib.import_module(name)
path = getattr(mod, "__file__", "") or ""
if not path.endswith(".so"):
    # a package: find its compiled submodule (pycurl 7.45+: pycurl._pycurl)
    import os
    cands = [os.path.join(os.path.dirname(path), f) for f in os.listdir(os.path.dirname(path))
             if f.endswith(".so")] if path else []
    path = cands[0] if cands else path
print(path)
EOF
}

# True when the extension is linked against the system copy of the library
# (a path outside the venv, not a wheel-bundled *.libs copy).
linked_to_system() {
    local py="$1" mod="$2" soname="$3" so line
    so="$(ext_path "$py" "$mod" 2>/dev/null)" || return 1
    [ -n "$so" ] && [ -f "$so" ] || return 1
    line="$(ldd "$so" | grep -F "$soname" | head -1)"
    [ -n "$line" ] || return 1
    case "$line" in
        *"$VENV"*|*".libs/"*|*"not found"*) return 1 ;;
    esac
    return 0
}

make_venv "$VENV"
PY="$VENV/bin/python"

# --- C drivers, from source --------------------------------------------------
export PYCURL_SSL_LIBRARY=openssl   # libcurl4-openssl-dev
todo=()
for spec in "${C_DRIVERS[@]}"; do
    read -r req mod soname <<<"$spec"
    dist="${req%%==*}"; dist="${dist%%[*}"
    want="${req##*==}"
    have="$(installed_version "$PY" "$dist")"
    if [ "$FORCE" != "1" ] && [ "$have" = "$want" ] && linked_to_system "$PY" "$mod" "$soname"; then
        log "$dist $have already built against the system $soname"
    else
        todo+=("$req")
    fi
done
if [ "${#todo[@]}" -gt 0 ]; then
    names="$(printf '%s\n' "${todo[@]}" | sed 's/==.*//' | paste -sd, -)"
    log "building from source: ${todo[*]}"
    # --no-binary for the drivers only (their build dependencies may be
    # wheels); --force-reinstall replaces a wheel-built copy at the same version.
    "$PY" -m pip install -q --no-binary "$names" --force-reinstall --no-deps "${todo[@]}"
fi
# Verify the links.
for spec in "${C_DRIVERS[@]}"; do
    read -r req mod soname <<<"$spec"
    if ! linked_to_system "$PY" "$mod" "$soname"; then
        so="$(ext_path "$PY" "$mod" 2>&1 || true)"
        echo "install_drivers.sh: $mod ($so) is not linked against the system $soname:" >&2
        ldd "$so" >&2 || true
        exit 1
    fi
    so="$(ext_path "$PY" "$mod")"
    log "ok: $mod -> $(ldd "$so" | grep -F "$soname" | awk '{print $3}' | head -1)"
done

# --- pure-Python drivers and test tools ------------------------------------
todo=()
for req in "${PURE[@]}"; do
    dist="${req%%==*}"; dist="${dist%%[*}"
    have="$(installed_version "$PY" "$dist")"
    if [ "$FORCE" = "1" ] || [ "$have" != "${req##*==}" ]; then
        todo+=("$req")
    fi
done
if [ "${#todo[@]}" -gt 0 ]; then
    log "installing: ${todo[*]}"
    "$PY" -m pip install -q "${todo[@]}"
else
    log "PyMySQL, psycogreen, gevent, pytest, gunicorn, celery already at the pinned versions"
fi

# --- psycopg2-binary, in its own venv ----------------------------------------
make_venv "$BINVENV"
BPY="$BINVENV/bin/python"
for req in "${BINARY[@]}"; do
    dist="${req%%==*}"; dist="${dist%%[*}"
    have="$(installed_version "$BPY" "$dist")"
    if [ "$FORCE" = "1" ] || [ "$have" != "${req##*==}" ]; then
        log "installing into $BINVENV: $req"
        "$BPY" -m pip install -q --only-binary "$dist" "$req"
    else
        log "$dist $have already in $BINVENV"
    fi
done
bundled="$("$BPY" - <<'EOF'
import glob, os, psycopg2
site = os.path.dirname(os.path.dirname(psycopg2.__file__))
libs = sorted(glob.glob(os.path.join(site, "psycopg2_binary.libs", "libpq-*.so*")))
print(libs[0] if libs else "")
EOF
)"
if [ -z "$bundled" ]; then
    echo "install_drivers.sh: psycopg2-binary in $BINVENV bundles no libpq-*.so*" >&2
    exit 1
fi
log "ok: psycopg2-binary bundles $(basename "$bundled")"
