"""Row-wise kernels on 2-D (rows, features) arrays: LayerNorm, softmax, log_softmax, cross-entropy.

NumPy spends most of these in temporaries (x - mean, exp, the division...). Here each row is read
two or three times from L1 and written once. The public functions are thin wrappers with the
reference signatures: they make inputs contiguous, fix one dtype and allocate outputs, so each @njit
core compiles only for float32 and float64. Accumulators have the input's dtype (`row.dtype.type(0)`)
and means multiply by `dtype(1 / f)`: a float64 literal, or a division by the integer f, would silently
promote a float32 loop to float64.
"""
import math

import numpy as np
from numba import njit

from .. import numpy_kernels
from . import FLOAT_DTYPES
from .scalar import FASTMATH, fast_exp, max_of


def _rows(x, dtype=None):
    """x as a C-contiguous array of its own dtype, or of `dtype` when given."""
    return np.ascontiguousarray(x, dtype=dtype if dtype is not None else x.dtype)


# ----- LayerNorm ----------------------------------------------------------------------------------
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _layer_norm_forward(x, weight, bias, eps, y, mean, rstd):
    n, f = x.shape
    dt = x.dtype.type
    inv_f = dt(1.0 / f)  # `/ f` would make a float64: the row loops would then run in float64
    for i in range(n):
        row = x[i]
        s = dt(0)
        for j in range(f):
            s += row[j]
        m = s * inv_f
        ss = dt(0)
        for j in range(f):  # a second pass: the centred sum of squares keeps its precision for any mean
            d = row[j] - m
            ss += d * d
        r = dt(1.0 / math.sqrt(ss * inv_f + eps))
        out = y[i]
        for j in range(f):
            out[j] = (row[j] - m) * r * weight[j] + bias[j]
        mean[i] = m
        rstd[i] = r


def layer_norm_forward(x, weight, bias, eps):
    """LayerNorm over the last axis of x (rows, features); returns (y, mean, rstd) like the reference."""
    if x.dtype not in FLOAT_DTYPES:
        return numpy_kernels.layer_norm_forward(x, weight, bias, eps)
    x = _rows(x)
    n, f = x.shape
    w = np.ones(f, x.dtype) if weight is None else _rows(weight, x.dtype)
    b = np.zeros(f, x.dtype) if bias is None else _rows(bias, x.dtype)
    y, mean, rstd = np.empty_like(x), np.empty(n, x.dtype), np.empty(n, x.dtype)
    _layer_norm_forward(x, w, b, float(eps), y, mean, rstd)
    return y, mean, rstd


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _layer_norm_backward(dy, x, weight, mean, rstd, dx, dw, db):
    n, f = x.shape
    dt = x.dtype.type
    inv_f = dt(1.0 / f)
    dw[:] = dt(0)
    db[:] = dt(0)
    for i in range(n):
        g_row, x_row, m, r = dy[i], x[i], mean[i], rstd[i]
        sum_g = dt(0)
        sum_gx = dt(0)
        for j in range(f):
            xhat = (x_row[j] - m) * r
            g = g_row[j] * weight[j]
            sum_g += g
            sum_gx += g * xhat
            dw[j] += g_row[j] * xhat
            db[j] += g_row[j]
        mean_g = sum_g * inv_f
        mean_gx = sum_gx * inv_f
        out = dx[i]
        for j in range(f):
            xhat = (x_row[j] - m) * r
            out[j] = r * (g_row[j] * weight[j] - mean_g - xhat * mean_gx)


def layer_norm_backward(dy, x, weight, mean, rstd):
    """Gradients (dx, dweight, dbias) of layer_norm_forward; dweight is None when weight is None."""
    if x.dtype not in FLOAT_DTYPES:
        return numpy_kernels.layer_norm_backward(dy, x, weight, mean, rstd)
    x = _rows(x)
    dt = x.dtype
    n, f = x.shape
    w = np.ones(f, dt) if weight is None else _rows(weight, dt)
    dx, dw, db = np.empty_like(x), np.empty(f, dt), np.empty(f, dt)
    _layer_norm_backward(_rows(dy, dt), x, w, _rows(mean, dt), _rows(rstd, dt), dx, dw, db)
    return dx, (dw if weight is not None else None), db


# ----- softmax and log_softmax --------------------------------------------------------------------
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _softmax_forward(x, y, log):
    n, f = x.shape
    if f == 0:
        return
    for i in range(n):
        row, out = x[i], y[i]
        m = max_of(row, f, row[0])
        s = x.dtype.type(0)
        if log:
            for j in range(f):
                shifted = row[j] - m
                out[j] = shifted
                s += fast_exp(shifted)
            log_s = x.dtype.type(math.log(s))
            # a second pass: in one expression 'reassoc' would turn (row - m) - log_s into
            # row - (m + log_s), which loses log_s next to a large m
            for j in range(f):
                out[j] -= log_s
        else:
            for j in range(f):
                e = fast_exp(row[j] - m)
                out[j] = e
                s += e
            inv = x.dtype.type(1) / s
            for j in range(f):
                out[j] *= inv


def softmax_forward(x):
    """Softmax over the last axis of a 2-D array."""
    if x.dtype not in FLOAT_DTYPES:
        return numpy_kernels.softmax_forward(x)
    x = _rows(x)
    y = np.empty_like(x)
    _softmax_forward(x, y, False)
    return y


