# cython: language_level=3, boundscheck=False, wraparound=False
"""ELF GOT patcher: find objects already loaded in this process, list the slots that bind a
symbol, and rewrite them — restoring each page's exact protection afterwards.

This module knows ELF, the dynamic loader and page protection only.  It is handed
``{symbol: address}`` and never learns what the addresses are.

Nothing here trusts the dynamic section beyond what the loader itself relies on: every table
and string is read only inside the object's PT_LOAD segments (from the loader's own program
headers), entry sizes are the structures' (the loader ignores DT_SYMENT and DT_STRSZ), and a
table that runs outside raises MalformedELF instead of reading unmapped memory.
"""

from libc.stdint cimport uintptr_t, uint32_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport strlen, memcpy, memchr
from libc.errno cimport errno
from posix.unistd cimport sysconf, _SC_PAGESIZE
import os

from greenhook.exceptions import MalformedELF, PatchError, UnsupportedPlatform

cdef extern from "elf_arch.h" nogil:
    int GH_ARCH_SUPPORTED
    const char *GH_ARCH_NAME
    int GH_R_JUMP_SLOT, GH_R_GLOB_DAT, GH_R_ABS64
    ctypedef struct gh_dyn_un "gh_dyn_t::d_un":
        uintptr_t d_val
        uintptr_t d_ptr
    ctypedef struct gh_dyn_t:
        long d_tag
        gh_dyn_un d_un
    ctypedef struct gh_rela_t:
        uintptr_t r_offset
        uintptr_t r_info
        long r_addend
    ctypedef struct gh_sym_t:
        uint32_t st_name
        unsigned char st_info
        unsigned short st_shndx
        uintptr_t st_value
    unsigned long GH_R_SYM(uintptr_t)
    unsigned long GH_R_TYPE(uintptr_t)
    void gh_store_slot(void *slot, unsigned long value)
    unsigned long gh_load_slot(const void *slot)

    ctypedef struct ElfW_Phdr "ElfW(Phdr)":
        uint32_t p_type
        uint32_t p_flags
        uintptr_t p_vaddr
        uintptr_t p_memsz
    struct dl_phdr_info:
        uintptr_t dlpi_addr
        const char *dlpi_name
        const ElfW_Phdr *dlpi_phdr
        unsigned short dlpi_phnum
    int dl_iterate_phdr(int (*cb)(dl_phdr_info *, size_t, void *) noexcept nogil, void *data)
    enum:
        PT_DYNAMIC, PT_GNU_RELRO, PT_LOAD, PF_W
        DT_NULL, DT_NEEDED, DT_PLTRELSZ, DT_STRTAB, DT_SYMTAB, DT_RELA, DT_RELASZ
        DT_SONAME, DT_JMPREL, DT_PLTREL, DT_FLAGS, DT_FLAGS_1, DT_BIND_NOW
        DT_RPATH, DT_RUNPATH, DF_BIND_NOW, DF_1_NOW, SHN_UNDEF

cdef extern from "sys/mman.h" nogil:
    int mprotect(void *addr, size_t len, int prot)
    enum:
        PROT_READ, PROT_WRITE, PROT_EXEC

ARCH = GH_ARCH_NAME.decode()
SUPPORTED = bool(GH_ARCH_SUPPORTED)

cdef struct _raw_obj:
    char *name
    uintptr_t base
    const ElfW_Phdr *phdr
    unsigned short phnum

cdef struct _raw_list:
    _raw_obj *items
    size_t n, cap
    int oom

cdef struct _segment:
    uintptr_t lo, hi       # [lo, hi): the PT_LOAD's bytes in memory (p_vaddr + bias, p_memsz)
    bint writable          # PF_W: written by the loader at relocation time

