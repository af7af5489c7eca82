"""``GREENHOOK_AUTO=1`` + gevent's ``monkey.patch_all()``, and not one greenhook line: gevent
calls greenhook's ``gevent.plugins.monkey.did_patch_all`` entry point, which runs
``greenhook.patch_all(backend="gevent")``.  See _common.py for the protocol.

args: ``when`` ("before": MySQLdb imported before the monkey-patch, "after": after it),
``connect``, ``n``, ``sleep``.
"""
import json
import os
import sys

A = json.loads(sys.argv[1])
if A["when"] == "before":
    import MySQLdb  # noqa: F401

from gevent import monkey  # noqa: E402

monkey.patch_all()

if A["when"] == "after":
    import MySQLdb  # noqa: F401,E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def one(i):
    conn = MySQLdb.connect(**A["connect"])
    try:
        cur = conn.cursor()
        cur.execute("SELECT SLEEP(%s), %s", (A["sleep"], i))
        return [list(r) for r in cur.fetchall()]
    finally:
        conn.close()


out = {"when": A["when"], "greenhook_loaded": "greenhook" in sys.modules}
out.update(_common.run_concurrent(_common.Hub("gevent", greened=False), A["n"], one))
gh = sys.modules.get("greenhook")
out["patched"] = sorted(os.path.basename(r.library) for r in gh.patched_libraries()) if gh else []
_common.emit(out)
