"""greenhook as a real package: a complete sdist, a wheel from it identical to one from the
checkout, one version, a license, typed, a manylinux wheel, and an sdist that installs.

The builds (``packaging_support.dists()``: ``python -m build``, ``pip wheel``,
``auditwheel repair``) are made once per session and shared with tests/test_wheel.py.
Measured on the 2-core machine: builds ~45 s, the sdist install ~40 s, mypy ~5 s.
"""
import os
import re
import subprocess
import sys
import tarfile
import venv
import zipfile

import pytest

from greenhook_test_support import ROOT
from packaging_support import dists, run, wheel_tag

sys.path.insert(0, os.path.join(ROOT, "scripts"))
try:
    import source_digest
finally:
    sys.path.pop(0)


def _version():
    with open(os.path.join(ROOT, "src", "greenhook", "_version.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"$', f.read(), re.M).group(1)


def _members(whl):
    with zipfile.ZipFile(whl) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_sdist_holds_every_build_source():
    """Every file the build reads (the build stamp's list: .pyx, .pxd, .pxi, headers, the
    samples' C, the package's Python, setup.py, pyproject.toml) and setup.py's helpers are in
    the sdist; no build product is."""
    sdist = dists()["sdist"]
    prefix = "greenhook-%s/" % _version()
    with tarfile.open(sdist) as t:
        names = {m.name[len(prefix):] for m in t.getmembers() if m.isfile()}
    need = set(source_digest.source_files(ROOT)) | {
        "LICENSE", "README.md", "MANIFEST.in", "scripts/source_digest.py", "PKG-INFO",
        "src/greenhook/py.typed"}
    assert need - names == set(), "missing from the sdist: %s" % sorted(need - names)
    for kind in ("cython/greenhook/_elf.pyx", "cython/greenhook/hooks/wait.pxi",
                 "cython/greenhook/includes/libc_io.pxd", "cython/greenhook/includes/elf_arch.h",
                 "cext_samples/ghsample.c", "cext_samples/build_samples.py"):
        assert kind in names, kind
    products = sorted(n for n in names if n.endswith((".so", ".o", ".pyc"))
                      or re.match(r"cython/.*\.c$", n))
    assert products == [], products


def test_wheel_from_the_sdist_is_the_checkout_wheel():
    """Same file list, byte for byte (the objects are reproducible: -ffile-prefix-map)."""
    d = dists()
    a, b = _members(d["wheel"]), _members(d["checkout_wheel"])
    assert sorted(a) == sorted(b)
    differ = sorted(n for n in a if a[n] != b[n])
    assert differ == [], "differ between the sdist's wheel and the checkout's: %s" % differ
    # the wheel has the compiled core and every sample variant, and no sources
    names = sorted(a)
    for want in (r"greenhook/_elf\..*\.so", r"greenhook/_hooks\..*\.so",
                 r"greenhook/_hubcore\..*\.so", r"greenhook/_geventwait\..*\.so",
                 r"greenhook/samples/_bin/libghsample_(lazy|now|noplt|addrtaken|fortify)\.so",
                 r"greenhook/py\.typed$"):
        assert any(re.match(want, n) for n in names), want
    assert len([n for n in names if re.match(r"greenhook/samples/_bin/_?(lib)?ghsample_", n)]) == 10
    assert not [n for n in names if n.endswith((".c", ".pyx", ".pxd", ".pxi", ".h"))]


def test_one_version_and_the_license_in_the_metadata():
    d = dists()
    version = _version()
    with open(os.path.join(ROOT, "LICENSE"), "rb") as f:
        license_text = f.read()
    assert license_text.startswith(b"BSD 3-Clause License")
    members = _members(d["repaired"])
    meta = members["greenhook-%s.dist-info/METADATA" % version].decode()
    assert re.search(r"^Version: %s$" % re.escape(version), meta, re.M), meta[:400]
    assert re.search(r"^License-Expression: BSD-3-Clause$", meta, re.M), meta[:400]
    assert members["greenhook-%s.dist-info/licenses/LICENSE" % version] == license_text
    assert os.path.basename(d["sdist"]) == "greenhook-%s.tar.gz" % version
    with tarfile.open(d["sdist"]) as t:
        pkg_info = t.extractfile("greenhook-%s/PKG-INFO" % version).read().decode()
        assert t.extractfile("greenhook-%s/LICENSE" % version).read() == license_text
    assert re.search(r"^Version: %s$" % re.escape(version), pkg_info, re.M)
    # the version is written once: pyproject reads it, __init__ re-exports it
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        pyproject = f.read()
    assert 'dynamic = ["version"]' in pyproject and not re.search(r"^version\s*=\s*\"", pyproject, re.M)
    out = run([sys.executable, "-I", "-c", "import greenhook; print(greenhook.__version__)"])
    assert out.stdout.strip() == version


def test_manylinux_tag_is_the_lowest_auditwheel_allows():
    """The repaired wheel has the tag ``auditwheel show`` finds for the built wheel (the
    lowest the glibc symbols this toolchain links allow), and the README quotes it."""
    d = dists()
    m = re.search(r'consistent with the\s+following platform tag:\s+"([^"]+)"', d["show"])
    assert m, d["show"]
    tag = m.group(1)
    assert re.match(r"manylinux_2_\d+_x86_64$", tag), tag
    assert wheel_tag(d["repaired"]) == tag
    print("\n[packaging] wheel %s" % os.path.basename(d["repaired"]))
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert tag in readme, "README's install section does not give the wheel tag %s" % tag


def test_mypy_public_api_is_typed():
    """mypy passes on the package (pyproject's [tool.mypy]), and a client of the public API
    passes ``--strict`` (which refuses any call to an untyped function)."""
    with zipfile.ZipFile(dists()["repaired"]) as z:
        assert "greenhook/py.typed" in z.namelist()
    run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir=/dev/null"], cwd=ROOT, timeout=300)
    run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir=/dev/null", "--strict",
         "--follow-imports=silent", os.path.join("tests", "typecheck", "public_api.py")],
        cwd=ROOT, timeout=300)


