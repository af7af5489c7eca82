"""Read-only parser of ELF files on disk, for the auditor.

Reads only what the dynamic loader reads: the ELF header, the program headers and the
dynamic segment (``PT_DYNAMIC``), whose addresses are turned into file offsets through the
``PT_LOAD`` segments.  Section headers are never used (they may be stripped).  Pure Python
(``struct`` only); the file is read piecewise, so a 500 MB library costs a few small reads.

Supports 64-bit little-endian objects (x86_64, aarch64; other machines parse, with numeric
relocation names).  32-bit and big-endian files raise :class:`UnsupportedELF`.  Every read is
bounds-checked: a truncated or corrupt file raises :class:`MalformedELF` naming the offset,
never ``IndexError`` or ``struct.error``.  Only regular files are opened: a FIFO, socket,
device or directory raises :class:`~greenhook.exceptions.NotARegularFile` without being
opened (opening a FIFO blocks).  Like the loader, it ignores ``DT_SYMENT``.

This module knows nothing of the live process: the patcher (``greenhook._elf``) works on
loaded images.
"""

import errno
import os
import stat
import struct
from typing import Dict, List, NamedTuple, Optional, Tuple

from greenhook.exceptions import (
    LibraryNotFound,
    LibraryUnreadable,
    MalformedELF,
    NotAnELF,
    NotARegularFile,
    UnsupportedELF,
)

__all__ = [
    "ElfFile",
    "Relocation",
    "DynamicSymbol",
    "MalformedELF",
    "UnsupportedELF",
    "read_elf",
    "read_machine",
    "read_ident",
    "open_regular",
    "describe_class",
    "MACHINE_NAMES",
]


# --- constants (from <elf.h>) ---

ELFMAG = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2

ET_EXEC, ET_DYN = 2, 3

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
PT_GNU_RELRO = 0x6474E552

DT_NULL, DT_NEEDED, DT_PLTRELSZ = 0, 1, 2
DT_HASH, DT_STRTAB, DT_SYMTAB = 4, 5, 6
DT_RELA, DT_RELASZ, DT_RELAENT = 7, 8, 9
DT_STRSZ, DT_SYMENT = 10, 11
DT_SONAME, DT_RPATH = 14, 15
DT_REL, DT_RELSZ, DT_RELENT = 17, 18, 19
DT_PLTREL, DT_JMPREL, DT_BIND_NOW = 20, 23, 24
DT_RUNPATH, DT_FLAGS = 29, 30
DT_RELRSZ, DT_RELR, DT_RELRENT = 35, 36, 37
DT_GNU_HASH = 0x6FFFFEF5
DT_VERSYM = 0x6FFFFFF0
DT_FLAGS_1 = 0x6FFFFFFB
DT_VERDEF, DT_VERDEFNUM = 0x6FFFFFFC, 0x6FFFFFFD
DT_VERNEED, DT_VERNEEDNUM = 0x6FFFFFFE, 0x6FFFFFFF

DF_BIND_NOW = 0x8
DF_1_NOW = 0x1
DF_1_PIE = 0x08000000

SHN_UNDEF = 0
STB_NAMES = {0: "LOCAL", 1: "GLOBAL", 2: "WEAK", 10: "GNU_UNIQUE"}
STT_NAMES = {0: "NOTYPE", 1: "OBJECT", 2: "FUNC", 3: "SECTION", 4: "FILE", 5: "COMMON",
             6: "TLS", 10: "IFUNC"}

EM_X86_64, EM_AARCH64 = 62, 183
MACHINE_NAMES = {3: "i386", 8: "mips", 20: "ppc", 21: "ppc64", 22: "s390", 40: "arm",
                 EM_X86_64: "x86_64", EM_AARCH64: "aarch64", 243: "riscv", 258: "loongarch"}

