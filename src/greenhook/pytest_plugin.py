"""pytest plugin: registered as ``greenhook`` (entry point ``pytest11``), so it loads by itself
wherever greenhook is installed, and ``-p greenhook`` names it explicitly.

Fixture ``greenhook_hub``: a :class:`greenhook.testing.HubRunner` for the hub named by the
test's parameter (``"builtin"`` by default; ``"gevent"`` skips when gevent is missing), with the
test's OS thread bound to that hub's backend for the test::

    @pytest.mark.parametrize("greenhook_hub", ["builtin", "gevent"], indirect=True)
    def test_query_yields(greenhook_hub):
        assert greenhook_hub.assert_cooperative(client.query, "select 1") == [(1,)]

``assert_cooperative(fn, *args, hub=..., threshold=0.05, **kwargs)`` is
:func:`greenhook.testing.assert_cooperative`, re-exported here.

Importing this module stays cheap (no compiled core, no gevent): pytest imports it in every
session of every project once greenhook is installed.
"""

import pytest

from greenhook.testing import assert_cooperative

__all__ = ["assert_cooperative", "greenhook_hub"]


@pytest.fixture
def greenhook_hub(request):
    """The hub named by ``request.param`` ("builtin" unless parametrized indirectly), with
    hooked calls in this thread waiting on it for the test."""
    from greenhook.testing import HubRunner, _Bound

    name = getattr(request, "param", "builtin")
    if name == "gevent":
        pytest.importorskip("gevent", reason="the gevent hub needs gevent installed")
    bound = _Bound(name)
    try:
        yield HubRunner(name)
    finally:
        bound.restore()

