"""The GOT patcher on every sample link variant: what ``patch_library`` reports and writes,
page protections, exact restoration, idempotence, lazy binding, refusals and bad input,
``patch_module``'s DT_NEEDED walk, and the registry.

Everything that patches runs in a subprocess (``run_checked``): patches are process-wide.
"""
import errno
import os
import textwrap

import pytest

from greenhook_test_support import run_checked, skip_or_fail

VARIANTS = ("lazy", "now", "noplt", "addrtaken", "fortify")

# The libc calls the thin ghs_* wrappers make (every variant imports all of them) and the
# ones ghs_request makes (through the function-pointer table in "addrtaken").
WRAPPED = {
    "connect", "accept", "accept4", "read", "write", "readv", "writev", "recv", "send",
    "recvfrom", "sendto", "recvmsg", "sendmsg", "poll", "ppoll", "select", "pselect",
    "sleep", "usleep", "nanosleep", "clock_nanosleep",
}
REQUEST_CALLS = WRAPPED - {"sleep"}
FORTIFY_TWINS = {"__recv_chk", "__read_chk", "__recvfrom_chk", "__poll_chk", "__ppoll_chk"}
FULL_RELRO = {"now", "noplt", "addrtaken", "fortify"}

PRELUDE = """\
import ctypes, os, sys
import greenhook
from greenhook import samples, _elf, _hooks, _patch
from ghscen import *
"""


def scenario(body, timeout=60):
    return run_checked(PRELUDE + textwrap.dedent(body), timeout=timeout)


@pytest.fixture(scope="module")
def delay_server():
    from greenhook.samples.server import DelayServer
    with DelayServer() as srv:
        yield srv


# ==========================================================================================
# What a patch writes
# ==========================================================================================

@pytest.mark.parametrize("variant", VARIANTS)
def test_report_symbols_and_kinds(variant):
    r = scenario(f"""
        lib = samples.ctypes_lib({variant!r})
        rep = greenhook.patch_library(samples.library_path({variant!r}))
        hooks = _hooks.hook_table()
        slots = [(name, kind, _elf.read_slot(addr) == new, new == hooks[name], old in hooks.values())
                 for _, name, kind, addr, old, new in _patch.patched_slots()]
        report(report=rep.as_dict(), slots=slots,
               path=os.path.realpath(samples.library_path({variant!r})))
    """)
    rep = r["report"]
    assert rep["library"] == r["path"] and rep["soname"] == "libghsample_%s.so" % variant, rep
    assert rep["not_greened"] == {}, rep
    assert rep["relro"] == ("full" if variant in FULL_RELRO else "partial"), rep
    assert rep["bind_now"] == (variant in FULL_RELRO), rep
    expected = WRAPPED | (FORTIFY_TWINS if variant == "fortify" else set())
    assert set(rep["symbols"]) == expected, sorted(set(rep["symbols"]) ^ expected)
    for sym, kinds in rep["kinds"].items():
        if variant == "noplt":
            want = ["GLOB_DAT"]
        elif variant == "addrtaken" and sym in REQUEST_CALLS:
            want = ["ABS64", "JUMP_SLOT"]   # PLT for the wrapper + pointer in .data
        else:
            want = ["JUMP_SLOT"]
        assert kinds == want, (sym, kinds)
        assert rep["symbols"][sym] == len(want), (sym, rep["symbols"][sym])
    assert len(r["slots"]) == sum(rep["symbols"].values())
    for name, kind, holds_hook, is_its_hook, old_was_hook in r["slots"]:
        assert holds_hook and is_its_hook, (name, kind)
        assert not old_was_hook, "%s %s: a hook was saved as the original" % (name, kind)


