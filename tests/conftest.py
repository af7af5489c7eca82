"""Shared test helpers, importable from test modules as
``from greenhook_test_support import ...`` (this conftest registers itself under that name:
``conftest`` alone is ambiguous once several test directories have one).

* :func:`skip_or_fail` -- skip with a reason, but FAIL under ``CI=true`` (nothing may be
  skipped in CI).  The hooks below enforce the same rule for every other way to skip
  (``pytest.skip``, ``skipif``/``skip`` marks, ``pytest.importorskip``, module-level skips,
  xfail): under ``CI=true`` each becomes a failure that carries the skip reason.
* :func:`run_scenario` -- run Python code (or a script) in a fresh interpreter, bounded in
  time.  Every test that patches a GOT must do its patching in such a subprocess: patches
  are process-wide and would leak into every later test.
* :func:`run_checked` -- the same, insisting on success and a clean stderr; returns what the
  scenario reported (``tests/scenarios/ghscen.py:report``).
* :func:`build_mismatch` -- None when an interpreter's greenhook was built from this checkout
  as it is now (its build stamp, see ``scripts/source_digest.py``), else what differs.  The
  session refuses to start on a stale build.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")

# Test modules import the helpers through this name (see the module docstring).
sys.modules.setdefault("greenhook_test_support", sys.modules[__name__])

#: where scenario scripts and their helper module live
SCENARIO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios")


CI_NOTE = "CI=true: nothing may be skipped"


def skip_or_fail(reason, allow_module_level=False):
    """Skip the current test (or, with ``allow_module_level``, the whole module) with
    ``reason``; under ``CI=true`` fail it instead."""
    if IN_CI:
        pytest.fail("%s (%s)" % (reason, CI_NOTE), pytrace=False)
    pytest.skip(reason, allow_module_level=allow_module_level)


# --- CI=true: a skip is a failure, however it was spelled ---------------------------------

def _skip_reason(longrepr):
    """The reason of a skipped report (``longrepr`` is ``(path, lineno, reason)``)."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, lineno, reason = longrepr
        if reason.startswith("Skipped: "):
            reason = reason[len("Skipped: "):]
        return "%s (at %s:%s)" % (reason, path, lineno)
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Under ``CI=true`` a skipped or xfailed test (setup, call or teardown) is reported as
    failed, with the reason."""
    outcome = yield
    rep = outcome.get_result()
    if not IN_CI or not rep.skipped:
        return
    if hasattr(rep, "wasxfail"):
        what = "xfailed: %s" % (rep.wasxfail or "marked xfail")
        del rep.wasxfail
    else:
        what = "skipped: %s" % _skip_reason(rep.longrepr)
    rep.outcome = "failed"
    rep.longrepr = "%s [%s] (%s)" % (item.nodeid, what, CI_NOTE)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_make_collect_report(collector):
    """Under ``CI=true`` a module or class that skips itself at collection time
    (``pytest.skip(..., allow_module_level=True)``, a module-level ``pytest.importorskip``)
    is a collection error, with the reason."""
    outcome = yield
    rep = outcome.get_result()
    if IN_CI and rep.outcome == "skipped":
        rep.outcome = "failed"
        rep.longrepr = "%s [skipped at collection: %s] (%s)" % (
            collector.nodeid, _skip_reason(rep.longrepr), CI_NOTE)


@pytest.fixture(params=["builtin", "gevent"])
def hub(request):
    """Each hub in turn ("builtin", "gevent"); gevent missing fails under CI=true."""
    if request.param == "gevent":
        try:
            import gevent  # noqa: F401
        except ImportError:
            skip_or_fail("gevent is not installed")
    return request.param


def in_hub_thread(fn, timeout=20):
    """Run ``fn()`` in a new OS thread (so it gets its own built-in hub), bounded by
    ``timeout``; destroy that hub after.  Returns ``fn``'s value or raises its exception."""
    import threading

    from greenhook import hub as builtin_hub

    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: B902 - handed back to the test
            out["error"] = exc
        finally:
            hub = builtin_hub.get_hub_if_exists()
            if hub is not None:
                hub.destroy()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "test body did not finish in %ss" % timeout
    if "error" in out:
        raise out["error"]
    return out.get("value")


def run_scenario(code_or_path, timeout=60, env=None, args=()):
    """Run ``code_or_path`` (Python source, or the path of a ``.py`` file) in a new process
    with this interpreter; return ``(returncode, stdout, stderr)``.

    ``env``: extra environment variables.  The child runs in :data:`SCENARIO_DIR` with that
    directory on ``sys.path`` (so scenarios can ``import ghscen``) -- never the source tree,
    so it imports the installed greenhook.  A child still running after ``timeout`` seconds
    is killed and the test fails with whatever it printed.
    """
    if os.path.isfile(code_or_path):
        cmd = [sys.executable, os.path.abspath(code_or_path)]
    else:
        cmd = [sys.executable, "-c", code_or_path]
    cmd += list(args)
    child_env = dict(os.environ)
    child_env.pop("LD_BIND_NOW", None)  # the lazy-binding tests need lazy binding
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (SCENARIO_DIR, os.environ.get("PYTHONPATH")) if p)
    child_env["PYTHONFAULTHANDLER"] = "1"  # a crash prints the stack
    child_env.update(env or {})
    try:
        proc = subprocess.run(cmd, cwd=SCENARIO_DIR, env=child_env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        pytest.fail("scenario still running after %s s (hang?)\n--- stdout\n%s\n--- stderr\n%s"
                    % (timeout, out or "", err or ""), pytrace=False)
    return proc.returncode, proc.stdout, proc.stderr


def run_checked(code_or_path, timeout=60, env=None, args=()):
    """:func:`run_scenario` that insists on exit status 0 and a clean stderr (no traceback,
    no "Exception ignored"); returns the values the scenario handed back with
    ``ghscen.report(**values)`` (``GHRESULT {json}`` lines on stdout), merged."""
    rc, out, err = run_scenario(code_or_path, timeout=timeout, env=env, args=args)
    where = "--- stdout\n%s\n--- stderr\n%s" % (out, err)
    assert rc == 0, "scenario exited with status %s\n%s" % (rc, where)
    assert "Traceback" not in err and "Exception ignored" not in err, where
    return scenario_results(out)


def scenario_results(stdout):
    """The values a scenario handed back (``GHRESULT {json}`` lines: the one result protocol
    of every scenario, ``ghscen.report``), merged."""
    results = {}
    for line in stdout.splitlines():
        if line.startswith("GHRESULT "):
            results.update(json.loads(line[len("GHRESULT "):]))
    return results


# --- the build under test is this checkout's ------------------------------------------

#: the checkout
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DIGEST_SCRIPT = os.path.join(ROOT, "scripts", "source_digest.py")


def _source_digest():
    spec = importlib.util.spec_from_file_location("greenhook_source_digest", _DIGEST_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_mismatch(python=None):
    """None when the greenhook that ``python`` (default: this interpreter) imports was built
    from this checkout as it is now; else a message saying what differs and how to rebuild."""
    return _source_digest().mismatch(python, ROOT)


def pytest_sessionstart(session):
    """Refuse to test a stale build: the installed greenhook's build stamp must match the
    checkout's sources.  (Skipped when this file is not in a checkout, e.g. copied into a
    pytester session.)"""
    if not os.path.isfile(_DIGEST_SCRIPT) or not os.path.isfile(os.path.join(ROOT, "setup.py")):
        return
    problem = build_mismatch()
    if problem:
        pytest.exit("build check: " + problem, returncode=pytest.ExitCode.USAGE_ERROR)
