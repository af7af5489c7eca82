"""A client of greenhook's public API, type-checked with ``mypy --strict`` by
tests/test_packaging.py (never run).  ``--strict`` refuses a call to an untyped function
from typed code, so every public function used here must be fully annotated; the
``reveal``-free assignments check the return types."""
from typing import Any, Dict, List, Optional

import greenhook
from greenhook.backends.base import Backend


def patching(path: str) -> int:
    report: greenhook.PatchReport = greenhook.patch_library(path)
    slots: int = report.slots
    same: Optional[greenhook.PatchReport] = greenhook.unpatch_library(path)
    mods: List[greenhook.PatchReport] = greenhook.patch_module("json", follow_deps=False)
    listed: List[greenhook.PatchReport] = greenhook.patched_libraries()
    restored: List[greenhook.PatchReport] = greenhook.unpatch_all()
    auto: List[greenhook.PatchReport] = greenhook.patch_all("builtin", skip=["libfoo"])
    refused: Dict[str, str] = greenhook.patched_libraries().refused
    live: Dict[str, Any] = greenhook.auto_report()
    slots += len(auto) + len(refused) + len(live)
    return slots + len(mods) + len(listed) + len(restored) + (same is None)


def hubs() -> Optional[Backend]:
    backend: Backend = greenhook.use("builtin")
    greenhook.enable_thread(backend)
    greenhook.disable_thread()
    previous: Dict[str, Any] = greenhook.configure(shutdown_cancelled_sockets=True,
                                                   resolver_threads=8, fair_yield=4)
    counters: Dict[str, Dict[str, int]] = greenhook.stats()
    greenhook.reset_stats()
    assert previous is not None and counters is not None
    return greenhook.current_backend()


def watching() -> float:
    def report(stall: greenhook.Stall) -> None:
        text: str = stall.format()
        late: bool = stall.late
        print(text, late, stall.overloaded, stall.cpu_bound)

    with greenhook.watch(0.05, report=report, hub="builtin") as w:
        stalls: List[greenhook.Stall] = list(w.stalls)
        running: bool = not w.stopped
    w.stop()
    return float(len(stalls)) + running


def errors() -> Optional[int]:
    try:
        greenhook.patch_library("libnothing.so.0")
    except greenhook.LibraryNotLoaded as exc:
        message: str = str(exc)
        print(message)
    except greenhook.MalformedELF as exc:
        return exc.offset
    except greenhook.GreenhookError:
        pass
    version: str = greenhook.__version__
    return len(version)
