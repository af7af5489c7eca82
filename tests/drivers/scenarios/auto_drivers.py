"""Auto mode with drivers whose libraries greenhook never names: ``greenhook.patch_all()``
only, no ``patch_module``.  See _common.py for the protocol.

cases:
  odbc     pyodbc + unixODBC; the ODBC driver (``odbc_driver``: "MariaDB Unicode",
           "PostgreSQL Unicode") is dlopened by unixODBC at the first connect -- after
           patch_all, through libltdl's patched dlopen.  n greenlets, each its own connection,
           run ``sql`` (a server-side sleep of ``sleep`` s returning i).
  ldap     python-ldap (libldap) against slapd behind a delaying proxy: n greenlets, each its
           own connection, search ``uid=user<i>``.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import greenhook  # noqa: E402


def main():
    a = _common.args()
    libs = greenhook.patch_all(backend=a["hub"])
    hub = _common.Hub(a["hub"], greened=False)
    out = {"case": a["case"], "hub": a["hub"], "patched_at_start": len(libs)}

    def names():
        return sorted(os.path.basename(r.library) for r in greenhook.patched_libraries())

    if a["case"] == "odbc":
        import pyodbc
        out["after_import"] = names()
        sleep = a["sleep"]

        def one(i):
            conn = pyodbc.connect(a["conn_str"], autocommit=True)
            try:
                cur = conn.cursor()
                cur.execute(a["sql"].format(sleep=sleep, i=i))
                return [list(r) for r in cur.fetchall()]
            finally:
                conn.close()

        # one warm-up connect loads the ODBC driver (dlopen) before the timed run
        t0 = time.monotonic()
        out["warmup"] = _common.run_one(hub, lambda: one(-1))
        out["warmup_s"] = round(time.monotonic() - t0, 4)
        out["after_connect"] = names()

    elif a["case"] == "ldap":
        import ldap
        out["after_import"] = names()

        def one(i):
            conn = ldap.initialize(a["uri"])
            conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 10)
            try:
                res = conn.search_s("ou=people," + a["base"], ldap.SCOPE_ONELEVEL,
                                    "(uid=user%d)" % i, ["cn"])
                return [[dn, {k: [v.decode() for v in vs] for k, vs in attrs.items()}]
                        for dn, attrs in res]
            finally:
                conn.unbind_s()
    else:
        raise SystemExit("unknown case %r" % a["case"])

    out.update(_common.run_concurrent(hub, a.get("n", 20), one))
    out["refused"] = {os.path.basename(k): v for k, v in
                      greenhook.patched_libraries().refused.items()}
    out["stats"] = _common.stats()
    _common.emit(out)


if __name__ == "__main__":
    main()
