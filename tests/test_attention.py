"""MultiheadAttention, F.scaled_dot_product_attention, the KV cache and the seq2seq attentions."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigen as mg
from minigen import nn
import minigen.nn.functional as F

from gradcheck import check_gradients, forward_and_grads
from op_specs_layers import flat, module_call, np_attention

F64 = np.float64
SEEDS = st.integers(0, 2 ** 32 - 1)


def np_softmax(scores):
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_mha(state, query, key, value, num_heads, blocked=None, additive=None):
    """Multi-head attention on batch-first inputs from PyTorch's parameters: (output, per-head weights)."""
    if "in_proj_weight" in state:
        w_q, w_k, w_v = np.split(state["in_proj_weight"], 3)
    else:
        w_q, w_k, w_v = state["q_proj_weight"], state["k_proj_weight"], state["v_proj_weight"]
    b_q, b_k, b_v = np.split(state["in_proj_bias"], 3)
    B, L, E = query.shape
    D = E // num_heads

    def heads(x):
        return x.reshape(B, -1, num_heads, D).transpose(0, 2, 1, 3)

    q, k, v = heads(query @ w_q.T + b_q), heads(key @ w_k.T + b_k), heads(value @ w_v.T + b_v)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D)
    if additive is not None:
        scores = scores + additive
    if blocked is not None:
        scores = np.where(blocked, -np.inf, scores)
    weights = np_softmax(scores)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(B, L, E)
    return out @ state["out_proj.weight"].T + state["out_proj.bias"], weights


def random_state(module, rng):
    return {k: rng.standard_normal(v.shape) * 0.5 for k, v in module.state_dict().items()}


# ----- parameters -------------------------------------------------------------------------------
def test_parameter_names_shapes_and_initialisation():
    mg.manual_seed(0)
    mha = nn.MultiheadAttention(64, 4)
    assert {k: v.shape for k, v in mha.state_dict().items()} == {
        "in_proj_weight": (192, 64), "in_proj_bias": (192,), "out_proj.weight": (64, 64), "out_proj.bias": (64,)}
    bound = np.sqrt(6 / (64 + 192))  # xavier_uniform_ over the stacked (3E, E) matrix, as PyTorch
    assert np.abs(mha.in_proj_weight.data).max() <= bound and mha.in_proj_weight.data.std() > 0.9 * bound / np.sqrt(3)
    assert not mha.in_proj_bias.data.any() and not mha.out_proj.bias.data.any()
    assert np.abs(mha.out_proj.weight.data).max() <= 1 / 8
    cross = nn.MultiheadAttention(6, 2, kdim=4, vdim=5)
    assert {k: v.shape for k, v in cross.state_dict().items()} == {
        "q_proj_weight": (6, 6), "k_proj_weight": (6, 4), "v_proj_weight": (6, 5), "in_proj_bias": (18,),
        "out_proj.weight": (6, 6), "out_proj.bias": (6,)}
    assert cross.in_proj_weight is None
    assert list(nn.MultiheadAttention(4, 2, bias=False).state_dict()) == ["in_proj_weight", "out_proj.weight"]


# ----- values against NumPy ---------------------------------------------------------------------
MASK_CASES = ["none", "key_padding", "bool_causal", "float_per_head", "float_padding_and_bool"]


def make_masks(case, rng, B, H, L, S):
    """(key_padding_mask, attn_mask) for the module and (blocked, additive) for the NumPy reference."""
    kpm = am = blocked = additive = None
    padding = np.zeros((B, S), bool)
    padding[0, S - 1] = True
    if case == "key_padding":
        kpm, blocked = padding, padding[:, None, None, :]
    elif case == "bool_causal":
        am = blocked = np.triu(np.ones((L, S), bool), 1)
    elif case == "float_per_head":
        am = rng.standard_normal((B * H, L, S))
        additive = am.reshape(B, H, L, S)
    elif case == "float_padding_and_bool":
        kpm = np.where(padding, -np.inf, 0.0)
        am = blocked = np.triu(np.ones((L, S), bool), 1)
        additive = kpm[:, None, None, :]
    return kpm, am, blocked, additive


