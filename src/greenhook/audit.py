"""``greenhook audit``: which blocking calls a library (and what it links) imports.

Reads files on disk only; nothing is loaded or patched, so the answer is the same before and
after patching.  For each library in the ``DT_NEEDED`` closure of the target it lists every
blocking-relevant import (``greenhook._symbols``), the relocation slots through which it is
reached, and a verdict: greened, not greened yet (with the catalogue's reason), not greenable
(and why), or context.  ``docs/AUDIT.md`` describes the output and the JSON schema.

TARGET is a path, a soname (resolved like the dynamic loader would: LD_LIBRARY_PATH, the
``ldconfig -p`` cache, the system directories) or an importable module name (its extension
module, then the libraries it links, resolved through RUNPATH/RPATH with ``$ORIGIN``).
"""

import argparse
import collections
import importlib
import importlib.machinery
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from greenhook import _symbols
from greenhook._elffile import (
    ELFCLASS64, ELFDATA2LSB, EM_AARCH64, EM_X86_64, ElfFile, MACHINE_NAMES, read_elf,
    read_machine,
)
from greenhook.exceptions import GreenhookError, ImportFailed, LibraryNotFound, ModuleNotFound

__all__ = ["audit", "main", "LibraryAudit", "ImportAudit", "Slot", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

# Relocation types whose slot the patcher (``greenhook._elf``) rewrites: PLT slots, GOT slots
# (-fno-plt, address taken in code) and absolute pointers in data (``fnptr = recv``, addend 0).
PATCHED_SLOT_TYPES = {
    EM_X86_64: ("JUMP_SLOT", "GLOB_DAT", "64"),
    EM_AARCH64: ("JUMP_SLOT", "GLOB_DAT", "ABS64"),
}

MULTIARCH = {EM_X86_64: "x86_64-linux-gnu", EM_AARCH64: "aarch64-linux-gnu"}

# The system runtime: never patched, so left out of a closure (listed as skipped).
_RUNTIME_NAMES = re.compile(
    r"^(?:libc|libm|libpthread|libdl|librt|libgcc_s|libstdc\+\+)\.so(?:\.|$)"
    r"|^ld-linux[-\w.]*\.so(?:\.|$)|^ld64\.so(?:\.|$)"
    r"|^libpython\d[\d.]*[a-z]*\.so(?:\.|$)"
    r"|^_greenlet\.")
_GREENHOOK_DIR = os.path.dirname(os.path.abspath(__file__))

CATEGORY_GREENED = "greened"
CATEGORY_NOT_YET = "not_greened_yet"
CATEGORY_NOT_GREENABLE = "not_greenable"
CATEGORY_CONTEXT = "context"

STATUS_AUDITED = "audited"
STATUS_SKIPPED = "skipped"
STATUS_NOT_FOUND = "not found"
STATUS_UNREADABLE = "unreadable"


# --- results ---

@dataclass
class Slot:
    """One relocation through which a symbol is reached."""

    type: str           # "JUMP_SLOT", "GLOB_DAT", "64" (x86_64) / "ABS64" (aarch64), ...
    offset: int         # link-time virtual address of the slot
    table: str          # "jmprel" (DT_JMPREL), "rela" (DT_RELA), "rel"

    def to_dict(self):
        return {"type": self.type, "offset": self.offset, "table": self.table}


@dataclass
class ImportAudit:
    """One blocking-relevant imported symbol and the audit's verdict on it."""

    symbol: str
    version: Optional[str]
    category: str       # greened | not_greened_yet | not_greenable | context
    verdict: str        # "greened", "not greened yet: <reason>", "not greenable: <why>", ...
    reason: str         # the catalogue's description
    slots: List[Slot] = field(default_factory=list)

    def to_dict(self):
        return {"symbol": self.symbol, "version": self.version, "category": self.category,
                "verdict": self.verdict, "reason": self.reason,
                "slots": [s.to_dict() for s in self.slots]}


@dataclass
class LibraryAudit:
    """The audit of one object in the closure (or why it was not audited)."""

    name: str                           # as asked: the target or a DT_NEEDED entry
    path: Optional[str]
    status: str = STATUS_AUDITED        # audited | skipped | not found | unreadable
    needed_by: Optional[str] = None     # path of the object whose DT_NEEDED named it
    soname: Optional[str] = None
    machine: Optional[str] = None
    static: bool = False
    relro: Optional[str] = None         # none | partial | full
    binding: Optional[str] = None       # lazy | now
    needed: List[str] = field(default_factory=list)
    rpath: List[str] = field(default_factory=list)
    runpath: List[str] = field(default_factory=list)
    imports: List[ImportAudit] = field(default_factory=list)
    summary: str = ""

    @property
    def still_blocking(self) -> List[str]:
        return [i.symbol for i in self.imports if i.category == CATEGORY_NOT_YET]

    @property
    def greened(self) -> List[str]:
        return [i.symbol for i in self.imports if i.category == CATEGORY_GREENED]

    def import_named(self, symbol) -> Optional[ImportAudit]:
        for i in self.imports:
            if i.symbol == symbol:
                return i
        return None

    def to_dict(self):
        return {
            "name": self.name, "path": self.path, "status": self.status,
            "needed_by": self.needed_by, "soname": self.soname, "machine": self.machine,
            "static": self.static, "relro": self.relro, "binding": self.binding,
            "needed": list(self.needed), "rpath": list(self.rpath),
            "runpath": list(self.runpath),
            "imports": [i.to_dict() for i in self.imports],
            "still_blocking": self.still_blocking, "summary": self.summary,
        }


# --- verdicts ---

def _classify(symbol) -> Optional[Tuple[str, str, str]]:
    """(category, verdict, reason) for a catalogued symbol, None for any other."""
    if symbol in _symbols.LOADER:
        # never waits: hooked in auto mode only, to patch what the object loads
        reason = _symbols.GREENED[symbol]
        return CATEGORY_CONTEXT, "context: " + reason, reason
    if symbol in _symbols.GREENED:
        return CATEGORY_GREENED, "greened", _symbols.GREENED[symbol]
    if symbol in _symbols.NOT_GREENED_YET:
        reason = _symbols.NOT_GREENED_YET[symbol]
        return CATEGORY_NOT_YET, "not greened yet: " + reason, reason
    if symbol in _symbols.CONTEXT:
        reason = _symbols.CONTEXT[symbol]
        if symbol == "syscall":
            return CATEGORY_NOT_GREENABLE, "not greenable: " + reason, reason
        return CATEGORY_CONTEXT, "context: " + reason, reason
    return None


def audit_elf(elf: ElfFile, name=None, needed_by=None) -> LibraryAudit:
    """Audit one parsed object (no closure)."""
    lib = LibraryAudit(
        name=name or os.path.basename(elf.path), path=elf.path, needed_by=needed_by,
        soname=elf.soname, machine=elf.machine_name, static=elf.static,
        relro=elf.relro, binding=elf.binding if elf.dynamic else None,
        needed=list(elf.needed), rpath=list(elf.rpath), runpath=list(elf.runpath))
    if lib.static:
        lib.summary = "not greenable: statically linked (no imports to redirect)"
        return lib
    patched = PATCHED_SLOT_TYPES.get(elf.machine)
    for symbol, relocs in sorted(elf.imports.items()):
        verdict = _classify(symbol)
        if verdict is None:
            continue
        category, text, reason = verdict
        slots = [Slot(r.type_name, r.offset, r.table)
                 for r in sorted(relocs, key=lambda r: r.offset)]
        if category == CATEGORY_GREENED:
            if patched is None:
                category, text = CATEGORY_NOT_GREENABLE, (
                    "not greenable: greenhook patches x86_64 and aarch64 objects only")
            else:
                # The patcher writes GOT/PLT slots, and data pointers to the symbol itself
                # (addend 0); a pointer into the middle of a function is left alone.
                odd = sorted({r.type_name + (" with addend" if r.addend else "")
                              for r in relocs
                              if r.type_name not in patched
                              or (r.addend and r.type_name not in ("JUMP_SLOT", "GLOB_DAT"))})
                if odd:
                    category, text = CATEGORY_NOT_GREENABLE, (
                        "not greenable: also reached through %s relocations, which the"
                        " patcher does not rewrite" % ", ".join(odd))
        version = next((r.version for r in relocs if r.version), None)
        lib.imports.append(ImportAudit(symbol, version, category, text, reason, slots))
    lib.summary = _summary(lib, elf)
    return lib


def _summary(lib: LibraryAudit, elf: ElfFile) -> str:
    if elf.machine not in PATCHED_SLOT_TYPES:
        return "not greenable: %s objects are not supported (x86_64 and aarch64 only)" % (
            elf.machine_name)
    blocking = lib.still_blocking
    hard = [i.symbol for i in lib.imports
            if i.category == CATEGORY_NOT_GREENABLE and i.symbol != "syscall"]
    if blocking or hard:
        text = "will still block in: " + ", ".join(blocking + hard)
    elif lib.greened:
        text = "fully greenable"
    else:
        text = "nothing blocking imported"
    if elf.imports_syscall:
        text += "; imports syscall() (raw syscalls cannot be hooked)"
    return text


# --- resolving names to files, like the dynamic loader ---

def _host_machine() -> int:
    return {"x86_64": EM_X86_64, "aarch64": EM_AARCH64, "arm64": EM_AARCH64}.get(
        os.uname().machine, 0)


def _ldconfig_cache() -> Dict[str, List[str]]:
    """soname -> paths, from ``ldconfig -p`` (empty if ldconfig is unavailable)."""
    global _LDCONFIG
    if _LDCONFIG is not None:
        return _LDCONFIG
    exe = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.access(p, os.X_OK)), None)
    cache: Dict[str, List[str]] = {}
    if exe:
        try:
            out = subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=20,
                                 env=dict(os.environ, LC_ALL="C")).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        for line in out.splitlines():
            m = re.match(r"^\s+(\S+)\s+\(([^)]*)\)\s+=>\s+(.+?)\s*$", line)
            if m:
                cache.setdefault(m.group(1), []).append(m.group(3))
    _LDCONFIG = cache
    return cache


