"""Auto mode (``greenhook.patch_all``): everything loaded, and everything loaded later --
extension modules imported later, ``ctypes.CDLL``, and what a patched library ``dlopen``\\s --
is greened; the skip/allow lists and the report say what was left alone and why.

Every case runs in a subprocess (patches are process-wide).  The concurrency cases run 20
requests of 0.2 s next to a 10 ms ticker on both hubs: greened, they overlap (bound: 2 x 0.2 s
+ 0.2 s margin; serialized: 4 s) and the ticker keeps ticking."""
import os
import shutil
import subprocess

import pytest

from greenhook_test_support import SCENARIO_DIR, run_checked, skip_or_fail

N, DELAY = 20, 0.2
BOUND = 2 * DELAY + 0.2
MIN_TICKS = 8      # ~20 ticks in a greened 0.2 s run; 0-1 when the hub is blocked

# A library that loads another with dlopen: what unixODBC does with the ODBC driver.
LOADER_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
void *ghl_open(const char *path) { return dlopen(path, RTLD_NOW | RTLD_LOCAL); }
void *ghl_mopen(const char *path) { return dlmopen(LM_ID_NEWLM, path, RTLD_NOW); }
const char *ghl_error(void) { return dlerror(); }
"""


@pytest.fixture(scope="module")
def loader_so(tmp_path_factory):
    """``libghloader.so`` (no run path, so auto mode hooks its dlopen slot)."""
    cc = (os.environ.get("CC") or "cc").split()
    if shutil.which(cc[0]) is None:
        skip_or_fail("no C compiler (%s) to build the dlopen test library" % cc[0])
    d = tmp_path_factory.mktemp("ghloader")
    src, so = d / "ghloader.c", d / "libghloader.so"
    src.write_text(LOADER_C)
    subprocess.run(cc + ["-shared", "-fPIC", "-O2", "-o", str(so), str(src), "-ldl"], check=True)
    return str(so)


@pytest.fixture(scope="module")
def loader_rp_so(loader_so):
    """The same loader with a DT_RUNPATH: auto mode leaves its dlopen slot alone (through a
    hook the loader would search greenhook's run path, not the caller's)."""
    cc = (os.environ.get("CC") or "cc").split()
    d = os.path.dirname(loader_so)
    so = os.path.join(d, "libghloader_rp.so")
    subprocess.run(cc + ["-shared", "-fPIC", "-O2", "-o", so, os.path.join(d, "ghloader.c"),
                         "-ldl", "-Wl,--enable-new-dtags,-rpath," + d], check=True)
    return so


def _scenario(*args, env=None):
    return run_checked(os.path.join(SCENARIO_DIR, "auto_load.py"), timeout=60,
                       args=[str(a) for a in args], env=env)


def _assert_concurrent(res):
    assert res["exact"] == [True] * N, res
    assert res["elapsed"] < BOUND, res
    assert res["ticks"] >= MIN_TICKS, res


def test_import_after_patch_all(hub):
    res = _scenario(hub, "import")
    assert not any("ghsample" in n for n in res["before"]), res["before"]
    assert "libghsample_now.so" in res["after_load"], res
    # the extension module itself (it imports nothing hooked but is considered)
    print("\n[auto import %s] %.3f s, %d ticks" % (hub, res["elapsed"], res["ticks"]))
    _assert_concurrent(res)


def test_ctypes_cdll_after_patch_all(hub):
    res = _scenario(hub, "ctypes")
    assert "libghsample_lazy.so" not in res["before"]
    assert "libghsample_lazy.so" in res["after_load"], res
    print("\n[auto ctypes %s] %.3f s, %d ticks" % (hub, res["elapsed"], res["ticks"]))
    _assert_concurrent(res)


def test_unloaded_and_loaded_again_is_patched_again(hub):
    res = _scenario(hub, "reload")
    assert "libghsample_fortify.so" in res["first"], res
    assert "libghsample_fortify.so" in res["after_load"], res
    print("\n[auto reload %s] %.3f s, %d ticks" % (hub, res["elapsed"], res["ticks"]))
    _assert_concurrent(res)


def test_dlopen_by_a_patched_library(hub, loader_so):
    res = _scenario(hub, "dlopen", loader_so)
    # the loader library was patched (ctypes) with its dlopen slot hooked ...
    assert res["loader_patched"] == [{"dlopen": 1, "dlmopen": 1}], res
    # ... and the sample it dlopened was patched by that hook, before any wait
    assert res["handle"] is True
    assert res["dlopen_calls"] >= 1, res
    assert "libghsample_noplt.so" in res["after_dlopen"], res
    assert res["dlerror_after"] is None, res
    print("\n[auto dlopen %s] %.3f s, %d ticks" % (hub, res["elapsed"], res["ticks"]))
    _assert_concurrent(res)


def test_load_by_unpatched_code_caught_at_the_next_wait(hub, loader_rp_so):
    res = _scenario(hub, "counter", loader_rp_so)
    assert res["loader_patched"] == [{}], res    # patched, but not its dlopen slot
    assert res["handle"] is True
    assert "libghsample_addrtaken.so" not in res["after_dlopen"], res
    assert "libghsample_addrtaken.so" in res["after_wait"], res
    print("\n[auto counter %s] %.3f s, %d ticks" % (hub, res["elapsed"], res["ticks"]))
    _assert_concurrent(res)


POLICY = r"""
import json, os, signal, sys
import greenhook
from greenhook import samples
libs = greenhook.patch_all(backend="builtin")
refused_at_start = dict(libs.refused)
samples.ctypes_lib("lazy"); samples.ctypes_lib("now")
names = {r.soname for r in greenhook.patched_libraries()}
refused = greenhook.patched_libraries().refused
if os.environ.get("GREENHOOK_REPORT_SIGNAL"): os.kill(os.getpid(), signal.SIGUSR1)
print("GHRESULT " + json.dumps({
    "lazy": "libghsample_lazy.so" in names, "now": "libghsample_now.so" in names,
    "refused": {os.path.basename(k): v for k, v in refused.items()},
    "refused_at_start": {os.path.basename(k): v for k, v in refused_at_start.items()},
    "report": greenhook.auto_report()["auto"]}))