cdef int _collect(dl_phdr_info *info, size_t size, void *data) noexcept nogil:
    cdef _raw_list *lst = <_raw_list *>data
    cdef size_t ln
    cdef _raw_obj *grown
    if lst.n == lst.cap:
        grown = <_raw_obj *>realloc(lst.items, (lst.cap * 2 + 16) * sizeof(_raw_obj))
        if grown == NULL:
            lst.oom = 1
            return 1
        lst.items = grown
        lst.cap = lst.cap * 2 + 16
    ln = strlen(info.dlpi_name) if info.dlpi_name != NULL else 0
    lst.items[lst.n].name = <char *>malloc(ln + 1)
    if lst.items[lst.n].name == NULL:
        lst.oom = 1
        return 1
    if ln:
        memcpy(lst.items[lst.n].name, info.dlpi_name, ln)
    lst.items[lst.n].name[ln] = 0
    lst.items[lst.n].base = info.dlpi_addr
    lst.items[lst.n].phdr = info.dlpi_phdr
    lst.items[lst.n].phnum = info.dlpi_phnum
    lst.n += 1
    return 0


cdef class LoadedObject:
    """One ELF object mapped in this process, described from its in-memory dynamic section."""

    cdef readonly str path          # as the loader names it ("" name of the main program -> its exe)
    cdef readonly uintptr_t base    # load bias (dlpi_addr)
    cdef readonly str soname        # DT_SONAME or None
    cdef readonly list needed       # DT_NEEDED names
    cdef readonly str runpath       # DT_RUNPATH, else DT_RPATH, or None
    cdef readonly bint relro        # has PT_GNU_RELRO
    cdef readonly bint bind_now     # DT_BIND_NOW / DF_BIND_NOW / DF_1_NOW
    cdef readonly bint is_main      # the main program
    cdef readonly tuple relro_range
    cdef readonly str problem       # why slots() refuses (a corrupt dynamic section), or None
    cdef uintptr_t strtab, strtab_end, symtab, symtab_end, jmprel, pltrelsz, rela, relasz
    cdef _segment *segs
    cdef int nsegs

    def __dealloc__(self):
        free(self.segs)

    def __repr__(self):
        return f"<LoadedObject {self.path!r} soname={self.soname!r} base={self.base:#x}>"

    @property
    def segments(self):
        """[(start, end, writable)] of the PT_LOAD segments, in memory."""
        return [(self.segs[i].lo, self.segs[i].hi, bool(self.segs[i].writable))
                for i in range(self.nsegs)]

    cdef uintptr_t _ptr(self, uintptr_t p):
        # glibc relocates d_ptr entries of the in-memory dynamic section on x86_64/aarch64;
        # other loaders (musl) leave them as offsets.  An unrelocated value is below the bias.
        if self.base and p < self.base:
            return p + self.base
        return p

    cdef const _segment *_segment_of(self, uintptr_t addr):
        cdef int i
        for i in range(self.nsegs):
            if self.segs[i].lo <= addr < self.segs[i].hi:
                return &self.segs[i]
        return NULL

    cdef uintptr_t _end_of(self, uintptr_t addr):
        """End of the PT_LOAD segment holding ``addr``, 0 if none does."""
        cdef const _segment *seg = self._segment_of(addr)
        return seg.hi if seg != NULL else 0

    cdef bint _inside(self, uintptr_t addr, uintptr_t size):
        cdef uintptr_t end = self._end_of(addr)
        return end != 0 and size <= end - addr

    cdef str _who(self):
        name = self.soname or os.path.basename(self.path) or "the main program"
        return f"{name} ({self.path})" if self.path and name != self.path else name

    cdef _corrupt(self, str what):
        raise MalformedELF(
            f"cannot patch {self._who()}: its dynamic section is corrupt: {what}. The loader "
            "tolerated it, but greenhook reads nothing outside the object's loaded segments: "
            "rebuild or reinstall the library", None)

    cdef str _string(self, uintptr_t off):
        """The NUL-terminated string at ``off`` in the string table, or None if it does not
        end inside the table's segment."""
        cdef const char *p
        cdef const char *nul
        if self.strtab == 0 or off >= self.strtab_end - self.strtab:
            return None
        p = <const char *>(self.strtab + off)
        nul = <const char *>memchr(p, 0, self.strtab_end - self.strtab - off)
        if nul == NULL:
            return None
        return p[:nul - p].decode("utf-8", "surrogateescape")

    def slots(self, names=None):
        """Every relocation slot that binds a symbol imported by this object.

        Returns a list of ``(symbol, slot_address, kind, current_value)`` with kind one of
        ``"JUMP_SLOT"``, ``"GLOB_DAT"``, ``"ABS64"``.  ``names``: a set of symbol names to keep.
        Raises MalformedELF if a table the slots are read from lies outside the object's
        loaded segments.
        """
        cdef list out = []
        cdef set seen = set()
        if not GH_ARCH_SUPPORTED:
            raise UnsupportedPlatform(f"GOT patching is not supported on {ARCH}")
        if self.problem is not None:
            self._corrupt(self.problem)
        if self.symtab == 0 or self.strtab == 0:
            return out
        self._scan(self.jmprel, self.pltrelsz, "DT_JMPREL", "DT_PLTRELSZ", names, out, seen)
        self._scan(self.rela, self.relasz, "DT_RELA", "DT_RELASZ", names, out, seen)
        return out

    cdef _scan(self, uintptr_t table, uintptr_t size, str tag, str size_tag, names, list out,
               set seen):
        cdef uintptr_t i, n, slot, nsyms
        cdef const gh_rela_t *r
        cdef const gh_sym_t *sym
        cdef const _segment *seg
        cdef unsigned long rtype, sidx
        cdef str kind, name
        if table == 0 or size == 0:
            return
        # Entries are Elf64_Rela whatever DT_RELAENT says (the loader insists on that size);
        # only whole entries are read.
        n = size // sizeof(gh_rela_t)
        if not self._inside(table, n * sizeof(gh_rela_t)):
            self._corrupt(f"{size_tag} says the {tag} table has {size} bytes at {table:#x}, "
                          f"which does not fit in a loaded segment")
        nsyms = (self.symtab_end - self.symtab) // sizeof(gh_sym_t)
        for i in range(n):
            r = <const gh_rela_t *>(table + i * sizeof(gh_rela_t))
            rtype = GH_R_TYPE(r.r_info)
            if rtype == <unsigned long>GH_R_JUMP_SLOT:
                kind = "JUMP_SLOT"
            elif rtype == <unsigned long>GH_R_GLOB_DAT:
                kind = "GLOB_DAT"
            elif rtype == <unsigned long>GH_R_ABS64:
                kind = "ABS64"
                if r.r_addend != 0:
                    continue  # points into the middle of something: not a function pointer
            else:
                continue
            sidx = GH_R_SYM(r.r_info)
            if sidx == 0:
                continue
            if sidx >= nsyms:
                self._corrupt(f"{tag} entry {i} names symbol {sidx}, past the end of the "
                              f"segment holding the symbol table ({nsyms} entries fit)")
            # Entries are Elf64_Sym whatever DT_SYMENT says: the loader ignores DT_SYMENT.
            sym = <const gh_sym_t *>(self.symtab + sidx * sizeof(gh_sym_t))
            if sym.st_shndx != SHN_UNDEF:
                continue  # defined here: not an import
            name = self._string(sym.st_name)
            if name is None:
                self._corrupt(f"the name of symbol {sidx} (string table offset "
                              f"{sym.st_name:#x}) does not end inside the string table's "
                              f"segment")
            if names is not None and name not in names:
                continue
            slot = self.base + r.r_offset
            seg = self._segment_of(slot)
            if (seg == NULL or not seg.writable or sizeof(uintptr_t) > seg.hi - slot
                    or slot % sizeof(uintptr_t)):
                self._corrupt(f"{tag} entry {i} puts the {kind} slot of {name} at {slot:#x}, "
                              f"which is not a pointer-aligned address in a writable loaded "
                              f"segment")
            if slot in seen:
                continue
            seen.add(slot)
            out.append((name, slot, kind, gh_load_slot(<void *>slot)))