_LDCONFIG: Optional[Dict[str, List[str]]] = None


class _Resolver:
    """Find a DT_NEEDED name the way ld.so does, without loading anything."""

    def __init__(self, machine: int):
        self.machine = machine
        self.triplet = MULTIARCH.get(machine)

    def compatible(self, path) -> bool:
        if not os.path.isfile(path):     # never open a FIFO or a device found on a search path
            return False
        ident = read_machine(path)
        if ident is None:
            return False
        return ident == (ELFCLASS64, ELFDATA2LSB, self.machine) or not self.machine

    def expand(self, entry, origin) -> List[str]:
        out = [entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)
               .replace("${PLATFORM}", MACHINE_NAMES.get(self.machine, ""))
               .replace("$PLATFORM", MACHINE_NAMES.get(self.machine, ""))]
        if "$LIB" in out[0] or "${LIB}" in out[0]:
            libs = (["lib/" + self.triplet] if self.triplet else []) + ["lib64", "lib"]
            out = [out[0].replace("${LIB}", lib).replace("$LIB", lib) for lib in libs]
        return out

    def system_dirs(self) -> List[str]:
        dirs = []
        if self.triplet:
            dirs += ["/lib/" + self.triplet, "/usr/lib/" + self.triplet]
        return dirs + ["/lib64", "/usr/lib64", "/lib", "/usr/lib"]

    @staticmethod
    def ld_library_path() -> List[str]:
        value = os.environ.get("LD_LIBRARY_PATH")
        if not value:
            return []
        return [d or "." for d in re.split("[:;]", value)]

    def search_order(self, chain: Sequence[ElfFile]) -> List[Tuple[str, str]]:
        """(directory, where it came from) in ld.so's order; ``chain`` is requester first."""
        dirs: List[Tuple[str, str]] = []
        obj = chain[0] if chain else None
        if obj is not None and not obj.runpath:
            for loader in chain:
                if loader.runpath:
                    continue
                origin = os.path.dirname(os.path.abspath(loader.path))
                for entry in loader.rpath:
                    dirs += [(d, "RPATH") for d in self.expand(entry, origin)]
        dirs += [(d, "LD_LIBRARY_PATH") for d in self.ld_library_path()]
        if obj is not None:
            origin = os.path.dirname(os.path.abspath(obj.path))
            for entry in obj.runpath:
                dirs += [(d, "RUNPATH") for d in self.expand(entry, origin)]
        return dirs

    def find(self, name, chain: Sequence[ElfFile] = ()) -> Optional[str]:
        if "/" in name:
            return name if self.compatible(name) else None
        for d, _why in self.search_order(chain):
            candidate = os.path.join(d, name)
            if self.compatible(candidate):
                return candidate
        for candidate in _ldconfig_cache().get(name, ()):
            if self.compatible(candidate):
                return candidate
        for d in self.system_dirs():
            candidate = os.path.join(d, name)
            if self.compatible(candidate):
                return candidate
        return None


