"""Every Numba kernel against its NumPy reference, and the backend machinery around them.

Shapes are drawn by Hypothesis to hit sizes 1, primes and non-multiples of the attention tile;
float32 tolerances allow for fast-math reassociation, float64 ones are tight."""
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigen import kernels
from minigen.kernels import numpy_kernels as ref

nb = pytest.importorskip("minigen.kernels.numba_kernels")
import minigen.kernels.numba as nb_package  # noqa: E402
from minigen.kernels.numba import adam as nb_adam, attention as nb_attention, attention_heads as nb_heads, \
    blas as nb_blas, seq2seq_attention as nb_seq2seq, seq2seq_decode as nb_s2s_decode  # noqa: E402

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def close(actual, expected, dtype, scale=1.0):
    """assert_allclose with the dtype's tolerance; `scale` widens it for long accumulations."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    tol = TOL[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"] * scale, atol=tol["atol"] * scale)


def draw_array(data, shape, dtype, scale=2.0):
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


rows_st = st.sampled_from([1, 2, 3, 7, 13, 31, 64, 67])
features_st = st.sampled_from([1, 2, 5, 16, 17, 31, 64, 65, 97, 128])


# ----- row kernels --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), n=rows_st, f=features_st, affine=st.sampled_from(["both", "weight", "none"]),
       offset=st.sampled_from([0.0, 3.0, 1000.0]))
def test_layer_norm_matches_reference(dtype, data, n, f, affine, offset):
    x = draw_array(data, (n, f), dtype) + dtype(offset)  # a large mean makes the centring matter
    w = draw_array(data, (f,), dtype) if affine != "none" else None
    b = draw_array(data, (f,), dtype) if affine == "both" else None
    y, mean, rstd = nb.layer_norm_forward(x, w, b, 1e-5)
    y_ref, mean_ref, rstd_ref = ref.layer_norm_forward(x, w, b, 1e-5)
    for got, want in ((y, y_ref), (mean, mean_ref), (rstd, rstd_ref)):
        close(got, want, dtype, scale=10)
    dy = draw_array(data, (n, f), dtype)
    dx, dw, db = nb.layer_norm_backward(dy, x, w, mean_ref, rstd_ref)
    dx_ref, dw_ref, db_ref = ref.layer_norm_backward(dy, x, w, mean_ref, rstd_ref)
    close(dx, dx_ref, dtype, scale=10)
    close(db, db_ref, dtype, scale=10)
    assert (dw is None) == (dw_ref is None)
    if dw is not None:
        close(dw, dw_ref, dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log", [False, True])
@given(data=st.data(), n=rows_st, f=features_st, offset=st.sampled_from([0.0, -30.0, 1000.0]))
def test_softmax_and_log_softmax_match_reference(dtype, log, data, n, f, offset):
    name = "log_softmax" if log else "softmax"
    forward, backward = name + "_forward", name + "_backward"
    x = draw_array(data, (n, f), dtype, scale=5.0) + dtype(offset)  # the max is subtracted exactly
    y = getattr(nb, forward)(x)
    y_ref = getattr(ref, forward)(x)
    close(y, y_ref, dtype)
    dy = draw_array(data, (n, f), dtype)
    close(getattr(nb, backward)(dy, y_ref), getattr(ref, backward)(dy, y_ref), dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_keeps_inf_and_nan_semantics(dtype):
    x = np.array([[0.0, -np.inf, 1.0], [np.nan, 0.0, 1.0], [-1e30, 0.0, 2.0]], dtype)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(np.isnan(nb.softmax_forward(x)), np.isnan(ref.softmax_forward(x)))
        close(nb.softmax_forward(x[[0, 2]]), ref.softmax_forward(x[[0, 2]]), dtype)
        assert nb.softmax_forward(x)[0, 1] == 0.0
        log_y, log_ref = nb.log_softmax_forward(x)[0], ref.log_softmax_forward(x)[0]
        assert log_y[1] == -np.inf
        close(log_y[[0, 2]], log_ref[[0, 2]], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), n=rows_st, c=st.sampled_from([1, 2, 3, 7, 65, 97]),
       ignore_index=st.sampled_from([-100, 0, 1]), label_smoothing=st.sampled_from([0.0, 0.1, 0.5]))
def test_cross_entropy_matches_reference(dtype, data, n, c, ignore_index, label_smoothing):
    logits = draw_array(data, (n, c), dtype, scale=4.0)
    seed = data.draw(st.integers(0, 2**31 - 1), label="target seed")
    rng = np.random.default_rng(seed)
    target = rng.integers(0, c, size=n)
    target[rng.random(n) < 0.3] = ignore_index  # some ignored rows, whatever ignore_index is
    losses, lse = nb.cross_entropy_forward(logits, target, ignore_index, label_smoothing)
    losses_ref, lse_ref = ref.cross_entropy_forward(logits, target, ignore_index, label_smoothing)
    close(losses, losses_ref, dtype, scale=10)
    close(lse, lse_ref, dtype)
    assert np.all(losses[target == ignore_index] == 0)
    row_scale = draw_array(data, (n,), dtype)
    grad = nb.cross_entropy_backward(logits, target, lse_ref, row_scale, ignore_index, label_smoothing)
    grad_ref = ref.cross_entropy_backward(logits, target, lse_ref, row_scale, ignore_index, label_smoothing)
    close(grad, grad_ref, dtype)
    assert np.all(grad[target == ignore_index] == 0)


def test_cross_entropy_rejects_a_target_out_of_range():
    with pytest.raises(IndexError, match=r"target\[1\] = 5 is out of range for 3 classes"):
        nb.cross_entropy_forward(np.zeros((2, 3), np.float32), np.array([0, 5]), -100, 0.0)
    with pytest.raises(IndexError, match="out of range"):
        nb.cross_entropy_backward(np.zeros((1, 3)), np.array([-1]), np.zeros(1), np.ones(1), -100, 0.0)


# ----- elementwise kernels ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@given(data=st.data(), shape=st.sampled_from([(1,), (7,), (3, 17), (2, 3, 5), (64, 65)]))
def test_gelu_matches_reference(dtype, approximate, data, shape):
    x = draw_array(data, shape, dtype, scale=4.0)
    close(nb.gelu_forward(x, approximate), ref.gelu_forward(x, approximate), dtype, scale=10)
    dy = draw_array(data, shape, dtype)
    close(nb.gelu_backward(dy, x, approximate), ref.gelu_backward(dy, x, approximate), dtype, scale=10)


def test_gelu_handles_extreme_and_strided_inputs():
    x = np.array([-np.inf, -1e4, -30.0, -8.0, 0.0, 8.0, 30.0, 1e4, np.inf, np.nan], np.float32)
    dy = np.ones_like(x)
    for approximate in ("none", "tanh"):
        with np.errstate(invalid="ignore", over="ignore"):  # the reference meets inf * 0 and inf - inf
            want, want_grad = ref.gelu_forward(x, approximate), ref.gelu_backward(dy, x, approximate)
        # NaN where the reference has NaN (NaN inputs propagate), equal elsewhere
        np.testing.assert_allclose(nb.gelu_forward(x, approximate), want, atol=1e-6)
        np.testing.assert_allclose(nb.gelu_backward(dy, x, approximate), want_grad, atol=1e-6)
        strided = np.arange(12.0).reshape(3, 4).T - 5.0  # a transposed (non-contiguous) view
        close(nb.gelu_forward(strided, approximate), ref.gelu_forward(strided, approximate), np.float64)
        small = strided.astype(np.float32)  # a float64 or broadcast dy still gives x's dtype
        for wide_dy in (np.ones(small.shape), np.float64(2.0)):
            close(nb.gelu_backward(wide_dy, small, approximate), ref.gelu_backward(wide_dy, small, approximate),
                  np.float32)
    with pytest.raises(ValueError, match="approximate"):
        nb.gelu_forward(x, "exact")


def test_fast_exp_sigmoid_and_tanh_match_numpy_and_keep_its_edges():
    from numba import njit
    from minigen.kernels.numba.scalar import FASTMATH, fast_exp, fast_sigmoid, fast_tanh

    @njit(fastmath=FASTMATH, error_model="numpy")
    def apply(x, y):
        for i in range(x.size):
            y[0, i], y[1, i], y[2, i] = fast_exp(x[i]), fast_sigmoid(x[i]), fast_tanh(x[i])

    def run(x):
        y = np.empty((3, x.size), x.dtype)
        apply(x, y)
        return y

    # the documented accuracy of exp: 1e-7 relative in float32, 3e-14 in float64, up to where it overflows
    for dtype, lo, hi, rtol in ((np.float32, -87.3, 88.3, 1e-7), (np.float64, -708.0, 709.4, 3e-14)):
        x = np.concatenate([np.linspace(lo, hi, 100_003), np.linspace(-1.0, 1.0, 10_001)]).astype(dtype)
        exp, sigmoid, tanh = run(x)
        np.testing.assert_allclose(exp, np.exp(x.astype(np.float64)), rtol=rtol, atol=0)
        np.testing.assert_allclose(sigmoid, 1.0 / (1.0 + np.exp(-x.astype(np.float64))), rtol=2 * rtol, atol=0)
        np.testing.assert_allclose(tanh, np.tanh(x), rtol=2 * rtol, atol=3 * rtol)  # 2 s - 1 is absolute near 0
        edges = np.array([-np.inf, -1e30, -1000.0, -0.0, 0.0, 1000.0, 1e30, np.inf, np.nan], dtype)
        exp, sigmoid, tanh = run(edges)
        np.testing.assert_array_equal(exp, [0, 0, 0, 1, 1, np.inf, np.inf, np.inf, np.nan])
        np.testing.assert_array_equal(sigmoid, [0, 0, 0, 0.5, 0.5, 1, 1, 1, np.nan])
        np.testing.assert_array_equal(tanh, [-1, -1, -1, 0, 0, 1, 1, 1, np.nan])


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), n=rows_st, d=st.sampled_from([1, 3, 16, 33]), num=st.sampled_from([1, 2, 5, 50]))
def test_embedding_backward_matches_reference(dtype, data, n, d, num):
    seed = data.draw(st.integers(0, 2**31 - 1), label="ids seed")
    ids = np.random.default_rng(seed).integers(-num, num, size=n)  # repeats and negative ids
    dy = draw_array(data, (n, d), dtype)
    close(nb.embedding_backward(ids, dy, num), ref.embedding_backward(ids, dy, num), dtype)


def test_embedding_backward_rejects_an_id_out_of_range():
    with pytest.raises(IndexError, match=r"ids\[2\] = 4 is out of range for num_embeddings=4"):
        nb.embedding_backward(np.array([0, 1, 4]), np.ones((3, 2)), 4)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), batch=st.sampled_from([1, 3, 8, 131]), hidden=st.sampled_from([1, 5, 32, 67, 256]))
def test_gru_gates_match_reference(dtype, data, batch, hidden):
    """Serial, and with rows split across the threads (131 x 256: above PARALLEL_MIN_ELEMENTS)."""
    gi, gh = draw_array(data, (batch, 3 * hidden), dtype), draw_array(data, (batch, 3 * hidden), dtype)
    h = draw_array(data, (batch, hidden), dtype, scale=0.5)
    for got, want in zip(nb.gru_gates_forward(gi, gh, h), ref.gru_gates_forward(gi, gh, h)):
        close(got, want, dtype)
    _, r, z, n = ref.gru_gates_forward(gi, gh, h)
    dh_new = draw_array(data, (batch, hidden), dtype)
    gh_n = gh[:, 2 * hidden:]  # a strided view, as the op passes it
    for got, want in zip(nb.gru_gates_backward(dh_new, h, r, z, n, gh_n),
                         ref.gru_gates_backward(dh_new, h, r, z, n, gh_n)):
        close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amsgrad", [False, True])
@given(data=st.data(), shape=st.sampled_from([(1,), (7,), (13, 5), (64, 3)]),
       weight_decay=st.sampled_from([0.0, 0.1]))
@settings(max_examples=10)
def test_adamw_update_matches_reference_in_place(dtype, amsgrad, data, shape, weight_decay):
    """Serial, and split in 3 pieces (as large parameters are)."""
    param = draw_array(data, shape, dtype)
    grads = [draw_array(data, shape, dtype) for _ in range(3)]
    start = [param, np.zeros(shape, dtype), np.zeros(shape, dtype), np.zeros(shape, dtype)]

    def three_steps(kernels):
        state = [a.copy() for a in start]
        for step, grad in enumerate(grads, start=1):
            args = (1e-2, 0.9, 0.99, 1e-8, weight_decay, step)
            if amsgrad:
                kernels.adamw_amsgrad_update(state[0], grad, *state[1:], *args)
            else:
                kernels.adamw_update(state[0], grad, state[1], state[2], *args)
        return state
    theirs = three_steps(ref)
    for threads in (1, 3):
        with split_calls(threads):
            for got, want in zip(three_steps(nb), theirs):
                close(got, want, dtype, scale=10)


def test_adamw_update_on_a_non_contiguous_parameter_updates_it_in_place():
    base = np.ones((4, 6))
    param = base[:, ::2]
    grad, m, v = np.full((4, 3), 0.5), np.zeros((4, 3)), np.zeros((4, 3))
    nb.adamw_update(param, grad, m, v, 0.1, 0.9, 0.999, 1e-8, 0.0, 1)
    np.testing.assert_allclose(base[:, ::2], 0.9)  # lr * sign(grad) after one bias-corrected step
    np.testing.assert_allclose(base[:, 1::2], 1.0)


# ----- attention ----------------------------------------------------------------------------------
@st.composite
def attention_case(draw):
    """Shapes around every size the kernels switch at: the decoding path's row count, register blocks of
    4 or 8 rows, vectors of 8 or 16 elements (one or two of them per block: 16, 17, 33), query and key
    tiles (one tile, several, a last partial one); L != S, causal or not, and masks of several broadcast
    shapes."""
    decode, tile_q, tile_k = nb_attention.DECODE_MAX_ROWS, nb_heads.TILE_Q, nb_heads.TILE_K
    B, H = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    L = draw(st.sampled_from([1, 2, 5, decode, decode + 1, 13, tile_q, tile_q + 3, 2 * tile_q + 2]))
    S = draw(st.sampled_from([L, 1, 3, 17, 64, 65, tile_k, tile_k + 3, 2 * tile_k + 1]))
    D, Dv = draw(st.sampled_from([1, 4, 7, 16, 17])), draw(st.sampled_from([1, 5, 16, 33]))
    causal = draw(st.booleans())
    mask_shape = draw(st.sampled_from([None, (B, H, L, S), (B, 1, L, S), (1, 1, 1, S), (L, S)]))
    return B, H, L, S, D, Dv, causal, mask_shape


def attention_inputs(data, case, dtype):
    B, H, L, S, D, Dv, causal, mask_shape = case
    q, k = draw_array(data, (B, H, L, D), dtype), draw_array(data, (B, H, S, D), dtype)
    v = draw_array(data, (B, H, S, Dv), dtype)
    mask = None
    if mask_shape is not None:
        seed = data.draw(st.integers(0, 2**31 - 1), label="mask seed")
        mask = np.random.default_rng(seed).random(mask_shape) < data.draw(st.sampled_from([0.2, 0.9]))
    return q, k, v, mask, causal, 1.0 / float(np.sqrt(D))  # a Python float, as the op passes


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), case=attention_case())
def test_attention_matches_reference(dtype, data, case):
    q, k, v, mask, causal, scale = attention_inputs(data, case, dtype)
    out, lse = nb.attention_forward(q, k, v, mask, causal, scale)
    out_ref, lse_ref = ref.attention_forward(q, k, v, mask, causal, scale)
    close(out, out_ref, dtype, scale=10)
    close(lse, lse_ref, dtype, scale=10)
    dout = draw_array(data, out_ref.shape, dtype)
    grads = nb.attention_backward(dout, q, k, v, out_ref, lse_ref, mask, causal, scale)
    grads_ref = ref.attention_backward(dout, q, k, v, out_ref, lse_ref, mask, causal, scale)
    for got, want in zip(grads, grads_ref):
        close(got, want, dtype, scale=20)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), B=st.integers(1, 2), T=st.sampled_from([1, 5, 8, 13, 64, 67, 130]),
       n_head=st.integers(1, 3), D=st.sampled_from([1, 7, 16, 17, 32]))
@settings(max_examples=20)
def test_packed_attention_matches_reference(dtype, data, B, T, n_head, D):
    """The heads read in place from (B, T, 3C) and written in place to (B, T, C) and (B, T, 3C), strided rows
    in the register-block products; sizes around vectors, blocks, tiles and the decoding path."""
    qkv = draw_array(data, (B, T, 3 * n_head * D), dtype)
    out, lse = nb.packed_attention_forward(qkv, n_head, 0.4)
    out_ref, lse_ref = ref.packed_attention_forward(qkv, n_head, 0.4)
    close(out, out_ref, dtype, scale=10)
    close(lse, lse_ref, dtype, scale=10)
    dout = draw_array(data, out_ref.shape, dtype)
    dqkv = nb.packed_attention_backward(dout, qkv, out_ref, lse_ref, n_head, 0.4)
    close(dqkv, ref.packed_attention_backward(dout, qkv, out_ref, lse_ref, n_head, 0.4), dtype, scale=20)
    assert out.flags.c_contiguous and dqkv.flags.c_contiguous


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), B=st.integers(1, 2), H=st.integers(1, 3), L=st.sampled_from([1, 2, 5, 9]),
       past=st.integers(0, 40), spare=st.integers(0, 5), D=st.sampled_from([1, 7, 16, 17]), masked=st.booleans())
@settings(max_examples=25)
def test_cached_attention_matches_reference(dtype, data, B, H, L, past, spare, D, masked):
    """New queries against the filled prefix of a KV cache's buffers (capacity beyond it holds garbage, which
    must never be read), decoding rows and prompt-sized ones, with and without a key mask."""
    length = past + L
    keys, values = (draw_array(data, (B, H, length + spare, D), dtype) for _ in range(2))
    keys[:, :, length:], values[:, :, length:] = np.nan, np.nan
    q = draw_array(data, (B, H, L, D), dtype)
    mask = np.random.default_rng(length).random((B, 1, 1, length)) < 0.3 if masked else None
    out, lse = nb.cached_attention_forward(q, keys, values, length, mask, 0.3)
    out_ref, lse_ref = ref.attention_forward(q, keys[:, :, :length], values[:, :, :length], mask, True, 0.3)
    close(out, out_ref, dtype, scale=10)
    close(lse, lse_ref, dtype, scale=10)
    ref_out, _ = ref.cached_attention_forward(q, keys, values, length, mask, 0.3)
    close(ref_out, out_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_row_that_attends_nothing_outputs_zero(dtype):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 3, 4)).astype(dtype) for _ in range(3))
    mask = np.zeros((1, 1, 3, 3), bool)
    mask[..., 1, :] = True  # query 1 may attend no key
    out, lse = nb.attention_forward(q, k, v, mask, False, 0.5)
    assert np.all(out[:, :, 1] == 0) and np.all(lse[:, :, 1] == nb.MASKED_SCORE)
    dq, dk, dv = nb.attention_backward(np.ones_like(out), q, k, v, out, lse, mask, False, 0.5)
    assert np.all(dq[:, :, 1] == 0) and np.all(np.isfinite(dk)) and np.all(np.isfinite(dv))
    # causal with more queries than keys: the first L - S queries see nothing
    out, lse = nb.attention_forward(q, k[:, :, :1], v[:, :, :1], None, True, 0.5)
    out_ref, lse_ref = ref.attention_forward(q, k[:, :, :1], v[:, :, :1], None, True, 0.5)
    np.testing.assert_array_equal(out[:, :, :2], 0)
    close(out, out_ref, dtype)
    close(lse, lse_ref, dtype)


def test_attention_propagates_nan():
    q = np.ones((1, 1, 2, 3))
    q[0, 0, 1, 0] = np.nan
    out, _ = nb.attention_forward(q, np.ones((1, 1, 4, 3)), np.ones((1, 1, 4, 2)), None, False, 1.0)
    assert np.all(np.isfinite(out[0, 0, 0])) and np.all(np.isnan(out[0, 0, 1]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_decode_step_equals_the_tiled_path(dtype):
    """One query against a cache takes the untiled path; it must agree with the tiled path's last row."""
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 3, 70, 8)).astype(dtype) for _ in range(3))
    full, full_lse = nb.attention_forward(q, k, v, None, True, 0.3)
    step, step_lse = nb.attention_forward(q[:, :, -1:], k, v, None, True, 0.3)
    assert nb_attention.DECODE_MAX_ROWS >= 1
    close(step, full[:, :, -1:], dtype)
    close(step_lse, full_lse[:, :, -1:], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), B=st.sampled_from([1, 2, 7, 64]), S=st.sampled_from([1, 3, 16]),
       H=st.sampled_from([1, 5, 16, 67]))
