"""fork() while lookups are in flight: the child has none of the pool's threads, yet its copies
of the parked greenlets get their answers (the jobs are run again by new workers, behind
fresh eventfds under the same fd numbers), and the parent's get theirs; both answer right,
in about the server's delay (the child must not read answers meant for the parent's workers).

argv: hub name.
"""
import os
import sys

import dnsenv

env = dnsenv.enter(net=True)

import _socket  # noqa: E402

import greenhook  # noqa: E402
from dnscalls import gai  # noqa: E402
from ghscen import Hub, now, report  # noqa: E402

names = ["h%d.test" % i for i in range(5)]
expected = [gai(n, 80) for n in names]
hubname = sys.argv[1]
hub = Hub(hubname)
greenhook.patch_library(_socket)
greenhook.use(hubname)
env.set_delay(0.5)
glets = [hub.spawn(gai, n, 80) for n in names]
hub.sleep(0.2)          # all five parked, their lookups running on the pool
if hubname == "gevent":
    import gevent

    pid = gevent.fork()
else:
    pid = os.fork()
if pid == 0:
    t0 = now()
    hub.join(glets, timeout=10)
    child_wall = now() - t0
    report(child_same=[g.value for g in glets] == expected, child_wall=child_wall,
           child_again=hub.call(gai, "h9.test", 80)[0] == "ok",
           child_pool=greenhook._core.hooks().resolver_pool())
    os._exit(0)
t0 = now()
hub.join(glets, timeout=10)
parent_wall = now() - t0
_, status = os.waitpid(pid, 0)
report(parent_same=[g.value for g in glets] == expected, parent_wall=parent_wall,
       child_status=os.waitstatus_to_exitcode(status))
