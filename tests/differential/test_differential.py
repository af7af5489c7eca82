"""Differential tests: every hooked call, unpatched vs greened, on both hubs.

Each case of the generated matrix (``cases.py``: socket families and types, pipes, eventfd,
regular files, /dev/null; flags; fd states; sizes; vector counts; invalid pointers and counts;
poll/select specifics; sleeps) runs in three kinds of child process: ``plain`` (the sample
library unpatched: what the kernel and libc do) and ``builtin`` / ``gevent`` (the library
patched, the call made from a greenlet on that hub).  What the C caller saw -- return value,
errno, every output byte, addresses, ``msghdr`` fields, revents / fd sets, what is left on the
fd or reached the peer, whether the call returned before or after the event it waited for --
must be identical.  A hang or a crash is a difference like any other.

The only accepted differences are listed in :data:`INTENTIONAL`, each with its reason; the
README's "Semantics" section documents the same list (a test checks that it mentions each).

Reproduce one case by hand (from ``tests/``)::

    python -m differential.child plain   'recv ep=udp4 state=queued flags=WAITALL size=3' --pretty
    python -m differential.child builtin 'recv ep=udp4 state=queued flags=WAITALL size=3' --pretty
"""
import os
import re

import pytest

from greenhook_test_support import skip_or_fail

from . import cases, runner

HUBS = ("builtin", "gevent")
CASES = cases.generate()
BY_ID = {c["id"]: c for c in CASES}
README = os.path.join(os.path.dirname(runner.TESTS_DIR), "README.md")
SYMBOLS = ("connect", "accept", "accept4", "read", "write", "readv", "writev", "recv", "send",
           "recvfrom", "sendto", "recvmsg", "sendmsg", "poll", "ppoll", "select", "pselect",
           "sleep", "usleep", "nanosleep", "clock_nanosleep")


# ==========================================================================================
# Intentional differences (the README's "Semantics" section lists the same, with reasons)
# ==========================================================================================

class Intentional:
    """An accepted difference.  ``applies(case, plain, green, plain_twin)`` says whether a
    difference found in ``case`` is this one (``plain_twin``: the plain result of the case's
    twin without a signal, see cases.twin_of); ``readme`` holds terms that one paragraph of
    the README's Semantics section must contain."""

    def __init__(self, name, reason, readme, applies):
        self.name, self.reason, self.readme, self.applies = name, reason, readme, applies


def _interrupted(plain):
    return plain.get("errno") == "EINTR" or plain.get("ret") == "EINTR"


def _eintr(case, plain, green, twin):
    """The real call was interrupted; the green call went on and returned exactly what the
    real call returns when no signal comes."""
    return (case.get("state") == "signal" and case.get("sigmask", "none") == "none"
            and _interrupted(plain) and twin is not None
            and set(runner.differences(twin, green)) <= {"sigalrm"})


def _sigmask_probes_only(case, plain, green, twin):
    """ppoll/pselect with a mask that unblocks a signal pending for the thread: the real call
    is interrupted at once; the green wait runs with the thread's own mask, and the signal is
    delivered (EINTR) by the final probe, at the end of the timeout."""
    return (case["call"] in ("ppoll", "pselect") and case.get("sigmask") == "empty"
            and plain.get("errno") == "EINTR" and green.get("errno") == "EINTR"
            and set(runner.differences(plain, green)) == {"waited_full"})


INTENTIONAL = [
    Intentional(
        "signal handlers do not interrupt a parked call (no EINTR)",
        "Python installs signal handlers without SA_RESTART, so a real blocking call returns "
        "-1/EINTR (sleep: early, clock_nanosleep: EINTR) when one runs.  A green call is parked "
        "on the hub, not in the kernel: the handler runs and the call goes on until its data, "
        "timeout or deadline, as if SA_RESTART were set.  Returning EINTR instead would make "
        "libraries that retry EINTR spin, and those that don't fail, for a signal they never saw.",
        ("signal handler", "EINTR"), _eintr),
    Intentional(
        "a ppoll/pselect signal mask applies to the probes only",
        "The mask is installed for the non-blocking probes, not while the greenlet is parked "
        "(the hub's thread keeps its own mask): a signal the mask would let through is "
        "delivered at the final probe, after the timeout, instead of at once.",
        ("signal mask", "ppoll", "pselect"), _sigmask_probes_only),
]


