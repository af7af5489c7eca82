"""The generated matrix of differential cases (pure data; no I/O, nothing imported from
greenhook, so the test process can list the cases without touching the library).

A case is a dict of parameters; ``call`` names the hooked libc function, the others are read
by the runner for that call family in :mod:`.probes`.  Its id is ``call`` then
``key=value`` pairs in a fixed key order, e.g. ``recv ep=udp4 state=queued flags=WAITALL
size=64``: stable, readable, and what ``python -m differential.child MODE ID`` takes.

Every case must end by itself when the library is unpatched: a call that would block forever
gets a bounded variant (data, a peer close, a connection or a drain arriving after
``probes.DELAY`` from a helper; ``SO_RCVTIMEO``/``SO_SNDTIMEO``; a short poll timeout).
"""

KEY_ORDER = ("ep", "listener", "target", "fds", "events", "state", "flags", "size", "iov",
             "addr", "connected", "control", "msg", "timeout", "arg", "clock", "abstime",
             "rem", "nfds", "array", "garbage", "null_sets", "sigmask", "via")

# --- endpoints -----------------------------------------------------------------------------

STREAM = ("tcp4", "tcp6", "unix_stream")
TCP = ("tcp4", "tcp6")
UDP = ("udp4", "udp6")
DGRAM = ("udp4", "udp6", "unix_dgram")
SOCKETS = ("tcp4", "tcp6", "udp4", "udp6", "unix_stream", "unix_dgram", "unix_seqpacket")
CONNECTION = STREAM + ("unix_seqpacket",)   # connection-oriented: EOF, ENOTCONN, listening
NOT_SOCKETS = ("pipe", "eventfd", "file", "devnull")

# Receive-side states (probes.rx_state) valid for each endpoint kind.
RX_STATES = {
    "sockets": ("queued", "queued2", "later", "partial", "nonblock", "rcvtimeo", "signal"),
    "connection": ("eof", "data_eof", "eof_later", "notconn", "listening", "shutrd"),
    "tcp": ("rst", "data_rst", "rst_later", "urgent"),
    "udp": ("icmp",),
    "pipe": ("queued", "later", "eof", "data_eof", "eof_later", "nonblock", "signal"),
    "eventfd": ("queued", "later", "nonblock", "signal"),
    "file": ("written", "empty"),
    "devnull": ("empty",),
}


def rx_states(kind):
    if kind in RX_STATES:
        return RX_STATES[kind]
    states = RX_STATES["sockets"]
    if kind in CONNECTION:
        states += RX_STATES["connection"]
    if kind in TCP:
        states += RX_STATES["tcp"]
    if kind in UDP:
        states += RX_STATES["udp"]
    return states


RECV_FLAGS = ("0", "WAITALL", "PEEK", "TRUNC", "OOB", "ERRQUEUE", "DONTWAIT", "PEEK|WAITALL",
              "TRUNC|PEEK", "TRUNC|WAITALL", "DONTWAIT|WAITALL", "ERRQUEUE|PEEK")
SEND_FLAGS = ("0", "NOSIGNAL", "MORE", "DONTWAIT", "OOB", "MORE|NOSIGNAL", "DONTWAIT|NOSIGNAL",
              "EOR", "CONFIRM")

# Send-side states (probes.tx_state).
TX_STATES = {
    "stream": ("ready", "full_drain", "full_sndtimeo", "full_nonblock", "peer_closed",
               "notconn", "listening", "shutwr", "signal"),
    "tcp": ("rst",),
    "unix_dgram": ("ready", "full_drain", "full_sndtimeo", "full_nonblock", "peer_closed",
                   "notconn", "shutwr", "signal"),
    "udp": ("ready", "notconn", "shutwr"),
    "pipe": ("ready", "full_drain", "full_nonblock", "peer_closed", "signal"),
    "eventfd": ("ready",),
    "file": ("ready", "append"),
    "devnull": ("ready",),
}


def tx_states(kind):
    if kind in TCP:
        return TX_STATES["stream"] + TX_STATES["tcp"]
    if kind in ("unix_stream", "unix_seqpacket"):
        return TX_STATES["stream"]
    if kind in UDP:
        return TX_STATES["udp"]
    return TX_STATES[kind]


# --- poll / select fd states (probes.poll_fd) ---------------------------------------------

