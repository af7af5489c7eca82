"""greenhook audit and the on-disk ELF reader behind it.

Checked three ways: against ``readelf -rW`` on real system libraries, on small libraries
built here with ``cc`` under a matrix of link flags, and on the real driver libraries
(libmariadb, libpq, libmemcached, libcurl) when they are installed.
"""

import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import time

import pytest

from greenhook_test_support import skip_or_fail

from greenhook import _symbols, audit as audit_mod
from greenhook._elffile import MalformedELF, UnsupportedELF, read_elf
from greenhook.audit import audit, main
from greenhook.exceptions import GreenhookError, LibraryNotFound, NotAnELF

MACHINE = os.uname().machine
DATA_PTR = {"x86_64": "64", "aarch64": "ABS64"}.get(MACHINE)
HAVE_CC = shutil.which("cc") is not None
HAVE_READELF = shutil.which("readelf") is not None

needs_cc = pytest.mark.skipif(not HAVE_CC, reason="no C compiler (cc)")
needs_readelf = pytest.mark.skipif(not HAVE_READELF, reason="readelf (binutils) not installed")
supported_machine = pytest.mark.skipif(DATA_PTR is None, reason="x86_64/aarch64 only")


def find_system_library(soname):
    path = audit_mod._Resolver(audit_mod._host_machine()).find(soname)
    if path is None:
        skip_or_fail("%s is not installed (not found through ldconfig or system dirs)" % soname)
    return path


def readelf_slots(path, types=("JUMP_SLOT", "GLOB_DAT")):
    """{(symbol, version, type)} for the named relocation types, as readelf prints them."""
    out = subprocess.run(["readelf", "-rW", path], check=True, capture_output=True,
                         text=True).stdout
    found = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 5 or not re.match(r"R_\w+_(%s)$" % "|".join(types), fields[2]):
            continue
        name, _, version = fields[4].partition("@")
        rtype = re.sub(r"^R_(X86_64|AARCH64)_", "", fields[2])
        found.add((name, version.lstrip("@") or None, rtype))
    return found


def our_slots(elf, types=("JUMP_SLOT", "GLOB_DAT")):
    return {(r.symbol, r.version, r.type_name) for r in elf.relocations
            if r.type_name in types and r.symbol}


# --- fixtures built with cc ---

RECV_LIB = r"""
#include <sys/types.h>
#include <sys/socket.h>
ssize_t fixture_read(int fd, void *buf, size_t n) { return recv(fd, buf, n, 0); }
"""

FNPTR_LIB = r"""
#include <sys/types.h>
#include <sys/socket.h>
ssize_t (*fixture_recv_ptr)(int, void *, size_t, int) = recv;
ssize_t fixture_read(int fd, void *buf, size_t n) { return recv(fd, buf, n, 0); }
"""

GAI_LIB = r"""
#include <stddef.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <netdb.h>
#include <poll.h>
int fixture_resolve(const char *host, struct addrinfo **out) {
    return getaddrinfo(host, NULL, NULL, out);
}
int fixture_wait(int fd) { struct pollfd p = {fd, POLLIN, 0}; return poll(&p, 1, 10); }
int fixture_epoll(int ep, struct epoll_event *ev) { return epoll_wait(ep, ev, 1, 10); }
"""

SYSCALL_LIB = r"""
#define _GNU_SOURCE
#include <unistd.h>
#include <sys/syscall.h>
long fixture_read(int fd, void *buf, unsigned long n) { return syscall(SYS_read, fd, buf, n); }
"""

FORTIFY_LIB = r"""
#include <sys/types.h>
#include <sys/socket.h>
int fixture_read(int fd) { char buf[64]; return (int)recv(fd, buf, 100, 0); }
"""

MIDPTR_LIB = r"""
#include <sys/types.h>
#include <sys/socket.h>
char *fixture_mid = (char *)recv + 4;
ssize_t fixture_read(int fd, void *buf, size_t n) { return recv(fd, buf, n, 0); }
"""

STATIC_EXE = r"""
#include <sys/types.h>
#include <sys/socket.h>
int main(int argc, char **argv) { char b[8]; return argc > 5 ? (int)recv(0, b, 8, 0) : 0; }
"""


