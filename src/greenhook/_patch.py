"""Wiring: which loaded object a target names, which objects may be patched, and the registry
of every GOT slot written (so ``unpatch`` restores exactly what was there).

Uses the ELF patcher (``_elf``) and the hook table (``_hooks``); neither knows of the other.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import platform
import sys
import threading
import types
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

from greenhook import _core, _elffile, _symbols
from greenhook.exceptions import (
    GreenhookError,
    ImportFailed,
    InvalidArgument,
    LibraryNotLoaded,
    ModuleNotFound,
    PatchError,
    RefusedLibrary,
    UnsupportedELF,
)

_lock = threading.RLock()
_registry: Dict[int, _Patched] = {}  # LoadedObject.base -> _Patched

# A fork waits for a patch in progress in another thread (GOT pages half-way through their
# writable window, the registry half-updated) to finish, so the child inherits whole patches
# and a free lock (as logging does with its handlers' locks).
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_lock.acquire, after_in_parent=_lock.release,
                        after_in_child=_lock.release)


class PatchReport:
    """What ``patch_library`` did to one loaded object."""

    def __init__(self, library: str, soname: Optional[str], symbols: Dict[str, int],
                 kinds: Dict[str, Sequence[str]], imports: Sequence[str],
                 not_greened: Dict[str, str], relro: Any, bind_now: bool,
                 state_hooks: Optional[Dict[str, int]] = None) -> None:
        #: resolved path of the loaded object
        self.library = library
        self.soname = soname
        #: {symbol: number of slots written}
        self.symbols = symbols
        #: {symbol: sorted relocation kinds written (JUMP_SLOT, GLOB_DAT, ABS64)}
        self.kinds = kinds
        #: every blocking-relevant import found (greened or not)
        self.imports = imports
        #: imports that still block: {symbol: reason}
        self.not_greened = not_greened
        self.relro = relro
        self.bind_now = bind_now
        #: {symbol: number of slots written} for the per-fd state hooks (close, dup*, socket:
        #: _symbols.STATE): they never wait, so they are not in ``symbols`` nor ``slots``
        self.state_hooks = dict(state_hooks or {})

    @property
    def slots(self) -> int:
        return sum(self.symbols.values())

    def as_dict(self) -> Dict[str, Any]:
        return {
            "library": self.library,
            "soname": self.soname,
            "symbols": dict(self.symbols),
            "kinds": {k: list(v) for k, v in self.kinds.items()},
            "imports": list(self.imports),
            "not_greened": dict(self.not_greened),
            "relro": self.relro,
            "bind_now": self.bind_now,
            "state_hooks": dict(self.state_hooks),
        }

    def __repr__(self) -> str:
        still = f", still blocking in {sorted(self.not_greened)}" if self.not_greened else ""
        return f"<PatchReport {self.library} slots={self.slots} {self.symbols}{still}>"


class _Patched:
    __slots__ = ("obj", "report", "slots")

    def __init__(self, obj, report, slots):
        self.obj = obj
        self.report = report
        self.slots = slots  # [(address, old_value, new_value, symbol, kind)]


# --- platform ---------------------------------------------------------------------------------

def _native():
    return _core.native()


# --- finding loaded objects -------------------------------------------------------------------

# The ELF identification of objects this process can load: (EI_CLASS, EI_DATA, e_machine).
_HOST_IDENT = {"x86_64": (_elffile.ELFCLASS64, _elffile.ELFDATA2LSB, _elffile.EM_X86_64),
               "aarch64": (_elffile.ELFCLASS64, _elffile.ELFDATA2LSB, _elffile.EM_AARCH64)}


def _check_elf_file(path):
    """Refuse at once what cannot be a loaded shared library of this process: no file
    (LibraryNotFound), a directory, FIFO, socket or device (NotARegularFile, never opened),
    an unreadable file (LibraryUnreadable), not ELF (NotAnELF), another class or machine
    (UnsupportedELF)."""
    ei_class, ei_data, machine = _elffile.read_ident(path)
    host = _HOST_IDENT.get(platform.machine())
    if host is not None and (ei_class, ei_data, machine) != host:
        raise UnsupportedELF(
            f"{path!r} is a {_elffile.describe_class(ei_class, ei_data, machine)} ELF object; "
            f"this process is {_elffile.describe_class(*host)} and can load (so greenhook can "
            f"patch) only objects of that kind: give the {platform.machine()} build of the "
            f"library")


def _same_file(a, b):
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _module_file(module):
    path = getattr(module, "__file__", None)
    if not path:
        raise GreenhookError(f"module {module.__name__!r} has no file (built into the interpreter?)")
    return path


def find_loaded(target):
    """The LoadedObject that ``target`` names: a soname, a path, or a module (object or file)."""
    _elf, _ = _native()
    if isinstance(target, types.ModuleType):
        target = _module_file(target)
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if not isinstance(target, str) or not target:
        raise InvalidArgument(f"expected a soname, a path or a module, got {target!r}")
    objs = _elf.loaded_objects()
    if "/" not in target:
        hits = [o for o in objs if o.soname == target or os.path.basename(o.path) == target]
        if not hits:
            # "libfoo.so" names "libfoo.so.1"
            hits = [o for o in objs if o.soname and o.soname.startswith(target + ".")]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            paths = ", ".join(o.path for o in hits)
            raise GreenhookError(f"{target!r} names several loaded objects ({paths}); pass a path")
        if not os.path.exists(target):
            raise LibraryNotLoaded(_not_loaded_message(target, objs))
    # A path.
    _check_elf_file(target)
    for o in objs:
        if o.path and _same_file(o.path, target):
            return o
    raise LibraryNotLoaded(_not_loaded_message(target, objs))


def _not_loaded_message(target, objs):
    names = {}
    for o in objs:
        for n in (o.soname, os.path.basename(o.path)):
            if n:
                names[n] = o.path
    key = os.path.basename(target)
    stem = key.split(".so")[0].lower()
    similar = difflib.get_close_matches(key, list(names), n=5, cutoff=0.6)
    similar += [n for n in names if stem and stem in n.lower() and n not in similar][:5]
    hint = ("; loaded objects that look similar: " + ", ".join(f"{n} ({names[n]})" for n in similar)
            if similar else "")
    return (f"{target!r} is not loaded in this process (greenhook never loads a second copy: "
            f"import the module that links it first){hint}")


# --- policy: what may be patched --------------------------------------------------------------

# Left out of patch_module's closure (the refusals in _refusal are left out too).
_SYSTEM_RUNTIME = (
    "libm.so", "libm-", "libpthread", "libdl.so", "libdl-", "librt.so", "librt-", "libgcc_s",
    "libstdc++", "libutil.so", "libresolv.so", "libmvec.so")


def _package_dir(name):
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return [os.path.realpath(p) for p in spec.submodule_search_locations]


def _refusal(obj):
    """Why ``obj`` must not be patched, or None."""
    base = os.path.basename(obj.path)
    name = obj.soname or base
    real = os.path.realpath(obj.path) if obj.path else ""
    if name.startswith(("libc.so", "libc-")) or base.startswith(("libc.so", "libc-")):
        return "it is the C library itself: patch the library that calls it instead"
    if name.startswith(("ld-linux", "ld64.so", "ld-musl")) or base.startswith(("ld-linux", "ld-musl")):
        return "it is the dynamic loader"
    if name.startswith("libpython") or base.startswith("libpython"):
        return "it is the Python interpreter's own library"
    if obj.is_main:
        return "it is the main program (the Python interpreter)"
    for pkg, why in (("greenlet", "greenlet switches the stacks the hooks run on"),
                     ("gevent", "gevent's compiled modules run the hub the hooks wait on")):
        for d in _package_dir(pkg) or ():
            if real.startswith(d + os.sep):
                return why
    # greenhook's own core (the sample clients under greenhook/samples are fair game)
    if os.path.dirname(real) == os.path.dirname(os.path.realpath(__file__)):
        return "it is greenhook itself"
    return None


def _is_system_runtime(obj):
    name = obj.soname or os.path.basename(obj.path)
    return name.startswith(_SYSTEM_RUNTIME) or _refusal(obj) is not None


# --- patching ---------------------------------------------------------------------------------

_LOADER = frozenset(_symbols.LOADER)
_BLOCKING = (set(_symbols.GREENED) | set(_symbols.NOT_GREENED_YET)) - _LOADER
_FDSTATE = frozenset(_symbols.FDSTATE)


def _patch_object(obj, refuse=True, bind=True, loader=False):
    """Patch ``obj``; ``bind``: the calling thread waits greenly from then on; ``loader``:
    also its dlopen/dlmopen slots (auto mode), unless it has a run path (see _symbols.LOADER)."""
    _elf, _hooks = _native()
    loader = loader and not obj.runpath
    with _lock:
        done = _registry.get(obj.base)
        if done is not None:
            if loader:
                _top_up_loader(_elf, _hooks, obj, done)
            return done.report  # patching twice is a no-op
        if refuse:
            why = _refusal(obj)
            if why:
                raise RefusedLibrary(f"refusing to patch {obj.soname or obj.path} ({obj.path}): {why}")
        table = _hooks.hook_table()
        state = _hooks.state_hook_table()
        hook_addrs = set(table.values()) | set(state.values())
        all_imports = obj.slots(_BLOCKING)
        plan, symbols, kinds, state_hooks = [], {}, {}, {}
        for name, addr, kind, value in (all_imports + obj.slots(_FDSTATE)
                                        + (obj.slots(_LOADER) if loader else [])):
            hook = table.get(name) or state.get(name)
            if hook is None or value in hook_addrs:
                continue
            plan.append((addr, hook, name, kind))
            if name in _FDSTATE:
                # per-fd state: written, but greens nothing (reported apart)
                state_hooks[name] = state_hooks.get(name, 0) + 1
                continue
            symbols[name] = symbols.get(name, 0) + 1
            kinds.setdefault(name, set()).add(kind)
        imports = sorted({s[0] for s in all_imports})
        not_greened = {n: _symbols.NOT_GREENED_YET[n] for n in imports
                       if n in _symbols.NOT_GREENED_YET}
        try:
            # All or nothing: on failure write_slots has put back what it wrote.
            old = _elf.write_slots([(addr, hook) for addr, hook, _, _ in plan])
        except PatchError as exc:
            raise PatchError(f"cannot patch {obj.soname or obj.path} ({obj.path}): {exc}") from exc
        slots = [(addr, prev, hook, name, kind)
                 for (addr, hook, name, kind), prev in zip(plan, old)]
        report = PatchReport(
            library=os.path.realpath(obj.path) if obj.path else obj.path,
            soname=obj.soname,
            symbols=symbols,
            kinds={k: sorted(v) for k, v in kinds.items()},
            imports=imports,
            not_greened=not_greened,
            relro=("full" if obj.bind_now else "partial") if obj.relro else "none",
            bind_now=obj.bind_now,
            state_hooks=state_hooks,
        )
        _registry[obj.base] = _Patched(obj, report, slots)
        if bind:
            _ensure_thread_bound()
        return report


def _top_up_loader(_elf, _hooks, obj, done):
    """Auto mode on an object patched before it: add its dlopen/dlmopen slots."""
    table = _hooks.hook_table()
    hook_addrs = set(table.values())
    plan = [(addr, table[name], name, kind) for name, addr, kind, value in obj.slots(_LOADER)
            if name in table and value not in hook_addrs]
    if not plan:
        return
    old = _elf.write_slots([(addr, hook) for addr, hook, _, _ in plan])
    for (addr, hook, name, kind), prev in zip(plan, old):
        done.slots.append((addr, prev, hook, name, kind))
        done.report.symbols[name] = done.report.symbols.get(name, 0) + 1
        done.report.kinds[name] = sorted(set(done.report.kinds.get(name, ())) | {kind})


def _ensure_thread_bound():
    """The thread that patches waits greenly from then on (backend chosen per call unless set)."""
    _core.bind_current_thread_if_unbound()


def patch_library(target: Union[str, os.PathLike, types.ModuleType]) -> PatchReport:
    """Green every blocking call ``target`` imports; return its PatchReport.

    ``target``: a soname (``"libmariadb.so.3"``), a path, or a loaded extension module / its file.
    The object must already be loaded.  Patching twice returns the first report unchanged.
    """
    return _patch_object(find_loaded(target))


def unpatch_library(target: Union[str, os.PathLike, types.ModuleType]) -> Optional[PatchReport]:
    """Restore every slot greenhook wrote in ``target``; return its PatchReport (or None)."""
    _elf, _ = _native()
    obj = find_loaded(target)
    with _lock:
        done = _registry.get(obj.base)
        if done is None:
            return None
        _restore(_elf, done)
        del _registry[obj.base]   # only once restored: a failed restore stays recorded
        return done.report


def _restore(_elf, done):
    """Put back the original value of every slot ``done`` wrote, or raise PatchError having
    changed nothing (``write_slots`` is all or nothing)."""
    restore = []
    for addr, old, new, name, kind in done.slots:
        # Someone else rewrote the slot after us: leave their value, never resurrect ours.
        if _elf.read_slot(addr) == new:
            restore.append((addr, old))
    try:
        _elf.write_slots(restore)
    except PatchError as exc:
        raise PatchError(f"cannot unpatch {done.report.soname or done.report.library} "
                         f"({done.report.library}): {exc}; it stays patched") from exc


def unpatch_all() -> List[PatchReport]:
    """Restore every patched library (and end auto mode); return the list of their reports.

    A library that cannot be restored stays patched (and listed by ``patched_libraries()``);
    the others are restored, then PatchError names the first failure."""
    stop_auto()
    if not _registry:
        return []
    _elf, _ = _native()
    with _lock:
        reports, failed = [], []
        for base in list(_registry):
            done = _registry[base]
            try:
                _restore(_elf, done)
            except PatchError as exc:
                failed.append(exc)
                continue
            del _registry[base]
            reports.append(done.report)
        if failed:
            others = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
            raise PatchError(f"{failed[0]}{others}; the other libraries were restored") \
                from failed[0]
        return reports


class Libraries(List[PatchReport]):
    """The PatchReports of every library currently patched, in patching order (a list), with
    what auto mode left alone: ``refused`` = {library path: why} for every loaded object that
    imports a hooked call and was not patched (the system runtime, greenlet/gevent/greenhook,
    the skip list, not on the allow list, a patch that failed)."""

    def __init__(self, reports: List[PatchReport], refused: Dict[str, str]) -> None:
        super().__init__(reports)
        self.refused = refused

    def as_dict(self) -> Dict[str, Any]:
        return {"auto": _auto is not None,
                "patched": [r.as_dict() for r in self],
                "refused": dict(self.refused)}


def patched_libraries() -> "Libraries":
    """:class:`Libraries`: the PatchReports of every library currently patched, in patching
    order, and (``.refused``) what auto mode refused and why."""
    with _lock:
        return Libraries([p.report for p in _registry.values()], dict(_refused))


def patched_slots(state=False):
    """[(library, symbol, kind, address, old_value, hook)] for every slot of a greened call
    written (diagnostics); ``state``: also the per-fd state hooks' (close, dup...)."""
    with _lock:
        return [(p.report.library, name, kind, addr, old, new)
                for p in _registry.values() for addr, old, new, name, kind in p.slots
                if state or name not in _FDSTATE]


