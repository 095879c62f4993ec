"""Reductions over axes: sum, mean, var, amax."""
import math

import numpy as np

from ..autograd import Function


def normalize_axes(dim, ndim):
    """dim (None, int or tuple) -> a tuple of non-negative axes, checked against ndim."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"dim {d} out of range for a tensor with {ndim} dimensions")
        out.append(int(d) % max(ndim, 1))
    return tuple(sorted(set(out))) if ndim else ()


def _expand_back(grad, shape, axes, keepdim):
    """Reshape a reduced gradient so that it broadcasts against the input of `shape`."""
    if not keepdim:
        grad = np.expand_dims(grad, axes) if axes else grad
    return np.broadcast_to(grad, shape)


class Sum(Function):
    def forward(self, a, dim=None, keepdim=False):
        self.shape, self.axes, self.keepdim = a.shape, normalize_axes(dim, a.ndim), keepdim
        return np.asarray(a.sum(axis=self.axes, keepdims=keepdim))

    def backward(self, grad):
        return (_expand_back(grad, self.shape, self.axes, self.keepdim),)


class Mean(Function):
    def forward(self, a, dim=None, keepdim=False):
        self.shape, self.axes, self.keepdim = a.shape, normalize_axes(dim, a.ndim), keepdim
        self.count = max(1, math.prod([a.shape[i] for i in self.axes]))
        return np.asarray(a.mean(axis=self.axes, keepdims=keepdim))

    def backward(self, grad):
        return (_expand_back(grad / self.count, self.shape, self.axes, self.keepdim),)


class Var(Function):
    """Variance with Bessel's correction by default (correction=1), as torch.var."""

    def forward(self, a, dim=None, keepdim=False, correction=1):
        self.shape, self.axes, self.keepdim = a.shape, normalize_axes(dim, a.ndim), keepdim
        n = math.prod([a.shape[i] for i in self.axes])
        self.denom = max(n - correction, 0)
        self.centered = a - a.mean(axis=self.axes, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray((self.centered ** 2).sum(axis=self.axes, keepdims=keepdim) / self.denom)

    def backward(self, grad):
        g = _expand_back(grad, self.shape, self.axes, self.keepdim)
        return (g * 2 * self.centered / self.denom,)


class Amax(Function):
    """Maximum over axes; ties share the gradient equally, as in PyTorch's amax."""

    def forward(self, a, dim=None, keepdim=False):
        self.shape, self.axes, self.keepdim = a.shape, normalize_axes(dim, a.ndim), keepdim
        if a.size == 0:
            raise ValueError(f"amax of an empty tensor of shape {a.shape}")
        out = a.max(axis=self.axes, keepdims=True)
        self.mask = (a == out).astype(a.dtype)
        self.mask /= self.mask.sum(axis=self.axes, keepdims=True)
        return out if keepdim else np.squeeze(out, axis=self.axes)

    def backward(self, grad):
        return (_expand_back(grad, self.shape, self.axes, self.keepdim) * self.mask,)
