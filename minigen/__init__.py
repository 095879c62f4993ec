"""minigen: a small deep-learning framework on NumPy and Numba for text generation.

    import minigen as mg
    x = mg.randn(3, 4, requires_grad=True)
    (x @ x.T).sum().backward()
"""
import numpy as np

from .autograd import Function, Tensor, detect_anomaly, enable_grad, is_grad_enabled, no_grad, tensor
from . import ops
from . import nn, optim, tokenizers, data, models
from .ops import cat, stack, where
from .creation import arange, full, ones, ones_like, rand, randn, zeros, zeros_like
from .random import manual_seed
from .kernels import get_backend, set_backend
from .process import tune_process

float32, float64, int64 = np.float32, np.float64, np.int64

__version__ = "0.1.0"