# Relocation type names, without the R_<ARCH>_ prefix (readelf prints the prefixed form).
RELOC_NAMES = {
    EM_X86_64: ("R_X86_64_", {
        0: "NONE", 1: "64", 2: "PC32", 3: "GOT32", 4: "PLT32", 5: "COPY", 6: "GLOB_DAT",
        7: "JUMP_SLOT", 8: "RELATIVE", 9: "GOTPCREL", 10: "32", 11: "32S", 12: "16",
        13: "PC16", 14: "8", 15: "PC8", 16: "DTPMOD64", 17: "DTPOFF64", 18: "TPOFF64",
        19: "TLSGD", 20: "TLSLD", 21: "DTPOFF32", 22: "GOTTPOFF", 23: "TPOFF32", 24: "PC64",
        25: "GOTOFF64", 26: "GOTPC32", 32: "SIZE32", 33: "SIZE64", 36: "TLSDESC",
        37: "IRELATIVE", 38: "RELATIVE64",
    }),
    EM_AARCH64: ("R_AARCH64_", {
        0: "NONE", 257: "ABS64", 258: "ABS32", 259: "ABS16", 260: "PREL64", 261: "PREL32",
        262: "PREL16", 1024: "COPY", 1025: "GLOB_DAT", 1026: "JUMP_SLOT", 1027: "RELATIVE",
        1028: "TLS_DTPMOD64", 1029: "TLS_DTPREL64", 1030: "TLS_TPREL64", 1031: "TLSDESC",
        1032: "IRELATIVE",
    }),
}

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")   # Elf64_Ehdr
_PHDR = struct.Struct("<IIQQQQQQ")           # Elf64_Phdr
_DYN = struct.Struct("<qQ")                  # Elf64_Dyn
_SYM = struct.Struct("<IBBHQQ")              # Elf64_Sym
_RELA = struct.Struct("<QQq")                # Elf64_Rela
_REL = struct.Struct("<QQ")                  # Elf64_Rel
_VERNEED = struct.Struct("<HHIII")           # Elf64_Verneed
_VERNAUX = struct.Struct("<IHHII")           # Elf64_Vernaux
_VERDEF = struct.Struct("<HHHHIII")          # Elf64_Verdef
_VERDAUX = struct.Struct("<II")              # Elf64_Verdaux

_MAX_TABLE = 1 << 30   # no sane dynamic table is a gigabyte: treat as corrupt


class Segment(NamedTuple):
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


class Relocation(NamedTuple):
    """One dynamic relocation: a slot at ``offset`` (a link-time virtual address)."""

    offset: int
    type: int
    type_name: str          # "JUMP_SLOT", "GLOB_DAT", "64", "ABS64", ... (no R_<ARCH>_ prefix)
    symbol: str             # "" when the relocation names no symbol (RELATIVE, ...)
    sym_index: int
    addend: int
    undefined: bool         # the symbol is an import (SHN_UNDEF)
    version: Optional[str]  # "GLIBC_2.2.5", or None
    table: str              # "jmprel", "rela", "rel" or "relr"
    in_relro: bool          # the slot lies in PT_GNU_RELRO (read-only after start-up)


class DynamicSymbol(NamedTuple):
    index: int  # type: ignore[assignment]  # shadows tuple.index, as the ELF calls it
    name: str
    value: int
    size: int
    binding: str            # "GLOBAL", "WEAK", ...
    type: str               # "FUNC", "OBJECT", ...
    undefined: bool
    version: Optional[str]


