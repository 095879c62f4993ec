"""Fused ops with hand-written backward: softmax, log_softmax, cross_entropy, layer_norm, embedding.

Each works on 2-D (rows, features) arrays and calls a kernel, so the NumPy and Numba backends share them. The
reference of each, `kernels.<name>`, is the function of that name in minigen/kernels/numpy_kernels.py."""
import math

import numpy as np

from ..autograd import Function
from .. import kernels


class _RowOp:
    """Moves `dim` last and flattens the other axes into rows, and back."""

    def __init__(self, shape, dim):
        if not -len(shape) <= dim < len(shape):
            raise IndexError(f"dim {dim} out of range for a tensor of shape {shape}")
        self.dim = dim % len(shape)
        self.moved_shape = tuple(s for i, s in enumerate(shape) if i != self.dim) + (shape[self.dim],)

    def rows(self, a):
        return np.ascontiguousarray(np.moveaxis(a, self.dim, -1)).reshape(-1, self.moved_shape[-1])

    def unrows(self, r):
        return np.moveaxis(r.reshape(self.moved_shape), -1, self.dim)


class Softmax(Function):
    def forward(self, a, dim=-1):
        if a.ndim == 0:
            return np.ones_like(a)
        self.layout = _RowOp(a.shape, dim)
        self.y = kernels.softmax_forward(self.layout.rows(a))
        return self.layout.unrows(self.y)

    def backward(self, grad):
        if grad.ndim == 0:
            return (np.zeros_like(grad),)
        return (self.layout.unrows(kernels.softmax_backward(self.layout.rows(grad), self.y)),)


class LogSoftmax(Function):
    def forward(self, a, dim=-1):
        if a.ndim == 0:
            return np.zeros_like(a)
        self.layout = _RowOp(a.shape, dim)
        self.y = kernels.log_softmax_forward(self.layout.rows(a))
        return self.layout.unrows(self.y)

    def backward(self, grad):
        if grad.ndim == 0:
            return (np.zeros_like(grad),)
        return (self.layout.unrows(kernels.log_softmax_backward(self.layout.rows(grad), self.y)),)


class CrossEntropy(Function):
    """Softmax + negative log-likelihood on logits (N, C) and integer targets (N,).

    reduction 'mean' divides by the number of non-ignored targets, as PyTorch does."""

    def forward(self, logits, target, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        self.logits, self.target = logits, target
        self.ignore_index, self.smoothing, self.reduction = ignore_index, float(label_smoothing), reduction
        losses, self.lse = kernels.cross_entropy_forward(logits, target, ignore_index, self.smoothing)
        if reduction == "none":
            return losses
        total = losses.sum(dtype=np.float64)
        if reduction == "sum":
            return np.asarray(total, dtype=logits.dtype)
        self.count = int((target != ignore_index).sum())
        return np.asarray(total / self.count if self.count else np.nan, dtype=logits.dtype)

    def backward(self, grad):
        n = len(self.target)
        if self.reduction == "none":
            scale = grad
        elif self.reduction == "sum":
            scale = np.full(n, grad, dtype=self.logits.dtype)
        else:
            scale = np.full(n, grad / max(self.count, 1), dtype=self.logits.dtype)
        g = kernels.cross_entropy_backward(self.logits, self.target, self.lse, scale.astype(self.logits.dtype),
                                           self.ignore_index, self.smoothing)
        return g, None


class LayerNorm(Function):
    """Normalise over the trailing `n` dims, then scale and shift (weight, bias optional)."""

    def forward(self, x, weight=None, bias=None, eps=1e-5, n=1):
        feat = math.prod(x.shape[x.ndim - n:])
        self.x_shape = x.shape
        self.x = np.ascontiguousarray(x).reshape(-1, feat)
        self.weight = None if weight is None else weight.reshape(-1)
        b = None if bias is None else bias.reshape(-1)
        self.w_shape = None if weight is None else weight.shape
        self.b_shape = None if bias is None else bias.shape
        y, self.mean, self.rstd = kernels.layer_norm_forward(self.x, self.weight, b, eps)
        return y.reshape(x.shape)

    def backward(self, grad):
        dy = np.ascontiguousarray(grad).reshape(self.x.shape)
        dx, dw, db = kernels.layer_norm_backward(dy, self.x, self.weight, self.mean, self.rstd)
        return (dx.reshape(self.x_shape),
                None if self.w_shape is None else dw.reshape(self.w_shape),
                None if self.b_shape is None else db.reshape(self.b_shape))


class Embedding(Function):
    """Row lookup weight[ids]; the backward scatter-adds so repeated ids accumulate."""

    def forward(self, weight, ids, padding_idx=None):
        self.ids, self.num, self.padding_idx = ids, weight.shape[0], padding_idx
        return weight[ids]

    def backward(self, grad):
        flat_ids = self.ids.reshape(-1)
        dw = kernels.embedding_backward(flat_ids, np.ascontiguousarray(grad).reshape(len(flat_ids), -1), self.num)
        if self.padding_idx is not None:
            dw[self.padding_idx] = 0
        return dw, None
