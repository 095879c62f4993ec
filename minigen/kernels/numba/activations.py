"""GELU forward and backward, exact (erf) and GPT-2's tanh form, on arrays of any shape.

The tanh form is written with a sigmoid, 0.5 * (1 + tanh(u)) = sigmoid(2u): one exp per element
gives the value, or the value and the derivative in backward, and nothing overflows. The erf form
uses a vectorized erf in float32 and libm's in float64 (the reference calls math.erf per element).
"""
import math

import numpy as np
from numba import njit

from .. import numpy_kernels
from . import FLOAT_DTYPES
from .scalar import FASTMATH, fast_erf, fast_exp, fast_sigmoid

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _gelu_forward(x, tanh_form, y):
    dt = x.dtype.type
    half, one, a = dt(0.5), dt(1.0), dt(0.044715)
    two_c, inv_sqrt2 = dt(2.0 * SQRT_2_OVER_PI), dt(INV_SQRT_2)
    if tanh_form:
        for i in range(x.size):
            v = x[i]
            y[i] = v * fast_sigmoid(two_c * (v + a * v * v * v))
    else:
        for i in range(x.size):
            v = x[i]
            y[i] = half * v * (one + fast_erf(v * inv_sqrt2))


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _gelu_backward(dy, x, tanh_form, dx):
    dt = x.dtype.type
    half, one, a3 = dt(0.5), dt(1.0), dt(3 * 0.044715)
    a, two_c, inv_sqrt2, inv_sqrt_2pi = dt(0.044715), dt(2.0 * SQRT_2_OVER_PI), dt(INV_SQRT_2), dt(INV_SQRT_2PI)
    if tanh_form:
        for i in range(x.size):
            v = x[i]
            s = fast_sigmoid(two_c * (v + a * v * v * v))
            dx[i] = dy[i] * (s + v * s * (one - s) * two_c * (one + a3 * v * v))
    else:
        for i in range(x.size):
            v = x[i]
            cdf = half * (one + fast_erf(v * inv_sqrt2))
            dx[i] = dy[i] * (cdf + v * inv_sqrt_2pi * fast_exp(-half * v * v))


def _check_approximate(approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return approximate == "tanh"


def gelu_forward(x, approximate):
    """GELU; approximate='tanh' is GPT-2's `gelu_new`, 'none' the exact erf form."""
    tanh_form = _check_approximate(approximate)
    if x.dtype not in FLOAT_DTYPES:
        return numpy_kernels.gelu_forward(x, approximate)
    y = np.empty(x.shape, x.dtype)  # not ascontiguousarray's output: that turns a 0-d array into 1-d
    _gelu_forward(np.ascontiguousarray(x).reshape(-1), tanh_form, y.reshape(-1))
    return y


def gelu_backward(dy, x, approximate):
    """dy times the derivative of GELU at x."""
    tanh_form = _check_approximate(approximate)
    if np.result_type(dy, x) not in FLOAT_DTYPES:
        return numpy_kernels.gelu_backward(dy, x, approximate)
    dt = np.result_type(dy, x)
    dx = np.empty(x.shape, dt)
    flat_dy = np.ascontiguousarray(np.broadcast_to(dy, x.shape), dtype=dt).reshape(-1)
    _gelu_backward(flat_dy, np.ascontiguousarray(x, dtype=dt).reshape(-1), tanh_form, dx.reshape(-1))
    return dx
