"""The autograd engine: Tensor, the Function base class with its registry, and backward().

A Tensor wraps a NumPy array. Every differentiable operation is a subclass of `Function`
with a `forward` on NumPy arrays and a `backward` that maps the output gradient to one
gradient per input, side by side. `Function.apply` runs forward and, when gradients are
wanted, records the inputs so that `Tensor.backward` can walk the graph in reverse
topological order (sorted iteratively, so a 100,000-op chain does not hit the recursion
limit).

Broadcasting is undone in exactly one place: `unbroadcast`, called by the engine when a
gradient flows into an input whose shape is smaller than the gradient's.
"""
import contextlib
import functools
import threading

import numpy as np

DEFAULT_DTYPE = np.float32
_state = threading.local()


def is_grad_enabled():
    """Whether operations currently record a graph for backward."""
    return getattr(_state, "grad_enabled", True)


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled):
        self.enabled = enabled

    def __enter__(self):
        self.previous = is_grad_enabled()
        _state.grad_enabled = self.enabled

    def __exit__(self, *exc):
        _state.grad_enabled = self.previous
        return False


def no_grad():
    """Context manager and decorator that disables graph recording, as `torch.no_grad`."""
    return _GradMode(False)


def enable_grad():
    """Context manager and decorator that re-enables graph recording."""
    return _GradMode(True)


_anomaly = threading.local()