@pytest.mark.parametrize("variant", VARIANTS)
def test_page_protection_is_restored(variant):
    """A read-only (RELRO) GOT page is made writable only for the write: after patching and
    after unpatching every slot's page has exactly its old protection."""
    r = scenario(f"""
        lib = samples.ctypes_lib({variant!r})
        before = {{addr: _elf.page_protection(addr) for _, addr, _, _ in library_slots({variant!r})}}
        greenhook.patch_library(samples.library_path({variant!r}))
        patched = [(kind, addr, _elf.page_protection(addr)) for _, _, kind, addr, _, _ in _patch.patched_slots()]
        greenhook.unpatch_library(samples.library_path({variant!r}))
        after = {{addr: _elf.page_protection(addr) for addr in before}}
        report(before=before, patched=patched, after=after)
    """)
    before = {int(k): v for k, v in r["before"].items()}
    after = {int(k): v for k, v in r["after"].items()}
    assert before == after, "protection changed by patch + unpatch"
    for kind, addr, perms in r["patched"]:
        assert perms == before[addr], (kind, hex(addr), before[addr], perms)
        if variant in FULL_RELRO and kind != "ABS64":   # ABS64 slots live in writable .data
            assert perms.startswith("r-"), (kind, hex(addr), perms)


@pytest.mark.parametrize("variant", VARIANTS)
def test_unpatch_restores_the_exact_slot_values(variant):
    r = scenario(f"""
        lib = samples.ctypes_lib({variant!r})
        path = samples.library_path({variant!r})
        before = {{addr: value for _, addr, _, value in library_slots({variant!r})}}
        rep = greenhook.patch_library(path)
        changed = sum(_elf.read_slot(a) != v for a, v in before.items())
        back = greenhook.unpatch_library(path)
        after = {{addr: _elf.read_slot(addr) for addr in before}}
        report(same_report=back is rep, changed=changed, slots=rep.slots,
               restored=after == before, left=len(_patch.patched_slots()),
               libraries=len(greenhook.patched_libraries()),
               again=greenhook.unpatch_library(path))
    """)
    assert r["changed"] == r["slots"] > 0, r
    assert r["restored"], "slot values differ after unpatch"
    assert r["same_report"] and r["left"] == 0 and r["libraries"] == 0, r
    assert r["again"] is None, "unpatching an unpatched library returns None"


# ==========================================================================================
# Behaviour: green when patched, serialized again after unpatch
# ==========================================================================================

@pytest.mark.parametrize("variant", VARIANTS)
def test_calls_are_green_when_patched_and_block_after_unpatch(variant, hub, delay_server):
    """Four 0.2 s calls in four greenlets -- two ghs_usleep through ctypes (the wrappers' own
    slots) and two ghs_request round trips (the request code's slots: the .data pointers in
    "addrtaken", the __*_chk twins in "fortify") -- overlap when patched and run one after
    the other once unpatched."""
    r = scenario(f"""
        mod = samples.load({variant!r})
        H, lib = setup({hub!r}, {variant!r}, patch=False)
        def burst():
            ticker = Ticker(H)
            H.sleep(0.02)
            t0, k0 = now(), ticker.count
            gs = [H.spawn(lib.ghs_usleep, 200000) for _ in range(2)]
            gs += [H.spawn(mod.request, style, {delay_server.tcp_port}, 200, style.encode())
                   for style in ("send_recv", "ppoll")]
            H.join(gs, timeout=10)
            out = dict(wall=now() - t0, ticks=ticker.count - k0, values=[g.get() for g in gs])
            ticker.stop()
            return out
        greenhook.patch_library(samples.library_path({variant!r}))
        patched = burst()
        greenhook.unpatch_library(samples.library_path({variant!r}))
        unpatched = burst()
        report(patched=patched, unpatched=unpatched)
    """)
    for phase in ("patched", "unpatched"):
        assert r[phase]["values"] == [0, 0, "send_recv", "ppoll"], r
    assert r["patched"]["wall"] < 0.5 and r["patched"]["ticks"] >= 10, r["patched"]
    assert r["unpatched"]["wall"] >= 0.75, "not serialized after unpatch: %r" % r["unpatched"]
    assert r["unpatched"]["ticks"] <= 8, r["unpatched"]


