"""Numba twins of the reference kernels in `numpy_kernels.py`, one file per idea.

`minigen.kernels.numba_kernels` re-exports them; every public function there has the signature
of its NumPy reference. Helpers shared by several files live in `scalar.py` (vectorizable exp,
sigmoid, tanh, erf) and `tiles.py` (small matrix products for the tiled attention).

The kernels compile for float32 and float64 only; every wrapper hands other dtypes (integers,
float16) to the NumPy reference, which gives NumPy's answer instead of a Numba typing error.
Compiled kernels are cached next to these files (see `minigen.kernels` for NUMBA_CACHE_DIR). Numba
checks a cached kernel against its own source file only: after editing `scalar.py`, `tiles.py` or
`attention_heads.py`, delete the `__pycache__` directory here.
"""
import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