POLL_SPECS = ("data", "empty", "hup", "full", "tcp_data", "tcp_empty", "tcp_rst", "tcp_urgent",
              "udp_empty", "udp_data", "listen_empty", "listen_pending", "unconnected",
              "pipe_r_empty", "pipe_r_data", "pipe_r_hup", "pipe_w", "pipe_w_broken",
              "eventfd0", "eventfd1", "file", "devnull", "closed", "neg")
POLL_LATER = ("later", "hup_later", "full_drain", "tcp_rst_later", "tcp_urgent_later",
              "listen_later", "pipe_r_later", "greenlet")
POLL_EVENTS = ("IN", "OUT", "IN|OUT", "PRI", "0", "RDNORM|WRNORM|RDBAND|WRBAND", "RDHUP|IN",
               "ERR|HUP")
# what each "later" spec waits for
LATER_EVENTS = {"later": "IN", "hup_later": "IN", "full_drain": "OUT", "tcp_rst_later": "IN",
                "tcp_urgent_later": "PRI", "listen_later": "IN", "pipe_r_later": "IN",
                "greenlet": "IN"}
# fds that are not ready for the events used with a short timeout
NOT_READY = {"empty": "IN", "full": "OUT", "tcp_empty": "IN|PRI", "udp_empty": "IN",
             "listen_empty": "IN", "pipe_r_empty": "IN", "eventfd0": "IN", "neg": "IN"}


# --- the generator -------------------------------------------------------------------------

def case_id(params):
    parts = [params["call"]]
    for key in KEY_ORDER:
        if key in params:
            parts.append("%s=%s" % (key, params[key]))
    unknown = set(params) - set(KEY_ORDER) - {"call"}
    if unknown:
        raise ValueError("case keys %s missing from KEY_ORDER" % sorted(unknown))
    return " ".join(parts)


