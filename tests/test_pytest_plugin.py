"""The pytest plugin (greenhook.pytest_plugin) and greenhook.testing.assert_cooperative.

The inner test sessions patch libraries, so they run in subprocesses
(``pytester.runpytest_subprocess``) with a timeout; the plugin comes from the installed
package's ``pytest11`` entry point, not from a conftest.
"""
import sys

import pytest

from greenhook_test_support import skip_or_fail

pytest_plugins = ["pytester"]

if not sys.platform.startswith("linux"):
    skip_or_fail("greenhook patches ELF objects on Linux only", allow_module_level=True)

TIMEOUT = 120

CONFTEST = '''
import pytest
from greenhook.samples.server import DelayServer

@pytest.fixture(scope="session")
def port():
    with DelayServer() as srv:
        yield srv.tcp_port
'''

INNER = '''
import pytest
import greenhook
from greenhook import samples
from greenhook.pytest_plugin import assert_cooperative

mod = samples.load("now")

def call(port, gil_released=True):
    return mod.request("send_recv", port, 200, b"ping", gil_released)

@pytest.fixture
def patched():
    greenhook.patch_library(samples.library_path("now"))
    yield
    greenhook.unpatch_library(samples.library_path("now"))

@pytest.mark.parametrize("greenhook_hub", ["builtin", "gevent"], indirect=True)
def test_greened(greenhook_hub, patched, port):
    assert greenhook_hub.assert_cooperative(call, port) == b"ping"

@pytest.mark.parametrize("hub", ["builtin", "gevent"])
def test_greened_gil_held(hub, patched, port):
    assert assert_cooperative(call, port, False, hub=hub) == b"ping"

def test_ungreened(port):
    assert_cooperative(call, port)

def test_ungreened_gil_held(port):
    assert_cooperative(call, port, False, hub="gevent")

def test_hooked_call_in_a_loop_callback(patched, port):
    from greenhook import hub as H

    def schedule_in_the_hub():
        H.get_hub().run_callback(call, port)
        H.sleep(0.3)

    assert_cooperative(schedule_in_the_hub, hub="builtin")
'''


@pytest.fixture
def inner(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner=INNER)
    return pytester


def error_lines(header, *lines):
    """fnmatch patterns: the failure section named ``header``, then the ``E``-prefixed lines
    of the assertion message, in order (pytest indents them by traceback depth)."""
    return ["*_ %s _*" % header] + ["E*" + line for line in lines]


def test_plugin_autoloads_and_reports_what_blocked(inner):
    try:
        import gevent  # noqa: F401 - the inner session uses both hubs
    except ImportError:
        skip_or_fail("gevent is not installed")
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", timeout=TIMEOUT)
    result.assert_outcomes(passed=4, failed=3)
    # The ungreened call: the hub stall, plainly attributed to an unpatched library, with the
    # system call and native caller caught in the act and the Python line that made the call.
    result.stdout.fnmatch_lines(error_lines(
        "test_ungreened",
        "AssertionError: the 'builtin' hub stalled for 0.* s while running test_inner.call() "
        "(threshold 0.050 s): for that long no other greenlet could run",
        "  (measured by a ticker greenlet sleeping 10 ms at a time: * ticks in 0.* s*)",
        "what blocked: no patched call blocked: the blocking call is in a library greenhook "
        "has not patched \u2014 run `greenhook audit <lib>`",
        "  caught in the act: the recvfrom system call (*), called from libghsample_now.so*",
        "  try: greenhook audit */libghsample_now.so",
        "  where (most recent call last):",
        "    File \"*test_inner.py\", line *, in call",
        "      return mod.request(\"send_recv\", port, 200, b\"ping\", gil_released)",
        "patched libraries: none (greenhook.patch_library(...) was never called)",
        "hooked calls during the run: none",
    ))
    # GIL held: nobody could look during the call; still attributed, and the line is shown.
    result.stdout.fnmatch_lines(error_lines(
        "test_ungreened_gil_held",
        "AssertionError: the 'gevent' hub stalled for 0.* s while running test_inner.call()*",
        "what blocked: no patched call blocked: the blocking call is in a library greenhook "
        "has not patched*",
        "  (seen only after the stall: the GIL was held, or the machine is loaded; the stack "
        "below is where the thread was then)",
        "      return mod.request(\"send_recv\", port, 200, b\"ping\", gil_released)",
    ))
    # A patched call made where it cannot park: the symbol and the library that imports it.
    result.stdout.fnmatch_lines(error_lines(
        "test_hooked_call_in_a_loop_callback",
        "AssertionError: the 'builtin' hub stalled for 0.* s while running "
        "test_inner.test_hooked_call_in_a_loop_callback.<locals>.schedule_in_the_hub()*",
        "what blocked: patched calls that could not park on the hub and blocked the OS "
        "thread for real:",
        "  recv x1 (imported by libghsample_now.so)",
        "  it runs in the hub greenlet (a loop callback), which must never wait; move the "
        "call into a spawned greenlet",
        "patched libraries: libghsample_now.so (* symbols)",
    ))
    # The helper's own frame is hidden: the failure points at the test's line.
    assert "def assert_cooperative(" not in result.stdout.str()


def test_explicit_p_greenhook_without_autoload(inner, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = inner.runpytest_subprocess("-p", "greenhook", "-p", "no:cacheprovider",
                                        "-k", "test_greened and builtin and not gil",
                                        timeout=TIMEOUT)
    result.assert_outcomes(passed=1)


def test_fixture_missing_when_plugin_disabled(inner):
    result = inner.runpytest_subprocess("-p", "no:greenhook", "-p", "no:cacheprovider",
                                        "-k", "test_greened and builtin and not gil",
                                        timeout=TIMEOUT)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'greenhook_hub' not found*"])


def test_assert_cooperative_returns_and_propagates_errors():
    """In-process, no patching: a function that yields passes; its exception propagates."""
    from greenhook import hub as H
    from greenhook.testing import assert_cooperative

    def yields(x):
        H.sleep(0.02)
        return x * 2

    def fails():
        raise KeyError("boom")

    assert assert_cooperative(yields, 21) == 42
    with pytest.raises(KeyError, match="boom"):
        assert_cooperative(fails)

    def spins():
        import time
        t = time.thread_time()      # CPU time: the same work on a loaded machine
        while time.thread_time() - t < 0.2:
            pass

    with pytest.raises(AssertionError) as info:
        assert_cooperative(spins, threshold=0.05)
    text = str(info.value)
    assert "stalled for" in text and ", in spins" in text
    assert "the thread was busy on the CPU" in text
    H.get_hub().destroy()
