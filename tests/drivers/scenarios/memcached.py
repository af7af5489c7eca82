"""pylibmc (_pylibmc -> libmemcached.so.11) scenarios.  See _common.py for the protocol.

cases:
  concurrent   store n values directly, then n greenlets, each its own client on the delaying
               proxy (``proxy_servers``), get one value each
  pool         n greenlets share ``size`` clients on the proxy through a pool that hands each
               client to one greenlet at a time (the safe way to share clients; using one
               client from two greenlets at once is unsupported: see docs/DRIVERS.md)
  timeout      Timeout(0.1) around ``seen.append(mc.get(k))`` through the proxy; then more
               gets on the same client
"""
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import pylibmc  # noqa: E402


def main():
    a = _common.args()
    a.setdefault("module", "_pylibmc")
    hub, reports = _common.setup(a)
    out = {"case": a["case"], "hub": hub.name, "patch": bool(a.get("patch")), "reports": reports}

    if a["case"] == "concurrent":
        n = a.get("n", 20)
        tag = uuid.uuid4().hex[:12]
        keys = ["greenhook-%s-%d" % (tag, i) for i in range(n)]
        direct = pylibmc.Client(a["servers"])
        for i, k in enumerate(keys):
            direct.set(k, ("value-%d-%s" % (i, tag)).encode())
        direct.disconnect_all()
        out["expected"] = ["value-%d-%s" % (i, tag) for i in range(n)]

        def one(i):
            mc = pylibmc.Client(a["proxy_servers"])
            t0 = time.monotonic()
            try:
                v = mc.get(keys[i])
            finally:
                mc.disconnect_all()
            return {"value": v.decode() if v is not None else None,
                    "after": round(time.monotonic() - t0, 4)}

        out.update(_common.run_concurrent(hub, n, one))

    elif a["case"] == "pool":
        n, size = a.get("n", 8), a.get("size", 4)
        tag = uuid.uuid4().hex[:12]
        keys = ["greenhook-pool-%s-%d" % (tag, i) for i in range(n)]
        direct = pylibmc.Client(a["servers"])
        for i, k in enumerate(keys):
            direct.set(k, ("pooled-%d-%s" % (i, tag)).encode())
        direct.disconnect_all()
        out["expected"] = ["pooled-%d-%s" % (i, tag) for i in range(n)]
        idle = [pylibmc.Client(a["proxy_servers"]) for _ in range(size)]
        in_use = {"now": 0, "max": 0, "clients": set()}

        def one(i):
            while not idle:              # every client is busy: wait greenly for one
                hub.sleep(0.002)
            mc = idle.pop()              # no switch between the check and the pop
            in_use["now"] += 1
            in_use["max"] = max(in_use["max"], in_use["now"])
            in_use["clients"].add(id(mc))
            t0 = time.monotonic()
            try:
                v = mc.get(keys[i])
            finally:
                in_use["now"] -= 1
                idle.append(mc)
            return {"value": v.decode() if v is not None else None,
                    "after": round(time.monotonic() - t0, 4)}

        out.update(_common.run_concurrent(hub, n, one))
        out["max_in_use"], out["clients_used"] = in_use["max"], len(in_use["clients"])
        for mc in idle:
            mc.disconnect_all()

    elif a["case"] == "timeout":
        tag = uuid.uuid4().hex[:12]
        direct = pylibmc.Client(a["servers"])
        direct.set("ka-" + tag, b"A")
        direct.set("kb-" + tag, b"B")
        direct.disconnect_all()
        mc = pylibmc.Client(a["proxy_servers"])
        seen = []

        def body():
            res = {"cancelled": _common.timed_out(
                hub, a.get("timeout", 0.1), lambda: seen.append(mc.get("ka-" + tag)))}
            res["seen"] = [v.decode() if isinstance(v, bytes) else v for v in seen]
            res["next"] = []
            for k in ("kb", "ka"):
                v = mc.get("%s-%s" % (k, tag))
                res["next"].append(v.decode() if v is not None else None)
            return res

        out.update(_common.run_one(hub, body))

    out["stats"] = _common.stats() if a.get("patch") else {}
    _common.emit(out)


if __name__ == "__main__":
    main()
