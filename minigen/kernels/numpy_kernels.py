"""Pure-NumPy reference kernels.

Every kernel here works on NumPy arrays only (no Tensors) and has a Numba twin with the same
signature in `numba_kernels.py`; `minigen.kernels` dispatches to one of them by backend.
Tests check each Numba kernel against the function of the same name here.
"""
import math

import numpy as np

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


# ----- matrix product of two 2-D arrays (the three products of a Linear layer) ----------------
def gemm(a, b, transpose_a, transpose_b):
    """op(a) @ op(b), op(x) = x.T when its flag is set: a Linear layer's forward is gemm(x, weight, False,
    True), its backward gemm(grad, weight, False, False) and gemm(grad, x, True, False)."""
    return (a.T if transpose_a else a) @ (b.T if transpose_b else b)


def linear_forward(x, weight, bias):
    """A Linear layer on 2-D x: x @ weight.T + bias (bias may be None)."""
    y = gemm(x, weight, False, True)
    if bias is not None:
        y += bias
    return y


def linear_backward(grad, x, weight, has_bias):
    """(gx, gweight, gbias) of linear_forward given dy = grad; gbias is None unless has_bias."""
    return gemm(grad, weight, False, False), gemm(grad, x, True, False), grad.sum(axis=0) if has_bias else None


def linear_gelu_forward(x, weight, bias, approximate):
    """A Linear layer followed by GELU, for 2-D x: returns (h, y), h = x @ weight.T + bias (bias may be None)
    and y = gelu(h, approximate)."""
    h = linear_forward(x, weight, bias)
    return h, gelu_forward(h, approximate)


def linear_gelu_backward(grad, x, weight, h, approximate, has_bias):
    """(gx, gweight, gbias) of linear_gelu_forward's y given dy = grad: linear_backward of dh = grad * gelu'(h)."""
    return linear_backward(gelu_backward(grad, h, approximate), x, weight, has_bias)


# ----- LayerNorm over the last axis of a 2-D array (rows, features) ------------------------
def layer_norm_forward(x, weight, bias, eps):
    """Return (y, mean, rstd); weight/bias may be None. Statistics are kept for backward."""
    mean = x.mean(axis=1)
    xc = x - mean[:, None]
    var = (xc * xc).mean(axis=1)
    rstd = 1.0 / np.sqrt(var + eps)
    y = xc * rstd[:, None]
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype, copy=False), mean.astype(x.dtype), rstd.astype(x.dtype)


def layer_norm_backward(dy, x, weight, mean, rstd):
    """Return (dx, dweight, dbias) with dweight/dbias None when weight is None."""
    xhat = (x - mean[:, None]) * rstd[:, None]
    dw = (dy * xhat).sum(axis=0) if weight is not None else None
    db = dy.sum(axis=0)
    g = dy * weight if weight is not None else dy
    n = x.shape[1]
    dx = rstd[:, None] * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).sum(axis=1, keepdims=True) / n)
    return dx.astype(x.dtype, copy=False), dw, db


# ----- softmax / log_softmax over the last axis of a 2-D array -----------------------------
def softmax_forward(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(dy, y):
    return y * (dy - (dy * y).sum(axis=1, keepdims=True))


def log_softmax_forward(x):
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def log_softmax_backward(dy, y):
    return dy - np.exp(y) * dy.sum(axis=1, keepdims=True)


# ----- softmax + cross-entropy, fused -------------------------------------------------------
def cross_entropy_forward(logits, target, ignore_index, label_smoothing):
    """Per-row losses (0 where ignored) and the row log-sum-exp, for logits (N, C), target (N,)."""
    m = logits.max(axis=1)
    lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    nll = lse - logits[np.arange(len(target)), safe]
    if label_smoothing > 0.0:
        smooth = lse - logits.mean(axis=1)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    return np.where(valid, nll, 0.0).astype(logits.dtype), lse.astype(logits.dtype)


def cross_entropy_backward(logits, target, lse, row_scale, ignore_index, label_smoothing):
    """d(sum_i row_scale[i] * loss_i)/d logits; row_scale is 0 for ignored rows."""
    p = np.exp(logits - lse[:, None])
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    p[np.arange(len(target)), safe] -= 1.0 - label_smoothing
    if label_smoothing > 0.0:
        p -= label_smoothing / logits.shape[1]
    return (p * (row_scale * valid)[:, None]).astype(logits.dtype, copy=False)


# ----- GELU ---------------------------------------------------------------------------------
def _erf(x):
    from math import erf
    return np.vectorize(erf, otypes=[np.float64])(x)


def gelu_forward(x, approximate):
    """GELU; approximate='tanh' is GPT-2's `gelu_new`, 'none' the exact erf form."""
    if approximate == "tanh":
        inner = SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))
        return (0.5 * x * (1.0 + np.tanh(inner))).astype(x.dtype, copy=False)
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(x.dtype, copy=False)


