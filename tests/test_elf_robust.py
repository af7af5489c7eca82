"""Robust inputs: the ELF readers never fault, hang or leak a raw exception.

* Mutation tests: copies of the sample libraries with one field of their dynamic section,
  program headers, relocations or symbols changed (sizes, counts, addresses, entry sizes, huge
  values...), generated in a loop.  Each mutant is audited (``greenhook audit`` must exit 0, or
  2 with one line), then loaded in a forked child: if the loader refuses it (an error, or even
  dying inside ``dlopen``) that case is the loader's; if it loads, ``patch_library`` must patch
  or raise a ``GreenhookError``, and the child must never die by a signal.
* Non-regular files (FIFO, socket, character device, directory) are refused at once, unopened.
* Raw ``ModuleNotFoundError`` / ``PermissionError`` / ``OSError`` never escape the public API.
* ``write_slots`` is all or nothing: a page that cannot be made writable part-way rolls back the
  slots already written, and ``unpatch`` keeps a library it could not restore.
"""
import json
import os
import struct
import textwrap

import pytest

from greenhook_test_support import SCENARIO_DIR, run_checked, run_scenario, skip_or_fail

MACHINE = os.uname().machine

# <elf.h>
PT_LOAD, PT_DYNAMIC = 1, 2
DT_NULL, DT_NEEDED, DT_PLTRELSZ, DT_HASH, DT_STRTAB, DT_SYMTAB = 0, 1, 2, 4, 5, 6
DT_RELA, DT_RELASZ, DT_RELAENT, DT_STRSZ, DT_SYMENT, DT_SONAME = 7, 8, 9, 10, 11, 14
DT_PLTREL, DT_JMPREL = 20, 23
DT_GNU_HASH, DT_VERSYM, DT_RELACOUNT = 0x6FFFFEF5, 0x6FFFFFF0, 0x6FFFFFF9
DT_VERNEED, DT_VERNEEDNUM = 0x6FFFFFFE, 0x6FFFFFFF
TAG_NAMES = {DT_NEEDED: "DT_NEEDED", DT_PLTRELSZ: "DT_PLTRELSZ", DT_HASH: "DT_HASH",
             DT_STRTAB: "DT_STRTAB", DT_SYMTAB: "DT_SYMTAB", DT_RELA: "DT_RELA",
             DT_RELASZ: "DT_RELASZ", DT_RELAENT: "DT_RELAENT", DT_STRSZ: "DT_STRSZ",
             DT_SYMENT: "DT_SYMENT", DT_SONAME: "DT_SONAME", DT_PLTREL: "DT_PLTREL",
             DT_JMPREL: "DT_JMPREL", DT_GNU_HASH: "DT_GNU_HASH", DT_VERSYM: "DT_VERSYM",
             DT_RELACOUNT: "DT_RELACOUNT", DT_VERNEED: "DT_VERNEED",
             DT_VERNEEDNUM: "DT_VERNEEDNUM"}
# Relocation types the patcher reads: JUMP_SLOT, GLOB_DAT, ABS64 (by e_machine).
PATCHED_TYPES = {62: (7, 6, 1), 183: (1026, 1025, 257)}

# Sizes the loader ignores: a mutant that loads must be patched exactly like the original.
IGNORED_BY_THE_LOADER = ("DT_SYMENT", "DT_STRSZ")

VARIANTS = ("lazy", "now", "noplt", "addrtaken")


def u64(v):
    return v & 0xFFFFFFFFFFFFFFFF


def size_values(orig, unit):
    """Wrong sizes/counts/addresses around ``orig``: zero, tiny, off by one entry, doubled,
    a page or a megabyte more, single bit flips, and huge."""
    vals = {0, 1, unit - 1, orig - unit, orig - 1, orig + 1, orig + unit, orig // 2, orig * 2,
            orig + 0x1000, orig + 0x100000, 1 << 31, 1 << 32, 1 << 47, 1 << 63, u64(-1)}
    vals |= {orig ^ (1 << bit) for bit in (0, 3, 5, 9, 12, 17, 24, 33, 47, 62)}
    return sorted(u64(v) for v in vals if u64(v) != orig)


