"""Auto mode: objects loaded *after* ``greenhook.patch_all()`` are greened.

``python auto_load.py HUB CASE [LOADER_SO]``; CASE:

* ``import``  -- the sample extension ``_ghsample_now`` (and the library it links,
  ``libghsample_now.so``) imported after patch_all: the import machinery catches it;
* ``ctypes``  -- ``ctypes.CDLL(libghsample_lazy.so)`` after patch_all;
* ``dlopen``  -- LOADER_SO (a tiny C library, loaded after patch_all, exporting
  ``ghl_open(path)`` = ``dlopen(path, RTLD_NOW)``) loads ``libghsample_noplt.so``: its
  patched ``dlopen`` slot catches it.
* ``counter`` -- the same with a LOADER_SO that has a run path (so its dlopen slot is left
  alone): the sample it loads is caught by the load-counter check at the next wait of a
  hooked call (one request through the already patched ``libghsample_now.so``).

Each case checks that the new objects are patched right after the load (before any wait,
so the counter check at the next wait cannot be what found them), then runs 20 concurrent
0.2 s requests next to a 10 ms ticker and reports times, ticks and the replies.
"""
import ctypes
import sys

import ghscen
import greenhook
from greenhook import samples
from greenhook.samples.server import DelayServer

N, DELAY_MS = 20, 200


def patched_names():
    return sorted(r.soname or r.library for r in greenhook.patched_libraries())


def mapped_at(name):
    """Lowest address ``name`` is mapped at (None when not mapped)."""
    with open("/proc/self/maps") as f:
        starts = [int(ln.split("-")[0], 16) for ln in f if ln.rstrip().endswith("/" + name)]
    return min(starts) if starts else None


def main():
    hub_name, case = sys.argv[1], sys.argv[2]
    hub = ghscen.Hub(hub_name)
    libs = greenhook.patch_all(backend=hub_name)
    out = {"case": case, "hub": hub_name, "before": sorted(r.soname or r.library for r in libs),
           "refused": libs.refused}
    with DelayServer() as srv:
        if case == "import":
            mod = samples.load("now")
            out["after_load"] = patched_names()
            out["ext"] = [r.as_dict() for r in greenhook.patched_libraries()
                          if "_ghsample_now" in r.library]

            def request(i):
                payload = b"%03d" % i * 50
                return mod.request("send_recv", srv.tcp_port, DELAY_MS, payload) == payload
        else:
            if case == "ctypes":
                lib = samples.ctypes_lib("lazy")
            elif case == "reload":
                # loaded, patched, unloaded, loaded again (at the same address, likely):
                # the new copy is patched too
                import _ctypes
                first = ctypes.CDLL(samples.library_path("fortify"))
                out["first"] = patched_names()
                out["base_first"] = mapped_at("libghsample_fortify.so")
                _ctypes.dlclose(first._handle)
                del first
                out["unloaded"] = patched_names()
                lib = ctypes.CDLL(samples.library_path("fortify"))
                out["base_again"] = mapped_at("libghsample_fortify.so")
                lib.ghs_request.restype = ctypes.c_int
                lib.ghs_request.argtypes = [
                    ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                    ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                    ctypes.c_void_p]
            elif case == "counter":
                first = samples.load("now")
                loader = ctypes.CDLL(sys.argv[3])
                loader.ghl_open.restype = ctypes.c_void_p
                loader.ghl_open.argtypes = [ctypes.c_char_p]
                out["loader_patched"] = [r.symbols for r in greenhook.patched_libraries()
                                         if r.library.endswith("libghloader_rp.so")]
                out["handle"] = bool(loader.ghl_open(samples.library_path("addrtaken").encode()))
                out["after_dlopen"] = patched_names()
                # one hooked call that waits (in a greenlet): the counter check runs there
                hub.join([hub.spawn(first.request, "send_recv", srv.tcp_port, 50, b"x")])
                out["after_wait"] = patched_names()
                lib = samples.ctypes_lib("addrtaken")
            else:
                greenhook.reset_stats()
                loader = ctypes.CDLL(sys.argv[3])
                loader.ghl_open.restype = ctypes.c_void_p
                loader.ghl_open.argtypes = [ctypes.c_char_p]
                loader.ghl_error.restype = ctypes.c_char_p
                loader.ghl_error.argtypes = []
                out["loader_patched"] = [r.symbols for r in greenhook.patched_libraries()
                                         if r.library.endswith("libghloader.so")]
                path = samples.library_path("noplt").encode()
                handle = loader.ghl_open(path)
                out["dlerror_after"] = loader.ghl_error()   # as without greenhook: none
                out["handle"] = bool(handle)
                out["dlopen_calls"] = ghscen.stat("dlopen")["calls"]
                out["after_dlopen"] = patched_names()
                lib = samples.ctypes_lib("noplt")
            out["after_load"] = patched_names()

            def request(i):
                payload = b"%03d" % i * 50
                buf = ctypes.create_string_buffer(len(payload) + 16)
                got = ctypes.c_size_t(0)
                rc = lib.ghs_request(b"send_recv", b"127.0.0.1", srv.tcp_port, DELAY_MS,
                                     payload, len(payload), buf, len(buf), ctypes.byref(got))
                return rc == 0 and buf.raw[:got.value] == payload

        ticker = ghscen.Ticker(hub)
        hub.sleep(0.02)
        t0, ticks0 = ghscen.now(), ticker.count
        gs = [hub.spawn(request, i) for i in range(N)]
        hub.join(gs, timeout=30)
        out["elapsed"] = round(ghscen.now() - t0, 4)
        out["ticks"] = ticker.count - ticks0
        out["exact"] = [g.value for g in gs]
        ticker.stop()
    ghscen.report(**out)


if __name__ == "__main__":
    main()