@settings(max_examples=25)
def test_additive_scores_match_reference_serial_and_split(dtype, data, B, S, H):
    query, keys, v = draw_array(data, (B, H), dtype), draw_array(data, (B, S, H), dtype), draw_array(data, (H,), dtype)
    dscores = draw_array(data, (B, S), dtype)
    scores_ref, t_ref = ref.additive_scores_forward(query, keys, v)
    grads_ref = ref.additive_scores_backward(dscores, t_ref, v)
    for threads in (1, 2, 3):
        with split_calls(threads):
            scores, t = nb.additive_scores_forward(query, keys, v)
            grads = nb.additive_scores_backward(dscores, t_ref, v)
        close(scores, scores_ref, dtype, scale=10)
        close(t, t_ref, dtype)
        for got, want in zip(grads, grads_ref):
            close(got, want, dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), B=st.sampled_from([1, 2, 7, 64]), S=st.sampled_from([1, 3, 16]),
       H=st.sampled_from([1, 5, 16, 67]))
@settings(max_examples=25)
def test_attention_context_matches_reference_serial_and_split(dtype, data, B, S, H):
    weights, values = draw_array(data, (B, S), dtype), draw_array(data, (B, S, H), dtype)
    dcontext = draw_array(data, (B, H), dtype)
    want = [ref.attention_context_forward(weights, values), *ref.attention_context_backward(dcontext, weights, values)]
    for threads in (1, 2, 3):
        with split_calls(threads):
            got = [nb.attention_context_forward(weights, values), *nb.attention_context_backward(dcontext, weights,
                                                                                                 values)]
        for a, b in zip(got, want):
            close(a, b, dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), B=st.sampled_from([1, 2, 7]), N=st.sampled_from([1, 3, 8]), S=st.sampled_from([1, 3, 16]),
       H=st.sampled_from([1, 5, 16, 67]), Hv=st.sampled_from([1, 6]))
