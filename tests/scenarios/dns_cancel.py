"""Cancellation mid-lookup: a Timeout and a kill thrown into greenlets parked in getaddrinfo,
gethostbyname_r and gethostbyname (the server answers after 1 s) return them at once with the
original exception; the workers' late results are freed when they arrive (no live job, no
extra fd afterwards) and the next lookups answer normally.

argv: hub name.
"""
import os
import socket
import sys

import dnsenv

env = dnsenv.enter(net=True)

import _socket  # noqa: E402

import greenhook  # noqa: E402
from dnscalls import gai, ghbn, ghbn_r  # noqa: E402
from ghscen import Hub, Ticker, now, report, stat  # noqa: E402

expected = gai("h1.test", 80)
hubname = sys.argv[1]
hub = Hub(hubname)
greenhook.patch_library(_socket)
greenhook.use(hubname)
greenhook.reset_stats()
hooks = greenhook._core.hooks()


def fds():
    return len(os.listdir("/proc/self/fd"))


hub.call(gai, "127.0.0.1", 80)   # the hub exists (its own fds) before counting
fds0 = fds()
env.set_delay(1.0)
ticker = Ticker(hub)
t0 = now()


def with_timeout(fn, *args):
    try:
        with hub.Timeout(0.3):
            value = fn(*args)
    except hub.Timeout as exc:
        return ["Timeout", now() - t0, repr(exc.__context__)]
    return ["returned", now() - t0, value]


def killed(*args):
    try:
        return ["returned", gai(*args)]
    except BaseException as exc:
        done["kill"] = now() - t0
        raise


done = {}
cases = {
    "getaddrinfo": hub.spawn(with_timeout, gai, "h2.test", 80),
    "gethostbyname_r": hub.spawn(with_timeout, ghbn_r, True, "h3.test", 4096),
    "gethostbyname": hub.spawn(with_timeout, ghbn, True, "h4.test"),
}
victim = hub.spawn(killed, "h5.test", 80)
hub.spawn_later(0.3, victim.kill)
hub.join(list(cases.values()) + [victim], timeout=10)
during = hooks.resolver_pool()
ticks = ticker.count
hub.sleep(1.5)   # the late answers arrive and are freed by the workers
after = hooks.resolver_pool()
env.set_delay(0)
again = hub.call(gai, "h1.test", 80)
ticker.stop()
report(cases={k: g.value for k, g in cases.items()}, kill=done.get("kill"),
       victim_dead=victim.dead, during=during, after=after, ticks=ticks,
       again_same=again == expected, fds0=fds0, fds1=fds(),
       cancelled={s: stat(s)["cancelled"] for s in ("getaddrinfo", "gethostbyname_r",
                                                   "gethostbyname")})
