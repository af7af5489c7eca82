"""Run a driver's own test suite (from its sdist) in this interpreter, plain or greened.

    python upstream_runner.py '<json args>'

args:
  framework   "unittest" (``target``: a dotted name whose tests to load, e.g.
              "tests.test_suite") or "pytest" (``target``: a list of paths/args)
  root        the unpacked sdist: the working directory and first on sys.path
  mode        "plain" (no greenhook at all), or "gevent" / "builtin": import ``import_name``,
              ``greenhook.patch_module(module)``, ``greenhook.use(mode)``, and run the whole
              suite inside a greenlet of that hub, so every driver call that would block parks
              that greenlet and goes through the hub
  module, import_name   the extension to patch and the driver package to import first
  out         a file to append JSON lines to: {"start": id} before each test, then
              {"id", "outcome", "seconds", "detail"} after it (outcome: passed, failed, error,
              skipped, xfailed, xpassed); {"done": true, "stats": ...} at the end.  Written
              and flushed line by line, so a hang or a crash leaves what ran before it.
  exclude     test ids not to run (already recorded by an earlier, interrupted run)
  test_timeout  seconds one test may take: then {"id", "outcome": "hang"} is written, the
              Python stacks are dumped to stderr and the process exits with status 3 (a plain
              thread watches, so this works only while the main thread lets the GIL go; the
              caller's own timeout is the backstop)

Exit status 0 once the suite ran to the end, whatever the tests' outcomes.
"""
import faulthandler
import json
import os
import sys
import threading
import time
import traceback


class Recorder:
    def __init__(self, path, test_timeout):
        self.f = open(path, "a")
        self.lock = threading.Lock()
        self.current = None
        self.started = None
        self.test_timeout = test_timeout
        t = threading.Thread(target=self._watch, name="upstream-watchdog", daemon=True)
        t.start()

    def write(self, rec):
        with self.lock:
            self.f.write(json.dumps(rec) + "\n")
            self.f.flush()

    def start(self, tid):
        self.write({"start": tid})
        self.current, self.started = tid, time.monotonic()

    def finish(self, tid, outcome, detail=None):
        seconds = round(time.monotonic() - self.started, 3) if self.started else None
        self.current = self.started = None
        rec = {"id": tid, "outcome": outcome, "seconds": seconds}
        if detail:
            rec["detail"] = detail[-1500:]
        self.write(rec)

    def _watch(self):
        while True:
            time.sleep(0.5)
            tid, started = self.current, self.started
            if tid is not None and started is not None \
                    and time.monotonic() - started > self.test_timeout:
                self.write({"id": tid, "outcome": "hang", "seconds": self.test_timeout})
                sys.stderr.write("upstream_runner: %s still running after %s s\n"
                                 % (tid, self.test_timeout))
                faulthandler.dump_traceback(all_threads=True)
                os._exit(3)


def _short(err):
    """The last lines of a formatted (type, value, tb)."""
    if err is None:
        return None
    text = "".join(traceback.format_exception(*err))
    return text[-1500:]


# ------------------------------------------------------------------------------ unittest


def run_unittest(a, rec):
    import unittest

    loader = unittest.TestLoader()
    target = a["target"]
    obj = loader.loadTestsFromName(target)
    if callable(obj) and not isinstance(obj, unittest.TestSuite):
        obj = obj()

    def flat(suite):
        for t in suite:
            if isinstance(t, unittest.TestSuite):
                yield from flat(t)
            else:
                yield t

    exclude = set(a.get("exclude") or ())
    tests = [t for t in flat(obj) if t.id() not in exclude]

    class Result(unittest.TestResult):
        def startTest(self, test):
            super().startTest(test)
            self._outcome_ = ("passed", None)
            rec.start(test.id())

        def _set(self, outcome, detail=None):
            order = ["passed", "skipped", "xfailed", "xpassed", "failed", "error"]
            if order.index(outcome) >= order.index(self._outcome_[0]):
                self._outcome_ = (outcome, detail)

        def addError(self, test, err):
            super().addError(test, err)
            if isinstance(test, unittest.TestCase):
                self._set("error", _short(err))
            else:   # a class or module fixture (_ErrorHolder): its own line
                rec.write({"id": test.id(), "outcome": "error", "detail": _short(err)})

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._set("failed", _short(err))

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            if isinstance(test, unittest.TestCase):
                self._set("skipped", reason)
            else:
                rec.write({"id": test.id(), "outcome": "skipped", "detail": reason})

        def addExpectedFailure(self, test, err):
            super().addExpectedFailure(test, err)
            self._set("xfailed")

        def addUnexpectedSuccess(self, test):
            super().addUnexpectedSuccess(test)
            self._set("xpassed")

        def addSubTest(self, test, subtest, err):
            super().addSubTest(test, subtest, err)
            if err is not None:
                failed = issubclass(err[0], test.failureException)
                self._set("failed" if failed else "error", _short(err))

        def stopTest(self, test):
            super().stopTest(test)
            rec.finish(test.id(), *self._outcome_)

    result = Result()
    unittest.TestSuite(tests).run(result)
    return {"ran": result.testsRun}


