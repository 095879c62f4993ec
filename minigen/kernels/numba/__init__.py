"""Numba twins of the reference kernels in `numpy_kernels.py`, one file per idea.

`minigen.kernels.numba_kernels` re-exports them; every public function there has the signature
of its NumPy reference. Helpers shared by several files live in `scalar.py` (vectorizable exp,
sigmoid, tanh, erf) and `tiles.py` (small matrix products for the tiled attention).

The kernels compile for float32 and float64 only; every wrapper hands other dtypes (integers,
float16) to the NumPy reference, which gives NumPy's answer instead of a Numba typing error.
Compiled kernels are cached next to these files (see `minigen.kernels` for NUMBA_CACHE_DIR). Numba
checks a cached kernel against its own source file only: after editing `scalar.py`, `tiles.py` or
`attention_heads.py`, delete the `__pycache__` directory here.

Kernels split large calls across Numba's threads (`chunks`) into pieces whose results do not depend on
how many pieces there are, so one thread or several give the same bits. Small calls stay serial: a
parallel region costs a few microseconds to start.
"""
import numpy as np
from numba import njit

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

threads = 1  # threads a kernel may split its work across; set by numba_kernels.set_num_threads


def pieces(work, min_work, most):
    """How many pieces a call should run in: 1 (serial, no parallel region) below min_work or on one
    thread, else one per thread, and at most `most` (the number of independent items)."""
    return max(1, min(threads, most)) if work >= min_work else 1


@njit(inline="always")
def span(piece, count, n):
    """Bounds (start, stop) of piece `piece` of `count` over range(n), cut at multiples of 16 elements so
    that every piece's vector loop starts on a whole vector."""
    start = piece * n // count // 16 * 16 if piece else 0
    stop = (piece + 1) * n // count // 16 * 16 if piece < count - 1 else n
    return start, stop