def is_system_runtime(name, path=None) -> bool:
    """libc, libm, libpthread, libdl, librt, ld-linux, libgcc_s, libstdc++, libpython,
    greenlet and greenhook itself: never patched, left out of closures."""
    if _RUNTIME_NAMES.match(name) or (path and _RUNTIME_NAMES.match(os.path.basename(path))):
        return True
    if path:
        real = os.path.realpath(path)
        parent = os.path.dirname(real)
        if parent == os.path.realpath(_GREENHOOK_DIR) or os.path.basename(parent) == "greenlet":
            return True
    return False


# --- targets ---

_SONAME = re.compile(r"\.so(\.\d+)*$")


def _extension_files(module) -> List[str]:
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    file = getattr(module, "__file__", None)
    if file and file.endswith(suffixes):
        return [os.path.abspath(file)]
    found = []
    for top in getattr(module, "__path__", None) or ():
        for root, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            found += [os.path.join(root, f) for f in sorted(files) if f.endswith(suffixes)]
    if found:
        return found
    if not file:
        raise GreenhookError("module %r is built into the interpreter: no file to audit"
                             % module.__name__)
    raise GreenhookError("module %r (%s) is pure Python and contains no extension module:"
                         " nothing native to audit" % (module.__name__, file))


def _resolve_target(target: str) -> Tuple[str, List[str]]:
    """("path" | "soname" | "module", [files])."""
    if not target:
        raise GreenhookError("empty target: give a path, a soname or a module name")
    if "/" in target or os.path.isfile(target):
        if not os.path.exists(target):
            raise LibraryNotFound("%s: no such file" % target)
        return "path", [target]
    if _SONAME.search(target):
        path = _Resolver(_host_machine()).find(target)
        if path is None:
            raise LibraryNotFound(
                "%s: shared library not found (searched LD_LIBRARY_PATH, the ldconfig cache"
                " and the system directories)" % target)
        return "soname", [path]
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as e:
        if e.name and (target == e.name or target.startswith(e.name + ".")):
            raise ModuleNotFound("%s: no such file, shared library or importable module"
                                 % target, name=e.name) from e
        raise ImportFailed("cannot import module %r: %s" % (target, e), name=target) from e
    except Exception as e:   # importing runs arbitrary code; report, never trace back
        raise ImportFailed("cannot import module %r: %s: %s"
                           % (target, type(e).__name__, e), name=target) from e
    return "module", _extension_files(module)


