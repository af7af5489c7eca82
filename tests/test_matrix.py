"""Every call style x link variant x hub x GIL held/released, on the sample C clients.

20 concurrent greened calls against a server that answers after 0.2 s must overlap (within
2 x 0.2 s + 0.2 s = 0.6 s: with two of them serialized a cell takes >= 0.6 s; all serialized,
4 s) while a 10 ms ticker keeps ticking (at least half of its ~20 ideal ticks) and every reply
is the exact bytes sent; a small ungreened control group in the same process is serialized.
Each (variant, hub) runs in its own subprocess (GOT patches are process-wide).  The bounds
are greenhook.verify's (``check``), which ``greenhook verify`` prints.
"""

import pytest

from greenhook import samples
from greenhook.samples.server import DelayServer
from greenhook.verify import check, run_cells

N, CONTROL, DELAY = 20, 2, 0.2


@pytest.fixture(scope="module")
def server():
    with DelayServer() as srv:
        yield srv


@pytest.mark.parametrize("hub", ["builtin", "gevent"])
@pytest.mark.parametrize("variant", samples.VARIANTS)
def test_every_style_yields(server, variant, hub):
    cells = run_cells(variant, hub, samples.STYLES, n=N, control=CONTROL, delay=DELAY,
                      server=server, timeout=240)
    expected = {(s, g, p) for s in samples.STYLES for g in ("held", "released")
                for p in (False, True)}
    assert {(c.style, c.gil, c.patched) for c in cells} == expected

    problems = []
    for c in cells:
        where = f"{variant}/{hub}/{c.style}/GIL {c.gil}/{'greened' if c.patched else 'control'}"
        if c.patched:
            passed, why = check(c)      # replies, wall time, ticks, parks on the hub
            if not passed:
                problems.append(f"{where}: {why}")
        else:
            if not c.ok:
                problems.append(f"{where}: replies differ from what was sent {c.errors}")
            if c.wall < 0.9 * CONTROL * DELAY:
                problems.append(f"{where}: control not serialized ({c.wall:.2f} s)")
            if c.ticks > CONTROL + 1:
                problems.append(f"{where}: ticker ran {c.ticks} times while calls blocked")
    assert not problems, "\n".join(problems)
