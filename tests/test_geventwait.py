"""The gevent backend's compiled wait and C face (``greenhook._geventwait``).

The hooks call the C face (``GeventBackend.c_api``, ``includes/gh_backend.h``) for every
single-fd wait; ``GeventBackend.wait_fd_gen`` is the same wait for a Python caller.  These
tests drive both directly (the C face through ctypes, holding the GIL as the hooks do), each
in a thread of its own with its own gevent hub, destroyed after: waking, timing out, one
watcher kept per (fd, mask) while the fd's generation stays, concurrent waiters, kills,
destroyed and re-made hubs, threads, the rare paths handed to Python (POLLPRI, huge
timeouts) and libuv.  The waits of patched libraries on the gevent hub are in
tests/test_semantics.py and tests/test_fdstate.py.
"""
import ctypes
import os
import socket
import textwrap
import threading
import time

import gevent
import gevent.event
import pytest

from greenhook_test_support import in_hub_thread, run_checked, skip_or_fail

from greenhook import BackendError
from greenhook import _geventwait
from greenhook.backends import get_backend
from greenhook.backends import gevent as gevent_backend

POLLIN, POLLPRI, POLLOUT = 0x1, 0x2, 0x4
BODY_TIMEOUT = 20
backend = get_backend("gevent")


class _API(ctypes.Structure):
    _fields_ = [("abi", ctypes.c_uint), ("can_switch", ctypes.c_void_p),
                ("wait_fd", ctypes.c_void_p)]


def c_face():
    """``(abi, can_switch(backend), wait_fd(backend, fd, events, timeout, gen))`` called
    as the hooks call them (GIL held: ctypes.PYFUNCTYPE raises what they set)."""
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    api = _API.from_address(get(type(backend).c_api, b"greenhook.backend_c_api"))
    can_switch = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object)(api.can_switch)
    wait_fd = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_int, ctypes.c_int,
                                ctypes.c_double, ctypes.c_uint)(api.wait_fd)
    return api.abi, can_switch, wait_fd


def in_gevent_thread(fn):
    """``fn()`` in a new thread with a gevent hub of its own, destroyed after."""
    def body():
        gevent.get_hub()
        try:
            return fn()
        finally:
            gevent.get_hub().destroy(destroy_loop=True)
    return in_hub_thread(body, BODY_TIMEOUT)


def timed(fn, *args):
    t = time.monotonic()
    value = fn(*args)
    return value, time.monotonic() - t


def test_the_c_face_is_offered_and_its_can_switch_is_the_python_one():
    abi, can_switch, _ = c_face()
    assert abi == 1

    def body():
        seen = []

        def both():
            seen.append((can_switch(backend), backend.can_switch()))

        both()                                  # no hub in this thread yet
        gevent.get_hub()
        both()                                  # the main greenlet, a hub exists
        gevent.spawn(both).join()               # a greenlet
        gevent.get_hub().loop.run_callback(both)  # the hub itself (a loop callback)
        gevent.sleep(0.01)
        gevent.get_hub().destroy(destroy_loop=True)
        both()                                  # destroyed: no hub again
        gevent.get_hub()
        return seen

    seen = in_hub_thread(body, BODY_TIMEOUT)
    assert seen == [(0, False), (1, True), (1, True), (0, False), (0, False)]


def test_wakes_times_out_and_keeps_one_watcher_per_fd_while_the_generation_stays():
    _, _, wait_fd = c_face()

    def body():
        a, b = socket.socketpair()
        fd = a.fileno()
        hub = gevent.get_hub()
        try:
            gevent.spawn_later(0.05, b.send, b"x")
            woke = timed(wait_fd, backend, fd, POLLIN, -1.0, 7)
            assert a.recv(1) == b"x"
            (key, entry), = _geventwait.kept_watchers(hub).items()
            timed_out = timed(wait_fd, backend, fd, POLLIN, 0.05, 7)
            same = _geventwait.kept_watchers(hub)[(fd, 1)]
            # the Python method: the same wait, the same kept watcher
            gevent.spawn_later(0.02, b.send, b"y")
            py = backend.wait_fd_gen(fd, POLLIN, None, 7)
            assert a.recv(1) == b"y"
            still = _geventwait.kept_watchers(hub)[(fd, 1)]
            # a new generation (the fd was closed and its number reused): a new watcher
            gevent.spawn_later(0.02, b.send, b"z")
            renewed = wait_fd(backend, fd, POLLIN, 1.0, 8)
            new = _geventwait.kept_watchers(hub)[(fd, 1)]
            # generation 0 (unknown): a watcher of the wait's own, nothing kept changes
            gevent.spawn_later(0.02, b.send, b"w")
            unknown = wait_fd(backend, fd, POLLIN | POLLPRI, 1.0, 0)
            writable = wait_fd(backend, fd, POLLOUT, 1.0, 8)
            return (woke, key, entry, timed_out, same, py, still, renewed, new, unknown,
                    writable, _geventwait.kept_watchers(hub))
        finally:
            a.close()
            b.close()

    (woke, key, entry, timed_out, same, py, still, renewed, new, unknown, writable,
     kept) = in_gevent_thread(body)
    fd, io = key[0], entry[1]
    assert woke[0] == 1 and 0.05 <= woke[1] < 0.05 * 2 + 0.1
    assert key == (fd, 1) and entry[0] == 7     # (fd, libev read mask): (gen, watcher)
    assert timed_out[0] == 0 and 0.05 <= timed_out[1] < 0.05 * 2 + 0.1
    assert same[1] is io and still[1] is io and py is True
    assert not io.active                        # stopped between waits
    assert renewed == 1 and new[0] == 8 and new[1] is not io
    assert unknown == 1 and writable == 1
    assert set(kept) == {(fd, 1), (fd, 2)} and kept[(fd, 1)][1] is new[1]
    assert not any(w.active for _, w in kept.values())


