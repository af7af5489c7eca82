"""Pass-through rules of the resolution hooks, as for every hook: an OS thread never bound to
greenhook calls libc directly (counted as passthrough), the hub greenlet itself cannot park
(the lookup still runs on the pool, its OS thread waits for it: counted as blocked), and so
does a bound thread with no hub yet (nothing to park on), and
literal hosts never leave the calling thread.  All answers equal glibc's.

argv: hub name.
"""
import sys

import dnsenv

env = dnsenv.enter(net=True)

import _socket  # noqa: E402

import greenhook  # noqa: E402
from dnscalls import gai, ghbn  # noqa: E402
from ghscen import Hub, in_thread, report, stat  # noqa: E402

expected = {"h1": gai("h1.test", 80), "h2": gai("h2.test", 80), "h3": ghbn(False, "h3.test"),
            "h4": gai("h4.test", 80)}
hubname = sys.argv[1]
hub = Hub(hubname)
greenhook.patch_library(_socket)
greenhook.use(hubname)
env.set_delay(0.05)
hooks = greenhook._core.hooks()

greenhook.reset_stats()
no_hub_before = hub.get_hub_if_exists() is None
no_hub = gai("h4.test", 80)         # bound thread, no hub yet: nothing to park on
no_hub_stats = stat("getaddrinfo")

greenhook.reset_stats()
other = hub.wait_thread(in_thread(gai, "h1.test", 80))
unbound = stat("getaddrinfo")

greenhook.reset_stats()
in_hub = hub.run_in_hub(gai, "h2.test", 80)
in_hub_stats = stat("getaddrinfo")

greenhook.reset_stats()
in_hub_static = hub.run_in_hub(ghbn, True, "h3.test")
in_hub_static_stats = stat("gethostbyname")

report(no_hub_before=no_hub_before, no_hub_same=no_hub == expected["h4"], no_hub=no_hub_stats,
       other_same=other == expected["h1"], unbound=unbound,
       in_hub_same=in_hub == expected["h2"], in_hub=in_hub_stats,
       in_hub_static_same=in_hub_static == expected["h3"], in_hub_static=in_hub_static_stats,
       pool=hooks.resolver_pool())