@pytest.mark.parametrize("mask_case", MASK_CASES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_matches_numpy_with_weights_loaded_by_name(mask_case, batch_first):
    rng = np.random.default_rng(0)
    B, L, S, E, H = 2, 3, 4, 6, 2
    mha = nn.MultiheadAttention(E, H, batch_first=batch_first, dtype=F64)
    state = random_state(mha, rng)
    mha.load_state_dict(state)
    q, kv = rng.standard_normal((B, L, E)), rng.standard_normal((B, S, E))
    kpm, am, blocked, additive = make_masks(mask_case, rng, B, H, L, S)
    want, want_w = np_mha(state, q, kv, kv, H, blocked, additive)
    to_input = (lambda x: x) if batch_first else (lambda x: x.transpose(1, 0, 2))
    inputs = [mg.tensor(to_input(a)) for a in (q, kv, kv)]
    out, w = mha(*inputs, key_padding_mask=kpm, attn_mask=am)
    np.testing.assert_allclose(to_input(out.data), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w.data, want_w.mean(axis=1), rtol=1e-10, atol=1e-12)
    out, w = mha(*inputs, key_padding_mask=kpm, attn_mask=am, average_attn_weights=False)
    np.testing.assert_allclose(w.data, want_w, rtol=1e-10, atol=1e-12)
    out, w = mha(*inputs, key_padding_mask=kpm, attn_mask=am, need_weights=False)
    assert w is None
    np.testing.assert_allclose(to_input(out.data), want, rtol=1e-10, atol=1e-12)


def test_kdim_vdim_and_unbatched_inputs():
    rng = np.random.default_rng(1)
    mha = nn.MultiheadAttention(4, 2, kdim=3, vdim=5, dtype=F64)
    state = random_state(mha, rng)
    mha.load_state_dict(state)
    q, k, v = rng.standard_normal((1, 2, 4)), rng.standard_normal((1, 3, 3)), rng.standard_normal((1, 3, 5))
    want, want_w = np_mha(state, q, k, v, 2)
    out, w = mha(mg.tensor(q[0]), mg.tensor(k[0]), mg.tensor(v[0]))
    assert out.shape == (2, 4) and w.shape == (2, 3)
    np.testing.assert_allclose(out.data, want[0], rtol=1e-10)
    np.testing.assert_allclose(w.data, want_w[0].mean(axis=0), rtol=1e-10)


def test_is_causal_applies_the_causal_mask():
    rng = np.random.default_rng(2)
    mha = nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64)
    x = mg.tensor(rng.standard_normal((2, 5, 4)))
    causal = np.triu(np.ones((5, 5), bool), 1)
    want, _ = mha(x, x, x, attn_mask=causal)
    got, _ = mha(x, x, x, is_causal=True, need_weights=False)
    np.testing.assert_allclose(got.data, want.data, rtol=1e-12)


def test_a_query_with_every_key_masked_outputs_the_output_bias():
    mha = nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64)
    mha.load_state_dict(random_state(mha, np.random.default_rng(3)))
    x = mg.tensor(np.random.default_rng(4).standard_normal((1, 3, 4)))
    for need_weights in (False, True):
        out, _ = mha(x, x, x, key_padding_mask=np.ones((1, 3), bool), need_weights=need_weights)
        np.testing.assert_allclose(out.data, np.broadcast_to(mha.out_proj.bias.data, (1, 3, 4)), rtol=1e-12)


def test_fused_and_composed_paths_agree_in_values_and_gradients():
    rng = np.random.default_rng(5)
    mha = nn.MultiheadAttention(6, 3, batch_first=True, dtype=F64)
    mha.load_state_dict(random_state(mha, rng))
    kpm = np.array([[False, False, True, True], [False, False, False, False]])
    x = rng.standard_normal((2, 4, 6))
    upstream = rng.standard_normal((2, 4, 6))
    results = []
    for need_weights in (False, True):
        call, params = module_call(mha, lambda x: mha(x, x, x, key_padding_mask=kpm, is_causal=True,
                                                      need_weights=need_weights)[0])
        results.append(forward_and_grads(call, [x] + params, {}, upstream))
    (fused, fused_grads), (composed, composed_grads) = results
    np.testing.assert_allclose(fused, composed, rtol=1e-10, atol=1e-12)
    for f, c in zip(fused_grads, composed_grads):
        np.testing.assert_allclose(f, c, rtol=1e-10, atol=1e-12)