def _rx_cases():
    rx_calls = ("read", "readv", "recv", "recvfrom", "recvmsg")
    # 1. every call x endpoint x state, default arguments (flags 0, 64 bytes, one iovec)
    for call in rx_calls:
        for kind in SOCKETS + NOT_SOCKETS:
            if call not in ("read", "readv") and kind in ("eventfd",):
                continue
            for state in rx_states(kind):
                if kind in NOT_SOCKETS and call not in ("read", "readv") and state not in (
                        "queued", "written", "empty"):
                    continue  # ENOTSOCK at once: one state is enough
                size = 8 if kind == "eventfd" else 64
                yield dict(call=call, ep=kind, state=state, size=size)
        yield dict(call=call, ep="tcp4", state="closed", size=64)
        yield dict(call=call, ep="tcp4", state="greenlet_later", size=64)
    # 2. sizes, including EFAULT (NULL buffer) and a length the kernel clamps
    for call in ("read", "recv", "recvmsg"):
        for kind in ("tcp4", "udp4", "unix_stream", "unix_dgram", "unix_seqpacket", "pipe"):
            for size in (0, 1, 3, 65536, "null"):
                for state in ("queued", "later"):
                    yield dict(call=call, ep=kind, state=state, size=size)
            yield dict(call=call, ep=kind, state="queued", size="huge")
        yield dict(call=call, ep="eventfd", state="queued", size=4)
    # 3. flags: every flag and combination on every socket type, data queued / arriving
    for call, flagset in (("recv", RECV_FLAGS), ("recvmsg", RECV_FLAGS),
                          ("recvfrom", ("WAITALL", "PEEK|WAITALL", "TRUNC", "TRUNC|WAITALL"))):
        for kind in ("tcp4", "udp4", "unix_stream", "unix_dgram", "unix_seqpacket"):
            for flags in flagset:
                if flags == "0":
                    continue  # covered by 1.
                for state, size in (("queued", 3), ("queued", 64), ("queued2", 3),
                                    ("queued2", 64), ("later", 64), ("partial", 64)):
                    if size == 64 and state != "partial" and "WAITALL" in flags:
                        state += "+eof_after"  # the kernel waits for 64 bytes: bound it
                    yield dict(call=call, ep=kind, state=state, flags=flags, size=size)
                if kind in CONNECTION:
                    for state in ("eof", "data_eof"):
                        yield dict(call=call, ep=kind, state=state, flags=flags, size=64)
                if "WAITALL" in flags and kind in STREAM:
                    yield dict(call=call, ep=kind, state="rcvtimeo_partial", flags=flags, size=64)
                    yield dict(call=call, ep=kind, state="nonblock", flags=flags, size=64)
        for flags in ("OOB", "0", "PEEK|OOB", "WAITALL"):
            yield dict(call=call, ep="tcp4", state="urgent", flags=flags, size=64)
        for flags in ("ERRQUEUE", "0", "WAITALL", "ERRQUEUE|WAITALL"):
            for kind in UDP:
                yield dict(call=call, ep=kind, state="icmp", flags=flags, size=64)
        for flags in ("WAITALL", "PEEK", "PEEK|WAITALL"):
            yield dict(call=call, ep="tcp4", state="rst_later", flags=flags, size=64)
            yield dict(call=call, ep="tcp4", state="data_rst", flags=flags, size=64)
            yield dict(call=call, ep="tcp4", state="greenlet_later+eof_after", flags=flags,
                       size=64)
    # 4. vector counts
    for call in ("readv", "recvmsg"):
        for kind in ("tcp4", "unix_stream", "unix_dgram", "pipe", "file"):
            for iov in ("0", "1", "3", str(1024), str(1025), "nullbase", "nulliov"):
                for state in (("written",) if kind == "file" else ("queued", "later")):
                    yield dict(call=call, ep=kind, state=state, size=2048, iov=iov)
        yield dict(call=call, ep="tcp4", state="queued", size=64, iov="neg")
        if call == "recvmsg":
            yield dict(call=call, ep="tcp4", state="queued", size=64, iov="huge")
    # 5. source addresses (recvfrom, recvmsg msg_name)
    for call in ("recvfrom", "recvmsg"):
        for kind in ("udp4", "udp6", "unix_dgram", "unix_dgram_named", "tcp4", "unix_stream"):
            for addr in ("none", "full", "short", "lenonly", "nolen"):
                if call == "recvmsg" and addr in ("lenonly", "nolen"):
                    continue
                for state in ("queued", "later"):
                    yield dict(call=call, ep=kind, state=state, size=64, addr=addr)
    # 6. ancillary data (recvmsg control)
    for kind in ("unix_stream", "unix_dgram", "unix_seqpacket"):
        for control in (0, 16, 24, 64):
            for flags in ("0", "PEEK"):
                yield dict(call="recvmsg", ep=kind, state="fds_queued", flags=flags, size=64,
                           control=control)
    for control in (0, 8, 64):
        yield dict(call="recvmsg", ep="udp4", state="pktinfo", size=64, control=control)
        for kind in UDP:
            yield dict(call="recvmsg", ep=kind, state="icmp", flags="ERRQUEUE", size=64,
                       control=control)


