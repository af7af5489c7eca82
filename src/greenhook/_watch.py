"""The blocking detector: ``greenhook.watch(threshold)`` reports when a hub's loop stops running.

The hub bumps a heartbeat: one unref'd timer every ``threshold / 4`` (``Backend.heartbeat``).
A daemon monitor thread looks once per ``threshold`` while the beat keeps coming, every
``threshold / 4`` while it is overdue, and when the beat is overdue by more than ``threshold``
while the hub is in use, reports once per stall:

* the Python stack running in the hub's OS thread (``sys._current_frames()``): the greenlet
  that is keeping every other one waiting;
* the patched call blocking that thread for real (the ``_hooks`` thread state's
  ``in_flight``), or "no patched call in flight: something unpatched is blocking";
* what the thread is doing in the kernel (``/proc/self/task/<tid>/syscall``), a best guess at
  the native library that made the call (the first code address on its stack outside libc
  and Python), and its CPU and run-queue time (``schedstat``), which tell a blocking call from
  CPU-bound code and from a machine too loaded to run the thread.

"In use": someone waits on the loop (timers, fd watchers, callbacks), or the code running is
not the thread's main greenlet.  The main greenlet doing plain synchronous work while nothing
is scheduled is not a stall.

A call that holds the GIL keeps the monitor thread out until it returns: the stall is then
reported late, flagged so, with the stack where the thread let go and the patched calls that
blocked meanwhile (``greenhook.stats()`` "blocked" counts).

Nothing runs until :func:`watch` is called (or ``GREENHOOK_WATCH`` is set and
:func:`from_env` is called, as ``greenhook.use()`` does).

Bad settings: :func:`watch` raises :class:`~greenhook.InvalidArgument` at once; a bad
``GREENHOOK_WATCH`` makes :func:`from_env` warn (``RuntimeWarning`` naming the variable and
the value) and start nothing.  Failures inside the monitor (a report function that raises,
a native stack that cannot be read) go to ``sys.unraisablehook``, never nowhere.
"""

from __future__ import annotations

import bisect
import collections
import os
import platform
import struct
import sys
import threading
import traceback
import warnings
import weakref
from time import monotonic
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union

from greenlet import getcurrent

from greenhook import _core, _patch, backends
from greenhook.backends.base import Backend, os_thread_api, os_thread_ident
from greenhook.exceptions import GreenhookError, InvalidArgument

__all__ = ["watch", "Watch", "Stall", "from_env", "ENV"]

#: environment variable read by :func:`from_env`: the threshold in seconds ("0": off)
ENV = "GREENHOOK_WATCH"

#: innermost Python frames a report shows
STACK_LIMIT = 12

#: the range of thresholds, in seconds.  Below 1 ms the beat (every threshold / 4) would keep
#: the loop waking without rest; above a day, nothing a blocking detector is for.
MIN_THRESHOLD, MAX_THRESHOLD = 0.001, 86400.0


def check_threshold(value):
    """``value`` as a float threshold in seconds, or :class:`InvalidArgument` saying why."""
    ok = not isinstance(value, (str, bytes, bool)) and value is not None
    if ok:
        try:
            seconds = float(value)
        except (TypeError, ValueError, OverflowError):
            ok = False
        else:
            ok = MIN_THRESHOLD <= seconds <= MAX_THRESHOLD     # False for NaN
    if not ok:
        raise InvalidArgument(
            "watch threshold must be a number of seconds from %g to %g, got %r"
            % (MIN_THRESHOLD, MAX_THRESHOLD, value))
    return seconds


class _UnraisableArgs:
    """The fields of ``sys.UnraisableHookArgs`` (whose type Python does not export)."""

    def __init__(self, exc_type, exc_value, exc_traceback, err_msg, object):
        self.exc_type = exc_type
        self.exc_value = exc_value
        self.exc_traceback = exc_traceback
        self.err_msg = err_msg
        self.object = object


