"""Fused scaled dot-product attention: softmax(q k^T * scale, masked) v with a hand-written backward.

The kernels work on (B, H, L, D) arrays; this op folds any leading dimensions of q, k, v into (B, H)
and back, so the same op serves (L, D), (N, L, D), (B, H, L, D) and longer shapes."""
import math

import numpy as np

from ..autograd import Function
from .. import kernels

MASKED_SCORE = kernels.MASKED_SCORE  # the score of a masked pair; the composed path uses the same value


def _fold(lead):
    """Leading dims -> (B, H): the last leading dim is H, the others are folded into B."""
    if not lead:
        return 1, 1
    return math.prod(lead[:-1]), lead[-1]


class ScaledDotProductAttention(Function):
    """softmax(q k^T * scale) v for q (..., L, D), k (..., S, D), v (..., S, Dv) with equal leading dims.

    mask: boolean, broadcastable to (..., L, S), True where a query may NOT attend a key (or None).
    causal: query i may attend keys j <= i + (S - L), so a query appended to a KV cache sees the whole
    cache. scale defaults to 1/sqrt(D). A query with no attendable key outputs 0."""

    def forward(self, q, k, v, mask=None, causal=False, scale=None):
        self.check_shapes(q.shape, k.shape, v.shape)
        lead = q.shape[:-2]
        L, S = q.shape[-2], k.shape[-2]
        B, H = _fold(lead)
        self.lead, self.causal = lead, bool(causal)
        self.scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        self.mask = None if mask is None else self._mask(np.asarray(mask), lead, L, S, B, H)
        self.q, self.k, self.v = (np.ascontiguousarray(a).reshape((B, H) + a.shape[-2:]) for a in (q, k, v))
        self.out, self.lse = kernels.attention_forward(self.q, self.k, self.v, self.mask, self.causal, self.scale)
        return self.out.reshape(lead + self.out.shape[-2:])

    @staticmethod
    def check_shapes(q_shape, k_shape, v_shape):
        """Raise ValueError unless q (..., L, E), k (..., S, E), v (..., S, Ev) agree, with S >= 1."""
        lead = q_shape[:-2]
        if len(q_shape) < 2 or len(k_shape) != len(q_shape) or len(v_shape) != len(q_shape) \
                or k_shape[:-2] != lead or v_shape[:-2] != lead:
            raise ValueError(f"scaled_dot_product_attention: query {q_shape}, key {k_shape} and value {v_shape} "
                             "must be (..., L, E), (..., S, E), (..., S, Ev) with the same leading dims")
        if k_shape[-1] != q_shape[-1] or v_shape[-2] != k_shape[-2]:
            raise ValueError(f"scaled_dot_product_attention: query {q_shape}, key {k_shape} and value {v_shape} "
                             "need query.shape[-1] == key.shape[-1] and key.shape[-2] == value.shape[-2]")
        if k_shape[-2] == 0:
            raise ValueError(f"scaled_dot_product_attention: key {k_shape} has no positions to attend")

    @staticmethod
    def _mask(mask, lead, L, S, B, H):
        """The mask as a 4-D array broadcastable to (B, H, L, S), copied only when leading dims are folded."""
        if mask.dtype != np.bool_:
            raise TypeError(f"scaled_dot_product_attention: mask must be boolean, got dtype {mask.dtype}")
        target = lead + (L, S)
        try:
            ok = np.broadcast_shapes(mask.shape, target) == target
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"scaled_dot_product_attention: mask of shape {mask.shape} does not broadcast "
                             f"to the scores' shape {target}")
        if mask.ndim <= 4 and len(lead) <= 2:
            return mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
        return np.ascontiguousarray(np.broadcast_to(mask, target)).reshape(B, H, L, S)

    def backward(self, grad):
        dout = np.ascontiguousarray(grad).reshape(self.out.shape)
        grads = kernels.attention_backward(dout, self.q, self.k, self.v, self.out, self.lse, self.mask,
                                           self.causal, self.scale)
        return tuple(g.reshape(self.lead + g.shape[-2:]) for g in grads)


