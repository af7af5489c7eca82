"""greenhook's exception hierarchy: one base class, one subclass per kind of failure."""

__all__ = [
    "GreenhookError",
    "UnsupportedPlatform",
    "LibraryNotFound",
    "LibraryNotLoaded",
    "NotAnELF",
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


class NotAnELF(GreenhookError):
    """The file exists but is not an ELF shared object."""


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