class Layout:
    """Just enough of an ELF file to aim mutations: PT_LOADs, PT_DYNAMIC entries, the
    relocation tables and the symbols they name.  Independent of greenhook's readers."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = data = f.read()
        assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, path
        self.machine = struct.unpack_from("<H", data, 18)[0]
        phoff = struct.unpack_from("<Q", data, 32)[0]
        phentsize, phnum = struct.unpack_from("<HH", data, 54)
        self.phdrs = []      # (file offset of the header, type, offset, vaddr, filesz, memsz)
        for i in range(phnum):
            at = phoff + i * phentsize
            p_type, _flags, off, vaddr, _pa, filesz, memsz, _al = \
                struct.unpack_from("<IIQQQQQQ", data, at)
            self.phdrs.append((at, p_type, off, vaddr, filesz, memsz))
        self.loads = [p for p in self.phdrs if p[1] == PT_LOAD]
        dyn = [p for p in self.phdrs if p[1] == PT_DYNAMIC][0]
        self.dyn = []        # (file offset of the entry, tag, value)
        for at in range(dyn[2], dyn[2] + dyn[4], 16):
            tag, val = struct.unpack_from("<qQ", data, at)
            self.dyn.append((at, tag, val))
            if tag == DT_NULL:
                break
        self.tags = {tag: val for _at, tag, val in self.dyn}

    def offset(self, vaddr):
        for _at, _t, off, va, filesz, _m in self.loads:
            if va <= vaddr < va + filesz:
                return vaddr - va + off
        raise AssertionError("%#x is in no PT_LOAD" % vaddr)

    def relocations(self):
        """[(file offset, r_offset, type, symbol index)] of the JUMP_SLOT/GLOB_DAT/ABS64
        entries that name a symbol."""
        out = []
        for table, size in ((DT_JMPREL, DT_PLTRELSZ), (DT_RELA, DT_RELASZ)):
            if table not in self.tags:
                continue
            start = self.offset(self.tags[table])
            for at in range(start, start + self.tags[size], 24):
                r_offset, info, _addend = struct.unpack_from("<QQq", self.data, at)
                if info & 0xFFFFFFFF in PATCHED_TYPES[self.machine] and info >> 32:
                    out.append((at, r_offset, info & 0xFFFFFFFF, info >> 32))
        return out


def entry(value):
    return struct.pack("<Q", u64(value)).hex()


def mutations(path):
    """[(description, edits)] for one library; ``edits`` is [[file offset, hex bytes]]."""
    lay = Layout(path)
    cases = [("original", [])]
    # 1. every interesting dynamic entry, many wrong values
    units = {DT_SYMENT: 24, DT_RELAENT: 24, DT_RELASZ: 24, DT_PLTRELSZ: 24,
             DT_RELACOUNT: 1, DT_VERNEEDNUM: 1, DT_STRSZ: 1}
    for at, tag, val in lay.dyn:
        name = TAG_NAMES.get(tag)
        if name is None:
            continue
        for v in size_values(val, units.get(tag, 8)):
            cases.append(("%s=%#x (was %#x)" % (name, v, val), [[at + 8, entry(v)]]))
    # 2. the dynamic section cut short: DT_NULL in place of each entry
    for at, tag, val in lay.dyn[:-1]:
        cases.append(("dynamic section truncated at %s" % TAG_NAMES.get(tag, hex(tag)),
                      [[at, entry(DT_NULL)]]))
    # 3. PT_DYNAMIC and PT_LOAD sizes.  Never a PT_LOAD grown past its neighbours (a
    #    p_filesz beyond the file or past p_memsz, a p_memsz reaching the next segment): glibc
    #    maps it over whatever follows, other libraries included, and the process is then
    #    corrupt whoever reads that memory (plain ctypes.CDLL alone dies of it).
    for at, p_type, _off, _va, filesz, memsz in lay.phdrs:
        if p_type == PT_DYNAMIC:
            for v in (0, 16, memsz - 16, memsz + 0x10000, 1 << 40):
                cases.append(("PT_DYNAMIC p_memsz=%#x" % v, [[at + 40, entry(v)]]))
                cases.append(("PT_DYNAMIC p_filesz=%#x" % v, [[at + 32, entry(v)]]))
        elif p_type == PT_LOAD:
            for v in (0, 16, filesz // 2, filesz - 16):
                cases.append(("PT_LOAD@%#x p_filesz=%#x" % (at, v), [[at + 32, entry(v)]]))
            for v in (0, 16, memsz // 2, memsz - 16):
                cases.append(("PT_LOAD@%#x p_memsz=%#x" % (at, v), [[at + 40, entry(v)]]))
    # 4. relocations: symbol index past the table, slot address anywhere
    relocs = lay.relocations()
    text = min(va for _at, _t, _o, va, _f, _m in lay.loads if va)   # not the GOT
    for at, r_offset, rtype, sym in relocs[::max(1, len(relocs) // 6)]:
        for s in (sym + 1000, 0xFFFF, 0xFFFFFF, 0xFFFFFFFF):
            cases.append(("reloc@%#x symbol %d -> %d" % (at, sym, s),
                          [[at + 8, entry((s << 32) | rtype)]]))
        for off in (0, r_offset + 1, r_offset + 4, r_offset + 0x100000, text, 1 << 40,
                    u64(-8)):
            cases.append(("reloc@%#x r_offset %#x -> %#x" % (at, r_offset, off),
                          [[at, entry(off)]]))
    # 5. the imported symbols those relocations name: st_name anywhere
    symtab = lay.offset(lay.tags[DT_SYMTAB])
    strsz = lay.tags[DT_STRSZ]
    for sym in sorted({r[3] for r in relocs})[:6]:
        at = symtab + 24 * sym
        for name_off in (strsz - 1, strsz, strsz + 1000, 0xFFFFF, 0xFFFFFFFF):
            cases.append(("symbol %d st_name -> %#x" % (sym, name_off),
                          [[at, struct.pack("<I", name_off).hex()]]))
    return cases


@pytest.fixture(scope="module")
def sample_libraries():
    from greenhook import samples
    if MACHINE not in ("x86_64", "aarch64"):
        skip_or_fail("GOT patching supports x86_64 and aarch64 only")
    try:
        return {v: samples.library_path(v) for v in VARIANTS}
    except samples.SamplesNotBuilt as exc:
        skip_or_fail("sample libraries not built: %s" % exc)


@pytest.fixture(scope="module")
def mutants(sample_libraries, tmp_path_factory):
    """Run every generated case; {id: (variant, description, result)}."""
    work = str(tmp_path_factory.mktemp("mutants"))
    cases, meta = [], {}
    for variant, path in sample_libraries.items():
        for desc, edits in mutations(path):
            cid = len(cases)
            cases.append({"id": cid, "source": path, "name": os.path.basename(path),
                          "lazy": variant == "lazy", "edits": edits})
            meta[cid] = (variant, desc)
    cases_file = os.path.join(work, "cases.json")
    with open(cases_file, "w") as f:
        json.dump(cases, f)
    rc, out, err = run_scenario(os.path.join(SCENARIO_DIR, "elf_mutants.py"), timeout=600,
                                args=[cases_file, work])
    results = {}
    for line in out.splitlines():
        if line.startswith("GHCASE "):
            r = json.loads(line[len("GHCASE "):])
            results[r["id"]] = r
    assert rc == 0 and "Traceback" not in err, \
        "runner failed (status %s) after %d of %d cases\n%s" % (rc, len(results), len(cases),
                                                                 err[-3000:])
    assert len(results) == len(cases)
    return {cid: (meta[cid][0], meta[cid][1], results[cid]) for cid in results}


def _show(cases):
    return "\n".join("%s %s: %s" % (v, d, json.dumps(r)[:600]) for v, d, r in cases[:15])


def test_mutants_cover_every_kind_of_field(mutants):
    """The generator made cases for each field the issue names, and enough of them loaded
    for the patcher to have been exercised on corrupt input."""
    descs = [d for _v, d, _r in mutants.values()]
    for field in ("DT_SYMENT=", "DT_RELASZ=", "DT_PLTRELSZ=", "DT_STRSZ=", "DT_STRTAB=",
                  "DT_SYMTAB=", "DT_JMPREL=", "DT_RELA=", "DT_GNU_HASH=", "truncated",
                  "p_memsz", "symbol", "r_offset", "st_name"):
        assert sum(field in d for d in descs) >= 4, field
    outcomes = [r["outcome"] for _v, _d, r in mutants.values()]
    loaded = [o for o in outcomes if o in ("patched", "error")]
    assert len(mutants) >= 800, len(mutants)
    assert len(loaded) >= 200, "only %d of %d mutants loaded" % (len(loaded), len(mutants))
    assert outcomes.count("error") >= 10, "no mutant made the patcher refuse"


def test_no_mutant_crashes_or_hangs_the_patcher(mutants):
    """Died by a signal, exited or hung anywhere but inside dlopen: greenhook's fault."""
    bad = [(v, d, r) for v, d, r in mutants.values()
           if r["outcome"] in ("signal", "exit", "hang") and r["phase"] != "load"]
    assert not bad, "greenhook crashed or hung on a library the loader accepted:\n" + _show(bad)


