"""Issue 13: per-fd state and watchers kept across waits must never outlive the file they were
made for.  Each case closes an fd greenhook waited on and reopens its number behind greenhook's
back (Python's own dup2/close), then waits on it again through the patched sample library, on
both hubs.  Scenario bodies: tests/scenarios/fdstate.py."""
import errno
import os

from greenhook import _hooks, _symbols
from greenhook_test_support import SCENARIO_DIR, run_checked

SCRIPT = os.path.join(SCENARIO_DIR, "fdstate.py")
GREEN_TICKS = 5
POLLIN = 0x1


def run(case, hub):
    return run_checked(SCRIPT, timeout=30, args=[case, hub])


def assert_primed(prime):
    (res, err, data), elapsed, ticks = prime
    assert (res, err, data) == (5, 0, "prime"), prime
    assert 0.03 <= elapsed <= 0.5 and ticks >= 2, prime


def test_reused_as_a_pipe(hub):
    r = run("pipe", hub)
    assert_primed(r["prime"])
    assert r["recv"][:2] == [-1, errno.ENOTSOCK], r
    assert r["read"] == [4, 0, "pipe"], r
    (res, err, revents), elapsed, ticks = r["poll"]
    assert (res, err, revents) == (1, 0, [0x1]), r
    assert 0.08 <= elapsed <= 0.6 and ticks >= GREEN_TICKS, r


def test_reused_as_a_nonblocking_socket_returns_eagain_at_once(hub):
    r = run("nonblocking_socket", hub)
    assert_primed(r["prime"])
    (res, err, data), elapsed, _ = r["recv"]
    assert (res, err) == (-1, errno.EAGAIN) and elapsed < 0.05, r
    assert r["after"] == [3, 0, "new"], r


def test_reused_with_a_shorter_rcvtimeo_times_out_on_the_new_one(hub):
    r = run("shorter_timeout", hub)
    assert_primed(r["prime"])
    (res, err, data), elapsed, ticks = r["recv"]
    assert (res, err) == (-1, errno.EAGAIN), r
    assert 0.18 <= elapsed <= 0.6 and ticks >= GREEN_TICKS, r


def test_reused_without_rcvtimeo_waits_for_data(hub):
    r = run("no_timeout_any_more", hub)
    assert_primed(r["prime"])
    (res, err, data), elapsed, ticks = r["recv"]
    assert (res, err, data) == (4, 0, "late"), r
    assert 0.45 <= elapsed <= 1.2 and ticks >= GREEN_TICKS, r


def test_reused_between_two_waits_with_the_old_file_alive(hub):
    # The old file stays open (a dup) and becomes readable: a registration kept for it must
    # neither wake the wait with its data nor hide the new file's.
    r = run("reuse_without_a_loop_turn", hub)
    assert r["first"] == [3, 0, "one"], r
    assert r["second"] == [3, 0, "two"], r
    assert 0.2 <= r["elapsed"] <= 0.8, r
    assert r["old"] == "old file", r


def test_reused_between_two_waits_with_the_old_file_released(hub):
    # A watcher/registration kept from the first wait names a file the kernel has dropped:
    # without re-registering, the second wait would never wake.
    r = run("reuse_released_without_a_loop_turn", hub)
    assert r["first"] == [3, 0, "one"], r
    assert r["second"] == [3, 0, "two"], r
    assert 0.2 <= r["elapsed"] <= 0.8, r
    assert r["cpu"] < 0.5 * r["elapsed"], r     # parked, not spinning


def test_changes_on_the_same_socket_behind_our_back_are_seen_by_the_next_wait(hub):
    # O_NONBLOCK and SO_RCVTIMEO changed by unpatched code (ctypes -> libc, Python's socket)
    # between two waits on one socket whose table entry is warm: every wait acts as the kernel.
    r = run("unseen_changes", hub)
    for p in r["prime"]:
        assert_primed(p)
    assert r["cache"]["hits"] >= 2, r      # the 2nd and 3rd waits reused the kept watcher
    assert r["fcntl"] == 0 and r["ioctl"] == 0 and r["setsockopt"] == 0, r
    for key in ("nonblocking", "fionbio", "python_nonblocking"):
        (res, err, _), elapsed, _ = r[key]
        assert (res, err) == (-1, errno.EAGAIN) and elapsed < 0.05, (key, r)
    assert_primed(r["blocking_again"])
    assert_primed(r["python_blocking"])
    (res, err, _), elapsed, ticks = r["timeout"]
    assert (res, err) == (-1, errno.EAGAIN), r
    assert 0.18 <= elapsed <= 0.6 and ticks >= GREEN_TICKS, r
    (res, err, data), elapsed, ticks = r["no_timeout"]
    assert (res, err, data) == (4, 0, "late"), r
    assert 0.45 <= elapsed <= 1.2 and ticks >= GREEN_TICKS, r
    assert_primed(r["long_timeout"])
    (res, err, _), elapsed, ticks = r["shorter_timeout"]
    assert (res, err) == (-1, errno.EAGAIN), r
    assert 0.18 <= elapsed <= 0.6 and ticks >= GREEN_TICKS, r


