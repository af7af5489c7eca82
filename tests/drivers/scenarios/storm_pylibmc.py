"""Cancellation storm and staged cancel for pylibmc (_pylibmc -> libmemcached).  See
storm_common.py for the cases and the protocol.

memcached has no server-side delay: a "connection" here is a pair of clients, one straight to
memcached (delay ~0) and one through the services' delaying proxy (every request reaches
memcached ``proxy_delay`` s later), and each query picks one at random.  The key and the value
carry the marker: ``prepare`` stores ``storm-<marker>`` = ``v-<marker>`` through a third client
that is never cancelled; the query ``get``s it and returns the marker found in the value.
Arguments: ``servers``, ``proxy_servers``, ``proxy_delay``, plus the storm's.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import storm_common  # noqa: E402

import pylibmc  # noqa: E402


class Memcached(storm_common.Driver):
    errors = (pylibmc.Error,)

    def __init__(self, a):
        self.servers, self.proxy_servers = a["servers"], a["proxy_servers"]
        self.proxy_delay = a["proxy_delay"]
        self.staged_port = int(self.proxy_servers[0].rsplit(":", 1)[1])
        self.staged_delay = self.proxy_delay
        self.max_timeout = a.get("max_timeout", self.proxy_delay * 1.3)

    def connect(self, staged=False):
        return {"direct": pylibmc.Client(self.servers),
                "proxy": pylibmc.Client(self.proxy_servers),
                "setter": pylibmc.Client(self.servers)}

    def close(self, conn):
        for mc in conn.values():
            mc.disconnect_all()

    def random_delay(self, rng):
        return self.proxy_delay if rng.random() < 0.5 else 0

    def prepare(self, conn, marker):
        conn["setter"].set("storm-" + marker, ("v-" + marker).encode(), time=120)

    def query(self, conn, marker, delay):
        v = conn["proxy" if delay else "direct"].get("storm-" + marker)
        if v is None:
            return None
        v = v.decode()
        return v[2:] if v.startswith("v-") else v


if __name__ == "__main__":
    storm_common.main(Memcached)
