"""Runner for ``tests/test_elf_robust.py``: audit, load and patch mutated copies of a library.

``python elf_mutants.py CASES.json WORKDIR`` reads a list of cases
``{"id", "source", "name", "lazy", "edits": [[file offset, hex bytes], ...]}``, and for each:

1. writes the mutant to ``WORKDIR/<name>`` (the source with the edits applied);
2. runs ``greenhook audit --json`` on it in this process (pure Python: it must return 0, or
   2 with one line on stderr);
3. forks a child that ``dlopen``s the mutant (``ctypes.CDLL``), then patches and unpatches it.
   The child reports each phase on a pipe before entering it, so a death inside ``dlopen``
   (the loader refusing by crashing or exiting) is told apart from a death in greenhook.

One ``GHCASE {json}`` line per case on stdout.  A fork per case keeps every dlopen in a fresh
copy of this process (nothing of one mutant is loaded when the next is), at a fraction of the
cost of a new interpreter.
"""
import contextlib
import ctypes
import io
import json
import os
import select
import signal
import sys
import threading
import time

import greenhook
from greenhook import audit
from greenhook.exceptions import GreenhookError

# Load greenhook's compiled core now, before any mutant: every later dlopen makes glibc read
# the soname of each object already loaded, and a corrupt DT_SONAME would crash the loader
# there, in the middle of patch_library, for no fault of greenhook's.
import greenhook._elf  # noqa: E402,F401
import greenhook._hooks  # noqa: E402,F401

CHILD_TIMEOUT = 20.0


def _write_mutant(case, path):
    with open(case["source"], "rb") as f:
        data = bytearray(f.read())
    for offset, hexbytes in case["edits"]:
        raw = bytes.fromhex(hexbytes)
        data[offset:offset + len(raw)] = raw
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)     # a new inode: nothing maps the old one


def _audit(path):
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = audit.main([path, "--json"])
    except BaseException as exc:        # noqa: BLE001 - what escapes is the finding
        return {"rc": None, "escaped": "%s: %s" % (type(exc).__name__, exc)}
    result = {"rc": rc, "stderr": err.getvalue()}
    if rc == 0:
        try:
            doc = json.loads(out.getvalue())
            result["schema"] = doc["schema"]
            result["status"] = doc["libraries"][0]["status"]
        except (ValueError, KeyError, IndexError) as exc:
            result["bad_json"] = str(exc)
    return result


def _child(case, path, wfd):
    def say(**kw):
        os.write(wfd, (json.dumps(kw) + "\n").encode())

    say(phase="load")
    try:
        ctypes.CDLL(path, mode=(os.RTLD_LAZY if case["lazy"] else os.RTLD_NOW))
    except OSError as exc:
        say(phase="done", outcome="refused", detail=str(exc)[:300])
        return
    say(phase="patch")
    try:
        rep = greenhook.patch_library(path)
    except GreenhookError as exc:
        say(phase="done", outcome="error", type=type(exc).__name__, detail=str(exc))
        return
    except BaseException as exc:        # noqa: BLE001
        say(phase="done", outcome="escaped", type=type(exc).__name__, detail=str(exc))
        return
    say(phase="unpatch")
    try:
        back = greenhook.unpatch_library(path)
    except BaseException as exc:        # noqa: BLE001
        say(phase="done", outcome="unpatch_failed", type=type(exc).__name__, detail=str(exc))
        return
    say(phase="done", outcome="patched", symbols=rep.symbols, same_report=back is rep)


def _run_child(case, path):
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:    # pragma: no cover - the child
        os.close(rfd)
        code = 0
        try:
            _child(case, path, wfd)
        except BaseException:           # noqa: BLE001
            code = 3
        os._exit(code)
    os.close(wfd)
    buf, deadline = b"", time.monotonic() + CHILD_TIMEOUT
    while True:
        left = deadline - time.monotonic()
        ready = select.select([rfd], [], [], max(left, 0))[0]
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(rfd)
            msgs = [json.loads(x) for x in buf.decode().splitlines()]
            return {"phase": msgs[-1]["phase"] if msgs else "start", "outcome": "hang"}
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        buf += chunk
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    msgs = [json.loads(x) for x in buf.decode().splitlines()]
    last = msgs[-1] if msgs else {"phase": "start"}
    result = dict(last)
    if os.WIFSIGNALED(status):
        result.update(outcome="signal", signal=os.WTERMSIG(status))
    elif os.WEXITSTATUS(status) != 0:
        result.update(outcome="exit", exit=os.WEXITSTATUS(status))
    return result


def main(cases_file, workdir):
    with open(cases_file) as f:
        cases = json.load(f)
    # fork() from a threaded process could deadlock the child: there must be none.
    assert threading.active_count() == 1, threading.enumerate()
    for case in cases:
        path = os.path.join(workdir, case["name"])
        _write_mutant(case, path)
        result = {"id": case["id"], "audit": _audit(path)}
        result.update(_run_child(case, path))
        sys.stdout.write("GHCASE " + json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
