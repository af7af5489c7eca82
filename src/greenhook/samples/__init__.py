"""Sample C clients that prove greening works, and the delay server they talk to.

The C sources live in ``cext_samples/`` and are built by ``build_ext`` into
``greenhook/samples/_bin/``: for every variant in ``VARIANTS`` a shared library
``libghsample_<variant>.so`` (the "native driver") and a CPython extension
``_ghsample_<variant>`` linked against it (the "driver's Python binding")::

    from greenhook import samples
    from greenhook.samples.server import DelayServer

    mod = samples.load("now")
    with DelayServer() as srv:
        assert mod.request("poll_nonblock", srv.tcp_port, 50, b"ping") == b"ping"

Variants (same source, different link flags; see cext_samples/README.md):

* ``lazy``      partial RELRO, lazy binding: ``.got.plt`` slots point into the PLT until first use
* ``now``       full RELRO (``-z relro -z now``): GOT read-only after start-up
* ``noplt``     ``-fno-plt`` + full RELRO: calls through ``R_X86_64_GLOB_DAT`` slots in ``.got``
* ``addrtaken`` request code calls through function pointers initialised in ``.data``
  (``R_X86_64_64``); the thin wrappers still call through the PLT (two slots, one symbol)
* ``fortify``   ``-O2 -D_FORTIFY_SOURCE=2``: request code imports ``__recv_chk``, ``__read_chk``,
  ``__recvfrom_chk``, ``__poll_chk``, ``__ppoll_chk``, ``__fdelt_chk``

``GREENHOOK_SAMPLES_BIN=/some/dir`` makes this module use samples built elsewhere
(``python cext_samples/build_samples.py DIR``).
"""
import ctypes
import importlib
import importlib.machinery
import importlib.util
import os
import socket
import sys

__all__ = [
    "VARIANTS",
    "STYLES",
    "SLEEP_STYLES",
    "STREAM_STYLES",
    "STYLE_CALLS",
    "FORTIFY_TWINS",
    "SamplesNotBuilt",
    "bin_dir",
    "load",
    "library_path",
    "soname",
    "ctypes_lib",
    "WRAPPERS",
    "FD_SETSIZE",
    "pollfd",
    "timespec",
    "timeval",
    "iovec",
    "msghdr",
    "fd_set",
    "sockaddr",
]

VARIANTS = ("lazy", "now", "noplt", "addrtaken", "fortify")

# The names are a contract with ghsample.c (ghs_style_name) and with the tests.
STYLES = (
    "send_recv",
    "read_write",
    "readv_writev",
    "sendmsg_recvmsg",
    "unix",
    "udp",
    "poll_nonblock",
    "ppoll",
    "select",
    "pselect",
    "rcvtimeo",
    "accept",
    "accept4",
    "usleep",
    "nanosleep",
    "clock_nanosleep",
)
SLEEP_STYLES = ("usleep", "nanosleep", "clock_nanosleep")
# Styles over a stream connection; every one of them also accepts a unix socket path.
STREAM_STYLES = tuple(s for s in STYLES if s not in SLEEP_STYLES and s != "udp")

# The blocking libc calls each style makes, in call order (plain names; in the ``fortify``
# variant the request code calls the FORTIFY_TWINS instead).
STYLE_CALLS = {
    "send_recv": ("connect", "send", "recv"),
    "read_write": ("connect", "write", "read"),
    "readv_writev": ("connect", "writev", "readv"),
    "sendmsg_recvmsg": ("connect", "sendmsg", "recvmsg"),
    "unix": ("connect", "send", "recv"),
    "udp": ("sendto", "recvfrom"),
    "poll_nonblock": ("connect", "poll", "send", "recv"),
    "ppoll": ("connect", "ppoll", "send", "recv"),
    "select": ("connect", "send", "select", "recv"),
    "pselect": ("connect", "send", "pselect", "recv"),
    "rcvtimeo": ("connect", "send", "recv"),
    "accept": ("connect", "send", "accept", "recv"),
    "accept4": ("connect", "send", "accept4", "recv"),
    "usleep": ("usleep",),
    "nanosleep": ("nanosleep",),
    "clock_nanosleep": ("clock_nanosleep",),
}
FORTIFY_TWINS = {
    "recv": "__recv_chk",
    "read": "__read_chk",
    "recvfrom": "__recvfrom_chk",
    "poll": "__poll_chk",
    "ppoll": "__ppoll_chk",
}


class SamplesNotBuilt(ImportError):
    """The sample binaries are missing (the package was installed without them)."""


def _check_variant(variant):
    if variant not in VARIANTS:
        raise ValueError("unknown sample variant %r (expected one of %s)"
                         % (variant, ", ".join(VARIANTS)))


def bin_dir():
    """Directory holding the built samples."""
    override = os.environ.get("GREENHOOK_SAMPLES_BIN")
    if override:
        return os.path.abspath(override)
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bin")


def soname(variant):
    """DT_SONAME (and file name) of a variant's library: ``libghsample_<variant>.so``."""
    _check_variant(variant)
    return "libghsample_%s.so" % variant


def library_path(variant):
    """Absolute path of ``libghsample_<variant>.so``."""
    path = os.path.join(bin_dir(), soname(variant))
    if not os.path.exists(path):
        raise SamplesNotBuilt(
            "%s not found: the greenhook samples are not built (build the package with its "
            "build_ext, e.g. pip install ., or set GREENHOOK_SAMPLES_BIN)" % path)
    return path


