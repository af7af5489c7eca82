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
    # a row without its own entry point uses its canonical one (glibc aliases)
    for name, canon, what in _symbols.HOOKED:
        assert canon in canonical, name
        assert what, name


def test_hook_table_covers_what_this_libc_exports():
    libc = ctypes.CDLL(None)
    table = _hooks.hook_table()
    for name, canon, _ in _symbols.HOOKED:
        exported = hasattr(libc, name)
        assert (name in table) == exported, name
        if name in table:
            own = _hooks.hook_functions().get(name)
            assert table[name] == (own if own is not None else _hooks.hook_functions()[canon])


def test_greened_is_the_table():
    assert _symbols.GREENED == {name: what for name, _, what in _symbols.HOOKED}
    assert not set(_symbols.GREENED) & set(_symbols.NOT_GREENED_YET)


def test_stats_rows_are_the_canonical_names():
    _hooks.reset_stats()
    assert _hooks.stats() == {}
    assert set(_hooks.SYMBOL_NAMES) == set(_symbols.CANONICAL)