# --- modules and their dependency closure -----------------------------------------------------

def _extension_files(module):
    """Shared-object files of an extension module, or of the extension modules loaded under a
    package (``MySQLdb`` -> ``MySQLdb/_mysql*.so``)."""
    path = getattr(module, "__file__", None) or ""
    if path.endswith(".so") or ".so." in os.path.basename(path):
        return [path]
    prefix = module.__name__ + "."
    files = []
    for name, mod in list(sys.modules.items()):
        if name.startswith(prefix) and mod is not None:
            f = getattr(mod, "__file__", None) or ""
            if f.endswith(".so"):
                files.append(f)
    if not files:
        raise GreenhookError(
            f"module {module.__name__!r} is not a C extension and has no extension modules "
            f"loaded under it ({path or 'no file'}); pass the extension module itself")
    return sorted(set(files))


def _expand_runpath(obj):
    if not obj.runpath:
        return []
    origin = os.path.dirname(os.path.realpath(obj.path))
    return [os.path.realpath(p.replace("$ORIGIN", origin).replace("${ORIGIN}", origin))
            for p in obj.runpath.split(":") if p]


def dependency_closure(root):
    """``root`` and every loaded object reachable through DT_NEEDED, in breadth-first order."""
    _elf, _ = _native()
    objs = _elf.loaded_objects()
    seen = {root.base}
    order, queue = [root], [root]
    while queue:
        cur = queue.pop(0)
        dirs = _expand_runpath(cur)
        for needed in cur.needed:
            cands = [o for o in objs if o.soname == needed or os.path.basename(o.path) == needed]
            if len(cands) > 1 and dirs:
                # Two copies with one soname (a wheel bundling its own): the requester's
                # RUNPATH decides, as it did for the loader.
                pref = [o for o in cands if os.path.dirname(os.path.realpath(o.path)) in dirs]
                cands = pref or cands
            for o in cands[:1]:
                if o.base not in seen:
                    seen.add(o.base)
                    order.append(o)
                    queue.append(o)
    return order


