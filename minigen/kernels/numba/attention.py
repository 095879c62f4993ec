"""Scaled dot-product attention on (B, H, L, D) arrays: the Numba twin of the reference's pair of kernels.

The reference materializes the (B, H, L, S) scores several times over (4·B·H·L·S bytes each); the
kernels in `attention_heads.py` keep only tiles of them, so memory is O(B·H·L·D). A decoding step (a
few query rows against a KV cache) has no reuse to tile for and takes an untiled path.

The (batch, head) pairs of a call are cut into chunks, one per thread (see `pieces`), and each chunk
allocates its scratch buffers once and runs its pairs in order. One chunk runs without a parallel
region. A pair's results do not depend on its chunk (the scratch buffers' leftovers never reach an
output), so serial and parallel calls compute the same values by the same per-pair code (bit for bit in the
runs measured; the two callers are compiled separately, and under fast-math their copies of that code may
round differently, so the tests allow for rounding).
"""
import numpy as np
from numba import njit, prange

from .. import numpy_kernels
from ..numpy_kernels import packed_heads
from . import FLOAT_DTYPES, pieces
from .attention_heads import backward_head, backward_scratch, decode_head, decode_scratch, forward_head, \
    forward_scratch
from .scalar import FASTMATH

DECODE_MAX_ROWS = 6  # up to this many query rows the untiled path is faster (float32: 4 rows, and not 8)
# B*H*L*S*D below which a call stays serial. On 2 threads prange gains 1.25x at 2**17 and 2x at the small
# GPT's 2**22.6. (It lost inside training steps while NumPy's BLAS ran its own spinning threads beside
# Numba's: see blas.py, which is why products now run on Numba's threads.)
PARALLEL_MIN_WORK = 2 ** 17


