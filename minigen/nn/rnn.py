"""Recurrent layers with PyTorch's names and layouts: RNNCell, GRUCell, RNN, GRU.

GRU (gate order r, z, n):
    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h
RNN: h' = tanh(W_ih x + b_ih + W_hh h + b_hh) (or relu).

The input projection of a whole sequence is one matrix product; the steps run inside the fused
`ops.Recurrence` (one graph node per layer and direction)."""
import math

import numpy as np

from ..autograd import Tensor
from ..ops import cat, stack, where
from ..ops.rnn import Recurrence
from . import functional as F
from . import init
from .layers import check_features, check_probability, check_size, empty_parameter
from .module import Module


def _mode(kind, nonlinearity):
    if kind == "GRU":
        return "gru"
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"{kind}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return nonlinearity


def _gates(mode):
    return 3 if mode == "gru" else 1


def _init_uniform(module, hidden_size):
    """PyTorch's recurrent initialisation: every weight and bias U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / math.sqrt(hidden_size)
    for p in module.parameters():
        init.uniform_(p, -bound, bound)


def _zeros_like_state(input, shape):
    return Tensor._wrap(np.zeros(shape, dtype=input.dtype))


class _CellBase(Module):
    """One step of a recurrent cell: weight_ih (G*H, in), weight_hh (G*H, H), bias_ih, bias_hh (G*H,)."""

    kind = None

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", dtype=None):
        super().__init__()
        self.mode = _mode(self.kind, nonlinearity)
        input_size = check_size(f"{self.kind}Cell", "input_size", input_size)
        hidden_size = check_size(f"{self.kind}Cell", "hidden_size", hidden_size, minimum=1)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        rows = _gates(self.mode) * hidden_size
        self.weight_ih = empty_parameter(rows, input_size, dtype=dtype)
        self.weight_hh = empty_parameter(rows, hidden_size, dtype=dtype)
        self.register_parameter("bias_ih", empty_parameter(rows, dtype=dtype) if bias else None)
        self.register_parameter("bias_hh", empty_parameter(rows, dtype=dtype) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        _init_uniform(self, self.hidden_size)

    def forward(self, input, hx=None):
        """input (B, input_size) or (input_size,); hx (B, hidden_size) or (hidden_size,), zeros if None."""
        if input.ndim not in (1, 2):
            raise ValueError(f"{self.kind}Cell: input must be 1-D or 2-D, got shape {input.shape}")
        check_features(input, self.input_size, f"{self.kind}Cell")
        batched = input.ndim == 2
        x = input if batched else input.reshape(1, -1)
        B, H = x.shape[0], self.hidden_size
        if hx is None:
            h = _zeros_like_state(x, (B, H))
        else:
            h = hx.reshape(1, -1) if not batched and hx.ndim == 1 else hx
            if h.shape != (B, H):
                raise ValueError(f"{self.kind}Cell: hx has shape {hx.shape}, expected {(B, H) if batched else (H,)}")
        x_proj = F.linear(x, self.weight_ih, self.bias_ih).reshape(1, B, -1)
        h_new = Recurrence.apply(x_proj, h, self.weight_hh, self.bias_hh, mode=self.mode).reshape(B, H)
        return h_new if batched else h_new.reshape(H)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


class RNNCell(_CellBase):
    """h' = tanh(W_ih x + b_ih + W_hh h + b_hh) (nonlinearity='tanh' or 'relu')."""

    kind = "RNN"


class GRUCell(_CellBase):
    """One GRU step; weight_ih (3H, in) and weight_hh (3H, H) hold the r, z, n gates in that order."""

    kind = "GRU"

    def __init__(self, input_size, hidden_size, bias=True, dtype=None):
        super().__init__(input_size, hidden_size, bias, dtype=dtype)


def _check_lengths(lengths, T, B):
    """lengths (B,) ints in [1, T] -> the (T, B) boolean mask of real steps."""
    arr = np.asarray(lengths.data if isinstance(lengths, Tensor) else lengths)
    if arr.shape != (B,) or arr.dtype.kind not in "iu":
        raise ValueError(f"lengths must be an integer array of shape ({B},) (one per batch row), "
                         f"got shape {arr.shape} and dtype {arr.dtype}")
    if B and (arr.min() < 1 or arr.max() > T):
        raise ValueError(f"lengths must lie in [1, {T}] (the sequence length is {T}), got values in "
                         f"[{arr.min()}, {arr.max()}]")
    return np.arange(T)[:, None] < arr[None, :]