def test_mypy_refuses_an_untyped_public_function(tmp_path):
    """The strict client check can fail: the same client against a copy of the package where
    one public function lost its annotations."""
    import shutil
    pkg = tmp_path / "src" / "greenhook"
    shutil.copytree(os.path.join(ROOT, "src", "greenhook"), str(pkg))
    api = pkg / "_api.py"
    text = api.read_text()
    assert "def reset_stats() -> None:" in text
    api.write_text(text.replace("def reset_stats() -> None:", "def reset_stats():"))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir=/dev/null", "--strict", "--follow-imports=silent",
         "--config-file", os.path.join(ROOT, "pyproject.toml"),
         os.path.join(ROOT, "tests", "typecheck", "public_api.py")],
        cwd=str(tmp_path), env=dict(os.environ, MYPYPATH=str(tmp_path / "src")),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'Call to untyped function "reset_stats"' in proc.stdout, proc.stdout


def test_sdist_installs_in_a_fresh_venv_and_verifies(tmp_path):
    """A user's ``pip install greenhook-X.tar.gz`` (compiler available), then
    ``greenhook verify``."""
    env_dir = tmp_path / "venv"
    venv.create(str(env_dir), with_pip=True)
    py = str(env_dir / "bin" / "python")
    run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", dists()["sdist"]])
    env = dict(os.environ, PYTHONPATH="")
    res = subprocess.run([py, "-m", "greenhook", "verify", "--hub", "builtin",
                          "--style", "send_recv", "--style", "poll_nonblock"],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = [ln for ln in res.stdout.splitlines() if ln.startswith("builtin")]
    assert len(rows) == 5 * 2 * 2 and all("PASS" in r for r in rows), res.stdout
    assert "20 passed, 0 failed" in res.stdout
    # it imports the venv's greenhook, built from the sdist: no source tree involved
    out = run([py, "-I", "-c", "import greenhook, hashlib; print(greenhook.__file__)"])
    assert out.stdout.strip().startswith(str(env_dir)), out.stdout
