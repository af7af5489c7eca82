"""Every call style x link variant x hub x GIL held/released, on the sample C clients.

20 concurrent greened calls against a server that answers after 0.2 s must overlap (well
under 1.5 s, serial would be 4 s) while a 10 ms ticker keeps ticking and every reply is the
exact bytes sent; a small ungreened control group in the same process is serialized.  Each
(variant, hub) runs in its own subprocess (GOT patches are process-wide).
"""

import pytest

from greenhook import samples
from greenhook.samples.server import DelayServer
from greenhook.verify import run_cells

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
        if not c.ok:
            problems.append(f"{where}: replies differ from what was sent {c.errors}")
        if c.patched:
            if c.wall >= 1.5:
                problems.append(f"{where}: {N} calls took {c.wall:.2f} s (serial {N * DELAY:.1f} s)")
            if c.ticks < 5:
                problems.append(f"{where}: ticker ticked {c.ticks} times during {c.wall:.2f} s")
            if c.waits < 1:
                problems.append(f"{where}: no hooked call parked on the hub")
        else:
            if c.wall < 0.9 * CONTROL * DELAY:
                problems.append(f"{where}: control not serialized ({c.wall:.2f} s)")
            if c.ticks > CONTROL + 1:
                problems.append(f"{where}: ticker ran {c.ticks} times while calls blocked")
    assert not problems, "\n".join(problems)
