"""Backend on greenhook's own hub (``greenhook.hub``): greenlet + epoll, nothing else."""

from greenhook import hub as _hub

from .base import Backend


class BuiltinBackend(Backend):
    name = "builtin"

    def can_switch(self):
        hub = _hub.get_hub_if_exists()
        return hub is not None and hub.can_switch()

    def wait_fd(self, fd, events, timeout):
        return _hub.get_hub().wait_fd(fd, events, timeout)

    def wait_fds(self, fds, timeout):
        return _hub.get_hub().wait_fds(fds, timeout)

    def sleep(self, seconds):
        hub = _hub.get_hub()
        if seconds is None:
            hub.wait_fds([], None)
        else:
            hub.sleep(seconds)


BACKEND = BuiltinBackend()