@contextlib.contextmanager
def detect_anomaly():
    """Within this context, backward raises FloatingPointError naming the first op whose
    backward produced a NaN or inf gradient."""
    previous = getattr(_anomaly, "on", False)
    _anomaly.on = True
    try:
        yield
    finally:
        _anomaly.on = previous


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`, undoing NumPy broadcasting."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


class Function:
    """Base class of every differentiable op.

    Subclasses implement `forward(self, *args, **kwargs) -> ndarray`, receiving NumPy arrays where
    Tensors were passed, and `backward(self, grad) -> tuple` returning one gradient (or None) per
    positional argument of forward. Anything backward needs is saved on `self` in forward.
    Subclasses register themselves in `Function.registry` under their class name; the gradient-check
    test suite requires a spec for every registered op.
    """

    registry = {}
    differentiable = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__name__ in Function.registry and Function.registry[cls.__name__] is not cls:
            raise TypeError(f"duplicate op name {cls.__name__!r}")
        Function.registry[cls.__name__] = cls

    @classmethod
    def apply(cls, *args, **kwargs):
        fn = cls()
        arrays = [a.data if isinstance(a, Tensor) else a for a in args]
        out = fn.forward(*arrays, **kwargs)
        needs_grad = (cls.differentiable and is_grad_enabled()
                      and any(isinstance(a, Tensor) and a.requires_grad for a in args))
        result = Tensor._wrap(out, requires_grad=needs_grad)
        if needs_grad:
            fn.inputs = args
            result._ctx = fn
        return result

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError


class _FreedGraph:
    """Stands in for the Function of a node whose graph a backward() without retain_graph freed."""

    inputs = ()


_FREED = _FreedGraph()


def _as_array(data, dtype):
    if isinstance(data, Tensor):
        data = data.data
    arr = np.array(data, dtype=dtype)
    # Strings, objects, complex numbers and dates have no meaning in a tensor: refuse them here, not in a ufunc
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"tensor: data of dtype {arr.dtype} is not supported; expected bool, integer or "
                        f"floating-point values")
    if dtype is not None or isinstance(data, (np.ndarray, np.generic)):
        return arr  # NumPy data keeps its dtype, as with torch.tensor / torch.from_numpy
    if arr.dtype == np.float64:
        arr = arr.astype(DEFAULT_DTYPE)  # Python floats become float32, as in PyTorch
    elif arr.dtype.kind in "iu":
        arr = arr.astype(np.int64)
    return arr


class Tensor:
    """An n-dimensional array with an optional gradient, in the manner of `torch.Tensor`.

    `.data` is the NumPy array, `.grad` a NumPy array (or None) accumulated by `backward()`.
    """

    __array_priority__ = 1000  # make ndarray <op> Tensor defer to Tensor's reflected operators

    def __init__(self, data, dtype=None, requires_grad=False):
        self.data = _as_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"requires_grad=True needs a floating-point tensor, got dtype {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._ctx = None

    @classmethod
    def _wrap(cls, array, requires_grad=False):
        t = cls.__new__(cls)
        t.data = array if isinstance(array, np.ndarray) else np.asarray(array)
        t.requires_grad = requires_grad
        t.grad = None
        t._ctx = None
        return t

    # ----- properties -------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    T = property(lambda self: self.transpose(-1, -2) if self.ndim >= 2 else self)
    is_leaf = property(lambda self: self._ctx is None)

    def numel(self):
        return self.data.size

    def dim(self):
        return self.data.ndim

    def __len__(self):
        return len(self.data)

    def __bool__(self):
        return bool(self.data)  # NumPy raises ValueError for more than one element

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __repr__(self):
        body = np.array2string(self.data, separator=", ", precision=4, threshold=20)
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"tensor({body}, dtype={self.data.dtype}{grad})"

    def numpy(self):
        return self.data

    def __array__(self, dtype=None, copy=None):
        """The data for np.asarray(tensor) / np.array(tensor), with NumPy 2's `copy` semantics."""
        if dtype is None or np.dtype(dtype) == self.data.dtype:
            return self.data.copy() if copy else self.data
        if copy is False:
            raise ValueError(f"Tensor.__array__: converting dtype {self.data.dtype} to {np.dtype(dtype)} "
                             "needs a copy, but copy=False")
        return self.data.astype(dtype)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def detach(self):
        return Tensor._wrap(self.data)

    def requires_grad_(self, flag=True):
        if flag and self.data.dtype.kind != "f":
            raise TypeError(f"requires_grad needs a floating-point tensor, got dtype {self.data.dtype}")
        self.requires_grad = flag
        return self

    def zero_(self):
        self.data[...] = 0
        return self

    def to(self, dtype):
        return self.type(dtype)

    def type(self, dtype):
        from .ops import Cast
        return Cast.apply(self, dtype=np.dtype(dtype))

    def float(self):
        return self.type(np.float32)

    def double(self):
        return self.type(np.float64)

    def long(self):
        return Tensor._wrap(self.data.astype(np.int64))

    def clone(self):
        return self * 1

    # ----- backward ---------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into `.grad` of every leaf that requires grad."""
        if not self.requires_grad:
            raise RuntimeError("backward() called on a tensor that does not require grad")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without `gradient` needs a scalar output, got shape {self.shape}; "
                    "pass gradient= with the output's shape")
            gradient = np.ones_like(self.data)
        else:
            gradient = np.asarray(gradient.data if isinstance(gradient, Tensor) else gradient, dtype=self.dtype)
            if gradient.shape != self.shape:
                raise ValueError(f"backward(): gradient has shape {gradient.shape}, expected {self.shape}")
        order = self._topological_order()
        grads = {id(self): gradient}
        # the keys of grads whose array this loop allocated (a sum of contributions): no op holds it, so
        # later contributions are added in place and a leaf may keep it without a copy
        sums = set()
        anomaly = getattr(_anomaly, "on", False)
        for node in order:
            grad = grads.pop(id(node), None)
            if grad is None:
                continue
            owned = id(node) in sums
            sums.discard(id(node))
            fn = node._ctx
            if fn is _FREED:
                raise RuntimeError("Trying to backward through the graph a second time: its saved values were "
                                   "freed by the first backward(); pass retain_graph=True to the first call")
            if fn is None:
                if node.requires_grad:
                    if node.grad is None:
                        node.grad = grad if owned else grad.copy()  # an op's gradient may be a view it shares
                    else:
                        node.grad = node.grad + grad
                continue
            in_grads = fn.backward(grad)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            for parent, g in zip(fn.inputs, in_grads):
                if g is None or not isinstance(parent, Tensor) or not parent.requires_grad:
                    continue
                g = unbroadcast(np.asarray(g), parent.shape)
                if g.dtype != parent.dtype:
                    g = g.astype(parent.dtype)
                if anomaly and not np.all(np.isfinite(g)):
                    raise FloatingPointError(f"backward of {type(fn).__name__} produced a non-finite gradient")
                key = id(parent)
                if key in sums:
                    np.add(grads[key], g, out=grads[key])
                elif key in grads:
                    grads[key] = grads[key] + g
                    sums.add(key)
                else:
                    grads[key] = g
            if not retain_graph:
                node._ctx = _FREED  # drops the saved arrays; a second backward raises instead of giving nothing
                fn.inputs = ()

    def _topological_order(self):
        """Nodes from self back to the leaves, each after every node that uses it (iterative DFS)."""
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            if node._ctx is not None:
                for parent in node._ctx.inputs:
                    if isinstance(parent, Tensor) and parent.requires_grad and id(parent) not in visited:
                        stack.append((parent, False))
        order.reverse()
        return order


def tensor(data, dtype=None, requires_grad=False):
    """Create a tensor from data (list, scalar, ndarray); Python floats become float32."""
    return Tensor(data, dtype=dtype, requires_grad=requires_grad)


def as_tensor(x, like=None):
    """Return x as a Tensor; scalars and arrays take the dtype of `like` when it is floating."""
    if isinstance(x, Tensor):
        return x
    if like is not None and like.dtype.kind == "f":
        arr = np.asarray(x)
        if arr.dtype.kind in "biuf":
            return Tensor._wrap(arr.astype(like.dtype, copy=False))
    return Tensor(x)


def wrap_op_errors(fn):
    """Decorator for forward methods: turns NumPy's shape errors into a ValueError naming the op."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except ValueError as e:
            shapes = [np.shape(a) for a in args if isinstance(a, np.ndarray)]
            raise ValueError(f"{type(self).__name__}: incompatible shapes {shapes}: {e}") from None
    return wrapper
