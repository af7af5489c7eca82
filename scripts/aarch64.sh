#!/usr/bin/env bash
# greenhook on aarch64, under user-mode emulation (qemu-aarch64-static), on an x86_64 host.
#
#   scripts/aarch64.sh build          sysroot + cross-built greenhook; prints the interpreter
#   scripts/aarch64.sh run ARGS...    the aarch64 CPython 3.11 with that greenhook: python ARGS
#   scripts/aarch64.sh pytest ARGS... the host's pytest, whose scenario subprocesses (every
#                                     test that patches runs one) use the aarch64 interpreter
#
# 1. sysroot (.run/aarch64/sysroot): Debian's arm64 packages (libc6, python3.11, libpython3.11
#    -dev, python3-greenlet...) fetched with `apt-get download` through a PRIVATE apt state
#    (its own lists, cache and an empty dpkg status, in .run/aarch64/apt): the host's apt
#    configuration, architectures and package database are never touched; `dpkg -x` unpacks
#    them.  Rebuilt only when the package list changes.
# 2. the core (_elf, _hooks, _hubcore, _geventwait): Cython on the host, then gcc-aarch64-linux-gnu against the
#    sysroot's Python headers; the sample C clients (every link variant: lazy, now, -fno-plt,
#    address-taken, fortify) by cext_samples/build_samples.py with CC=aarch64-linux-gnu-gcc.
#    Everything goes into .run/aarch64/site/greenhook with the checkout's build stamp.
# 3. .run/aarch64/python: runs the sysroot's python3.11 under qemu-aarch64-static -L sysroot
#    with that site directory on PYTHONPATH.
#
# Needs (scripts/install_system_deps.sh): gcc-aarch64-linux-gnu, qemu-user-static; and a host
# python with Cython ($PYTHON, default: the project venv's).  Measured on the 2-core machine:
# a cold build (sysroot: 16 MB of .deb, then core + samples) ~17 s, cached sysroot ~15 s, an
# interpreter start ~1.5 s; tests/test_aarch64.py in all ~150 s.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
OUT="${GREENHOOK_AARCH64_DIR:-$ROOT/.run/aarch64}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
SYSROOT="$OUT/sysroot"
SITE="$OUT/site"
BUILD="$OUT/build"
CROSS_CC="${CROSS_CC:-aarch64-linux-gnu-gcc}"
PYVER=3.11
EXT_SUFFIX=".cpython-311-aarch64-linux-gnu.so"
PACKAGES=(libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libbz2-1.0 liblzma5 libuuid1
          libcrypt1 libssl3 "python$PYVER-minimal" "libpython$PYVER-minimal"
          "libpython$PYVER-stdlib" "libpython$PYVER" "libpython$PYVER-dev" python3-greenlet)
log() { printf 'aarch64.sh: %s\n' "$*" >&2; }

