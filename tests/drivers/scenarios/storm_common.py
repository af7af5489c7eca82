"""Cancellation storms and the staged "answer already queued" cancel, for any driver.

A driver scenario (``storm_mysql.py``, ``storm_pg.py``, ``storm_pylibmc.py``) defines a small
adapter (see :class:`Driver`) and calls :func:`main`.  Protocol as in ``_common.py``: one JSON
argument, one ``RESULT {json}`` line.

cases:
  storm    ``n`` greenlets, each looping until ``cancels`` cancellations were counted in all or
           ``seconds`` passed: a query carrying a unique marker, with a random server delay,
           under a random ``Timeout`` of 0..``max_timeout`` s.  After a cancel the greenlet
           goes on with the SAME connection: the driver must fail (the connection is dead:
           reconnect) or return the next query's own marker.  Every answer is checked against
           its own marker; a wrong one is counted as stale.  fds (/proc/self/fd) and RSS are
           sampled after a warm-up and again after the storm (connections closed, gc run).
  staged   a cancel that lands while the server's answer is already queued in the socket,
           made deterministic (see :func:`staged_round`), then two more queries on the same
           connection: each must fail or return its own marker, never the cancelled one.

Common arguments: ``hub``, ``patch`` (bool; the storms run greened), ``shutdown`` (None: leave
greenhook's ``shutdown_cancelled_sockets`` default; True/False: configure it).
"""
import fcntl
import gc
import os
import random
import socket
import struct
import sys
import termios
import time
import traceback
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


class Driver:
    """What a storm needs from a driver.  Subclasses set ``errors`` (the driver's exception
    classes: a query that raises one of them means "this connection failed") and implement
    the methods; ``conn`` is whatever :meth:`connect` returns."""

    errors = ()
    #: the server (or proxy) port of the connection the staged case uses, to find its socket
    staged_port = None
    #: server-side delay of the staged query (seconds)
    staged_delay = 0.1

    def connect(self, staged=False):
        raise NotImplementedError

    def close(self, conn):
        raise NotImplementedError

    #: storm queries: a quarter have no server delay (the answer is back within ~0.1 ms, so a
    #: Timeout of 0-``instant_timeout`` s often fires with the answer already queued); the
    #: others wait 0-``max_delay`` s on the server under a Timeout of 0-``max_timeout`` s
    max_delay = 0.02
    max_timeout = 0.03
    instant_timeout = 0.002

    def random_delay(self, rng):
        """A random server-side delay for one storm query (seconds)."""
        return 0 if rng.random() < 0.25 else round(rng.uniform(0, self.max_delay), 4)

    def random_timeout(self, rng, delay):
        """A random Timeout for a query with that delay (seconds)."""
        return rng.uniform(0, self.instant_timeout if delay == 0 else self.max_timeout)

    def prepare(self, conn, marker):
        """Anything the query needs in place first (outside the Timeout): pylibmc stores the
        marker's value."""

    def query(self, conn, marker, delay):
        """Run a query that the server answers after ``delay`` s with ``marker`` in it; return
        the marker found in the answer (None if the answer carried none)."""
        raise NotImplementedError

    def describe(self, conn):
        """Extra state of a connection for the staged report (e.g. psycopg2's conn.closed)."""
        return {}