def _tx_cases():
    tx_calls = ("write", "writev", "send", "sendto", "sendmsg")
    # 1. every call x endpoint x state, 64 bytes, flags 0
    for call in tx_calls:
        for kind in SOCKETS + NOT_SOCKETS:
            states = tx_states(kind)
            if kind in NOT_SOCKETS and call not in ("write", "writev"):
                states = states[:1]  # ENOTSOCK at once
            for state in states:
                size = 8 if kind == "eventfd" else 64
                yield dict(call=call, ep=kind, state=state, size=size)
        yield dict(call=call, ep="tcp4", state="closed", size=64)
    # 2. sizes: 0, 1, large (a drain), datagrams too large, NULL buffer
    for call in ("write", "send", "sendmsg"):
        for kind in ("tcp4", "unix_stream", "unix_seqpacket", "unix_dgram", "udp4", "pipe"):
            for size in (0, 1, "null"):
                yield dict(call=call, ep=kind, state="ready", size=size)
            if kind in ("tcp4", "unix_stream", "pipe"):
                yield dict(call=call, ep=kind, state="drain", size=1 << 20)
                full = "full_sndtimeo" if kind != "pipe" else "full_nonblock"
                yield dict(call=call, ep=kind, state=full, size=1 << 20)
            else:
                for size in (70000, 300000):
                    yield dict(call=call, ep=kind, state="ready", size=size)
        yield dict(call=call, ep="eventfd", state="ready", size=4)
    # 3. flags
    for call in ("send", "sendto", "sendmsg"):
        for kind in ("tcp4", "udp4", "unix_stream", "unix_dgram", "unix_seqpacket"):
            for flags in SEND_FLAGS[1:]:
                for state in ("ready", "full_drain", "full_nonblock", "peer_closed"):
                    if kind == "udp4" and state != "ready":
                        continue
                    yield dict(call=call, ep=kind, state=state, flags=flags, size=64)
    # 4. vector counts
    for call in ("writev", "sendmsg"):
        for kind in ("tcp4", "unix_stream", "unix_dgram", "pipe", "file"):
            for iov in ("0", "1", "3", str(1024), str(1025), "nullbase", "nulliov"):
                yield dict(call=call, ep=kind, state="ready", size=2048, iov=iov)
            if kind in ("tcp4", "unix_stream", "pipe"):
                yield dict(call=call, ep=kind, state="full_drain", size=2048, iov="3")
        yield dict(call=call, ep="tcp4", state="ready", size=64, iov="neg")
        if call == "sendmsg":
            yield dict(call=call, ep="tcp4", state="ready", size=64, iov="huge")
    yield dict(call="sendmsg", ep="tcp4", state="ready", size=64, msg="null")
    # 5. destination addresses (sendto, sendmsg msg_name)
    for call in ("sendto", "sendmsg"):
        for kind in ("udp4", "udp6", "unix_dgram_named"):
            for connected in ("yes", "no"):
                for addr in ("none", "peer", "self", "badlen", "wrongfam"):
                    yield dict(call=call, ep=kind, state="ready", size=64, addr=addr,
                               connected=connected)
        for kind in ("tcp4", "unix_stream"):
            for addr in ("peer", "badlen"):
                yield dict(call=call, ep=kind, state="ready", size=64, addr=addr)
        yield dict(call=call, ep="unix_dgram_named", state="ready", size=64,
                   addr="unix_missing", connected="no")
    # 6. ancillary data
    for kind in ("unix_stream", "unix_dgram", "unix_seqpacket"):
        for control in ("rights", "badlen"):
            for state in ("ready", "full_drain"):
                yield dict(call="sendmsg", ep=kind, state=state, size=64, control=control)
    yield dict(call="sendmsg", ep="unix_stream", state="full_drain", size=1 << 20,
               control="rights")


def _connect_cases():
    targets = ("tcp4_listen", "tcp6_listen", "unix_listen", "udp4_peer", "unix_dgram_peer",
               "tcp4_refused", "tcp6_refused", "unix_missing", "unix_wrongtype",
               "tcp4_badlen", "tcp4_wrongfam", "tcp4_null", "udp4_unspec")
    for target in targets:
        yield dict(call="connect", target=target, state="blocking")
    for target in ("tcp4_listen", "tcp4_refused", "unix_listen"):
        yield dict(call="connect", target=target, state="nonblock")
    for target in ("tcp4_listen", "unix_listen", "udp4_peer"):
        yield dict(call="connect", target=target, state="connected")
    for target in ("tcp4_listen", "tcp4_refused"):
        yield dict(call="connect", target=target, state="refused_before")
    yield dict(call="connect", target="tcp4_full", state="sndtimeo")
    yield dict(call="connect", target="unix_full", state="sndtimeo")
    yield dict(call="connect", target="unix_full_later", state="blocking")
    yield dict(call="connect", target="unix_full", state="signal")
    yield dict(call="connect", target="tcp4_full", state="nonblock")
    yield dict(call="connect", target="unix_full", state="nonblock")
    for state in ("closed", "notsock"):
        yield dict(call="connect", target="tcp4_listen", state=state)


def _accept_cases():
    for call in ("accept", "accept4"):
        for lkind in ("tcp4", "tcp6", "unix"):
            for state in ("pending", "later", "nonblock", "rcvtimeo", "notlisten",
                          "shutdown_later", "pending_rst", "signal"):
                yield dict(call=call, listener=lkind, state=state)
            for addr in ("full", "short", "lenonly", "nolen"):
                yield dict(call=call, listener=lkind, state="pending", addr=addr)
        for state in ("closed", "notsock", "udp"):
            yield dict(call=call, listener="tcp4", state=state)
        yield dict(call=call, listener="tcp4", state="later", via="greenlet")
        yield dict(call=call, listener="tcp4", state="later", addr="full")
    for flags in ("NONBLOCK", "CLOEXEC", "NONBLOCK|CLOEXEC", "BAD"):
        for state in ("pending", "later"):
            yield dict(call="accept4", listener="tcp4", state=state, flags=flags)


