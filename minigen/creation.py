"""Tensor constructors named as in PyTorch: zeros, ones, randn, rand, arange, full, *_like."""
import numpy as np

from .autograd import DEFAULT_DTYPE, Tensor
from . import random


def _shape(size):
    shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)
    if any(not isinstance(s, (int, np.integer)) or s < 0 for s in shape):
        raise ValueError(f"size must be non-negative integers, got {shape}")
    return shape


def _dtype(dtype):
    return np.dtype(DEFAULT_DTYPE if dtype is None else dtype)


def zeros(*size, dtype=None, requires_grad=False):
    return Tensor(np.zeros(_shape(size), _dtype(dtype)), requires_grad=requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    return Tensor(np.ones(_shape(size), _dtype(dtype)), requires_grad=requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False):
    """A tensor filled with fill_value; its dtype follows the value (bool, int64, float32) as in torch.full."""
    if dtype is None and isinstance(fill_value, (bool, np.bool_)):
        dtype = np.bool_
    elif dtype is None and isinstance(fill_value, (int, np.integer)):
        dtype = np.int64
    return Tensor(np.full(_shape((size,)), fill_value, _dtype(dtype)), requires_grad=requires_grad)


def randn(*size, dtype=None, requires_grad=False):
    """Standard normal samples from the global generator (see manual_seed)."""
    return Tensor(random.generator().standard_normal(_shape(size)).astype(_dtype(dtype)), requires_grad=requires_grad)


def rand(*size, dtype=None, requires_grad=False):
    """Uniform [0, 1) samples from the global generator."""
    return Tensor(random.generator().random(_shape(size)).astype(_dtype(dtype)), requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None):
    """Like torch.arange: int64 for integer arguments, float32 otherwise."""
    if end is None:
        start, end = 0, start
    is_int = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
    default = np.int64 if is_int else DEFAULT_DTYPE
    return Tensor(np.arange(start, end, step, dtype=np.dtype(dtype or default)))


def zeros_like(t, dtype=None, requires_grad=False):
    return Tensor(np.zeros(t.shape, dtype or t.dtype), requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return Tensor(np.ones(t.shape, dtype or t.dtype), requires_grad=requires_grad)
