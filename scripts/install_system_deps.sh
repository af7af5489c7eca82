#!/usr/bin/env bash
# Install the Debian packages that the driver tests need: the database servers
# (MariaDB, PostgreSQL, memcached), the client libraries' headers that the C
# drivers build against, and the tools the tests use (pkg-config, openssl,
# readelf/nm).
#
# Idempotent and fast when everything is present: dpkg-query is asked first and
# apt is not touched at all when nothing is missing.
#
# Must run as root (or with sudo available). Packages are told not to start
# their services (policy-rc.d answers 101): services.py starts throwaway
# servers on loopback itself.
#
# Works on Debian 12 (bookworm) and Debian 13 (trixie). Each entry below may
# list alternatives separated by '|': the entry is satisfied when any of them
# is installed, otherwise the first one that apt has a candidate for is chosen.
#
# Environment:
#   GREENHOOK_APT_EXTRA   extra package entries to require (space separated)
#   GREENHOOK_APT_FORCE=1 run apt-get even when everything looks installed
set -euo pipefail

PACKAGES=(
    # servers
    "mariadb-server|default-mysql-server"
    "mariadb-client|default-mysql-client"
    "postgresql"
    "memcached"
    # client libraries + headers the drivers build against
    "libmariadb-dev|default-libmysqlclient-dev"
    "libmariadb-dev-compat"
    "libpq-dev"
    "libmemcached-dev"
    "libcurl4-openssl-dev"
    "libssl-dev"
    "zlib1g-dev"
    # build tools
    "pkgconf|pkg-config"
    "gcc"
    "libc6-dev"
    "make"
    # tools used by services.py and the tests
    "openssl"
    "binutils"
    "procps"
    "util-linux"
    # deployment tests (tests/deploy/): a Redis broker for Celery, a load generator
    "redis-server"
    "wrk"
    "iproute2"          # ip link set lo up in the DNS tests' network namespace
    # auto mode (issue 10): pyodbc + unixODBC with the MariaDB and PostgreSQL ODBC drivers
    # (dlopened at the first connect), python-ldap (libldap) against a throwaway slapd
    "unixodbc-dev"
    "odbc-mariadb"
    "odbc-postgresql"
    "libldap-dev|libldap2-dev"
    "libsasl2-dev"
    "slapd"
    # packaging and aarch64 tests (tests/test_packaging.py, scripts/aarch64.sh): auditwheel
    # needs patchelf; the aarch64 core is cross-compiled and run under user-mode emulation
    "patchelf"
    "gcc-aarch64-linux-gnu"
    "libc6-dev-arm64-cross"
    "qemu-user-static"
    "strace"            # bench/: syscalls per round trip (strace -f -c)
)
# shellcheck disable=SC2206
PACKAGES+=(${GREENHOOK_APT_EXTRA:-})

SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_system_deps.sh: must run as root (no sudo found)" >&2
        exit 1
    fi
fi

is_installed() {
    # dpkg-query prints nothing useful for unknown packages; only an exact
    # "install ok installed" counts.
    local status
    status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
    [ "$status" = "install ok installed" ]
}

entry_installed() {
    local alt
    IFS='|' read -r -a alts <<<"$1"
    for alt in "${alts[@]}"; do
        if is_installed "$alt"; then
            return 0
        fi
    done
    return 1
}

has_candidate() {
    local cand
    cand="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')"
    [ -n "$cand" ] && [ "$cand" != "(none)" ]
}

missing=()
for entry in "${PACKAGES[@]}"; do
    if [ "${GREENHOOK_APT_FORCE:-0}" = "1" ] || ! entry_installed "$entry"; then
        missing+=("$entry")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install_system_deps.sh: all ${#PACKAGES[@]} package entries already installed"
    exit 0
fi

echo "install_system_deps.sh: missing: ${missing[*]}"

# Keep packages from starting (or restarting) services during installation.
POLICY=/usr/sbin/policy-rc.d
if ! { [ -f "$POLICY" ] && grep -q 'exit 101' "$POLICY"; }; then
    if [ -e "$POLICY" ] && [ ! -e "$POLICY.greenhook-orig" ]; then
        $SUDO cp -p "$POLICY" "$POLICY.greenhook-orig"
    fi
    printf '#!/bin/sh\n# written by greenhook scripts/install_system_deps.sh: do not start services\nexit 101\n' \
        | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 0755 "$POLICY"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq

chosen=()
for entry in "${missing[@]}"; do
    IFS='|' read -r -a alts <<<"$entry"
    pick=""
    for alt in "${alts[@]}"; do
        if has_candidate "$alt"; then
            pick="$alt"
            break
        fi
    done
    if [ -z "$pick" ]; then
        echo "install_system_deps.sh: no installable package for '$entry'" >&2
        exit 1
    fi
    chosen+=("$pick")
done

echo "install_system_deps.sh: installing: ${chosen[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${chosen[@]}"

# slapd: the tests run their own throwaway instance (scripts/services.py), never the package's
# default one. policy-rc.d kept it from starting; if it started anyway, stop it.
case " ${chosen[*]} " in
    *" slapd "*)
        if [ -f /run/slapd/slapd.pid ] && kill -0 "$(cat /run/slapd/slapd.pid)" 2>/dev/null; then
            echo "install_system_deps.sh: stopping the slapd instance the package started"
            $SUDO kill "$(cat /run/slapd/slapd.pid)" || true
        fi ;;
esac

# Verify: every entry must now be satisfied.
fail=0
for entry in "${PACKAGES[@]}"; do
    if ! entry_installed "$entry"; then
        echo "install_system_deps.sh: still missing after install: $entry" >&2
        fail=1
    fi
done
exit "$fail"