def load(variant):
    """Import and return the extension module ``_ghsample_<variant>``."""
    _check_variant(variant)
    short = "_ghsample_%s" % variant
    if not os.environ.get("GREENHOOK_SAMPLES_BIN"):
        try:
            return importlib.import_module("%s._bin.%s" % (__name__, short))
        except ImportError as exc:
            raise SamplesNotBuilt(
                "cannot import the sample extension %s (%s): the greenhook samples are not "
                "built (build the package with its build_ext, e.g. pip install .)"
                % (short, exc)) from exc
    # Samples built elsewhere: load the extension file directly.
    name = "%s._bin.%s" % (__name__, short)
    if name in sys.modules:
        return sys.modules[name]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(bin_dir(), short + suffix)
        if os.path.exists(path):
            break
    else:
        raise SamplesNotBuilt("no %s extension in %s" % (short, bin_dir()))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


# ---------------------------------------------------------------------------------------
# ctypes access to the thin wrappers
# ---------------------------------------------------------------------------------------
class pollfd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


class timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    @classmethod
    def from_seconds(cls, seconds):
        sec = int(seconds)
        return cls(sec, int(round((seconds - sec) * 1e9)))


class timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]

    @classmethod
    def from_seconds(cls, seconds):
        sec = int(seconds)
        return cls(sec, int(round((seconds - sec) * 1e6)))


class iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


_NFDBITS = 8 * ctypes.sizeof(ctypes.c_long)
FD_SETSIZE = 1024


class fd_set(ctypes.Structure):
    _fields_ = [("fds_bits", ctypes.c_ulong * (FD_SETSIZE // _NFDBITS))]

    def set(self, fd):
        if not 0 <= fd < FD_SETSIZE:
            raise ValueError("fd %d does not fit an fd_set" % fd)
        self.fds_bits[fd // _NFDBITS] |= 1 << (fd % _NFDBITS)

    def isset(self, fd):
        return bool(self.fds_bits[fd // _NFDBITS] & (1 << (fd % _NFDBITS)))

    @classmethod
    def of(cls, *fds):
        s = cls()
        for fd in fds:
            s.set(fd)
        return s


def sockaddr(address):
    """``(buffer, length)`` of a C sockaddr: ``(host, port)`` -> sockaddr_in, str -> sockaddr_un."""
    if isinstance(address, tuple):
        host, port = address
        raw = (socket.AF_INET.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
               + socket.inet_aton(host) + bytes(8))
    else:
        path = os.fsencode(address)
        raw = socket.AF_UNIX.to_bytes(2, sys.byteorder) + path + b"\0"
        if len(path) >= 108:
            raise ValueError("unix socket path too long")
    buf = ctypes.create_string_buffer(raw, len(raw))
    return buf, len(raw)


_P = ctypes.c_void_p
_INT = ctypes.c_int
_SIZE = ctypes.c_size_t
_SSIZE = ctypes.c_ssize_t
_SOCKLEN = ctypes.c_uint32
_PROTOTYPES = {
    # name: (restype, argtypes); every pointer is a c_void_p (pass byref(), arrays, buffers)
    "ghs_connect": (_INT, [_INT, _P, _SOCKLEN]),
    "ghs_accept": (_INT, [_INT, _P, _P]),
    "ghs_accept4": (_INT, [_INT, _P, _P, _INT]),
    "ghs_read": (_SSIZE, [_INT, _P, _SIZE]),
    "ghs_write": (_SSIZE, [_INT, _P, _SIZE]),
    "ghs_readv": (_SSIZE, [_INT, _P, _INT]),
    "ghs_writev": (_SSIZE, [_INT, _P, _INT]),
    "ghs_recv": (_SSIZE, [_INT, _P, _SIZE, _INT]),
    "ghs_send": (_SSIZE, [_INT, _P, _SIZE, _INT]),
    "ghs_recvfrom": (_SSIZE, [_INT, _P, _SIZE, _INT, _P, _P]),
    "ghs_sendto": (_SSIZE, [_INT, _P, _SIZE, _INT, _P, _SOCKLEN]),
    "ghs_recvmsg": (_SSIZE, [_INT, _P, _INT]),
    "ghs_sendmsg": (_SSIZE, [_INT, _P, _INT]),
    "ghs_poll": (_INT, [_P, ctypes.c_ulong, _INT]),
    "ghs_ppoll": (_INT, [_P, ctypes.c_ulong, _P, _P]),
    "ghs_select": (_INT, [_INT, _P, _P, _P, _P]),
    "ghs_pselect": (_INT, [_INT, _P, _P, _P, _P, _P]),
    "ghs_sleep": (ctypes.c_uint, [ctypes.c_uint]),
    "ghs_usleep": (_INT, [ctypes.c_uint]),
    "ghs_nanosleep": (_INT, [_P, _P]),
    "ghs_clock_nanosleep": (_INT, [_INT, _INT, _P, _P]),
    "ghs_request": (_INT, [ctypes.c_char_p, ctypes.c_char_p, _INT, _INT, _P, _SIZE, _P, _SIZE,
                           ctypes.POINTER(ctypes.c_size_t)]),
    "ghs_style_name": (ctypes.c_char_p, [_INT]),
    "ghs_variant": (ctypes.c_char_p, []),
}
WRAPPERS = tuple(n for n in _PROTOTYPES if n not in ("ghs_request", "ghs_style_name",
                                                      "ghs_variant"))

_ctypes_libs = {}


def ctypes_lib(variant):
    """``ctypes.CDLL`` of ``libghsample_<variant>.so`` (use_errno=True), prototypes set.

    The same loaded object as the extension's (one GOT).  ctypes releases the GIL around
    calls; ``ctypes.get_errno()`` reads errno after a failing call.
    """
    lib = _ctypes_libs.get(variant)
    if lib is None:
        lib = ctypes.CDLL(library_path(variant), use_errno=True)
        for name, (restype, argtypes) in _PROTOTYPES.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        lib = _ctypes_libs.setdefault(variant, lib)
    return lib
