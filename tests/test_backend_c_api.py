"""The backends' C face (``includes/gh_backend.h``): when the hooks use it, and when they go
through the Python methods instead.

A backend class whose ``c_api`` capsule is offered by the same class that defines
``can_switch``/``wait_fd``/``wait_fd_gen`` is called through C (its Python methods are never
called for a one-fd wait); a subclass that overrides one of them in Python is called through
Python, for every wait; a capsule of another name is ignored.  In every case the calls are
green (a ticker keeps ticking) and return the peer's bytes.
"""
import pytest

from greenhook_test_support import run_checked

SCENARIO = r'''
import sys
import ghscen as S
import greenhook
from greenhook.backends.builtin import BuiltinBackend

kind = sys.argv[1]
calls = {"can_switch": 0, "wait_fd": 0, "wait_fd_gen": 0}


def counting(name):
    real = getattr(BuiltinBackend, name)

    def method(self, *args):
        calls[name] += 1
        return real(self, *args)
    return method


if kind == "c_face":
    # Replaced in the class that offers the capsule: the hooks still call the C face.
    for name in calls:
        setattr(BuiltinBackend, name, counting(name))
    backend = BuiltinBackend()
elif kind == "python_override":
    class Sub(BuiltinBackend):
        wait_fd = counting("wait_fd")
    backend = Sub()
elif kind == "foreign_capsule":
    import ctypes
    capsule = ctypes.pythonapi.PyCapsule_New
    capsule.restype = ctypes.py_object
    capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    keep = ctypes.create_string_buffer(64)

    class Foreign(BuiltinBackend):
        c_api = capsule(ctypes.addressof(keep), b"someone.else", None)
        can_switch = counting("can_switch")
        wait_fd = counting("wait_fd")
        wait_fd_gen = counting("wait_fd_gen")
    backend = Foreign()
else:
    raise SystemExit("unknown kind " + kind)

H, lib = S.setup("builtin")
greenhook.enable_thread(backend)
a, b = S.unix_pair()
ticker = S.Ticker(H)
got = []


def reader():
    for _ in range(5):
        got.append(S.c_recv(lib, a.fileno(), 16))


def writer():
    for i in range(5):
        H.sleep(0.05)
        b.send(b"msg%d" % i)


start = S.now()
H.join([H.spawn(reader), H.spawn(writer)])
elapsed = S.now() - start
ticker.stop()
S.report(got=got, calls=calls, ticks=ticker.count, elapsed=elapsed,
         waits=S.stat("recv")["waits"], green=S.stat("recv")["green"])
'''


def run(kind):
    return run_checked(SCENARIO, timeout=60, args=(kind,))


def assert_green(r):
    assert [tuple(x) for x in r["got"]] == [(4, 0, "msg%d" % i) for i in range(5)], r
    assert r["waits"] >= 5 and r["green"] == 5, r
    # 5 x 50 ms of waiting with a 10 ms ticker: the hub ran all along.
    assert 0.25 <= r["elapsed"] <= 0.25 * 2 + 0.5, r
    assert r["ticks"] >= 15, r


def test_the_c_face_is_used_and_python_methods_are_not_called():
    r = run("c_face")
    assert_green(r)
    assert r["calls"] == {"can_switch": 0, "wait_fd": 0, "wait_fd_gen": 0}, r


def test_a_subclass_overriding_wait_fd_in_python_is_called_for_every_wait():
    r = run("python_override")
    assert_green(r)
    # Every wait through the Python override (wait_fd_gen is defined by another class than
    # the override, so it is not used either).
    assert r["calls"]["wait_fd"] == r["waits"], r


@pytest.mark.parametrize("kind", ["foreign_capsule"])
def test_a_capsule_of_another_name_is_ignored(kind):
    r = run(kind)
    assert_green(r)
    assert r["calls"]["can_switch"] >= r["waits"] and r["calls"]["wait_fd_gen"] == r["waits"], r
