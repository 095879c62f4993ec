"""Pure-NumPy reference kernels.

Every kernel here works on NumPy arrays only (no Tensors) and has a Numba twin with the same
signature in `numba_kernels.py`; `minigen.kernels` dispatches to one of them by backend.
Tests check each Numba kernel against the function of the same name here.
"""
import math

import numpy as np

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


# ----- LayerNorm over the last axis of a 2-D array (rows, features) ------------------------
def layer_norm_forward(x, weight, bias, eps):
    """Return (y, mean, rstd); weight/bias may be None. Statistics are kept for backward."""
    mean = x.mean(axis=1)
    xc = x - mean[:, None]
    var = (xc * xc).mean(axis=1)
    rstd = 1.0 / np.sqrt(var + eps)
    y = xc * rstd[:, None]
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype, copy=False), mean.astype(x.dtype), rstd.astype(x.dtype)


def layer_norm_backward(dy, x, weight, mean, rstd):
    """Return (dx, dweight, dbias) with dweight/dbias None when weight is None."""
    xhat = (x - mean[:, None]) * rstd[:, None]
    dw = (dy * xhat).sum(axis=0) if weight is not None else None
    db = dy.sum(axis=0)
    g = dy * weight if weight is not None else dy
    n = x.shape[1]
    dx = rstd[:, None] * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).sum(axis=1, keepdims=True) / n)
    return dx.astype(x.dtype, copy=False), dw, db


# ----- softmax / log_softmax over the last axis of a 2-D array -----------------------------
def softmax_forward(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(dy, y):
    return y * (dy - (dy * y).sum(axis=1, keepdims=True))


def log_softmax_forward(x):
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def log_softmax_backward(dy, y):
    return dy - np.exp(y) * dy.sum(axis=1, keepdims=True)


# ----- softmax + cross-entropy, fused -------------------------------------------------------
def cross_entropy_forward(logits, target, ignore_index, label_smoothing):
    """Per-row losses (0 where ignored) and the row log-sum-exp, for logits (N, C), target (N,)."""
    m = logits.max(axis=1)
    lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    nll = lse - logits[np.arange(len(target)), safe]
    if label_smoothing > 0.0:
        smooth = lse - logits.mean(axis=1)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    return np.where(valid, nll, 0.0).astype(logits.dtype), lse.astype(logits.dtype)


def cross_entropy_backward(logits, target, lse, row_scale, ignore_index, label_smoothing):
    """d(sum_i row_scale[i] * loss_i)/d logits; row_scale is 0 for ignored rows."""
    p = np.exp(logits - lse[:, None])
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    p[np.arange(len(target)), safe] -= 1.0 - label_smoothing
    if label_smoothing > 0.0:
        p -= label_smoothing / logits.shape[1]
    return (p * (row_scale * valid)[:, None]).astype(logits.dtype, copy=False)


# ----- GELU ---------------------------------------------------------------------------------
def _erf(x):
    from math import erf
    return np.vectorize(erf, otypes=[np.float64])(x)


def gelu_forward(x, approximate):
    """GELU; approximate='tanh' is GPT-2's `gelu_new`, 'none' the exact erf form."""
    if approximate == "tanh":
        inner = SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)
        return (0.5 * x * (1.0 + np.tanh(inner))).astype(x.dtype, copy=False)
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(x.dtype, copy=False)


def gelu_backward(dy, x, approximate):
    if approximate == "tanh":
        inner = SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)
        t = np.tanh(inner)
        d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
    else:
        cdf = 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        d = cdf + x * pdf
    return (dy * d).astype(x.dtype, copy=False)


# ----- embedding ------------------------------------------------------------------------------
def embedding_backward(ids, dy, num_embeddings):
    """Scatter-add rows of dy (N, D) into a (num_embeddings, D) gradient; repeated ids accumulate."""
    dw = np.zeros((num_embeddings, dy.shape[1]), dtype=dy.dtype)
    np.add.at(dw, ids, dy)
    return dw
