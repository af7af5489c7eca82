"""The build stamp: one hash of the sources a greenhook build is made from.

``setup.py`` writes ``greenhook/_build_stamp.json`` (``{"source_sha256": ...}``) into every
build; the test command and the test session compare it with the hash of the checkout, so
that tests never run against a stale or foreign build.  Standard library only.

    python3 scripts/source_digest.py                 # the checkout's hash
    python3 scripts/source_digest.py --check PYTHON  # does PYTHON's greenhook match? (exit 1 if not)
"""
import hashlib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAMP_NAME = "_build_stamp.json"

# (directory, suffixes) whose files go into a build; plus the build scripts themselves
SOURCES = (
    ("cython", (".pyx", ".pxd", ".pxi", ".h")),     # the Cython core (its .c are generated)
    ("cext_samples", (".c", ".h", ".py")),          # the sample C clients
    ("src/greenhook", (".py",)),                    # the pure-Python package
)
BUILD_FILES = ("setup.py", "pyproject.toml")


def source_files(root=ROOT):
    """Relative POSIX paths of the files the build is made from, sorted."""
    found = [f for f in BUILD_FILES if os.path.isfile(os.path.join(root, f))]
    for top, suffixes in SOURCES:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in filenames:
                if name.endswith(suffixes):
                    rel = os.path.relpath(os.path.join(dirpath, name), root)
                    found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def digest(root=ROOT):
    """``(sha256 hex, number of files)`` of the sources under ``root``."""
    h = hashlib.sha256()
    files = source_files(root)
    for rel in files:
        with open(os.path.join(root, rel), "rb") as f:
            content = f.read()
        h.update(rel.encode() + b"\0" + hashlib.sha256(content).digest())
    return h.hexdigest(), len(files)


def stamp(root=ROOT):
    """The stamp setup.py writes into a build."""
    sha, count = digest(root)
    return {"source_sha256": sha, "files": count}


_FIND = ("import importlib.util, json, os, sys\n"
         "spec = importlib.util.find_spec('greenhook')\n"
         "print(json.dumps(None if spec is None else os.path.dirname(spec.origin)))\n")


def installed_stamp(python=None):
    """``(package directory or None, stamp dict or None)`` of the greenhook that ``python``
    (default: this interpreter) imports.  Run from outside the checkout, so ``src/`` is not
    on the path."""
    if python is None:
        import importlib.util
        spec = importlib.util.find_spec("greenhook")
        where = None if spec is None else os.path.dirname(spec.origin)
    else:
        if os.sep in python:
            python = os.path.abspath(python)    # it runs in another directory
        try:
            out = subprocess.run([python, "-I", "-c", _FIND], capture_output=True, text=True,
                                 cwd=os.path.dirname(ROOT) or "/", timeout=60)
        except OSError as exc:
            raise RuntimeError("%s cannot run: %s" % (python, exc)) from None
        if out.returncode != 0:
            raise RuntimeError("%s cannot run: %s" % (python, out.stderr.strip()))
        where = json.loads(out.stdout)
    if where is None:
        return None, None
    try:
        with open(os.path.join(where, STAMP_NAME)) as f:
            return where, json.load(f)
    except (OSError, ValueError):
        return where, None


def mismatch(python=None, root=ROOT):
    """None when the greenhook ``python`` imports was built from ``root`` as it is now;
    else a message saying what differs and what to do."""
    who = python or sys.executable
    try:
        where, found = installed_stamp(python)
    except RuntimeError as exc:
        return str(exc)
    fix = ("rebuild it from this checkout: %s -m pip install --no-deps %s "
           "(or run scripts/test.sh)" % (who, root))
    if where is None:
        return "%s cannot import greenhook; %s" % (who, fix)
    if found is None:
        return ("the greenhook %s imports (%s) has no build stamp (%s): it was not built by "
                "this checkout's setup.py; %s" % (who, where, STAMP_NAME, fix))
    want, count = digest(root)
    if found.get("source_sha256") != want:
        return ("the greenhook %s imports (%s) is a stale build: built from sources %s..., the "
                "checkout's %d source files hash to %s...; %s"
                % (who, where, str(found.get("source_sha256"))[:12], count, want[:12], fix))
    return None


def main(argv):
    if argv[:1] == ["--check"]:
        bad = [m for m in (mismatch(py) for py in argv[1:]) if m]
        for m in bad:
            print("build check: " + m, file=sys.stderr)
        return 1 if bad else 0
    print(digest()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
