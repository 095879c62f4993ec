"""Elementwise ops. Broadcasting gradients are reduced by the engine (autograd.unbroadcast)."""
import numpy as np

from ..autograd import Function, wrap_op_errors
from .. import kernels


class Add(Function):
    @wrap_op_errors
    def forward(self, a, b):
        return a + b

    def backward(self, grad):
        return grad, grad


class Sub(Function):
    @wrap_op_errors
    def forward(self, a, b):
        return a - b

    def backward(self, grad):
        return grad, -grad


class Mul(Function):
    @wrap_op_errors
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad):
        return grad * self.b, grad * self.a


class Div(Function):
    @wrap_op_errors
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, grad):
        ga = grad / self.b
        return ga, -ga * self.a / self.b


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, grad):
        return (-grad,)


class Pow(Function):
    """a ** b for tensors a and b (b may be a tensor or scalar promoted to one)."""

    @wrap_op_errors
    def forward(self, a, b):
        self.a, self.b = a, b
        self.out = a ** b
        return self.out

    def backward(self, grad):
        ga = grad * self.b * self.a ** (self.b - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            gb = grad * self.out * np.log(np.where(self.a > 0, self.a, 1))
        return ga, gb


class Exp(Function):
    def forward(self, a):
        self.out = np.exp(a)
        return self.out

    def backward(self, grad):
        return (grad * self.out,)


class Log(Function):
    def forward(self, a):
        self.a = a
        return np.log(a)

    def backward(self, grad):
        return (grad / self.a,)


class Sqrt(Function):
    def forward(self, a):
        self.out = np.sqrt(a)
        return self.out

    def backward(self, grad):
        return (grad * 0.5 / self.out,)


class Abs(Function):
    def forward(self, a):
        self.a = a
        return np.abs(a)

    def backward(self, grad):
        return (grad * np.sign(self.a),)


class Tanh(Function):
    def forward(self, a):
        self.out = np.tanh(a)
        return self.out

    def backward(self, grad):
        return (grad * (1 - self.out * self.out),)


class Sigmoid(Function):
    def forward(self, a):
        # split by sign so that exp never overflows
        e = np.exp(-np.abs(a))
        self.out = np.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        return self.out

    def backward(self, grad):
        return (grad * self.out * (1 - self.out),)


class Relu(Function):
    def forward(self, a):
        self.mask = a > 0
        return a * self.mask

    def backward(self, grad):
        return (grad * self.mask,)


class Gelu(Function):
    """GELU, exact ('none', erf) or GPT-2's tanh approximation ('tanh')."""

    def forward(self, a, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.a, self.approximate = a, approximate
        return kernels.gelu_forward(a, approximate)

    def backward(self, grad):
        return (kernels.gelu_backward(grad, self.a, self.approximate),)


class Where(Function):
    """where(cond, a, b); cond is a boolean array and gets no gradient."""

    @wrap_op_errors
    def forward(self, cond, a, b):
        self.cond = np.asarray(cond, dtype=bool)
        return np.where(self.cond, a, b)

    def backward(self, grad):
        zero = np.zeros((), dtype=grad.dtype)
        return None, np.where(self.cond, grad, zero), np.where(self.cond, zero, grad)


class MaskedFill(Function):
    @wrap_op_errors
    def forward(self, a, mask, value):
        self.mask = np.asarray(mask, dtype=bool)
        out = np.where(self.mask, np.asarray(value, dtype=a.dtype), a)
        return out

    def backward(self, grad):
        return np.where(self.mask, np.zeros((), grad.dtype), grad), None, None


class Cast(Function):
    def forward(self, a, dtype):
        self.dtype = a.dtype
        return a.astype(dtype)

    def backward(self, grad):
        return (grad.astype(self.dtype),)


class Dropout(Function):
    """Inverted dropout: kept activations are scaled by 1/(1-p) during training."""

    def forward(self, a, p, rng):
        keep = rng.random(a.shape) >= p
        self.scale = keep.astype(a.dtype) / a.dtype.type(1.0 - p)
        return a * self.scale

    def backward(self, grad):
        return grad * self.scale, None, None