sysroot() {
    local want="${PACKAGES[*]}"
    if [ -x "$SYSROOT/usr/bin/python$PYVER" ] && [ "$(cat "$SYSROOT/.packages" 2>/dev/null)" = "$want" ]; then
        return
    fi
    log "sysroot: downloading ${#PACKAGES[@]} arm64 packages (private apt state in $OUT/apt)"
    local apt="$OUT/apt"
    rm -rf "$apt" "$SYSROOT"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs" "$SYSROOT"
    : > "$apt/status"
    local opts=(-q -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
                -o "Dir::State::status=$apt/status" -o APT::Architecture=arm64
                -o APT::Architectures::=arm64 -o Debug::NoLocking=1
                -o APT::Sandbox::User=root)
    apt-get "${opts[@]}" update >&2
    (cd "$apt/debs" && apt-get "${opts[@]}" download "${PACKAGES[@]}" >&2)
    local deb
    for deb in "$apt/debs"/*.deb; do
        dpkg -x "$deb" "$SYSROOT"
    done
    printf '%s' "$want" > "$SYSROOT/.packages"
    rm -rf "$apt"
}

build() {
    command -v "$CROSS_CC" >/dev/null || { log "no $CROSS_CC (apt: gcc-aarch64-linux-gnu)"; exit 1; }
    command -v qemu-aarch64-static >/dev/null || { log "no qemu-aarch64-static (apt: qemu-user-static)"; exit 1; }
    sysroot
    rm -rf "$SITE" "$BUILD"
    mkdir -p "$BUILD" "$SITE"
    # the pure-Python package, as the wheel has it
    (cd src && find greenhook -name '*.py' -o -name py.typed) | while read -r f; do
        case "$f" in greenhook/samples/_bin/*) ;; *)
            mkdir -p "$SITE/$(dirname "$f")"; cp "src/$f" "$SITE/$f" ;;
        esac
    done
    "$PYTHON" - "$ROOT" "$SITE" "$BUILD" <<'EOF'
import json, os, runpy, sys
root, site, build = sys.argv[1:]
sys.path.insert(0, os.path.join(root, "scripts"))
import source_digest
with open(os.path.join(site, "greenhook", source_digest.STAMP_NAME), "w") as f:
    json.dump(source_digest.stamp(root), f)
symbols = runpy.run_path(os.path.join(root, "src", "greenhook", "_symbols.py"))
with open(os.path.join(build, "gh_symbols.h"), "w") as f:
    f.write(symbols["symbols_header"]())
EOF
    local inc=(-I cython/greenhook/includes -I "$BUILD" -I "$SYSROOT/usr/include/python$PYVER"
               -I "$SYSROOT/usr/include/aarch64-linux-gnu/python$PYVER" -idirafter "$SYSROOT/usr/include")
    local mod
    for mod in _elf _hooks _hubcore _geventwait; do
        "$PYTHON" -m cython -3 -X embedsignature=True -I cython/greenhook \
            -I cython/greenhook/includes "cython/greenhook/$mod.pyx" -o "$BUILD/$mod.c" >&2
        "$CROSS_CC" -O2 -fPIC -shared -Wno-unused-function -fno-strict-aliasing \
            "-ffile-prefix-map=$ROOT=." "${inc[@]}" "$BUILD/$mod.c" \
            -o "$SITE/greenhook/$mod$EXT_SUFFIX" -ldl &
    done
    wait
    for mod in _elf _hooks _hubcore _geventwait; do
        [ -f "$SITE/greenhook/$mod$EXT_SUFFIX" ] || { log "cross-compiling $mod failed"; exit 1; }
    done
    CC="$CROSS_CC" "$PYTHON" - "$ROOT" "$SITE" "$SYSROOT" "$PYVER" "$EXT_SUFFIX" <<'EOF'
import os, sys
root, site, sysroot, pyver, ext_suffix = sys.argv[1:]
sys.path.insert(0, os.path.join(root, "cext_samples"))
import build_samples
out = os.path.join(site, "greenhook", "samples", "_bin")
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "__init__.py"), "w") as f:
    f.write("# Built sample C clients (libghsample_<variant>.so, _ghsample_<variant>).\n")
includes = [os.path.join(sysroot, "usr", "include", "python" + pyver),
            os.path.join(sysroot, "usr", "include", "aarch64-linux-gnu", "python" + pyver),
            os.path.join(sysroot, "usr", "include")]   # pyconfig.h includes <aarch64-linux-gnu/...>
for variant in build_samples.VARIANT_NAMES:
    build_samples._build_variant(variant, out, includes, ext_suffix, False, False)
EOF
    # No binfmt_misc here: a guest that execs its own sys.executable (the sysroot's ELF) gets
    # ENOEXEC, so the guest's sys.executable is this wrapper (a host script, run by the kernel).
    cat > "$SITE/sitecustomize.py" <<'EOF'
import os, sys
if os.environ.get("GREENHOOK_AARCH64_PYTHON"):
    sys.executable = os.environ["GREENHOOK_AARCH64_PYTHON"]
EOF
    cat > "$OUT/python" <<EOF
#!/bin/sh
# aarch64 CPython $PYVER (Debian's, from $SYSROOT) under user-mode emulation, importing the
# cross-built greenhook in $SITE.  Written by scripts/aarch64.sh.
export GREENHOOK_AARCH64_PYTHON="$OUT/python"
PYTHONPATH="$SITE\${PYTHONPATH:+:\$PYTHONPATH}" exec qemu-aarch64-static -L "$SYSROOT" "$SYSROOT/usr/bin/python$PYVER" "\$@"
EOF
    chmod +x "$OUT/python"
    # a smoke test: the interpreter is aarch64 and imports the compiled core
    "$OUT/python" -c "import platform, greenhook._hooks, greenhook._elf, greenhook._hubcore, greenhook.samples as s; assert platform.machine() == 'aarch64'; s.ctypes_lib('lazy')" >&2
    echo "$OUT/python"
}

case "${1:-build}" in
    build) build ;;
    run) shift; [ -x "$OUT/python" ] || build >/dev/null; exec "$OUT/python" "$@" ;;
    pytest)
        shift
        [ -x "$OUT/python" ] || build >/dev/null
        GREENHOOK_AARCH64_PYTHON="$OUT/python" PYTHONPATH="$ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}" \
            exec "$PYTHON" -m pytest -p aarch64_plugin "$@" ;;
    *) log "usage: $0 build | run ARGS... | pytest ARGS..."; exit 2 ;;
esac