# ----- gradient checks --------------------------------------------------------------------------
@settings(max_examples=15)
@given(B=st.integers(1, 2), L=st.integers(1, 3), S=st.integers(1, 3), self_attention=st.booleans(),
       padding=st.booleans(), causal=st.booleans(), need_weights=st.booleans(), seed=SEEDS)
def test_module_gradients(B, L, S, self_attention, padding, causal, need_weights, seed):
    rng = np.random.default_rng(seed)
    mha = nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64)
    mha.load_state_dict(random_state(mha, rng))
    S = L if self_attention else S
    kpm = rng.random((B, S)) < 0.3 if padding else None

    def forward(q, kv):
        kv = q if self_attention else kv
        out, w = mha(q, kv, kv, key_padding_mask=kpm, is_causal=causal, need_weights=need_weights)
        return flat(out, w)

    call, params = module_call(mha, forward)
    inputs = [rng.standard_normal((B, L, 4)), rng.standard_normal((B, S, 4))]
    check_gradients(call, inputs + params, {}, rng, directions=2)


# ----- the KV cache -----------------------------------------------------------------------------
@pytest.mark.parametrize("first_chunk", [1, 3])
def test_incremental_decoding_with_a_kv_cache_equals_full_causal_attention(first_chunk):
    rng = np.random.default_rng(6)
    mha = nn.MultiheadAttention(8, 2, batch_first=True, dtype=F64)
    mha.load_state_dict(random_state(mha, rng))
    x = rng.standard_normal((2, 6, 8))
    padding = np.zeros((2, 6), bool)
    padding[1, 0] = True  # a left-padded row
    full, _ = mha(*[mg.tensor(x)] * 3, key_padding_mask=padding, is_causal=True, need_weights=False)
    cache, pieces = nn.KVCache(1, 2, 2, 4, capacity=6, dtype=F64), []
    bounds = [0, first_chunk] + list(range(first_chunk + 1, 7))
    for start, stop in zip(bounds, bounds[1:]):
        step = mg.tensor(x[:, start:stop])
        out, _ = mha(step, step, step, key_padding_mask=padding[:, :stop], is_causal=True,
                     need_weights=False, kv_cache=cache)
        assert cache.length == stop
        pieces.append(out.data)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full.data, rtol=1e-10, atol=1e-12)


def test_a_cache_can_be_reordered():
    rng = np.random.default_rng(7)
    mha = nn.MultiheadAttention(4, 2, batch_first=True, dtype=F64)
    x = rng.standard_normal((3, 4, 4))
    cache = nn.KVCache(1, 3, 2, 2, capacity=4, dtype=F64)
    mha(*[mg.tensor(x[:, :3])] * 3, is_causal=True, kv_cache=cache)
    order = np.array([2, 2, 0])
    cache.reorder(order)
    step = mg.tensor(x[order, 3:])
    out, _ = mha(step, step, step, kv_cache=cache, is_causal=True)
    full, _ = mha(*[mg.tensor(x[order])] * 3, is_causal=True)
    np.testing.assert_allclose(out.data, full.data[:, 3:], rtol=1e-10, atol=1e-12)


