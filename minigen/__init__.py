"""minigen: a small deep-learning framework on NumPy and Numba for text generation.

    import minigen as mg
    x = mg.randn(3, 4, requires_grad=True)
    (x @ x.T).sum().backward()
"""
import os
import sys

# Small models make many small matrix products, for which OpenBLAS's thread pool costs more than it
# gains and, on a busy 2-core machine, stalls (measured: a small-GPT step 63 ms with one thread, 206 ms
# with two). So BLAS gets MINIGEN_NUM_THREADS threads (default 1) unless the user set its own variable;
# this only takes effect when minigen is imported before NumPy.
if "numpy" not in sys.modules:
    for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, os.environ.get("MINIGEN_NUM_THREADS", "1"))

import numpy as np  # noqa: E402

from .autograd import Function, Tensor, detect_anomaly, enable_grad, is_grad_enabled, no_grad, tensor
from . import ops
from . import nn, optim, tokenizers, data, models
from .ops import cat, stack, where
from .creation import arange, full, ones, ones_like, rand, randn, zeros, zeros_like
from .random import manual_seed
from .kernels import get_backend, set_backend

float32, float64, int64 = np.float32, np.float64, np.int64

__version__ = "0.1.0"
