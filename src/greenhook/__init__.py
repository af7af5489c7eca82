"""greenhook: make the blocking calls inside native libraries cooperative for greenlets.

Rewrites the GOT slots of shared libraries that are already loaded, so that their ``recv``,
``poll``, ``connect``... land in green hooks that park the calling greenlet on a hub.
"""

__all__ = [
    # patching
    "patch_library",
    "patch_module",
    "unpatch_library",
    "unpatch_all",
    "patched_libraries",
    "PatchReport",
    # auto mode
    "patch_all",
    "auto_report",
    # hubs
    "use",
    "enable_thread",
    "disable_thread",
    "current_backend",
    # seeing it
    "watch",
    "Watch",
    "Stall",
    # options and counters
    "configure",
    "stats",
    "reset_stats",
    # errors
    "GreenhookError",
    "UnsupportedPlatform",
    "LibraryNotFound",
    "LibraryNotLoaded",
    "LibraryUnreadable",
    "NotAnELF",
    "NotARegularFile",
    "MalformedELF",
    "UnsupportedELF",
    "ImportFailed",
    "ModuleNotFound",
    "PatchError",
    "RefusedLibrary",
    "BackendError",
    "InvalidArgument",
]

__version__ = "0.1.0"

# --- errors
from greenhook.exceptions import (
    BackendError,
    GreenhookError,
    ImportFailed,
    InvalidArgument,
    LibraryNotFound,
    LibraryNotLoaded,
    LibraryUnreadable,
    MalformedELF,
    ModuleNotFound,
    NotARegularFile,
    NotAnELF,
    PatchError,
    RefusedLibrary,
    UnsupportedELF,
    UnsupportedPlatform,
)

# --- patching (the compiled core is imported on first use, so that the pure-Python tools,
#     e.g. ``greenhook audit``, work where it is not built)
from greenhook._patch import (
    PatchReport,
    patch_library,
    patch_module,
    patched_libraries,
    unpatch_all,
    unpatch_library,
)

# --- hubs and counters
from greenhook._api import (
    configure,
    current_backend,
    disable_thread,
    enable_thread,
    reset_stats,
    stats,
    use,
)

# --- auto mode: everything loaded, and everything loaded later
from greenhook._auto import auto_report, patch_all

# --- the blocking detector
from greenhook._watch import Stall, Watch, watch
