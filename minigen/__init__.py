"""minigen: a small deep-learning framework on NumPy and Numba for text generation.

    import minigen as mg
    x = mg.randn(3, 4, requires_grad=True)
    (x @ x.T).sum().backward()
"""
import os
import sys

# MINIGEN_NUM_THREADS=N caps every thread pool minigen uses: NumPy's BLAS and the Numba kernels. BLAS reads
# its variable once, when NumPy loads it, so this only takes effect when minigen is imported before NumPy;
# the variables are removed again afterwards so that child processes (a PyTorch baseline, say) keep their
# own defaults. Unset, every library uses all available cores, as PyTorch does.
_blas_vars = ()
if "numpy" not in sys.modules and os.environ.get("MINIGEN_NUM_THREADS", "").strip():
    _blas_vars = [v for v in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if v not in os.environ]
    for _var in _blas_vars:
        os.environ[_var] = os.environ["MINIGEN_NUM_THREADS"].strip()

import numpy as np  # noqa: E402

for _var in _blas_vars:
    del os.environ[_var]

from .allocator import keep_freed_memory  # noqa: E402

keep_freed_memory()

from .autograd import Function, Tensor, detect_anomaly, enable_grad, is_grad_enabled, no_grad, tensor
from . import ops
from . import nn, optim, tokenizers, data, models
from .ops import cat, stack, where
from .creation import arange, full, ones, ones_like, rand, randn, zeros, zeros_like
from .random import manual_seed
from .kernels import get_backend, set_backend

float32, float64, int64 = np.float32, np.float64, np.int64

__version__ = "0.1.0"
