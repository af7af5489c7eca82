"""greenhook on aarch64, under qemu-user emulation: the core and every sample link variant
cross-compiled (``scripts/aarch64.sh``: gcc-aarch64-linux-gnu against a sysroot of Debian's
arm64 python3.11 and greenlet), then a core subset of the test suite with its scenario
subprocesses on the aarch64 interpreter:

* tests/test_patcher.py: what a patch writes on every variant (lazy, now, -fno-plt,
  address-taken, fortify: JUMP_SLOT, GLOB_DAT and ABS64 slots), page protection and exact
  slot values restored by unpatch, green when patched / blocking after unpatch, lazy binding,
  patching while another thread calls through the slots;
* tests/test_semantics.py (built-in hub): the fast path, green waits, timeouts, kills and
  every kind of call cancelled;
* tests/scenarios/cancel_paths.py (built-in hub): as tests/test_pythons.py asserts it,
  including "the C call returns normally, the exception is raised before the rest of the line";
* plthook's aarch64 hazard: a function's GOT-loaded address kept in a register (see
  ``test_aarch64_register_cached_got_address``).

Measured on the 2-core machine: build ~20 s (+5 s for the sysroot the first time), the patcher
subset ~40 s, the semantics subset ~70 s, the rest ~15 s.
"""
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from greenhook_test_support import ROOT, skip_or_fail

SCRIPT = os.path.join(ROOT, "scripts", "aarch64.sh")
CROSS_CC = "aarch64-linux-gnu-gcc"

PATCHER = ("not gevent and (test_report_symbols_and_kinds or test_page_protection_is_restored or "
           "test_unpatch_restores_the_exact_slot_values or "
           "test_calls_are_green_when_patched_and_block_after_unpatch or "
           "test_lazy_binding_before_and_after_patching or "
           "test_patch_and_unpatch_while_another_thread_calls_through_the_slots)")
SEMANTICS = ("builtin and (test_fast_path_when_ready or test_poll_infinite_timeout_waits_greenly "
             "or test_poll_timeout_returns_zero_never_early or "
             "test_so_rcvtimeo_expires_greenly_with_eagain or "
             "test_connect_completes_through_the_green_path or "
             "test_timeout_cancels_a_parked_call or test_kill_cancels_a_parked_call or "
             "test_timeout_cancels_every_kind_of_call or test_timeout_replaces_the_drivers_error "
             "or test_silent_timeout_ends_only_its_block or "
             "test_other_os_thread_blocks_only_itself or test_msg_dontwait_returns_eagain_at_once)")


def _tools():
    missing = [t for t in (CROSS_CC, "qemu-aarch64-static", "apt-get", "dpkg")
               if subprocess.run(["sh", "-c", "command -v " + t], capture_output=True).returncode]
    if missing:
        skip_or_fail("aarch64 tools missing: %s (scripts/install_system_deps.sh installs them)"
                     % ", ".join(missing))


@pytest.fixture(scope="module")
def aarch64_python():
    """The wrapper that runs the aarch64 CPython with the cross-built greenhook."""
    _tools()
    proc = subprocess.run(["bash", SCRIPT, "build"], capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, PYTHON=sys.executable),
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-6000:]
    return proc.stdout.strip().splitlines()[-1]


def _aarch64(py, code, timeout=120):
    proc = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.join(ROOT, "tests", "scenarios"), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_interpreter_is_aarch64_and_imports_this_checkouts_build(aarch64_python):
    out = json.loads(_aarch64(aarch64_python, textwrap.dedent("""
        import json, os, platform, greenhook, greenhook._hooks, greenhook._elf
        from greenhook import samples
        d = os.path.dirname(greenhook.__file__)
        with open(os.path.join(d, "_build_stamp.json")) as f:
            stamp = json.load(f)
        print(json.dumps({"machine": platform.machine(), "stamp": stamp,
                          "hooks": greenhook._hooks.__file__,
                          "libs": [samples.library_path(v) for v in
                                   ("lazy", "now", "noplt", "addrtaken", "fortify")]}))
    """)))
    assert out["machine"] == "aarch64", out
    assert out["hooks"].endswith("aarch64-linux-gnu.so"), out
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import source_digest
    finally:
        sys.path.pop(0)
    assert out["stamp"]["source_sha256"] == source_digest.digest(ROOT)[0]
    for lib in out["libs"]:
        with open(lib, "rb") as f:
            header = f.read(20)
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183, lib


def _pytest_subset(path, expr, expected):
    proc = subprocess.run(["bash", SCRIPT, "pytest", "-q", "-p", "no:cacheprovider", "-k", expr,
                           os.path.join(ROOT, "tests", path)],
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, PYTHON=sys.executable))
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    print("\n[aarch64] %s: %s" % (path, summary))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    m = re.search(r"(\d+) passed", summary)
    assert m and int(m.group(1)) == expected, summary
    assert not re.search(r"failed|error|skipped", summary), summary


def test_patcher_on_every_link_variant(aarch64_python):
    _pytest_subset("test_patcher.py", PATCHER, 22)


def test_core_semantics_on_the_builtin_hub(aarch64_python):
    _pytest_subset("test_semantics.py", SEMANTICS, 28)


def test_cancellation_paths(aarch64_python):
    """The same scenario and assertions as every CPython of tests/test_pythons.py."""
    import test_pythons
    test_pythons.test_cancellation_paths(aarch64_python, "builtin")