@settings(max_examples=25)
def test_additive_attention_step_matches_reference_serial_and_split(dtype, data, B, N, S, H, Hv):
    query, keys, v = draw_array(data, (N, H), dtype), draw_array(data, (B, S, H), dtype), draw_array(data, (H,), dtype)
    values = draw_array(data, (B, S, Hv), dtype)
    lengths = np.array(data.draw(st.lists(st.integers(1, S), min_size=B, max_size=B)))
    rows = np.array(data.draw(st.lists(st.integers(0, B - 1), min_size=N, max_size=N)))
    want = ref.additive_attention_step(query, keys, v, values, lengths, rows)
    assert np.all(want[1][np.arange(S)[None, :] >= lengths[rows][:, None]] == 0)
    for threads in (1, 2, 3):
        with split_calls(threads):
            got = nb.additive_attention_step(query, keys, v, values, lengths, rows)
        for a, b in zip(got, want):
            assert a.dtype == dtype
            close(a, b, dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), B=st.sampled_from([1, 2, 7, 64]), S=st.sampled_from([1, 3, 16]),
       H=st.sampled_from([1, 5, 16, 67]), Hv=st.sampled_from([1, 6]))
@settings(max_examples=25)
def test_additive_attention_forward_and_backward_match_reference_serial_and_split(dtype, data, B, S, H, Hv):
    query, keys, v = draw_array(data, (B, H), dtype), draw_array(data, (B, S, H), dtype), draw_array(data, (H,), dtype)
    values, dcontext = draw_array(data, (B, S, Hv), dtype), draw_array(data, (B, Hv), dtype)
    lengths = np.array(data.draw(st.lists(st.integers(1, S), min_size=B, max_size=B)))
    start_keys, start_values = draw_array(data, (B, S, H), dtype), draw_array(data, (B, S, Hv), dtype)
    want = ref.additive_attention_forward(query, keys, v, values, lengths)
    want_keys, want_values = start_keys.copy(), start_values.copy()
    want_grads = ref.additive_attention_backward(dcontext, want[1], want[2], v, values, want_keys, want_values)
    padding = np.arange(S)[None, :] >= lengths[:, None]
    assert np.all(want[1][padding] == 0) and np.all(want[2][padding] == 0)
    for threads in (1, 2, 3):
        dkeys, dvalues = start_keys.copy(), start_values.copy()  # backward adds into them
        with split_calls(threads):
            got = nb.additive_attention_forward(query, keys, v, values, lengths)
            got_grads = nb.additive_attention_backward(dcontext, want[1], want[2], v, values, dkeys, dvalues)
        for a, b in zip(got + got_grads + (dkeys, dvalues), want + want_grads + (want_keys, want_values)):
            assert a.dtype == dtype
            close(a, b, dtype, scale=10)


