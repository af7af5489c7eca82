"""200 greenlets resolve 200 distinct names through a patched ``_socket`` while the DNS
server answers each query after 0.2 s: the lookups overlap (serialized they take 40 s), a
ticker keeps ticking, and every answer (the whole addrinfo list) equals the unpatched one.

argv: hub name.
"""
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

import dnsenv

env = dnsenv.enter(net=True)

import _socket  # noqa: E402

import greenhook  # noqa: E402
from ghscen import Hub, Ticker, now, report, stat  # noqa: E402

N = 200
names = ["h%d.test" % i for i in range(N)]


def lookup(name):
    try:
        return ["ok", socket.getaddrinfo(name, 80)]
    except OSError as exc:
        return ["error", type(exc).__name__, exc.args]


# The unpatched answers, with no delay (OS threads, nothing patched yet).
with ThreadPoolExecutor(16) as ex:
    expected = list(ex.map(lookup, names))
assert all(r[0] == "ok" for r in expected), expected[:3]

env.set_delay(0.2)
hub = Hub(sys.argv[1])
greenhook.patch_library(_socket)
greenhook.use(sys.argv[1])
greenhook.configure(resolver_threads=N)
greenhook.reset_stats()
ticker = Ticker(hub)
hub.sleep(0.05)
t0 = now()
ticks0 = ticker.count
glets = [hub.spawn(lookup, name) for name in names]
hub.join(glets, timeout=30)
wall = now() - t0
ticks = ticker.count - ticks0
ticker.stop()
got = [g.value for g in glets]
report(wall=wall, ticks=ticks, same=[i for i in range(N) if got[i] == expected[i]],
       differ=[(names[i], got[i], expected[i]) for i in range(N) if got[i] != expected[i]][:3],
       entries=sum(len(r[1]) for r in expected), stats=stat("getaddrinfo"),
       pool=greenhook._core.hooks().resolver_pool())