def test_patch_and_unpatch_while_another_thread_calls_through_the_slots():
    """Slots are rewritten with one atomic store and the page is writable only meanwhile: an
    OS thread calling through the slots all along never crashes nor sees a torn target."""
    r = scenario("""
        import threading
        lib = samples.ctypes_lib("now")
        a, b = unix_pair()
        stop, results = threading.Event(), set()
        def hammer():
            n = 0
            while not stop.is_set():
                results.add(c_recv(lib, a.fileno(), flags=socket.MSG_DONTWAIT)[:2])
                results.add(ccall(lib.ghs_usleep, 0))
                n += 1
            return n
        w = in_thread(hammer)
        path = samples.library_path("now")
        for _ in range(200):
            greenhook.patch_library(path)
            greenhook.unpatch_library(path)
        stop.set()
        w.join(10)
        report(calls=w.result, results=sorted(results), patched=len(greenhook.patched_libraries()))
    """)
    assert r["calls"] > 0, r
    assert r["results"] == [[-1, errno.EAGAIN], [0, 0]], r
    assert r["patched"] == 0, r


# ==========================================================================================
# Idempotence
# ==========================================================================================

@pytest.mark.parametrize("variant", VARIANTS)
def test_patching_twice_is_a_noop(variant):
    """A second patch (by path, soname or the extension module) returns the first report and
    writes nothing; unpatch + patch again saves the libc targets, never a hook."""
    r = scenario(f"""
        mod = samples.load({variant!r})
        path = samples.library_path({variant!r})
        first = greenhook.patch_library(path)
        slots1 = _patch.patched_slots()
        values1 = [_elf.read_slot(s[3]) for s in slots1]
        again = [greenhook.patch_library(t) is first
                 for t in (path, samples.soname({variant!r}), os.path.realpath(path))]
        via_module = [rep is first for rep in greenhook.patch_module(mod)]
        slots2 = _patch.patched_slots()
        values2 = [_elf.read_slot(s[3]) for s in slots2]
        greenhook.unpatch_library(path)
        second = greenhook.patch_library(path)
        hooks = set(_hooks.hook_table().values())
        saved_hooks = [s[1] for s in _patch.patched_slots() if s[4] in hooks]
        report(again=again, via_module=via_module, same_slots=slots1 == slots2,
               same_values=values1 == values2, count=len(slots1),
               libraries=len(greenhook.patched_libraries()),
               repatched_same=second.as_dict() == first.as_dict(), saved_hooks=saved_hooks)
    """)
    assert r["again"] == [True, True, True], r
    assert True in r["via_module"], "patch_module did not return the library's first report: %r" % r
    assert r["same_slots"] and r["same_values"] and r["count"] > 0, r
    assert r["libraries"] == 2, "extension + library: %r" % r
    assert r["repatched_same"], r
    assert r["saved_hooks"] == [], "a hook was wrapped in a hook: %r" % r["saved_hooks"]


# ==========================================================================================
# Lazy binding
# ==========================================================================================

def test_lazy_binding_before_and_after_patching(hub):
    """Patched before the first call, a lazily bound slot still points at its PLT stub: the
    hook replaces it and works; unpatched, the stub comes back and the loader's lazy
    resolution then binds the slot to libc's recv on the first call."""
    r = scenario(f"""
        import_extension("lazy", lazy=True)
        H, lib = setup({hub!r}, "lazy", patch=False)
        (name, slot, kind, stub), = library_slots("lazy", {{"recv"}})
        stub_in = mapping_of(stub)
        greenhook.patch_library(samples.library_path("lazy"))
        hooked = _elf.read_slot(slot) == _hooks.hook_table()["recv"]
        a, b = unix_pair()
        ticker = Ticker(H)
        H.spawn_later(0.2, b.send, b"lazy!")
        t0, k0 = now(), ticker.count
        green = H.call(lambda: c_recv(lib, a.fileno()))
        green_wall, ticks = now() - t0, ticker.count - k0
        waits = stat("recv")["waits"]
        greenhook.unpatch_library(samples.library_path("lazy"))
        stub_back = _elf.read_slot(slot) == stub
        b.send(b"resolved")
        plain = c_recv(lib, a.fileno())
        report(kind=kind, stub_in=stub_in, hooked=hooked, green=green, green_wall=green_wall,
               ticks=ticks, waits=waits, stub_back=stub_back, plain=plain,
               bound_to_libc=_elf.read_slot(slot) == c_address("recv"),
               calls_after=stat("recv")["calls"])
    """)
    assert r["kind"] == "JUMP_SLOT", r
    assert r["stub_in"] == ["libghsample_lazy.so", "r-xp"], "not a PLT stub: %r" % r
    assert r["hooked"], r
    assert r["green"][0] == 5 and r["green"][2] == "lazy!", r
    assert 0.18 <= r["green_wall"] < 1.0 and r["ticks"] >= 10 and r["waits"] >= 1, r
    assert r["stub_back"], "unpatch did not put the PLT stub back"
    assert r["plain"][0] == 8 and r["plain"][2] == "resolved", r
    assert r["bound_to_libc"], "lazy resolution did not bind the slot after unpatch"
    assert r["calls_after"] == 1, "the call after unpatch went through the hook"