cdef LoadedObject _describe(_raw_obj *raw, str exe):
    cdef LoadedObject o = LoadedObject.__new__(LoadedObject)
    cdef const ElfW_Phdr *ph
    cdef const gh_dyn_t *d = NULL
    cdef uintptr_t i, ndyn = 0, end, lo
    cdef uintptr_t soname_off = <uintptr_t>-1
    cdef uintptr_t runpath_off = <uintptr_t>-1
    cdef uintptr_t rpath_off = <uintptr_t>-1
    cdef list needed_offs = []
    cdef bint pltrel_is_rela = True
    o.base = raw.base
    o.is_main = raw.name[0] == 0 and exe is not None
    o.path = raw.name.decode("utf-8", "surrogateescape") if raw.name[0] else (exe or "")
    o.relro = False
    o.relro_range = None
    o.bind_now = False
    o.needed = []
    o.soname = None
    o.runpath = None
    o.problem = None
    o.strtab = o.strtab_end = o.symtab = o.symtab_end = 0
    o.jmprel = o.pltrelsz = o.rela = o.relasz = 0
    # The loaded segments: the only memory this object's tables may be read from.
    o.segs = <_segment *>malloc((raw.phnum or 1) * sizeof(_segment))
    if o.segs == NULL:
        raise MemoryError("describing a loaded object")
    o.nsegs = 0
    for i in range(raw.phnum):
        ph = &raw.phdr[i]
        lo = raw.base + ph.p_vaddr
        if ph.p_type == PT_LOAD and lo + ph.p_memsz > lo:     # not empty, no wrap-around
            o.segs[o.nsegs].lo = lo
            o.segs[o.nsegs].hi = lo + ph.p_memsz
            o.segs[o.nsegs].writable = (ph.p_flags & PF_W) != 0
            o.nsegs += 1
    for i in range(raw.phnum):
        ph = &raw.phdr[i]
        if ph.p_type == PT_DYNAMIC:
            d = <const gh_dyn_t *>(raw.base + ph.p_vaddr)
        elif ph.p_type == PT_GNU_RELRO:
            o.relro = True
            o.relro_range = (raw.base + ph.p_vaddr, raw.base + ph.p_vaddr + ph.p_memsz)
    if d == NULL:
        return o
    end = o._end_of(<uintptr_t>d)
    if end == 0:
        o.problem = f"PT_DYNAMIC ({<uintptr_t>d:#x}) is not inside a loaded segment"
        return o
    # Walk to DT_NULL as the loader does (it ignores PT_DYNAMIC's size), but never past the
    # end of the segment.
    ndyn = (end - <uintptr_t>d) // sizeof(gh_dyn_t)
    for i in range(ndyn + 1):
        if i == ndyn:
            o.problem = "the dynamic section has no DT_NULL before the end of its segment"
            return o
        if d[i].d_tag == DT_NULL:
            break
        if d[i].d_tag == DT_STRTAB:
            o.strtab = o._ptr(d[i].d_un.d_ptr)
        elif d[i].d_tag == DT_SYMTAB:
            o.symtab = o._ptr(d[i].d_un.d_ptr)
        elif d[i].d_tag == DT_JMPREL:
            o.jmprel = o._ptr(d[i].d_un.d_ptr)
        elif d[i].d_tag == DT_PLTRELSZ:
            o.pltrelsz = d[i].d_un.d_val
        elif d[i].d_tag == DT_PLTREL:
            pltrel_is_rela = d[i].d_un.d_val == DT_RELA
        elif d[i].d_tag == DT_RELA:
            o.rela = o._ptr(d[i].d_un.d_ptr)
        elif d[i].d_tag == DT_RELASZ:
            o.relasz = d[i].d_un.d_val
        elif d[i].d_tag == DT_SONAME:
            soname_off = d[i].d_un.d_val
        elif d[i].d_tag == DT_NEEDED:
            needed_offs.append(d[i].d_un.d_val)
        elif d[i].d_tag == DT_RUNPATH:
            runpath_off = d[i].d_un.d_val
        elif d[i].d_tag == DT_RPATH:
            rpath_off = d[i].d_un.d_val
        elif d[i].d_tag == DT_BIND_NOW:
            o.bind_now = True
        elif d[i].d_tag == DT_FLAGS:
            if d[i].d_un.d_val & DF_BIND_NOW:
                o.bind_now = True
        elif d[i].d_tag == DT_FLAGS_1:
            if d[i].d_un.d_val & DF_1_NOW:
                o.bind_now = True
    if not pltrel_is_rela:
        o.jmprel = o.pltrelsz = 0  # REL-format PLT relocations: not a supported target
    # DT_STRSZ is not trusted (the loader ignores it): strings end at their NUL, inside the
    # string table's segment.  The symbol table's length is bounded by its segment likewise.
    if o.strtab:
        o.strtab_end = o._end_of(o.strtab)
        if o.strtab_end == 0:
            o.problem = f"DT_STRTAB ({o.strtab:#x}) is not inside a loaded segment"
            o.strtab = 0
    if o.symtab:
        o.symtab_end = o._end_of(o.symtab)
        if o.symtab_end == 0:
            o.problem = f"DT_SYMTAB ({o.symtab:#x}) is not inside a loaded segment"
            o.symtab = 0
    if soname_off != <uintptr_t>-1:
        o.soname = o._string(soname_off)
    if runpath_off != <uintptr_t>-1:
        o.runpath = o._string(runpath_off)
    elif rpath_off != <uintptr_t>-1:
        o.runpath = o._string(rpath_off)
    o.needed = [n for n in (o._string(off) for off in needed_offs) if n]
    return o


