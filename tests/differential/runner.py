"""Parent side: run the cases in child processes, one per mode, and compare the results.

A child runs its cases one after the other and prints ``START id`` / ``RESULT json`` lines.
When a case makes the child crash (a signal, an abort) or hang past the per-case limit, the
child is killed, the case is recorded as ``{"_outcome": "crash"|"hang", ...}`` and a new child
goes on with the cases after it.  The modes run side by side (the cases mostly wait).
"""
import json
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: a case may take this long in a child before the child is killed (the children's own
#: watchdog reports a parked greened call much sooner; this catches the rest)
CASE_LIMIT = 12.0
#: interpreter start, imports and patching
STARTUP_LIMIT = 60.0


def child_command(mode, ids_file):
    return [sys.executable, "-m", "differential.child", mode, "@" + ids_file]


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH")) if p)
    env["PYTHONFAULTHANDLER"] = "1"
    env.pop("LD_BIND_NOW", None)
    return env


def run_mode(mode, ids, case_limit=CASE_LIMIT):
    """``{case id: result}`` for every id, running ``mode`` children until all are done."""
    results = {}
    remaining = list(ids)
    restarts = 0
    while remaining:
        done, stop_at = _run_child(mode, remaining, case_limit)
        results.update(done)
        if stop_at is None:
            missing = [i for i in remaining if i not in results]
            for cid in missing:
                results[cid] = {"_outcome": "not run", "_why": "the child ended before it"}
            break
        restarts += 1
        remaining = remaining[remaining.index(stop_at) + 1:]
    return results


def _run_child(mode, ids, case_limit):
    """One child over ``ids``.  Returns ``(results, id it died on or None)``."""
    with tempfile.NamedTemporaryFile("w", suffix=".ids", delete=False) as f:
        f.write("\n".join(ids) + "\n")
        ids_file = f.name
    err = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(child_command(mode, ids_file), cwd=TESTS_DIR, env=child_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        results, current = {}, None
        deadline = time.monotonic() + STARTUP_LIMIT
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        pending = b""
        eof = False
        while not eof:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                proc.kill()
                proc.wait()
                if current is None:
                    raise RuntimeError("the %s child did not start within %s s:\n%s"
                                       % (mode, STARTUP_LIMIT, _tail(err)))
                results[current] = {"_outcome": "hang", "_limit": case_limit,
                                    "_stderr": _tail(err)}
                return results, current
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                eof = True
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = line.decode("utf-8", "replace")
                if text.startswith("START "):
                    current = text[6:]
                    deadline = time.monotonic() + case_limit
                elif text.startswith("RESULT "):
                    res = json.loads(text[7:])
                    results[res.pop("id")] = res
                    current = None
        rc = proc.wait()
        if current is not None:
            results[current] = {"_outcome": "crash", "_returncode": rc, "_stderr": _tail(err)}
            return results, current
        if rc != 0:
            raise RuntimeError("the %s child exited with status %s between cases:\n%s"
                               % (mode, rc, _tail(err)))
        return results, None
    finally:
        os.unlink(ids_file)
        err.close()


def _tail(f, n=4000):
    f.seek(0)
    data = f.read().decode("utf-8", "replace")
    return data[-n:]


def run_modes(modes, ids):
    """``{mode: {id: result}}``, the modes run side by side in their own children."""
    out, errors = {}, []

    def one(mode):
        try:
            out[mode] = run_mode(mode, ids)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
    threads = [threading.Thread(target=one, args=(m,)) for m in modes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


# --- comparison ----------------------------------------------------------------------------

def compared(result):
    """The part of a result that must be identical: keys not starting with ``_``, plus the
    outcome when the case did not finish."""
    out = {k: v for k, v in result.items() if not k.startswith("_")}
    if "_outcome" in result:
        out["outcome"] = result["_outcome"]
    if "_harness_error" in result:
        out["harness_error"] = result["_harness_error"]
    return out


def differences(plain, green):
    """``{key: (plain value, green value)}`` for every compared key that differs."""
    a, b = compared(plain), compared(green)
    return {k: (a.get(k, "<absent>"), b.get(k, "<absent>"))
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")}
