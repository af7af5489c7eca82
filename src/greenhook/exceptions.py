"""greenhook's exception hierarchy: one base class, one subclass per kind of failure."""

from typing import Optional

__all__ = [
    "GreenhookError",
    "UnsupportedPlatform",
    "LibraryNotFound",
    "LibraryNotLoaded",
    "NotAnELF",
    "NotARegularFile",
    "MalformedELF",
    "UnsupportedELF",
    "LibraryUnreadable",
    "ModuleNotFound",
    "ImportFailed",
    "PatchError",
    "RefusedLibrary",
    "BackendError",
    "InvalidArgument",
]


class GreenhookError(Exception):
    """Base class of every error greenhook raises on purpose."""


class UnsupportedPlatform(GreenhookError):
    """Patching needs Linux on x86_64 or aarch64 (ELF, glibc-style dynamic loader)."""


class LibraryNotFound(GreenhookError, FileNotFoundError):
    """A path was given and no file exists there."""


class LibraryNotLoaded(GreenhookError):
    """The library exists (or was named by soname) but is not loaded in this process.

    greenhook never ``dlopen``s a second copy: import the module that loads it first.
    """


class LibraryUnreadable(GreenhookError, OSError):
    """A file exists at the path but cannot be read (permissions, I/O error ...).  Also an
    ``OSError``; ``errno`` is the original error's."""


class NotAnELF(GreenhookError):
    """The file exists but is not an ELF shared object."""


class NotARegularFile(NotAnELF):
    """The path names a directory, a FIFO, a socket or a device, not a regular file.  Refused
    before it is opened (opening a FIFO would block)."""


class MalformedELF(NotAnELF):
    """The object starts like an ELF object but is truncated or corrupt: a table its dynamic
    section names lies outside the file (on disk) or outside its loaded segments (in memory).
    ``offset``: the file offset or address concerned, when known."""

    def __init__(self, message: str, offset: Optional[int] = None) -> None:
        super().__init__(message)
        self.offset = offset


class UnsupportedELF(NotAnELF):
    """A valid ELF object of a class, byte order or machine greenhook does not read or patch
    (32-bit, big-endian, another architecture)."""


class ImportFailed(GreenhookError, ImportError):
    """Importing the module that was named failed.  Also an ``ImportError``; the original
    error is the ``__cause__``."""


class ModuleNotFound(ImportFailed, ModuleNotFoundError):
    """No module of the name given can be imported.  Also a ``ModuleNotFoundError``."""


class PatchError(GreenhookError):
    """Writing or restoring a GOT slot failed (page protection, sealed memory, ...)."""


class RefusedLibrary(PatchError):
    """greenhook will not patch this object (libc, the loader, libpython, greenlet, ...)."""


class BackendError(GreenhookError):
    """An unknown hub backend was asked for, or its package is not installed."""


class InvalidArgument(GreenhookError, ValueError, TypeError):
    """An argument or environment setting has the wrong type or value (a NaN timeout, a
    ``report`` that is not callable, ``GREENHOOK_WATCH=abc`` ...).  Also a ``ValueError`` and a
    ``TypeError``, so code written against the usual Python exceptions keeps working."""
