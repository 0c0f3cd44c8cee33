"""Host memory: let XLA:CPU reuse its large buffers instead of faulting them in at every call.

XLA:CPU allocates each call's buffers (the packed temporary buffer holding every
intermediate, and the outputs) with the C allocator and frees them when the call or the
array is done. glibc's malloc serves a block above 32 MiB -- and, in the per-thread arenas
that XLA's worker threads use, any block larger than an arena heap (64 MiB) -- with a fresh
``mmap`` and gives it back with ``munmap`` on free. A program whose buffers exceed that size
therefore page-faults all of them in again, zero-filled by the kernel, on every call:
``python benchmarks/host_memory.py`` measures ~100,000 faults and ~280 ms of kernel time per
training step with ``adjoint="direct"`` (409 MB temporary buffer), ~39,000 for the
checkpoint adjoint at 512 tokens.

:func:`reuse_host_memory` changes two glibc malloc parameters with ``mallopt`` so that
freed large blocks stay with the process and are reused: no ``mmap``-served blocks
(``M_MMAP_MAX = 0``: large blocks come from the heap of the allocating thread's arena) and
free memory at the top of a heap returned to the system only beyond ``trim_threshold``
bytes (``M_TRIM_THRESHOLD``). Both are global settings that reach every arena at once, so
the call works at any time (a buffer mapped before it is unmapped once more, then reused).
Costs: the process keeps freed memory, in every thread's arena, so its resident size can
stay at its high-water mark (+3% peak in the benchmark; the setting applies to every
library in the process); a block larger than a thread arena's 64 MiB heap is still served
by ``mmap``. Also forcing one arena (``M_ARENA_MAX = 1``) caught those too but made the
checkpoint-adjoint steps 1.23-1.26x slower (malloc lock contention between XLA's threads;
an earlier run of the same benchmark), so it is not set. Because it is a process-wide
policy, importing odeformer does not apply it: ``python -m experiments.run`` (unless
``--noreuse_host_memory``) and the ``benchmarks/`` scripts call it, and a script can call
it first thing. It has no effect on non-glibc systems (macOS, musl); on a machine with an
accelerator it changes host allocations only (not measured there).
"""

from __future__ import annotations

import ctypes
import platform

# glibc's <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

DEFAULT_TRIM_THRESHOLD = 1 << 30  # bytes of free heap kept before any is returned

_applied: int | None = None  # the trim threshold set by an earlier call in this process


def reuse_host_memory(trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> bool:
    """Makes glibc malloc keep and reuse freed blocks (see the module docstring).

    Call it early; it also takes effect when JAX is already running.

    Args:
      trim_threshold: bytes of free memory at the top of the heap the process keeps
        before returning any to the system; a positive int, at most 2**31 - 1.

    Returns:
      True if the settings are in effect (applied now or by an earlier call with the
      same ``trim_threshold``), False on a system without glibc malloc, where there is
      nothing to change.

    Raises:
      ValueError: for a bad ``trim_threshold``, or one different from an earlier call's.
      RuntimeError: if glibc refuses a setting.
    """
    global _applied
    if isinstance(trim_threshold, bool) or not isinstance(trim_threshold, int) or not (
            0 < trim_threshold < 2**31):
        raise ValueError(f"trim_threshold={trim_threshold!r} must be an int in [1, 2**31 - 1] (bytes)")
    if _applied is not None:
        if trim_threshold != _applied:
            raise ValueError(f"reuse_host_memory was already called with trim_threshold={_applied}; "
                             f"got {trim_threshold}: one process keeps one setting")
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # this process's symbols, glibc's mallopt among them
    for name, param, value in (("M_TRIM_THRESHOLD", _M_TRIM_THRESHOLD, trim_threshold),
                               ("M_MMAP_MAX", _M_MMAP_MAX, 0)):
        if libc.mallopt(param, value) != 1:
            raise RuntimeError(f"glibc mallopt({name}, {value}) failed")
    _applied = trim_threshold
    return True
