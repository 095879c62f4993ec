"""Matrix product with NumPy's rules (1-D operands, broadcast batch dimensions), and the Linear layer's product.

BLAS does the work; the Linear layers go through `kernels.linear_*`, which the Numba backend splits across its
threads; their reference is the function of that name in minigen/kernels/numpy_kernels.py."""
import numpy as np

from .. import kernels
from ..autograd import Function


class MatMul(Function):
    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: both operands need at least 1 dimension, got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned "
                             f"({a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]})")
        self.a, self.b = a, b
        try:
            return np.matmul(a, b)
        except ValueError:
            raise ValueError(f"matmul: batch dimensions of shapes {a.shape} and {b.shape} do not broadcast") from None

    def backward(self, grad):
        a, b = self.a, self.b
        # promote 1-D operands to matrices so that one formula serves every case
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        # restore the axes that 1-D operands dropped from the output: m last, then n before it
        g = grad[..., None] if b.ndim == 1 else grad
        g = g[..., None, :] if a.ndim == 1 else g
        ga = np.matmul(g, np.swapaxes(b2, -1, -2))
        gb = np.matmul(np.swapaxes(a2, -1, -2), g)
        if a.ndim == 1:
            ga = ga.reshape(ga.shape[:-2] + (a.shape[0],)) if ga.ndim > 2 else ga.reshape(a.shape)
        if b.ndim == 1:
            gb = gb.reshape(gb.shape[:-2] + (b.shape[0],)) if gb.ndim > 2 else gb.reshape(b.shape)
        return ga, gb


def _check_features(name, x, weight):
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{name}: input has {x.shape[-1]} features (shape {x.shape}), "
                         f"weight expects {weight.shape[1]} (weight shape {weight.shape})")


class Linear(Function):
    """y = x @ W.T + b with W stored (out, in) as in PyTorch; x may have any leading dims.

    Fused so that the weight gradient is one GEMM over all leading dims and no transposed copy of W is made;
    the kernels add the bias, and sum its gradient, on each thread's rows next to their products."""

    def forward(self, x, weight, bias=None, weight_scale=None):
        _check_features("linear", x, weight)
        self.x, self.weight, self.weight_scale, self.has_bias = x, weight, weight_scale, bias is not None
        # one 2-D GEMM: NumPy's batched matmul against a shared matrix does not reach BLAS
        x2 = x.reshape(-1, x.shape[-1])
        y = kernels.linear_forward(x2, weight, bias) if weight_scale is None else \
            kernels.int8_linear_forward(x2, weight, weight_scale, bias)
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, grad):
        weight = _float_weight(self.weight, self.weight_scale)
        gx, gw, gb = kernels.linear_backward(grad.reshape(-1, grad.shape[-1]), self.x.reshape(-1, self.x.shape[-1]),
                                             weight, self.has_bias)
        return gx.reshape(self.x.shape), (gw if self.weight_scale is None else None), gb


def _float_weight(weight, weight_scale):
    """The weight as floats: itself, or an int8 weight dequantized (it gets no gradient; its input does)."""
    return weight if weight_scale is None else kernels.dequantize_int8(weight, weight_scale)


class LinearGelu(Function):
    """gelu(x @ W.T + b, approximate): a Linear layer and its GELU in one op, the first half of a transformer MLP.

    Fused so that each thread applies GELU to its rows of the product while they are in its cache (and
    in backward, GELU's derivative right before its rows of the input-gradient product)."""

    def forward(self, x, weight, bias=None, approximate="none", weight_scale=None):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"linear_gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        _check_features("linear_gelu", x, weight)
        self.x, self.weight, self.has_bias, self.approximate = x, weight, bias is not None, approximate
        self.weight_scale = weight_scale
        x2 = x.reshape(-1, x.shape[-1])
        if weight_scale is None:
            self.h, y = kernels.linear_gelu_forward(x2, weight, bias, approximate)
        else:
            self.h = kernels.int8_linear_forward(x2, weight, weight_scale, bias)
            y = kernels.gelu_forward(self.h, approximate)
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, grad):
        weight = _float_weight(self.weight, self.weight_scale)
        gx, gw, gb = kernels.linear_gelu_backward(grad.reshape(self.h.shape), self.x.reshape(self.h.shape[0], -1),
                                                  weight, self.h, self.approximate, self.has_bias)
        return gx.reshape(self.x.shape), (gw if self.weight_scale is None else None), gb
