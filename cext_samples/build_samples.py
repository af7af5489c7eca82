"""Build the sample C clients: libghsample_<variant>.so and _ghsample_<variant> per variant.

Called by setup.py's ``build_ext`` as ``build_all(out_dir, debug, verbose)``; usable alone::

    python cext_samples/build_samples.py OUT_DIR [--debug] [--verbose]

Stdlib only.  The compiler is ``$CC`` (may carry flags, e.g. ``"ccache gcc"``) or ``cc``.
Every variant is built from the same ``ghsample.c``; only the flags differ (see README.md).
Outputs are written to a temporary name and renamed into place, so a library that a running
process has loaded is replaced, never overwritten.
"""
import os
import shlex
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
LIB_SOURCE = os.path.join(HERE, "ghsample.c")
MODULE_SOURCE = os.path.join(HERE, "ghsample_module.c")

# Variant -> (extra compile flags, link flags).  The toolchain defaults are overridden
# explicitly (-fplt, -U_FORTIFY_SOURCE, -z lazy) because some distributions' compilers enable
# -fno-plt, _FORTIFY_SOURCE or -z now by default.
FULL_RELRO = ["-Wl,-z,relro,-z,now"]
VARIANTS = {
    "lazy": (["-fplt", "-U_FORTIFY_SOURCE"], ["-Wl,-z,relro,-z,lazy"]),
    "now": (["-fplt", "-U_FORTIFY_SOURCE"], FULL_RELRO),
    "noplt": (["-fno-plt", "-U_FORTIFY_SOURCE"], FULL_RELRO),
    "addrtaken": (["-fplt", "-U_FORTIFY_SOURCE", "-DGHS_ADDRESS_TAKEN"], FULL_RELRO),
    "fortify": (["-fplt", "-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=2"], FULL_RELRO),
}
VARIANT_NAMES = ("lazy", "now", "noplt", "addrtaken", "fortify")
assert set(VARIANT_NAMES) == set(VARIANTS)


class BuildError(RuntimeError):
    """A sample could not be compiled."""


def _compiler():
    cc = os.environ.get("CC") or "cc"
    return shlex.split(cc)


def _python_include():
    paths = sysconfig.get_paths()
    dirs = []
    for key in ("include", "platinclude"):
        d = paths.get(key)
        if d and d not in dirs:
            dirs.append(d)
    if not any(os.path.exists(os.path.join(d, "Python.h")) for d in dirs):
        raise BuildError(
            "Python.h not found in %s: install the Python development headers "
            "(e.g. python3-dev) to build the greenhook samples" % ", ".join(dirs)
        )
    return dirs


def _opt_flags(variant, debug):
    if variant == "fortify":
        # _FORTIFY_SOURCE needs optimisation to do anything.
        return ["-O2", "-g"] if debug else ["-O2"]
    return ["-O0", "-g"] if debug else ["-O2"]


def lib_name(variant):
    return "libghsample_%s.so" % variant


def module_name(variant):
    return "_ghsample_%s" % variant


def _run(cmd, target, verbose):
    if verbose:
        print(" ".join(shlex.quote(c) for c in cmd), flush=True)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError as exc:
        raise BuildError(
            "C compiler %r not found while building %s (set $CC to a working compiler): %s"
            % (cmd[0], target, exc)
        ) from None
    if proc.returncode != 0:
        raise BuildError(
            "building %s failed (exit status %d)\ncommand: %s\n%s"
            % (target, proc.returncode, " ".join(shlex.quote(c) for c in cmd), proc.stdout)
        )
    if verbose and proc.stdout.strip():
        print(proc.stdout, end="", flush=True)


def _build_variant(variant, out_dir, includes, ext_suffix, debug, verbose):
    cc = _compiler()
    extra_cflags, ldflags = VARIANTS[variant]
    common = ["-fPIC", "-Wall"] + _opt_flags(variant, debug)

    lib = os.path.join(out_dir, lib_name(variant))
    tmp = lib + ".tmp%d" % os.getpid()
    cmd = (
        cc
        + common
        + extra_cflags
        + ["-fvisibility=hidden", '-DGHS_VARIANT="%s"' % variant, "-I", HERE]
        + ["-shared", "-o", tmp, LIB_SOURCE]
        + ldflags
        + ["-Wl,-soname," + lib_name(variant)]
    )
    try:
        _run(cmd, lib_name(variant), verbose)
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

    ext = os.path.join(out_dir, module_name(variant) + ext_suffix)
    tmp = ext + ".tmp%d" % os.getpid()
    cmd = (
        cc
        + common
        + ["-U_FORTIFY_SOURCE", "-fno-strict-aliasing", "-DGHS_MODULE_NAME=" + module_name(variant)]
        + ["-I", HERE]
        + [a for d in includes for a in ("-I", d)]
        + ["-shared", "-o", tmp, MODULE_SOURCE, lib]
        + ["-Wl,-rpath,$ORIGIN", "-ldl"]
    )
    try:
        _run(cmd, os.path.basename(ext), verbose)
        os.replace(tmp, ext)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib, ext


def build_all(out_dir, debug=False, verbose=False):
    """Compile every variant's library and extension into ``out_dir``; return the paths."""
    if not sys.platform.startswith("linux"):
        raise BuildError("the greenhook samples are ELF/Linux only")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    init = os.path.join(out_dir, "__init__.py")
    if not os.path.exists(init):
        with open(init, "w") as f:
            f.write("# Built sample C clients (libghsample_<variant>.so, _ghsample_<variant>).\n")
    includes = _python_include()
    ext_suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    if verbose:
        print("building greenhook samples into %s" % out_dir, flush=True)
    workers = max(1, min(len(VARIANT_NAMES), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(_build_variant, v, out_dir, includes, ext_suffix, debug, verbose)
            for v in VARIANT_NAMES
        ]
        results = [f.result() for f in futures]
    return [p for pair in results for p in pair]


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args(argv)
    try:
        for path in build_all(args.out_dir, debug=args.debug, verbose=args.verbose):
            print(path)
    except BuildError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