# --- the closure ---

def _audit_closure(roots: Sequence[str], follow_needed=True) -> List[LibraryAudit]:
    out: List[LibraryAudit] = []
    seen_real: Dict[str, LibraryAudit] = {}
    seen_name: Dict[str, LibraryAudit] = {}
    queue = collections.deque()   # (elf, loader chain)

    for root in roots:
        elf = read_elf(root)
        real = os.path.realpath(root)
        if real in seen_real:
            continue
        lib = audit_elf(elf, os.path.basename(root))
        out.append(lib)
        seen_real[real] = lib
        for key in (lib.name, elf.soname):
            if key:
                seen_name.setdefault(key, lib)
        queue.append((elf, (elf,)))

    while follow_needed and queue:
        elf, chain = queue.popleft()
        resolver = _Resolver(elf.machine)
        for name in elf.needed:
            if name in seen_name:
                continue
            path = resolver.find(name, chain)
            if path is None:
                lib = LibraryAudit(name, None, STATUS_NOT_FOUND, needed_by=elf.path,
                                   summary="not found (needed by %s)" % elf.path)
                out.append(lib)
                seen_name[name] = lib
                continue
            real = os.path.realpath(path)
            if real in seen_real:
                seen_name[name] = seen_real[real]
                continue
            if is_system_runtime(name, path):
                lib = LibraryAudit(name, path, STATUS_SKIPPED, needed_by=elf.path,
                                   summary="skipped (system runtime)")
            else:
                try:
                    dep = read_elf(path)
                except GreenhookError as e:
                    lib = LibraryAudit(name, path, STATUS_UNREADABLE, needed_by=elf.path,
                                       summary="unreadable: %s" % e)
                else:
                    lib = audit_elf(dep, name, needed_by=elf.path)
                    if dep.soname:
                        seen_name.setdefault(dep.soname, lib)
                    queue.append((dep, (dep,) + chain))
            out.append(lib)
            seen_real[real] = lib
            seen_name[name] = lib
    return out


def audit(target, follow_needed=True) -> List[LibraryAudit]:
    """Audit ``target`` (a path, a soname or an importable module name) and, unless
    ``follow_needed`` is false, every library in its DT_NEEDED closure.

    The system runtime (libc, the loader, libpython, greenlet...) appears with status
    "skipped".  Raises :class:`~greenhook.exceptions.GreenhookError` subclasses on bad input.
    """
    return _audit_target(os.fspath(target), follow_needed)[1]