def test_patcher_patches_or_raises_a_greenhook_error(mutants):
    bad = [(v, d, r) for v, d, r in mutants.values()
           if r["outcome"] not in ("patched", "error", "refused")
           and not (r["outcome"] in ("signal", "exit", "hang") and r["phase"] == "load")]
    assert not bad, _show(bad)
    for v, d, r in mutants.values():
        if r["outcome"] == "error":
            assert r["type"] in ("MalformedELF", "PatchError"), (v, d, r)
            assert "libghsample_%s.so" % v in r["detail"], (v, d, r)
            assert "corrupt" in r["detail"] or "PatchError" == r["type"], (v, d, r)
        if r["outcome"] == "patched":
            assert r["same_report"], (v, d, r)


def test_originals_patch_fully(mutants):
    originals = {v: r for v, d, r in mutants.values() if d == "original"}
    assert set(originals) == set(VARIANTS)
    for v, r in originals.items():
        assert r["outcome"] == "patched", (v, r)
        assert {"recv", "send", "poll", "connect"} <= set(r["symbols"]), (v, r)
        assert r["audit"]["rc"] == 0 and r["audit"]["status"] == "audited", (v, r)


def test_sizes_the_loader_ignores_change_nothing(mutants):
    """DT_SYMENT and DT_STRSZ are ignored by the loader, and by the patcher: whenever such a
    mutant loads, it is patched exactly like the original (the old parser multiplied symbol
    indices by DT_SYMENT and faulted)."""
    originals = {v: r["symbols"] for v, d, r in mutants.values() if d == "original"}
    seen = 0
    for v, d, r in mutants.values():
        if not d.startswith(IGNORED_BY_THE_LOADER) or r["outcome"] == "refused":
            continue
        if r["phase"] == "load" and r["outcome"] != "patched":
            continue   # the loader died: its business
        seen += 1
        assert r["outcome"] == "patched" and r["symbols"] == originals[v], (v, d, r)
    assert seen >= 40, seen