def intentional(case, plain, green, results):
    """The INTENTIONAL entry that explains ``green``'s difference from ``plain``, or None."""
    twin = cases.twin_of(case)
    plain_twin = results["plain"].get(cases.case_id(twin)) if twin else None
    for entry in INTENTIONAL:
        if entry.applies(case, plain, green, plain_twin):
            return entry
    return None


# ==========================================================================================
# Running the matrix
# ==========================================================================================

def _selected_ids(session):
    """The case ids the selected tests need: those of the selected test_same_as_kernel
    items (``-k`` / node ids), all of them when none is selected, plus their twins."""
    wanted = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if getattr(item, "module", None) is not None and item.module.__name__ == __name__ \
                and callspec is not None and "case" in callspec.params:
            wanted.add(callspec.params["case"])
    if not wanted:
        wanted = set(BY_ID)
    for cid in list(wanted):  # the EINTR entry compares with the twin's plain result
        twin = cases.twin_of(BY_ID[cid])
        if twin is not None:
            wanted.add(cases.case_id(twin))
    return [c["id"] for c in CASES if c["id"] in wanted]


@pytest.fixture(scope="module")
def results(request):
    """``{mode: {case id: result}}`` for the selected cases, plain and both hubs."""
    try:
        import gevent  # noqa: F401 - the gevent children need it
    except ImportError:
        skip_or_fail("gevent is not installed")
    ids = _selected_ids(request.session)
    return runner.run_modes(("plain",) + HUBS, ids)


def _case_param(c):
    return pytest.param(c["id"], id=c["id"])


def _show(value, limit=400):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


@pytest.mark.parametrize("hub", HUBS)
@pytest.mark.parametrize("case", [_case_param(c) for c in CASES])
def test_same_as_kernel(results, hub, case):
    plain, green = results["plain"][case], results[hub][case]
    assert "_outcome" not in plain and "_harness_error" not in plain, (
        "the unpatched run of this case did not finish (a case must end by itself "
        "unpatched):\n%s" % plain)
    assert "_harness_error" not in green, green["_harness_error"]
    diff = runner.differences(plain, green)
    if not diff:
        return
    if intentional(BY_ID[case], plain, green, results) is not None:
        return
    if "_outcome" in green:
        how = {"hang": "never returns (still parked %s s after its last event; hook counters "
                       "%s)" % (green.get("_hang_after"), green.get("_stats")),
               "crash": "crashes the process (exit status %s)" % green.get("_returncode")}
        lines = ["greened (%s hub): the call %s; the kernel returns:"
                 % (hub, how.get(green["_outcome"], green["_outcome"]))]
        lines += ["  %-16s %s" % (k, _show(v)) for k, v in runner.compared(plain).items()]
    elif set(diff) == {"errno"} and plain.get("ret") != -1:
        lines = ["greened (%s hub): the call succeeds like the kernel's, but leaves errno %s "
                 "where the real call leaves it alone (%s)"
                 % (hub, diff["errno"][1], diff["errno"][0])]
    else:
        lines = ["greened (%s hub) differs from the kernel:" % hub]
        for key, (p, g) in diff.items():
            lines.append("  %-16s kernel %s" % (key, _show(p)))
            lines.append("  %-16s green  %s" % ("", _show(g)))
    twin = cases.twin_of(BY_ID[case])
    if twin is not None:
        tdiff = runner.differences(results["plain"][cases.case_id(twin)], green)
        lines.append("compared with the kernel's answer when no signal comes (%r), the green "
                     "call differs in: %s" % (cases.case_id(twin), _show(tdiff)))
    if "_stderr" in green:
        lines.append("child stderr (tail):\n" + green["_stderr"][-1500:])
    lines.append("repro (from tests/): python -m differential.child {plain|%s} %r --pretty"
                 % (hub, case))
    pytest.fail("\n".join(lines), pytrace=False)


# ==========================================================================================
# The harness itself
# ==========================================================================================

def test_case_ids_are_stable_and_twins_exist():
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids))
    assert [c["id"] for c in cases.generate()] == ids
    for c in CASES:
        twin = cases.twin_of(c)
        if twin is not None:
            assert cases.case_id(twin) in BY_ID, c["id"]


def test_matrix_covers_every_hooked_call():
    calls = {c["call"] for c in CASES}
    assert calls == set(SYMBOLS), set(SYMBOLS) ^ calls


