"""Basic layers with PyTorch's constructor arguments, parameter names, layouts and default initialisation."""
import math

import numpy as np

from ..autograd import DEFAULT_DTYPE, Tensor
from . import functional as F
from . import init
from .module import Module, Parameter


def empty_parameter(*shape, dtype=None):
    """An uninitialised Parameter of `shape` (float32 unless dtype is given), to be filled by nn.init.

    The empty array is wrapped, not copied: memory that is never filled (see `init.skip_init`) is never touched."""
    return Parameter._wrap(np.empty(shape, dtype=np.dtype(DEFAULT_DTYPE if dtype is None else dtype)),
                           requires_grad=True)


def check_size(layer, name, value, minimum=0):
    """`value` as an int >= minimum; TypeError (not an integer) or ValueError naming the layer and argument,
    before np.empty could fail with a message that names neither."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{layer}: {name} must be an integer, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{layer}: {name} must be >= {minimum}, got {value}")
    return int(value)


def check_probability(layer, name, value):
    """`value` as a float in [0, 1]; TypeError or ValueError naming the layer and argument."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{layer}: {name} must be a number in [0, 1], got {value!r} of type {type(value).__name__}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{layer}: {name} must be in [0, 1], got {value}")
    return float(value)


def check_features(input, expected, layer, what="input"):
    """Raise a ValueError naming `layer` unless input's last dim is `expected`."""
    if input.ndim == 0 or input.shape[-1] != expected:
        raise ValueError(f"{layer}: {what} of shape {tuple(input.shape)} must have {expected} features "
                         "in its last dimension")


class Linear(Module):
    """y = x W^T + b with weight (out_features, in_features) and bias (out_features,).

    Initialised as PyTorch: kaiming_uniform_(a=sqrt(5)) for the weight (that is U(-1/sqrt(in), 1/sqrt(in)))
    and U(-1/sqrt(in), 1/sqrt(in)) for the bias."""

    def __init__(self, in_features, out_features, bias=True, dtype=None):
        super().__init__()
        self.in_features = check_size("Linear", "in_features", in_features)
        self.out_features = check_size("Linear", "out_features", out_features)
        self.weight = empty_parameter(out_features, in_features, dtype=dtype)
        self.register_buffer("weight_scale", None)  # an int8 weight's scales once quantized (see nn.quantize)
        self.register_parameter("bias", empty_parameter(out_features, dtype=dtype) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        check_features(input, self.in_features, "Linear")
        return F.linear(input, self.weight, self.bias, weight_scale=self.weight_scale)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table weight (num_embeddings, embedding_dim), initialised N(0, 1).

    The row at padding_idx starts at zero and gets no gradient."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=None):
        super().__init__()
        num_embeddings = check_size("Embedding", "num_embeddings", num_embeddings)
        embedding_dim = check_size("Embedding", "embedding_dim", embedding_dim)
        if padding_idx is not None:
            if isinstance(padding_idx, (bool, np.bool_)) or not isinstance(padding_idx, (int, np.integer)):
                raise TypeError(f"Embedding: padding_idx must be an integer or None, got {padding_idx!r}")
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} is outside [-{num_embeddings}, "
                                 f"{num_embeddings}) for num_embeddings={num_embeddings}")
            padding_idx = int(padding_idx) % num_embeddings
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = empty_parameter(num_embeddings, embedding_dim, dtype=dtype)
        self.register_buffer("weight_scale", None)  # an int8 weight's scales once quantized (see nn.quantize)
        self.reset_parameters()

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None):
        """An Embedding holding a copy of the 2-D array `embeddings`; frozen (no gradient) by default."""
        data = np.asarray(embeddings.data if isinstance(embeddings, Tensor) else embeddings)
        if data.ndim != 2:
            raise ValueError(f"Embedding.from_pretrained: embeddings must be 2-D, got shape {data.shape}")
        layer = cls(data.shape[0], data.shape[1], padding_idx=padding_idx, dtype=data.dtype)
        layer.weight.data[...] = data
        layer.weight.requires_grad = not freeze
        return layer

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx, weight_scale=self.weight_scale)

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class LayerNorm(Module):
    """Normalise over the trailing `normalized_shape` dims, then scale by weight (ones) and shift by bias (zeros)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (normalized_shape,)
        elif not isinstance(normalized_shape, (tuple, list)):
            raise TypeError(f"LayerNorm: normalized_shape must be an int or a tuple of ints, got {normalized_shape!r}")
        shape = tuple(check_size("LayerNorm", "normalized_shape", s) for s in normalized_shape)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        affine = elementwise_affine
        self.register_parameter("weight", empty_parameter(*self.normalized_shape, dtype=dtype) if affine else None)
        self.register_parameter("bias", empty_parameter(*self.normalized_shape, dtype=dtype)
                                if affine and bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class Dropout(Module):
    """Zero each element with probability p in training mode, scaling the rest by 1/(1-p); identity in eval."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = check_probability("Dropout", "p", p)

    def forward(self, input):
        return F.dropout(input, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class GELU(Module):
    """GELU: exact (erf) with approximate='none', GPT-2's tanh form with approximate='tanh'."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class ReLU(Module):
    def forward(self, input):
        return F.relu(input)


class Tanh(Module):
    def forward(self, input):
        return F.tanh(input)


class Sigmoid(Module):
    def forward(self, input):
        return F.sigmoid(input)


_ACTIVATIONS = {"gelu": lambda: GELU(), "gelu_tanh": lambda: GELU("tanh"), "relu": ReLU}


class MLP(Module):
    """The transformer feed-forward block: c_fc (in -> hidden), activation, c_proj (hidden -> out), dropout.

    Named as GPT-2's `mlp.c_fc` / `mlp.c_proj` so a GPT's weights map by name. out_features defaults to
    in_features; activation is 'gelu' (exact), 'gelu_tanh' (GPT-2's) or 'relu'."""

    def __init__(self, in_features, hidden_features, out_features=None, activation="gelu", bias=True, dropout=0.0,
                 dtype=None):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"MLP: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        out_features = in_features if out_features is None else out_features
        self.c_fc = Linear(in_features, hidden_features, bias=bias, dtype=dtype)
        self.act = _ACTIVATIONS[activation]()
        self.c_proj = Linear(hidden_features, out_features, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)

    def forward(self, input):
        if isinstance(self.act, GELU):  # one op: GELU runs on each thread's rows of c_fc's product
            check_features(input, self.c_fc.in_features, "Linear")
            hidden = F.linear_gelu(input, self.c_fc.weight, self.c_fc.bias, approximate=self.act.approximate)
        else:
            hidden = self.act(self.c_fc(input))
        return self.dropout(self.c_proj(hidden))