class _RNNBase(Module):
    """A multi-layer, optionally bidirectional recurrent layer over a whole sequence."""

    kind = None

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=None):
        super().__init__()
        self.mode = _mode(self.kind, nonlinearity)
        input_size = check_size(self.kind, "input_size", input_size)
        hidden_size = check_size(self.kind, "hidden_size", hidden_size, minimum=1)  # as PyTorch
        num_layers = check_size(self.kind, "num_layers", num_layers, minimum=1)
        dropout = check_probability(self.kind, "dropout", dropout)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, dropout, bidirectional
        rows = _gates(self.mode) * hidden_size
        directions = 2 if bidirectional else 1
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * directions
            for suffix in self._suffixes(layer):
                setattr(self, "weight_ih" + suffix, empty_parameter(rows, in_size, dtype=dtype))
                setattr(self, "weight_hh" + suffix, empty_parameter(rows, hidden_size, dtype=dtype))
                if bias:
                    setattr(self, "bias_ih" + suffix, empty_parameter(rows, dtype=dtype))
                    setattr(self, "bias_hh" + suffix, empty_parameter(rows, dtype=dtype))
        self.reset_parameters()

    def _suffixes(self, layer):
        return [f"_l{layer}"] + ([f"_l{layer}_reverse"] if self.bidirectional else [])

    def reset_parameters(self):
        _init_uniform(self, self.hidden_size)

    def forward(self, input, hx=None, lengths=None, first_projections=None):
        """Run the sequence; returns (output, h_n).

        input (T, B, input_size), or (B, T, input_size) with batch_first, or unbatched (T, input_size).
        hx: h_0 (num_layers * num_directions, B, hidden_size), zeros if None.
        lengths: optional ints (B,) in [1, T]; steps at t >= lengths[b] are padding. They neither change
        the state nor appear in output (zeros there, as pad_packed_sequence gives), and h_n holds each row's
        state after its last real step; the reverse direction starts at each row's last real step.
        output (T, B, D * hidden_size) (batch_first: (B, T, ...)); h_n (num_layers * D, B, hidden_size).
        first_projections: optional, the first layer's input projections input @ W_ih^T + b_ih, one (T, B, G)
        per direction, used instead of computing them (an encoder whose input is an embedding looks them up
        in a table of its vocabulary's projections: at 64 inputs the product runs far below the CPU's speed)."""
        if input.ndim not in (2, 3):
            raise ValueError(f"{self.kind}: input must be 3-D (batched) or 2-D (unbatched), got shape {input.shape}")
        check_features(input, self.input_size, self.kind)
        batched = input.ndim == 3
        x = input.unsqueeze(1) if not batched else input.transpose(0, 1) if self.batch_first else input
        T, B = x.shape[0], x.shape[1]
        if T == 0:
            raise ValueError(f"{self.kind}: input of shape {input.shape} has an empty sequence")
        directions = 2 if self.bidirectional else 1
        h0 = self._initial_state(hx, x, (self.num_layers * directions, B, self.hidden_size), batched)
        mask = None if lengths is None else _check_lengths(lengths, T, B)
        if first_projections is not None:
            expected = (T, B, _gates(self.mode) * self.hidden_size)
            if len(first_projections) != directions or any(tuple(p.shape) != expected for p in first_projections):
                raise ValueError(f"{self.kind}: first_projections must be {directions} array(s) of shape {expected} "
                                 f"(one per direction), got shapes {[tuple(p.shape) for p in first_projections]}")
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for d, suffix in enumerate(self._suffixes(layer)):
                if layer == 0 and first_projections is not None:
                    x_proj = first_projections[d]
                else:
                    x_proj = F.linear(x, getattr(self, "weight_ih" + suffix), getattr(self, "bias_ih" + suffix, None))
                hs = Recurrence.apply(x_proj, h0[layer * directions + d], getattr(self, "weight_hh" + suffix),
                                      getattr(self, "bias_hh" + suffix, None), mask=mask, reverse=d == 1,
                                      mode=self.mode)
                finals.append(hs[0] if d == 1 else hs[T - 1])  # the last step each direction took
                outputs.append(hs if mask is None else where(mask[:, :, None], hs, 0.0))
            x = outputs[0] if directions == 1 else cat(outputs, dim=-1)
            if layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, self.training)
        h_n = stack(finals, dim=0)
        if not batched:
            return x.squeeze(1), h_n.squeeze(1)
        return (x.transpose(0, 1).contiguous() if self.batch_first else x), h_n  # contiguous, as in PyTorch

    def _initial_state(self, hx, x, shape, batched):
        if hx is None:
            return _zeros_like_state(x, shape)
        expected = shape if batched else (shape[0], shape[2])
        if tuple(hx.shape) != expected:
            raise ValueError(f"{self.kind}: hx (h_0) has shape {tuple(hx.shape)}, expected {expected} "
                             "(num_layers * num_directions, batch, hidden_size)")
        return hx if batched else hx.unsqueeze(1)

    def extra_repr(self):
        extra = "".join(f", {k}={getattr(self, k)}" for k, default in
                        (("num_layers", 1), ("bias", True), ("batch_first", False), ("dropout", 0.0),
                         ("bidirectional", False)) if getattr(self, k) != default)
        return f"{self.input_size}, {self.hidden_size}{extra}"


class RNN(_RNNBase):
    """Elman RNN: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) (or relu), with PyTorch's arguments."""

    kind = "RNN"


class GRU(_RNNBase):
    """GRU over a sequence, with PyTorch's arguments and parameter names (weight_ih_l0 (3H, in), ...)."""

    kind = "GRU"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, dtype=None):
        super().__init__(input_size, hidden_size, num_layers, "tanh", bias, batch_first, dropout, bidirectional,
                         dtype=dtype)
