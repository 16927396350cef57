"""Keep glibc's malloc from returning a CPU forward pass's activations to the OS after every batch.

glibc serves each block larger than its mmap threshold (adaptive, at most 32 MiB by default) with
a fresh ``mmap`` and unmaps it on ``free``; freed memory at the top of the heap is trimmed back to
the OS as well. A CNN at batch 64 allocates activations of that size in every layer, so every
forward pass page-faults them in again. On this project's 2-core machine the demo models took
1.0-1.6 ms an image with glibc's defaults and 0.55-0.6 ms with both thresholds raised; the demo
grid went from 115 s to 79 s, its peak RSS from 835 to 924 MB, with identical numbers
(docs/performance.md). PyTorch's CPU tuning guide makes the same point with jemalloc or tcmalloc;
this needs no preload.

``tune_cpu_allocator("tuned")`` raises both thresholds once per process; ``"system"`` leaves
malloc as it is. Only glibc has ``mallopt``: elsewhere (macOS, musl) nothing changes and the
result says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache

ALLOCATORS = ("tuned", "system")

# Large enough for the activations of a batch of 64 at 512 x 512; freed blocks up to this size
# stay in the heap for the next batch. Both thresholds: raising only the mmap one leaves the
# trim threshold at 128 KiB, and the top of the heap would still go back after every batch.
THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_cpu_allocator(mode: str) -> str:
    """Apply ``mode`` (one of :data:`ALLOCATORS`) to this process; returns what is in effect."""
    if mode not in ALLOCATORS:
        raise ValueError(f"cpu allocator must be one of {', '.join(ALLOCATORS)}, got {mode!r}")
    if mode == "system":
        return _state.get("applied", "system malloc")
    return _raise_thresholds()


_state: dict[str, str] = {}


@cache
def _raise_thresholds() -> str:
    libc = _glibc()
    if libc is None:
        return "system malloc (not glibc: no mallopt)"
    done = libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, THRESHOLD)
    if not done:  # glibc before 2.26 refuses an mmap threshold above 32 MiB
        done = libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
        if not done:
            return "system malloc (mallopt refused)"
        _state["applied"] = "glibc malloc, mmap threshold 32 MiB, trim threshold 64 MiB"
    else:
        _state["applied"] = f"glibc malloc, mmap and trim thresholds {THRESHOLD >> 20} MiB"
    return _state["applied"]


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc
