"""Every resolution function answers exactly as glibc does: each case runs unpatched (libc's
own function, before patching) and then greened, all cases at once in greenlets while the
DNS server delays each answer by 50 ms and a ticker runs.  Also the ERANGE protocol of
gethostbyname_r, the counters, and the pool bound (resolver_threads).

argv: hub name.
"""
import socket
import sys

import dnsenv

env = dnsenv.enter(net=True)

import _socket  # noqa: E402

import greenhook  # noqa: E402
from dnscalls import gai, ghba, ghba_r, ghba_static, ghbn, ghbn_ex, ghbn_r, gni, resq  # noqa: E402
from ghscen import Hub, Ticker, now, report, stat  # noqa: E402

AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
TEN = socket.inet_aton("10.0.0.12")

# name -> function(green) -> comparable answer
CASES = {
    "A": lambda g: gai("h1.test", 80, AF_INET),
    "AAAA": lambda g: gai("h1.test", 80, AF_INET6),
    "AF_UNSPEC": lambda g: gai("h2.test", 443),
    "AF_UNSPEC stream": lambda g: gai("h2.test", "http", 0, socket.SOCK_STREAM),
    "A only": lambda g: gai("v4h3.test", 80),
    "AI_CANONNAME": lambda g: gai("alias4.test", 80, 0, socket.SOCK_STREAM, 0, socket.AI_CANONNAME),
    "AI_ADDRCONFIG": lambda g: gai("h5.test", 80, 0, socket.SOCK_STREAM, 0, socket.AI_ADDRCONFIG),
    "search (ndots)": lambda g: gai("h6", 80, AF_INET),
    "search NXDOMAIN": lambda g: gai("nosuch", 80),
    "/etc/hosts": lambda g: gai("fromhosts", 80, 0, 0, 0, socket.AI_CANONNAME),
    "/etc/hosts fqdn": lambda g: gai("fromhosts.test", 80),
    "NXDOMAIN": lambda g: gai("nosuch.test", 80),
    "SERVFAIL": lambda g: gai("servfail1.test", 80),
    "numeric": lambda g: gai("127.0.0.1", 80),
    "no host": lambda g: gai(None, "http", 0, socket.SOCK_STREAM),
    "getnameinfo": lambda g: gni(("10.0.0.7", 80), 0),
    "getnameinfo NAMEREQD": lambda g: gni(("10.0.0.7", 80), socket.NI_NAMEREQD),
    "getnameinfo unknown": lambda g: gni(("192.0.2.1", 80), 0),
    "getnameinfo unknown NAMEREQD": lambda g: gni(("192.0.2.1", 80), socket.NI_NAMEREQD),
    "getnameinfo v6": lambda g: gni(("fd00::8", 80, 0, 0), socket.NI_NUMERICSERV),
    "gethostbyname_ex (_r)": lambda g: ghbn_ex("alias9.test"),
    "gethostbyname_ex NXDOMAIN": lambda g: ghbn_ex("nosuch.test"),
    "gethostbyaddr (_r)": lambda g: ghba("10.0.0.10"),
    "gethostbyname_r": lambda g: ghbn_r(g, "h11.test", 4096),
    "gethostbyname_r ERANGE": lambda g: ghbn_r(g, "h11.test", 8),
    "gethostbyname_r NXDOMAIN": lambda g: ghbn_r(g, "nosuch.test", 4096),
    "gethostbyname2_r": lambda g: ghbn_r(g, "h12.test", 4096, AF_INET6),
    "gethostbyaddr_r": lambda g: ghba_r(g, TEN, AF_INET),
    "gethostbyname": lambda g: ghbn(g, "alias13.test"),
    "gethostbyname NXDOMAIN": lambda g: ghbn(g, "nosuch.test"),
    "gethostbyname SERVFAIL": lambda g: ghbn(g, "servfail2.test"),
    "gethostbyname2": lambda g: ghbn(g, "h14.test", AF_INET6),
    "gethostbyaddr": lambda g: ghba_static(g, TEN, AF_INET),
    "res_query": lambda g: resq(g, "res_query", "h15.test"),
    "res_query AAAA": lambda g: resq(g, "res_query", "h15.test", 28),
    "res_query NXDOMAIN": lambda g: resq(g, "res_query", "nosuch.test"),
    "res_search": lambda g: resq(g, "res_search", "h16"),
}

expected = {name: fn(False) for name, fn in CASES.items()}

hubname = sys.argv[1]
hub = Hub(hubname)
greenhook.patch_library(_socket)
greenhook.use(hubname)
env.set_delay(0.05)
greenhook.reset_stats()
ticker = Ticker(hub)
hub.sleep(0.03)
t0 = now()
glets = {name: hub.spawn(fn, True) for name, fn in CASES.items()}
hub.join(glets.values(), timeout=30)
wall = now() - t0
got = {name: g.value for name, g in glets.items()}

# ERANGE then success on retry with a bigger buffer, in one greenlet (as a caller would).
def retry():
    size, sizes = 8, []
    while True:
        r = ghbn_r(True, "alias17.test", size)
        sizes.append((size, r[0]))
        if r[0] != 34:  # ERANGE
            return sizes, r
        size *= 4
erange = hub.call(retry)

# The pool bound: 20 lookups of 0.2 s through 4 threads take 5 rounds.
env.set_delay(0.2)
greenhook.configure(resolver_threads=4)
t1 = now()
bounded = [hub.spawn(gai, "v4h%d.test" % (100 + i), 80, AF_INET) for i in range(20)]
hub.join(bounded, timeout=30)
bounded_wall = now() - t1
ticks = ticker.count
ticker.stop()

report(expected=expected, got=got, wall=wall, ticks=ticks, erange=erange,
       erange_expected=ghbn_r(False, "alias17.test", erange[0][-1][0]),
       bounded_wall=bounded_wall, bounded_ok=all(g.value[0] == "ok" for g in bounded),
       stats={s: stat(s) for s in ("getaddrinfo", "getnameinfo", "gethostbyname",
                                   "gethostbyname_r", "gethostbyaddr_r", "res_query")},
       pool=greenhook._core.hooks().resolver_pool())
