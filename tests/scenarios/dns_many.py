"""10,000 concurrent lookups through the pool (names from the namespace's /etc/hosts, so the
pool, not the DNS server, is what is loaded), in five rounds; in rounds 2-4, 1,000 more
greenlets park on names the DNS server answers after 0.5 s and are killed at 0.2 s.  No
crash, every answer right, and after each round no live job and the same fd count.  RSS
(after ``malloc_trim``) reaches its level with the first round that cancels (pymalloc and
glibc keep that high-water mark) and the further rounds, cancelling or not, do not raise it.

argv: hub name.
"""
import ctypes
import gc
import os
import socket
import sys

import dnsenv

env = dnsenv.enter(net=True)

import _socket  # noqa: E402

import greenhook  # noqa: E402
import greenlet  # noqa: E402
from dnscalls import gai  # noqa: E402
from ghscen import Hub, now, report, stat  # noqa: E402

N = 10000
hubname = sys.argv[1]
hub = Hub(hubname)
greenhook.patch_library(_socket)
greenhook.use(hubname)
hooks = greenhook._core.hooks()


def fds():
    return len(os.listdir("/proc/self/fd"))


def rss_kb():
    """RSS after giving freed heap back to the system (malloc_trim): what is still in use."""
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def want(i):
    return ["ok", [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.8.0.%d" % (i % 100), 80))]]


def round_(kill=0):
    t0 = now()
    victims = [hub.spawn(gai, "h%d.test" % i, 80) for i in range(kill)]
    glets = [hub.spawn(gai, "hosts%d" % (i % 100), 80, socket.AF_INET, socket.SOCK_STREAM)
             for i in range(N)]
    if kill:
        hub.sleep(0.2)
        for g in victims:
            g.kill()
    hub.join(glets + victims, timeout=120)
    wrong = [i for i in range(N) if glets[i].value != want(i)]
    while hooks.resolver_pool()["live"]:
        hub.sleep(0.01)
    return {"wall": now() - t0, "wrong": len(wrong), "first_wrong": [glets[i].value for i in wrong[:2]],
            "fds": fds(), "rss": rss_kb(), "pool": hooks.resolver_pool(),
            "greenlets": sum(isinstance(o, greenlet.greenlet) for o in gc.get_objects())}


env.set_delay(0.5)
greenhook.reset_stats()
fds0, rss0 = fds(), rss_kb()
rounds = [round_(), round_(kill=1000), round_(kill=1000), round_(kill=1000), round_()]
report(fds0=fds0, rss0=rss0, rounds=rounds, stats=stat("getaddrinfo"))