def gelu_backward(dy, x, approximate):
    if approximate == "tanh":
        inner = SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))
        t = np.tanh(inner)
        d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
    else:
        cdf = 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        d = cdf + x * pdf
    return (dy * d).astype(x.dtype, copy=False)


# ----- embedding ------------------------------------------------------------------------------
def embedding_backward(ids, dy, num_embeddings):
    """Scatter-add rows of dy (N, D) into a (num_embeddings, D) gradient; repeated ids accumulate."""
    dw = np.zeros((num_embeddings, dy.shape[1]), dtype=dy.dtype)
    np.add.at(dw, ids, dy)
    return dw


# ----- GRU gate arithmetic (gate order r, z, n as in PyTorch) ------------------------------------
def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # never overflows, unlike 1 / (1 + exp(-x))


def gru_gates_forward(gi, gh, h):
    """One GRU step from the projected gates: gi = x W_ih^T + b_ih (B, 3H), gh = h W_hh^T + b_hh (B, 3H), h (B, H).

    Returns (h_new, r, z, n): r = s(gi_r + gh_r), z = s(gi_z + gh_z), n = tanh(gi_n + r * gh_n),
    h_new = (1 - z) * n + z * h."""
    H = h.shape[1]
    r = _sigmoid(gi[:, :H] + gh[:, :H])
    z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    h_new = n + z * (h - n)
    return h_new, r, z, n


def gru_gates_backward(dh_new, h, r, z, n, gh_n):
    """Gradients of one GRU step's gate arithmetic; gh_n = gh[:, 2H:] (B, H).

    Returns (dgi, dgh, dh): dgi, dgh (B, 3H) for the two projections and dh (B, H) for the direct path
    h_new = ... + z * h only (the path through gh is dgh, which the caller multiplies by W_hh)."""
    dn_pre = dh_new * (1.0 - z) * (1.0 - n * n)
    dz_pre = dh_new * (h - n) * z * (1.0 - z)
    dr_pre = dn_pre * gh_n * r * (1.0 - r)
    dgi = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
    dgh = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1)
    return dgi, dgh, dh_new * z


def gru_sequence_forward(x_proj, h0, weight_hh, bias_hh, mask, reverse):
    """Every state hs (T, B, H) of a GRU over a sequence, without what backward needs: decoding's encoder.
    x_proj (T, B, 3H) = x W_ih^T + b_ih, h0 (B, H), weight_hh (3H, H), bias_hh (3H,) or None, mask (T, B) bool
    or None (False: padding, the state passes through), reverse walks t from T-1 down to 0."""
    hs, h = np.empty(x_proj.shape[:2] + h0.shape[1:], dtype=x_proj.dtype), h0
    for t in (range(len(x_proj) - 1, -1, -1) if reverse else range(len(x_proj))):
        gh = h @ weight_hh.T + (0 if bias_hh is None else bias_hh)
        h_new = gru_gates_forward(x_proj[t], gh, h)[0]
        hs[t] = h = h_new if mask is None else np.where(mask[t][:, None], h_new, h)
    return hs