@pytest.mark.parametrize("hub", HUBS)
def test_greened_runs_went_through_the_hooks(results, hub):
    """The comparison means something only if the greened call reached its hook: every
    finished case counted a call to its symbol, none blocked the OS thread (the calls come
    from a spawned greenlet), and every hooked call parked on the hub in some case."""
    missed, blocked, parked = [], [], set()
    for cid, res in results[hub].items():
        st = res.get("_stats")
        if "_outcome" in res or "_harness_error" in res:
            continue
        if not st or st["calls"] < 1:
            missed.append(cid)
            continue
        if st["blocked"]:
            blocked.append(cid)
        if st["waits"]:
            parked.add(BY_ID[cid]["call"])
    assert not missed, "greened calls that never reached their hook: %s" % missed[:20]
    assert not blocked, "greened calls that blocked the OS thread: %s" % blocked[:20]
    selected = {BY_ID[cid]["call"] for cid in results[hub]}
    if selected == set(SYMBOLS):
        assert parked == set(SYMBOLS), "never parked: %s" % sorted(set(SYMBOLS) - parked)


def test_every_intentional_difference_is_observed(results):
    """Each INTENTIONAL entry must explain at least one real difference on each hub: an
    entry that no case needs any more is stale (remove it here and in the README)."""
    if len(results["plain"]) < len(CASES):
        skip_or_fail("only part of the matrix was selected (-k): run the whole module")
    for hub in HUBS:
        used = set()
        for cid, plain in results["plain"].items():
            green = results[hub][cid]
            if runner.differences(plain, green):
                entry = intentional(BY_ID[cid], plain, green, results)
                if entry is not None:
                    used.add(entry.name)
        stale = [e.name for e in INTENTIONAL if e.name not in used]
        assert not stale, (
            "%s hub: intentional differences that explain no difference any more: %s (stale: "
            "remove them here and in the README -- or the difference now comes with another "
            "one, see the failures of test_same_as_kernel)" % (hub, stale))


#: errors the kernel returns somewhere in the matrix, per call: a hook that reported one
#: errno (EAGAIN, say) in place of another would fail the cases that return them
DISTINGUISHED = {
    "read": {"EAGAIN", "EBADF", "ECONNRESET", "ENOTCONN", "ECONNREFUSED", "EFAULT", "EINVAL"},
    "recv": {"EAGAIN", "EBADF", "ECONNRESET", "ENOTCONN", "ECONNREFUSED", "EFAULT", "EINVAL",
             "ENOTSOCK"},
    "recvmsg": {"EAGAIN", "EBADF", "ECONNRESET", "ENOTCONN", "EMSGSIZE", "ENOTSOCK"},
    "send": {"EAGAIN", "EBADF", "ECONNRESET", "ENOTCONN", "EPIPE", "EMSGSIZE", "EDESTADDRREQ"},
    "sendmsg": {"EAGAIN", "EBADF", "ECONNRESET", "EPIPE", "EFAULT", "EISCONN", "EINVAL"},
    "connect": {"ECONNREFUSED", "EINPROGRESS", "EISCONN", "EAGAIN", "ENOENT", "EBADF"},
    "accept": {"EAGAIN", "EBADF", "EINVAL", "ENOTSOCK"},
    "poll": {"EFAULT", "EINVAL"},
    "select": {"EBADF", "EINVAL"},
}


def test_matrix_tells_errors_apart(results):
    """The kernel's answers in the matrix include each error above (checked on the plain
    results, so that pruning the matrix cannot silently drop them)."""
    if len(results["plain"]) < len(CASES):
        skip_or_fail("only part of the matrix was selected (-k): run the whole module")
    for call, need in DISTINGUISHED.items():
        seen = {res.get("errno") for cid, res in results["plain"].items()
                if BY_ID[cid]["call"] == call and res.get("ret") == -1}
        assert need <= seen, "%s: the matrix never gets %s from the kernel" % (call, need - seen)


def test_readme_lists_the_intentional_differences():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^## Semantics.*?(?=^## )", text, re.S | re.M)
    assert m, "README.md has no '## Semantics' section"
    paragraphs = re.split(r"\n\s*\n|\n(?=\d+\. |- )", m.group(0))
    missing = [e.name for e in INTENTIONAL
               if not any(all(t in p for t in e.readme) for p in paragraphs)]
    assert not missing, ("README 'Semantics' does not document these intentional "
                         "differences (one paragraph must name: %s): %s"
                         % ({e.name: e.readme for e in INTENTIONAL}, missing))
