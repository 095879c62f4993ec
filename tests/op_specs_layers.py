"""Gradient-check specs of the layer ops (the fused recurrence, the fused attentions, a decoder's attention
step) and helpers for checking whole layers.

LAYER_OP_SPECS maps op name -> OpSpec and LAYER_COMPOSITIONS maps op name -> Composition, with the
structure of SPECS and COMPOSITIONS in op_specs.py; test_layers.py runs them. The NumPy references here
are written from the documented equations, independently of minigen, and test_rnn.py / test_attention.py
reuse them to check whole layers.
"""
import numpy as np
from hypothesis import assume, strategies as st
from hypothesis.extra import numpy as hnp

import minigen as mg
from minigen.autograd import Function

from op_specs import Case, Composition, OpSpec, array, shape_broadcasting_into, values


# ----- the recurrence ---------------------------------------------------------------------------
def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_cell_step(x_proj, h, weight_hh, bias_hh, mode):
    """One step of a cell from its input projection x_proj (B, G): (h_new, pre-activation or None)."""
    gh = h @ weight_hh.T + (0.0 if bias_hh is None else bias_hh)
    if mode != "gru":
        pre = x_proj + gh
        return (np.tanh(pre) if mode == "tanh" else np.maximum(pre, 0.0)), pre
    H = h.shape[1]
    r = np_sigmoid(x_proj[:, :H] + gh[:, :H])
    z = np_sigmoid(x_proj[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(x_proj[:, 2 * H:] + r * gh[:, 2 * H:])
    return (1.0 - z) * n + z * h, None


def np_recurrence(x_proj, h0, weight_hh, bias_hh=None, mask=None, reverse=False, mode="gru", preactivations=None):
    """Every state (T, B, H); padded steps (mask False) carry the state. Appends pre-activations to a list."""
    T = x_proj.shape[0]
    hs, h = np.empty((T,) + h0.shape), h0
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h_new, pre = np_cell_step(x_proj[t], h, weight_hh, bias_hh, mode)
        if preactivations is not None and pre is not None:
            preactivations.append(pre)
        h = h_new if mask is None else np.where(mask[t][:, None], h_new, h)
        hs[t] = h
    return hs


@st.composite
def recurrence_cases(draw):
    mode = draw(st.sampled_from(["gru", "tanh", "relu"]))
    T, B, H = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    G = 3 * H if mode == "gru" else H
    inputs = [array(draw, (T, B, G)), array(draw, (B, H), values(-1.0, 1.0)),
              array(draw, (G, H), values(-1.0, 1.0))]
    if draw(st.booleans()):
        inputs.append(array(draw, (G,), values(-1.0, 1.0)))
    mask = None
    if draw(st.booleans()):
        lengths = np.array(draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
        mask = np.arange(T)[:, None] < lengths[None, :]
    kwargs = {"mask": mask, "reverse": draw(st.booleans()), "mode": mode}
    if mode == "relu":  # keep every pre-activation off relu's kink at 0
        pre = []
        np_recurrence(*inputs[:3], inputs[3] if len(inputs) > 3 else None, preactivations=pre, **kwargs)
        assume(min(np.abs(p).min() for p in pre) > 1e-3)
    return Case(tuple(inputs), kwargs)


def _recurrence(x_proj, h0, weight_hh, *bias, mask, reverse, mode):
    return Function.registry["Recurrence"].apply(x_proj, h0, weight_hh, bias[0] if bias else None,
                                                 mask=mask, reverse=reverse, mode=mode)


def _np_recurrence(x_proj, h0, weight_hh, *bias, mask, reverse, mode):
    return np_recurrence(x_proj, h0, weight_hh, bias[0] if bias else None, mask, reverse, mode)


def recurrence_composed(x_proj, h0, weight_hh, *bias, mask, reverse, mode):
    """The same recurrence from primitive ops: matmul, sigmoid, tanh, relu, where, one step at a time."""
    H = h0.shape[1]
    states, h = {}, h0
    for t in (range(x_proj.shape[0] - 1, -1, -1) if reverse else range(x_proj.shape[0])):
        gh = h @ weight_hh.T + (bias[0] if bias else 0.0)
        xt = x_proj[t]
        if mode == "gru":
            r = (xt[:, :H] + gh[:, :H]).sigmoid()
            z = (xt[:, H:2 * H] + gh[:, H:2 * H]).sigmoid()
            n = (xt[:, 2 * H:] + r * gh[:, 2 * H:]).tanh()
            h_new = (1.0 - z) * n + z * h
        else:
            h_new = (xt + gh).tanh() if mode == "tanh" else (xt + gh).relu()
        h = h_new if mask is None else mg.where(mask[t][:, None], h_new, h)
        states[t] = h
    return mg.stack([states[t] for t in range(len(states))], dim=0)


# ----- attention --------------------------------------------------------------------------------
def np_attention(q, k, v, blocked=None, causal=False, scale=None):
    """softmax(q k^T * scale) v, where `blocked` (True = may not attend) and the end-aligned causal mask
    remove pairs; a query with nothing left to attend gives 0."""
    L, S = q.shape[-2], k.shape[-2]
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    allowed = np.ones((L, S), bool)
    if causal:
        allowed &= np.arange(S)[None, :] <= np.arange(L)[:, None] + (S - L)
    if blocked is not None:
        allowed = allowed & ~blocked
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    e = np.where(allowed, np.exp(scores - scores.max(axis=-1, keepdims=True)), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    return np.matmul(e / np.where(total == 0, 1.0, total), v)


@st.composite
def attention_cases(draw):
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=2))
    L, S, E, Ev = (draw(st.integers(1, 4)) for _ in range(4))
    q, k, v = array(draw, lead + (L, E)), array(draw, lead + (S, E)), array(draw, lead + (S, Ev))
    mask = None
    if draw(st.booleans()):
        shape = draw(shape_broadcasting_into(lead + (L, S)))
        mask = draw(hnp.arrays(np.bool_, shape))
    kwargs = {"mask": mask, "causal": draw(st.booleans()), "scale": draw(st.none() | values(0.1, 2.0))}
    return Case((q, k, v), kwargs)


def attention_composed(q, k, v, mask, causal, scale):
    """The same attention from primitive ops: matmul, masked_fill, softmax."""
    L, S = q.shape[-2], k.shape[-2]
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    blocked = np.zeros((L, S), bool) if mask is None else mask
    if causal:
        blocked = blocked | (np.arange(S)[None, :] > np.arange(L)[:, None] + (S - L))
    scores = ((q @ k.transpose(-2, -1)) * scale).masked_fill(blocked, -1e30)
    return scores.softmax(dim=-1).masked_fill(blocked, 0.0) @ v


@st.composite
def packed_attention_cases(draw):
    B, T, H, D = (draw(st.integers(1, 3)) for _ in range(4))
    qkv = array(draw, (B, T, 3 * H * D))
    return Case((qkv,), {"n_head": H, "scale": draw(st.none() | values(0.1, 2.0))})


def _split_heads(qkv, n_head):
    B, T, C3 = qkv.shape
    D = C3 // (3 * n_head)
    return qkv.reshape(B, T, 3, n_head, D).transpose(2, 0, 3, 1, 4)


def _packed_attention(qkv, n_head, scale):
    return Function.registry["PackedCausalSelfAttention"].apply(qkv, n_head, scale=scale)


def _np_packed_attention(qkv, n_head, scale):
    q, k, v = _split_heads(qkv, n_head)
    out = np_attention(q, k, v, None, True, scale)
    B, H, T, D = out.shape
    return out.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def packed_attention_composed(qkv, n_head, scale):
    """Split the packed projection with primitive ops, then the composed attention."""
    B, T, C3 = qkv.shape
    heads = qkv.reshape(B, T, 3, n_head, C3 // (3 * n_head)).permute(2, 0, 3, 1, 4)
    out = attention_composed(heads[0], heads[1], heads[2], None, True, scale)
    return out.transpose(1, 2).reshape(B, T, C3 // 3)


@st.composite
def cached_attention_cases(draw):
    """New positions against a cache of 0-3 earlier ones, with or without a key mask."""
    B, T, H, D = (draw(st.integers(1, 3)) for _ in range(4))
    P = draw(st.integers(0, 3))
    qkv = array(draw, (B, T, 3 * H * D))
    past = (array(draw, (B, H, P, D)), array(draw, (B, H, P, D))) if P else (None, None)
    mask = draw(hnp.arrays(np.bool_, (B, P + T))) if draw(st.booleans()) else None
    return Case((qkv,), {"n_head": H, "past": past, "padding": mask, "scale": draw(st.none() | values(0.1, 2.0))})


def _cached_keys_values(qkv, n_head, past):
    """The keys and values of a KVCache holding `past` once qkv's new positions are stored (a fresh cache for
    every call)."""
    from minigen.kernels import packed_heads
    from minigen.nn import KVCache
    _, k, v = packed_heads(qkv, 3, n_head)
    B, H, T, D = k.shape
    P = 0 if past[0] is None else past[0].shape[2]
    cache = KVCache(1, B, H, D, P + T, qkv.dtype)
    if P:
        cache.update(0, *past)
        cache.advance(P)
    return cache.update(0, k, v)


def _cached_attention(qkv, n_head, past, padding, scale):
    keys, values = _cached_keys_values(qkv.data, n_head, past)
    return Function.registry["CachedCausalSelfAttention"].apply(qkv, keys, values, n_head, padding=padding,
                                                                scale=scale)


def _np_cached_attention(qkv, n_head, past, padding, scale):
    q, k, v = _split_heads(qkv, n_head)
    if past[0] is not None:
        k, v = np.concatenate([past[0], k], axis=2), np.concatenate([past[1], v], axis=2)
    out = np_attention(q, k, v, None if padding is None else padding[:, None, None, :], True, scale)
    B, H, T, D = out.shape
    return out.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def cached_attention_composed(qkv, n_head, past, padding, scale):
    """Split the packed projection with primitive ops, append the new keys and values to the cache's, then
    the composed attention."""
    B, T, C3 = qkv.shape
    heads = qkv.reshape(B, T, 3, n_head, C3 // (3 * n_head)).permute(2, 0, 3, 1, 4)
    k, v = heads[1], heads[2]
    if past[0] is not None:
        k, v = mg.cat([mg.tensor(past[0]), k], dim=2), mg.cat([mg.tensor(past[1]), v], dim=2)
    out = attention_composed(heads[0], k, v, None if padding is None else padding[:, None, None, :], True, scale)
    return out.transpose(1, 2).reshape(B, T, C3 // 3)


@st.composite
def additive_scores_cases(draw):
    B, S, H = (draw(st.integers(1, 3)) for _ in range(3))
    return Case((array(draw, (B, H)), array(draw, (B, S, H)), array(draw, (1, H))))


def np_additive_scores(query, keys, v):
    """Bahdanau's score v . tanh(query + key), written from its definition."""
    return np.tanh(query[:, None, :] + keys) @ v[0]


def additive_scores_composed(query, keys, v):
    """The same scores from primitive ops: a broadcast add, tanh, and a Linear(H, 1)."""
    return mg.nn.functional.linear((query.unsqueeze(1) + keys).tanh(), v).squeeze(-1)


@st.composite
def attention_context_cases(draw):
    B, S, H = (draw(st.integers(1, 3)) for _ in range(3))
    return Case((array(draw, (B, S)), array(draw, (B, S, H))))


def attention_context_composed(weights, values):
    """The same context from primitive ops: a batched matmul of (1, S) rows."""
    return (weights.unsqueeze(1) @ values).squeeze(1)


# ----- the teacher-forced attention decoder -----------------------------------------------------------
@st.composite
def bahdanau_decoder_cases(draw):
    B, T, E, H, S, A = (draw(st.integers(1, 3)) for _ in range(6))
    small = values(-1.0, 1.0)
    inputs = [array(draw, (B, T, E)), array(draw, (B, H), small), array(draw, (B, S, H)), array(draw, (B, S, A)),
              array(draw, (3 * H, E + H), small), array(draw, (3 * H, H), small), array(draw, (A, H), small),
              array(draw, (1, A))]
    if draw(st.booleans()):
        inputs += [array(draw, (3 * H,), small), array(draw, (3 * H,), small)]
    lengths = np.array(draw(st.lists(st.integers(1, S), min_size=B, max_size=B)))
    return Case(tuple(inputs), {"lengths": lengths})


def _bahdanau_decoder(embedded, h0, values, keys, weight_ih, weight_hh, query_weight, v, *biases, lengths):
    bias_ih, bias_hh = biases or (None, None)
    return Function.registry["BahdanauDecoder"].apply(embedded, h0, values, keys, weight_ih, weight_hh, bias_ih,
                                                      bias_hh, query_weight, v, lengths=lengths)


def np_bahdanau_decoder(embedded, h0, values, keys, weight_ih, weight_hh, query_weight, v, *biases, lengths):
    """[h_t; c_t] for every step, written from the equations: a GRU cell on [embedded_t; c_{t-1}], then additive
    attention of W h_t over the real positions of each source."""
    bias_ih, bias_hh = biases or (0.0, None)
    B, T, _ = embedded.shape
    h, context, features = h0, np.zeros_like(h0), []
    real = np.arange(values.shape[1])[None, :] < lengths[:, None]
    for t in range(T):
        x_proj = np.concatenate([embedded[:, t], context], axis=1) @ weight_ih.T + bias_ih
        h, _ = np_cell_step(x_proj, h, weight_hh, bias_hh, "gru")
        scores = np.tanh((h @ query_weight.T)[:, None, :] + keys) @ v[0]
        weights = np.where(real, np.exp(scores - np.where(real, scores, -np.inf).max(axis=1, keepdims=True)), 0.0)
        weights /= weights.sum(axis=1, keepdims=True)
        context = np.einsum("bs,bsh->bh", weights, values)
        features.append(np.concatenate([h, context], axis=1))
    return np.stack(features, axis=1)


def bahdanau_decoder_composed(embedded, h0, values, keys, weight_ih, weight_hh, query_weight, v, *biases, lengths):
    """The same decoder from primitive ops, step by step: cat, matmul, sigmoid, tanh, masked softmax, matmul."""
    bias_ih, bias_hh = biases or (0.0, 0.0)
    H = h0.shape[1]
    padding = np.arange(values.shape[1])[None, :] >= lengths[:, None]
    h, context, features = h0, mg.zeros(h0.shape, dtype=h0.dtype), []
    for t in range(embedded.shape[1]):
        gi = mg.cat([embedded[:, t], context], dim=1) @ weight_ih.T + bias_ih
        gh = h @ weight_hh.T + bias_hh
        r = (gi[:, :H] + gh[:, :H]).sigmoid()
        z = (gi[:, H:2 * H] + gh[:, H:2 * H]).sigmoid()
        n = (gi[:, 2 * H:] + r * gh[:, 2 * H:]).tanh()
        h = (1.0 - z) * n + z * h
        scores = ((h @ query_weight.T).unsqueeze(1) + keys).tanh() @ v[0]
        weights = mg.nn.functional.softmax(scores.masked_fill(padding, -1e30), dim=-1).masked_fill(padding, 0.0)
        context = (weights.unsqueeze(1) @ values).squeeze(1)
        features.append(mg.cat([h, context], dim=1))
    return mg.stack(features, dim=1)


LAYER_OP_SPECS = {
    "Recurrence": OpSpec("Recurrence", recurrence_cases(), _recurrence, _np_recurrence),
    "ScaledDotProductAttention": OpSpec(
        "ScaledDotProductAttention", attention_cases(),
        lambda q, k, v, **kw: Function.registry["ScaledDotProductAttention"].apply(q, k, v, **kw),
        lambda q, k, v, mask, causal, scale: np_attention(q, k, v, mask, causal, scale)),
    "PackedCausalSelfAttention": OpSpec("PackedCausalSelfAttention", packed_attention_cases(),
                                        _packed_attention, _np_packed_attention),
    "CachedCausalSelfAttention": OpSpec("CachedCausalSelfAttention", cached_attention_cases(), _cached_attention,
                                        _np_cached_attention),
    "AdditiveScores": OpSpec("AdditiveScores", additive_scores_cases(),
                             lambda *inputs: Function.registry["AdditiveScores"].apply(*inputs), np_additive_scores),
    "AttentionContext": OpSpec("AttentionContext", attention_context_cases(),
                               lambda *inputs: Function.registry["AttentionContext"].apply(*inputs),
                               lambda weights, values: np.einsum("bs,bsh->bh", weights, values)),
    "BahdanauDecoder": OpSpec("BahdanauDecoder", bahdanau_decoder_cases(), _bahdanau_decoder, np_bahdanau_decoder),
}

LAYER_COMPOSITIONS = {
    "Recurrence": Composition(recurrence_composed),
    "ScaledDotProductAttention": Composition(attention_composed),
    "PackedCausalSelfAttention": Composition(packed_attention_composed),
    "CachedCausalSelfAttention": Composition(cached_attention_composed),
    "AdditiveScores": Composition(additive_scores_composed),
    "AttentionContext": Composition(attention_context_composed),
    "BahdanauDecoder": Composition(bahdanau_decoder_composed),
}


# ----- whole layers -----------------------------------------------------------------------------
def module_call(module, forward):
    """(call, parameter arrays) for gradcheck.check_gradients: call(*inputs, *parameters, **kwargs) runs
    forward(*inputs, **kwargs) with the module's parameters replaced by the given tensors, so that the
    check covers the gradients of the inputs and of every parameter."""
    names = [name for name, _ in module.named_parameters()]
    arrays = [p.data.copy() for p in module.parameters()]

    def call(*tensors, **kwargs):
        split = len(tensors) - len(names)
        for name, t in zip(names, tensors[split:]):
            *path, attr = name.split(".")
            owner = module
            for part in path:
                owner = getattr(owner, part)
            object.__setattr__(owner, attr, t)  # the Tensor stands in for the Parameter during the check
        return forward(*tensors[:split], **kwargs)

    return call, arrays


def flat(*tensors):
    """Several outputs as one vector, for checks that need a single output tensor."""
    return mg.cat([t.reshape(-1) for t in tensors if t is not None])
