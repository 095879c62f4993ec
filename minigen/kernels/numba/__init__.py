"""Numba twins of the reference kernels in `numpy_kernels.py`, one file per idea.

`minigen.kernels.numba_kernels` re-exports them; every public function there has the signature
of its NumPy reference. Helpers shared by several files live in `scalar.py` (vectorizable exp,
sigmoid, tanh) and `tiles.py` (small matrix products for the tiled attention).
"""
