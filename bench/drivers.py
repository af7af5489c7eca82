"""Scenario 4: real drivers against real servers, 50 concurrent clients, each its own connection.

Servers: MariaDB, PostgreSQL, memcached from scripts/services.py on 127.0.0.1 (TCP; PostgreSQL
with ``sslmode=disable``).  Drivers: built from source against Debian's libraries by
scripts/install_drivers.sh.

MariaDB (``SELECT 1`` and ``SELECT SLEEP(0.01)``):
  mysqlclient + greenhook (gevent hub)     ``greenhook.patch_module("MySQLdb._mysql")``
  mysqlclient + greenify                   ``greenify.patch_lib(<loaded libmariadb.so.3>)``
  mysqlclient in gevent's threadpool       every query via ``hub.threadpool.apply`` (50 threads)
  PyMySQL under gevent                     ``gevent.monkey.patch_all()``; pure Python
  mysqlclient on 50 OS threads             no gevent at all
PostgreSQL (``SELECT 1`` and ``SELECT pg_sleep(0.01)``):
  psycopg2 + greenhook, psycopg2 + psycogreen (``patch_psycopg()``), psycopg2 in the threadpool
memcached (``set`` and ``get`` of 100-byte values):
  pylibmc + greenhook, pylibmc in the threadpool

Each client connects first (not timed); then all start together and run their queries one
after the other.  Figures: queries (ops) per second = all queries / wall time, the p50 / p99
of the per-query latencies of the run, and the client process's CPU time per query (all its
threads; unlike throughput it does not depend on how fast the server or the machine is).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

CLIENTS = 50
MYSQL_MODES = ("greenhook", "greenify", "threadpool", "pymysql", "threads")
PG_MODES = ("greenhook", "psycogreen", "threadpool")
MC_MODES = ("greenhook", "threadpool")
LABELS = {
    ("mysql", "greenhook"): "mysqlclient + greenhook",
    ("mysql", "greenify"): "mysqlclient + greenify",
    ("mysql", "threadpool"): "mysqlclient in gevent threadpool",
    ("mysql", "pymysql"): "PyMySQL under gevent",
    ("mysql", "threads"): "mysqlclient on OS threads",
    ("postgres", "greenhook"): "psycopg2 + greenhook",
    ("postgres", "psycogreen"): "psycopg2 + psycogreen",
    ("postgres", "threadpool"): "psycopg2 in gevent threadpool",
    ("memcached", "greenhook"): "pylibmc + greenhook",
    ("memcached", "threadpool"): "pylibmc in gevent threadpool",
}
WORKLOADS = {
    "mysql": {"select1": "SELECT 1", "sleep10ms": "SELECT SLEEP(0.01)"},
    "postgres": {"select1": "SELECT 1", "sleep10ms": "SELECT pg_sleep(0.01)"},
    "memcached": {"set": "set", "get": "get"},
}
QUERIES = {"select1": 300, "sleep10ms": 20, "set": 400, "get": 400}


# --- child -----------------------------------------------------------------------------------

def _loaded(soname_prefix):
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if os.path.basename(path).startswith(soname_prefix):
                return os.path.realpath(path)
    return None


def child(p):
    C.raise_nofile()
    svc = json.load(open(p["services"]))["services"]
    db, mode, work = p["db"], p["mode"], p["workload"]
    clients, queries = int(p["clients"]), int(p["queries"])
    sql = WORKLOADS[db][work]
    info = {}

    # --- the runtime -------------------------------------------------------------------
    if mode == "pymysql":
        from gevent import monkey

        monkey.patch_all()
    if mode == "threads":
        import threading

        gevent = None
    else:
        import gevent
        import gevent.event

    # --- the driver ---------------------------------------------------------------------
    if db == "mysql":
        if mode == "pymysql":
            import pymysql as drv

            def connect():
                return drv.connect(**svc["mysql"]["connect"])
        else:
            import MySQLdb as drv

            def connect():
                return drv.connect(**svc["mysql"]["connect"])
        ext, lib = "MySQLdb._mysql", "libmariadb.so"
    elif db == "postgres":
        import psycopg2 as drv

        if mode == "psycogreen":
            from psycogreen.gevent import patch_psycopg

            patch_psycopg()

        def connect():
            return drv.connect(svc["postgres"]["dsn_nossl"])
        ext, lib = "psycopg2._psycopg", "libpq.so"
    else:
        import pylibmc as drv

        def connect():
            return drv.Client(svc["memcached"]["servers"])
        ext, lib = "_pylibmc", "libmemcached.so"

    watcher = None
    if mode == "greenhook":
        import greenhook

        greenhook.use("gevent")
        if p.get("fair_yield") is not None:
            # configure(fair_yield=N) for an A/B of the fairness policy (0: off)
            greenhook.configure(fair_yield=int(p["fair_yield"]))
            info["fair_yield"] = int(p["fair_yield"])
        reps = greenhook.patch_module(ext)
        info["patched"] = [os.path.basename(r.library) for r in reps if r.symbols]
        if p.get("watch") is not None:
            # Scenario 5 (bench/watch_cost.py): the blocking detector on.
            watcher = _start_watcher(greenhook, float(p["watch"]))
            info["watch"] = repr(watcher)
    elif mode == "greenify":
        import greenify

        greenify.greenify()
        path = _loaded(lib)
        if not path or not greenify.patch_lib(path):
            return {"error": "greenify.patch_lib(%r) failed" % path}
        info["patched"] = [os.path.basename(path)]

    value = b"v" * 100

    if db == "memcached":
        def prepare(conn, i):
            if work == "get":
                for q in range(queries):
                    conn.set("k%d_%d" % (i, q), value)
            return conn

        def op(conn, i, q):
            if work == "set":
                conn.set("k%d_%d" % (i, q), value)
            elif conn.get("k%d_%d" % (i, q)) != value:
                raise RuntimeError("memcached get returned the wrong value")
    else:
        def prepare(conn, i):
            return conn.cursor()

        def op(cur, i, q):
            cur.execute(sql)
            cur.fetchall()

    # --- the clients ----------------------------------------------------------------------
    perf = time.perf_counter
    lats = []
    done = []   # when each client finished its queries

    if mode == "threads":
        import threading

        barrier = threading.Barrier(clients + 1)
        errs = []

        def client(i):
            try:
                conn = connect()
                h = prepare(conn, i)
            except BaseException as exc:
                errs.append(repr(exc))
                barrier.abort()
                return
            barrier.wait()
            mine = []
            try:
                for q in range(queries):
                    t = perf()
                    op(h, i, q)
                    mine.append(perf() - t)
            except BaseException as exc:
                errs.append(repr(exc))
            lats.extend(mine)
            done.append(perf())
            if hasattr(conn, "close"):
                conn.close()

        ts = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in ts:
            t.start()
        barrier.wait(timeout=60)
        c0 = time.process_time()
        t0 = perf()
        for t in ts:
            t.join()
        wall = perf() - t0
        cpu = time.process_time() - c0
        if errs:
            return {"error": errs[0]}
    else:
        start = gevent.event.Event()
        ready = [0]
        all_ready = gevent.event.Event()
        if mode == "threadpool":
            pool = gevent.get_hub().threadpool
            pool.maxsize = clients
            info["threads"] = pool.maxsize

            def call(fn, *a):
                return pool.apply(fn, a)
        else:
            def call(fn, *a):
                return fn(*a)

        def client(i):
            conn = call(connect)
            h = call(prepare, conn, i)
            ready[0] += 1
            if ready[0] == clients:
                all_ready.set()
            start.wait()
            mine = []
            for q in range(queries):
                t = perf()
                call(op, h, i, q)
                mine.append(perf() - t)
            lats.extend(mine)
            done.append(perf())
            if hasattr(conn, "close"):
                call(conn.close)

        gs = [gevent.spawn(client, i) for i in range(clients)]
        if not all_ready.wait(timeout=60):
            dead = [g for g in gs if g.dead and g.exception is not None]
            return {"error": "clients not ready: %r" % (dead[0].exception if dead else "timeout")}
        c0 = time.process_time()
        t0 = perf()
        start.set()
        gevent.joinall(gs, raise_error=True)
        wall = perf() - t0
        cpu = time.process_time() - c0

    if watcher is not None:
        _stop_watcher(watcher)
    if mode == "greenhook":
        st = greenhook.stats()
        info["waits"] = sum(v["waits"] for v in st.values())
        info["yields"] = sum(v.get("yields", 0) for v in st.values())
        info["blocked"] = sum(v["blocked"] for v in st.values())
    total = clients * queries
    if len(lats) != total:
        return {"error": "%d of %d queries done" % (len(lats), total)}
    return {"qps": total / wall, "wall": wall, "p50_ms": C.percentile(lats, 50) * 1e3,
            "p99_ms": C.percentile(lats, 99) * 1e3, "mean_ms": sum(lats) / len(lats) * 1e3,
            "cpu_us_per_q": cpu / total * 1e6,
            # Fairness: when the first client was done, as a fraction of the wall time (1.0: all
            # clients progressed evenly; small: some connections were served far ahead of others).
            "first_done_frac": (min(done) - t0) / wall if done else None,
            "queries": total, "info": info}


_STOPS = ("stop", "close", "cancel", "disable")


def watch_function(greenhook):
    """greenhook.watch, or greenhook._watch.watch while it is not exported yet; None."""
    fn = getattr(greenhook, "watch", None)
    if callable(fn):
        return fn
    try:
        from greenhook import _watch
    except ImportError:
        return None
    fn = getattr(_watch, "watch", None)
    return fn if callable(fn) else None


def _start_watcher(greenhook, threshold):
    """watch(threshold=...), whether it returns a handle or a context manager."""
    w = watch_function(greenhook)(threshold=threshold)
    if hasattr(w, "__enter__") and not any(callable(getattr(w, n, None)) for n in _STOPS):
        w.__enter__()
    return w


def _stop_watcher(w):
    """Whatever greenhook.watch() returned: stop it if it says how."""
    for name in _STOPS:
        fn = getattr(w, name, None)
        if callable(fn):
            fn()
            return
    if hasattr(w, "__exit__"):
        w.__exit__(None, None, None)


# --- parent ----------------------------------------------------------------------------------

def _groups():
    for db, modes in (("mysql", MYSQL_MODES), ("postgres", PG_MODES), ("memcached", MC_MODES)):
        for work in WORKLOADS[db]:
            yield db, work, modes


def cases(cfg):
    out = []
    for db, work, modes in _groups():
        q = QUERIES[work] // (4 if cfg["quick"] else 1)
        for mode in modes:
            out.append(C.Case("%s/%s/%s" % (db, work, mode), "drivers.py",
                              {"services": cfg["services"], "db": db, "mode": mode, "workload": work,
                               "clients": CLIENTS, "queries": q}, timeout=180))
    return out


def summarize(results, cfg):
    figs = {}
    for db, work, modes in _groups():
        g = figs.setdefault(db, {}).setdefault(work, {})
        for mode in modes:
            rs = results["%s/%s/%s" % (db, work, mode)]
            g[mode] = {f: C.field_stats(rs, f)
                       for f in ("qps", "p50_ms", "p99_ms", "cpu_us_per_q", "first_done_frac")}
            g[mode]["errors"] = C.errors(rs)
            ok = [r for r in rs if "error" not in r]
            if ok:
                g[mode]["info"] = ok[0].get("info", {})

    def med(db, work, mode, f="qps"):
        return figs[db][work][mode][f]["median"]

    gh = med("mysql", "select1", "greenhook")
    checks = {
        "mysqlclient+greenhook >= 2x PyMySQL under gevent (SELECT 1 q/s)":
            None if gh is None or med("mysql", "select1", "pymysql") is None
            else gh >= 2 * med("mysql", "select1", "pymysql"),
        "mysqlclient+greenhook not slower than greenify (SELECT 1 q/s)":
            C.not_slower(figs["mysql"]["select1"]["greenhook"]["qps"],
                         figs["mysql"]["select1"]["greenify"]["qps"]),
        "mysqlclient+greenhook not slower than the threadpool (SELECT 1 q/s)":
            C.not_slower(figs["mysql"]["select1"]["greenhook"]["qps"],
                         figs["mysql"]["select1"]["threadpool"]["qps"]),
        # Issue 13 (fairness, README Semantics 11): as fast as psycogreen, with a tail close
        # to psycogreen's, which parks on every query.
        "psycopg2+greenhook >= 1.00x psycogreen (SELECT 1 q/s)":
            _at_least(med("postgres", "select1", "greenhook"),
                      med("postgres", "select1", "psycogreen"), 1.0),
        "psycopg2+greenhook p99 <= 1.2x psycogreen's (SELECT 1)":
            _at_least(1.2 * (med("postgres", "select1", "psycogreen", "p99_ms") or 0) or None,
                      med("postgres", "select1", "greenhook", "p99_ms"), 1.0),
    }
    return {
        "title": "Real drivers, %d concurrent clients, one connection each" % CLIENTS,
        "clients": CLIENTS,
        "queries_per_client": {w: QUERIES[w] // (4 if cfg["quick"] else 1) for w in QUERIES},
        "figures": figs,
        "targets": checks,
    }


def _at_least(a, b, factor):
    """a >= factor * b, or None when either is missing."""
    if a is None or b is None:
        return None
    return a >= factor * b


def report(sec):
    md = []
    for db, work, modes in _groups():
        g = sec["figures"][db][work]
        base = g[modes[0]]["qps"]["median"]
        rows = []
        for mode in modes:
            f = g[mode]
            err = (" ⚠ %d failed" % len(f["errors"])) if f["errors"] else ""
            rows.append([LABELS[(db, mode)] + err, C.mmm(f["qps"]),
                         C.fmt_ratio(C.ratio(base, f["qps"]["median"])),
                         C.mmm(f["p50_ms"]), C.mmm(f["p99_ms"]), C.mmm(f["cpu_us_per_q"]),
                         C.fmt(f["first_done_frac"]["median"])])
        title = {"select1": "SELECT 1", "sleep10ms": "10 ms server-side sleep",
                 "set": "set (100 B)", "get": "get (100 B)"}[work]
        unit = "ops/s" if db == "memcached" else "queries/s"
        md.append("**%s — %s** (%d clients × %d %s)" % (
            db, title, sec["clients"], sec["queries_per_client"][work],
            "ops" if db == "memcached" else "queries"))
        md.append("")
        md.append(C.md_table(["how", unit, "%s / this" % LABELS[(db, modes[0])].split(" + ")[-1],
                              "p50 ms", "p99 ms", "client CPU µs per %s" % (
                                  "op" if db == "memcached" else "query"),
                              "first client done"], rows))
        md.append("")
    md.append("Client CPU µs per query: the client process's user + system time (all threads) "
              "over the timed part, divided by the queries; it does not depend on the server.")
    md.append("")
    md.append("First client done: when the first client had run all its queries, as a fraction "
              "of the wall time (median). Near 1: every connection progressed evenly; small: some "
              "connections were served far ahead of others, and the throughput of a fixed amount of "
              "work per client is set by the slowest one.")
    md.append("")
    md.append("p50 and p99 are of every query of a run (median over runs). With 50 clients the "
              "mean latency is about 50 / throughput (Little's law); a p50 far below that means "
              "some connections were served at once while others waited (the server's processes "
              "and the client compete for the two cores), not that those queries were cheaper.")
    md.append("")
    md.append("Targets:")
    md.append("")
    for what, ok in sec["targets"].items():
        md.append("- %s — %s" % (what, C.verdict(ok)))
    return "\n".join(md)


def plot(sec, plt, outdir):
    groups = list(_groups())
    fig, axes = plt.subplots(1, len(groups), figsize=(3.0 * len(groups), 4.2))
    for ax, (db, work, modes) in zip(axes, groups):
        g = sec["figures"][db][work]
        med = [g[m]["qps"]["median"] or 0 for m in modes]
        lo = [v - (g[m]["qps"]["min"] or 0) for v, m in zip(med, modes)]
        hi = [(g[m]["qps"]["max"] or 0) - v for v, m in zip(med, modes)]
        ax.bar(range(len(modes)), med, yerr=[lo, hi], capsize=3,
               color=["tab:green" if m == "greenhook" else "tab:gray" for m in modes])
        ax.set_xticks(range(len(modes)))
        ax.set_xticklabels(modes, rotation=45, ha="right", fontsize=7)
        ax.set_title("%s %s" % (db, work), fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    axes[0].set_ylabel("queries (ops) per second, median, min-max")
    fig.suptitle("Real drivers, %d concurrent clients" % sec["clients"])
    fig.tight_layout()
    path = os.path.join(outdir, "drivers.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


if __name__ == "__main__":
    C.child_main(child)