# ----- F.scaled_dot_product_attention -----------------------------------------------------------
def test_cached_attention_op_checks_its_shapes_against_a_kv_cache():
    """The decoding op reads the filled prefix of a KVCache (views, no copies); mismatched keys or mask raise
    ValueError."""
    from minigen.kernels import packed_heads
    from minigen.nn import KVCache
    from minigen.ops.attention import CachedCausalSelfAttention as Op
    rng = np.random.default_rng(0)
    first, second = (mg.tensor(rng.standard_normal((2, t, 3 * 8)).astype(np.float32)) for t in (3, 1))
    cache = KVCache(1, 2, 2, 4, capacity=8)
    keys, values = cache.update(0, *packed_heads(first.data, 3, 2)[1:])
    cache.advance(3)
    assert keys.shape == values.shape == (2, 2, 3, 4) and np.shares_memory(keys, cache.keys)
    keys, values = cache.update(0, *packed_heads(second.data, 3, 2)[1:])
    cache.advance(1)
    assert keys.shape == (2, 2, 4, 4) and np.shares_memory(values, cache.values) and cache.length == 4
    np.testing.assert_array_equal(keys[:, :, :3], packed_heads(first.data, 3, 2)[1])
    assert Op.apply(second, keys, values, 2, padding=np.zeros((2, 4), bool)).shape == (2, 1, 8)
    with pytest.raises(ValueError, match="cached attention: expected qkv"):
        Op.apply(second, keys[:, :1], values[:, :1], 2)
    with pytest.raises(ValueError, match="cached attention: expected qkv"):
        Op.apply(second, keys, values, 3)
    with pytest.raises(ValueError, match=r"cached attention: padding must have shape \(2, 4\), got \(2, 3\)"):
        Op.apply(second, keys, values, 2, padding=np.zeros((2, 3), bool))


def test_sdpa_masks_follow_pytorchs_conventions():
    rng = np.random.default_rng(8)
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 2))
    allowed = rng.random((3, 5)) < 0.7
    allowed[:, 0] = True
    got = F.scaled_dot_product_attention(mg.tensor(q), mg.tensor(k), mg.tensor(v), attn_mask=allowed)
    np.testing.assert_allclose(got.data, np_attention(q, k, v, blocked=~allowed), rtol=1e-12)
    additive = rng.standard_normal((3, 5))
    got = F.scaled_dot_product_attention(mg.tensor(q), mg.tensor(k), mg.tensor(v), attn_mask=additive, scale=0.3)
    np.testing.assert_allclose(got.data, np_softmax(q @ k.transpose(0, 2, 1) * 0.3 + additive) @ v, rtol=1e-12)


def test_sdpa_causal_is_aligned_to_the_end():
    rng = np.random.default_rng(9)
    q, k, v = (mg.tensor(rng.standard_normal(s)) for s in ((1, 2, 1, 4), (1, 2, 6, 4), (1, 2, 6, 4)))
    np.testing.assert_allclose(F.scaled_dot_product_attention(q, k, v, is_causal=True).data,
                               F.scaled_dot_product_attention(q, k, v).data, rtol=1e-12)
    q2 = mg.tensor(rng.standard_normal((1, 2, 2, 4)))
    got = F.scaled_dot_product_attention(q2, k, v, is_causal=True).data
    # the last query sees every key, the one before all but the last
    np.testing.assert_allclose(got[..., 1, :], F.scaled_dot_product_attention(q2[:, :, 1:], k, v).data[..., 0, :])
    np.testing.assert_allclose(got[..., 0, :], F.scaled_dot_product_attention(
        q2[:, :, :1], k[:, :, :5], v[:, :, :5]).data[..., 0, :], rtol=1e-12)


def test_sdpa_dropout_zeroes_or_rescales_each_weight():
    rng = np.random.default_rng(10)
    q, k = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    weights = np_softmax(q @ k.T / 2)
    mg.manual_seed(0)
    # with value = identity the output is the (dropped) attention weights themselves
    got = F.scaled_dot_product_attention(mg.tensor(q), mg.tensor(k), mg.tensor(np.eye(5)), dropout_p=0.5).data
    kept = got != 0
    assert kept.any() and not kept.all()
    np.testing.assert_allclose(got[kept], 2 * weights[kept], rtol=1e-12)


def test_sdpa_float32_stays_float32():
    q = mg.randn(2, 3, 4)
    assert F.scaled_dot_product_attention(q, q, q, is_causal=True).dtype == np.float32
    assert F.scaled_dot_product_attention(q, q, q, attn_mask=np.zeros((3, 3))).dtype == np.float32


# ----- seq2seq attention ------------------------------------------------------------------------
def np_seq2seq(scores, keys, mask):
    scores = np.where(mask, -np.inf, scores) if mask is not None else scores
    weights = np_softmax(scores)
    return np.einsum("bs,bsh->bh", weights, keys), weights