def _import(name):
    """``importlib.import_module(name)``, its failures as ImportFailed / ModuleNotFound."""
    if not name or name.startswith(".") or not all(part.isidentifier() for part in name.split(".")):
        raise InvalidArgument(
            f"patch_module({name!r}): not a dotted module name; pass an importable module "
            f"name such as 'MySQLdb._mysql', or the module object")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise ModuleNotFound(
                f"patch_module({name!r}): no module named {exc.name!r} can be imported by "
                f"{sys.executable}; install the driver in this environment or pass the "
                f"module object", name=exc.name) from exc
        raise ImportFailed(f"patch_module({name!r}): importing it failed: {exc}",
                           name=name) from exc
    except ImportError as exc:
        raise ImportFailed(f"patch_module({name!r}): importing it failed: {exc} (a native "
                           f"library it links may be missing)", name=name) from exc


def patch_module(module: Union[str, types.ModuleType], follow_deps: bool = True) -> List[PatchReport]:
    """Green an extension module and, with ``follow_deps``, every library it links (its
    DT_NEEDED closure among loaded objects) except the system runtime (libc, libm,
    libpthread, libdl, the loader, libgcc_s, libstdc++, libpython, greenlet, greenhook).

    ``module``: a module object or a dotted name (imported if needed).  Returns one PatchReport
    per library considered, the extension first.
    """
    if isinstance(module, str):
        module = _import(module)
    if not isinstance(module, types.ModuleType):
        raise InvalidArgument(f"expected a module or a dotted module name, got {module!r}")
    reports, done = [], set()
    for path in _extension_files(module):
        root = find_loaded(path)
        objs = dependency_closure(root) if follow_deps else [root]
        for obj in objs:
            if obj.base in done:
                continue
            done.add(obj.base)
            if obj is not root and _is_system_runtime(obj):
                continue
            reports.append(_patch_object(obj))
    return reports