def _unraisable(err_msg, obj=None):
    """Report the exception being handled through ``sys.unraisablehook``, as Python reports
    an error in a ``__del__``: the monitor thread has nobody to raise it to.

    CPython's default hook accepts only its own argument type, so with the default hook in
    place the report is written to stderr in that hook's format."""
    exc_type, exc_value, tb = sys.exc_info()
    hook = sys.unraisablehook
    if hook is not sys.__unraisablehook__:
        try:
            hook(_UnraisableArgs(exc_type, exc_value, tb, err_msg, obj))
            return
        except BaseException:
            err_msg = "Exception ignored in sys.unraisablehook, then: " + err_msg
    stderr = sys.stderr
    if stderr is None:
        return          # as the default hook: nowhere to write
    try:
        text = err_msg if obj is None else "%s: %r" % (err_msg, obj)
    except Exception:   # noqa: BLE001 - a bad repr must not hide the report
        text = "%s: <%s object>" % (err_msg, type(obj).__name__)
    stderr.write(text + "\n" + "".join(traceback.format_exception(exc_type, exc_value, tb)))
    stderr.flush()


def _hooks():
    return _core.hooks_or_none()


# --- the Stall report ----------------------------------------------------------------------

class Stall:
    """One stall of a hub's loop, as reported by :func:`watch`.

    Attributes:

    * ``hub`` (backend name), ``thread_name``, ``thread_ident``, ``threshold``;
    * ``seconds``: how long the loop had not run when reported; ``duration``: how long the
      stall lasted (None until it ends);
    * ``stack``: ``traceback.StackSummary`` of the running code, most recent call last (None
      when it has no Python frame); ``greenlet``: "main", "hub" or "spawned", which greenlet
      was running;
    * ``in_flight``: ``(symbol, seconds)`` of the patched call blocking the thread for real, or
      None; ``blocked``: {symbol: count} of patched calls that blocked for real since the loop
      last ran (counted in every thread);
    * ``syscall``: the system call the thread is in, "running" when on the CPU, None if
      unknown; ``entry``: where in libc it was made; ``native``: best-guess native callers
      outside libc and Python, innermost first; ``native_library``: path of the first one
      (the library to audit);
    * ``cpu_share``: the share of the stall the thread spent on a CPU; ``runqueue``: seconds
      it was runnable but waited for a CPU, ``runqueue_share`` the same as a share (an
      overloaded machine); None if unknown (the window starts at the monitor's last look
      before the stall);
    * ``late``: True when the GIL was held, so the monitor could look only after the thread
      let go (no ``in_flight``/``syscall``/``native`` then; the stack is where it let go);
    * ``patched``: paths of the libraries greenhook has patched.
    """

    hub: str
    thread_name: str
    thread_ident: int
    threshold: float
    seconds: float
    duration: Optional[float]
    stack: Optional[traceback.StackSummary]
    greenlet: str
    in_flight: Optional[Tuple[str, float]]
    blocked: Dict[str, int]
    syscall: Optional[str]
    entry: Optional[str]
    native: List[str]
    native_library: Optional[str]
    # float, or None when unknown -- all three together, which mypy cannot follow
    cpu_share: Any
    runqueue: Any
    runqueue_share: Any
    late: bool
    patched: List[str]

    def __init__(self, **fields: Any) -> None:
        self.duration = None
        self.__dict__.update(fields)

    def __repr__(self) -> str:
        what = self.in_flight[0] if self.in_flight else "unpatched"
        return "<Stall %s %.3fs %s>" % (self.hub, self.seconds, what)

    def __str__(self) -> str:
        return self.format()

    @property
    def overloaded(self) -> bool:
        """True when waiting for a CPU explains the stall: the machine, not the code."""
        return (self.runqueue_share is not None and self.runqueue_share >= 0.5
                and self.cpu_share < 0.25)

    @property
    def cpu_bound(self) -> bool:
        """True when the thread was computing (or runnable) rather than waiting in a call."""
        if self.cpu_share is not None:
            # A thread waiting in a call is off the CPU.  The syscall sample alone misleads:
            # a spinning thread is often caught in futex, taking back the GIL it just dropped.
            return self.cpu_share + self.runqueue_share >= 0.5
        if self.syscall is not None and not self.late and self.syscall != "running":
            return False
        return self.syscall == "running" and not self.late

    def format(self) -> str:
        """The report as one block of text (what the default report prints)."""
        lines = ["greenhook.watch: the %r hub in thread %s has not run its loop for %.3f s "
                 "(threshold %.3f s)" % (self.hub, self.thread_name, self.seconds, self.threshold)]
        if self.late:
            lines.append(
                "  reported late: the monitor thread could not run during the stall (the GIL "
                "was held, or the machine is loaded); the stack is where the thread let go")
        lines.extend("  " + line for line in self.verdict())
        if self.runqueue_share and not self.overloaded and self.runqueue_share > 0.2:
            lines.append("  (the thread also waited %.3f s for a CPU: the machine is loaded)"
                         % self.runqueue)
        lines.append("  patched libraries: %s" % (", ".join(
            os.path.basename(p) for p in self.patched) or "none"))
        if self.stack:
            frames = list(self.stack)
            who = {"main": "the main greenlet", "hub": "the hub greenlet (a loop callback)",
                   "spawned": "a greenlet"}.get(self.greenlet, "the running code")
            lines.append("  Python stack of %s (most recent call last):" % who)
            if len(frames) > STACK_LIMIT:
                lines.append("    ... %d outer frames" % (len(frames) - STACK_LIMIT))
                frames = frames[-STACK_LIMIT:]
            for text in traceback.StackSummary.from_list(frames).format():
                lines.extend("  " + part for part in text.rstrip("\n").split("\n"))
        else:
            lines.append("  Python stack: none (the running greenlet called straight into C, "
                         "e.g. spawn(c_function))")
        return "\n".join(lines)

    def _native_line(self):
        if self.late or not self.syscall:
            return []
        if self.syscall == "running":
            return ["the thread is running on the CPU, not waiting in a system call"]
        line = "the thread is in the %s system call" % self.syscall
        if self.entry:
            line += " (%s)" % self.entry
        if self.native:
            line += ", called from %s (best guess from the native stack)" % self.native[0]
        return [line]

    def verdict(self):
        """The lines that say what blocked and what to do."""
        if self.overloaded and not self.in_flight and not self.blocked:
            return ["no patched call in flight: the thread was ready to run but waited %.3f s "
                    "for a CPU: the machine is overloaded, not the code" % self.runqueue]
        if self.in_flight:
            sym, secs = self.in_flight
            libs = _libraries_importing(sym)
            return ["blocking: %s, a patched call, is blocking the OS thread for real (%.3f s "
                    "so far)%s" % (sym, secs, " in " + ", ".join(libs) if libs else ""),
                    "it could not park on the hub: " + _why_no_switch(self.greenlet)
                    ] + self._native_line()
        if self.blocked:
            calls = ", ".join("%s x%d" % kv for kv in sorted(self.blocked.items()))
            return ["blocking: patched calls blocked the OS thread for real during the stall: "
                    + calls,
                    "they could not park on the hub: " + _why_no_switch(self.greenlet)]
        if self.late and self.cpu_bound:
            return ["no patched call blocked: the thread was computing (on a CPU %.0f%% of the "
                    "time, waiting for one %.0f%%): CPU-bound code that does not yield"
                    % (self.cpu_share * 100, self.runqueue_share * 100)]
        if self.late:
            return ["no patched call blocked: something unpatched held the thread while "
                    "waiting%s: a blocking call into a library greenhook has not patched"
                    % ("" if self.cpu_share is None
                       else " (on the CPU %.0f%% of the time)" % (self.cpu_share * 100)),
                    _audit_hint(None)]
        if self.cpu_bound:
            return ["no patched call in flight: the thread is running on the CPU (CPU-bound "
                    "work that does not yield), not waiting in a system call"]
        return (["no patched call in flight: something unpatched is blocking"]
                + self._native_line() + [_audit_hint(self.native_library)])




