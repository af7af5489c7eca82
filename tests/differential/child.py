"""Subprocess entry point: run cases in one mode and print one result line per case.

    python -m differential.child MODE [CASE-ID ...]     (from the tests/ directory)

MODE ``plain``: ``libghsample_now.so`` is loaded, never patched, calls are made from the main
thread with no hub.  MODE ``builtin`` / ``gevent``: the library is patched
(``greenhook.patch_library``) and every case runs in a greenlet spawned on that hub.

Case ids come from the command line; ``@FILE`` reads them from a file, one a line (``@-``, or
no id at all: stdin).  Output: for each
case ``START <id>`` before it runs, then ``RESULT <json>`` -- the parent notices a hang or a
crash by the missing RESULT line.  With ``--pretty`` the results are printed as indented JSON
(handy for a repro by hand).
"""
import json
import os
import sys
import traceback

from greenhook import samples

from . import cases, endpoints, probes

VARIANT = "now"


class HubAdapter:
    """spawn / spawn_later / sleep / join for the hub named ``name``."""

    def __init__(self, name):
        if name == "gevent":
            import gevent
            self.spawn, self.sleep = gevent.spawn, gevent.sleep
            self.spawn_later = gevent.spawn_later
            self._joinall = gevent.joinall
        else:
            from greenhook import hub
            self.spawn, self.sleep, self._joinall = hub.spawn, hub.sleep, hub.joinall

            def spawn_later(seconds, fn, *args):
                def later():
                    hub.sleep(seconds)
                    fn(*args)
                return hub.spawn(later)
            self.spawn_later = spawn_later

    def run(self, fn, *args):
        """``fn(*args)`` in a new greenlet; wait for it from the main greenlet."""
        box = []

        def body():
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                box.append((False, exc))
        g = self.spawn(body)
        self._joinall([g])
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def run_case(self, env, params):
        """Run a case in a new greenlet.  A case whose call is still parked ``allowance`` s
        after its last helper acted will never return: it is killed and reported as a hang
        (cheaper than the parent's process timeout, and the run goes on)."""
        box = []

        def body():
            try:
                box.append((True, probes.run_case(env, params)))
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                box.append((False, exc))
        limit = cases.allowance(params)
        g = self.spawn(body)
        while not box:
            self._joinall([g], timeout=0.05)
            quiet = env.quiet_since()
            if not box and quiet is not None and endpoints.now() - quiet > limit:
                g.kill(block=True, timeout=5)
                return {"_outcome": "hang", "_hang_after": limit}
        ok, value = box[0]
        if not ok:
            raise value
        return value


def setup(mode):
    """Returns ``(Env, greenhook or None)``."""
    # Grow the fd table past CLOSED_FD (it never shrinks): select() ignores fds beyond
    # the table, and the EBADF cases need the closed fd to be inside it.
    os.dup2(1, endpoints.CLOSED_FD + 9)
    os.close(endpoints.CLOSED_FD + 9)
    lib = samples.ctypes_lib(VARIANT)
    if mode == "plain":
        return endpoints.Env(mode, lib), None
    import greenhook
    greenhook.use(mode)
    greenhook.patch_library(samples.library_path(VARIANT))
    hub = HubAdapter(mode)
    env = endpoints.Env(mode, lib, hub)
    # Warm the hub up (its first wait creates the loop) so that no case pays for it.
    hub.run(hub.sleep, 0.001)
    return env, greenhook


def run_one(env, gh, params):
    if gh is None:
        return probes.run_case(env, params)
    gh.reset_stats()
    res = env.hub.run_case(env, params)
    st = gh.stats().get(params["call"])
    res["_stats"] = st
    return res


def main(argv):
    pretty = "--pretty" in argv
    argv = [a for a in argv if a != "--pretty"]
    mode, ids = argv[0], []
    for arg in argv[1:] or ["@-"]:
        if arg.startswith("@"):  # a file of ids, one a line ("@-": stdin)
            with (sys.stdin if arg == "@-" else open(arg[1:])) as f:
                ids.extend(line.strip() for line in f if line.strip())
        else:
            ids.append(arg)
    table = cases.by_id()
    env, gh = setup(mode)
    out = sys.stdout
    for cid in ids:
        out.write("START %s\n" % cid)
        out.flush()
        try:
            res = run_one(env, gh, table[cid])
        except BaseException:  # noqa: BLE001 - the case is reported broken, the run goes on
            res = {"_harness_error": traceback.format_exc()}
        res["id"] = cid
        if pretty:
            out.write(json.dumps(res, indent=1, sort_keys=True) + "\n")
        out.write("RESULT %s\n" % json.dumps(res, sort_keys=True))
        out.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