def test_additive_attention_forward_agrees_with_the_decoding_step():
    rng = np.random.default_rng(0)
    query, keys, v, values = (rng.standard_normal(shape) for shape in ((4, 5), (4, 7, 5), (5,), (4, 7, 3)))
    lengths = np.array([7, 1, 3, 5])
    context, weights, _ = nb.additive_attention_forward(query, keys, v, values, lengths)
    step_context, step_weights = nb.additive_attention_step(query, keys, v, values, lengths, np.arange(4))
    np.testing.assert_allclose(context, step_context, rtol=1e-12)
    np.testing.assert_allclose(weights, step_weights, rtol=1e-12)


def test_additive_attention_forward_rejects_bad_shapes_and_lengths():
    args = [np.zeros((2, 4)), np.zeros((2, 5, 4)), np.zeros(4), np.zeros((2, 5, 3))]
    with pytest.raises(ValueError, match="lengths must lie in"):
        nb.additive_attention_forward(*args, np.array([0, 3]))
    with pytest.raises(ValueError, match="expected query"):
        nb.additive_attention_forward(args[0], np.zeros((2, 5, 3)), *args[2:], np.array([1, 3]))
    with pytest.raises(ValueError, match="expected dcontext"):
        nb.additive_attention_backward(np.zeros((2, 3)), np.zeros((2, 5)), np.zeros((2, 5, 4)), np.zeros(4),
                                       np.zeros((2, 5, 3)), np.zeros((2, 5, 4)), np.zeros((2, 5, 2)))