# --- auto mode: every loaded object, and everything loaded later ------------------------------

_auto: Optional["_AutoPolicy"] = None        # _AutoPolicy while auto mode is on
_refused: Dict[str, str] = {}       # library path -> why auto mode left it alone
_considered: Set[Tuple[int, str]] = set()  # (base, path) of every object auto mode has decided on


class _AutoPolicy:
    __slots__ = ("skip", "allow")

    def __init__(self, skip, allow):
        self.skip = tuple(skip)
        self.allow = None if allow is None else tuple(allow)


def parse_names(text):
    """``"libfoo.so.1, libbar"`` -> ``("libfoo.so.1", "libbar")`` (commas or whitespace)."""
    return tuple(n for n in (text or "").replace(",", " ").split() if n)


def _matches(obj, entries):
    """The first entry naming ``obj``: its soname or file name, that name's stem up to a
    ``.`` or ``-`` (``libcrypto`` names ``libcrypto.so.3``), or a path to the same file."""
    real = os.path.realpath(obj.path) if obj.path else ""
    names = {n for n in (obj.soname, os.path.basename(obj.path or ""), os.path.basename(real)) if n}
    for e in entries:
        if "/" in e:
            if real and real == os.path.realpath(e):
                return e
        elif any(n == e or n.startswith((e + ".", e + "-")) for n in names):
            return e
    return None