def _audit_hint(library):
    if library:
        return ("list its blocking calls with `greenhook audit %s`; green them with "
                "greenhook.patch_library(%r)" % (library, os.path.basename(library)))
    return ("find the library that makes the call and run `greenhook audit <lib>`; green it "
            "with greenhook.patch_library(<lib>)")


def _why_no_switch(greenlet_kind):
    if greenlet_kind == "hub":
        return ("it runs in the hub greenlet (a loop callback), which must never wait; move "
                "the call into a spawned greenlet")
    return ("this thread's backend has no hub here, or the running greenlet is the hub - "
            "check greenhook.use() names the hub this code runs on")


def _libraries_importing(symbol):
    names = {symbol, "__" + symbol, "__%s_chk" % symbol}
    out = []
    for report in _patch_reports():
        if names & set(report.symbols):
            out.append(os.path.basename(report.library))
    return out


def _patch_reports():
    try:
        return _patch.patched_libraries()
    except Exception:
        _unraisable("greenhook.watch: listing the patched libraries failed")
        return []


# --- what the thread is doing natively -----------------------------------------------------

_SYSCALLS = {
    "x86_64": {
        0: "read", 1: "write", 7: "poll", 17: "pread64", 18: "pwrite64", 19: "readv",
        20: "writev", 23: "select", 35: "nanosleep", 42: "connect", 43: "accept", 44: "sendto",
        45: "recvfrom", 46: "sendmsg", 47: "recvmsg", 61: "wait4", 72: "fcntl", 73: "flock",
        74: "fsync", 202: "futex", 230: "clock_nanosleep", 232: "epoll_wait", 257: "openat",
        270: "pselect6", 271: "ppoll", 281: "epoll_pwait", 288: "accept4", 299: "recvmmsg",
        307: "sendmmsg", 441: "epoll_pwait2",
    },
    "aarch64": {
        22: "epoll_pwait", 25: "fcntl", 32: "flock", 56: "openat", 63: "read", 64: "write",
        65: "readv", 66: "writev", 67: "pread64", 68: "pwrite64", 72: "pselect6", 73: "ppoll",
        82: "fsync", 98: "futex", 101: "nanosleep", 115: "clock_nanosleep", 202: "accept",
        203: "connect", 206: "sendto", 207: "recvfrom", 211: "sendmsg", 212: "recvmsg",
        242: "accept4", 243: "recvmmsg", 260: "wait4", 269: "sendmmsg", 441: "epoll_pwait2",
    },
}