def test_additive_attention_step_rejects_rows_and_lengths_out_of_range():
    args = [np.zeros((2, 4)), np.zeros((3, 5, 4)), np.zeros(4), np.zeros((3, 5, 2))]
    with pytest.raises(ValueError, match="rows"):
        nb.additive_attention_step(*args, np.array([1, 2, 5]), np.array([0, 3]))
    with pytest.raises(ValueError, match="lengths"):
        nb.additive_attention_step(*args, np.array([1, 2, 6]), np.array([0, 1]))
    with pytest.raises(ValueError, match="shapes"):
        nb.additive_attention_step(*args, np.array([1, 2]), np.array([0, 1]))


def _decode_step_args(data, dtype, N, B, S, H, Hv, biases):
    """Random arguments of `seq2seq_decode_step` (E = 3 embedding features, A = 5 attention features, V = 4 tokens)."""
    E, A, V = 3, 5, 4
    weights = (draw_array(data, (V, E), dtype), draw_array(data, (3 * H, E + Hv), dtype, 0.5),
               draw_array(data, (3 * H,), dtype) if biases else None, draw_array(data, (3 * H, H), dtype, 0.5),
               draw_array(data, (3 * H,), dtype) if biases else None, draw_array(data, (A, H), dtype),
               draw_array(data, (A,), dtype), draw_array(data, (V, H + Hv), dtype), draw_array(data, (V,), dtype))
    tokens = np.array(data.draw(st.lists(st.integers(0, V - 1), min_size=N, max_size=N)))
    lengths = np.array(data.draw(st.lists(st.integers(1, S), min_size=B, max_size=B)))
    rows = np.array(data.draw(st.lists(st.integers(0, B - 1), min_size=N, max_size=N)))
    return (tokens, draw_array(data, (N, H), dtype), draw_array(data, (N, Hv), dtype), weights,
            draw_array(data, (B, S, A), dtype), draw_array(data, (B, S, Hv), dtype), lengths, rows)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), N=st.sampled_from([1, 2, 5]), B=st.sampled_from([1, 3]), S=st.sampled_from([1, 4, 9]),
       H=st.sampled_from([1, 7, 16]), Hv=st.sampled_from([2, 6]), biases=st.booleans())
@settings(max_examples=20)
def test_seq2seq_decode_step_matches_reference_serial_and_split(dtype, data, N, B, S, H, Hv, biases):
    """The one-call decoding step against its NumPy composition: logits, the new state and context, the attention
    weights (0 past each source's length); its products on one thread and split across several."""
    args = _decode_step_args(data, dtype, N, B, S, H, Hv, biases)
    want = ref.seq2seq_decode_step(*args)
    assert np.all(want[3][np.arange(S)[None, :] >= args[6][args[7]][:, None]] == 0)
    for threads in (1, 2, 3):
        with split_calls(threads):
            got = nb.seq2seq_decode_step(*args)
        for a, b in zip(got, want):
            close(a, b, dtype, scale=10)