# ==========================================================================================
# Refusals and bad input: one subprocess tries them all, one test per case
# ==========================================================================================

BAD_INPUT = """
import shutil, tempfile, importlib
import greenlet._greenlet
lib = samples.ctypes_lib("now")
tmp = tempfile.mkdtemp()
copy = os.path.join(tmp, "libghsample_copy.so")
shutil.copy(samples.library_path("now"), copy)
text = os.path.join(tmp, "libtext.so")
with open(text, "w") as f:
    f.write("not an ELF\\n")
objs = _elf.loaded_objects()
def soname_like(prefix):
    hits = [o.soname or os.path.basename(o.path) for o in objs
            if (o.soname or os.path.basename(o.path)).startswith(prefix)]
    return hits[0] if hits else None
cases = {
    "missing_file": lambda: greenhook.patch_library(os.path.join(tmp, "nope", "libx.so")),
    "soname_not_loaded": lambda: greenhook.patch_library("libghsample_nope.so"),
    "elf_not_loaded": lambda: greenhook.patch_library(copy),
    "not_an_elf": lambda: greenhook.patch_library(text),
    "directory": lambda: greenhook.patch_library(tmp),
    "libc": lambda: greenhook.patch_library("libc.so.6"),
    "loader": lambda: greenhook.patch_library(soname_like("ld-linux") or soname_like("ld64")),
    "main_program": lambda: greenhook.patch_library(sys.executable),
    "greenlet": lambda: greenhook.patch_library(greenlet._greenlet),
    "greenhook": lambda: greenhook.patch_library(_hooks),
    "bad_type": lambda: greenhook.patch_library(42),
    "pure_python_module": lambda: greenhook.patch_module("email"),
    "unknown_backend": lambda: greenhook.use("nope"),
}
libpython = soname_like("libpython")
if libpython:
    cases["libpython"] = lambda: greenhook.patch_library(libpython)
try:
    import gevent.libev.corecext as corecext
    cases["gevent"] = lambda: greenhook.patch_library(corecext)
except ImportError:
    pass
out = {}
for name, fn in cases.items():
    try:
        fn()
        out[name] = None
    except Exception as exc:
        out[name] = [type(exc).__name__, [c.__name__ for c in type(exc).__mro__], str(exc)]
report(cases=out, copy=copy, tmp=tmp, libpython=libpython,
       patched=[rep.library for rep in greenhook.patched_libraries()])
shutil.rmtree(tmp)
"""