def _syscall(native_id):
    """(name, sp, pc) of the system call thread ``native_id`` is in; ("running", None, None)
    on the CPU; None when /proc cannot tell."""
    try:
        with open("/proc/self/task/%d/syscall" % native_id) as f:
            fields = f.read().split()
    except OSError:
        return None
    if not fields:
        return None
    if fields[0] == "running":
        return "running", None, None
    try:
        nr = int(fields[0])
        sp, pc = int(fields[-2], 16), int(fields[-1], 16)
    except (ValueError, IndexError):
        return None
    if nr < 0:
        return None     # "-1": blocked, but not in a system call (e.g. a page fault)
    name = _SYSCALLS.get(platform.machine(), {}).get(nr, "system call %d" % nr)
    return name, sp, pc


_dladdr = None     # (dladdr, Dl_info), made on first use: ctypes is not imported until a stall


def _symbolize(addr):
    """(path, "symbol+0x1f in lib.so" or "lib.so+0x1234") of a code address."""
    global _dladdr
    import ctypes
    if _dladdr is None:
        class DlInfo(ctypes.Structure):
            _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                        ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]
        try:
            fn = ctypes.CDLL(None).dladdr
        except AttributeError:
            fn = ctypes.CDLL("libdl.so.2").dladdr
        fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
        fn.restype = ctypes.c_int
        _dladdr = fn, DlInfo
    dladdr, DlInfo = _dladdr
    info = DlInfo()
    if not dladdr(addr, ctypes.byref(info)) or not info.dli_fname:
        return None, "0x%x" % addr
    path = os.fsdecode(info.dli_fname)
    lib = os.path.basename(path)
    if info.dli_sname and info.dli_saddr:
        return path, "%s+0x%x in %s" % (info.dli_sname.decode(errors="replace"),
                                        addr - info.dli_saddr, lib)
    return path, "%s+0x%x" % (lib, addr - (info.dli_fbase or 0))


