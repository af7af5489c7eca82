# cython: language_level=3, boundscheck=False, wraparound=False
"""ELF GOT patcher: find objects already loaded in this process, list the slots that bind a
symbol, and rewrite them — restoring each page's exact protection afterwards.

This module knows ELF, the dynamic loader and page protection only.  It is handed
``{symbol: address}`` and never learns what the addresses are.
"""

from libc.stdint cimport uintptr_t, uint32_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport strlen, memcpy
from libc.errno cimport errno
from posix.unistd cimport sysconf, _SC_PAGESIZE
import os

from greenhook.exceptions import PatchError, UnsupportedPlatform

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
        uintptr_t p_vaddr
        uintptr_t p_memsz
    struct dl_phdr_info:
        uintptr_t dlpi_addr
        const char *dlpi_name
        const ElfW_Phdr *dlpi_phdr
        unsigned short dlpi_phnum
    int dl_iterate_phdr(int (*cb)(dl_phdr_info *, size_t, void *) noexcept nogil, void *data)
    enum:
        PT_DYNAMIC, PT_GNU_RELRO, PT_LOAD
        DT_NULL, DT_NEEDED, DT_PLTRELSZ, DT_STRTAB, DT_SYMTAB, DT_RELA, DT_RELASZ, DT_RELAENT
        DT_STRSZ, DT_SYMENT, DT_SONAME, DT_JMPREL, DT_PLTREL, DT_FLAGS, DT_FLAGS_1, DT_BIND_NOW
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
    cdef uintptr_t strtab, symtab, jmprel, pltrelsz, rela, relasz, relaent, syment, strsz

    def __repr__(self):
        return f"<LoadedObject {self.path!r} soname={self.soname!r} base={self.base:#x}>"

    cdef uintptr_t _ptr(self, uintptr_t p):
        # glibc relocates d_ptr entries of the in-memory dynamic section on x86_64/aarch64;
        # other loaders (musl) leave them as offsets.  An unrelocated value is below the bias.
        if self.base and p < self.base:
            return p + self.base
        return p

    cdef str _string(self, uintptr_t off):
        if self.strtab == 0 or (self.strsz and off >= self.strsz):
            return None
        return (<const char *>(self.strtab + off)).decode("utf-8", "surrogateescape")

    def slots(self, names=None):
        """Every relocation slot that binds a symbol imported by this object.

        Returns a list of ``(symbol, slot_address, kind, current_value)`` with kind one of
        ``"JUMP_SLOT"``, ``"GLOB_DAT"``, ``"ABS64"``.  ``names``: a set of symbol names to keep.
        """
        cdef list out = []
        cdef set seen = set()
        if not GH_ARCH_SUPPORTED:
            raise UnsupportedPlatform(f"GOT patching is not supported on {ARCH}")
        if self.symtab == 0 or self.strtab == 0:
            return out
        self._scan(self.jmprel, self.pltrelsz, sizeof(gh_rela_t), names, out, seen)
        self._scan(self.rela, self.relasz, self.relaent or sizeof(gh_rela_t), names, out, seen)
        return out

    cdef _scan(self, uintptr_t table, uintptr_t size, uintptr_t ent, names, list out, set seen):
        cdef uintptr_t i, n, slot
        cdef const gh_rela_t *r
        cdef const gh_sym_t *sym
        cdef unsigned long rtype, sidx
        cdef str kind, name
        if table == 0 or size == 0 or ent == 0:
            return
        n = size // ent
        for i in range(n):
            r = <const gh_rela_t *>(table + i * ent)
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
            sym = <const gh_sym_t *>(self.symtab + sidx * (self.syment or sizeof(gh_sym_t)))
            if sym.st_shndx != SHN_UNDEF:
                continue  # defined here: not an import
            name = self._string(sym.st_name)
            if name is None or (names is not None and name not in names):
                continue
            slot = self.base + r.r_offset
            if slot in seen:
                continue
            seen.add(slot)
            out.append((name, slot, kind, gh_load_slot(<void *>slot)))


