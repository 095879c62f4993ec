"""Adam / AdamW parameter updates in place, one pass over the arrays (PyTorch's formulas).

The reference makes seven passes over every parameter each step; this reads each of param, grad,
exp_avg and exp_avg_sq once and writes three of them once. The float32 loop runs at memory speed once
the four arrays outgrow L2; within L2 the square root and the division, which share one divider unit,
set its pace. A large parameter is updated by all threads, a slice each (the small GPT's optimizer step:
1.2 -> 0.85 ms).
"""
import numpy as np
from numba import njit, prange

from .. import numpy_kernels
from . import FLOAT_DTYPES, pieces
from .scalar import FASTMATH

# Parameters of at least this many elements are updated in one piece per thread.
SPLIT_MIN_SIZE = 2 ** 15


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, amsgrad, lr, beta1, beta2, eps, weight_decay,
               step):
    dt = param.dtype.type
    decay = dt(1.0 - lr * weight_decay)
    take1, keep2, take2 = dt(1.0 - beta1), dt(beta2), dt(1.0 - beta2)
    step_size = dt(lr / (1.0 - beta1 ** step))
    inv_bias2_sqrt = dt(1.0 / (1.0 - beta2 ** step) ** 0.5)
    eps = dt(eps)
    for i in range(param.size):
        g = grad[i]
        m = exp_avg[i] + (g - exp_avg[i]) * take1
        v = exp_avg_sq[i] * keep2 + g * g * take2
        exp_avg[i], exp_avg_sq[i] = m, v
        if amsgrad:
            v = max(max_exp_avg_sq[i], v)
            max_exp_avg_sq[i] = v
        param[i] = param[i] * decay - step_size * m / (np.sqrt(v) * inv_bias2_sqrt + eps)


@njit(cache=True, parallel=True)
def _adam_step_split(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, amsgrad, lr, beta1, beta2, eps,
                     weight_decay, step, chunks):
    """_adam_step on `chunks` slices at once (each element's update is the same as in one serial call)."""
    n = param.size
    for chunk in prange(chunks):
        lo, hi = chunk * n // chunks, (chunk + 1) * n // chunks
        _adam_step(param[lo:hi], grad[lo:hi], exp_avg[lo:hi], exp_avg_sq[lo:hi],
                   max_exp_avg_sq[lo:hi] if amsgrad else max_exp_avg_sq, amsgrad, lr, beta1, beta2, eps,
                   weight_decay, step)


def _update(p, g, m, v, vmax, amsgrad, lr, beta1, beta2, eps, weight_decay, step):
    args = (amsgrad, float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), int(step))
    chunks = pieces(p.size, SPLIT_MIN_SIZE, p.size)
    if chunks > 1:
        _adam_step_split(p, g, m, v, vmax, *args, chunks)
    else:
        _adam_step(p, g, m, v, vmax, *args)


def _flat_views(*arrays):
    """1-D views of arrays that share one shape, one float dtype and C order, else None (no view exists).

    A plain loop: this runs once per parameter per step, and all() over a generator cost more than the
    update of a small parameter."""
    shape, dtype = arrays[0].shape, arrays[0].dtype
    if dtype not in FLOAT_DTYPES:
        return None
    for a in arrays:
        if a.shape != shape or a.dtype != dtype or not a.flags.c_contiguous:
            return None
    return [a.ravel() for a in arrays]


def adamw_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step):
    """One Adam(W) step updating param, exp_avg and exp_avg_sq in place (see the NumPy reference)."""
    flat = _flat_views(param, grad, exp_avg, exp_avg_sq)
    if flat is None:  # an in-place update needs views: the reference handles any layout and dtype
        numpy_kernels.adamw_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step)
        return
    p, g, m, v = flat
    _update(p, g, m, v, v[:0], False, lr, beta1, beta2, eps, weight_decay, step)


def adamw_amsgrad_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
                         step):
    """adamw_update with AMSGrad: the denominator uses the running maximum max_exp_avg_sq, updated in place."""
    flat = _flat_views(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    if flat is None:
        numpy_kernels.adamw_amsgrad_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps,
                                           weight_decay, step)
        return
    p, g, m, v, vmax = flat
    _update(p, g, m, v, vmax, True, lr, beta1, beta2, eps, weight_decay, step)