def _exec_mappings():
    """Sorted (start, end, path) of the executable file mappings of this process."""
    out = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) < 6 or "x" not in parts[1] or not parts[5].startswith("/"):
                    continue
                start, end = parts[0].split("-")
                out.append((int(start, 16), int(end, 16), parts[5].strip()))
    except OSError:
        return []
    out.sort()
    return out


_EXE = os.path.realpath(sys.executable)
_RUNTIME = ("libc.so", "libc-", "ld-linux", "ld-", "libpthread", "libpython", "_hooks.")


def _is_runtime(path):
    """libc, the loader, Python itself and greenhook's hooks: not the caller we look for."""
    return os.path.basename(path).startswith(_RUNTIME) or os.path.realpath(path) == _EXE


def _native_callers(sp, limit=3):
    """(path, text) of up to ``limit`` code addresses found on the stack above ``sp`` in
    executable objects other than libc and Python, innermost first.  The first is most likely
    the return address into the caller; later ones are often stale words."""
    maps = _exec_mappings()
    if not maps:
        return []
    starts = [m[0] for m in maps]
    data = b""
    # /proc/self/mem, not ctypes: an address that is no longer mapped gives EIO, not SIGSEGV.
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        for size in (32768, 4096, 512):
            try:
                data = os.pread(fd, size, sp)
                break
            except OSError:
                continue
    finally:
        os.close(fd)
    width = struct.calcsize("P")
    seen = set()
    callers = []
    for (word,) in struct.iter_unpack("P", data[:len(data) - len(data) % width]):
        i = bisect.bisect_right(starts, word) - 1
        if i < 0 or word >= maps[i][1]:
            continue
        path = maps[i][2]
        if path in seen or _is_runtime(path):
            continue
        seen.add(path)
        callers.append(_symbolize(word))
        if len(callers) >= limit:
            break
    return callers


class SchedClock:
    """CPU time and run-queue wait of one thread, from ``/proc/self/task/<tid>/schedstat``."""

    def __init__(self, native_id):
        try:
            self._fd = os.open("/proc/self/task/%d/schedstat" % native_id, os.O_RDONLY)
        except OSError:
            self._fd = None

    def read(self):
        """(seconds on a CPU, seconds runnable but waiting for one), or None."""
        if self._fd is None:
            return None
        try:
            on_cpu, waiting = os.pread(self._fd, 64, 0).split()[:2]
            return int(on_cpu) / 1e9, int(waiting) / 1e9
        except (OSError, ValueError):
            return None

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --- the monitor -----------------------------------------------------------------------------

def _bottom(frame):
    while frame is not None and frame.f_back is not None:
        frame = frame.f_back
    return frame


def _hub_loop_codes():
    codes = set()
    from greenhook import hub as builtin_hub
    codes.add(builtin_hub.Hub._run_forever.__code__)
    gevent_hub = sys.modules.get("gevent.hub")
    run = getattr(getattr(gevent_hub, "Hub", None), "run", None)
    if run is not None and hasattr(run, "__code__"):
        codes.add(run.__code__)
    return codes


class _OSThread:
    """A daemon OS thread running ``target()``, for where gevent has monkey-patched
    ``threading``: a ``threading.Thread`` is a greenlet there, which cannot run while its
    hub's thread is blocked -- the very moment the monitor must look."""

    def __init__(self, target):
        start, allocate_lock, self._get_ident = os_thread_api()
        self._running = allocate_lock()
        self._running.acquire()
        self.ident = None

        def run():
            self.ident = self._get_ident()
            try:
                target()
            finally:
                self._running.release()
        start(run, ())

    def is_alive(self):
        return self._running.locked()

    def join(self, timeout):
        if self._running.acquire(timeout=timeout):
            self._running.release()


class _Flag:
    """``threading.Event``'s set / is_set / wait on a real lock (see :class:`_OSThread`)."""

    def __init__(self):
        self._lock = os_thread_api()[1]()
        self._lock.acquire()
        self._set = False

    def set(self):
        if not self._set:
            self._set = True
            try:
                self._lock.release()
            except RuntimeError:
                pass        # released by a concurrent set()

    def is_set(self):
        return self._set

    def wait(self, timeout):
        if self._lock.acquire(timeout=timeout):
            self._lock.release()
        return self._set