def test_poll_on_one_socket_keeps_its_watcher_and_sees_the_reused_number(hub):
    r = run("poll_reuse", hub)
    for (res, err, revents), elapsed, ticks in r["prime"]:
        assert (res, err, revents) == (1, 0, [POLLIN]), r
        assert 0.03 <= elapsed <= 0.5 and ticks >= 2, r
    assert r["hits"] >= 2, r        # the 2nd and 3rd poll waits reused the kept watcher
    (res, err, revents), elapsed, ticks = r["alive"]
    assert (res, err, revents) == (1, 0, [POLLIN]), r
    assert 0.28 <= elapsed <= 0.3 * 2 + 0.2 and ticks >= GREEN_TICKS, r    # not the old file's
    assert r["old"] == "old file", r
    (res, err, revents), elapsed, ticks = r["released"]
    assert (res, err, revents) == (1, 0, [POLLIN]), r
    assert 0.18 <= elapsed <= 0.2 * 2 + 0.2 and ticks >= GREEN_TICKS, r


def test_close_and_dup2_through_the_hooks(hub):
    r = run("closed_through_hooks", hub)
    assert_primed(r["prime"])
    assert r["close"] == 0 and r["dup2"] is True, r
    (res, err, _), elapsed, _ = r["recv"]
    assert (res, err) == (-1, errno.EAGAIN) and elapsed < 0.05, r


def test_state_table_and_entry_points_agree():
    # The state hooks are rows of HOOKED (one declaration per hooked symbol), set apart by
    # _symbols.STATE: no counters, not greened, reachable through hook_table() like the rest.
    funcs = _hooks.state_functions()
    assert set(_symbols.STATE) == set(funcs), set(_symbols.STATE) ^ set(funcs)
    assert not set(_symbols.FDSTATE) & set(_symbols.GREENED)
    assert not set(_symbols.STATE) & set(_symbols.CANONICAL)
    table = _hooks.state_hook_table()
    assert {"close", "socket", "dup2"} <= set(table), table
    full = _hooks.hook_table()
    for name, entry, what in _symbols.HOOKED:
        if entry in _symbols.STATE:
            assert what and (name not in table or table[name] == funcs[entry] == full[name]), name
        else:
            assert name not in table, name


def test_state_hooks_are_written_and_restored():
    r = run("slots", "builtin")
    # The sample library imports these (its request helpers open and close sockets).
    assert {"close", "socket"} <= set(r["state"]), r
    assert r["ok"] and not r["greened_has_state"] and r["left"] == 0, r
    # PatchReport lists them apart (state_hooks), with the slots written; symbols has none
    assert set(r["reported"]) == set(r["state"]) and all(n >= 1 for n in r["reported"].values()), r
    assert not set(r["symbols"]) & set(r["state"]) and "recv" in r["symbols"], r


def test_read_write_hint_never_decides_a_wait(hub):
    r = run("read_hint", hub)
    assert r["pipe_write"] == [4, 0] and r["pipe_read"] == [4, 0, "pipe"], r
    (res, err, data), elapsed, ticks = r["socket_read"]
    assert (res, err, data) == (4, 0, "sock"), r
    assert 0.08 <= elapsed <= 0.5 and ticks >= GREEN_TICKS, r     # parked, not blocked
    assert r["socket_read2"] == [2, 0, "s2"] and r["pipe_read2"] == [2, 0, "p2"], r
    st = r["stats"]
    assert st["read"]["green"] == 1 and st["read"]["blocked"] == 0, st