"""


def test_skip_list_and_report():
    rc_env = {"GREENHOOK_SKIP": "libghsample_lazy", "GREENHOOK_REPORT_SIGNAL": "USR1"}
    res = run_checked(POLICY, env=rc_env)
    assert res["now"] is True and res["lazy"] is False, res
    assert "skip list" in res["refused"]["libghsample_lazy.so"], res
    assert res["report"] is True
    # the system runtime is refused, with the reason
    assert any(k.startswith("libpython") or "main program" in v
               for k, v in res["refused_at_start"].items()), res


def test_allow_list():
    res = run_checked(POLICY, env={"GREENHOOK_ALLOW": "libghsample_lazy.so",
                                   "GREENHOOK_REPORT_SIGNAL": ""})
    assert res["lazy"] is True and res["now"] is False, res
    assert res["refused"]["libghsample_now.so"].startswith("not on the allow list"), res


def test_report_signal_prints_the_live_view():
    from greenhook_test_support import run_scenario
    rc, out, err = run_scenario(POLICY, env={"GREENHOOK_REPORT_SIGNAL": "USR1"})
    assert rc == 0, err
    line = [ln for ln in err.splitlines() if ln.startswith("greenhook auto mode: ")]
    assert len(line) == 1, err
    import json
    view = json.loads(line[0][len("greenhook auto mode: "):])
    assert view["auto"] is True
    assert any(p["soname"] == "libghsample_now.so" for p in view["patched"]), view


def test_unpatch_all_ends_auto_mode():
    code = r"""
import json
import greenhook
from greenhook import samples
greenhook.patch_all(backend="builtin")
greenhook.unpatch_all()
samples.ctypes_lib("now")
print("GHRESULT " + json.dumps({"patched": [r.soname for r in greenhook.patched_libraries()],
                                "auto": greenhook.auto_report()["auto"]}))
"""
    res = run_checked(code)
    assert res == {"patched": [], "auto": False}


def test_worker_threads_pass_through():
    """Auto mode binds the thread that called patch_all; a load in a worker thread is
    patched, and the worker stays unbound (its calls pass straight through)."""
    code = r"""
import json, threading
import greenhook
from greenhook import samples
greenhook.patch_all(backend="builtin")
box = {}
def worker():
    samples.ctypes_lib("now")
    box["worker_backend"] = greenhook.current_backend()
t = threading.Thread(target=worker); t.start(); t.join()
print("GHRESULT " + json.dumps({
    "main": greenhook.current_backend().name, "worker": box["worker_backend"],
    "patched": "libghsample_now.so" in {r.soname for r in greenhook.patched_libraries()}}))