# what makes auto mode patch an object: a call that waits or loads (not the per-fd state rows)
_HOOKED_NAMES = frozenset(name for name, _, _ in _symbols.HOOKED) - frozenset(_symbols.FDSTATE)


def _auto_decide(obj, policy):
    """None: patch ``obj``; "": leave it silently (imports nothing hooked); else why not."""
    try:
        if obj.problem or not obj.slots(_HOOKED_NAMES):
            return obj.problem or ""
    except GreenhookError as exc:
        return f"its dynamic section cannot be read: {exc}"
    why = _refusal(obj)
    if why:
        return why
    segs = obj.segments
    if segs and _core.hooks().namespace_of(segs[0][0]) > 0:
        return ("it lives in another link-map namespace (dlmopen): its own copy of libc keeps "
                "its own errno, which the hooks cannot set")
    if _is_system_runtime(obj):
        return "it is part of the system runtime (left out, as by patch_module)"
    hit = _matches(obj, policy.skip)
    if hit:
        return f"on the skip list ({hit!r}, GREENHOOK_SKIP)"
    if policy.allow is not None and not _matches(obj, policy.allow):
        return "not on the allow list (GREENHOOK_ALLOW)"
    return None


def patch_new_objects():
    """Auto mode: decide on every loaded object not decided on yet; patch those it may.
    Returns the new PatchReports.  Never binds a thread (it runs wherever a load happened)."""
    policy = _auto
    if policy is None:
        return []
    _elf, _ = _native()
    reports = []
    with _lock:
        objs = _elf.loaded_objects()
        _forget_unloaded(_elf, objs)
        for obj in objs:
            key = (obj.base, obj.path)
            if key in _considered:
                continue
            _considered.add(key)
            why = _auto_decide(obj, policy)
            if why == "":
                continue
            path = os.path.realpath(obj.path) if obj.path else (obj.soname or "?")
            if why is not None:
                _refused[path] = why
                continue
            try:
                reports.append(_patch_object(obj, bind=False, loader=True))
            except GreenhookError as exc:
                _refused[path] = f"patching failed: {exc}"
    return reports