# ------------------------------------------------------------------------------ process state


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def socket_fds(port):
    """The fds of this process that are TCP sockets connected to 127.0.0.1:``port``."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink("/proc/self/fd/%d" % fd).startswith("socket:"):
                continue
            dup = os.dup(fd)
        except OSError:
            continue
        s = socket.socket(fileno=dup)
        try:
            if s.family == socket.AF_INET and s.getpeername()[1] == port:
                found.append(fd)
        except OSError:
            pass
        finally:
            s.close()
    return sorted(found)


def queued_bytes(fd):
    """Bytes received and not yet read on socket ``fd`` (FIONREAD)."""
    buf = fcntl.ioctl(fd, termios.FIONREAD, struct.pack("i", 0))
    return struct.unpack("i", buf)[0]


def run_callback(hub, fn):
    """Queue ``fn()`` to run in the hub greenlet, before the hub next polls for fds."""
    if hub.name == "gevent":
        import gevent
        gevent.get_hub().loop.run_callback(fn)
    else:
        from greenhook import hub as ghub
        ghub.get_hub().run_callback(fn)


def settle(hub):
    """Let the hub close what it still holds (watchers of closed fds), then collect."""
    for _ in range(3):
        hub.sleep(0.02)
        gc.collect()


# ------------------------------------------------------------------------------ storm


def storm(driver, hub, a):
    n = a.get("n", 50)
    want = a.get("cancels", 1200)
    budget = a.get("seconds", 20.0)
    rng = random.Random(a.get("seed"))
    tag = uuid.uuid4().hex[:8]
    Timeout = hub.Timeout

    # Warm-up, so the baseline already holds what the first connections, queries and
    # cancels allocate once (libraries' lazy state, the allocator's arenas): every greenlet
    # connects, queries, has one query cancelled, queries again, closes.
    def warm(i):
        conn = driver.connect()
        try:
            for k in range(3):
                marker = "%s-w%d-%d" % (tag, i, k)
                driver.prepare(conn, marker)
                try:
                    with Timeout(0.001 if k == 1 else 5):
                        driver.query(conn, marker, 0.05 if k == 1 else 0)
                except Timeout:
                    pass
                except driver.errors:
                    driver.close(conn)
                    conn = driver.connect()
        finally:
            driver.close(conn)

    warm_res = _common.run_concurrent(hub, n, warm, timeout=60)
    settle(hub)
    base = {"fds": fd_count(), "rss_kb": rss_kb()}

    totals = {"queries": 0, "answers": 0, "cancels": 0, "stale": 0, "dead_after_cancel": 0,
              "answers_after_cancel": 0, "connects": 0, "missing": 0, "cancels_zero_delay": 0}
    stale, unexpected, state = [], [], {"stop": False}
    deadline = time.monotonic() + budget

    def worker(i):
        conn, cancelled_here, last_cancelled, k = None, False, None, 0
        try:
            while not state["stop"]:
                if time.monotonic() > deadline or totals["cancels"] >= want:
                    state["stop"] = True
                    break
                if conn is None:
                    conn = driver.connect()
                    totals["connects"] += 1
                    cancelled_here = False
                marker = "%s-%d-%d" % (tag, i, k)
                k += 1
                delay = driver.random_delay(rng)
                driver.prepare(conn, marker)
                t = Timeout(driver.random_timeout(rng, delay))
                t.start()
                totals["queries"] += 1
                try:
                    got = driver.query(conn, marker, delay)
                except Timeout as exc:
                    if exc is not t:
                        raise
                    totals["cancels"] += 1
                    if delay == 0:
                        totals["cancels_zero_delay"] += 1
                    cancelled_here, last_cancelled = True, marker
                    continue        # the next query goes to the same connection
                except driver.errors as exc:
                    if cancelled_here:
                        totals["dead_after_cancel"] += 1
                    else:
                        unexpected.append("%s: %s" % (type(exc).__name__, exc))
                    driver.close(conn)
                    conn = None
                    continue
                finally:
                    t.cancel()
                totals["answers"] += 1
                if cancelled_here:
                    totals["answers_after_cancel"] += 1
                if got != marker:
                    # None: an answer without a marker (pylibmc: a miss); else another query's
                    totals["missing" if got is None else "stale"] += 1
                    if len(stale) < 20:
                        stale.append({"asked": marker, "got": got,
                                      "last_cancelled": last_cancelled})
        finally:
            if conn is not None:
                driver.close(conn)

    t0 = time.monotonic()
    gs = [hub.spawn(worker, i) for i in range(n)]
    hub.joinall(gs, timeout=budget + 30)
    elapsed = time.monotonic() - t0
    state["stop"] = True
    unfinished = sum(1 for g in gs if not g.dead)
    errors = [repr(g.exception) for g in gs if g.dead and getattr(g, "exception", None)]
    gs = None
    settle(hub)
    after = {"fds": fd_count(), "rss_kb": rss_kb()}
    return dict(totals, elapsed=round(elapsed, 3), stale_samples=stale,
                unexpected_errors=unexpected[:20], n_unexpected=len(unexpected),
                greenlet_errors=errors, unfinished=unfinished, warm_errors=warm_res["errors"],
                base=base, after=after, tag=tag)


# ------------------------------------------------------------------------------ staged


def staged_round(driver, hub, tag, r):
    """One cancel that lands while the server's answer is already queued in the socket.

    Staging, the same on both hubs:
      1. greenlet A starts ``t = Timeout(10)`` and runs a query the server answers after
         ``d`` s; the driver sends it and A parks in the driver's poll();
      2. greenlet B, spawned right after A (so it runs after A parked), queues a hub callback
         and ends.  Both hubs run queued callbacks before their next poll for fds;
      3. that callback, running in the hub, blocks the whole OS thread (time.sleep is not
         greened) until ``d + 0.1`` s after the start: meanwhile the answer reaches A's socket
         (FIONREAD > 0 bytes, recorded) while no poll can see it; then it throws ``t`` into A
         -- exactly what ``t``'s own timer would do from the hub (``glet.throw(t)``).
    So A is cancelled inside the driver's wait with the whole answer sitting in its socket.
    (Letting ``t``'s timer expire during the block instead is not deterministic: both hubs
    may dispatch A's readable fd before a due timer -- gevent's Timeout has priority -1.)
    Then the same connection runs two more queries: each must fail or carry its own marker.
    The only timing assumption is that the callback starts less than ``d`` after A's send;
    when it does not, A gets its answer, is not cancelled, and the test says so.
    """
    d = driver.staged_delay
    before = set(socket_fds(driver.staged_port))
    conn = driver.connect(staged=True)
    out = {"round": r}
    try:
        warm = "%s-s%d-warm" % (tag, r)
        driver.prepare(conn, warm)
        out["warm"] = driver.query(conn, warm, d) == warm   # the socket exists from here on
        mine = sorted(set(socket_fds(driver.staged_port)) - before)
        out["sockets"] = len(mine)
        if len(mine) != 1:
            return out
        fd = mine[0]
        m1, m2, m3 = ("%s-s%d-%d" % (tag, r, k) for k in (1, 2, 3))
        driver.prepare(conn, m1)
        box = {}
        t0 = time.monotonic()

        def a():
            t = box["t"] = hub.Timeout(10)
            t.start()
            try:
                out["returned"] = driver.query(conn, m1, d)
            except hub.Timeout as exc:
                if exc is not t:
                    raise
                out["raised"] = "Timeout"
                out["context"] = repr(exc.__context__) if exc.__context__ else None
            except driver.errors as exc:
                out["error"] = "%s: %s" % (type(exc).__name__, exc)
            finally:
                t.cancel()
            out["a_after"] = round(time.monotonic() - t0, 4)

        def fire():
            out["fire_at"] = round(time.monotonic() - t0, 4)
            time.sleep(max(0.0, t0 + d + 0.1 - time.monotonic()))
            out["queued"] = queued_bytes(fd)
            if not ga.dead:
                ga.throw(box["t"])

        ga = hub.spawn(a)
        gb = hub.spawn(run_callback, hub, fire)
        hub.joinall([ga, gb], timeout=10)
        out["state_after_cancel"] = driver.describe(conn)
        nxt = []
        for m in (m2, m3):
            try:
                driver.prepare(conn, m)
                with hub.Timeout(5):
                    got = driver.query(conn, m, 0)
                nxt.append({"asked": m, "got": got,
                            "verdict": "own" if got == m else
                            "cancelled" if got == m1 else "other"})
            except driver.errors as exc:
                nxt.append({"asked": m, "error": "%s: %s" % (type(exc).__name__, exc)})
        out["next"] = nxt
        out["state_after_next"] = driver.describe(conn)
    finally:
        driver.close(conn)
    return out


def staged(driver, hub, a):
    tag = uuid.uuid4().hex[:8]
    rounds = []
    for r in range(a.get("rounds", 3)):
        rounds.append(_common.run_one(hub, lambda: staged_round(driver, hub, tag, r), timeout=30))
    return {"rounds": rounds}


# ------------------------------------------------------------------------------ entry point


def main(make_driver):
    a = _common.args()
    hub, reports = _common.setup(a)
    out = {"case": a["case"], "hub": hub.name, "patch": bool(a.get("patch"))}
    if a.get("patch") and a.get("shutdown") is not None:
        import greenhook
        out["configured"] = greenhook.configure(shutdown_cancelled_sockets=a["shutdown"])
    out["libraries"] = [r["library"] for r in reports]
    driver = make_driver(a)
    try:
        if a["case"] == "storm":
            out.update(storm(driver, hub, a))
        elif a["case"] == "staged":
            out.update(staged(driver, hub, a))
        else:
            raise ValueError("unknown case %r" % (a["case"],))
    except BaseException:
        traceback.print_exc()
        raise
    if a.get("patch"):
        st = _common.stats()
        out["cancelled_waits"] = sum(v.get("cancelled", 0) for v in st.values()
                                     if isinstance(v, dict))
        out["green_waits"] = sum(v.get("green", 0) for v in st.values() if isinstance(v, dict))
    _common.emit(out)