def test_seq2seq_decode_step_takes_other_layouts_through_the_reference():
    """A transposed weight or a float64 state beside float32 weights is computed by the reference, same values."""
    data = np.random.default_rng(0)
    tokens, hidden, context = np.array([1, 0]), data.standard_normal((2, 4)), data.standard_normal((2, 3))
    weights = [data.standard_normal(shape) for shape in ((5, 2), (12, 5), (12,), (12, 4), (12,), (6, 4), (6,),
                                                          (7, 7), (7,))]
    keys, values = data.standard_normal((1, 3, 6)), data.standard_normal((1, 3, 3))
    want = ref.seq2seq_decode_step(tokens, hidden, context, weights, keys, values, np.array([2]), np.array([0, 0]))
    weights[1] = np.asfortranarray(weights[1])
    got = nb.seq2seq_decode_step(tokens, hidden, context, weights, keys, values, np.array([2]), np.array([0, 0]))
    for a, b in zip(got, want):
        close(a, b, np.float64)
    weights = [w.astype(np.float32) for w in weights]
    got = nb.seq2seq_decode_step(tokens, hidden, context, weights, keys, values, np.array([2]), np.array([0, 0]))
    assert got[0].dtype == np.float64


def test_seq2seq_decode_step_rejects_wrong_shapes_and_indices():
    data = np.random.default_rng(0)
    weights = [data.standard_normal(shape) for shape in ((5, 2), (12, 5), (12,), (12, 4), (12,), (6, 4), (6,),
                                                          (7, 7), (7,))]
    args = [np.array([1, 0]), data.standard_normal((2, 4)), data.standard_normal((2, 3)), weights,
            data.standard_normal((1, 3, 6)), data.standard_normal((1, 3, 3)), np.array([2]), np.array([0, 0])]
    for index, value, match in ((0, np.array([1, 5]), r"tokens must lie in \[0, 5\), got values in \[1, 5\]"),
                                (7, np.array([0, 1]), r"rows must lie in \[0, 1\)"),
                                (6, np.array([4]), r"lengths must lie in \[1, 4\)"),
                                (2, np.zeros((2, 4)), r"context must have shape \(2, 3\).*got \(2, 4\)"),
                                (1, np.zeros(4), r"hidden must be 2-D, got shape \(4,\)")):
        wrong = list(args)
        wrong[index] = value
        with pytest.raises(ValueError, match=match):
            nb.seq2seq_decode_step(*wrong)
    wrong = list(args)
    wrong[3] = weights[:3] + [weights[3][:, :3]] + weights[4:]
    with pytest.raises(ValueError, match=r"w_hh must have shape \(12, 4\)"):
        nb.seq2seq_decode_step(*wrong)


@contextlib.contextmanager
def split_calls(threads):
    """Kernels split every call, however small, into `threads` pieces (without needing that many cores)."""
    settings = [(nb_package, "threads", threads), (nb_attention, "PARALLEL_MIN_WORK", 0),
                (nb_blas, "SPLIT_MIN_WORK", 0), (nb_adam, "SPLIT_MIN_SIZE", 0), (nb_seq2seq, "PARALLEL_MIN_WORK", 0),
                (nb_s2s_decode, "PARALLEL_MIN_WORK", 0)]
    saved = [(module, name, getattr(module, name)) for module, name, _ in settings]
    try:
        for module, name, value in settings:
            setattr(module, name, value)
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def test_attention_parallel_path_agrees_with_the_serial_one():
    """With threads, calls run chunks of (batch, head) pairs with prange: every pair is computed by the same
    code as in the serial loop (compiled into each caller separately, so rounding may differ in the last bit)."""
    rng = np.random.default_rng(3)
    q, k, v, dout = (rng.standard_normal((3, 3, 37, 8)).astype(np.float32) for _ in range(4))
    mask = rng.random((3, 1, 37, 37)) < 0.2

    def run():
        out, lse = nb.attention_forward(q, k, v, mask, True, 0.3)
        return (out, lse) + nb.attention_backward(dout, q, k, v, out, lse, mask, True, 0.3)
    qkv, dpacked = (rng.standard_normal((3, 37, 3 * 3 * 8)).astype(np.float32) for _ in range(2))

    def run_packed():
        out, lse = nb.packed_attention_forward(qkv, 3, 0.3)
        return out, lse, nb.packed_attention_backward(dpacked[..., :3 * 8], qkv, out, lse, 3, 0.3)
    serial = run() + run_packed()
    with split_calls(2):
        parallel = run() + run_packed()
    for a, b in zip(serial, parallel):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


# ----- matrix products split across threads ----------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), m=st.sampled_from([1, 2, 7, 16, 67, 128]), k=st.sampled_from([1, 3, 64, 97]),
       n=st.sampled_from([1, 5, 17, 128, 131]), transpose_a=st.booleans(), transpose_b=st.booleans())
@settings(max_examples=30)
def test_gemm_matches_reference_serial_and_split(dtype, data, m, k, n, transpose_a, transpose_b):
    a = draw_array(data, (k, m) if transpose_a else (m, k), dtype)
    b = draw_array(data, (n, k) if transpose_b else (k, n), dtype)
    want = ref.gemm(a, b, transpose_a, transpose_b)
    close(nb.gemm(a, b, transpose_a, transpose_b), want, dtype, scale=10)
    for threads in (2, 3):
        with split_calls(threads):
            close(nb.gemm(a, b, transpose_a, transpose_b), want, dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), m=st.sampled_from([1, 3, 16, 67]), k=st.sampled_from([1, 5, 64]),
       n=st.sampled_from([1, 17, 128]), approximate=st.sampled_from([None, "none", "tanh"]), bias=st.booleans())