def test_audit_exits_cleanly_on_every_mutant(mutants):
    for v, d, r in mutants.values():
        a = r["audit"]
        assert "escaped" not in a, (v, d, a)
        assert a["rc"] in (0, 2), (v, d, a)
        if a["rc"] == 2:
            lines = a["stderr"].splitlines()
            assert len(lines) == 1 and lines[0].startswith("greenhook audit: error: "), (v, d, a)
            assert "libghsample_%s.so" % v in lines[0], (v, d, a)
        else:
            assert a["stderr"] == "" and "bad_json" not in a and a["schema"] == 1, (v, d, a)
    rcs = [r["audit"]["rc"] for _v, _d, r in mutants.values()]
    assert rcs.count(2) >= 50 and rcs.count(0) >= 50, (rcs.count(0), rcs.count(2))


# ==========================================================================================
# Non-regular files, unreadable files, missing modules, wrong ELF class
# ==========================================================================================

@pytest.fixture(scope="module")
def special_files(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("special"))
    rc, out, err = run_scenario(os.path.join(SCENARIO_DIR, "elf_special_files.py"), timeout=60,
                                args=[tmp])
    assert rc == 0, "status %s\n%s\n%s" % (rc, out, err)
    return json.loads([x for x in out.splitlines() if x.startswith("GHRESULT ")][0][9:])