def loaded_objects():
    """Every object in the loader's list, in load order (main program first, vDSO skipped)."""
    cdef _raw_list lst
    cdef size_t i
    cdef list out = []
    lst.items = NULL
    lst.n = lst.cap = 0
    lst.oom = 0
    try:
        exe = os.path.realpath("/proc/self/exe")
    except OSError:
        exe = None
    try:
        with nogil:
            dl_iterate_phdr(_collect, &lst)
        if lst.oom:
            raise MemoryError("listing loaded objects")
        for i in range(lst.n):
            if lst.items[i].name[0] == 0 and i != 0:
                continue  # the vDSO and other unnamed objects after the main program
            if lst.items[i].name.startswith(b"linux-vdso") or lst.items[i].name.startswith(b"linux-gate"):
                continue
            out.append(_describe(&lst.items[i], exe))
    finally:
        for i in range(lst.n):
            free(lst.items[i].name)
        free(lst.items)
    return out


# --- page protection -------------------------------------------------------------------

def _maps():
    """[(start, end, perms)] from /proc/self/maps."""
    out = []
    with open("/proc/self/maps", "rb") as f:
        for line in f:
            parts = line.split(None, 5)
            lo, hi = parts[0].split(b"-")
            out.append((int(lo, 16), int(hi, 16), parts[1].decode()))
    return out


