"""A silent name server (``options timeout:1 attempts:1``): the greened lookup fails with the
same EAI_* code after the same ~1 s as the unpatched one, while other greenlets' lookups
(0.1 s each) finish and a ticker ticks.

argv: hub name.
"""
import socket
import sys

import dnsenv

env = dnsenv.enter(net=True, options="timeout:1 attempts:1")

import _socket  # noqa: E402

import greenhook  # noqa: E402
from dnscalls import gai  # noqa: E402
from ghscen import Hub, Ticker, now, report  # noqa: E402

t0 = now()
expected = gai("silent1.test", 80)
expected_wall = now() - t0

hubname = sys.argv[1]
hub = Hub(hubname)
greenhook.patch_library(_socket)
greenhook.use(hubname)
env.set_delay(0.1)
ticker = Ticker(hub)
hub.sleep(0.03)
done = {}


def timed(key, *args):
    r = gai(*args)
    done[key] = now() - t1
    return r


t1 = now()
ticks0 = ticker.count
silent = hub.spawn(timed, "silent", "silent2.test", 80)
others = [hub.spawn(timed, i, "h%d.test" % i, 80, socket.AF_INET) for i in range(20)]
hub.join(others + [silent], timeout=30)
ticks = ticker.count - ticks0
ticker.stop()
report(expected=expected, expected_wall=expected_wall, got=silent.value,
       got_wall=done["silent"], others_ok=all(g.value[0] == "ok" for g in others),
       others_wall=max(done[i] for i in range(20)), ticks=ticks)