# ----- an RNN decoder's attention step: additive (Bahdanau) scores, the context vector ----------------
def additive_scores_forward(query, keys, v):
    """scores[b, s] = v . tanh(query[b] + keys[b, s]) for query (B, H), keys (B, S, H), v (H,); returns
    (scores (B, S), t = the tanh (B, S, H), kept for backward)."""
    t = np.tanh(query[:, None, :] + keys)
    return t @ v, t


def additive_scores_backward(dscores, t, v):
    """(dquery (B, H), dkeys (B, S, H), dv (H,)) of additive_scores_forward given dscores (B, S)."""
    dkeys = dscores[:, :, None] * v * (1 - t * t)
    return dkeys.sum(axis=1), dkeys, np.einsum("bs,bsh->h", dscores, t)


def attention_context_forward(weights, values):
    """context[b] = sum over s of weights[b, s] * values[b, s] for weights (B, S), values (B, S, H)."""
    return np.einsum("bs,bsh->bh", weights, values)


def attention_context_backward(dcontext, weights, values):
    """(dweights (B, S), dvalues (B, S, H)) of attention_context_forward given dcontext (B, H)."""
    return np.einsum("bh,bsh->bs", dcontext, values), weights[:, :, None] * dcontext[:, None, :]


def additive_attention_step(query, keys, v, values, lengths, rows):
    """An RNN decoder's whole attention step when decoding, with no gradient: for decoding row n, reading
    source row b = rows[n] (beams share their source's keys and values), scores[s] = v . tanh(query[n] + keys[b, s])
    over the real positions s < lengths[b], weights = their softmax (0 at padding), context = weights @ values[b].
    query (N, H), keys (B, S, H), v (H,), values (B, S, Hv), lengths (B,) >= 1, rows (N,) ints in [0, B).
    Returns (context (N, Hv), weights (N, S))."""
    scores = np.tanh(query[:, None, :] + keys[rows]) @ v
    scores[np.arange(keys.shape[1])[None, :] >= lengths[rows][:, None]] = -np.inf
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("ns,nsh->nh", weights, values[rows]), weights


def seq2seq_decode_step(tokens, hidden, context, weights, keys, values, lengths, rows):
    """One decoding step of the default Seq2Seq decoder (a GRU cell fed the previous context, Bahdanau attention)
    for decoding rows n = 0 .. N - 1, row n reading source rows[n]'s encoder states:

        h = GRUCell([embedding[tokens]; context], hidden),   query = h @ w_query^T,
        context, attention = additive_attention_step(query, keys, v, values, lengths, rows),
        logits = [h; context] @ w_out^T + b_out

    tokens (N,) ints, hidden (N, H), context (N, Hv); weights = (embedding (V, E), w_ih (3H, E + Hv), b_ih,
    w_hh (3H, H), b_hh, w_query (A, H), v (A,), w_out (V', H + Hv), b_out), a bias None when absent; keys (B, S, A)
    the encoder states' projected keys, values (B, S, Hv) the states. Returns (logits (N, V'), h, context,
    attention (N, S))."""
    embedding, w_ih, b_ih, w_hh, b_hh, w_query, v, w_out, b_out = weights
    x = np.concatenate([embedding[tokens], context], axis=1)
    h = gru_gates_forward(linear_forward(x, w_ih, b_ih), linear_forward(hidden, w_hh, b_hh), hidden)[0]
    context, attention = additive_attention_step(linear_forward(h, w_query, None), keys, v, values, lengths, rows)
    return linear_forward(np.concatenate([h, context], axis=1), w_out, b_out), h, context, attention


def additive_attention_forward(query, keys, v, values, lengths):
    """An RNN decoder's attention step in training (what `additive_attention_step` computes, for row b = source b,
    keeping what backward needs): scores[b, s] = v . tanh(query[b] + keys[b, s]) over s < lengths[b], weights =
    their softmax (0 at padding), context = weights @ values[b]. query (B, H), keys (B, S, H), v (H,), values
    (B, S, Hv), lengths (B,) >= 1. Returns (context (B, Hv), weights (B, S), t = the tanh (B, S, H), 0 at padding)."""
    padding = np.arange(keys.shape[1])[None, :] >= lengths[:, None]
    t = np.tanh(query[:, None, :] + keys)
    t[padding] = 0
    scores = t @ v
    scores[padding] = -np.inf
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("bs,bsh->bh", weights, values), weights, t


