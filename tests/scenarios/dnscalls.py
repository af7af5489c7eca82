"""Callers of each resolution function for the DNS scenarios, returning comparable values.

Two ways in: through Python's ``_socket`` (patch it to green its getaddrinfo, getnameinfo,
gethostbyname_r, gethostbyaddr_r) and through ctypes, calling either libc's own function or
greenhook's hook at its address (``hook_functions()``) -- the same C signature, so the two
answers compare directly.  Every caller returns ``["ok", value]`` or ``["error", ...]``.
"""
import ctypes
import socket

import greenhook

libc = ctypes.CDLL(None, use_errno=True)
libc.__h_errno_location.restype = ctypes.POINTER(ctypes.c_int)


class hostent(ctypes.Structure):
    _fields_ = [("h_name", ctypes.c_void_p), ("h_aliases", ctypes.POINTER(ctypes.c_void_p)),
                ("h_addrtype", ctypes.c_int), ("h_length", ctypes.c_int),
                ("h_addr_list", ctypes.POINTER(ctypes.c_void_p))]


HOSTENT_P = ctypes.POINTER(hostent)
PROTOS = {
    "gethostbyname_r": ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.c_char_p, HOSTENT_P, ctypes.c_void_p, ctypes.c_size_t,
        ctypes.POINTER(HOSTENT_P), ctypes.POINTER(ctypes.c_int), use_errno=True),
    "gethostbyname2_r": ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.c_char_p, ctypes.c_int, HOSTENT_P, ctypes.c_void_p, ctypes.c_size_t,
        ctypes.POINTER(HOSTENT_P), ctypes.POINTER(ctypes.c_int), use_errno=True),
    "gethostbyaddr_r": ctypes.CFUNCTYPE(
        ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_int, HOSTENT_P, ctypes.c_void_p,
        ctypes.c_size_t, ctypes.POINTER(HOSTENT_P), ctypes.POINTER(ctypes.c_int), use_errno=True),
    "gethostbyname": ctypes.CFUNCTYPE(HOSTENT_P, ctypes.c_char_p, use_errno=True),
    "gethostbyname2": ctypes.CFUNCTYPE(HOSTENT_P, ctypes.c_char_p, ctypes.c_int, use_errno=True),
    "gethostbyaddr": ctypes.CFUNCTYPE(HOSTENT_P, ctypes.c_char_p, ctypes.c_uint, ctypes.c_int,
                                      use_errno=True),
    "res_query": ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_void_p, ctypes.c_int, use_errno=True),
    "res_search": ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                   ctypes.c_void_p, ctypes.c_int, use_errno=True),
}


def c_function(name, green):
    """libc's ``name`` (green False) or greenhook's hook for it (green True)."""
    if green:
        addr = greenhook._core.hooks().hook_functions()[name]
    else:
        addr = ctypes.cast(getattr(libc, name), ctypes.c_void_p).value
    return PROTOS[name](addr)


def h_errno():
    return libc.__h_errno_location()[0]


def decode(he, length=None):
    """A hostent as [name, aliases, addrtype, [addresses as bytes hex]]."""
    he = he.contents if isinstance(he, HOSTENT_P) else he
    aliases, addrs = [], []
    i = 0
    while he.h_aliases[i]:
        aliases.append(ctypes.string_at(he.h_aliases[i]).decode())
        i += 1
    i = 0
    while he.h_addr_list[i]:
        addrs.append(ctypes.string_at(he.h_addr_list[i], he.h_length).hex())
        i += 1
    return [ctypes.string_at(he.h_name).decode(), aliases, he.h_addrtype, addrs]


def _py(fn, *args):
    try:
        return ["ok", fn(*args)]
    except OSError as exc:
        return ["error", type(exc).__name__, list(exc.args)]


# --- through _socket --------------------------------------------------------------------

def gai(*args):
    return _py(socket.getaddrinfo, *args)


def gni(*args):
    return _py(socket.getnameinfo, *args)


def ghbn_ex(name):
    return _py(socket.gethostbyname_ex, name)


def ghba(addr):
    return _py(socket.gethostbyaddr, addr)


# --- through ctypes ------------------------------------------------------------------------

def ghbn_r(green, name, buflen, af=None):
    """gethostbyname_r (or gethostbyname2_r with ``af``) with a ``buflen`` buffer: [rc,
    h_errno out, answer or None, whether the answer lies in the caller's buffer]."""
    fn = c_function("gethostbyname_r" if af is None else "gethostbyname2_r", green)
    buf = ctypes.create_string_buffer(buflen)
    ret, result, herr = hostent(), HOSTENT_P(), ctypes.c_int(0)
    args = (name.encode(),) + (() if af is None else (af,))
    rc = fn(*args, ctypes.byref(ret), buf, buflen, ctypes.byref(result), ctypes.byref(herr))
    if not result:
        return [rc, herr.value, None, None]
    start = ctypes.addressof(buf)
    inside = start <= ret.h_name < start + buflen
    return [rc, herr.value, decode(result), inside]


def ghba_r(green, packed, af, buflen=4096):
    fn = c_function("gethostbyaddr_r", green)
    buf = ctypes.create_string_buffer(buflen)
    ret, result, herr = hostent(), HOSTENT_P(), ctypes.c_int(0)
    rc = fn(packed, len(packed), af, ctypes.byref(ret), buf, buflen, ctypes.byref(result),
            ctypes.byref(herr))
    return [rc, herr.value, decode(result) if result else None]


def ghbn(green, name, af=None):
    """gethostbyname (or gethostbyname2): [answer or None, h_errno]."""
    if af is None:
        he = c_function("gethostbyname", green)(name.encode())
    else:
        he = c_function("gethostbyname2", green)(name.encode(), af)
    herr = h_errno()
    return [decode(he) if he else None, herr if not he else 0]


def ghba_static(green, packed, af):
    he = c_function("gethostbyaddr", green)(packed, len(packed), af)
    herr = h_errno()
    return [decode(he) if he else None, herr if not he else 0]


def resq(green, fn_name, name, qtype=1, anslen=512):
    """res_query/res_search: [rc, answer without its random id, h_errno on failure]."""
    buf = ctypes.create_string_buffer(anslen)
    rc = c_function(fn_name, green)(name.encode(), 1, qtype, buf, anslen)
    herr = h_errno()
    if rc < 0:
        return [rc, None, herr]
    return [rc, buf.raw[2:min(rc, anslen)].hex(), 0]
