"""GELU forward and backward, exact (erf) and GPT-2's tanh form, on arrays of any shape.

The tanh form is written with a sigmoid, 0.5 * (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + exp(-2u)), with
-2u = x * (k1 + k2 * x^2): one exp and one division per element give the value, or the value and the
derivative in backward; nothing overflows (exp(-2u) = inf gives sigmoid 0). The erf form uses a
vectorized erf in float32 and libm's in float64 (the reference calls math.erf per element).
"""
import math

import numpy as np
from numba import njit

from .. import numpy_kernels
from . import FLOAT_DTYPES
from .scalar import FASTMATH, fast_erf, fast_exp

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_CUBIC = 0.044715


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def gelu_flat(x, tanh_form, y):
    """y = gelu(x) on 1-D arrays (the fused Linear + GELU kernels call it on each thread's rows)."""
    dt = x.dtype.type
    half, one, inv_sqrt2 = dt(0.5), dt(1.0), dt(INV_SQRT_2)
    k1, k2 = dt(-2.0 * SQRT_2_OVER_PI), dt(-2.0 * SQRT_2_OVER_PI * GELU_CUBIC)  # -2u = x (k1 + k2 x^2)
    if tanh_form:
        for i in range(x.size):
            v = x[i]
            y[i] = v / (one + fast_exp(v * (k1 + k2 * v * v)))
    else:
        for i in range(x.size):
            v = x[i]
            y[i] = half * v * (one + fast_erf(v * inv_sqrt2))


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def gelu_backward_flat(dy, x, tanh_form, dx):
    """dx = dy * gelu'(x) on 1-D arrays."""
    dt = x.dtype.type
    half, one, inv_sqrt2, inv_sqrt_2pi = dt(0.5), dt(1.0), dt(INV_SQRT_2), dt(INV_SQRT_2PI)
    k1, k2 = dt(-2.0 * SQRT_2_OVER_PI), dt(-2.0 * SQRT_2_OVER_PI * GELU_CUBIC)
    k3, k4 = dt(2.0 * SQRT_2_OVER_PI), dt(2.0 * SQRT_2_OVER_PI * 3.0 * GELU_CUBIC)  # d(2u)/dx = k3 + k4 x^2
    if tanh_form:
        for i in range(x.size):
            v = x[i]
            v2 = v * v
            s = one / (one + fast_exp(v * (k1 + k2 * v2)))
            # d/dx [x sigmoid(2u)] = s + x s (1 - s) d(2u)/dx
            dx[i] = dy[i] * s * (one + v * (k3 + k4 * v2) * (one - s))
    else:
        for i in range(x.size):
            v = x[i]
            cdf = half * (one + fast_erf(v * inv_sqrt2))
            dx[i] = dy[i] * (cdf + v * inv_sqrt_2pi * fast_exp(-half * v * v))


def check_approximate(approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return approximate == "tanh"


def gelu_forward(x, approximate):
    """GELU; approximate='tanh' is GPT-2's `gelu_new`, 'none' the exact erf form."""
    tanh_form = check_approximate(approximate)
    if x.dtype not in FLOAT_DTYPES:
        return numpy_kernels.gelu_forward(x, approximate)
    y = np.empty(x.shape, x.dtype)  # not ascontiguousarray's output: that turns a 0-d array into 1-d
    gelu_flat(np.ascontiguousarray(x).reshape(-1), tanh_form, y.reshape(-1))
    return y


def gelu_backward(dy, x, approximate):
    """dy times the derivative of GELU at x, in x's dtype like the reference."""
    tanh_form = check_approximate(approximate)
    dt = np.result_type(dy, x)
    if dt not in FLOAT_DTYPES:
        return numpy_kernels.gelu_backward(dy, x, approximate)
    dx = np.empty(x.shape, dt)
    if np.shape(dy) != x.shape:  # np.broadcast_to costs microseconds: only when needed
        dy = np.broadcast_to(dy, x.shape)
    flat_dy = np.ascontiguousarray(dy, dtype=dt).reshape(-1)
    gelu_backward_flat(flat_dy, np.ascontiguousarray(x, dtype=dt).reshape(-1), tanh_form, dx.reshape(-1))
    return dx.astype(x.dtype, copy=False)