def additive_attention_backward(dcontext, weights, t, v, values, dkeys, dvalues):
    """Backward of additive_attention_forward given dcontext (B, Hv): returns (dquery (B, H), dv (H,)) and ADDS the
    keys' and values' gradients into dkeys (B, S, H) and dvalues (B, S, Hv) (a decoder sums them over its steps).
    Padding needs no lengths here: its weights and t are 0, and so are its gradients."""
    dweights = np.einsum("bh,bsh->bs", dcontext, values)
    dvalues += weights[:, :, None] * dcontext[:, None, :]
    dscores = weights * (dweights - (weights * dweights).sum(axis=1, keepdims=True))
    d = dscores[:, :, None] * v * (1 - t * t)
    dkeys += d
    return d.sum(axis=1), np.einsum("bs,bsh->h", dscores, t)


# ----- scaled dot-product attention (materializes the (L, S) scores: the reference, not the fast path) ----
# A masked score is this large finite negative rather than -inf, so that the arithmetic stays finite (and
# Numba's fastmath stays valid). A query row whose keys are all masked outputs 0 and gets lse = MASKED_SCORE.
MASKED_SCORE = -1e30


def _attention_blocked(mask, causal, L, S):
    """The boolean (.., L, S) array of pairs that may not attend, or None when nothing is masked."""
    blocked = mask
    if causal:
        # query i sits at absolute position i + (S - L): a single decoding query sees the whole cache
        future = np.arange(S)[None, :] > np.arange(L)[:, None] + (S - L)
        blocked = future if blocked is None else (blocked | future)
    return blocked


def _attention_scores(q, k, blocked, scale):
    """The scaled scores q k^T * scale (B, H, L, S), MASKED_SCORE where blocked."""
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    return s if blocked is None else np.where(blocked, MASKED_SCORE, s)


def _attention_exp(s, shift, blocked):
    """exp(s - shift) with blocked pairs exactly 0 (so an all-blocked row sums to 0, not to S)."""
    p = np.exp(s - shift)
    return p if blocked is None else np.where(blocked, 0.0, p)


def attention_forward(q, k, v, mask, causal, scale):
    """softmax(q k^T * scale) v for q (B, H, L, D), k (B, H, S, D), v (B, H, S, Dv).

    mask: boolean, broadcastable to (B, H, L, S), True where a query may NOT attend a key; or None.
    causal: query i may attend keys j <= i + (S - L). Returns (out (B, H, L, Dv), lse (B, H, L)), lse the
    log-sum-exp of the scaled, masked scores (MASKED_SCORE for a row with no attendable key; its out is 0)."""
    L, S = q.shape[-2], k.shape[-2]
    blocked = _attention_blocked(mask, causal, L, S)
    s = _attention_scores(q, k, blocked, scale)
    m = s.max(axis=-1, keepdims=True)
    p = _attention_exp(s, m, blocked)
    total = p.sum(axis=-1, keepdims=True)
    empty = total == 0.0
    total = np.where(empty, 1.0, total)
    out = np.matmul(p / total, v)
    lse = np.where(empty, MASKED_SCORE, m + np.log(total))[..., 0]
    return out.astype(q.dtype, copy=False), lse.astype(q.dtype, copy=False)


def cached_attention_forward(q, keys, values, length, mask, scale):
    """Causal attention of the L new queries q (B, H, L, D) against the first `length` positions of a KV cache's
    buffers keys, values (B, H, capacity, D), the last L of them the queries' own (see `nn.KVCache`)."""
    return attention_forward(q, keys[:, :, :length], values[:, :, :length], mask, True, scale)