def test_two_greenlets_on_one_fd_both_wake():
    def body():
        a, b = socket.socketpair()
        fd = a.fileno()
        try:
            waits = [gevent.spawn(backend.wait_fd_gen, fd, POLLIN, 2.0, 3) for _ in range(3)]
            gevent.sleep(0.02)
            b.send(b"x")
            t = time.monotonic()
            gevent.joinall(waits, timeout=2)
            took = time.monotonic() - t
            kept = _geventwait.kept_watchers(gevent.get_hub())
            return [w.value for w in waits], took, fd, kept
        finally:
            a.close()
            b.close()

    values, took, fd, kept = in_gevent_thread(body)
    assert values == [True, True, True] and took < 0.5
    # the first waiter used the kept watcher, the others watchers of their own
    assert list(kept) == [(fd, 1)] and kept[(fd, 1)][0] == 3 and not kept[(fd, 1)][1].active


class Stop(Exception):
    pass


@pytest.mark.parametrize("timeout", [None, 0.2])
def test_a_kill_stops_the_wait_and_nothing_of_it_switches_in_later(timeout):
    """The park has no Waiter: what proves it safe is that every watcher of the wait is
    stopped before the greenlet goes on.  After a kill the greenlet parks elsewhere; neither
    the fd becoming readable nor the wait's timer may wake it there."""
    def body():
        a, b = socket.socketpair()
        fd = a.fileno()
        try:
            event = gevent.event.Event()

            def waiter():
                try:
                    backend.wait_fd_gen(fd, POLLIN, timeout, 5)
                except Stop:
                    pass
                return timed(event.wait, 0.5)

            g = gevent.spawn(waiter)
            gevent.sleep(0.02)
            g.kill(Stop, block=False)
            gevent.sleep(0.02)
            b.send(b"x")                # readable while the greenlet waits on the event
            g.join(2)
            kept = _geventwait.kept_watchers(gevent.get_hub())
            return g.value, kept
        finally:
            a.close()
            b.close()

    (got, waited), kept = in_gevent_thread(body)
    assert got is False and 0.5 <= waited < 0.5 * 2 + 0.1
    assert not any(w.active for _, w in kept.values())


def test_a_greenlet_class_with_its_own_switch_is_switched_through_it():
    calls = []

    class Counting(gevent.Greenlet):
        def switch(self, *args, **kwargs):
            calls.append(args)
            return gevent.Greenlet.switch(self, *args, **kwargs)

    def body():
        a, b = socket.socketpair()
        try:
            gevent.spawn(backend.wait_fd_gen, a.fileno(), POLLIN, 1.0, 1).join()  # plain first
            g = Counting.spawn(backend.wait_fd_gen, a.fileno(), POLLIN, 1.0, 1)
            gevent.sleep(0.02)
            b.send(b"x")
            g.join(2)
            return g.value
        finally:
            a.close()
            b.close()

    assert in_gevent_thread(body) is True
    assert (True,) in calls


def test_a_destroyed_hub_leaves_nothing_behind_for_the_next_one():
    def body():
        a, b = socket.socketpair()
        fd = a.fileno()
        try:
            out = []
            for destroy_loop in (True, False, True):
                hub = gevent.get_hub()
                gevent.spawn_later(0.02, b.send, b"x")
                out.append(backend.wait_fd_gen(fd, POLLIN, 1.0, 9))
                a.recv(1)
                out.append(list(_geventwait.kept_watchers(hub)))
                hub.destroy(destroy_loop=destroy_loop)
                assert not backend.can_switch()
                new = gevent.get_hub()
                assert new is not hub and _geventwait.kept_watchers(new) == {}
            return out
        finally:
            a.close()
            b.close()

    out = in_gevent_thread(body)
    assert out[0::2] == [True, True, True]
    assert all(len(k) == 1 and k[0][1] == 1 for k in out[1::2])