def page_protection(uintptr_t address):
    """The perms string (``"r--p"``...) of the mapping containing ``address``, from /proc/self/maps."""
    for lo, hi, perms in _maps():
        if lo <= address < hi:
            return perms
    raise PatchError(f"address {address:#x} is not mapped in this process")


cdef int _prot_of(str perms):
    cdef int p = 0
    if perms[0] == "r":
        p |= PROT_READ
    if perms[1] == "w":
        p |= PROT_WRITE
    if perms[2] == "x":
        p |= PROT_EXEC
    return p


def read_slot(uintptr_t address):
    return gh_load_slot(<void *>address)


cdef _write_page(uintptr_t page, uintptr_t pagesize, str perms, list items, list done):
    """Store each ``(address, value)`` of ``items`` (all in ``page``), appending
    ``(address, previous value)`` to ``done`` as each store lands.  A read-only page is made
    writable for the stores and then given back ``perms``.  Raises PatchError."""
    cdef int prot = _prot_of(perms)
    cdef int rc, e
    cdef uintptr_t addr, value
    if not prot & PROT_WRITE:
        rc = mprotect(<void *>page, pagesize, prot | PROT_WRITE | PROT_READ)
        if rc != 0:
            e = errno
            raise PatchError(
                f"cannot make the GOT page {page:#x} ({perms}) writable (mprotect: "
                f"{os.strerror(e)}); the loader may have sealed it")
    try:
        for addr, value in items:
            done.append((addr, gh_load_slot(<void *>addr)))
            gh_store_slot(<void *>addr, value)
    finally:
        if not prot & PROT_WRITE:
            rc = mprotect(<void *>page, pagesize, prot)
            if rc != 0:
                e = errno
                raise PatchError(f"cannot give page {page:#x} back its protection {perms} "
                                 f"(mprotect: {os.strerror(e)})")


