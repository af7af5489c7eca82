"""Scenario for ``tests/test_elf_robust.py``: what the public API raises for a missing module,
a failing import, a path through a plain file, a symlink loop, an ELF file of another class or
machine, a truncated one and an unreadable one.

The unreadable file is mode 000 and this process drops ``CAP_DAC_OVERRIDE`` and
``CAP_DAC_READ_SEARCH`` first, so that the mode counts even when the tests run as root.

``python elf_bad_input.py TMPDIR`` reports ``out = {case: {"type", "mro", "message", "errno",
"cause"} or None}``.
"""
import ctypes
import os
import shutil
import struct
import sys

import greenhook
from greenhook import audit, samples
from ghscen import report

CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
EM_X86_64, EM_AARCH64 = 62, 183

tmp = sys.argv[1]


def caught(fn, *args):
    try:
        fn(*args)
    except Exception as exc:
        cause = exc.__cause__
        return {"type": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__],
                "message": str(exc), "errno": getattr(exc, "errno", None),
                "cause": type(cause).__name__ if cause is not None else None}
    return None


def write(name, data):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def drop_dac_capabilities():
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    hdr, caps = Header(_LINUX_CAPABILITY_VERSION_3, 0), (Data * 2)()
    assert libc.capget(ctypes.byref(hdr), caps) == 0, os.strerror(ctypes.get_errno())
    mask = (1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH)
    caps[0].effective &= ~mask
    caps[0].permitted &= ~mask
    assert libc.capset(ctypes.byref(hdr), caps) == 0, os.strerror(ctypes.get_errno())


out = {}

# modules
out["no_module"] = caught(greenhook.patch_module, "no_such_module_gh.sub")
out["no_submodule"] = caught(greenhook.patch_module, "greenhook.samples._bin._ghsample_nope")
pkg = os.path.join(tmp, "pkg", "brokenmod_gh")
os.makedirs(pkg)
with open(os.path.join(pkg, "__init__.py"), "w") as f:
    f.write("raise ImportError('libnothing.so.1: cannot open shared object file')\n")
sys.path.insert(0, os.path.dirname(pkg))
out["import_fails"] = caught(greenhook.patch_module, "brokenmod_gh")
out["bad_name"] = caught(greenhook.patch_module, "not a module")
out["audit_no_module"] = caught(audit.audit, "no_such_module_gh")

# paths
plain = write("plainfile", b"x")
out["enotdir"] = caught(greenhook.patch_library, os.path.join(plain, "libx.so"))
loop = os.path.join(tmp, "libloop.so")
os.symlink(loop, loop)
out["eloop"] = caught(greenhook.patch_library, loop)

# ELF files greenhook cannot patch
src = samples.library_path("now")
with open(src, "rb") as f:
    data = f.read()
wrong_class = bytearray(data)
wrong_class[4] = 1                                        # ELFCLASS32
wrong_class = write("libclass32.so", wrong_class)
wrong_machine = bytearray(data)
machine = struct.unpack_from("<H", wrong_machine, 18)[0]
struct.pack_into("<H", wrong_machine, 18, EM_AARCH64 if machine == EM_X86_64 else EM_X86_64)
wrong_machine = write("libothermachine.so", wrong_machine)
out["wrong_class"] = caught(greenhook.patch_library, wrong_class)
out["wrong_machine"] = caught(greenhook.patch_library, wrong_machine)
out["audit_wrong_class"] = caught(audit.audit, wrong_class)
out["short"] = caught(greenhook.patch_library, write("libshort.so", data[:10]))

# an unreadable file
unreadable = os.path.join(tmp, "libunreadable.so")
shutil.copy(src, unreadable)
os.chmod(unreadable, 0)
drop_dac_capabilities()
try:
    open(unreadable, "rb").close()
    precondition = "readable"
except PermissionError:
    precondition = "EACCES"
out["unreadable"] = caught(greenhook.patch_library, unreadable)
out["audit_unreadable"] = caught(audit.audit, unreadable)
rc = audit.main([unreadable])
report(out=out, precondition=precondition, audit_rc=rc,
       patched=[r.library for r in greenhook.patched_libraries()])
