"""The interface every hub backend implements.

The hooks call these with the GIL held, from the greenlet that wants to wait.  A backend only
answers "may this greenlet switch?", "wait for these fds / this long"; it never learns which
libc call is waiting.

``heartbeat`` is the one method that is not for the hooks: the blocking detector
(``greenhook.watch``) uses it to learn when a hub's loop last ran.
"""
import _thread
import sys
import threading
from time import monotonic

# poll(2) event bits, as the hooks pass them (Linux values).
POLLIN, POLLPRI, POLLOUT = 0x001, 0x002, 0x004
POLLERR, POLLHUP = 0x008, 0x010
POLLRDNORM, POLLRDBAND, POLLWRNORM, POLLWRBAND = 0x040, 0x080, 0x100, 0x200
READ_EVENTS = POLLIN | POLLPRI | POLLRDNORM | POLLRDBAND
WRITE_EVENTS = POLLOUT | POLLWRNORM | POLLWRBAND


def os_thread_api():
    """``(start_new_thread, allocate_lock, get_ident)`` of real OS threads, also where gevent
    has monkey-patched ``threading``/``_thread`` (gunicorn's gevent worker, Celery's gevent
    pool, Locust): there ``threading.get_ident()`` names the current greenlet and a
    ``threading.Thread`` is a greenlet, which cannot run while its hub's thread is blocked."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        return tuple(monkey.get_original(
            "_thread", ("start_new_thread", "allocate_lock", "get_ident")))
    return _thread.start_new_thread, _thread.allocate_lock, _thread.get_ident


def os_thread_ident():
    """The calling OS thread's identifier (``sys._current_frames()``'s key), whatever
    gevent's monkey-patching did to ``threading.get_ident``."""
    return os_thread_api()[2]()


class Backend:
    """A hub a hooked call can park on."""

    #: short name used by ``greenhook.use()``
    name = "abstract"

    def can_switch(self):
        """True when a hub exists in this OS thread (never create one here) and the current
        greenlet is not the hub itself (nor a loop callback running in it)."""
        raise NotImplementedError

    def wait_fd(self, fd, events, timeout):
        """Park until ``fd`` may be ready for the poll ``events`` (True) or ``timeout`` seconds
        pass (False); ``None`` waits forever.  Exceptions thrown into the greenlet propagate
        after every watcher is closed.  Spurious wakes are allowed: the hook probes again."""
        raise NotImplementedError

    def wait_fds(self, fds, timeout):
        """``wait_fd`` for a list of ``(fd, events)``: True when any may be ready."""
        raise NotImplementedError

    # Optional: ``wait_fd_gen(fd, events, timeout, gen)``, ``wait_fd`` for a socket call that
    # has just checked (one fstat against the hooks' per-fd table) that ``fd`` names the same
    # open file as at the previous wait with this ``gen`` (a new ``gen`` whenever the number may
    # name another file): the backend may then keep one watcher or epoll registration per fd
    # across waits.  Used only when the class defining it also defines the ``wait_fd`` in use.

    def sleep(self, seconds):
        """Park for ``seconds`` (``None``: until an exception is thrown in)."""
        raise NotImplementedError

    def heartbeat(self, interval):
        """A :class:`Heartbeat` beating every ``interval`` seconds in the calling OS thread's
        hub (made if missing).  Optional: only ``greenhook.watch`` needs it."""
        raise NotImplementedError(f"the {self.name!r} backend has no heartbeat")

    def __repr__(self):
        return f"<greenhook backend {self.name!r}>"


class Heartbeat:
    """A repeating, unref'd timer in one hub's loop that records when the loop last ran.

    Made by :meth:`Backend.heartbeat` in the hub's OS thread; read by ``greenhook.watch``'s
    monitor thread.  ``last`` (monotonic seconds of the latest beat) and ``looping`` (False
    once the loop has exited for lack of work, until it starts again) are written in the hub
    thread only.  The timer never keeps the loop alive: a loop with nothing else to do still
    exits (or raises LoopExit) as it would without it.
    """

    def __init__(self, interval):
        self.interval = interval
        self.last = monotonic()
        self.thread_ident = os_thread_ident()
        self.native_id = threading.get_native_id()
        self.looping = True
        self.cancelled = False

    def busy(self):
        """True when the loop has work besides this heartbeat: callbacks, timers or fd
        watchers.  Called from any thread; a racy read is fine (the caller re-checks)."""
        raise NotImplementedError

    def cancel(self):
        """Stop beating.  From any thread; from another one the timer ends at its next tick."""
        self.cancelled = True
