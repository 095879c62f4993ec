"""Functional forms of the layers, with torch.nn.functional's names and semantics.

    import minigen.nn.functional as F
"""
import numpy as np

from ..autograd import Tensor, as_tensor
from .. import ops
from .. import random


def linear(input, weight, bias=None):
    """y = input @ weight.T + bias, weight stored (out_features, in_features)."""
    return ops.Linear.apply(input, weight, bias)


def _check_ids(ids, num_embeddings, name="input"):
    ids_arr = ids.data if isinstance(ids, Tensor) else np.asarray(ids)
    if ids_arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: token ids must be integers, got dtype {ids_arr.dtype}")
    if ids_arr.size and (ids_arr.min() < 0 or ids_arr.max() >= num_embeddings):
        bad = ids_arr[(ids_arr < 0) | (ids_arr >= num_embeddings)].reshape(-1)[0]
        raise ValueError(f"{name}: id {int(bad)} is outside the vocabulary [0, {num_embeddings})")
    return ids_arr.astype(np.int64, copy=False)


def embedding(input, weight, padding_idx=None):
    """Rows of `weight` (num_embeddings, dim) for integer ids; gradients scatter-add into weight."""
    ids = _check_ids(input, weight.shape[0])
    return ops.Embedding.apply(weight, ids, padding_idx=padding_idx)


def softmax(input, dim=-1):
    return ops.Softmax.apply(input, dim=dim)


def log_softmax(input, dim=-1):
    return ops.LogSoftmax.apply(input, dim=dim)


def cross_entropy(input, target, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Cross-entropy of logits `input` (N, C) or (N, C, d1, ...) against integer `target` (N,) or (N, d1, ...).

    Targets equal to ignore_index contribute nothing; 'mean' divides by the number of the others."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    tgt = target.data if isinstance(target, Tensor) else np.asarray(target)
    if tgt.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class indices, got dtype {tgt.dtype}")
    x = input
    if x.ndim > 2:  # (N, C, d1, ...) -> (N*d1*..., C), PyTorch's layout for sequences
        x = x.permute(0, *range(2, x.ndim), 1).reshape(-1, x.shape[1])
    elif x.ndim == 1:
        x = x.reshape(1, -1)
    flat = tgt.reshape(-1).astype(np.int64)
    if flat.shape[0] != x.shape[0]:
        raise ValueError(f"cross_entropy: target shape {tgt.shape} does not match input shape {input.shape}")
    classes = x.shape[1]
    valid = flat != ignore_index
    if np.any((flat[valid] < 0) | (flat[valid] >= classes)):
        bad = flat[valid & ((flat < 0) | (flat >= classes))][0]
        raise ValueError(f"cross_entropy: target {int(bad)} is out of range for {classes} classes "
                         f"(expected 0..{classes - 1} or ignore_index={ignore_index})")
    out = ops.CrossEntropy.apply(x, flat, ignore_index=ignore_index, reduction=reduction,
                                 label_smoothing=label_smoothing)
    return out.reshape(tgt.shape) if reduction == "none" else out


def gelu(input, approximate="none"):
    """GELU: exact (erf) with approximate='none', GPT-2's tanh form with 'tanh'."""
    return ops.Gelu.apply(input, approximate=approximate)


def relu(input):
    return ops.Relu.apply(input)


def tanh(input):
    return ops.Tanh.apply(input)


def sigmoid(input):
    return ops.Sigmoid.apply(input)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing `normalized_shape` dims, then scale by weight and shift by bias."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(input.shape[input.ndim - len(shape):]) != shape:
        raise ValueError(f"layer_norm: input shape {input.shape} does not end with normalized_shape {shape}")
    return ops.LayerNorm.apply(input, weight, bias, eps=eps, n=len(shape))


def dropout(input, p=0.5, training=True):
    """Zero each element with probability p during training and scale the rest by 1/(1-p)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    return ops.Dropout.apply(as_tensor(input), p, random.generator())
