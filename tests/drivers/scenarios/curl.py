"""pycurl (-> libcurl.so.4) scenarios.  See _common.py for the protocol.

cases:
  concurrent   n greenlets, each its own Curl handle, GET ``url`` (the delay URL); ``ipv4``:
               resolve IPv4 only.  Reports the most OS threads seen meanwhile (libcurl's
               resolver threads are invisible to ``threading``).
  shared       two greenlets perform() on ONE Curl handle (GET ``url`` and ``url2``)
  timeout      one Curl handle: Timeout(0.1) around a GET of ``url`` (0.3 s), then GETs of
               ``next_urls`` with the same handle
"""
import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import pycurl  # noqa: E402


def main():
    a = _common.args()
    a.setdefault("module", "pycurl")
    hub, reports = _common.setup(a)
    out = {"case": a["case"], "hub": hub.name, "patch": bool(a.get("patch")), "reports": reports,
           "libcurl": pycurl.version}
    if a.get("patch"):
        import greenhook
        greenhook.reset_stats()

    if a["case"] == "concurrent":
        n, url = a.get("n", 20), a["url"]
        os_threads = [0]

        def one(i):
            buf = io.BytesIO()
            c = pycurl.Curl()
            t0 = time.monotonic()
            try:
                c.setopt(pycurl.URL, url)
                c.setopt(pycurl.WRITEDATA, buf)
                c.setopt(pycurl.TIMEOUT, 30)
                c.setopt(pycurl.NOSIGNAL, 1)
                if a.get("ipv4"):
                    c.setopt(pycurl.IPRESOLVE, pycurl.IPRESOLVE_V4)
                c.perform()
                code = c.getinfo(pycurl.RESPONSE_CODE)
                ip = c.getinfo(pycurl.PRIMARY_IP)
            finally:
                c.close()
            return {"code": code, "body": buf.getvalue().decode(), "ip": ip,
                    "after": round(time.monotonic() - t0, 4)}

        def watch_threads():
            # libcurl's resolver threads are OS threads Python does not know: count /proc tasks
            while True:
                os_threads[0] = max(os_threads[0], len(os.listdir("/proc/self/task")))
                hub.sleep(0.002)

        w = hub.spawn(watch_threads)
        out.update(_common.run_concurrent(hub, n, one))
        out["max_os_threads"] = os_threads[0]
        try:
            w.kill()
        except Exception:
            pass

    elif a["case"] == "shared":
        c = pycurl.Curl()
        urls = [a["url"], a["url2"]]

        def one(i):
            buf = io.BytesIO()
            c.setopt(pycurl.URL, urls[i])
            c.setopt(pycurl.WRITEDATA, buf)
            c.perform()
            return buf.getvalue().decode()

        out.update(_common.run_concurrent(hub, 2, one))
        c.close()

    elif a["case"] == "timeout":
        c = pycurl.Curl()

        def get(url):
            buf = io.BytesIO()
            c.setopt(pycurl.URL, url)
            c.setopt(pycurl.WRITEDATA, buf)
            c.setopt(pycurl.TIMEOUT, 30)
            c.perform()
            return buf.getvalue().decode()

        def body():
            res = {"cancelled": _common.timed_out(hub, a.get("timeout", 0.1),
                                                  lambda: get(a["url"]))}
            res["next"] = []
            for u in a["next_urls"]:
                try:
                    res["next"].append(get(u))
                except Exception as exc:
                    res["next"].append("%s: %s" % (type(exc).__name__, exc))
            return res

        out.update(_common.run_one(hub, body))
        c.close()

    out["stats"] = _common.stats() if a.get("patch") else {}
    _common.emit(out)


if __name__ == "__main__":
    main()