"""
    assert run_checked(code) == {"main": "builtin", "worker": None, "patched": True}


def test_dlmopen_namespace_is_left_alone(loader_so):
    """An object loaded into a new link-map namespace (dlmopen LM_ID_NEWLM, through the
    patched loader's hooked dlmopen) is left alone: it has its own libc, whose errno the hooks
    cannot set (glibc's dl_iterate_phdr does not even show it to the base namespace; should
    one that does, auto mode refuses it by its namespace)."""
    code = r"""
import ctypes, json, os, sys
import greenhook
from greenhook import samples
greenhook.patch_all(backend="builtin")
loader = ctypes.CDLL(sys.argv[1])
loader.ghl_mopen.restype = ctypes.c_void_p
loader.ghl_mopen.argtypes = [ctypes.c_char_p]
handle = loader.ghl_mopen(samples.library_path("now").encode())
libs = greenhook.patched_libraries()
print("GHRESULT " + json.dumps({
    "handle": bool(handle),
    "mopen_slot": [r.symbols.get("dlmopen") for r in libs if r.library == os.path.realpath(sys.argv[1])],
    "patched": [r.soname for r in libs if r.soname == "libghsample_now.so"],
    "refused": [v for k, v in libs.refused.items() if k.endswith("libghsample_now.so")]}))
"""
    res = run_checked(code, args=[loader_so])
    assert res["handle"] is True
    assert res["mopen_slot"] == [1], res
    assert res["patched"] == [], res
    assert all("namespace" in why for why in res["refused"]), res


ORIGIN_LIB_C = "int ghorigin(void) { return %d; }\n"


def test_dlopen_origin_is_the_callers_directory(loader_so):
    """``$ORIGIN`` in a name passed to dlopen means the directory of the object that called
    dlopen.  Through the hooked slot the loader would see greenhook as the caller: the hook
    expands ``$ORIGIN`` and ``${ORIGIN}`` for the real caller, so a patched library finds
    its neighbours as it does unpatched (the unpatched load of a twin library is the control;
    a name that does not exist next to the caller fails the same way on both sides)."""
    cc = (os.environ.get("CC") or "cc").split()
    d = os.path.join(os.path.dirname(loader_so), "origin")
    os.makedirs(d, exist_ok=True)
    # no tail call: glibc takes "the caller" from dlopen's return address, which a sibling
    # call would move into ctypes
    loader = os.path.join(d, "libghloader.so")
    subprocess.run(cc + ["-shared", "-fPIC", "-O2", "-fno-optimize-sibling-calls", "-o", loader,
                         os.path.join(os.path.dirname(loader_so), "ghloader.c"), "-ldl"], check=True)
    for i in range(3):
        src = os.path.join(d, "ghorigin%d.c" % i)
        with open(src, "w") as f:
            f.write(ORIGIN_LIB_C % (40 + i))
        subprocess.run(cc + ["-shared", "-fPIC", "-o", os.path.join(d, "libghorigin%d.so" % i), src],
                       check=True)
    code = r"""
import ctypes, json, sys
import greenhook
loader = ctypes.CDLL(sys.argv[1])
loader.ghl_open.restype = ctypes.c_void_p
loader.ghl_open.argtypes = [ctypes.c_char_p]
loader.ghl_error.restype = ctypes.c_char_p

def load(name):
    h = loader.ghl_open(name.encode())
    if not h:
        return ["error", (loader.ghl_error() or b"").decode().split(":")[-1].strip()]
    lib = ctypes.CDLL(name.replace("${ORIGIN}", sys.argv[2]).replace("$ORIGIN", sys.argv[2]))
    return ["ok", lib.ghorigin()]

out = {"plain": load("$ORIGIN/libghorigin0.so"), "plain_missing": load("$ORIGIN/libnothere.so")}
greenhook.patch_all(backend="builtin")
slot = [r.symbols.get("dlopen") for r in greenhook.patched_libraries()
        if r.library.endswith("libghloader.so")]
out.update(slot=slot, hooked=load("$ORIGIN/libghorigin1.so"), braces=load("${ORIGIN}/libghorigin2.so"),
           hooked_missing=load("$ORIGIN/libnothere.so"),
           calls=greenhook.stats()["dlopen"]["passthrough"])
print("GHRESULT " + json.dumps(out))
"""
    res = run_checked(code, args=[loader, d])
    assert res["plain"] == ["ok", 40], res
    assert res["slot"] == [1], res                      # the loader's dlopen slot is hooked ...
    assert res["calls"] >= 3, res                       # ... and the loads went through it
    assert res["hooked"] == ["ok", 41], res
    assert res["braces"] == ["ok", 42], res
    assert res["hooked_missing"] == res["plain_missing"], res
    assert res["plain_missing"][0] == "error", res
