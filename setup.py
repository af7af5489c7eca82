"""Build script: the Cython core (ELF patcher, green hooks) and the sample C clients.

All build switches live here.  ``GREENHOOK_DEBUG=1`` builds with ``-O0 -g``;
``GREENHOOK_ANNOTATE=1`` writes Cython's HTML annotation next to the sources.

Every build carries ``greenhook/_build_stamp.json``: the hash of the sources it was made from
(``scripts/source_digest.py``), which the tests compare with the checkout's.
"""
import json
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext
from setuptools.command.build_py import build_py as _build_py

HERE = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("GREENHOOK_DEBUG") == "1"
ANNOTATE = os.environ.get("GREENHOOK_ANNOTATE") == "1"

CFLAGS = ["-O0", "-g"] if DEBUG else ["-O2"]
CFLAGS += ["-Wno-unused-function", "-fno-strict-aliasing"]
# Reproducible: no build-directory path in the objects (debug info, __FILE__), so a wheel built
# from the sdist is byte-identical to one built from the checkout (tests/test_packaging.py).
CFLAGS += ["-ffile-prefix-map=%s=." % HERE]


def generated_includes():
    """Write the headers derived from greenhook/_symbols.py; return their directory."""
    import runpy

    symbols = runpy.run_path(os.path.join(HERE, "src", "greenhook", "_symbols.py"))
    out = os.path.join(HERE, "build", "generated")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "gh_symbols.h")
    text = symbols["symbols_header"]()
    try:
        with open(path) as f:
            if f.read() == text:
                return out      # unchanged: keep the mtime, no needless rebuild
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(text)
    return out


def core_extensions():
    if not sys.platform.startswith("linux"):
        # Other platforms get the pure-Python package; patching raises UnsupportedPlatform.
        return []
    from Cython.Build import cythonize

    includes = ["cython/greenhook/includes", generated_includes()]

    exts = [
        Extension(
            "greenhook._elf",
            ["cython/greenhook/_elf.pyx"],
            include_dirs=["cython/greenhook/includes"],
            extra_compile_args=CFLAGS,
            libraries=["dl"],
        ),
        Extension(
            "greenhook._hubcore",
            ["cython/greenhook/_hubcore.pyx"],
            include_dirs=["cython/greenhook/includes"],
            extra_compile_args=CFLAGS,
        ),
        Extension(
            # the gevent backend's wait and C face; imports gevent, so only backends/gevent.py
            # imports it (gevent is optional)
            "greenhook._geventwait",
            ["cython/greenhook/_geventwait.pyx"],
            include_dirs=["cython/greenhook/includes"],
            extra_compile_args=CFLAGS,
        ),
        Extension(
            "greenhook._hooks",
            ["cython/greenhook/_hooks.pyx"],
            include_dirs=includes,
            extra_compile_args=CFLAGS,
            libraries=["dl"],
        ),
    ]
    return cythonize(
        exts,
        language_level=3,
        include_path=["cython/greenhook", "cython/greenhook/includes"],
        annotate=ANNOTATE,
        compiler_directives={"embedsignature": True},
    )


class build_ext(_build_ext):
    """Build the Cython core, then the sample C clients into ``greenhook/samples/_bin``."""

    def run(self):
        super().run()
        if not sys.platform.startswith("linux"):
            return
        sys.path.insert(0, os.path.join(HERE, "cext_samples"))
        try:
            import build_samples
        finally:
            sys.path.pop(0)
        if self.inplace:
            out = os.path.join(HERE, "src", "greenhook", "samples", "_bin")
        else:
            out = os.path.join(self.build_lib, "greenhook", "samples", "_bin")
        build_samples.build_all(out, debug=DEBUG, verbose=self.verbose)


class build_py(_build_py):
    """Copy the Python sources, then write the build stamp next to them."""

    def run(self):
        super().run()
        sys.path.insert(0, os.path.join(HERE, "scripts"))
        try:
            import source_digest
        finally:
            sys.path.pop(0)
        path = os.path.join(self.build_lib, "greenhook", source_digest.STAMP_NAME)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(source_digest.stamp(HERE), f)


setup(ext_modules=core_extensions(), cmdclass={"build_ext": build_ext, "build_py": build_py})