@pytest.mark.parametrize("kind,what", [("fifo", "FIFO"), ("socket", "socket"),
                                       ("chardev", "character device"),
                                       ("directory", "directory"),
                                       ("symlink_to_fifo", "FIFO")])
@pytest.mark.parametrize("call", ["patch_library", "unpatch_library", "audit", "read_elf"])
def test_non_regular_files_are_refused_at_once(special_files, kind, what, call):
    got, seconds = special_files["out"][kind + " " + call]
    assert got is not None, "%s(%s) raised nothing" % (call, kind)
    name, mro, message = got
    assert name == "NotARegularFile" and "NotAnELF" in mro and "GreenhookError" in mro, got
    assert what in message and special_files["targets"][kind] in message, message
    assert "not a regular file" in message, message
    assert seconds < 1.0, "%s(%s) took %.2f s" % (call, kind, seconds)


@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev", "directory"])
def test_audit_cli_refuses_non_regular_files(special_files, kind):
    rc, seconds = special_files["out"][kind + " cli"]
    assert rc == 2 and seconds < 1.0, (rc, seconds)
    assert special_files["read_machine"] is None


@pytest.fixture(scope="module")
def bad_input(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("badinput"))
    rc, out, err = run_scenario(os.path.join(SCENARIO_DIR, "elf_bad_input.py"), timeout=60,
                                args=[tmp])
    assert rc == 0, "status %s\n%s\n%s" % (rc, out, err)
    return json.loads([x for x in out.splitlines() if x.startswith("GHRESULT ")][0][9:])


