"""Under ``CI=true`` nothing may be skipped: the hooks in tests/conftest.py turn every skip
into a failure that carries the skip reason.  Proved on tiny pytest sessions run in a
subprocess with this very conftest, once with ``CI=true`` and once without ``CI``.
"""
import os

import pytest

pytest_plugins = ["pytester"]

CONFTEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conftest.py")

# Every way a test function can end up skipped, next to one that passes.
FUNCTIONS = '''
import pytest
from greenhook_test_support import skip_or_fail

def test_calls_skip():
    pytest.skip("no frobnicator here")

@pytest.mark.skipif(True, reason="marked away")
def test_marked_skipif():
    pass

def test_importorskip():
    pytest.importorskip("no_such_module_for_greenhook")

def test_skip_or_fail():
    skip_or_fail("the nice spelling")

@pytest.mark.xfail(reason="known to be broken")
def test_xfail():
    assert False

def test_passes():
    pass
'''

MODULE_SKIP = '''
import pytest
pytest.skip("this whole module is elsewhere", allow_module_level=True)

def test_never_collected():
    pass
'''

MODULE_IMPORTORSKIP = '''
import pytest
pytest.importorskip("no_such_module_at_import_time")

def test_never_collected():
    pass
'''

PASSING = """
def test_passes():
    pass
"""

TIMEOUT = 120


@pytest.fixture
def session(pytester):
    with open(CONFTEST) as f:
        pytester.makeconftest(f.read())
    pytester.makepyfile(test_functions=FUNCTIONS, test_module_skip=MODULE_SKIP,
                        test_module_importorskip=MODULE_IMPORTORSKIP, test_passing=PASSING)
    return pytester


def run(session, monkeypatch, ci, *files):
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    return session.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *files,
                                        timeout=TIMEOUT)


def test_ci_turns_every_skip_of_a_test_into_a_failure(session, monkeypatch):
    result = run(session, monkeypatch, True, "test_functions.py")
    # skipif is evaluated in setup: a failed setup is an error
    result.assert_outcomes(passed=1, failed=4, errors=1)
    out = result.stdout.str()
    for reason in ("skipped: no frobnicator here", "skipped: marked away",
                   "skipped: could not import 'no_such_module_for_greenhook'",
                   "xfailed: known to be broken", "the nice spelling"):
        assert reason in out, (reason, out)
    assert out.count("CI=true: nothing may be skipped") >= 5, out
    assert result.ret != 0


def test_without_ci_the_same_tests_skip(session, monkeypatch):
    result = run(session, monkeypatch, False, "test_functions.py")
    result.assert_outcomes(passed=1, skipped=4, xfailed=1)
    assert result.ret == 0
    assert "CI=true" not in result.stdout.str()


def test_ci_turns_a_collection_time_skip_into_an_error(session, monkeypatch):
    result = run(session, monkeypatch, True, "test_module_skip.py",
                 "test_module_importorskip.py", "test_passing.py")
    result.assert_outcomes(errors=2)   # collection errors stop the session before any test
    out = result.stdout.str()
    assert "skipped at collection: this whole module is elsewhere" in out, out
    assert "skipped at collection: could not import 'no_such_module_at_import_time'" in out, out
    assert result.ret != 0


def test_without_ci_a_collection_time_skip_skips(session, monkeypatch):
    result = run(session, monkeypatch, False, "test_module_skip.py",
                 "test_module_importorskip.py", "test_passing.py")
    result.assert_outcomes(skipped=2, passed=1)
    assert result.ret == 0


# --- the build under test must be the checkout's -------------------------------------------

def test_this_session_tests_the_checkouts_build():
    """The session started (pytest_sessionstart checked the stamp); check it again here."""
    from greenhook_test_support import build_mismatch

    assert build_mismatch() is None


def test_a_changed_source_makes_the_build_stale(tmp_path):
    """A copy of the checkout's sources hashes like the checkout; change one byte of one
    source and the installed build is reported stale, with what to do."""
    from greenhook_test_support import ROOT, _source_digest

    digest = _source_digest()
    files = digest.source_files(ROOT)
    assert "cython/greenhook/_hooks.pyx" in files and "setup.py" in files, files
    assert "src/greenhook/_api.py" in files and "cext_samples/ghsample.c" in files, files
    for rel in files:
        dst = tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(os.path.join(ROOT, rel), "rb") as f:
            dst.write_bytes(f.read())
    assert digest.digest(str(tmp_path)) == digest.digest(ROOT)
    assert digest.mismatch(None, str(tmp_path)) is None
    (tmp_path / "cython" / "greenhook" / "_hooks.pyx").write_bytes(
        (tmp_path / "cython" / "greenhook" / "_hooks.pyx").read_bytes() + b"\n")
    problem = digest.mismatch(None, str(tmp_path))
    assert problem is not None and "is a stale build" in problem, problem
    assert "pip install --no-deps" in problem, problem