def attention_backward(dout, q, k, v, out, lse, mask, causal, scale):
    """Gradients (dq, dk, dv) of attention_forward, recomputing the probabilities from lse.

    Uses D = rowsum(dout * out): dscores = p * (dout v^T - D)."""
    L, S = q.shape[-2], k.shape[-2]
    blocked = _attention_blocked(mask, causal, L, S)
    p = _attention_exp(_attention_scores(q, k, blocked, scale), lse[..., None], blocked)
    dv = np.matmul(np.swapaxes(p, -1, -2), dout)
    dp = np.matmul(dout, np.swapaxes(v, -1, -2))
    D = (dout * out).sum(axis=-1, keepdims=True)
    ds = p * (dp - D) * scale
    dq = np.matmul(ds, k)
    dk = np.matmul(np.swapaxes(ds, -1, -2), q)
    dt = q.dtype
    return dq.astype(dt, copy=False), dk.astype(dt, copy=False), dv.astype(dt, copy=False)


def packed_heads(packed, parts, n_head):
    """The (B, H, T, D) views of the heads in packed (B, T, parts * n_head * D), one per part: the q, k and v
    of a (B, T, 3C) projection (parts = 3), or the heads of a (B, T, C) array (parts = 1)."""
    B, T, width = packed.shape
    return tuple(packed.reshape(B, T, parts, n_head, width // (parts * n_head)).transpose(2, 0, 3, 1, 4))


def packed_attention_forward(qkv, n_head, scale):
    """Causal self-attention of the heads packed in qkv (B, T, 3C), C = n_head * D: returns (out (B, T, C),
    lse (B, H, T)), attention_forward of qkv's q, k and v heads with causal=True in the packed layout."""
    q, k, v = packed_heads(qkv, 3, n_head)
    out, lse = attention_forward(q, k, v, None, True, scale)
    B, H, T, D = out.shape
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3)).reshape(B, T, H * D), lse


def packed_attention_backward(dout, qkv, out, lse, n_head, scale):
    """The gradient dqkv (B, T, 3C) of packed_attention_forward, given dout and out (B, T, C)."""
    q, k, v = packed_heads(qkv, 3, n_head)
    grads = attention_backward(packed_heads(dout, 1, n_head)[0], q, k, v, packed_heads(out, 1, n_head)[0], lse,
                               None, True, scale)
    dqkv = np.empty(qkv.shape, np.result_type(*grads))
    for part, g in zip(packed_heads(dqkv, 3, n_head), grads):
        part[...] = g
    return dqkv


# ----- Adam / AdamW update, in place ---------------------------------------------------------
def adamw_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step):
    """One Adam(W) step with PyTorch's formulas, updating param, exp_avg and exp_avg_sq in place.

    All arrays are contiguous, of one shape and one float dtype. `weight_decay` is the decoupled one
    (param *= 1 - lr * weight_decay first); `step` counts from 1 and sets the bias corrections.
    One scratch array is the only temporary: this runs on every parameter every step."""
    scratch = _adam_moments(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, weight_decay)
    _adam_apply(param, exp_avg, exp_avg_sq, scratch, lr, beta1, beta2, eps, step)


def adamw_amsgrad_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
                         step):
    """adamw_update with AMSGrad: the denominator uses max_exp_avg_sq, the running maximum of
    exp_avg_sq, also updated in place."""
    scratch = _adam_moments(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, weight_decay)
    np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
    _adam_apply(param, exp_avg, max_exp_avg_sq, scratch, lr, beta1, beta2, eps, step)


def _adam_moments(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, weight_decay):
    if weight_decay != 0.0:
        param *= 1.0 - lr * weight_decay
    scratch = np.subtract(grad, exp_avg)  # exp_avg.lerp_(grad, 1 - beta1), as PyTorch writes it
    scratch *= 1.0 - beta1
    exp_avg += scratch
    np.multiply(grad, grad, out=scratch)
    scratch *= 1.0 - beta2
    exp_avg_sq *= beta2
    exp_avg_sq += scratch
    return scratch


