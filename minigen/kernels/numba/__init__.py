"""Numba twins of the reference kernels in `numpy_kernels.py`, one file per idea.

`minigen.kernels.numba_kernels` re-exports them; every public function there has the signature
of its NumPy reference. Helpers shared by several files live in `scalar.py` (vectorizable exp,
sigmoid, tanh, erf) and `tiles.py` (small matrix products for the tiled attention).

The kernels compile for float32 and float64 only; every wrapper hands other dtypes (integers,
float16) to the NumPy reference, which gives NumPy's answer instead of a Numba typing error.
Compiled kernels are cached next to these files (see `minigen.kernels` for NUMBA_CACHE_DIR). Numba
checks a cached kernel against its own source file only: after editing `scalar.py`, `tiles.py`,
`attention_heads.py` or `activations.py` (whose kernels `blas.py` calls), delete the `__pycache__`
directory here.

Matrix products and the Linear layers (`blas.py`), attention and the AdamW update of a large parameter
split across Numba's threads (`pieces`); small calls stay serial, as a parallel region costs a few
microseconds to start. Inside prange, a piece calls a serial kernel on slices: the same loop written over
an index range of the whole arrays vectorized worse (2.5x slower). The row kernels stay serial: at the
models' sizes splitting them gained little (a small GPT's LayerNorm forward 24 -> 19 us, its backward
slower with per-thread partial sums).
"""
import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

threads = 1  # threads a kernel may split its work across; set by numba_kernels.set_num_threads


def pieces(work, min_work, most):
    """How many pieces a call should run in: 1 (serial, no parallel region) below min_work or on one
    thread, else one per thread, and at most `most` (the number of independent items)."""
    return max(1, min(threads, most)) if work >= min_work else 1

