"""Keep glibc's heap from returning memory to the system between batches.

PyTorch's CPU tensors come from malloc. glibc maps blocks above its mmap threshold (at
most 32 MiB, adapted to the largest block freed so far) straight from the system and
hands them back on free, and it trims the top of the heap back to the system whenever
more than its trim threshold (twice the mmap threshold) lies free there. A scoring or
training loop allocates and frees the same activations every batch, so memory went back
and forth: scoring the nanofibre grid made ~5 million page faults and ~9 s of system
time, 1.35-1.6x slower than with the thresholds raised (benchmarks/score.py). Raising
them in the environment (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) fixed it for
those who knew; ``steady_heap`` does it from the code, once per process. Scoring's
activations stay under the mmap threshold because CPU batches are cut by bytes
(``oneclass.methods.base.CPU_BATCH_BYTES``); the heap then keeps what a batch needs, a
bounded amount, instead of giving it back. It leaves glibc alone where the environment
already tunes malloc (MALLOC_*_ variables, GLIBC_TUNABLES) or ONECLASS_STEADY_HEAP=0
asks it to, and elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 << 20  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 256 << 20  # free memory the heap keeps at its top before trimming


@functools.lru_cache(maxsize=1)
def steady_heap() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True where it did."""
    tuned = [k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"]
    if tuned or os.environ.get("ONECLASS_STEADY_HEAP") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    return all(done)