def _adam_apply(param, exp_avg, second_moment, scratch, lr, beta1, beta2, eps, step):
    step_size = lr / (1.0 - beta1 ** step)
    bias_correction2_sqrt = (1.0 - beta2 ** step) ** 0.5
    np.sqrt(second_moment, out=scratch)
    scratch /= bias_correction2_sqrt
    scratch += eps
    np.divide(exp_avg, scratch, out=scratch)
    scratch *= -step_size
    param += scratch


# ----- int8 weights: symmetric, one float32 scale per row (output channel) ---------------------
def quantize_int8(weight):
    """(q, scale) for a 2-D float weight (N, K): q int8 (N, K) and scale float32 (N,) with
    weight[n, k] ~ q[n, k] * scale[n], each row's largest magnitude mapped to 127."""
    scale = (np.abs(weight).max(axis=1) / 127.0).astype(np.float32) if weight.shape[1] else \
        np.zeros(weight.shape[0], np.float32)
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.rint(weight / safe[:, None]).clip(-127, 127).astype(np.int8, order="C")  # (N, K) rows, whatever weight's layout
    return q, scale


def dequantize_int8(q, scale):
    """The float32 array q * scale[..., None] that `quantize_int8`'s (q, scale) stand for (any leading dims)."""
    return q.astype(np.float32) * scale[..., None]


def int8_linear_forward(x, q, scale, bias):
    """A Linear layer on 2-D float32 x with an int8 weight: x @ dequantize_int8(q, scale).T + bias (bias may be None)."""
    return linear_forward(x, dequantize_int8(q, scale), bias)


# ----- a GPT's decoding step ---------------------------------------------------------------
def prepare_decode_blocks(blocks, dtype):
    """`blocks` as `decode_blocks` takes them at every step of a generation on rows of `dtype`: the reference
    needs nothing prepared (the Numba backend works out the fused kernel's arrays once here)."""
    return tuple(blocks)


def decode_blocks(x, blocks, keys, values, length, n_head, eps, approximate):
    """One decoding step through every block of a pre-LayerNorm GPT, in turn (see `_decode_block`): blocks is a
    sequence of each block's `weights`, keys and values the KV cache's buffers (layers, B, H, capacity, D).
    Returns the last block's x (B, C)."""
    for i, weights in enumerate(blocks):
        x = _decode_block(x, weights, keys[i], values[i], length, n_head, eps, approximate)
    return x


def _decode_block(x, weights, keys, values, length, n_head, eps, approximate):
    """One position of a pre-LayerNorm GPT block for each row of x (B, C), the new token of a decoding step:

        x = x + proj(attention(attn(ln_1(x)))),  then  x + mlp(gelu(fc(ln_2(x))))

    weights = (ln_1, attn, proj, ln_2, fc, mlp): LayerNorms as (weight, bias), Linear layers as (weight (N, K),
    bias, scale), bias None when absent, scale an int8 weight's (see `quantize_int8`) or None. keys, values
    (B, H, capacity, D) are a KV cache's buffers: the new keys and values are stored at position length - 1 and
    the query attends positions 0 .. length - 1. Returns the new x (B, C)."""
    ln_1, attn, proj, ln_2, fc, mlp = weights

    def linear(h, weight, bias, scale):
        return linear_forward(h, weight, bias) if scale is None else int8_linear_forward(h, weight, scale, bias)

    B, C = x.shape
    qkv = linear(layer_norm_forward(x, *ln_1, eps)[0], *attn)
    q, k, v = packed_heads(qkv[:, None], 3, n_head)
    keys[:, :, length - 1:length], values[:, :, length - 1:length] = k, v
    out, _ = cached_attention_forward(q, keys, values, length, None, 1.0 / math.sqrt(C // n_head))
    x = x + linear(out.reshape(B, C), *proj)  # out (B, H, 1, D): one position, so (B, C) as it lies
    h = linear(layer_norm_forward(x, *ln_2, eps)[0], *fc)
    return x + linear(gelu_forward(h, approximate), *mlp)