class PackedCausalSelfAttention(Function):
    """Causal self-attention straight from a packed projection: qkv (B, T, 3C) -> (B, T, C), C = n_head * D.

    The same computation as splitting qkv into q, k, v, moving heads forward and calling
    ScaledDotProductAttention(causal=True), but the kernels read the heads where they lie in qkv and write
    the output and the gradient in the packed layouts: no split, no index ops, no copies."""

    def forward(self, qkv, n_head, scale=None):
        B, T, C3 = qkv.shape
        if C3 % (3 * n_head):
            raise ValueError(f"packed attention: last dim {C3} is not 3 * n_head ({n_head}) * head size")
        self.scale = 1.0 / math.sqrt(C3 // (3 * n_head)) if scale is None else float(scale)
        self.qkv, self.n_head = qkv, n_head
        self.out, self.lse = kernels.packed_attention_forward(qkv, n_head, self.scale)
        return self.out

    def backward(self, grad):
        return kernels.packed_attention_backward(grad, self.qkv, self.out, self.lse, self.n_head, self.scale), None


class CachedCausalSelfAttention(Function):
    """Causal self-attention of the T new positions packed in qkv (B, T, 3C) against keys and values
    (B, H, S, D) whose first `length` positions (all S when None) are the keys so far, the last T of them qkv's
    own: returns (B, T, C). What a decoding step runs: one op where the general path's split, head moves and
    index ops are six. Given a KV cache's buffers (`nn.KVCache`, capacity S) and its filled length, the kernel
    reads the prefix in place. `padding` (B, length): True where a key must not be attended, or None (the
    convention of every op here: True masks out).

    keys and values are constants for the graph except qkv's positions: backward returns the gradient of
    those inside dqkv, with q's."""

    def forward(self, qkv, keys, values, n_head, length=None, padding=None, scale=None):
        B, T, C3 = qkv.shape
        D = C3 // (3 * n_head) if C3 % (3 * n_head) == 0 else 0
        S = keys.shape[2] if length is None else length
        if D == 0 or keys.shape != values.shape or keys.ndim != 4 or keys.shape[:2] != (B, n_head) \
                or keys.shape[3] != D or not T <= S <= keys.shape[2]:
            raise ValueError(f"cached attention: expected qkv (B, T, 3 * n_head * D) with n_head {n_head} and keys, "
                             f"values (B, n_head, S >= T, D) (length {length} between T and S), got {qkv.shape}, "
                             f"{keys.shape} and {values.shape}")
        if padding is not None and np.shape(padding) != (B, S):
            raise ValueError(f"cached attention: padding must have shape {(B, S)}, got {np.shape(padding)}")
        self.scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
        q = kernels.packed_heads(qkv, 3, n_head)[0]
        blocked = None if padding is None else np.asarray(padding, dtype=bool)[:, None, None, :]
        out, lse = kernels.cached_attention_forward(q, keys, values, S, blocked, self.scale)
        self.saved = q, keys[:, :, :S], values[:, :, :S], out, lse, blocked
        return np.ascontiguousarray(out.transpose(0, 2, 1, 3)).reshape(B, T, C3 // 3)

    def backward(self, grad):
        q, keys, values, out, lse, blocked = self.saved
        B, H, T, D = q.shape
        dout = grad.reshape(B, T, H, D).transpose(0, 2, 1, 3)
        dq, dk, dv = kernels.attention_backward(dout, q, keys, values, out, lse, blocked, True, self.scale)
        dqkv = np.empty((B, T, 3 * H * D), dq.dtype)
        for part, g in zip(kernels.packed_heads(dqkv, 3, H), (dq, dk[:, :, -T:], dv[:, :, -T:])):
            part[...] = g
        return dqkv, None, None


class AdditiveScores(Function):
    """Bahdanau's attention scores: scores[b, s] = v . tanh(query[b] + keys[b, s]) for query (B, H), keys
    (B, S, H) and v (1, H), the weight of a Linear(H, 1) without bias.

    Fused so that the (B, S, H) sum and its tanh are one pass (keeping only the tanh for backward), and
    backward is one pass that also sums the query's gradient over S."""

    def forward(self, query, keys, v):
        if query.ndim != 2 or keys.ndim != 3 or keys.shape[0] != query.shape[0] or keys.shape[2] != query.shape[1] \
                or v.shape != (1, query.shape[1]):
            raise ValueError(f"additive_scores: expected query (B, H), keys (B, S, H) and v (1, H), got shapes "
                             f"{query.shape}, {keys.shape} and {v.shape}")
        self.v = v[0]
        scores, self.t = kernels.additive_scores_forward(query, keys, self.v)
        return scores

    def backward(self, grad):
        dquery, dkeys, dv = kernels.additive_scores_backward(grad, self.t, self.v)
        return dquery, dkeys, dv[None]


class AttentionContext(Function):
    """An RNN decoder's context vector: context[b] = sum over s of weights[b, s] * values[b, s], for weights
    (B, S) and values (B, S, H); the batched (1, S) @ (S, H) product as one pass each way."""

    def forward(self, weights, values):
        if weights.ndim != 2 or values.ndim != 3 or values.shape[:2] != weights.shape:
            raise ValueError(f"attention_context: expected weights (B, S) and values (B, S, H), got shapes "
                             f"{weights.shape} and {values.shape}")
        self.weights, self.values = weights, values
        return kernels.attention_context_forward(weights, values)

    def backward(self, grad):
        return kernels.attention_context_backward(grad, self.weights, self.values)