@settings(max_examples=30)
def test_linear_and_linear_gelu_match_reference_serial_and_split(dtype, data, m, k, n, approximate, bias):
    """approximate None: the plain Linear kernels. Split in 2 and 3 pieces, the weight and bias gradients are
    sums of per-piece shares."""
    x, w, g = draw_array(data, (m, k), dtype), draw_array(data, (n, k), dtype), draw_array(data, (m, n), dtype)
    b = draw_array(data, (n,), dtype) if bias else None

    def run(kernels):
        if approximate is None:
            return [kernels.linear_forward(x, w, b)], kernels.linear_backward(g, x, w, bias)
        h, y = kernels.linear_gelu_forward(x, w, b, approximate)
        h_ref = ref.linear_gelu_forward(x, w, b, approximate)[0]  # both sides' backward from the same h
        return [h, y], kernels.linear_gelu_backward(g, x, w, h_ref, approximate, bias)
    outs_ref, grads_ref = run(ref)
    for threads in (1, 2, 3):
        with split_calls(threads):
            outs, grads = run(nb)
        for got, want in zip(outs, outs_ref):
            close(got, want, dtype, scale=10)
        assert (grads[2] is None) == (grads_ref[2] is None) == (not bias)
        for got, want in zip(grads, grads_ref):
            if want is not None:
                close(got, want, dtype, scale=20)


@split_calls(2)
def test_gemm_splits_rows_or_columns_and_handles_views():
    """Tall products split their rows, a single row its columns; views and other dtypes still work."""
    rng = np.random.default_rng(8)
    wide = rng.standard_normal((3, 200)).astype(np.float32)
    tall = rng.standard_normal((200, 3)).astype(np.float32)
    for a, b in ((tall, wide), (wide[:1], wide.T), (tall[::2], wide[:, ::3]), (tall.T, tall)):
        close(nb.gemm(a, b, False, False), a @ b, np.float32, scale=10)
    ints = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(nb.gemm(ints, ints, False, True), ints @ ints.T)
    mixed = nb.gemm(tall.astype(np.float64), wide, False, False)
    assert mixed.dtype == np.float64
    with pytest.raises(ValueError):
        nb.gemm(tall, tall, False, False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_heads_sharing_scratch_buffers_stay_independent(dtype):
    """Heads reuse one set of padded scratch buffers: a NaN or inf in one head's keys and values must not
    reach the next heads' results, which equal those of each head computed alone."""
    rng = np.random.default_rng(4)
    q, k, v, dout = (rng.standard_normal((1, 3, 21, 7)).astype(dtype) for _ in range(4))
    k[0, 0], v[0, 0] = np.nan, np.inf
    out, lse = nb.attention_forward(q, k, v, None, True, 0.4)
    grads = nb.attention_backward(dout, q, k, v, out, lse, None, True, 0.4)
    for h in (1, 2):
        alone = nb.attention_forward(q[:, h:h + 1], k[:, h:h + 1], v[:, h:h + 1], None, True, 0.4)
        np.testing.assert_array_equal(out[:, h:h + 1], alone[0])
        np.testing.assert_array_equal(lse[:, h:h + 1], alone[1])
        alone_grads = nb.attention_backward(dout[:, h:h + 1], q[:, h:h + 1], k[:, h:h + 1], v[:, h:h + 1],
                                            alone[0], alone[1], None, True, 0.4)
        for got, want in zip(grads, alone_grads):
            np.testing.assert_array_equal(got[:, h:h + 1], want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_products_match_numpy(dtype):
    """The register-blocked products of the attention kernels, at offsets, over one and two vectors of columns."""
    from minigen.kernels.numba import tiles
    rng = np.random.default_rng(5)
    w = tiles.VECTOR_BYTES // np.dtype(dtype).itemsize
    out = rng.standard_normal((20, 3 * w)).astype(dtype)
    a, a_t, b = (rng.standard_normal(shape).astype(dtype) for shape in ((20, 13), (13, 20), (15, 3 * w)))
    got = out.copy()
    tiles.set_product(got, 4, a, 8, 2, b, 3, 8, 9, 3 * w)
    want = out.copy()
    want[4:12] = a[8:16, 2:11] @ b[3:12]
    close(got, want, dtype)
    got, want = out.copy(), out.copy()
    tiles.add_product(got, 4, a, 8, 2, b, 3, 8, 9, 3 * w)
    want[4:12] += a[8:16, 2:11] @ b[3:12]
    close(got, want, dtype)
    got, want = out.copy(), out.copy()
    tiles.add_product_t(got, 4, a_t, 8, 2, b, 3, 8, 9, 2 * w)
    want[4:12, :2 * w] += a_t[2:11, 8:16].T @ b[3:12, :2 * w]
    close(got, want, dtype)


def test_set_num_threads_validates_and_sets_the_kernels_threads(monkeypatch):
    import numba
    monkeypatch.setattr(nb_package, "threads", nb_package.threads)
    before = numba.get_num_threads()
    try:
        nb.set_num_threads(2)
        assert nb_package.threads == numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    finally:
        nb.set_num_threads(before)
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError, match="positive int"):
            nb.set_num_threads(bad)


def test_other_dtypes_get_the_reference_answer():
    ints = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(nb.softmax_forward(ints), ref.softmax_forward(ints))
    halves = np.linspace(-3, 3, 8, dtype=np.float16)
    np.testing.assert_array_equal(nb.gelu_forward(halves, "tanh"), ref.gelu_forward(halves, "tanh"))
    q = np.ones((1, 1, 2, 2), np.float16)
    with np.errstate(over="ignore"):  # the reference casts MASKED_SCORE to float16
        ours, theirs = nb.attention_forward(q, q, q, None, True, 1.0), ref.attention_forward(q, q, q, None, True, 1.0)
    for got, want in zip(ours, theirs):
        assert got.dtype == want.dtype == np.float16
        np.testing.assert_array_equal(got, want)


def test_kernels_are_deterministic():
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((2, 2, 130, 16)).astype(np.float32) for _ in range(3))
    runs = []
    for _ in range(2):
        out, lse = nb.attention_forward(q, k, v, None, True, 0.25)
        grads = nb.attention_backward(np.ones_like(out), q, k, v, out, lse, None, True, 0.25)
        y, _, _ = nb.layer_norm_forward(q.reshape(-1, 16), None, None, 1e-5)
        loss, lse2 = nb.cross_entropy_forward(q.reshape(-1, 16), np.arange(520) % 16, -100, 0.1)
        with split_calls(2):  # the weight and bias gradients: per-thread shares added in thread order
            linear = nb.linear_backward(q.reshape(-1, 16), k.reshape(-1, 16), v[0, 0, :16], True)
        runs.append((out, lse, *grads, y, loss, lse2, *linear))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


