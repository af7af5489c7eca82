"""Un-greened sanity checks of the driver test infrastructure.

Every driver reaches its server and does one round trip, without greenhook. The
serialization baselines show the problem greenhook solves: greenlets calling into a C
driver run one after the other, because the driver blocks the whole OS thread.
"""
import io
import socket
import subprocess
import threading
import time

import pytest

from greenhook_drivers_support import require_module

SLEEP = 0.3
N_GREENLETS = 3
MARGIN = 0.2      # fixed allowance above the ideal time (a loaded 2-core machine)


# -------------------------------------------------------------------------------- mysql


def test_mysqlclient_select_1_tcp(mysql_server):
    MySQLdb = require_module("MySQLdb")
    conn = MySQLdb.connect(**mysql_server["connect"])
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchall() == ((1,),)
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone()[0] == mysql_server["database"]
    finally:
        conn.close()


def test_mysqlclient_select_1_unix_socket(mysql_server):
    MySQLdb = require_module("MySQLdb")
    conn = MySQLdb.connect(**mysql_server["connect_unix"])
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    finally:
        conn.close()


def test_pymysql_select_1(mysql_server):
    pymysql = require_module("pymysql")
    conn = pymysql.connect(**mysql_server["connect"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        conn.close()


# -------------------------------------------------------------------------------- postgres


def _pg_one(psycopg2, dsn):
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            one = cur.fetchone()[0]
            cur.execute("SHOW ssl")
            server_ssl = cur.fetchone()[0]
            cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            conn_ssl = cur.fetchone()[0]
        return one, server_ssl, conn_ssl, conn.info.ssl_in_use
    finally:
        conn.close()


def test_psycopg2_select_1(postgres_server):
    psycopg2 = require_module("psycopg2")
    one, server_ssl, conn_ssl, in_use = _pg_one(psycopg2, postgres_server["dsn_nossl"])
    assert one == 1
    assert server_ssl == "on"
    assert conn_ssl is False and in_use is False


def test_psycopg2_sslmode_require(postgres_server):
    psycopg2 = require_module("psycopg2")
    one, server_ssl, conn_ssl, in_use = _pg_one(psycopg2, postgres_server["dsn_ssl"])
    assert one == 1
    assert server_ssl == "on"
    assert conn_ssl is True and in_use is True


def test_psycopg2_sslmode_verify_full(postgres_server):
    psycopg2 = require_module("psycopg2")
    dsn = "%s sslmode=verify-full sslrootcert=%s" % (postgres_server["dsn"], postgres_server["ssl_cert"])
    one, _, conn_ssl, _ = _pg_one(psycopg2, dsn)
    assert one == 1 and conn_ssl is True


def test_psycopg2_unix_socket(postgres_server):
    psycopg2 = require_module("psycopg2")
    one, _, conn_ssl, _ = _pg_one(psycopg2, postgres_server["dsn_unix"])
    assert one == 1 and conn_ssl is False  # no TLS over a unix socket


def test_psycopg2_binary_uses_bundled_libpq(postgres_server, binary_venv_python):
    """The psycopg2-binary venv connects through its own bundled libpq (the library that
    greenhook's discovery must find under psycopg2_binary.libs/)."""
    code = (
        "import sys, psycopg2\n"
        "conn = psycopg2.connect(sys.argv[1])\n"
        "cur = conn.cursor(); cur.execute('SELECT 1'); assert cur.fetchone() == (1,)\n"
        "maps = open('/proc/self/maps').read().split('\\n')\n"
        "libs = sorted({l.split()[-1] for l in maps if 'libpq' in l})\n"
        "print('\\n'.join(libs))\n"
    )
    out = subprocess.run(
        [binary_venv_python, "-c", code, postgres_server["dsn_ssl"]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
    )
    text = out.stdout.decode()
    assert out.returncode == 0, text
    libs = text.split()
    assert libs and all("psycopg2_binary.libs/libpq-" in lib for lib in libs), libs


# -------------------------------------------------------------------------------- memcached


def test_pylibmc_direct(memcached_server):
    pylibmc = require_module("pylibmc")
    mc = pylibmc.Client(memcached_server["servers"])
    try:
        t0 = time.monotonic()
        mc.set("greenhook-baseline", b"direct")
        assert mc.get("greenhook-baseline") == b"direct"
        assert time.monotonic() - t0 < memcached_server["proxy_delay"]
    finally:
        mc.disconnect_all()


def test_pylibmc_through_delaying_proxy(memcached_server):
    pylibmc = require_module("pylibmc")
    delay = memcached_server["proxy_delay"]
    mc = pylibmc.Client(memcached_server["proxy_servers"])
    try:
        t0 = time.monotonic()
        mc.set("greenhook-baseline-proxy", b"proxied")
        assert mc.get("greenhook-baseline-proxy") == b"proxied"
        elapsed = time.monotonic() - t0
    finally:
        mc.disconnect_all()
    # two requests, each held `delay` by the proxy
    assert 2 * delay * 0.9 <= elapsed <= 2 * delay + MARGIN, elapsed
    # the direct server sees the value the proxied client stored
    direct = pylibmc.Client(memcached_server["servers"])
    try:
        assert direct.get("greenhook-baseline-proxy") == b"proxied"
    finally:
        direct.disconnect_all()


# -------------------------------------------------------------------------------- http / pycurl


def _curl_get(pycurl, url):
    buf = io.BytesIO()
    c = pycurl.Curl()
    try:
        c.setopt(pycurl.URL, url)
        c.setopt(pycurl.WRITEDATA, buf)
        c.setopt(pycurl.TIMEOUT, 30)
        c.perform()
        return c.getinfo(pycurl.RESPONSE_CODE), buf.getvalue()
    finally:
        c.close()


def test_pycurl_delay_10ms(http_server):
    pycurl = require_module("pycurl")
    code, body = _curl_get(pycurl, http_server["delay_url"].format(ms=10))
    assert code == 200
    assert body == b"delayed 10\n"


def test_pycurl_delay_is_honoured(http_server):
    pycurl = require_module("pycurl")
    t0 = time.monotonic()
    code, _ = _curl_get(pycurl, http_server["delay_url"].format(ms=300))
    elapsed = time.monotonic() - t0
    assert code == 200
    assert 0.29 <= elapsed <= 0.3 + MARGIN, elapsed


def test_http_server_handles_60_concurrent_connections(http_server):
    """The delay server itself must not serialize: 60 requests of 300 ms at once, from
    plain threads, finish in about 300 ms (bound 2 x 300 ms + MARGIN; 60 x 300 ms serialized;
    two requests served one after the other would already take 600 ms)."""
    n, ms = 60, 300
    barrier = threading.Barrier(n)
    results = []

    def one():
        with socket.create_connection((http_server["host"], http_server["port"]), timeout=30) as s:
            barrier.wait(timeout=30)
            s.sendall(b"GET /delay/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % ms)
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        results.append(data)

    threads = [threading.Thread(target=one) for _ in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - t0
    assert len(results) == n
    assert all(r.startswith(b"HTTP/1.1 200 ") and r.endswith(b"delayed %d\n" % ms) for r in results)
    assert elapsed <= 2 * ms / 1000 + MARGIN, elapsed


# -------------------------------------------------------------------------------- serialization


def _serialized_run(gevent, connect, query):
    """N greenlets, each on its own connection, run ``query`` (which sleeps SLEEP s on the
    server) once; a 10 ms ticker greenlet counts how often it got to run meanwhile."""
    conns = [connect() for _ in range(N_GREENLETS)]
    ticks = [0]
    stop = [False]

    def ticker():
        while not stop[0]:
            ticks[0] += 1
            gevent.sleep(0.01)

    def worker(conn):
        cur = conn.cursor()
        cur.execute(query)
        cur.fetchall()

    try:
        tick = gevent.spawn(ticker)
        gevent.sleep(0)
        ticks[0] = 0
        t0 = time.monotonic()
        gevent.joinall([gevent.spawn(worker, c) for c in conns], raise_error=True)
        elapsed = time.monotonic() - t0
        stop[0] = True
        tick.join()
    finally:
        for c in conns:
            c.close()
    return elapsed, ticks[0]


def test_mysqlclient_greenlets_serialize_without_greenhook(mysql_server):
    """The problem greenhook solves: 3 greenlets x SELECT SLEEP(0.3) take ~0.9 s, not ~0.3 s,
    and the hub never runs meanwhile."""
    gevent = require_module("gevent")
    MySQLdb = require_module("MySQLdb")
    elapsed, ticks = _serialized_run(
        gevent, lambda: MySQLdb.connect(**mysql_server["connect"]), "SELECT SLEEP(%s)" % SLEEP
    )
    assert N_GREENLETS * SLEEP * 0.95 <= elapsed <= N_GREENLETS * SLEEP + MARGIN, elapsed
    assert ticks <= N_GREENLETS + 1, ticks


def test_psycopg2_greenlets_serialize_without_greenhook(postgres_server):
    gevent = require_module("gevent")
    psycopg2 = require_module("psycopg2")
    elapsed, ticks = _serialized_run(
        gevent, lambda: psycopg2.connect(postgres_server["dsn"]), "SELECT pg_sleep(%s)" % SLEEP
    )
    assert N_GREENLETS * SLEEP * 0.95 <= elapsed <= N_GREENLETS * SLEEP + MARGIN, elapsed
    assert ticks <= N_GREENLETS + 1, ticks


@pytest.mark.parametrize("name", ["MySQLdb", "psycopg2", "pylibmc", "pycurl"])
def test_c_drivers_importable(name):
    require_module(name)
