"""Scenario for ``tests/test_elf_robust.py``: every reader refuses a FIFO, a socket, a
character device, a directory and a symlink to a FIFO at once, without opening them (opening
a FIFO blocks until a writer comes: that used to hang ``patch_library`` and ``audit``).

``python elf_special_files.py TMPDIR`` reports ``out = {"<kind> <call>": [error, seconds]}``,
error being ``[type name, [names in its MRO], message]`` or None, and for ``"<kind> cli"``
``[exit status of greenhook audit, seconds]``.
"""
import os
import socket
import sys
import time

import greenhook
from greenhook import _elffile, audit
from ghscen import report

tmp = sys.argv[1]
fifo = os.path.join(tmp, "libfifo.so")
os.mkfifo(fifo)
sock_path = os.path.join(tmp, "libsock.so")
sock = socket.socket(socket.AF_UNIX)
sock.bind(sock_path)
link = os.path.join(tmp, "liblink.so")
os.symlink(fifo, link)
targets = {"fifo": fifo, "socket": sock_path, "chardev": "/dev/zero", "directory": tmp,
           "symlink_to_fifo": link}
calls = {
    "patch_library": greenhook.patch_library,
    "unpatch_library": greenhook.unpatch_library,
    "audit": audit.audit,
    "read_elf": _elffile.read_elf,
}
out = {}
for kind, path in targets.items():
    for call, fn in calls.items():
        t0 = time.monotonic()
        try:
            fn(path)
            got = None
        except Exception as exc:
            got = [type(exc).__name__, [c.__name__ for c in type(exc).__mro__], str(exc)]
        out[kind + " " + call] = [got, time.monotonic() - t0]
    t0 = time.monotonic()
    out[kind + " cli"] = [audit.main([path]), time.monotonic() - t0]
report(out=out, targets=targets, read_machine=_elffile.read_machine(fifo))
