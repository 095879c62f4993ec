"""Differentiable ops, and the Tensor methods and operators that call them.

The methods are attached to Tensor here so that autograd.py holds only the engine."""
import numpy as np

from ..autograd import Tensor, as_tensor
from .elementwise import (Abs, Add, Cast, Div, Dropout, Exp, Gelu, Log, MaskedFill, Mul, Neg, Pow, Relu, Sigmoid,
                          Sqrt, Sub, Tanh, Where)
from .fused import CrossEntropy, Embedding, LayerNorm, LogSoftmax, Softmax
from .matmul import Linear, LinearGelu, MatMul
from .attention import ScaledDotProductAttention
from .decoder import BahdanauDecoder
from .rnn import Recurrence
from .reduce import Amax, Mean, Sum, Var
from .shape import Cat, Contiguous, Expand, GetItem, Permute, Reshape, Stack, check_dim


def _binary(op, reflected=False):
    def method(self, other):
        other = as_tensor(other, like=self)
        return op.apply(other, self) if reflected else op.apply(self, other)
    return method


def _compare(ufunc):
    def method(self, other):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(ufunc(self.data, other))
    return method


def _shape_args(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def _index(index):
    """Turn Tensors inside an index into arrays."""
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index.data if isinstance(index, Tensor) else index


def _max(self, dim=None, keepdim=False):
    if dim is None:
        return Amax.apply(self)
    values = Amax.apply(self, dim=dim, keepdim=keepdim)
    return values, Tensor._wrap(np.argmax(self.data, axis=dim, keepdims=keepdim))


def _transpose(self, d0=-2, d1=-1):
    d0, d1 = check_dim("transpose", d0, self.ndim), check_dim("transpose", d1, self.ndim)
    dims = list(range(self.ndim))
    if dims:  # a 0-d tensor transposes to itself
        dims[d0], dims[d1] = dims[d1], dims[d0]
    return Permute.apply(self, dims=tuple(dims))


def _squeeze(self, dim=None):
    if dim is None:
        shape = tuple(s for s in self.shape if s != 1)
    else:
        d = check_dim("squeeze", dim, self.ndim)
        shape = self.shape[:d] + self.shape[d + 1:] if self.ndim and self.shape[d] == 1 else self.shape
    return Reshape.apply(self, shape=shape)


def _unsqueeze(self, dim):
    d = check_dim("unsqueeze", dim, self.ndim, new_axis=True)
    return Reshape.apply(self, shape=self.shape[:d] + (1,) + self.shape[d:])


def _flatten(self, start_dim=0, end_dim=-1):
    s, e = check_dim("flatten", start_dim, self.ndim), check_dim("flatten", end_dim, self.ndim)
    if self.ndim == 0:
        return Reshape.apply(self, shape=(1,))
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} "
                         f"for a tensor with {self.ndim} dimensions")
    return Reshape.apply(self, shape=self.shape[:s] + (-1,) + self.shape[e + 1:])


def _masked_fill(self, mask, value):
    mask = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
    try:
        np.broadcast_shapes(mask.shape, self.shape)
    except ValueError:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast to {self.shape}") from None
    return MaskedFill.apply(self, mask, value)


_METHODS = {
    "__add__": _binary(Add), "__radd__": _binary(Add, True),
    "__sub__": _binary(Sub), "__rsub__": _binary(Sub, True),
    "__mul__": _binary(Mul), "__rmul__": _binary(Mul, True),
    "__truediv__": _binary(Div), "__rtruediv__": _binary(Div, True),
    "__pow__": _binary(Pow), "__rpow__": _binary(Pow, True),
    "__matmul__": _binary(MatMul), "__rmatmul__": _binary(MatMul, True),
    "__neg__": lambda self: Neg.apply(self),
    "__lt__": _compare(np.less), "__le__": _compare(np.less_equal),
    "__gt__": _compare(np.greater), "__ge__": _compare(np.greater_equal),
    "eq": _compare(np.equal), "ne": _compare(np.not_equal),
    "__getitem__": lambda self, index: GetItem.apply(self, _index(index)),
    "exp": lambda self: Exp.apply(self),
    "log": lambda self: Log.apply(self),
    "tanh": lambda self: Tanh.apply(self),
    "sigmoid": lambda self: Sigmoid.apply(self),
    "relu": lambda self: Relu.apply(self),
    "sqrt": lambda self: Sqrt.apply(self),
    "abs": lambda self: Abs.apply(self),
    "matmul": lambda self, other: MatMul.apply(self, as_tensor(other, like=self)),
    "sum": lambda self, dim=None, keepdim=False: Sum.apply(self, dim=dim, keepdim=keepdim),
    "mean": lambda self, dim=None, keepdim=False: Mean.apply(self, dim=dim, keepdim=keepdim),
    "var": lambda self, dim=None, keepdim=False, correction=1, unbiased=None: Var.apply(
        self, dim=dim, keepdim=keepdim, correction=correction if unbiased is None else int(unbiased)),
    "amax": lambda self, dim=None, keepdim=False: Amax.apply(self, dim=dim, keepdim=keepdim),
    "max": _max,
    "min": lambda self, dim=None, keepdim=False: (
        -Amax.apply(-self) if dim is None else (-Amax.apply(-self, dim=dim, keepdim=keepdim),
                                                Tensor._wrap(np.argmin(self.data, axis=dim, keepdims=keepdim)))),
    "argmax": lambda self, dim=None, keepdim=False: Tensor._wrap(np.argmax(self.data, axis=dim, keepdims=keepdim)),
    "reshape": lambda self, *shape: Reshape.apply(self, shape=_shape_args(shape)),
    "view": lambda self, *shape: Reshape.apply(self, shape=_shape_args(shape)),
    "contiguous": lambda self: self if self.data.flags.c_contiguous else Contiguous.apply(self),
    "transpose": _transpose,
    "permute": lambda self, *dims: Permute.apply(self, dims=_shape_args(dims)),
    "expand": lambda self, *shape: Expand.apply(self, shape=_shape_args(shape)),
    "unsqueeze": _unsqueeze,
    "squeeze": _squeeze,
    "flatten": _flatten,
    "masked_fill": _masked_fill,
    "softmax": lambda self, dim=-1: Softmax.apply(self, dim=dim),
    "log_softmax": lambda self, dim=-1: LogSoftmax.apply(self, dim=dim),
}
for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)
Tensor.__hash__ = object.__hash__
Tensor.__eq__ = lambda self, other: _compare(np.equal)(self, other)
Tensor.__ne__ = lambda self, other: _compare(np.not_equal)(self, other)


def cat(tensors, dim=0):
    """Concatenate tensors along an existing dim (torch.cat)."""
    return Cat.apply(*[as_tensor(t) for t in tensors], dim=dim)


def stack(tensors, dim=0):
    """Stack tensors along a new dim (torch.stack)."""
    return Stack.apply(*[as_tensor(t) for t in tensors], dim=dim)


def where(condition, a, b):
    """Elementwise choice: a where condition is true, else b (torch.where)."""
    cond = condition.data if isinstance(condition, Tensor) else np.asarray(condition)
    like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
    return Where.apply(cond.astype(bool), as_tensor(a, like=like), as_tensor(b, like=like))