def log_softmax_forward(x):
    """log_softmax over the last axis of a 2-D array."""
    if x.dtype not in FLOAT_DTYPES:
        return numpy_kernels.log_softmax_forward(x)
    x = _rows(x)
    y = np.empty_like(x)
    _softmax_forward(x, y, True)
    return y


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _softmax_backward(dy, y, dx, log):
    n, f = y.shape
    for i in range(n):
        g, p, out = dy[i], y[i], dx[i]
        s = y.dtype.type(0)
        if log:
            for j in range(f):
                s += g[j]
            for j in range(f):
                out[j] = g[j] - fast_exp(p[j]) * s
        else:
            for j in range(f):
                s += g[j] * p[j]
            for j in range(f):
                out[j] = p[j] * (g[j] - s)


def _softmax_like_backward(dy, y, log):
    dt = np.result_type(dy, y)
    if dt not in FLOAT_DTYPES:
        return (numpy_kernels.log_softmax_backward if log else numpy_kernels.softmax_backward)(dy, y)
    y = _rows(y, dt)
    dx = np.empty_like(y)
    _softmax_backward(_rows(dy, dt), y, dx, log)
    return dx


def softmax_backward(dy, y):
    """Gradient of softmax given its output y."""
    return _softmax_like_backward(dy, y, False)


def log_softmax_backward(dy, y):
    """Gradient of log_softmax given its output y."""
    return _softmax_like_backward(dy, y, True)


# ----- softmax + cross-entropy --------------------------------------------------------------------
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _check_targets(target, ignore_index, classes):
    """The first row whose target is neither ignore_index nor a class, or -1."""
    for i in range(target.shape[0]):
        t = target[i]
        if t != ignore_index and (t < 0 or t >= classes):
            return i
    return -1


def _targets(target, ignore_index, classes, name):
    target = np.ascontiguousarray(target, dtype=np.int64)
    bad = _check_targets(target, ignore_index, classes)
    if bad >= 0:
        raise IndexError(f"{name}: target[{bad}] = {target[bad]} is out of range for {classes} classes "
                         f"(expected 0..{classes - 1} or ignore_index={ignore_index})")
    return target


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _cross_entropy_forward(logits, target, ignore_index, label_smoothing, losses, lse):
    n, c = logits.shape
    zero = logits.dtype.type(0)
    for i in range(n):
        row = logits[i]
        m = max_of(row, c, row[0])
        s = zero
        total = zero
        for j in range(c):
            s += fast_exp(row[j] - m)
            total += row[j]
        row_lse = m + math.log(s)
        lse[i] = row_lse
        t = target[i]
        if t == ignore_index:
            losses[i] = zero
        else:
            nll = row_lse - row[t]
            if label_smoothing > 0.0:
                nll = (1.0 - label_smoothing) * nll + label_smoothing * (row_lse - total / c)
            losses[i] = nll


def cross_entropy_forward(logits, target, ignore_index, label_smoothing):
    """Per-row losses (0 where ignored) and the row log-sum-exp, for logits (N, C) and target (N,)."""
    if logits.dtype not in FLOAT_DTYPES:
        return numpy_kernels.cross_entropy_forward(logits, target, ignore_index, label_smoothing)
    logits = _rows(logits)
    n, c = logits.shape
    if c == 0:
        raise ValueError(f"cross_entropy_forward: logits of shape {logits.shape} have no classes")
    target = _targets(target, ignore_index, c, "cross_entropy_forward")
    losses, lse = np.empty(n, logits.dtype), np.empty(n, logits.dtype)
    _cross_entropy_forward(logits, target, int(ignore_index), float(label_smoothing), losses, lse)
    return losses, lse


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _cross_entropy_backward(logits, target, lse, row_scale, ignore_index, label_smoothing, grad):
    n, c = logits.shape
    dt = logits.dtype.type
    smooth = dt(label_smoothing / c)
    hit = dt(1.0 - label_smoothing)
    for i in range(n):
        out = grad[i]
        t = target[i]
        if t == ignore_index:
            out[:] = dt(0)
            continue
        row, shift, scale = logits[i], lse[i], row_scale[i]
        for j in range(c):
            out[j] = (fast_exp(row[j] - shift) - smooth) * scale
        out[t] -= hit * scale


def cross_entropy_backward(logits, target, lse, row_scale, ignore_index, label_smoothing):
    """d(sum_i row_scale[i] * loss_i) / d logits; ignored rows get 0."""
    if logits.dtype not in FLOAT_DTYPES:
        return numpy_kernels.cross_entropy_backward(logits, target, lse, row_scale, ignore_index, label_smoothing)
    logits = _rows(logits)
    dt = logits.dtype
    n, c = logits.shape
    target = _targets(target, ignore_index, c, "cross_entropy_backward")
    row_scale = np.asarray(row_scale, dtype=dt)
    if row_scale.shape != (n,):  # np.broadcast_to costs microseconds: only when needed
        row_scale = np.broadcast_to(row_scale, (n,))
    grad = np.empty_like(logits)
    _cross_entropy_backward(logits, target, _rows(lse, dt), _rows(row_scale), int(ignore_index),
                            float(label_smoothing), grad)
    return grad