# ------------------------------------------------------------------------------ pytest


class _PytestRecorder:
    def __init__(self, rec, exclude):
        self.rec, self.exclude = rec, set(exclude)
        self.outcome = {}

    def pytest_collection_modifyitems(self, session, config, items):
        keep = [it for it in items if it.nodeid not in self.exclude]
        dropped = [it for it in items if it.nodeid in self.exclude]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep

    def pytest_collectreport(self, report):
        # a test module that fails to import, or skips itself as a whole: one id for it
        if report.failed or report.skipped:
            self.rec.write({"id": report.nodeid,
                            "outcome": "error" if report.failed else "skipped",
                            "detail": str(report.longrepr)[-1500:]})

    def pytest_runtest_logstart(self, nodeid, location):
        self.outcome[nodeid] = ("passed", None)
        self.rec.start(nodeid)

    def pytest_runtest_logreport(self, report):
        cur = self.outcome.get(report.nodeid, ("passed", None))
        if hasattr(report, "wasxfail"):
            new = ("xfailed", None) if report.skipped else ("xpassed", None)
        elif report.skipped:
            new = ("skipped", str(report.longrepr[-1]) if isinstance(report.longrepr, tuple)
                   else str(report.longrepr))
        elif report.failed:
            new = ("failed" if report.when == "call" else "error", str(report.longrepr))
        else:
            return
        order = ["passed", "skipped", "xfailed", "xpassed", "failed", "error"]
        if order.index(new[0]) >= order.index(cur[0]):
            self.outcome[report.nodeid] = new

    def pytest_runtest_logfinish(self, nodeid, location):
        self.rec.finish(nodeid, *self.outcome.pop(nodeid, ("passed", None)))


def run_pytest(a, rec):
    import pytest

    ini = a.get("ini")
    args = ["-q", "-p", "no:cacheprovider", "-p", "no:greenhook", "--rootdir", a["root"]]
    if ini:
        args += ["-c", ini]
    args += list(a["target"])
    code = pytest.main(args, plugins=[_PytestRecorder(rec, a.get("exclude") or ())])
    return {"pytest_exit": int(code)}


# ------------------------------------------------------------------------------ main


def main():
    a = json.loads(sys.argv[1])
    os.chdir(a["root"])
    sys.path[0] = a["root"]     # not this directory: its scenario modules would shadow names
    rec = Recorder(a["out"], a.get("test_timeout", 60))
    run = run_unittest if a["framework"] == "unittest" else run_pytest
    mode = a.get("mode", "plain")
    info = {"mode": mode}
    t0 = time.monotonic()
    driver = __import__(a["import_name"])
    info["driver"] = driver.__file__
    if mode == "plain":
        info.update(run(a, rec))
    else:
        import greenhook
        reports = greenhook.patch_module(a["module"])
        greenhook.use(mode)
        info["patched"] = [r.library for r in reports]
        if mode == "gevent":
            import gevent
            g = gevent.spawn(run, a, rec)
            g.join()
            if not g.successful():
                raise g.exception
            info.update(g.value)
        else:
            from greenhook import hub
            g = hub.spawn(run, a, rec)
            hub.joinall([g])
            info.update(g.get())
        st = greenhook.stats()
        info["green_waits"] = sum(v.get("green", 0) for v in st.values())
        info["blocked"] = sum(v.get("blocked", 0) for v in st.values())
    info["seconds"] = round(time.monotonic() - t0, 2)
    rec.write({"done": True, "info": info})


if __name__ == "__main__":
    main()