HAZARD_C = r"""
#include <poll.h>
typedef void (*cb_t)(int);
/* poll() through the GOT, a callback between calls: the patch lands mid-activation */
__attribute__((visibility("default"))) int hazard_loop(int n, cb_t cb) {
    int hits = 0;
    for (int i = 0; i < n; i++) {
        hits += poll(0, 0, 0) == 0;
        cb(i);
    }
    return hits;
}
"""


def _objdump_loop(lib):
    out = subprocess.run(["aarch64-linux-gnu-objdump", "-d", "--no-show-raw-insn", lib],
                         capture_output=True, text=True, check=True).stdout
    body = out.split("<hazard_loop>:", 1)[1].split("\n\n", 1)[0]
    return body


@pytest.mark.parametrize("flags, binding", [(["-fno-plt"], "now"), (["-fplt"], "now"),
                                           (["-fplt"], "lazy")],
                         ids=["noplt", "plt-now", "plt-lazy"])
def test_aarch64_register_cached_got_address(aarch64_python, tmp_path, flags, binding):
    """plthook's known aarch64 hazard, checked for greenhook: under ``-O2 -fno-plt`` GCC for
    aarch64 loads a callee's GOT slot once (``adrp``/``ldr x23``) and calls it in a loop with
    ``blr x23``; x86_64's ``-fno-plt`` reloads the slot at every ``call *slot(%rip)``.  So on
    aarch64 a C function already running when the slot is patched keeps calling the
    original until it returns; its next activation is greened.  Through the PLT (``-fplt``,
    lazy or not) every call reloads the slot: a patch mid-activation takes effect at once --
    also when the first call of that activation was the one that bound the slot lazily
    (plthook's failing case had ``-fno-plt``: its GLOB_DAT slot was loaded into a register).
    The sample ``noplt`` library does the same (recv_exact keeps recv in x25): patch before the
    library's calls start (README, Known limits)."""
    src = tmp_path / "hazard.c"
    src.write_text(HAZARD_C)
    lib = str(tmp_path / "libhazard.so")
    subprocess.run([CROSS_CC, "-O2", "-fPIC", "-shared", *flags, "-o", lib, str(src),
                    "-Wl,-z,relro,-z," + binding], check=True, capture_output=True)
    body = _objdump_loop(lib)
    cached = re.findall(r"blr\s+(x(?:19|2[0-8]))", body)
    if flags == ["-fno-plt"]:
        # the poll address sits in a callee-saved register across the loop
        assert re.search(r"ldr\s+%s, \[%s" % (cached[0], cached[0]), body), body
    else:
        assert re.search(r"bl\s+\S+ <poll@plt>", body), body
    n = 5
    out = json.loads(_aarch64(aarch64_python, textwrap.dedent("""
        import ctypes, json, greenhook
        greenhook.use("builtin")
        lib = ctypes.CDLL(%r)
        CB = ctypes.CFUNCTYPE(None, ctypes.c_int)
        calls = []
        def patch_after_first(i):
            if i == 0:
                greenhook.patch_library(%r)
                greenhook.reset_stats()
            calls.append(greenhook.stats().get("poll", {}).get("calls", 0))
        cb = CB(patch_after_first)
        first = lib.hazard_loop(%d, cb)
        during = greenhook.stats().get("poll", {}).get("calls", 0)
        greenhook.reset_stats()
        second = lib.hazard_loop(%d, CB(lambda i: None))
        after = greenhook.stats().get("poll", {}).get("calls", 0)
        print(json.dumps({"first": first, "during": during, "second": second, "after": after}))
    """ % (lib, lib, n, n))))
    print("\n[aarch64] %s -z %s: poll calls hooked during the patching activation %d/%d, next "
          "activation %d/%d" % (flags[0], binding, out["during"], n - 1, out["after"], n))
    assert out["first"] == out["second"] == n, out          # poll() returned 0 every time
    assert out["after"] == n, out                            # a new activation is greened
    if flags == ["-fno-plt"]:
        assert out["during"] == 0, out      # the register-cached original: the hazard
    else:
        assert out["during"] == n - 1, out  # through the PLT: the patch applies at once


def test_x86_64_noplt_reloads_the_slot(tmp_path):
    """The contrast, on the host: x86_64 ``-O2 -fno-plt`` calls ``*slot(%rip)`` every time, so
    a patch mid-activation takes effect at once (4 of 4), as through the PLT."""
    import platform
    if platform.machine() != "x86_64":
        skip_or_fail("the host is not x86_64")
    src = tmp_path / "hazard.c"
    src.write_text(HAZARD_C)
    lib = str(tmp_path / "libhazard.so")
    subprocess.run(["cc", "-O2", "-fPIC", "-shared", "-fno-plt", "-o", lib, str(src),
                    "-Wl,-z,relro,-z,now"], check=True, capture_output=True)
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", lib], capture_output=True,
                         text=True, check=True).stdout
    body = dis.split("<hazard_loop>:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"call\s+\*0x[0-9a-f]+\(%rip\)", body), body
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import ctypes, greenhook
        greenhook.use("builtin")
        lib = ctypes.CDLL(%r)
        CB = ctypes.CFUNCTYPE(None, ctypes.c_int)
        def patch_after_first(i):
            if i == 0:
                greenhook.patch_library(%r)
                greenhook.reset_stats()
        assert lib.hazard_loop(5, CB(patch_after_first)) == 5
        print(greenhook.stats().get("poll", {}).get("calls", 0))
    """ % (lib, lib))], capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "4", proc.stdout