cdef dict _by_page(list entries, uintptr_t pagesize, list maps):
    """{page: (perms, [(address, value), ...])} in first-seen order; PatchError if a slot is
    misaligned or its page is not mapped (checked before anything is written)."""
    cdef uintptr_t addr, page
    cdef dict pages = {}
    for addr, value in entries:
        if addr % sizeof(uintptr_t):
            raise PatchError(f"slot {addr:#x} is not pointer-aligned")
        page = addr & ~(pagesize - 1)
        if page not in pages:
            perms = None
            for lo, hi, p in maps:
                if lo <= page < hi:
                    perms = p
                    break
            if perms is None:
                raise PatchError(f"slot page {page:#x} is not mapped in this process")
            pages[page] = (perms, [])
        pages[page][1].append((addr, value))
    return pages


def write_slots(entries):
    """Write ``[(slot_address, new_value), ...]``; return the previous values, in order.

    Pages that are not writable (RELRO) are made writable for the write and then given back
    their exact previous protection.  Each slot is written with one atomic 8-byte store, so a
    thread calling through it concurrently sees either the old or the new target.

    All or nothing: if a page cannot be written (mprotect refused, sealed memory ...), the
    slots already written are put back, in reverse order, before PatchError is raised.
    """
    cdef uintptr_t pagesize = <uintptr_t>sysconf(_SC_PAGESIZE)
    cdef list done = []
    if not GH_ARCH_SUPPORTED:
        raise UnsupportedPlatform(f"GOT patching is not supported on {ARCH}")
    entries = list(entries)
    if not entries:
        return []
    pages = _by_page(entries, pagesize, _maps())
    try:
        for page, (perms, items) in pages.items():
            _write_page(page, pagesize, perms, items, done)
    except BaseException as exc:
        try:
            _roll_back(done, pagesize)
        except PatchError as again:
            raise PatchError(
                f"{exc}; putting back the {len(done)} slots already written failed too "
                f"({again}): the object is left partly patched") from exc
        if isinstance(exc, PatchError):
            put_back = (f" (the {len(done)} slots written before the failure were put back)"
                        if done else "")
            raise PatchError(f"{exc}; nothing was changed{put_back}") from exc
        raise
    previous = {}
    for addr, old in done:
        previous.setdefault(addr, old)   # a slot listed twice: its value before the first
    return [previous[addr] for addr, _ in entries]


def _roll_back(list done, uintptr_t pagesize):
    """Put back ``[(address, previous value)]`` in reverse order."""
    cdef list undone = []
    if not done:
        return
    maps = _maps()
    for addr, old in reversed(done):
        page = <uintptr_t>addr & ~(pagesize - 1)
        pages = _by_page([(addr, old)], pagesize, maps)
        perms, items = pages[page]
        _write_page(page, pagesize, perms, items, undone)