@njit(fastmath=FASTMATH, error_model="numpy")
def _forward_heads(q, k, v, S, mask, has_mask, causal, scale, out, lse, first, stop):
    """(batch, head) pairs first .. stop - 1, in order, sharing one set of scratch buffers; keys and values are
    the first S rows of k and v (a KV cache's buffers are read in place: a prefix of rows stays contiguous)."""
    H = q.shape[1]
    if q.shape[2] <= DECODE_MAX_ROWS:
        few = decode_scratch(q, v[:, :, :S])
        for bh in range(first, stop):
            b, h = bh // H, bh % H
            decode_head(q[b, h], k[b, h, :S], v[b, h, :S], mask[b, h], has_mask, causal, scale, out[b, h], lse[b, h],
                        few)
    else:
        scratch = forward_scratch(q, v[:, :, :S])
        for bh in range(first, stop):
            b, h = bh // H, bh % H
            forward_head(q[b, h], k[b, h, :S], v[b, h, :S], mask[b, h], has_mask, causal, scale, out[b, h],
                         lse[b, h], scratch)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _attention_forward(q, k, v, S, mask, has_mask, causal, scale, out, lse):
    _forward_heads(q, k, v, S, mask, has_mask, causal, scale, out, lse, 0, q.shape[0] * q.shape[1])


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)
def _attention_forward_parallel(q, k, v, S, mask, has_mask, causal, scale, out, lse, chunks):
    n = q.shape[0] * q.shape[1]
    for c in prange(chunks):  # one chunk of pairs, and one set of scratch buffers, per thread
        _forward_heads(q, k, v, S, mask, has_mask, causal, scale, out, lse, c * n // chunks, (c + 1) * n // chunks)


@njit(fastmath=FASTMATH, error_model="numpy")
def _backward_heads(dout, q, k, v, out, lse, mask, has_mask, causal, scale, dq, dk, dv, first, stop):
    """(batch, head) pairs first .. stop - 1, in order, sharing one set of scratch buffers."""
    H = q.shape[1]
    scratch = backward_scratch(q, k, v)
    for bh in range(first, stop):
        b, h = bh // H, bh % H
        backward_head(dout[b, h], q[b, h], k[b, h], v[b, h], out[b, h], lse[b, h], mask[b, h], has_mask, causal,
                      scale, dq[b, h], dk[b, h], dv[b, h], scratch)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _attention_backward(dout, q, k, v, out, lse, mask, has_mask, causal, scale, dq, dk, dv):
    _backward_heads(dout, q, k, v, out, lse, mask, has_mask, causal, scale, dq, dk, dv, 0, q.shape[0] * q.shape[1])


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)
def _attention_backward_parallel(dout, q, k, v, out, lse, mask, has_mask, causal, scale, dq, dk, dv, chunks):
    n = q.shape[0] * q.shape[1]
    for c in prange(chunks):
        _backward_heads(dout, q, k, v, out, lse, mask, has_mask, causal, scale, dq, dk, dv, c * n // chunks,
                        (c + 1) * n // chunks)


def _chunks(B, H, L, S, D):
    """How many chunks of (batch, head) pairs a call runs in: 1 (serial) for small calls and decoding steps."""
    return pieces(B * H * L * S * D if L > DECODE_MAX_ROWS else 0, PARALLEL_MIN_WORK, B * H)


_NO_MASK = np.broadcast_to(np.False_, (1, 1, 1, 1))  # never read: has_mask is False


def _prepare(arrays, mask, shape):
    """Contiguous arrays of one float dtype, and the mask as a read-only (B, H, L, S) view."""
    dt = np.result_type(*arrays)
    arrays = [np.ascontiguousarray(a, dtype=dt) for a in arrays]
    has_mask = mask is not None
    mask = np.broadcast_to(np.asarray(mask, dtype=np.bool_) if has_mask else np.False_, shape)
    return arrays, mask, has_mask


def attention_forward(q, k, v, mask, causal, scale):
    """softmax(q k^T * scale) v for q (B, H, L, D), k (B, H, S, D), v (B, H, S, Dv); returns (out, lse).

    mask (broadcastable to (B, H, L, S), True = may not attend) or None; causal: query i sees keys
    j <= i + (S - L). Same contract as the NumPy reference."""
    if np.result_type(q, k, v) not in FLOAT_DTYPES:
        return numpy_kernels.attention_forward(q, k, v, mask, causal, scale)
    B, H, L, D = q.shape
    S, Dv = v.shape[-2], v.shape[-1]
    (q, k, v), mask, has_mask = _prepare((q, k, v), mask, (B, H, L, S))
    out = np.empty((B, H, L, Dv), q.dtype)
    lse = np.empty((B, H, L), q.dtype)
    _forward(q, k, v, S, mask, has_mask, causal, scale, out, lse)
    return out, lse


def cached_attention_forward(q, keys, values, length, mask, scale):
    """attention_forward(q, keys[:, :, :length], values[:, :, :length], mask, True, scale) for a KV cache's
    buffers keys, values (B, H, capacity, D): the filled prefix is read in place (as a slice it is not
    contiguous, and copying it would cost every decoding step the whole cache)."""
    if not q.dtype == keys.dtype == values.dtype or q.dtype not in FLOAT_DTYPES or \
            not (keys.flags.c_contiguous and values.flags.c_contiguous):
        return numpy_kernels.cached_attention_forward(q, keys, values, length, mask, scale)
    B, H, L, D = q.shape
    Dv = values.shape[-1]
    (q,), mask, has_mask = _prepare((q,), mask, (B, H, L, length))
    out = np.empty((B, H, L, Dv), q.dtype)
    lse = np.empty((B, H, L), q.dtype)
    _forward(q, keys, values, length, mask, has_mask, True, scale, out, lse)
    return out, lse


def _forward(q, k, v, S, mask, has_mask, causal, scale, out, lse):
    B, H, L, D = q.shape
    chunks = _chunks(B, H, L, S, D)
    if chunks > 1:
        _attention_forward_parallel(q, k, v, S, mask, has_mask, bool(causal), float(scale), out, lse, chunks)
    else:
        _attention_forward(q, k, v, S, mask, has_mask, bool(causal), float(scale), out, lse)


def attention_backward(dout, q, k, v, out, lse, mask, causal, scale):
    """Gradients (dq, dk, dv) of attention_forward, recomputing the probabilities from lse."""
    if np.result_type(dout, q, k, v, out, lse) not in FLOAT_DTYPES:
        return numpy_kernels.attention_backward(dout, q, k, v, out, lse, mask, causal, scale)
    B, H, L, D = q.shape
    S = k.shape[-2]
    (dout, q, k, v, out, lse), mask, has_mask = _prepare((dout, q, k, v, out, lse), mask, (B, H, L, S))
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    _backward(dout, q, k, v, out, lse, mask, has_mask, causal, scale, dq, dk, dv)
    return dq, dk, dv


def _backward(dout, q, k, v, out, lse, mask, has_mask, causal, scale, dq, dk, dv):
    B, H, L, D = q.shape
    args = (dout, q, k, v, out, lse, mask, has_mask, bool(causal), float(scale), dq, dk, dv)
    chunks = _chunks(B, H, L, k.shape[2], D)
    if chunks > 1:
        _attention_backward_parallel(*args, chunks)
    else:
        _attention_backward(*args)


def packed_attention_forward(qkv, n_head, scale):
    """Causal self-attention of the heads packed in qkv (B, T, 3C): returns (out (B, T, C), lse (B, H, T)).

    The kernels read each head's rows where they lie in qkv and write them where they belong in out:
    no copy into a (B, H, T, D) layout and back."""
    if qkv.dtype not in FLOAT_DTYPES:
        return numpy_kernels.packed_attention_forward(qkv, n_head, scale)
    qkv = np.ascontiguousarray(qkv)
    B, T, C3 = qkv.shape
    q, k, v = packed_heads(qkv, 3, n_head)
    out = np.empty((B, T, C3 // 3), qkv.dtype)
    lse = np.empty((B, n_head, T), qkv.dtype)
    _forward(q, k, v, T, _NO_MASK, False, True, scale, packed_heads(out, 1, n_head)[0], lse)
    return out, lse


def packed_attention_backward(dout, qkv, out, lse, n_head, scale):
    """The gradient dqkv (B, T, 3C) of packed_attention_forward, written in the packed layout."""
    if qkv.dtype not in FLOAT_DTYPES or not dout.dtype == qkv.dtype == out.dtype == lse.dtype:
        return numpy_kernels.packed_attention_backward(dout, qkv, out, lse, n_head, scale)
    dout, qkv, out, lse = (np.ascontiguousarray(a) for a in (dout, qkv, out, lse))
    dqkv = np.empty(qkv.shape, qkv.dtype)
    q, k, v = packed_heads(qkv, 3, n_head)
    dq, dk, dv = packed_heads(dqkv, 3, n_head)
    _backward(packed_heads(dout, 1, n_head)[0], q, k, v, packed_heads(out, 1, n_head)[0],
              lse, _NO_MASK, False, True, scale, dq, dk, dv)
    return dqkv
