"""Real drivers connecting BY NAME: 20 greenlets each connect to ``db.test`` (the test DNS
server answers after 0.2 s) and run a 0.3 s request; greened they all overlap (serialized:
20 x 0.5 s = 10 s) while a ticker ticks.

The database servers listen on 127.0.0.1 of the machine's own network namespace, so this
scenario takes a private *mount* namespace only (``dnsenv.enter(net=False)``): its
resolv.conf names a DNS server on a free 127.53.x.y address (port 53, the only port glibc's
resolver speaks to), and the servers stay reachable.

argv: driver (mysqlclient | psycopg2 | pylibmc), hub name, path of services.json.
"""
import json
import sys
import uuid

import dnsenv

env = dnsenv.enter(net=False)

import greenhook  # noqa: E402
from ghscen import Hub, Ticker, now, report, stat  # noqa: E402

driver, hubname, services_path = sys.argv[1:4]
with open(services_path) as f:
    services = json.load(f)["services"]
N, QUERY = 20, 0.3
HOST = "db.test"

if driver == "mysqlclient":
    import MySQLdb

    m = services["mysql"]
    greenhook.patch_module("MySQLdb._mysql")

    def one():
        t0 = now()
        conn = MySQLdb.connect(host=HOST, port=m["port"], user=m["user"], password=m["password"],
                               database=m["database"])
        connected = now() - t0
        try:
            cur = conn.cursor()
            cur.execute("SELECT SLEEP(%s)" % QUERY)
            return [connected, cur.fetchall()[0][0]]
        finally:
            conn.close()
    want = 0
elif driver == "psycopg2":
    import psycopg2

    p = services["postgres"]
    greenhook.patch_module("psycopg2._psycopg")

    def one():
        t0 = now()
        conn = psycopg2.connect(host=HOST, port=p["port"], user=p["user"], dbname=p["dbname"],
                                sslmode="disable")
        connected = now() - t0
        try:
            cur = conn.cursor()
            cur.execute("SELECT pg_sleep(%s), 7" % QUERY)
            return [connected, cur.fetchall()[0][1]]
        finally:
            conn.close()
    want = 7
elif driver == "pylibmc":
    import pylibmc

    mc_info = services["memcached"]
    assert abs(mc_info["proxy_delay"] - QUERY) < 1e-9, mc_info   # the proxy's delay is the query
    key = "greenhook-dns-%s" % uuid.uuid4().hex[:12]
    direct = pylibmc.Client(mc_info["servers"])
    direct.set(key, b"by-name")
    direct.disconnect_all()
    greenhook.patch_module("_pylibmc")

    def one():
        mc = pylibmc.Client(["%s:%d" % (HOST, mc_info["proxy_port"])])
        t0 = now()
        try:
            # libmemcached resolves the name at the first request, then connects and asks:
            # the time is the lookup's and the request's
            value = mc.get(key).decode()
            return [now() - t0, value]
        finally:
            mc.disconnect_all()
    want = "by-name"
else:
    raise SystemExit("unknown driver %r" % driver)

hub = Hub(hubname)
greenhook.use(hubname)
env.set_delay(0.2)
greenhook.reset_stats()
ticker = Ticker(hub)
hub.sleep(0.03)
t0 = now()
ticks0 = ticker.count
glets = [hub.spawn(one) for _ in range(N)]
hub.join(glets, timeout=60)
wall = now() - t0
ticks = ticker.count - ticks0
ticker.stop()
report(wall=wall, ticks=ticks, results=[g.value for g in glets], want=want,
       getaddrinfo=stat("getaddrinfo"), dns_server=env.address)
