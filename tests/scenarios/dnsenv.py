"""The name-resolution environment of the DNS scenarios: a private namespace with its own
``/etc/resolv.conf``, ``/etc/hosts`` and ``/etc/nsswitch.conf`` (bind-mounted test copies:
the machine's files are never touched) and the test DNS server (``dns_server.py``).

A scenario calls :func:`enter` first: the process re-executes itself under
``unshare --mount [--net]`` (root is needed), then sets the namespace up and starts the server.

* ``net=True``: a new network namespace too; only its own ``lo`` exists (brought up here) and
  the server listens on 127.0.0.1:53.  Fully hermetic.
* ``net=False``: the machine's network namespace (so the real database servers on 127.0.0.1
  stay reachable) and the server on a random other loopback address (``127.53.x.y``, port 53:
  glibc's resolver only speaks to port 53).  Only the mount namespace is private.
"""
import atexit
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MARK = "GH_DNS_NAMESPACE"

#: /etc/hosts of the namespace: ``fromhosts.test`` and ``hostsN`` (N < 100) come from here
HOSTS = ["127.0.0.1 localhost", "::1 localhost ip6-localhost", "10.9.9.9 fromhosts.test fromhosts"]
HOSTS += ["10.8.0.%d hosts%d" % (n, n) for n in range(100)]


def enter(net=True, options="timeout:2 attempts:2", search="test", ndots=1):
    """Make sure this process runs in the DNS namespace; returns the :class:`Env`."""
    if os.environ.get(MARK) != "1":
        cmd = ["unshare", "--mount"] + (["--net"] if net else []) + ["--", sys.executable]
        cmd += [os.path.abspath(sys.argv[0])] + sys.argv[1:]
        os.environ[MARK] = "1"
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvp("unshare", cmd)
    return Env(net, options, search, ndots)


class Env:
    def __init__(self, net, options, search, ndots):
        if net:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            self.address = "127.0.0.1"
        else:
            self.address = _free_loopback()
        self.tmp = tempfile.mkdtemp(prefix="gh-dns-")
        atexit.register(shutil.rmtree, self.tmp, True)
        files = {
            "resolv.conf": "nameserver %s\nsearch %s\noptions ndots:%d %s\n"
                           % (self.address, search, ndots, options),
            "hosts": "\n".join(HOSTS) + "\n",
            "nsswitch.conf": "hosts: files dns\nservices: files\nprotocols: files\n",
        }
        for name, text in files.items():
            if name == "nsswitch.conf" and not os.path.exists("/etc/" + name):
                continue    # then glibc's built-in default applies (both sides alike)
            path = os.path.join(self.tmp, name)
            with open(path, "w") as f:
                f.write(text)
            subprocess.run(["mount", "--bind", path, "/etc/" + name], check=True)
        ready = os.path.join(self.tmp, "ready")
        self.server = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "dns_server.py"), self.address, "53", ready],
            stdin=subprocess.DEVNULL)
        atexit.register(self.stop)
        deadline = time.monotonic() + 15
        while not os.path.exists(ready):
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the test DNS server did not start on %s:53" % self.address)
            time.sleep(0.02)

    def stop(self):
        if self.server.poll() is None:
            self.server.kill()
            self.server.wait()

    def set_delay(self, seconds):
        """Delay every later answer by ``seconds`` (a control query on a plain socket)."""
        from dnslib import DNSRecord

        q = DNSRecord.question("delay-%d.ctl" % round(seconds * 1000))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(q.pack(), (self.address, 53))
            s.recvfrom(4096)


def _free_loopback():
    """A 127.53.x.y address whose UDP and TCP port 53 are both free."""
    for _ in range(50):
        addr = "127.53.%d.%d" % (random.randint(0, 255), random.randint(1, 254))
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind((addr, 53))
        except OSError:
            continue
        return addr
    raise RuntimeError("no free 127.53.x.y:53 found")