# case: (exception type, builtin types it must also be, cause type, words in the message)
BAD_INPUTS = {
    "no_module": ("ModuleNotFound", ["ModuleNotFoundError", "ImportError"],
                  "ModuleNotFoundError", ["no_such_module_gh.sub", "no module named",
                                          "install"]),
    "no_submodule": ("ModuleNotFound", ["ModuleNotFoundError"], "ModuleNotFoundError",
                     ["_ghsample_nope"]),
    "import_fails": ("ImportFailed", ["ImportError"], "ImportError",
                     ["brokenmod_gh", "libnothing.so.1", "importing it failed"]),
    "bad_name": ("InvalidArgument", ["ValueError", "TypeError"], None,
                 ["not a module", "dotted module name"]),
    "audit_no_module": ("ModuleNotFound", ["ModuleNotFoundError"], "ModuleNotFoundError",
                        ["no_such_module_gh"]),
    "enotdir": ("LibraryNotFound", ["FileNotFoundError", "OSError"], "NotADirectoryError",
                ["plainfile", "not a directory"]),
    "eloop": ("LibraryNotFound", ["FileNotFoundError"], None,
              ["libloop.so", "symbolic links"]),
    "wrong_class": ("UnsupportedELF", ["NotAnELF"], None,
                    ["libclass32.so", "32-bit", "64-bit"]),
    "wrong_machine": ("UnsupportedELF", ["NotAnELF"], None,
                      ["libothermachine.so", MACHINE, "build of the library"]),
    "audit_wrong_class": ("UnsupportedELF", ["NotAnELF"], None, ["32-bit"]),
    "short": ("MalformedELF", ["NotAnELF"], None, ["libshort.so", "truncated"]),
    "unreadable": ("LibraryUnreadable", ["OSError"], "PermissionError",
                   ["libunreadable.so", "permission", "cannot read"]),
    "audit_unreadable": ("LibraryUnreadable", ["OSError"], "PermissionError",
                         ["libunreadable.so"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_no_raw_os_or_import_error_escapes(bad_input, case):
    if case.endswith("unreadable"):
        assert bad_input["precondition"] == "EACCES", \
            "could not make a file unreadable to test with: %s" % bad_input["precondition"]
    got = bad_input["out"][case]
    want, builtins, cause, words = BAD_INPUTS[case]
    assert got is not None, "%s: nothing raised" % case
    assert got["type"] == want and "GreenhookError" in got["mro"], (case, got)
    for b in builtins:
        assert b in got["mro"], (case, b, got["mro"])
    if cause is not None:
        assert got["cause"] == cause, (case, got)
    for w in words:
        assert w.lower() in got["message"].lower(), (case, w, got["message"])
    if want == "LibraryUnreadable":
        assert got["errno"] == 13, got


def test_bad_input_patches_nothing(bad_input):
    assert bad_input["patched"] == []
    assert bad_input["audit_rc"] == 2


# ==========================================================================================
# write_slots: all or nothing
# ==========================================================================================

# A page that can never be made writable: a MAP_SHARED mapping of a file opened read-only
# (mprotect(PROT_WRITE) fails with EACCES, whoever we are).
ROLLBACK_PRELUDE = """\
import ctypes, mmap, os, tempfile
import greenhook
from greenhook import samples, _elf, _hooks, _patch
from greenhook.exceptions import PatchError
from ghscen import *

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
PAGE = mmap.PAGESIZE

def read_only_page(content=b"", at=None):
    fd, name = tempfile.mkstemp()
    os.write(fd, content.ljust(PAGE, b"\\0"))
    os.close(fd)
    fd = os.open(name, os.O_RDONLY)
    flags = mmap.MAP_SHARED | (0x10 if at else 0)          # MAP_FIXED
    addr = libc.mmap(at, PAGE, mmap.PROT_READ, flags, fd, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
    os.close(fd)
    os.unlink(name)
    return addr

for v in ("now", "noplt"):
    samples.ctypes_lib(v)
hooks = _hooks.hook_table()
"""


def rollback_scenario(body):
    return run_checked(ROLLBACK_PRELUDE + textwrap.dedent(body), timeout=60)


def test_write_slots_rolls_back_when_a_later_page_fails():
    r = rollback_scenario("""
        good = [(a, hooks[n]) for v in ("now", "noplt") for n, a, _, _ in library_slots(v)
                if n in hooks]
        pages = sorted({a // PAGE for a, _ in good})
        bad = read_only_page(b"\\x11" * 8)
        before = {a: _elf.read_slot(a) for a, _ in good}
        prot = {a: _elf.page_protection(a) for a, _ in good}
        try:
            _elf.write_slots(good + [(bad, 0x1234)])
            err = None
        except PatchError as exc:
            err = str(exc)
        report(err=err, pages=len(pages), slots=len(good),
               restored=all(_elf.read_slot(a) == v for a, v in before.items()),
               prot_kept=all(_elf.page_protection(a) == p for a, p in prot.items()),
               bad_value=_elf.read_slot(bad), bad_prot=_elf.page_protection(bad),
               again=_elf.write_slots(good) == [before[a] for a, _ in good],
               hooked=all(_elf.read_slot(a) == h for a, h in good))
    """)
    assert r["pages"] >= 2 and r["slots"] >= 20, r     # the failure is on the 3rd page or later
    assert r["err"] and "writable" in r["err"] and "put back" in r["err"], r
    assert "%d slots" % r["slots"] in r["err"], r["err"]
    assert r["restored"], "slots written before the failure were left patched"
    assert r["prot_kept"], "a page's protection changed"
    assert r["bad_value"] == 0x1111111111111111 and r["bad_prot"] == "r--s", r
    assert r["again"] and r["hooked"], "write_slots did not work after a rolled-back failure"


def test_patch_library_failing_part_way_changes_and_records_nothing():
    r = rollback_scenario("""
        real = _patch.find_loaded(samples.library_path("now"))
        before = {a: v for _, a, _, v in library_slots("now")}
        bad = read_only_page()

        class Proxy:
            # The real object with one more slot, on a page that cannot be written.
            def __getattr__(self, name):
                return getattr(real, name)
            def slots(self, names=None):
                return real.slots(names) + [("recv", bad, "GLOB_DAT", 0)]

        try:
            _patch._patch_object(Proxy())
            err = None
        except PatchError as exc:
            err = [type(exc).__name__, str(exc)]
        restored = all(_elf.read_slot(a) == v for a, v in before.items())
        listed = greenhook.patched_libraries()
        rep = greenhook.patch_library(samples.library_path("now"))
        hooked = sum(_elf.read_slot(a) != v for a, v in before.items())
        greenhook.unpatch_library(samples.library_path("now"))
        report(err=err, restored=restored, listed=len(listed), slots=rep.slots, hooked=hooked,
               back=all(_elf.read_slot(a) == v for a, v in before.items()))
    """)
    assert r["err"] and r["err"][0] == "PatchError", r
    assert "libghsample_now.so" in r["err"][1] and "nothing was changed" in r["err"][1], r
    assert r["restored"] and r["listed"] == 0, r
    assert r["slots"] == r["hooked"] > 0 and r["back"], r


def test_unpatch_that_cannot_restore_keeps_the_library_recorded():
    """A slot whose page became impossible to write after patching: unpatch_all restores the
    other libraries, raises PatchError, and keeps the failed one in the registry."""
    r = rollback_scenario("""
        real = _patch.find_loaded(samples.library_path("now"))
        scratch = libc.mmap(None, PAGE, mmap.PROT_READ | mmap.PROT_WRITE,
                            mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)

        class Proxy:
            base = scratch       # its own registry entry
            def __getattr__(self, name):
                return getattr(real, name)
            def slots(self, names=None):
                return [("recv", scratch, "GLOB_DAT", 0)]

        noplt_before = {a: v for _, a, _, v in library_slots("noplt")}
        _patch._patch_object(Proxy())
        greenhook.patch_library(samples.library_path("noplt"))
        hook = _elf.read_slot(scratch)
        # the scratch page now holds the hook but can never be made writable again
        read_only_page(hook.to_bytes(8, "little"), at=scratch)
        try:
            greenhook.unpatch_all()
            err = None
        except PatchError as exc:
            err = str(exc)
        left = [rep.library for rep in greenhook.patched_libraries()]
        report(err=err, left=left, hook_is_recv=hook == hooks["recv"],
               noplt_back=all(_elf.read_slot(a) == v for a, v in noplt_before.items()))
    """)
    assert r["hook_is_recv"], r
    assert r["err"] and "stays patched" in r["err"] and "other libraries were restored" in r["err"]
    assert len(r["left"]) == 1 and r["left"][0].endswith("libghsample_now.so"), r
    assert r["noplt_back"], "the library that could be restored was not"


def test_on_disk_reader_ignores_dt_syment_like_the_loader(sample_libraries, tmp_path):
    """``greenhook audit`` reads symbols as Elf64_Sym whatever DT_SYMENT says, as ld.so
    does: the mutant's relocations are the original's."""
    from greenhook._elffile import read_elf
    src = sample_libraries["now"]
    lay = Layout(src)
    at = [a for a, tag, _v in lay.dyn if tag == DT_SYMENT][0]
    want = read_elf(src).relocations
    assert len([r for r in want if r.symbol]) >= 20
    for value in (0, 1, 16, 48, 1 << 20, u64(-1)):
        data = bytearray(lay.data)
        data[at + 8:at + 16] = struct.pack("<Q", value)
        path = tmp_path / ("syment_%x.so" % value)
        path.write_bytes(bytes(data))
        assert read_elf(str(path)).relocations == want, value