def test_each_thread_waits_on_its_own_hub():
    def body():
        a, b = socket.socketpair()
        try:
            gevent.spawn_later(0.05, b.send, b"x")
            ready = backend.wait_fd_gen(a.fileno(), POLLIN, 2.0, 4)
            return ready, gevent.get_hub(), list(_geventwait.kept_watchers(gevent.get_hub()))
        finally:
            a.close()
            b.close()

    results = [None, None]

    def run(i):
        results[i] = in_gevent_thread(body)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BODY_TIMEOUT)
    (r1, h1, k1), (r2, h2, k2) = results
    assert r1 is True and r2 is True and h1 is not h2 and len(k1) == len(k2) == 1


def test_the_loop_refusing_a_watcher_is_a_backend_error_and_nothing_is_kept():
    _, _, wait_fd = c_face()

    def body():
        a, b = socket.socketpair()
        closed = a.fileno()
        a.close()
        errors = []
        for gen in (0, 6):
            for fd in (closed, -1):
                try:
                    wait_fd(backend, fd, POLLIN, 1.0, gen)
                except BackendError as exc:
                    errors.append(str(exc))
        b.close()
        return errors, _geventwait.kept_watchers(gevent.get_hub())

    errors, kept = in_gevent_thread(body)
    assert len(errors) == 4 and all("could not watch fd" in e for e in errors), errors
    assert kept == {}


def test_pollpri_alone_is_probed_and_huge_timeouts_go_to_python():
    _, _, wait_fd = c_face()

    def body():
        a, b = socket.socketpair()
        try:
            # POLLPRI alone: the loops cannot watch it, the wait wakes every PRI_PROBE s
            pri = timed(wait_fd, backend, a.fileno(), POLLPRI, -1.0, 2)
            gevent.spawn_later(0.05, b.send, b"x")
            huge = timed(wait_fd, backend, a.fileno(), POLLIN, 1e12, 2)
            return pri, huge
        finally:
            a.close()
            b.close()

    pri, huge = in_gevent_thread(body)
    assert pri[0] == 1 and gevent_backend.PRI_PROBE <= pri[1] < gevent_backend.PRI_PROBE * 2 + 0.1
    assert huge[0] == 1 and 0.05 <= huge[1] < 0.05 * 2 + 0.1
    assert _geventwait.MAX_TIMER == gevent_backend.MAX_TIMER


def test_libuv_makes_a_watcher_per_wait():
    try:
        import cffi  # noqa: F401 - gevent's libuv loop is built with cffi
    except ImportError:
        skip_or_fail("cffi is not installed (gevent's libuv loop needs it)")
    code = textwrap.dedent("""
        import socket, time
        import gevent, ghscen
        from greenhook import _geventwait
        from greenhook.backends import get_backend
        backend = get_backend("gevent")
        hub = gevent.get_hub()
        a, b = socket.socketpair()
        gevent.spawn_later(0.05, b.send, b"x")
        ready = backend.wait_fd_gen(a.fileno(), 1, 1.0, 3)
        t = time.monotonic()
        a.recv(1)
        timed_out = backend.wait_fd_gen(a.fileno(), 1, 0.05, 3)
        ghscen.report(loop=type(hub.loop).__module__, ready=ready, timed_out=timed_out,
                      waited=time.monotonic() - t, kept=len(_geventwait.kept_watchers(hub)))
    """)
    r = run_checked(code, env={"GEVENT_LOOP": "libuv"})
    assert "libuv" in r["loop"], r
    # libuv counts whole milliseconds from a loop clock cached at the start of its iteration:
    # its timer may end the backend's wait up to ~1 ms early (the hooks treat a timeout
    # before their deadline as a spurious wake and wait for the rest: wait.pxi).
    assert r["ready"] is True and r["timed_out"] is False and 0.048 <= r["waited"] < 0.2, r
    assert r["kept"] == 0, r


def test_a_thread_that_ended_with_its_hub_alive_lends_it_to_no_other():
    """The last thread's state is cached by the thread state's unique id: a new thread (which
    may get the same ident, the same thread state address) starts with no hub, then its own."""
    _, can_switch, wait_fd = c_face()
    seen = []

    def body():
        before = can_switch(backend)
        hub = gevent.get_hub()
        a, b = socket.socketpair()
        gevent.spawn_later(0.02, b.send, b"x")
        ready = wait_fd(backend, a.fileno(), POLLIN, 1.0, 1)
        seen.append((before, ready, hub, threading.get_ident()))
        a.close()
        b.close()           # the hub is left alive: the thread just ends

    for _ in range(3):
        t = threading.Thread(target=body)
        t.start()
        t.join(BODY_TIMEOUT)
    assert [(before, ready) for before, ready, _, _ in seen] == [(0, 1)] * 3
    hubs = [hub for _, _, hub, _ in seen]
    assert len(set(map(id, hubs))) == 3
    for hub in hubs:
        hub.destroy(destroy_loop=True)