def cc(workdir, output, source, *flags):
    src = os.path.join(workdir, os.path.basename(output) + ".c")
    with open(src, "w") as f:
        f.write(source)
    cmd = ["cc", "-o", output, src, *flags]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError("%s failed:\n%s" % (" ".join(cmd), res.stderr))
    return output


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not HAVE_CC:
        skip_or_fail("no C compiler (cc)")
    d = str(tmp_path_factory.mktemp("audit_fixtures"))
    shared = ["-shared", "-fPIC", "-O0"]

    def lib(name, source, *flags):
        return cc(d, os.path.join(d, name), source, *shared, *flags)

    return {
        "dir": d,
        "lazy": lib("liblazy.so", RECV_LIB, "-Wl,-z,relro,-z,lazy"),
        "now": lib("libnow.so", RECV_LIB, "-Wl,-z,relro,-z,now"),
        "norelro": lib("libnorelro.so", RECV_LIB, "-Wl,-z,norelro,-z,lazy"),
        "noplt": lib("libnoplt.so", RECV_LIB, "-fno-plt", "-Wl,-z,relro,-z,lazy"),
        "fnptr": lib("libfnptr.so", FNPTR_LIB),
        "midptr": lib("libmidptr.so", MIDPTR_LIB),
        "gai": lib("libgai.so", GAI_LIB),
        "syscall": lib("libsyscall.so", SYSCALL_LIB),
        "fortify": lib("libfortify.so", FORTIFY_LIB, "-O2", "-D_FORTIFY_SOURCE=2"),
    }


@pytest.fixture(scope="module")
def static_exe(built):
    try:
        return cc(built["dir"], os.path.join(built["dir"], "static_exe"), STATIC_EXE, "-static")
    except RuntimeError as e:
        skip_or_fail("cannot link statically here (no libc.a?): %s" % e)


def the_only(libs):
    assert len([x for x in libs if x.status == "audited"]) == 1, [x.name for x in libs]
    return libs[0]


# --- the ELF reader on real system libraries ---

def test_libc_defines_recv_and_does_not_import_it():
    elf = read_elf(find_system_library("libc.so.6"))
    assert elf.soname == "libc.so.6"
    assert "recv" not in elf.imports
    assert elf.defines("recv")
    assert elf.defines("getaddrinfo")


def test_libcrypto_imports_connect():
    elf = read_elf(find_system_library("libcrypto.so.3"))
    assert elf.soname == "libcrypto.so.3"
    assert "libc.so.6" in elf.needed
    assert "connect" in elf.imports
    assert {r.type_name for r in elf.imports["connect"]} <= {"JUMP_SLOT", "GLOB_DAT"}
    assert all(r.undefined for r in elf.imports["connect"])
    assert not elf.defines("connect")


@needs_readelf
@pytest.mark.parametrize("soname", ["libc.so.6", "libcrypto.so.3", "libssl.so.3"])
def test_slots_match_readelf(soname):
    path = find_system_library(soname)
    assert our_slots(read_elf(path)) == readelf_slots(path)


@needs_readelf
def test_every_relocation_matches_readelf():
    """Offsets and types of all relocations (RELATIVE included), not only the named ones."""
    path = find_system_library("libcrypto.so.3")
    elf = read_elf(path)
    out = subprocess.run(["readelf", "-rW", path], check=True, capture_output=True,
                         text=True).stdout
    theirs = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2].startswith("R_"):
            theirs.add((int(fields[0], 16), fields[2]))
    ours = {(r.offset, elf.reloc_prefix + r.type_name) for r in elf.relocations
            if r.table != "relr"}
    assert ours == theirs