# ----- the backend machinery ----------------------------------------------------------------------
@pytest.fixture
def restore_backend():
    previous = kernels.get_backend()
    yield
    kernels.set_backend(previous)


def test_set_backend_switches_every_kernel(restore_backend):
    kernels.set_backend("numpy")
    assert kernels.get_backend() == "numpy"
    assert kernels.softmax_forward is ref.softmax_forward
    kernels.set_backend("numba")
    assert kernels.get_backend() == "numba"
    assert kernels.softmax_forward is nb.softmax_forward
    assert kernels.MASKED_SCORE == ref.MASKED_SCORE
    with pytest.raises(ValueError, match="'numpy' or 'numba'"):
        kernels.set_backend("cuda")
    with pytest.raises(AttributeError, match="not_a_kernel"):
        kernels.not_a_kernel


def run_python(code, **env):
    """Run `code` in a fresh interpreter with extra environment variables; return its stdout."""
    full_env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    for name in ("MINIGEN_BACKEND", "MINIGEN_NUM_THREADS"):
        if name not in env:
            full_env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_environment_selects_backend_and_threads():
    out = run_python("import numba, minigen.kernels as k; print(k.get_backend(), numba.get_num_threads())",
                     MINIGEN_BACKEND="numpy")
    assert out.split()[0] == "numpy"
    out = run_python("import numba, minigen.kernels as k; print(k.get_backend(), numba.get_num_threads())",
                     MINIGEN_BACKEND="numba", MINIGEN_NUM_THREADS="1")
    assert out.split()[:2] == ["numba", "1"]
    bad = subprocess.run([sys.executable, "-c", "import minigen"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT, "MINIGEN_BACKEND": "gpu"})
    assert bad.returncode != 0 and "MINIGEN_BACKEND" in bad.stderr


def test_thread_setting_caps_the_kernels_and_leaves_the_environment():
    code = ("import os, minigen, minigen.kernels as k, minigen.kernels.numba as n; k.get_backend(); "
            "print(n.threads, os.environ.get('OPENBLAS_NUM_THREADS'))")
    assert run_python(code, MINIGEN_NUM_THREADS="1").split() == ["1", "None"]
    default = run_python(code).split()
    assert default == [str(int(run_python("import numba; print(numba.config.NUMBA_NUM_THREADS)"))), "None"]


def test_a_chosen_compile_target_is_left_alone():
    code = "import minigen.kernels as k; k.get_backend(); import numba; print(numba.config.CPU_FEATURES or '-')"
    # NUMBA_CPU_FEATURES="" hides what this process may have set: the child decides afresh
    assert "prefer-256-bit" not in run_python(code, NUMBA_CPU_FEATURES="", NUMBA_CPU_NAME="generic")
    assert "prefer-256-bit" not in run_python(code, NUMBA_CPU_FEATURES="+sse2")


def test_missing_numba_falls_back_to_numpy_with_one_warning():
    code = """
import sys, warnings
sys.modules["numba"] = None  # `import numba` now raises ImportError
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import numpy as np
    import minigen
    from minigen import kernels
    y = kernels.softmax_forward(np.zeros((2, 3)))
    kernels.set_backend("numba")
    kernels.log_softmax_forward(np.zeros((2, 3)))
warned = sum("Numba backend is unavailable" in str(w.message) for w in caught)
print(kernels.get_backend(), round(float(y.sum()), 6), warned)
"""
    assert run_python(code).split()[-3:] == ["numpy", "2.0", "1"]


def test_read_only_sources_get_a_writable_numba_cache_dir(monkeypatch, tmp_path):
    import numba
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    sources = os.path.join(os.path.dirname(kernels.__file__), "numba")
    real_access = os.access
    monkeypatch.setattr(kernels.os, "access", lambda path, mode: False if path.startswith(sources)
                        else real_access(path, mode))
    expected = str(tmp_path / ".cache" / "minigen" / "numba")
    assert kernels._cache_dir_for_kernels(numba.config) == expected
    assert os.path.isdir(expected)
    assert "NUMBA_CACHE_DIR" not in os.environ


def test_decoder_attention_kernels_refuse_shapes_that_do_not_fit():
    """They index without bounds checks: a mismatch must raise, not write past an array."""
    query, keys = np.ones((4, 8), np.float32), np.ones((4, 2, 4), np.float32)
    with pytest.raises(ValueError, match="expected query"):
        nb.additive_scores_forward(query, keys, np.ones(8, np.float32))
    with pytest.raises(ValueError, match="expected query"):
        nb.additive_scores_backward(np.ones((4, 3), np.float32), keys, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="expected weights"):
        nb.attention_context_forward(np.ones((4, 3), np.float32), keys)
    with pytest.raises(ValueError, match="expected weights"):
        nb.attention_context_backward(np.ones((4, 8), np.float32), np.ones((4, 2), np.float32), keys)


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data(), T=st.sampled_from([1, 2, 7]), B=st.sampled_from([1, 3, 17, 40]), H=st.sampled_from([1, 5, 16]),
       reverse=st.booleans(), masked=st.booleans(), bias=st.booleans())
@settings(max_examples=40)
def test_gru_sequence_matches_reference(dtype, data, T, B, H, reverse, masked, bias):
    x_proj, h0 = draw_array(data, (T, B, 3 * H), dtype), draw_array(data, (B, H), dtype)
    weight_hh = draw_array(data, (3 * H, H), dtype)
    bias_hh = draw_array(data, (3 * H,), dtype) if bias else None
    mask = np.arange(T)[:, None] < np.array(data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B))) \
        if masked else None
    want = ref.gru_sequence_forward(x_proj, h0, weight_hh, bias_hh, mask, reverse)
    got = nb.gru_sequence_forward(x_proj, h0, weight_hh, bias_hh, mask, reverse)
    assert got.dtype == dtype
    close(got, want, dtype, scale=10)