class Watch:
    """A running blocking detector; made by :func:`watch`.  ``stop()`` ends it (also on exit
    of a ``with`` block); ``stalls`` holds the latest reported :class:`Stall` objects."""

    def __init__(self, backend: Backend, threshold: float,
                 report: Optional[Callable[[Stall], Any]]) -> None:
        self.threshold = threshold
        self.hub = backend.name
        self.report = report if report is not None else print_report
        self.stalls: Deque[Stall] = collections.deque(maxlen=100)
        self.thread_name = threading.current_thread().name
        #: seconds between beats, and between the monitor's looks while the loop is late
        self.period = threshold / 4.0
        self._stop = _Flag()
        self._thread = None
        # The main greenlet's outermost frame: when it is the bottom of the running stack and
        # nothing waits on the hub, the thread is just doing synchronous work.
        root = getcurrent()
        while root.parent is not None:
            root = root.parent
        top = sys._getframe() if root is getcurrent() else root.gr_frame
        self._main_bottom = _bottom(top)
        self._loop_codes = _hub_loop_codes()
        self._heartbeat = backend.heartbeat(self.period)
        # The hub thread's CPU and run-queue times tell computing and waiting for a CPU from
        # blocking.
        self._sched = SchedClock(threading.get_native_id())
        self._start_monitor()
        _live.add(self)

    def _start_monitor(self):
        # Taken here, in the hub's thread: the monitor thread may first get the GIL only after
        # a long call that holds it, and must still see that call as a stall.
        self._first = (monotonic(), self._sched.read(), self._blocked_counts())
        if _threading_patched():
            self._thread = _OSThread(self._run)
        else:
            self._thread = threading.Thread(target=self._run, name="greenhook-watch",
                                            daemon=True)
            self._thread.start()

    def _after_fork_in_child(self):
        """The monitor thread did not survive the fork.  A watch on the forking thread's hub
        gets a new monitor (and reads the child's own scheduler statistics: the child's thread
        has another native id); a watch on any other thread's hub is over, as that thread is."""
        self._stop = _Flag()
        hb = self._heartbeat
        if hb.cancelled or hb.thread_ident != os_thread_ident():
            self._stop.set()
            hb.cancelled = True     # its hub went with its thread: nothing left to cancel
            self._thread = None     # stop() must not join a thread that does not exist
            self._sched.close()
            return
        hb.native_id = threading.get_native_id()
        hb.last = monotonic()
        self._sched.close()
        self._sched = SchedClock(hb.native_id)
        self._start_monitor()

    def __repr__(self) -> str:
        state = "stopped" if self._stop.is_set() else "running"
        return "<greenhook Watch %r hub, threshold %.3f s, %s>" % (self.hub, self.threshold,
                                                                   state)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Stop the monitor thread and the hub's heartbeat.  Idempotent; any thread."""
        self._stop.set()
        self._heartbeat.cancel()
        _live.discard(self)
        t = self._thread
        if t is not None and t.ident != os_thread_ident():
            t.join(5)

    # -- monitor thread ----------------------------------------------------------------------

    def _blocked_counts(self):
        hooks = _hooks()
        if hooks is None:
            return {}
        return {sym: row["blocked"] for sym, row in hooks.stats().items() if row["blocked"]}

    def _running_frame(self):
        return sys._current_frames().get(self._heartbeat.thread_ident)

    def _greenlet_kind(self, frame):
        bottom = _bottom(frame)
        if bottom is None:
            return None
        if bottom is self._main_bottom:
            return "main"
        if bottom.f_code in self._loop_codes:
            return "hub"
        return "spawned"

    def _run(self):
        try:
            self._monitor()
        except Exception:
            _unraisable("greenhook.watch: the monitor thread failed; this watch has stopped",
                        self)
        finally:
            self._stop.set()        # also when the hub's thread has ended
            self._heartbeat.cancel()
            self._sched.close()

    def _monitor(self):
        hb = self._heartbeat
        period = self.period
        threshold = self.threshold
        started, sched, baseline = self._first
        mark = (started, sched)
        idle_at = 0.0          # the last look that found nobody waiting on the hub
        stall = None           # the stall in progress (reported once), or None
        expected = started + period
        while not self._stop.wait(max(expected - monotonic(), 0.0)):
            now = monotonic()
            # A monitor that woke this late could not get the GIL: a C call held it.  (A
            # CPU-bound Python thread delays the hand-off by a few switch intervals only.)
            late = now - expected > max(threshold / 2, 10 * sys.getswitchinterval())
            # The loop is late from the moment its beat was due (or nobody needed it).
            start = max(hb.last + hb.interval, idle_at)
            if now <= start:
                if stall is not None:
                    stall.duration = max(hb.last - stall.start, stall.seconds)
                    stall = None
                baseline = self._blocked_counts()
                mark = (now, self._sched.read())
                # Nothing can cross the threshold before then: one look per threshold while
                # the loop keeps beating.
                expected = start + threshold + 0.001
                continue
            expected = now + period
            frame = self._running_frame()
            if frame is None and not _thread_exists(hb.thread_ident):
                return          # the hub's thread has ended
            kind = self._greenlet_kind(frame) if frame is not None else None
            if not (hb.busy() or (hb.looping and kind != "main")):
                idle_at = now
                if stall is not None:
                    stall.duration = now - stall.start
                    stall = None
                continue
            if stall is not None:
                continue
            if now - start <= threshold:
                expected = min(expected, start + threshold + 0.001)
                continue
            stall = self._describe(start, now, frame, kind, late, baseline, mark)
            self.stalls.append(stall)
            try:
                self.report(stall)
            except Exception:
                _unraisable("greenhook.watch: the report function failed", self.report)
            del frame

    def _describe(self, start, now, frame, kind, late, baseline, mark):
        hb = self._heartbeat
        cpu_share = runqueue = runqueue_share = None
        sched = self._sched.read()
        if sched is not None and mark[1] is not None and now > mark[0]:
            window = now - mark[0]
            cpu_share = min((sched[0] - mark[1][0]) / window, 1.0)
            runqueue = sched[1] - mark[1][1]
            runqueue_share = min(runqueue / window, 1.0)
        in_flight = None
        hooks = _hooks()
        if hooks is not None and not late:
            for st in reversed(hooks.thread_states()):
                if st.thread_ident == hb.thread_ident:
                    in_flight = st.in_flight
                    break
        sysinfo = None if late else _syscall(hb.native_id)
        native = []
        entry = None
        if sysinfo is not None and sysinfo[0] != "running":
            try:
                entry = _symbolize(sysinfo[2])[1]
                native = _native_callers(sysinfo[1])
            except Exception:
                # The report goes out without the native callers; the failure is reported.
                _unraisable("greenhook.watch: reading the native stack of thread %s failed"
                            % self.thread_name)
        blocked = {}
        for sym, count in self._blocked_counts().items():
            delta = count - baseline.get(sym, 0)
            if delta > 0:
                blocked[sym] = delta
        stack = traceback.extract_stack(frame) if frame is not None else None
        stall = Stall(hub=self.hub, thread_name=self.thread_name,
                      thread_ident=hb.thread_ident, threshold=self.threshold,
                      seconds=now - start, start=start, stack=stack,
                      greenlet=kind, in_flight=in_flight, blocked=blocked,
                      syscall=sysinfo[0] if sysinfo else None, entry=entry,
                      native=[text for _, text in native],
                      native_library=native[0][0] if native else None,
                      late=late, cpu_share=cpu_share, runqueue=runqueue,
                      runqueue_share=runqueue_share,
                      patched=[r.library for r in _patch_reports()])
        return stall