@needs_readelf
def test_dynamic_facts_match_readelf():
    path = find_system_library("libcrypto.so.3")
    elf = read_elf(path)
    out = subprocess.run(["readelf", "-dlW", path], check=True, capture_output=True,
                         text=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", out)
    assert elf.needed == needed
    assert elf.soname == re.search(r"\(SONAME\)\s+Library soname: \[(.*)\]", out).group(1)
    assert elf.has_relro_segment == ("GNU_RELRO" in out)
    bind_now = "BIND_NOW" in out or re.search(r"FLAGS_1\)\s+Flags:.*\bNOW\b", out) is not None
    assert elf.bind_now == bind_now


def test_libcrypto_parses_fast():
    path = find_system_library("libcrypto.so.3")
    best = min(_timed(read_elf, path) for _ in range(3))
    assert best < 0.5, "parsing libcrypto took %.3f s" % best


def _timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


# --- link-flag matrix ---

@supported_machine
def test_lazy_binding_partial_relro(built):
    elf = read_elf(built["lazy"])
    assert (elf.binding, elf.relro) == ("lazy", "partial")
    assert [r.type_name for r in elf.imports["recv"]] == ["JUMP_SLOT"]
    assert elf.imports["recv"][0].table == "jmprel"
    lib = the_only(audit(built["lazy"]))
    assert lib.import_named("recv").verdict == "greened"
    assert lib.summary == "fully greenable"


@supported_machine
def test_full_relro(built):
    elf = read_elf(built["now"])
    assert (elf.binding, elf.relro) == ("now", "full")
    assert all(r.in_relro for r in elf.imports["recv"])


@supported_machine
def test_no_relro(built):
    elf = read_elf(built["norelro"])
    assert elf.relro == "none"
    assert not any(r.in_relro for r in elf.relocations)


@supported_machine
def test_no_plt_uses_glob_dat(built):
    elf = read_elf(built["noplt"])
    assert [r.type_name for r in elf.imports["recv"]] == ["GLOB_DAT"]
    lib = the_only(audit(built["noplt"]))
    recv = lib.import_named("recv")
    assert [s.type for s in recv.slots] == ["GLOB_DAT"]
    assert recv.verdict == "greened"


@supported_machine
def test_function_pointer_in_data(built):
    elf = read_elf(built["fnptr"])
    kinds = sorted(r.type_name for r in elf.imports["recv"])
    assert DATA_PTR in kinds and "JUMP_SLOT" in kinds, kinds
    lib = the_only(audit(built["fnptr"]))
    recv = lib.import_named("recv")
    assert {s.type for s in recv.slots} == set(kinds)
    assert recv.category == "greened"


@supported_machine
def test_pointer_into_a_function_is_not_patched(built):
    """The patcher leaves data pointers with an addend alone: say so."""
    elf = read_elf(built["midptr"])
    assert any(r.type_name == DATA_PTR and r.addend == 4 for r in elf.imports["recv"])
    recv = the_only(audit(built["midptr"])).import_named("recv")
    assert recv.category == "not_greenable"
    assert "with addend" in recv.verdict


@needs_readelf
@supported_machine
@pytest.mark.parametrize("name", ["lazy", "now", "noplt", "fnptr", "gai", "fortify"])
def test_fixture_slots_match_readelf(built, name):
    types = ("JUMP_SLOT", "GLOB_DAT", DATA_PTR)
    assert our_slots(read_elf(built[name]), types) == readelf_slots(built[name], types)


@supported_machine
def test_getaddrinfo_greened_epoll_still_blocks(built):
    lib = the_only(audit(built["gai"]))
    assert lib.summary == "will still block in: epoll_wait"
    assert lib.still_blocking == ["epoll_wait"]
    ep = lib.import_named("epoll_wait")
    assert ep.category == "not_greened_yet"
    assert ep.verdict == "not greened yet: " + _symbols.NOT_GREENED_YET["epoll_wait"]
    assert lib.import_named("getaddrinfo").verdict == "greened"
    assert lib.import_named("poll").verdict == "greened"


@supported_machine
def test_syscall_import_is_flagged(built):
    elf = read_elf(built["syscall"])
    assert elf.imports_syscall
    lib = the_only(audit(built["syscall"]))
    assert lib.import_named("syscall").category == "not_greenable"
    assert "syscall()" in lib.summary


@supported_machine
def test_fortify_twin_is_greened(built):
    lib = the_only(audit(built["fortify"]))
    chk = lib.import_named("__recv_chk")
    if chk is None:
        skip_or_fail("this compiler did not emit __recv_chk (imports: %s)"
                    % [i.symbol for i in lib.imports])
    assert chk.verdict == "greened"


def test_statically_linked_executable(static_exe):
    elf = read_elf(static_exe)
    assert elf.static and not elf.dynamic and not elf.relocations
    [lib] = audit(static_exe)
    assert lib.static
    assert lib.summary.startswith("not greenable: statically linked")


def test_static_pie_executable(built):
    try:
        exe = cc(built["dir"], os.path.join(built["dir"], "static_pie"), STATIC_EXE,
                 "-static-pie")
    except RuntimeError as e:
        skip_or_fail("toolchain cannot build -static-pie: %s" % e)
    elf = read_elf(exe)
    assert elf.dynamic and elf.static
    assert audit(exe)[0].summary.startswith("not greenable")


# --- closures and name resolution ---

HELPER_LIB = r"""
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/epoll.h>
long hashed_helper(int fd) {
    char b[4];
    struct epoll_event ev;
    if (fd < -1) epoll_wait(fd, &ev, 1, 0);
    return fd < 0 ? 0 : (long)recv(fd, b, sizeof b, 0);
}
"""

USER_LIB = r"""
long hashed_helper(int fd);
long fixture_use(int fd) { return hashed_helper(fd); }
"""


def _hashed_layout(root, dtags):
    """root/ext.so needs libhelper-1a2b3c4d.so.1, found in root/ext.libs via $ORIGIN."""
    libs = os.path.join(root, "ext.libs")
    os.makedirs(libs, exist_ok=True)
    helper = cc(root, os.path.join(libs, "libhelper-1a2b3c4d.so.1"), HELPER_LIB, "-shared",
                "-fPIC", "-Wl,-soname,libhelper-1a2b3c4d.so.1")
    ext = cc(root, os.path.join(root, "ext.so"), USER_LIB, "-shared", "-fPIC", helper,
             "-Wl,-rpath,$ORIGIN/ext.libs", dtags)
    return ext, helper


@needs_cc
@supported_machine
@pytest.mark.parametrize("dtags,attr", [("-Wl,--enable-new-dtags", "runpath"),
                                        ("-Wl,--disable-new-dtags", "rpath")])
def test_origin_relative_hashed_dependency(tmp_path, monkeypatch, dtags, attr):
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    ext, helper = _hashed_layout(str(tmp_path), dtags)
    assert getattr(read_elf(ext), attr) == ["$ORIGIN/ext.libs"]
    libs = audit(ext)
    by_name = {x.name: x for x in libs}
    dep = by_name["libhelper-1a2b3c4d.so.1"]
    assert dep.status == "audited"
    assert os.path.samefile(dep.path, helper)
    assert dep.needed_by == ext
    assert dep.import_named("recv").verdict == "greened"
    assert dep.summary == "will still block in: epoll_wait"
    assert by_name["libc.so.6"].status == "skipped"
    assert by_name["libc.so.6"].summary == "skipped (system runtime)"
    assert by_name["ext.so"].summary == "nothing blocking imported"


@needs_cc
@supported_machine
def test_missing_dependency_is_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    ext, helper = _hashed_layout(str(tmp_path), "-Wl,--enable-new-dtags")
    os.unlink(helper)
    dep = {x.name: x for x in audit(ext)}["libhelper-1a2b3c4d.so.1"]
    assert dep.status == "not found" and dep.path is None
    assert "needed by" in dep.summary


@needs_cc
@supported_machine
def test_soname_through_ld_library_path(tmp_path, monkeypatch):
    lib = cc(str(tmp_path), str(tmp_path / "libghaudittest.so.7"), GAI_LIB, "-shared", "-fPIC",
             "-Wl,-soname,libghaudittest.so.7")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/nonexistent:" + str(tmp_path))
    libs = audit("libghaudittest.so.7")
    assert os.path.samefile(libs[0].path, lib)
    assert libs[0].soname == "libghaudittest.so.7"
    monkeypatch.delenv("LD_LIBRARY_PATH")
    with pytest.raises(LibraryNotFound):
        audit("libghaudittest.so.7")


def test_soname_through_ldconfig_cache():
    path = find_system_library("libcrypto.so.3")
    libs = audit("libcrypto.so.3")
    assert libs[0].path == path and libs[0].status == "audited"
    assert "libc.so.6" in [x.name for x in libs if x.status == "skipped"]
    assert all(x.status != "not found" for x in libs)


def test_no_deps():
    libs = audit(find_system_library("libcrypto.so.3"), follow_needed=False)
    assert [x.name for x in libs] == ["libcrypto.so.3"]


EXT_MODULE = r"""
#include <Python.h>
long hashed_helper(int fd);
static PyObject *use(PyObject *self, PyObject *arg) { return PyLong_FromLong(hashed_helper(-1)); }
static PyMethodDef methods[] = {{"use", use, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "MODNAME", NULL, -1, methods};
PyMODINIT_FUNC PyInit_MODNAME(void) { return PyModule_Create(&def); }
"""


@needs_cc
@supported_machine
def test_module_target_follows_bundled_libs(tmp_path, monkeypatch):
    """Like a wheel: pkg.libs/libhelper-<hash>.so.1 found through the extension's RPATH."""
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        skip_or_fail("Python.h not available")
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    name = "gh_audit_ext_%d" % os.getpid()
    root = str(tmp_path)
    libs = os.path.join(root, name + ".libs")
    os.makedirs(libs)
    helper = cc(root, os.path.join(libs, "libhelper-1a2b3c4d.so.1"), HELPER_LIB, "-shared",
                "-fPIC", "-Wl,-soname,libhelper-1a2b3c4d.so.1")
    ext = os.path.join(root, name + sysconfig.get_config_var("EXT_SUFFIX"))
    cc(root, ext, EXT_MODULE.replace("MODNAME", name), "-shared", "-fPIC", "-I", include,
       helper, "-Wl,-rpath,$ORIGIN/%s.libs" % name)
    monkeypatch.syspath_prepend(root)
    try:
        libraries = audit(name)
    finally:
        sys.modules.pop(name, None)
    assert libraries[0].path == ext
    dep = {x.name: x for x in libraries}["libhelper-1a2b3c4d.so.1"]
    assert dep.status == "audited" and os.path.samefile(dep.path, helper)
    assert dep.still_blocking == ["epoll_wait"]
    assert not [x for x in libraries if x.status == "audited" and
                audit_mod.is_system_runtime(x.name, x.path) and x is not libraries[0]]


def test_pure_python_module_is_bad_input():
    with pytest.raises(GreenhookError, match="pure Python"):
        audit("json")


def test_unknown_name_is_bad_input():
    with pytest.raises(GreenhookError, match="no such file, shared library or importable"):
        audit("gh_no_such_module_or_library")


def test_runtime_names():
    for name in ("libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
                 "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "libgcc_s.so.1",
                 "libstdc++.so.6", "libpython3.11.so.1.0"):
        assert audit_mod.is_system_runtime(name), name
    for name in ("libcrypto.so.3", "libmariadb.so.3", "libcurl.so.4", "libcom_err.so.2"):
        assert not audit_mod.is_system_runtime(name), name


# --- errors ---

def test_missing_file():
    with pytest.raises(LibraryNotFound, match="no such file"):
        read_elf("/nonexistent/libnothing.so.1")


def test_text_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello, this is not a library\n")
    with pytest.raises(NotAnELF) as info:
        read_elf(str(p))
    assert str(p) in str(info.value) and "hello, t" in str(info.value)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.so"
    p.write_bytes(b"")
    with pytest.raises(NotAnELF, match="empty"):
        read_elf(str(p))


def test_directory(tmp_path):
    with pytest.raises(NotAnELF, match="directory"):
        read_elf(str(tmp_path))


def _copy_of(path):
    with open(path, "rb") as f:
        return bytearray(f.read())


@pytest.mark.parametrize("index,value,what", [(4, 1, "32-bit"), (5, 2, "big-endian")])
def test_unsupported_class(tmp_path, index, value, what):
    data = _copy_of(find_system_library("libc.so.6"))[:4096]
    data[index] = value
    p = tmp_path / "odd.so"
    p.write_bytes(bytes(data))
    with pytest.raises(UnsupportedELF, match="unsupported ELF class.*" + what):
        read_elf(str(p))


def test_truncated_elf_names_the_offset(tmp_path):
    data = _copy_of(find_system_library("libcrypto.so.3"))
    p = tmp_path / "truncated.so"
    p.write_bytes(bytes(data[:len(data) // 2]))   # the dynamic segment is in the second half
    with pytest.raises(MalformedELF) as info:
        read_elf(str(p))
    assert re.search(r"offset 0x[0-9a-f]+", str(info.value)), str(info.value)
    assert str(p) in str(info.value)


@supported_machine
def test_truncation_and_corruption_never_escape(built, tmp_path):
    """Every prefix and many random byte flips: parse, or raise a GreenhookError. Nothing else."""
    data = _copy_of(built["fnptr"])
    p = str(tmp_path / "mangled.so")
    cases = [bytes(data[:n]) for n in range(0, len(data), max(1, len(data) // 300))]
    rng = random.Random(1234)
    for _ in range(300):
        mangled = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            # Bias to the headers and the dynamic tables, where corruption matters.
            i = rng.randrange(min(len(data), 4096)) if rng.random() < 0.7 else \
                rng.randrange(len(data))
            mangled[i] = rng.randrange(256)
        cases.append(bytes(mangled))
    for case in cases:
        with open(p, "wb") as f:
            f.write(case)
        try:
            elf = read_elf(p)
            elf.symbols()
            audit_mod.audit_elf(elf)
        except GreenhookError:
            pass


# --- command line ---

def run_main(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_table(capsys):
    rc, out, err = run_main(capsys, find_system_library("libcrypto.so.3"))
    assert rc == 0 and err == ""
    assert "libcrypto.so.3" in out
    assert re.search(r"^\s+connect\s+JUMP_SLOT\s+greened$", out, re.M) or \
        re.search(r"^\s+connect\s+GLOB_DAT\s+greened$", out, re.M)
    assert re.search(r"^\s+getaddrinfo\s+JUMP_SLOT\s+greened$", out, re.M)
    assert re.search(r"^  => fully greenable", out, re.M)
    assert re.search(r"^skipped \(system runtime\): .*libc\.so\.6", out, re.M)
    assert "\033[" not in out           # not a TTY: no colour


def test_cli_colour_only_on_tty_without_no_color(capsys, monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    target = find_system_library("libcrypto.so.3")
    for no_color, expect in ((None, True), ("1", False)):
        if no_color is None:
            monkeypatch.delenv("NO_COLOR", raising=False)
        else:
            monkeypatch.setenv("NO_COLOR", no_color)
        fake = Tty()
        monkeypatch.setattr(sys, "stdout", fake)
        assert main([target, "--no-deps"]) == 0
        assert ("\033[" in fake.getvalue()) == expect


def test_cli_json(capsys):
    rc, out, err = run_main(capsys, "libcrypto.so.3", "--json")
    assert rc == 0 and err == ""
    doc = json.loads(out)
    assert doc["schema"] == 1
    assert doc["target"] == "libcrypto.so.3" and doc["target_kind"] == "soname"
    lib = doc["libraries"][0]
    assert set(lib) == {"name", "path", "status", "needed_by", "soname", "machine", "static",
                        "relro", "binding", "needed", "rpath", "runpath", "imports",
                        "still_blocking", "summary"}
    connect = [i for i in lib["imports"] if i["symbol"] == "connect"][0]
    assert set(connect) == {"symbol", "version", "category", "verdict", "reason", "slots"}
    assert connect["category"] == "greened"
    assert set(connect["slots"][0]) == {"type", "offset", "table"}
    assert [i["category"] for i in lib["imports"] if i["symbol"] == "getaddrinfo"] == ["greened"]
    assert lib["still_blocking"] == []
    skipped = [x for x in doc["libraries"] if x["status"] == "skipped"]
    assert "libc.so.6" in [x["name"] for x in skipped]
    # stable: the same input gives byte-identical output
    assert run_main(capsys, "libcrypto.so.3", "--json")[1] == out


@pytest.mark.parametrize("argv", [["/nonexistent/libx.so.1"], ["libghnothing.so.9"],
                                  ["/etc/hostname"], ["--bogus", "x"], []])
def test_cli_bad_input(capsys, argv):
    if argv == ["/etc/hostname"] and not os.path.exists("/etc/hostname"):
        skip_or_fail("no /etc/hostname")
    rc, out, err = run_main(capsys, *argv)
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("greenhook audit: error: ")
    assert "Traceback" not in err


def test_cli_runs_as_module():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join(os.path.dirname(os.path.dirname(__file__)), "src")]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    res = subprocess.run([sys.executable, "-m", "greenhook.audit", "libghnothing.so.9"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 2 and res.stderr.count("\n") == 1


# --- the real drivers' libraries ---

def audited(soname):
    libs = audit(find_system_library(soname))
    lib = libs[0]
    assert lib.status == "audited"
    return lib


def assert_greened(lib, *symbols):
    for s in symbols:
        imp = lib.import_named(s)
        assert imp is not None, "%s does not import %s" % (lib.name, s)
        assert imp.verdict == "greened", (s, imp.verdict)


@supported_machine
def test_libmariadb():
    lib = audited("libmariadb.so.3")
    assert lib.still_blocking == [] and lib.summary == "fully greenable"
    assert_greened(lib, "recv", "poll", "connect", "send", "getaddrinfo")
    assert lib.import_named("setsockopt").category == "context"


@supported_machine
def test_libpq():
    lib = audited("libpq.so.5")
    assert_greened(lib, "connect", "recv", "send", "poll")
    assert_greened(lib, "getaddrinfo", "getnameinfo")
    assert lib.still_blocking == []


@supported_machine
def test_libmemcached():
    lib = audited("libmemcached.so.11")
    assert_greened(lib, "connect", "recv", "send", "sendmsg", "poll", "getaddrinfo")
    assert lib.still_blocking == []


@supported_machine
def test_libcurl():
    lib = audited("libcurl.so.4")
    assert_greened(lib, "connect", "recv", "send", "poll", "getaddrinfo")
    assert lib.still_blocking == []
    assert lib.import_named("__fdelt_chk").category == "context"
