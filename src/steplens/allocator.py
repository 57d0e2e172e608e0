"""Keep freed memory in the process instead of handing it back to the OS after every tensor (glibc).

A forward pass of a video DiT on the CPU allocates and frees tensors of tens of megabytes (attention
scores, MLP activations) many times per step. glibc serves allocations above its mmap threshold with
a fresh `mmap` and returns them with `munmap`, so every such tensor costs page faults and zeroing
again, and trimming returns the heap top to the OS. On the reference model that made sampling
1.25x slower (32 mazes, 20 steps, 2 CPU cores, median of 3 paired fresh-process runs:
`python benchmarks/bench_allocator.py`), and run-to-run times noisier. `keep_freed_memory` raises both thresholds, so freed blocks are reused;
peak resident memory stays within about 10% (the same benchmark reports it).

The CLI, Ray workers and the benchmarks call it; library users may call it once at start-up.
`STEPLENS_MALLOC=default` in the environment turns it off. It does nothing outside glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_state: dict[str, bool] = {}


def keep_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Serve allocations below `limit_bytes` from the heap and keep up to that much freed memory.

    Returns True when the thresholds are set (now or by an earlier call), False where it does not apply
    (not Linux/glibc, or `STEPLENS_MALLOC=default`).
    """
    if _state.get("kept"):
        return True
    if os.environ.get("STEPLENS_MALLOC", "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: musl's mallopt is a no-op that must not be trusted
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    limit = int(min(limit_bytes, 2**31 - 1))
    ok = mallopt(_M_MMAP_THRESHOLD, limit) == 1 and mallopt(_M_TRIM_THRESHOLD, limit) == 1
    _state["kept"] = ok
    return ok


def allocator_state() -> str:
    """'kept' after a successful `keep_freed_memory`, else 'default' (for benchmark reports)."""
    return "kept" if _state.get("kept") else "default"
