"""The interface every hub backend implements.

The hooks call these with the GIL held, from the greenlet that wants to wait.  A backend only
answers "may this greenlet switch?", "wait for these fds / this long"; it never learns which
libc call is waiting.
"""

# poll(2) event bits, as the hooks pass them (Linux values).
POLLIN, POLLPRI, POLLOUT = 0x001, 0x002, 0x004
POLLERR, POLLHUP = 0x008, 0x010
POLLRDNORM, POLLRDBAND, POLLWRNORM, POLLWRBAND = 0x040, 0x080, 0x100, 0x200
READ_EVENTS = POLLIN | POLLPRI | POLLRDNORM | POLLRDBAND
WRITE_EVENTS = POLLOUT | POLLWRNORM | POLLWRBAND


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

    def sleep(self, seconds):
        """Park for ``seconds`` (``None``: until an exception is thrown in)."""
        raise NotImplementedError

    def __repr__(self):
        return f"<greenhook backend {self.name!r}>"