class ElfFile:
    """What the dynamic loader would see in one ELF file.  Build with :func:`read_elf`."""

    def __init__(self, path):
        self.path = path
        self.machine = 0             # e_machine
        self.elf_type = 0            # e_type: ET_EXEC, ET_DYN, ...
        self.interp = None           # PT_INTERP, for executables
        self.dynamic = False         # PT_DYNAMIC present
        self.soname = None
        self.needed: List[str] = []
        self.rpath: List[str] = []
        self.runpath: List[str] = []
        self.flags = 0               # DT_FLAGS
        self.flags_1 = 0             # DT_FLAGS_1
        self.has_bind_now = False    # DT_BIND_NOW
        self.has_relro_segment = False
        self.relocations: List[Relocation] = []
        self._dyn: Dict[int, int] = {}
        self._reader = None
        self._symbols = None

    # --- derived facts ---

    @property
    def machine_name(self) -> str:
        return MACHINE_NAMES.get(self.machine, "EM_%d" % self.machine)

    @property
    def reloc_prefix(self) -> str:
        return RELOC_NAMES.get(self.machine, ("R_%d_" % self.machine, {}))[0]

    @property
    def bind_now(self) -> bool:
        return bool(self.has_bind_now or self.flags & DF_BIND_NOW or self.flags_1 & DF_1_NOW)

    @property
    def binding(self) -> str:
        """"now" (all symbols resolved at load) or "lazy" (PLT slots resolved on first call)."""
        return "now" if self.bind_now else "lazy"

    @property
    def relro(self) -> str:
        """"none", "partial" (PT_GNU_RELRO, lazy) or "full" (PT_GNU_RELRO + BIND_NOW)."""
        if not self.has_relro_segment:
            return "none"
        return "full" if self.bind_now else "partial"

    @property
    def static(self) -> bool:
        """Statically linked: no PT_DYNAMIC, or a static-pie (self-relocating, no DT_NEEDED)."""
        if not self.dynamic:
            return True
        return bool(self.flags_1 & DF_1_PIE) and not self.needed and self.interp is None

    @property
    def imports(self) -> Dict[str, List[Relocation]]:
        """Undefined symbols that relocations refer to, each with its slots (in file order)."""
        out: Dict[str, List[Relocation]] = {}
        for r in self.relocations:
            if r.symbol and r.undefined:
                out.setdefault(r.symbol, []).append(r)
        return out

    @property
    def imports_syscall(self) -> bool:
        """The object calls the raw ``syscall()`` entry point, which no GOT hook can see."""
        return any(r.symbol == "syscall" and r.undefined for r in self.relocations)

    def symbols(self) -> List[DynamicSymbol]:
        """Every dynamic symbol (count from DT_HASH or DT_GNU_HASH).  Read on first use."""
        if self._symbols is None:
            self._symbols = self._read_all_symbols()
        return self._symbols

    def defines(self, name: str) -> bool:
        """True if the object exports a definition of ``name``."""
        return any(s.name == name and not s.undefined for s in self.symbols())

    def __repr__(self):
        return "<ElfFile %s %s soname=%r relro=%s binding=%s relocs=%d>" % (
            self.path, self.machine_name, self.soname, self.relro, self.binding,
            len(self.relocations))

    # --- symbols on demand ---

    def _read_all_symbols(self) -> List[DynamicSymbol]:
        rd = self._reader
        if rd is None or DT_SYMTAB not in self._dyn:
            return []
        try:
            with open_regular(self.path) as rd.f:
                count = self._symbol_count()
                rd.check_count(count, rd.syment, rd.symtab_off, "DT_SYMTAB")
                rd.load_symbols(count)
                return [rd.symbol(i) for i in range(count)]
        except (LibraryNotFound, LibraryUnreadable):
            raise
        except OSError as e:
            raise _os_error(self.path, e) from e
        except (struct.error, IndexError, ValueError, OverflowError, MemoryError) as e:
            raise MalformedELF("%s: corrupt ELF file (%s)" % (self.path, e)) from None
        finally:
            rd.f = None

    def _symbol_count(self) -> int:
        rd, dyn = self._reader, self._dyn
        if DT_HASH in dyn:
            off = rd.vaddr_to_offset(dyn[DT_HASH], "DT_HASH")
            _nbucket, nchain = struct.unpack("<II", rd.read(off, 8, "DT_HASH header"))
            return nchain
        if DT_GNU_HASH in dyn:
            off = rd.vaddr_to_offset(dyn[DT_GNU_HASH], "DT_GNU_HASH")
            nbuckets, symoffset, bloom_size, _shift = struct.unpack(
                "<IIII", rd.read(off, 16, "DT_GNU_HASH header"))
            rd.check_count(nbuckets, 4, off, "DT_GNU_HASH buckets")
            rd.check_count(bloom_size, 8, off, "DT_GNU_HASH bloom filter")
            boff = off + 16 + 8 * bloom_size
            buckets = struct.unpack("<%dI" % nbuckets,
                                    rd.read(boff, 4 * nbuckets, "DT_GNU_HASH buckets"))
            last = max(buckets, default=0)
            if last < symoffset:
                return symoffset
            # Walk the last bucket's chain to its end marker (low bit set), a page at a time.
            coff = boff + 4 * nbuckets + 4 * (last - symoffset)
            while True:
                n = min(1024, (rd.size - coff) // 4)
                for (h,) in struct.iter_unpack("<I", rd.read(coff, 4 * max(n, 1),
                                                             "DT_GNU_HASH chain")):
                    last += 1
                    if h & 1:
                        return last
                coff += 4 * n
        # No hash table: the symbol table ends where the string table starts in every
        # layout GNU ld and lld produce.
        if DT_STRTAB in dyn and dyn[DT_STRTAB] > dyn[DT_SYMTAB]:
            return (dyn[DT_STRTAB] - dyn[DT_SYMTAB]) // self._reader.syment
        return 0


class _Reader:
    """Bounds-checked reads from an open file, plus address translation."""

    def __init__(self, path, f, size):
        self.path = path
        self.f = f
        self.size = size
        self.loads: List[Segment] = []
        self.strtab = b""
        self.strtab_off = 0
        self.symtab_off = None
        self.syment = _SYM.size
        self.versym_off = None
        self.version_names: Dict[int, Tuple[str, bool]] = {}   # index -> (name, from verneed)
        self._sym_cache: Dict[int, DynamicSymbol] = {}
        self._symtab_block = b""
        self._symtab_count = 0
        self._versym_block = b""

    def fail(self, what, offset, detail="lies beyond the end of the file"):
        return MalformedELF(
            "%s: truncated or corrupt ELF file: %s at offset %#x %s (file size %d bytes)"
            % (self.path, what, offset, detail, self.size), offset)

    def read(self, offset, size, what) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise self.fail(what, offset)
        self.f.seek(offset)
        data = self.f.read(size)
        if len(data) != size:
            raise self.fail(what, offset, "could not be read in full")
        return data

    def check_count(self, count, entsize, offset, what):
        if count * entsize > _MAX_TABLE or count * entsize > self.size:
            raise self.fail(what, offset, "claims %d entries" % count)

    def vaddr_to_offset(self, vaddr, what) -> int:
        for seg in self.loads:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return vaddr - seg.vaddr + seg.offset
        raise MalformedELF(
            "%s: corrupt ELF file: %s address %#x is not inside any PT_LOAD segment"
            % (self.path, what, vaddr), None)

    def string(self, index, what="string") -> str:
        if index >= len(self.strtab):
            raise self.fail(what, self.strtab_off + index, "lies beyond DT_STRSZ")
        end = self.strtab.find(b"\0", index)
        if end < 0:
            raise self.fail(what, self.strtab_off + index, "is not NUL-terminated")
        return self.strtab[index:end].decode("utf-8", "surrogateescape")

    def load_symbols(self, count):
        """Read symbols [0, count) in one block (the relocations name at most these)."""
        if count <= self._symtab_count or self.symtab_off is None:
            return
        self.check_count(count, self.syment, self.symtab_off, "DT_SYMTAB")
        self._symtab_block = self.read(self.symtab_off, count * self.syment, "DT_SYMTAB")
        self._symtab_count = count
        if self.versym_off is not None:
            self._versym_block = self.read(self.versym_off, 2 * count, "DT_VERSYM")

    def symbol(self, index) -> DynamicSymbol:
        sym = self._sym_cache.get(index)
        if sym is not None:
            return sym
        if self.symtab_off is None:
            raise MalformedELF("%s: corrupt ELF file: relocations name symbols but there is"
                               " no DT_SYMTAB" % self.path, None)
        if index >= self._symtab_count:
            self.load_symbols(index + 1)
        st_name, st_info, _other, shndx, value, size = _SYM.unpack_from(
            self._symtab_block, index * self.syment)
        name = self.string(st_name, "name of dynamic symbol %d" % index)
        version = None
        if self._versym_block:
            (vi,) = struct.unpack_from("<H", self._versym_block, 2 * index)
            entry = self.version_names.get(vi & 0x7FFF)
            if entry is not None:
                version = entry[0]
        sym = DynamicSymbol(index, name, value, size,
                            STB_NAMES.get(st_info >> 4, str(st_info >> 4)),
                            STT_NAMES.get(st_info & 0xF, str(st_info & 0xF)),
                            shndx == SHN_UNDEF, version)
        self._sym_cache[index] = sym
        return sym


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"))


def _kind_of(mode) -> str:
    for test, kind in _FILE_KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def _not_regular(path, mode):
    return NotARegularFile(
        "%s: is %s, not a regular file: greenhook reads shared libraries from regular files"
        " only; give the path of the library's .so file" % (path, _kind_of(mode)))


def _os_error(path, e):
    """The GreenhookError for an OSError met while looking at ``path``."""
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return LibraryNotFound("%s: no such file" % path + (
            " (a component of the path is not a directory)" if e.errno == errno.ENOTDIR
            else ""))
    if e.errno == errno.ELOOP:
        return LibraryNotFound("%s: no such file (too many levels of symbolic links)" % path)
    exc = LibraryUnreadable("%s: cannot read: %s; check the file's permissions"
                            % (path, e.strerror or e))
    exc.errno = e.errno
    return exc


def open_regular(path):
    """Open ``path`` for reading as a binary file object, or raise a GreenhookError.

    Anything but a regular file is refused before it is opened (opening a FIFO blocks until a
    writer comes; opening a device may act on it), and again after, in case the path was
    swapped between the two looks.  ``LibraryNotFound`` (no such file), ``NotARegularFile``,
    ``LibraryUnreadable`` (permissions, I/O errors).
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise _os_error(path, e) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_ident(path) -> Tuple[int, int, int]:
    """(EI_CLASS, EI_DATA, e_machine) of the ELF file at ``path``.

    Raises like :func:`open_regular`, and :class:`~greenhook.exceptions.NotAnELF` when the
    file is not an ELF file (empty, too short, another format)."""
    with open_regular(path) as f:
        try:
            head = f.read(20)
        except OSError as e:
            raise _os_error(path, e) from e
    if head[:4] != ELFMAG:
        what = "the file is empty" if not head else "starts with %r" % head[:8]
        raise NotAnELF("%s: not an ELF file (%s)" % (path, what))
    if len(head) < 20:
        raise MalformedELF("%s: truncated ELF file: %d bytes, shorter than the ELF"
                           " identification and header" % (path, len(head)), len(head))
    fmt = "<H" if head[5] == ELFDATA2LSB else ">H"
    return head[4], head[5], struct.unpack_from(fmt, head, 18)[0]


def describe_class(ei_class, ei_data, machine=None) -> str:
    """"64-bit little-endian x86_64" and the like, for messages."""
    cls = {ELFCLASS32: "32-bit", ELFCLASS64: "64-bit"}.get(ei_class, "class %d" % ei_class)
    order = {ELFDATA2LSB: "little-endian", ELFDATA2MSB: "big-endian"}.get(
        ei_data, "byte order %d" % ei_data)
    text = "%s %s" % (cls, order)
    if machine is not None:
        text += " " + MACHINE_NAMES.get(machine, "EM_%d" % machine)
    return text


def read_machine(path) -> Optional[Tuple[int, int, int]]:
    """(EI_CLASS, EI_DATA, e_machine) of an ELF file, or None if it is not one (or not a
    regular, readable file).  Never raises."""
    try:
        return read_ident(path)
    except (NotAnELF, LibraryNotFound, LibraryUnreadable):
        return None


def read_elf(path, with_relocations=True) -> ElfFile:
    """Parse the ELF file at ``path``.

    Raises :class:`~greenhook.exceptions.LibraryNotFound` if there is no such file,
    :class:`~greenhook.exceptions.NotARegularFile` for a directory, FIFO, socket or device
    (refused without opening it), :class:`~greenhook.exceptions.LibraryUnreadable` if it
    cannot be read, :class:`~greenhook.exceptions.NotAnELF` if it is not an ELF file,
    :class:`UnsupportedELF` for 32-bit or big-endian objects and :class:`MalformedELF` for
    truncated or corrupt ones.
    """
    path = os.fspath(path)
    f = open_regular(path)
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
            elf = _parse(path, f, size, with_relocations)
            if elf._reader is not None:
                elf._reader.f = None       # symbols() reopens the file by path
            return elf
        except (LibraryNotFound, LibraryUnreadable):
            raise
        except OSError as e:
            raise _os_error(path, e) from e
        except (struct.error, IndexError, ValueError, OverflowError, MemoryError) as e:
            # Every read is bounds-checked; this is the last line of defence.
            raise MalformedELF("%s: corrupt ELF file (%s)" % (path, e)) from None


def _parse(path, f, size, with_relocations) -> ElfFile:
    rd = _Reader(path, f, size)
    head = f.read(64)
    if not head:
        raise NotAnELF("%s: not an ELF file (the file is empty)" % path)
    if head[:4] != ELFMAG:
        hint = ""
        text = head + f.read(448)
        if b"GROUP" in text or b"INPUT" in text:
            hint = ("; it is a linker script for the static linker: name the library by its"
                    " versioned soname instead (e.g. libc.so.6)")
        raise NotAnELF("%s: not an ELF file (starts with %r)%s" % (path, head[:8], hint))
    if len(head) < 16:
        raise rd.fail("ELF identification", 0)
    ei_class, ei_data = head[4], head[5]
    if ei_class != ELFCLASS64 or ei_data != ELFDATA2LSB:
        raise UnsupportedELF("%s: unsupported ELF class: %s (greenhook reads 64-bit"
                             " little-endian objects only)"
                             % (path, describe_class(ei_class, ei_data)))
    if len(head) < _EHDR.size:
        raise rd.fail("ELF header", 0)
    (_ident, e_type, e_machine, _ver, _entry, e_phoff, _shoff, _flags, _ehsize,
     e_phentsize, e_phnum, _shentsize, _shnum, _shstrndx) = _EHDR.unpack(head)

    elf = ElfFile(path)
    elf.machine = e_machine
    elf.elf_type = e_type
    elf._reader = rd

    # program headers
    if e_phnum and e_phentsize < _PHDR.size:
        raise rd.fail("program header table", e_phoff, "has entries of %d bytes" % e_phentsize)
    rd.check_count(e_phnum, e_phentsize, e_phoff, "program header table")
    block = rd.read(e_phoff, e_phnum * e_phentsize, "program header table")
    dynamic = None
    relro = None
    for i in range(e_phnum):
        p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, _align = \
            _PHDR.unpack_from(block, i * e_phentsize)
        seg = Segment(p_type, p_flags, p_offset, p_vaddr, p_filesz, p_memsz)
        if seg.type == PT_LOAD:
            rd.loads.append(seg)
        elif seg.type == PT_DYNAMIC:
            dynamic = seg
        elif seg.type == PT_GNU_RELRO:
            relro = seg
        elif seg.type == PT_INTERP:
            raw = rd.read(seg.offset, seg.filesz, "PT_INTERP")
            elf.interp = raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    elf.has_relro_segment = relro is not None
    if dynamic is None:
        return elf      # statically linked
    elf.dynamic = True

    # dynamic segment (read at its p_offset, as the kernel maps it)
    raw = rd.read(dynamic.offset, dynamic.filesz - dynamic.filesz % _DYN.size, "PT_DYNAMIC")
    dyn: Dict[int, int] = {}
    needed_idx, rpath_idx, runpath_idx = [], [], []
    for tag, val in _DYN.iter_unpack(raw):
        if tag == DT_NULL:
            break
        if tag == DT_NEEDED:
            needed_idx.append(val)
        elif tag == DT_RPATH:
            rpath_idx.append(val)
        elif tag == DT_RUNPATH:
            runpath_idx.append(val)
        elif tag == DT_BIND_NOW:
            elf.has_bind_now = True
        else:
            dyn.setdefault(tag, val)
    elf._dyn = dyn
    elf.flags = dyn.get(DT_FLAGS, 0)
    elf.flags_1 = dyn.get(DT_FLAGS_1, 0)

    # string table
    if DT_STRTAB in dyn:
        rd.strtab_off = rd.vaddr_to_offset(dyn[DT_STRTAB], "DT_STRTAB")
        strsz = dyn.get(DT_STRSZ, 0)
        rd.check_count(strsz, 1, rd.strtab_off, "DT_STRTAB")
        rd.strtab = rd.read(rd.strtab_off, strsz, "DT_STRTAB")
    elif needed_idx or rpath_idx or runpath_idx or DT_SONAME in dyn:
        raise MalformedELF("%s: corrupt ELF file: dynamic section names strings but has no"
                           " DT_STRTAB" % path)
    elf.needed = [rd.string(i, "DT_NEEDED name") for i in needed_idx]
    elf.rpath = [p for i in rpath_idx for p in rd.string(i, "DT_RPATH").split(":") if p]
    elf.runpath = [p for i in runpath_idx for p in rd.string(i, "DT_RUNPATH").split(":") if p]
    if DT_SONAME in dyn:
        elf.soname = rd.string(dyn[DT_SONAME], "DT_SONAME")

    # symbol table and versions
    if DT_SYMTAB in dyn:
        rd.symtab_off = rd.vaddr_to_offset(dyn[DT_SYMTAB], "DT_SYMTAB")
        # DT_SYMENT is ignored, as the dynamic loader ignores it: entries are Elf64_Sym.
    if DT_VERSYM in dyn:
        rd.versym_off = rd.vaddr_to_offset(dyn[DT_VERSYM], "DT_VERSYM")
        _read_versions(rd, dyn)

    if with_relocations:
        elf.relocations = _read_relocations(elf, rd, dyn, relro)
    return elf


def _read_versions(rd: _Reader, dyn):
    if DT_VERNEED in dyn:
        off = rd.vaddr_to_offset(dyn[DT_VERNEED], "DT_VERNEED")
        # Each entry is at least one Verneed long: a larger count is corrupt (bounded work).
        for _ in range(min(dyn.get(DT_VERNEEDNUM, 0), rd.size // _VERNEED.size)):
            _v, cnt, _file, aux, nxt = _VERNEED.unpack(rd.read(off, _VERNEED.size, "Verneed"))
            aoff = off + aux
            for _ in range(cnt):
                _h, _f, other, name, anext = _VERNAUX.unpack(
                    rd.read(aoff, _VERNAUX.size, "Vernaux"))
                rd.version_names[other & 0x7FFF] = (rd.string(name, "version name"), True)
                if not anext:
                    break
                aoff += anext
            if not nxt:
                break
            off += nxt
    if DT_VERDEF in dyn:
        off = rd.vaddr_to_offset(dyn[DT_VERDEF], "DT_VERDEF")
        for _ in range(min(dyn.get(DT_VERDEFNUM, 0), rd.size // _VERDEF.size)):
            _v, flags, ndx, cnt, _h, aux, nxt = _VERDEF.unpack(
                rd.read(off, _VERDEF.size, "Verdef"))
            if cnt and not flags & 0x1:       # VER_FLG_BASE names the file, not a version
                name, _an = _VERDAUX.unpack(rd.read(off + aux, _VERDAUX.size, "Verdaux"))
                rd.version_names.setdefault(ndx & 0x7FFF, (rd.string(name, "version name"), False))
            if not nxt:
                break
            off += nxt


def _read_relocations(elf: ElfFile, rd: _Reader, dyn, relro) -> List[Relocation]:
    prefix_names = RELOC_NAMES.get(elf.machine, ("", {}))[1]
    tables = []   # (table name, file offset, size, is_rela)
    if DT_JMPREL in dyn and dyn.get(DT_PLTRELSZ):
        is_rela = dyn.get(DT_PLTREL, DT_RELA) == DT_RELA
        tables.append(("jmprel", rd.vaddr_to_offset(dyn[DT_JMPREL], "DT_JMPREL"),
                       dyn[DT_PLTRELSZ], is_rela))
    if DT_RELA in dyn and dyn.get(DT_RELASZ):
        if dyn.get(DT_RELAENT, _RELA.size) != _RELA.size:
            raise rd.fail("DT_RELA", dyn[DT_RELA], "has entries of %d bytes" % dyn[DT_RELAENT])
        tables.append(("rela", rd.vaddr_to_offset(dyn[DT_RELA], "DT_RELA"),
                       dyn[DT_RELASZ], True))
    if DT_REL in dyn and dyn.get(DT_RELSZ):
        tables.append(("rel", rd.vaddr_to_offset(dyn[DT_REL], "DT_REL"), dyn[DT_RELSZ], False))

    # DT_RELA usually spans DT_JMPREL too (ld.so then skips the overlap): read each entry once.
    seen_ranges = []
    parsed = []
    for name, off, size, is_rela in tables:
        ent = _RELA if is_rela else _REL
        rd.check_count(size, 1, off, "DT_" + name.upper())
        lo, hi = off, off + size - size % ent.size
        for slo, shi in seen_ranges:
            if slo <= lo < shi:
                lo = shi
            if slo < hi <= shi:
                hi = slo
        if hi <= lo:
            continue
        seen_ranges.append((lo, hi))
        data = rd.read(lo, hi - lo, "DT_" + name.upper())
        if is_rela:
            entries = list(ent.iter_unpack(data))
        else:
            entries = [(o, i, 0) for o, i in ent.iter_unpack(data)]
        parsed.append((name, entries))

    max_sym = 0
    for _name, entries in parsed:
        for _o, info, _a in entries:
            if info >> 32 > max_sym:
                max_sym = info >> 32
    if max_sym:
        rd.load_symbols(max_sym + 1)

    lo_relro = relro.vaddr if relro else 0
    hi_relro = relro.vaddr + relro.memsz if relro else 0
    names_cache: Dict[int, str] = {}
    out: List[Relocation] = []
    for name, entries in parsed:
        for r_offset, info, addend in entries:
            rtype = info & 0xFFFFFFFF
            tname = names_cache.get(rtype)
            if tname is None:
                tname = names_cache[rtype] = prefix_names.get(rtype, str(rtype))
            si = info >> 32
            if si:
                sym = rd.symbol(si)
                out.append(Relocation(r_offset, rtype, tname, sym.name, si, addend,
                                      sym.undefined, sym.version, name,
                                      lo_relro <= r_offset < hi_relro))
            else:
                out.append(Relocation(r_offset, rtype, tname, "", 0, addend, False, None,
                                      name, lo_relro <= r_offset < hi_relro))

    if DT_RELR in dyn and dyn.get(DT_RELRSZ):
        relative = {EM_X86_64: 8, EM_AARCH64: 1027}.get(elf.machine, 0)
        off = rd.vaddr_to_offset(dyn[DT_RELR], "DT_RELR")
        size = dyn[DT_RELRSZ]
        rd.check_count(size, 1, off, "DT_RELR")
        data = rd.read(off, size - size % 8, "DT_RELR")
        where = 0
        for (word,) in struct.iter_unpack("<Q", data):
            if not word & 1:
                addrs = [word]
                where = word + 8
            else:
                addrs = [where + 8 * i for i in range(63) if word >> (i + 1) & 1]
                where += 63 * 8
            for a in addrs:
                out.append(Relocation(a, relative, "RELATIVE", "", 0, 0, False, None, "relr",
                                      lo_relro <= a < hi_relro))
    return out