def _audit_target(target, follow_needed) -> Tuple[str, List[LibraryAudit]]:
    kind, roots = _resolve_target(target)
    return kind, _audit_closure(roots, follow_needed)


def to_json(target, kind, libraries: Sequence[LibraryAudit]) -> dict:
    return {"schema": SCHEMA_VERSION, "target": target, "target_kind": kind,
            "libraries": [lib.to_dict() for lib in libraries]}


# --- the table ---

_COLOURS = {CATEGORY_GREENED: "32", CATEGORY_NOT_YET: "33", CATEGORY_NOT_GREENABLE: "31",
            CATEGORY_CONTEXT: "2"}


def _slots_text(slots: Sequence[Slot]) -> str:
    counts = collections.Counter(s.type for s in slots)
    return ", ".join(t if n == 1 else "%s x%d" % (t, n) for t, n in counts.items())


def format_table(libraries: Sequence[LibraryAudit], colour=False) -> str:
    def paint(code, text):
        return "\033[%sm%s\033[0m" % (code, text) if colour and code else text

    audited = [lib for lib in libraries if lib.status == STATUS_AUDITED]
    rows = [(i.symbol, _slots_text(i.slots)) for lib in audited for i in lib.imports]
    w_sym = max([len(s) for s, _ in rows] + [len("symbol")])
    w_slot = max([len(s) for _, s in rows] + [len("slots")])
    lines = []
    for lib in libraries:
        if lib.status == STATUS_SKIPPED:
            continue
        head = paint("1", lib.name)
        if lib.path:
            head += "  " + lib.path
        if lib.needed_by:
            head += "  (needed by %s)" % os.path.basename(lib.needed_by)
        lines.append(head)
        if lib.status != STATUS_AUDITED:
            lines += ["  => " + paint("31", lib.summary), ""]
            continue
        facts = [lib.machine or "?"]
        if lib.static:
            facts.append("statically linked")
        else:
            facts += ["RELRO " + (lib.relro or "?"), "binding " + (lib.binding or "?")]
        lines.append("  " + ", ".join(facts))
        if lib.imports:
            lines.append(paint("2", "    %-*s  %-*s  %s" % (w_sym, "symbol", w_slot, "slots",
                                                          "verdict")))
        for imp in lib.imports:
            lines.append("    %-*s  %-*s  %s" % (w_sym, imp.symbol, w_slot,
                                               _slots_text(imp.slots),
                                               paint(_COLOURS.get(imp.category), imp.verdict)))
        if lib.summary.startswith("fully"):
            code = "32"
        elif lib.summary.startswith("not greenable"):
            code = "31"
        elif lib.summary.startswith("will still block"):
            code = "33"
        else:
            code = None
        lines += ["  => " + paint(code, lib.summary), ""]
    skipped = [lib.name for lib in libraries if lib.status == STATUS_SKIPPED]
    if skipped:
        lines.append(paint("2", "skipped (system runtime): " + ", ".join(skipped)))
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


# --- command line ---

class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(message)


def _parser():
    p = _Parser(
        prog="greenhook audit",
        description="List the blocking calls a library (and what it links) imports, and"
                    " which greenhook greens.  Reads files only; loads nothing.")
    p.add_argument("target", help="a path, a soname (libpq.so.5) or a module (MySQLdb._mysql)")
    p.add_argument("--json", action="store_true", help="print JSON (schema in docs/AUDIT.md)")
    p.add_argument("--no-deps", action="store_true",
                   help="audit the target only, not the libraries it links")
    return p


def main(argv=None) -> int:
    """``greenhook audit TARGET [--json] [--no-deps]``; ``argv`` excludes the program name."""
    if argv is None:
        argv = sys.argv[1:]
    try:
        args = _parser().parse_args(argv)
    except _UsageError as e:
        print("greenhook audit: error: %s" % e, file=sys.stderr)
        return 2
    except SystemExit as e:       # --help
        return e.code if isinstance(e.code, int) else 0
    try:
        kind, libraries = _audit_target(args.target, not args.no_deps)
    except GreenhookError as e:
        print("greenhook audit: error: %s" % e, file=sys.stderr)
        return 2
    try:
        if args.json:
            json.dump(to_json(args.target, kind, libraries), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
            sys.stdout.write(format_table(libraries, colour))
        sys.stdout.flush()
    except BrokenPipeError:
        # `greenhook audit ... | head`: not an error.  Stop Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