def bahdanau_reference(state, query, keys, mask):
    hidden = np.tanh((query @ state["W.weight"].T)[:, None, :] + keys @ state["U.weight"].T + state["U.bias"])
    return np_seq2seq((hidden @ state["v.weight"].T)[..., 0], keys, mask)


def luong_reference(state, query, keys, mask):
    projected = keys @ state["W.weight"].T if "W.weight" in state else keys
    return np_seq2seq(np.einsum("bsh,bh->bs", projected, query), keys, mask)


SEQ2SEQ = {
    "bahdanau": (lambda: nn.BahdanauAttention(3, 4, 5, dtype=F64), bahdanau_reference, 3),
    "luong_dot": (lambda: nn.LuongAttention(4, 4, method="dot", dtype=F64), luong_reference, 4),
    "luong_general": (lambda: nn.LuongAttention(3, 4, method="general", dtype=F64), luong_reference, 3),
}


@pytest.mark.parametrize("name", sorted(SEQ2SEQ))
def test_seq2seq_attention_matches_numpy(name):
    make, reference, query_size = SEQ2SEQ[name]
    rng = np.random.default_rng(11)
    module = make()
    state = random_state(module, rng)
    module.load_state_dict(state)
    query, keys = rng.standard_normal((2, query_size)), rng.standard_normal((2, 5, 4))
    mask = np.zeros((2, 5), bool)
    mask[1, 3:] = True
    for m in (None, mask):
        context, weights = module(mg.tensor(query), mg.tensor(keys), mask=m)
        want_context, want_weights = reference(state, query, keys, m)
        np.testing.assert_allclose(context.data, want_context, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(weights.data, want_weights, rtol=1e-10, atol=1e-12)
    projected = module.precompute_keys(mg.tensor(keys))
    reused, _ = module(mg.tensor(query), mg.tensor(keys), mask=mask, projected_keys=projected)
    np.testing.assert_allclose(reused.data, reference(state, query, keys, mask)[0], rtol=1e-10)
    everything_masked = np.ones((2, 5), bool)
    context, weights = module(mg.tensor(query), mg.tensor(keys), mask=everything_masked)
    assert not context.data.any() and not weights.data.any()


@settings(max_examples=10)
@given(name=st.sampled_from(sorted(SEQ2SEQ)), B=st.integers(1, 3), S=st.integers(1, 4), masked=st.booleans(),
       seed=SEEDS)
def test_seq2seq_attention_gradients(name, B, S, masked, seed):
    make, _, query_size = SEQ2SEQ[name]
    rng = np.random.default_rng(seed)
    module = make()
    mask = rng.random((B, S)) < 0.4 if masked else None
    call, params = module_call(module, lambda q, k: flat(*module(q, k, mask=mask)))
    check_gradients(call, [rng.standard_normal((B, query_size)), rng.standard_normal((B, S, 4))] + params, {}, rng)


# ----- bad input ----------------------------------------------------------------------------------
def test_bad_input_raises_errors_naming_the_argument():
    with pytest.raises(ValueError, match=r"embed_dim \(6\) must be a positive multiple of num_heads \(4\)"):
        nn.MultiheadAttention(6, 4)
    mha = nn.MultiheadAttention(4, 2, batch_first=True)
    x = mg.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"query of shape \(2, 3, 5\) must have 4 features"):
        mha(mg.zeros(2, 3, 5), x, x)
    with pytest.raises(ValueError, match=r"key_padding_mask has shape \(2, 4\), expected \(2, 3\)"):
        mha(x, x, x, key_padding_mask=np.zeros((2, 4), bool))
    with pytest.raises(ValueError, match=r"attn_mask has shape \(2, 3\), expected \(3, 3\) or \(4, 3, 3\)"):
        mha(x, x, x, attn_mask=np.zeros((2, 3), bool))
    with pytest.raises(TypeError, match="attn_mask must be boolean or floating"):
        mha(x, x, x, attn_mask=np.zeros((3, 3), int))
    with pytest.raises(ValueError, match=r"kv_cache holds \(batch, heads, head_dim\) \(2, 2, 5\)"):
        mha(x, x, x, kv_cache=nn.KVCache(1, 2, 2, 5, capacity=4))
    with pytest.raises(TypeError, match="kv_cache must be an nn.KVCache"):
        mha(x, x, x, kv_cache=(np.zeros((2, 2, 5)), np.zeros((2, 2, 5))))
    with pytest.raises(ValueError, match="same batch size"):
        mha(x, mg.zeros(1, 3, 4), mg.zeros(1, 3, 4))
    q = mg.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"query \(2, 3, 4\), key \(2, 3, 5\)"):
        F.scaled_dot_product_attention(q, mg.zeros(2, 3, 5), mg.zeros(2, 3, 5))
    with pytest.raises(ValueError, match=r"attn_mask of shape \(2, 2\) does not broadcast"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="dropout_p"):
        F.scaled_dot_product_attention(q, q, q, dropout_p=2.0)
    with pytest.raises(ValueError, match="query_size == key_size"):
        nn.LuongAttention(3, 4)
    luong = nn.LuongAttention(4, 4)
    with pytest.raises(ValueError, match=r"mask must be a boolean array of shape \(2, 3\)"):
        luong(mg.zeros(2, 4), mg.zeros(2, 3, 4), mask=np.zeros((2, 4), bool))
    with pytest.raises(ValueError, match=r"keys has shape \(2, 3, 5\)"):
        luong(mg.zeros(2, 4), mg.zeros(2, 3, 5))


