"""Scaled dot-product attention on (B, H, L, D) arrays: the Numba twin of the reference's pair of kernels.

The reference materializes the (B, H, L, S) scores several times over (4·B·H·L·S bytes each); the
kernels in `attention_heads.py` keep only tiles of them, so memory is O(B·H·L·D). A decoding step (a
few query rows against a KV cache) has no reuse to tile for and takes an untiled path.

(batch, head) pairs run one after another: on a 2-core machine whose cores also serve OpenBLAS, a
parallel loop lost (see benchmarks/bench_kernels.py). With MINIGEN_NUM_THREADS > 1 (see
`minigen.kernels`) large calls run the pairs in parallel with prange instead.
"""
import numpy as np
from numba import njit, prange

from .. import numpy_kernels
from . import FLOAT_DTYPES
from .attention_heads import backward_head, decode_head, forward_head
from .scalar import FASTMATH

DECODE_MAX_ROWS = 8  # up to this many query rows the untiled path is faster (measured, float32)
PARALLEL_MIN_WORK = 2 ** 25  # B*H*L*S*D (about 1 ms of serial work) below which parallelism is not tried
parallel_threads = 1  # set by numba_kernels.set_num_threads; 1 keeps every call serial


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _attention_forward(q, k, v, mask, has_mask, causal, scale, out, lse):
    B, H, L = q.shape[0], q.shape[1], q.shape[2]
    for bh in range(B * H):
        b, h = bh // H, bh % H
        if L <= DECODE_MAX_ROWS:
            decode_head(q[b, h], k[b, h], v[b, h], mask[b, h], has_mask, causal, scale, out[b, h], lse[b, h])
        else:
            forward_head(q[b, h], k[b, h], v[b, h], mask[b, h], has_mask, causal, scale, out[b, h], lse[b, h])


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)
def _attention_forward_parallel(q, k, v, mask, has_mask, causal, scale, out, lse):
    B, H = q.shape[0], q.shape[1]
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        forward_head(q[b, h], k[b, h], v[b, h], mask[b, h], has_mask, causal, scale, out[b, h], lse[b, h])


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _attention_backward(dout, q, k, v, out, lse, mask, has_mask, causal, scale, dq, dk, dv):
    B, H = q.shape[0], q.shape[1]
    for bh in range(B * H):
        b, h = bh // H, bh % H
        backward_head(dout[b, h], q[b, h], k[b, h], v[b, h], out[b, h], lse[b, h], mask[b, h], has_mask, causal,
                       scale, dq[b, h], dk[b, h], dv[b, h])


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)
def _attention_backward_parallel(dout, q, k, v, out, lse, mask, has_mask, causal, scale, dq, dk, dv):
    B, H = q.shape[0], q.shape[1]
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        backward_head(dout[b, h], q[b, h], k[b, h], v[b, h], out[b, h], lse[b, h], mask[b, h], has_mask, causal,
                       scale, dq[b, h], dk[b, h], dv[b, h])


def _parallel(B, H, L, S, D):
    """Whether a call is large enough, and threads were asked for, to run (batch, head) pairs in parallel."""
    return parallel_threads > 1 and B * H > 1 and L > DECODE_MAX_ROWS and B * H * L * S * D >= PARALLEL_MIN_WORK


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
    run = _attention_forward_parallel if _parallel(B, H, L, S, D) else _attention_forward
    run(q, k, v, mask, has_mask, bool(causal), float(scale), out, lse)
    return out, lse


def attention_backward(dout, q, k, v, out, lse, mask, causal, scale):
    """Gradients (dq, dk, dv) of attention_forward, recomputing the probabilities from lse."""
    if np.result_type(dout, q, k, v, out, lse) not in FLOAT_DTYPES:
        return numpy_kernels.attention_backward(dout, q, k, v, out, lse, mask, causal, scale)
    B, H, L, D = q.shape
    S = k.shape[-2]
    (dout, q, k, v, out, lse), mask, has_mask = _prepare((dout, q, k, v, out, lse), mask, (B, H, L, S))
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    run = _attention_backward_parallel if _parallel(B, H, L, S, D) else _attention_backward
    run(dout, q, k, v, out, lse, mask, has_mask, bool(causal), float(scale), dq, dk, dv)
    return dq, dk, dv