def _threading_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def _thread_exists(ident: int) -> bool:
    if _threading_patched():
        # threading's registry names greenlets there; the interpreter's frames name threads.
        return ident in sys._current_frames()
    return ident in {t.ident for t in threading.enumerate()}


def print_report(stall: Stall) -> None:
    """The default report: the stall's text to stderr, once per stall."""
    sys.stderr.write(stall.format() + "\n")
    sys.stderr.flush()


def watch(threshold: float = 0.1, report: Optional[Callable[[Stall], Any]] = None,
          hub: Union[str, Backend, None] = None) -> Watch:
    """Start a blocking detector on the calling OS thread's hub; returns a :class:`Watch`.

    ``threshold``: seconds the hub's loop may go without running before it is reported, a
    number from ``MIN_THRESHOLD`` (1 ms) to ``MAX_THRESHOLD`` (a day).  ``report``: called
    with a :class:`Stall` from the monitor thread, once per stall (an exception it raises
    goes to ``sys.unraisablehook``); None prints it to stderr.  ``hub``: a backend name (``"builtin"``, ``"gevent"``) or instance;
    None: this thread's greenhook backend, else the default one.  Call it in the thread that
    runs the hub (it makes the hub if there is none yet).

    A threshold out of range or not a number (NaN, inf, 0, "0.1", True) or a ``report``
    that is neither None nor callable raises :class:`InvalidArgument` at once.
    """
    threshold = check_threshold(threshold)
    if report is not None and not callable(report):
        raise InvalidArgument("watch report must be a callable taking a Stall, or None to "
                              "print to stderr; got %r" % (report,))
    if hub is None:
        h = _core.hooks_or_none()
        st = h.thread_state() if h is not None else None
        backend = None
        if st is not None:
            backend = st.backend if st.backend is not None else _core.resolve_backend()
        if backend is None:
            backend = backends.get_backend(backends.default_backend_name())
    else:
        backend = backends.get_backend(hub)
    return Watch(backend, threshold, report)


