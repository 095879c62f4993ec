"""Shape and indexing ops: reshape, permute, expand, getitem, cat, stack."""
import numpy as np

from ..autograd import Function


def check_dim(op, dim, ndim, new_axis=False):
    """`dim` as an axis in [0, n), n = ndim, or ndim + 1 for an op that inserts an axis (unsqueeze); negative
    dims count from the end, and a 0-d tensor takes 0 and -1 as PyTorch does. Raises IndexError naming the
    op, the dim and ndim for anything else: wrapping an out-of-range dim would silently pick another axis."""
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{op}: dim must be an integer, got {dim!r} of type {type(dim).__name__}")
    n = max(ndim + 1 if new_axis else ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{op}: dim {dim} out of range for a tensor with {ndim} dimensions "
                         f"(expected {-n}..{n - 1})")
    return int(dim) % n


class Reshape(Function):
    def forward(self, a, shape):
        self.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {a.shape} ({a.size} elements) "
                             f"into {tuple(shape)}") from None

    def backward(self, grad):
        return (grad.reshape(self.shape),)


class Permute(Function):
    def forward(self, a, dims):
        if len(dims) != a.ndim:
            raise ValueError(f"permute: got {len(dims)} dims {tuple(dims)} for a tensor with {a.ndim} dimensions")
        dims = tuple(check_dim("permute", d, a.ndim) for d in dims)
        if sorted(dims) != list(range(a.ndim)):
            raise ValueError(f"permute: dims {dims} repeat a dimension; expected a permutation of "
                             f"{tuple(range(a.ndim))}")
        self.inverse = tuple(sorted(range(len(dims)), key=dims.__getitem__))
        return a.transpose(dims)

    def backward(self, grad):
        return (grad.transpose(self.inverse),)


class Contiguous(Function):
    """The same values in a C-contiguous array (a copy of a transposed or sliced view), as PyTorch's
    `contiguous()`: kernels that need one then take it as it is instead of copying it at every call."""

    def forward(self, a):
        return np.ascontiguousarray(a)

    def backward(self, grad):
        return (grad,)


class Expand(Function):
    def forward(self, a, shape):
        shape = tuple(a.shape[i - (len(shape) - a.ndim)] if s == -1 else s for i, s in enumerate(shape))
        try:
            return np.broadcast_to(a, shape)
        except ValueError:
            raise ValueError(f"expand: cannot expand shape {a.shape} to {shape}") from None

    def backward(self, grad):
        return (grad,)  # the engine's unbroadcast sums back to the input shape


def _is_basic(index):
    """Whether an index holds only ints, slices, None and Ellipsis (NumPy's basic indexing)."""
    items = index if isinstance(index, tuple) else (index,)
    return all(i is None or i is Ellipsis or isinstance(i, slice)
               or (isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))) for i in items)


class GetItem(Function):
    """Indexing with ints, slices, None, Ellipsis, boolean and integer arrays.

    Repeated integer indices accumulate their gradients (np.add.at)."""

    def forward(self, a, index):
        self.shape, self.dtype, self.index = a.shape, a.dtype, index
        try:
            return np.asarray(a[index])
        except IndexError as e:
            raise IndexError(f"index {index!r} invalid for a tensor of shape {a.shape}: {e}") from None

    def backward(self, grad):
        out = np.zeros(self.shape, dtype=grad.dtype)
        if _is_basic(self.index):
            out[self.index] = grad  # ints and slices never select an element twice: plain assignment is exact
        else:
            np.add.at(out, self.index, grad)
        return out, None


class Cat(Function):
    def forward(self, *arrays, dim=0):
        if not arrays:
            raise ValueError("cat: expected a non-empty sequence of tensors")
        ndim = arrays[0].ndim
        if not -ndim <= dim < ndim:
            raise IndexError(f"cat: dim {dim} out of range for {ndim}-D tensors")
        self.dim = dim % ndim
        self.sizes = [a.shape[self.dim] for a in arrays]
        try:
            return np.concatenate(arrays, axis=self.dim)
        except ValueError:
            raise ValueError(f"cat: shapes {[a.shape for a in arrays]} differ outside dim {dim}") from None

    def backward(self, grad):
        return tuple(np.split(grad, np.cumsum(self.sizes)[:-1], axis=self.dim))


class Stack(Function):
    def forward(self, *arrays, dim=0):
        if not arrays:
            raise ValueError("stack: expected a non-empty sequence of tensors")
        if len({a.shape for a in arrays}) != 1:
            raise ValueError(f"stack: all tensors must have the same shape, got {[a.shape for a in arrays]}")
        ndim = arrays[0].ndim + 1
        if not -ndim <= dim < ndim:
            raise IndexError(f"stack: dim {dim} out of range for {ndim - 1}-D tensors (expected {-ndim}..{ndim - 1})")
        self.dim = dim % ndim
        return np.stack(arrays, axis=self.dim)

    def backward(self, grad):
        return tuple(np.moveaxis(grad, self.dim, 0))