# case: (exception type, words its message must contain)
REFUSALS = {
    "missing_file": ("LibraryNotFound", ["no such file", "libx.so"]),
    "soname_not_loaded": ("LibraryNotLoaded", ["libghsample_nope.so", "not loaded",
                                               "libghsample_now.so"]),
    "elf_not_loaded": ("LibraryNotLoaded", ["libghsample_copy.so", "not loaded",
                                            "libghsample_now.so"]),
    "not_an_elf": ("NotAnELF", ["libtext.so", "not an ELF"]),
    "directory": ("NotARegularFile", ["directory", "not a regular file"]),
    "libc": ("RefusedLibrary", ["libc.so.6", "C library"]),
    "loader": ("RefusedLibrary", ["dynamic loader"]),
    "main_program": ("RefusedLibrary", ["main program"]),
    "libpython": ("RefusedLibrary", ["libpython", "interpreter"]),
    "greenlet": ("RefusedLibrary", ["greenlet"]),
    "gevent": ("RefusedLibrary", ["gevent"]),
    "greenhook": ("RefusedLibrary", ["greenhook itself"]),
    "bad_type": ("InvalidArgument", ["42"]),
    "pure_python_module": ("GreenhookError", ["email", "not a C extension"]),
    "unknown_backend": ("BackendError", ["nope", "builtin", "gevent"]),
}


@pytest.fixture(scope="module")
def bad_input():
    return scenario(BAD_INPUT)


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_and_bad_input(bad_input, case):
    if case == "libpython" and bad_input["libpython"] is None:
        # The interpreter is linked statically: its code is the main program, refused there.
        assert bad_input["cases"]["main_program"][0] == "RefusedLibrary"
        return
    if case == "gevent" and "gevent" not in bad_input["cases"]:
        skip_or_fail("gevent is not installed")
    got = bad_input["cases"][case]
    want_type, words = REFUSALS[case]
    assert got is not None, "%s: no error raised" % case
    name, mro, message = got
    assert name == want_type, (case, got)
    assert "GreenhookError" in mro, (case, mro)
    if want_type == "LibraryNotFound":
        assert "FileNotFoundError" in mro, mro
    if want_type == "RefusedLibrary":
        assert "PatchError" in mro, mro
    for word in words:
        assert word in message, "%s: %r not in %r" % (case, word, message)


def test_refusals_patch_nothing(bad_input):
    assert bad_input["patched"] == [], bad_input["patched"]


# ==========================================================================================
# patch_module and the registry
# ==========================================================================================

@pytest.mark.parametrize("variant", VARIANTS)
def test_patch_module_follows_dt_needed_to_the_library(variant):
    r = scenario(f"""
        mod = samples.load({variant!r})
        only = greenhook.patch_module(mod, follow_deps=False)
        only_libs = [rep.library for rep in only]
        greenhook.unpatch_all()
        reports = greenhook.patch_module("greenhook.samples._bin._ghsample_{variant}")
        report(only=only_libs, libs=[rep.library for rep in reports],
               lib_symbols=sorted(reports[-1].symbols),
               registry=[rep.library for rep in greenhook.patched_libraries()],
               ext=os.path.realpath(mod.__file__),
               lib=os.path.realpath(samples.library_path({variant!r})))
    """)
    assert r["only"] == [r["ext"]], r
    assert r["libs"] == [r["ext"], r["lib"]], "libc, libpython... must not be patched: %r" % r
    assert r["registry"] == r["libs"], r
    assert set(r["lib_symbols"]) >= WRAPPED, r


def test_patched_libraries_and_unpatch_all():
    r = scenario("""
        variants = ("now", "noplt", "fortify")
        original = {v: {a: val for _, a, _, val in library_slots(v)} for v in variants
                    if samples.ctypes_lib(v)}
        reports = [greenhook.patch_library(samples.library_path(v)) for v in variants]
        listed = greenhook.patched_libraries()
        undone = greenhook.unpatch_all()
        restored = all(_elf.read_slot(a) == val for v in variants for a, val in original[v].items())
        report(in_order=[rep is r for rep, r in zip(listed, reports)] == [True] * 3,
               undone=sorted(rep.library for rep in undone) == sorted(rep.library for rep in reports),
               restored=restored, after=greenhook.patched_libraries(), slots=_patch.patched_slots(),
               again=greenhook.unpatch_all())
    """)
    assert r["in_order"], "patched_libraries() is not the reports in patching order"
    assert r["undone"], "unpatch_all() did not return every report"
    assert r["restored"], "unpatch_all() did not restore every slot"
    assert r["after"] == [] and r["slots"] == [] and r["again"] == [], r
