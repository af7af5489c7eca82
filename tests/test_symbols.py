"""The hooked symbols are declared once (greenhook._symbols.HOOKED); everything else derives
from that table and must agree with it: the C enum (gh_symbols.h, written by setup.py), the
hooks' entry points, the rows of stats(), and what audit calls greened."""
import ctypes

from greenhook import _hooks, _symbols


def test_c_enum_matches_the_table():
    assert _hooks.SYMBOL_NAMES == _symbols.CANONICAL
    assert len(set(_symbols.CANONICAL)) == len(_symbols.CANONICAL)


def test_every_row_has_an_entry_point_and_every_entry_point_a_row():
    funcs = _hooks.hook_functions()
    names = {name for name, _, _ in _symbols.HOOKED}
    canonical = set(_symbols.CANONICAL)
    # every entry point is either a canonical hook or a named twin in the table
    assert set(funcs) <= names, set(funcs) - names
    assert canonical <= set(funcs), canonical - set(funcs)
    # a row without its own entry point uses its canonical one (glibc aliases); the per-fd
    # state rows (never wait, no counters) have theirs in state_functions()
    state = _hooks.state_functions()
    assert set(state) == set(_symbols.STATE), set(state) ^ set(_symbols.STATE)
    assert not canonical & set(_symbols.STATE)
    for name, canon, what in _symbols.HOOKED:
        assert canon in canonical or canon in state, name
        assert what, name


def test_hook_table_covers_what_this_libc_exports():
    libc = ctypes.CDLL(None)
    table = _hooks.hook_table()
    for name, canon, _ in _symbols.HOOKED:
        exported = hasattr(libc, name)
        assert (name in table) == exported, name
        if name in table and canon in _symbols.STATE:
            assert table[name] == _hooks.state_functions()[canon], name
        elif name in table:
            own = _hooks.hook_functions().get(name)
            assert table[name] == (own if own is not None else _hooks.hook_functions()[canon])


def test_greened_is_the_table():
    # every row but the per-fd state ones (they green nothing)
    assert _symbols.GREENED == {name: what for name, canon, what in _symbols.HOOKED
                                if canon not in _symbols.STATE}
    assert set(_symbols.FDSTATE) == {n for n, c, _ in _symbols.HOOKED if c in _symbols.STATE}
    assert {"close", "socket", "dup2"} <= set(_symbols.FDSTATE)
    assert not set(_symbols.GREENED) & set(_symbols.NOT_GREENED_YET)


def test_stats_rows_are_the_canonical_names():
    _hooks.reset_stats()
    assert _hooks.stats() == {}
    assert set(_hooks.SYMBOL_NAMES) == set(_symbols.CANONICAL)