def _poll_cases():
    for call in ("poll", "ppoll"):
        # one fd in every state, every event set, as a probe
        for spec in POLL_SPECS:
            for events in POLL_EVENTS:
                if call == "ppoll" and events not in ("IN", "OUT", "IN|OUT", "0"):
                    continue
                yield dict(call=call, fds=spec, events=events, timeout="zero")
        # ready before the call, with a timeout: the fast path
        for spec in ("data", "hup", "tcp_rst", "tcp_urgent", "listen_pending", "pipe_r_data",
                     "pipe_r_hup", "pipe_w_broken", "eventfd1", "file", "devnull", "closed"):
            for timeout in ("short", "none"):
                yield dict(call=call, fds=spec, events="IN|PRI", timeout=timeout)
        # nothing ready: a short timeout expires (never early, revents 0)
        for spec, events in NOT_READY.items():
            yield dict(call=call, fds=spec, events=events, timeout="short")
        # ready later: an infinite and a long timeout
        for spec in POLL_LATER:
            for timeout in ("none", "long"):
                yield dict(call=call, fds=spec, events=LATER_EVENTS[spec], timeout=timeout)
            yield dict(call=call, fds=spec, events="0", timeout="short")
        # several fds
        multi = (("empty,later", "IN", "none"), ("neg,later", "IN", "none"),
                 ("closed,later", "IN", "none"), ("empty,dup", "IN", "short"),
                 ("data,dup", "IN", "none"), ("later,dup", "IN,OUT", "none"),
                 ("empty,empty,empty,later", "IN", "long"), ("hup,empty", "0", "short"),
                 ("neg,neg", "IN", "short"), ("empty,data", "IN,IN", "short"),
                 ("full,later", "OUT,IN", "none"), ("listen_later,pipe_r_later", "IN", "none"))
        for fds, events, timeout in multi:
            yield dict(call=call, fds=fds, events=events, timeout=timeout)
            yield dict(call=call, fds=fds, events=events, timeout=timeout, garbage=True)
        # no fds: a sleep, or a probe
        for timeout in ("zero", "short"):
            yield dict(call=call, fds="", timeout=timeout)
            yield dict(call=call, fds="", timeout=timeout, array="null")
        # EFAULT, EINVAL
        for timeout in ("zero", "short", "none"):
            yield dict(call=call, fds="later", events="IN", timeout=timeout, array="null")
        yield dict(call=call, fds="later", events="IN", timeout="none", nfds=1 << 30)
        yield dict(call=call, fds="later", events="IN", timeout="short", nfds=-1)
        # a signal while waiting
        yield dict(call=call, fds="empty", events="IN", timeout="long", state="signal")
    for timeout in ("bad_nsec", "neg"):
        yield dict(call="ppoll", fds="later", events="IN", timeout=timeout)
    for sigmask in ("empty", "block"):
        yield dict(call="ppoll", fds="empty", events="IN", timeout="long", state="signal",
                   sigmask=sigmask)
        yield dict(call="ppoll", fds="data", events="IN", timeout="zero", sigmask=sigmask)


