"""Numba twins of the reference kernels in `numpy_kernels.py`, one file per idea.

`minigen.kernels.numba_kernels` re-exports them; every public function there has the signature
of its NumPy reference. Helpers shared by several files live in `scalar.py` (vectorizable exp,
sigmoid, tanh, erf) and `tiles.py` (small matrix products for the tiled attention).

The kernels compile for float32 and float64 only; every wrapper hands other dtypes (integers,
float16) to the NumPy reference, which gives NumPy's answer instead of a Numba typing error.
Compiled kernels are cached next to these files (see `minigen.kernels` for NUMBA_CACHE_DIR). Numba
checks a cached kernel against its own source file only: after editing `scalar.py`, `tiles.py` or
`attention_heads.py`, delete the `__pycache__` directory here.

Matrix products (`blas.py`) and attention split large calls across Numba's threads (`pieces`), into
pieces that compute what one serial call would; small calls stay serial, as a parallel
region costs a few microseconds to start. The elementwise and row kernels stay serial: split the same
way (2x faster alone), they made training steps slower, the small GPT's and the medium one's alike.
"""
import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

threads = 1  # threads a kernel may split its work across; set by numba_kernels.set_num_threads


def pieces(work, min_work, most):
    """How many pieces a call should run in: 1 (serial, no parallel region) below min_work or on one
    thread, else one per thread, and at most `most` (the number of independent items)."""
    return max(1, min(threads, most)) if work >= min_work else 1

