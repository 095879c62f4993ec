"""Functional forms of the layers, with torch.nn.functional's names and semantics.

    import minigen.nn.functional as F
"""
import numpy as np

from ..autograd import Tensor, as_tensor
from .. import kernels, ops
from ..ops.attention import MASKED_SCORE, ScaledDotProductAttention
from .. import random


def linear(input, weight, bias=None, weight_scale=None):
    """y = input @ weight.T + bias, weight stored (out_features, in_features); an int8 weight with its
    weight_scale (see `nn.quantize`) is dequantized on the fly."""
    return ops.Linear.apply(input, weight, bias, weight_scale=weight_scale)


def linear_gelu(input, weight, bias=None, approximate="none", weight_scale=None):
    """gelu(linear(input, weight, bias, weight_scale), approximate) as one op (see `ops.LinearGelu`)."""
    return ops.LinearGelu.apply(input, weight, bias, approximate=approximate, weight_scale=weight_scale)


def _check_ids(ids, num_embeddings, name="input"):
    ids_arr = ids.data if isinstance(ids, Tensor) else np.asarray(ids)
    if ids_arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: token ids must be integers, got dtype {ids_arr.dtype}")
    if ids_arr.size and (ids_arr.min() < 0 or ids_arr.max() >= num_embeddings):
        bad = ids_arr[(ids_arr < 0) | (ids_arr >= num_embeddings)].reshape(-1)[0]
        raise ValueError(f"{name}: id {int(bad)} is outside the vocabulary [0, {num_embeddings})")
    return ids_arr.astype(np.int64, copy=False)


def embedding(input, weight, padding_idx=None, weight_scale=None):
    """Rows of `weight` (num_embeddings, dim) for integer ids; gradients scatter-add into weight. An int8
    weight with its weight_scale (see `nn.quantize`) gives its rows dequantized, without a gradient."""
    ids = _check_ids(input, weight.shape[0])
    if weight_scale is not None:
        rows = kernels.dequantize_int8(weight.data[ids.reshape(-1)], weight_scale[ids.reshape(-1)])
        return Tensor._wrap(rows.reshape(ids.shape + rows.shape[1:]))
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
    expected = input.shape[:1] + input.shape[2:] if input.ndim > 1 else ()
    if tgt.shape != expected:
        raise ValueError(f"cross_entropy: target shape {tgt.shape} does not match input shape {input.shape} "
                         f"(expected target shape {expected})")
    flat = tgt.reshape(-1).astype(np.int64)
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


# ----- attention ---------------------------------------------------------------------------------
def _check_mask_shape(mask_shape, scores_shape, name):
    try:
        ok = np.broadcast_shapes(tuple(mask_shape), tuple(scores_shape)) == tuple(scores_shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name} of shape {tuple(mask_shape)} does not broadcast to the attention scores' "
                         f"shape {tuple(scores_shape)} (..., L, S)")


def _attention(query, key, value, blocked=None, additive=None, dropout_p=0.0, causal=False, scale=None,
               need_weights=False):
    """Attention with minigen's internal mask convention; returns (output, weights or None).

    blocked: boolean array, True where a query may NOT attend; additive: a float mask added to the scores.
    Booleans and causal alone go to the fused op; a float mask, dropout or a request for the weights take
    the path composed from primitive ops, which gives the same values."""
    ScaledDotProductAttention.check_shapes(query.shape, key.shape, value.shape)
    L, S = query.shape[-2], key.shape[-2]
    scores_shape = query.shape[:-1] + (S,)
    if blocked is not None:
        _check_mask_shape(blocked.shape, scores_shape, "attn_mask")
    if additive is None and dropout_p == 0.0 and not need_weights:
        return ScaledDotProductAttention.apply(query, key, value, mask=blocked, causal=causal, scale=scale), None
    scale = 1.0 / np.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query @ key.transpose(-2, -1)) * scale
    if additive is not None:
        _check_mask_shape(additive.shape, scores_shape, "attn_mask")
        scores = scores + additive
    if causal:
        future = np.arange(S)[None, :] > np.arange(L)[:, None] + (S - L)  # aligned to the end, as the fused op
        blocked = future if blocked is None else blocked | future
    if blocked is not None:
        scores = scores.masked_fill(blocked, MASKED_SCORE)
    weights = softmax(scores, dim=-1)
    if blocked is not None:
        weights = weights.masked_fill(blocked, 0.0)  # a row with nothing to attend gives 0, as the fused op
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p)
    return weights @ value, (weights if need_weights else None)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """softmax(query key^T * scale + mask) value over the last two dims, as torch's.

    query (..., L, E), key (..., S, E), value (..., S, Ev) with equal leading dims; scale defaults to 1/sqrt(E).
    attn_mask, broadcastable to (..., L, S): boolean with True where a query MAY attend (PyTorch's convention
    here; MultiheadAttention's masks use the opposite one), or floating and added to the scores.
    is_causal: query i attends keys j <= i + (S - L), aligned to the end so that queries appended to a KV cache
    see the whole cache (PyTorch aligns to the start; the two agree when L == S). It may be combined with a
    mask. A query with no key left to attend outputs 0. dropout_p > 0 drops attention weights (always, as
    torch's functional form does; modules pass 0 in eval mode).

    Boolean masks and is_causal run the fused op with its own backward; float masks and dropout run a
    composition of primitive ops."""
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1], got {dropout_p}")
    blocked = additive = None
    if attn_mask is not None:
        mask = attn_mask.data if isinstance(attn_mask, Tensor) else np.asarray(attn_mask)
        if mask.dtype == np.bool_:
            blocked = ~mask
        elif mask.dtype.kind == "f":
            additive = as_tensor(attn_mask, like=query)
        else:
            raise TypeError(f"scaled_dot_product_attention: attn_mask must be boolean or floating, got {mask.dtype}")
    return _attention(query, key, value, blocked, additive, dropout_p, is_causal, scale)[0]