def _select_cases():
    for call in ("select", "pselect"):
        for spec in POLL_SPECS:
            if spec == "neg":
                continue
            for which in ("r", "w", "x", "rwx"):
                yield dict(call=call, fds="%s:%s" % (spec, which), timeout="zero")
        for spec in ("data", "hup", "tcp_rst", "tcp_urgent", "listen_pending", "pipe_r_data",
                     "closed"):
            for timeout in ("short", "none", "long"):
                yield dict(call=call, fds="%s:rx" % spec, timeout=timeout)
        for spec, events in NOT_READY.items():
            if spec == "neg":
                continue
            which = "".join(c for c, e in (("r", "IN"), ("w", "OUT"), ("x", "PRI")) if e in events)
            yield dict(call=call, fds="%s:%s" % (spec, which), timeout="short")
        for spec in POLL_LATER:
            which = {"IN": "r", "OUT": "w", "PRI": "x"}[LATER_EVENTS[spec]]
            for timeout in ("none", "long"):
                yield dict(call=call, fds="%s:%s" % (spec, which), timeout=timeout)
        for fds, timeout in (("empty:r,later:r", "none"), ("empty:rw,later:r", "long"),
                             ("closed:r,later:r", "none"), ("data:r,later:r", "short"),
                             ("full:w,later:r", "long"),
                             ("tcp_empty:rx,tcp_urgent_later:x", "none")):
            yield dict(call=call, fds=fds, timeout=timeout)
            yield dict(call=call, fds=fds, timeout=timeout, null_sets=True)
        for timeout in ("zero", "short"):
            yield dict(call=call, fds="", timeout=timeout, null_sets=True)
            yield dict(call=call, fds="", timeout=timeout)
        for timeout in ("bad_nsec" if call == "pselect" else "bad_usec", "neg"):
            yield dict(call=call, fds="later:r", timeout=timeout)
        yield dict(call=call, fds="later:r", timeout="short", nfds=-1)
        yield dict(call=call, fds="later:r", timeout="none", nfds=1024)
        yield dict(call=call, fds="empty:r", timeout="long", state="signal")
    for sigmask in ("empty", "block"):
        yield dict(call="pselect", fds="empty:r", timeout="long", state="signal", sigmask=sigmask)
        yield dict(call="pselect", fds="data:r", timeout="zero", sigmask=sigmask)


def _sleep_cases():
    yield dict(call="sleep", arg=0)
    yield dict(call="sleep", arg=1, state="signal")
    for arg in (0, 1, 50000):
        yield dict(call="usleep", arg=arg)
    yield dict(call="usleep", arg=200000, state="signal")
    for arg in ("zero", "short", "null", "bad_nsec", "neg"):
        yield dict(call="nanosleep", arg=arg)
    yield dict(call="nanosleep", arg="short", rem="null")
    yield dict(call="nanosleep", arg="long", state="signal")
    yield dict(call="nanosleep", arg="long", state="signal", rem="null")
    for clock in ("MONOTONIC", "REALTIME", "BOOTTIME", "THREAD_CPUTIME", "BAD"):
        yield dict(call="clock_nanosleep", arg="short", clock=clock)
    for arg in ("zero", "null", "bad_nsec", "neg"):
        yield dict(call="clock_nanosleep", arg=arg, clock="MONOTONIC")
    for clock in ("MONOTONIC", "REALTIME"):
        yield dict(call="clock_nanosleep", arg="short", clock=clock, abstime=True)
        yield dict(call="clock_nanosleep", arg="abs_past", clock=clock, abstime=True)
        yield dict(call="clock_nanosleep", arg="long", clock=clock, state="signal")


def allowance(params):
    """Seconds a case's call may still legitimately take once its last helper has acted (or
    from its start, without helpers): longer only for the 1 s timeouts and sleeps."""
    if params.get("timeout") == "long" or params.get("arg") in ("long", 1):
        return 1.6
    return 0.6


RX_CALLS = ("read", "readv", "recv", "recvfrom", "recvmsg")
TX_CALLS = ("write", "writev", "send", "sendto", "sendmsg")


def twin_of(params):
    """For a case where a signal interrupts the call (``state=signal``): the parameters of
    the same call left alone -- the data (connection, drain) arrives, no signal.  What the
    kernel returns for the twin is what a call that ignores the signal returns."""
    if params.get("state") != "signal":
        return None
    p = {k: v for k, v in params.items() if k != "id"}
    call = p["call"]
    if call in RX_CALLS or call in ("accept", "accept4"):
        p["state"] = "later"
    elif call in TX_CALLS:
        p["state"] = "full_drain"
    elif call == "connect":
        p = dict(call="connect", target="unix_full_later", state="blocking")
    else:
        del p["state"]
    return p


def generate():
    """Every case, in a stable order, ids unique; every signal case's twin included."""
    out, seen = [], set()

    def add(params):
        cid = case_id(params)
        if cid not in seen:
            seen.add(cid)
            params["id"] = cid
            out.append(params)
    for gen in (_rx_cases, _tx_cases, _connect_cases, _accept_cases, _poll_cases,
                _select_cases, _sleep_cases):
        for params in gen():
            add(params)
            twin = twin_of(params)
            if twin is not None:
                add(twin)
    return out


def by_id():
    return {c["id"]: c for c in generate()}
