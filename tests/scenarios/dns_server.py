"""A small authoritative DNS server for the resolution scenarios (UDP and TCP, asyncio + dnslib).

Run as ``python dns_server.py ADDRESS PORT READY_FILE``; it writes READY_FILE once both
sockets listen.  Every answer is sent after the current delay (default 0), without blocking
other queries.  The zone is made up from the name asked (all under ``test.``):

* ``h<N>.test``        A 10.x.y.z (N in its low 24 bits) and AAAA fd00::<N>;
* ``v4h<N>.test``      A only (AAAA: NOERROR, no data);
* ``alias<N>.test``    CNAME h<N>.test, then its address;
* ``db.test``          A 127.0.0.1 only (the real drivers' servers);
* ``servfail*.test``   SERVFAIL;   ``silent*.test``: never answered;
* ``<z>.<y>.<x>.10.in-addr.arpa``   PTR h<N>.test (the reverse of h<N>);
* ``delay-<ms>.ctl``   sets the delay for later queries (answered at once);
* anything else        NXDOMAIN.
"""
import asyncio
import ipaddress
import socket
import struct
import sys

from dnslib import AAAA, CNAME, PTR, QTYPE, RCODE, RR, A, DNSRecord

TTL = 60


class Zone:
    def __init__(self):
        self.delay = 0.0

    def answer(self, data):
        """The reply bytes for query ``data``, the delay to apply, or (None, 0) for silence."""
        req = DNSRecord.parse(data)
        reply = req.reply()
        q = req.q
        name = str(q.qname).rstrip(".").lower()
        qtype = q.qtype
        if name.endswith(".ctl") and name.startswith("delay-"):
            self.delay = int(name[6:-4]) / 1000.0
            return reply.pack(), 0.0
        delay = self.delay
        labels = name.split(".")
        first = labels[0]
        if name.endswith(".in-addr.arpa") and len(labels) == 6 and labels[3] == "10":
            n = (int(labels[2]) << 16) | (int(labels[1]) << 8) | int(labels[0])
            if qtype in (QTYPE.PTR, QTYPE.ANY):
                reply.add_answer(RR(q.qname, QTYPE.PTR, rdata=PTR("h%d.test." % n), ttl=TTL))
            return reply.pack(), delay
        if len(labels) != 2 or labels[1] != "test":
            reply.header.rcode = RCODE.NXDOMAIN
            return reply.pack(), delay
        if first.startswith("silent"):
            return None, 0.0
        if first.startswith("servfail"):
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack(), delay
        target = q.qname
        if first == "db":
            if qtype == QTYPE.A:
                reply.add_answer(RR(q.qname, QTYPE.A, rdata=A("127.0.0.1"), ttl=TTL))
            return reply.pack(), delay
        v4only = False
        for prefix in ("alias", "v4h", "h"):
            if first.startswith(prefix) and first[len(prefix):].isdigit():
                n = int(first[len(prefix):])
                break
        else:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply.pack(), delay
        if prefix == "alias":
            target = "h%d.test." % n
            reply.add_answer(RR(q.qname, QTYPE.CNAME, rdata=CNAME(target), ttl=TTL))
        v4only = prefix == "v4h"
        if qtype == QTYPE.A:
            reply.add_answer(RR(target, QTYPE.A, rdata=A(str(ipaddress.IPv4Address(
                (10 << 24) | (n & 0xFFFFFF)))), ttl=TTL))
        elif qtype == QTYPE.AAAA and not v4only:
            reply.add_answer(RR(target, QTYPE.AAAA, rdata=AAAA(str(ipaddress.IPv6Address(
                (0xFD00 << 112) | n))), ttl=TTL))
        return reply.pack(), delay


class Udp(asyncio.DatagramProtocol):
    def __init__(self, zone):
        self.zone = zone

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        try:
            out, delay = self.zone.answer(data)
        except Exception:  # noqa: BLE001 - a malformed query gets no answer
            return
        if out is not None:
            asyncio.get_running_loop().call_later(delay, self.transport.sendto, out, addr)


async def tcp_client(zone, reader, writer):
    try:
        while True:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            out, delay = zone.answer(await reader.readexactly(size))
            if out is None:
                continue
            await asyncio.sleep(delay)
            writer.write(struct.pack("!H", len(out)) + out)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(address, port, ready):
    zone = Zone()
    loop = asyncio.get_running_loop()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Hundreds of queries arrive at once: a default-sized receive buffer drops some, and
    # glibc's retry after `timeout` seconds would then be measured instead of the lookups.
    udp.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)    # SO_RCVBUFFORCE (root)
    udp.bind((address, port))
    await loop.create_datagram_endpoint(lambda: Udp(zone), sock=udp)
    server = await asyncio.start_server(lambda r, w: tcp_client(zone, r, w), address, port,
                                        backlog=4096)
    with open(ready, "w") as f:
        f.write("ok\n")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