cdef LoadedObject _describe(_raw_obj *raw, str exe):
    cdef LoadedObject o = LoadedObject.__new__(LoadedObject)
    cdef const ElfW_Phdr *ph
    cdef const gh_dyn_t *d = NULL
    cdef int i
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
    o.strtab = o.symtab = o.jmprel = o.pltrelsz = o.rela = o.relasz = o.relaent = 0
    o.syment = o.strsz = 0
    for i in range(raw.phnum):
        ph = &raw.phdr[i]
        if ph.p_type == PT_DYNAMIC:
            d = <const gh_dyn_t *>(raw.base + ph.p_vaddr)
        elif ph.p_type == PT_GNU_RELRO:
            o.relro = True
            o.relro_range = (raw.base + ph.p_vaddr, raw.base + ph.p_vaddr + ph.p_memsz)
    if d == NULL:
        return o
    while d.d_tag != DT_NULL:
        if d.d_tag == DT_STRTAB:
            o.strtab = o._ptr(d.d_un.d_ptr)
        elif d.d_tag == DT_SYMTAB:
            o.symtab = o._ptr(d.d_un.d_ptr)
        elif d.d_tag == DT_STRSZ:
            o.strsz = d.d_un.d_val
        elif d.d_tag == DT_SYMENT:
            o.syment = d.d_un.d_val
        elif d.d_tag == DT_JMPREL:
            o.jmprel = o._ptr(d.d_un.d_ptr)
        elif d.d_tag == DT_PLTRELSZ:
            o.pltrelsz = d.d_un.d_val
        elif d.d_tag == DT_PLTREL:
            pltrel_is_rela = d.d_un.d_val == DT_RELA
        elif d.d_tag == DT_RELA:
            o.rela = o._ptr(d.d_un.d_ptr)
        elif d.d_tag == DT_RELASZ:
            o.relasz = d.d_un.d_val
        elif d.d_tag == DT_RELAENT:
            o.relaent = d.d_un.d_val
        elif d.d_tag == DT_SONAME:
            soname_off = d.d_un.d_val
        elif d.d_tag == DT_NEEDED:
            needed_offs.append(d.d_un.d_val)
        elif d.d_tag == DT_RUNPATH:
            runpath_off = d.d_un.d_val
        elif d.d_tag == DT_RPATH:
            rpath_off = d.d_un.d_val
        elif d.d_tag == DT_BIND_NOW:
            o.bind_now = True
        elif d.d_tag == DT_FLAGS:
            if d.d_un.d_val & DF_BIND_NOW:
                o.bind_now = True
        elif d.d_tag == DT_FLAGS_1:
            if d.d_un.d_val & DF_1_NOW:
                o.bind_now = True
        d += 1
    if not pltrel_is_rela:
        o.jmprel = o.pltrelsz = 0  # REL-format PLT relocations: not a supported target
    if soname_off != <uintptr_t>-1:
        o.soname = o._string(soname_off)
    o.runpath = None
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


def write_slots(entries):
    """Write ``[(slot_address, new_value), ...]``; return the previous values, in order.

    Pages that are not writable (RELRO) are made writable for the write and then given back
    their exact previous protection.  Each slot is written with one atomic 8-byte store, so a
    thread calling through it concurrently sees either the old or the new target.
    """
    cdef uintptr_t pagesize = <uintptr_t>sysconf(_SC_PAGESIZE)
    cdef uintptr_t addr, page, value
    cdef int prot, rc
    cdef list old = []
    if not GH_ARCH_SUPPORTED:
        raise UnsupportedPlatform(f"GOT patching is not supported on {ARCH}")
    entries = list(entries)
    if not entries:
        return old
    maps = _maps()
    by_page = {}
    for addr, value in entries:
        if addr % sizeof(uintptr_t):
            raise PatchError(f"slot {addr:#x} is not pointer-aligned")
        by_page.setdefault(addr & ~(pagesize - 1), []).append((addr, value))
    previous = {}
    for page, items in by_page.items():
        perms = None
        for lo, hi, p in maps:
            if lo <= page < hi:
                perms = p
                break
        if perms is None:
            raise PatchError(f"slot page {page:#x} is not mapped in this process")
        prot = _prot_of(perms)
        if not prot & PROT_WRITE:
            rc = mprotect(<void *>page, pagesize, prot | PROT_WRITE | PROT_READ)
            if rc != 0:
                e = errno
                raise PatchError(
                    f"cannot make the GOT page {page:#x} writable (mprotect: {os.strerror(e)}); "
                    "the loader may have sealed it")
        try:
            for addr, value in items:
                previous[addr] = gh_load_slot(<void *>addr)
                gh_store_slot(<void *>addr, value)
        finally:
            if not prot & PROT_WRITE:
                rc = mprotect(<void *>page, pagesize, prot)
                if rc != 0:
                    e = errno
                    raise PatchError(f"cannot restore protection {perms} of page {page:#x}: {os.strerror(e)}")
    for addr, value in entries:
        old.append(previous[addr])
    return old
