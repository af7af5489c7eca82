"""`audit` on the sample link variants, checked against what the patcher really writes."""

import json
import subprocess
import sys

import pytest

from greenhook import samples
from greenhook.audit import audit

EXPECTED = {
    # variant: (relro, binding, relocation kinds of recv)
    "lazy": ("partial", "lazy", {"JUMP_SLOT"}),
    "now": ("full", "now", {"JUMP_SLOT"}),
    "noplt": ("full", "now", {"GLOB_DAT"}),
    "addrtaken": ("full", "now", {"JUMP_SLOT", "64"}),
    "fortify": ("full", "now", {"JUMP_SLOT"}),
}


def _lib(variant):
    (lib,) = audit(samples.library_path(variant), follow_needed=False)
    return lib


@pytest.mark.parametrize("variant", samples.VARIANTS)
def test_variant_verdicts(variant):
    lib = _lib(variant)
    relro, binding, recv_kinds = EXPECTED[variant]
    assert (lib.relro, lib.binding) == (relro, binding)
    imports = {i.symbol: i for i in lib.imports}
    assert {s.type for s in imports["recv"].slots} == recv_kinds
    assert imports["recv"].category == "greened"
    assert lib.summary == "fully greenable"
    if variant == "fortify":
        for twin in ("__recv_chk", "__read_chk", "__recvfrom_chk", "__poll_chk", "__ppoll_chk"):
            assert imports[twin].category == "greened", twin
        assert imports["__fdelt_chk"].category == "context"


@pytest.mark.parametrize("variant", samples.VARIANTS)
def test_audit_agrees_with_the_patcher(variant):
    """Every import audit calls greened gets exactly as many slots written as audit lists."""
    lib = _lib(variant)
    predicted = {i.symbol: len(i.slots) for i in lib.imports if i.category == "greened"}
    code = (
        "import json, greenhook; from greenhook import samples; "
        f"samples.load({variant!r}); "
        f"r = greenhook.patch_library(samples.library_path({variant!r})); "
        "print(json.dumps(r.symbols))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == predicted


def test_module_target_follows_the_extension_to_its_library():
    libs = audit("greenhook.samples._bin._ghsample_noplt")
    by_name = {l.soname or l.name: l for l in libs}
    assert "libghsample_noplt.so" in by_name
    assert by_name["libghsample_noplt.so"].summary == "fully greenable"
    assert by_name["libc.so.6"].status == "skipped"