_env_watches: Dict[int, Watch] = {}   # thread ident -> Watch started by from_env
_env_lock = threading.Lock()
_live: "weakref.WeakSet[Watch]" = weakref.WeakSet()   # every Watch not yet stopped (for fork)


def _after_fork_in_child():
    global _env_lock
    _env_lock = threading.Lock()        # another thread may have held it at the fork
    me = os_thread_ident()
    for key in [k for k in _env_watches if k != me]:
        del _env_watches[key]
    for w in list(_live):
        if not w.stopped:
            w._after_fork_in_child()
        if w.stopped:
            _live.discard(w)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _env_warning(value, why):
    # stacklevel 4: _env_warning <- from_env <- greenhook.use() <- the caller of use()
    warnings.warn("greenhook: %s=%r ignored, no watch started: %s" % (ENV, value, why),
                  RuntimeWarning, stacklevel=4)


def from_env(backend=None):
    """Start a watch on the calling thread's hub when ``GREENHOOK_WATCH`` is set to a threshold
    in seconds (e.g. ``0.1``); once per thread and hub.  Meant for ``greenhook.use()``.
    Returns the Watch, or None when the variable is unset, empty or ``0``.

    Any other value that :func:`watch` would refuse (``abc``, ``nan``, ``inf``, ``-1``,
    ``1e-9``) starts nothing and warns: a ``RuntimeWarning`` naming the variable and the
    value (``-W error::RuntimeWarning`` makes it an error).  A warning, not an exception: the
    variable is a diagnostic switch set outside the program, and a typo in it must not stop
    the service it was meant to observe -- nor pass unnoticed."""
    raw = os.environ.get(ENV, "")
    value = raw.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = None
    if number == 0:
        return None         # "0", "0.0", "-0": off
    try:
        threshold = check_threshold(number)
    except InvalidArgument:
        _env_warning(raw, "expected a threshold in seconds from %g to %g, e.g. 0.1, or 0 "
                          "for off" % (MIN_THRESHOLD, MAX_THRESHOLD))
        return None
    backend = backends.get_backend(backend) if backend is not None else None
    key = os_thread_ident()
    with _env_lock:
        current = _env_watches.get(key)
        if current is not None and not current.stopped:
            if backend is None or current.hub == backend.name:
                return current
            current.stop()
        try:
            w = watch(threshold, hub=backend)
        except NotImplementedError as exc:      # a custom Backend without a heartbeat
            _env_warning(raw, str(exc))
            return None
        _env_watches[key] = w
        return w