# ----- PyTorch, when it is installed ------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
@pytest.mark.parametrize("mask_case", MASK_CASES)
def test_multihead_attention_matches_torch_values_and_gradients(mask_case):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rng = np.random.default_rng(12)
    B, L, S, E, H = 2, 3, 4, 6, 3
    theirs = torch.nn.MultiheadAttention(E, H, batch_first=True).double()
    ours = nn.MultiheadAttention(E, H, batch_first=True, dtype=F64)
    with torch.no_grad():
        theirs.in_proj_bias.normal_()  # PyTorch also starts the biases at zero: move them
        theirs.out_proj.bias.normal_()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    kpm, am, _, _ = make_masks(mask_case, rng, B, H, L, S)
    q, kv = rng.standard_normal((B, L, E)), rng.standard_normal((B, S, E))
    up_out, up_w = rng.standard_normal((B, L, E)), rng.standard_normal((B, L, S))
    tq, tkv = torch.tensor(q, requires_grad=True), torch.tensor(kv, requires_grad=True)
    t_out, t_w = theirs(tq, tkv, tkv, key_padding_mask=None if kpm is None else torch.tensor(kpm),
                        attn_mask=None if am is None else torch.tensor(am))
    ((t_out * torch.tensor(up_out)).sum() + (t_w * torch.tensor(up_w)).sum()).backward()
    mq, mkv = mg.tensor(q, requires_grad=True), mg.tensor(kv, requires_grad=True)
    m_out, m_w = ours(mq, mkv, mkv, key_padding_mask=kpm, attn_mask=am)
    ((m_out * up_out).sum() + (m_w * up_w).sum()).backward()
    np.testing.assert_allclose(m_out.data, t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m_w.data, t_w.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mq.grad, tq.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mkv.grad, tkv.grad.numpy(), rtol=1e-9, atol=1e-12)
    ours_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(ours_params[name].grad, p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_sdpa_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    q, k, v = rng.standard_normal((2, 2, 4, 3)), rng.standard_normal((2, 2, 4, 3)), rng.standard_normal((2, 2, 4, 5))
    allowed = rng.random((2, 1, 4, 4)) < 0.7
    for kwargs in ({"is_causal": True}, {"attn_mask": allowed}, {"attn_mask": rng.standard_normal((4, 4))},
                   {"scale": 0.7}):
        theirs = torch.nn.functional.scaled_dot_product_attention(
            *map(torch.tensor, (q, k, v)), **{n: torch.tensor(a) if isinstance(a, np.ndarray) else a
                                              for n, a in kwargs.items()})
        ours = F.scaled_dot_product_attention(*map(mg.tensor, (q, k, v)), **kwargs)
        np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-10, atol=1e-12, err_msg=str(kwargs))