def _forget_unloaded(_elf, objs):
    """Forget objects that were unloaded (``dlclose``), and objects loaded again at the same
    address (their first slot no longer holds our hook): they are decided on afresh."""
    present = {(o.base, o.path) for o in objs}
    for key in [k for k in _considered if k not in present]:
        _considered.discard(key)
    for base, done in list(_registry.items()):
        key = (base, done.obj.path)
        if key not in present:
            del _registry[base]     # its memory is gone: nothing to restore
        elif done.slots and _elf.read_slot(done.slots[0][0]) != done.slots[0][2]:
            del _registry[base]     # a new copy at the same address
            _considered.discard(key)


def start_auto(skip=(), allow=None):
    """Turn auto mode on with this policy and patch every loaded object it allows; from then
    on, objects loaded later are patched too (the loader hooks call :func:`patch_new_objects`).
    Returns the PatchReports of the objects patched now."""
    global _auto
    _elf, _hooks = _native()
    with _lock:
        _auto = _AutoPolicy(skip, allow)
        _considered.clear()
        _refused.clear()
        # objects patched before (patch_module) get their loader slots too
        for done in list(_registry.values()):
            if not done.obj.runpath and _matches(done.obj, _auto.skip) is None:
                _top_up_loader(_elf, _hooks, done.obj, done)
        reports = patch_new_objects()
        _hooks.set_load_callback(patch_new_objects)
    return reports


def stop_auto():
    """Objects loaded from now on are left alone (what is patched stays patched)."""
    global _auto
    with _lock:
        if _auto is None:
            return
        _auto = None
        hooks = _core.hooks_or_none()
        if hooks is not None:
            hooks.set_load_callback(None)


def auto_enabled():
    return _auto is not None
