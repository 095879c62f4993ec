"""Scaled dot-product attention, tiled with an online softmax (FlashAttention style).

The reference materializes the (B, H, L, S) scores several times over: 4·B·H·L·S bytes each. Here
each (batch, head) walks TILE x TILE blocks of scores that live in a small buffer, so memory is
O(B·H·L·D). Forward keeps each query row's running max and sum and rescales its accumulator when the
max grows; it saves only out and the log-sum-exp. Backward walks key blocks in the outer loop,
recomputes the probabilities from the saved log-sum-exp and uses D = rowsum(dout * out), so
dscores = p * (dout v^T - D) needs no softmax Jacobian. Blocks wholly above the causal diagonal are
skipped. Masked pairs get probability exactly 0 by selection, not through exp of -inf. A query that
attends nothing outputs 0 with lse = MASKED_SCORE, as the reference does.

A decoding step (one query row against a KV cache) has no reuse to tile for: it takes a direct path of
dot products over the cache.
"""
import math

import numpy as np
from numba import njit

from .scalar import FASTMATH, fast_exp, max_of
from .tiles import copy_rows, matmul_acc, transpose_into

MASKED_SCORE = -1e30
TILE = 64
DECODE_MAX_ROWS = 1  # query rows up to which the untiled path is used


@njit(fastmath=FASTMATH, error_model="numpy")
def _visible(row, causal, offset, count):
    """How many keys query `row` may see before masking: all `count`, or those at <= row + offset."""
    if not causal:
        return count
    return max(0, min(count, row + offset + 1))


@njit(fastmath=FASTMATH, error_model="numpy")
def _mask_scores(row, mask_row, start, count):
    """row[c] = MASKED_SCORE where mask_row[start + c]; fast_exp then gives exactly 0 there."""
    neg = row.dtype.type(MASKED_SCORE)
    for c in range(count):
        if mask_row[start + c]:
            row[c] = neg


@njit(fastmath=FASTMATH, error_model="numpy")
def _scaled_rows(dst, src, start, count, scale):
    """dst[:count] = src[start:start + count] * scale, in the arrays' dtype."""
    factor = src.dtype.type(scale)
    for r in range(count):
        d, x = dst[r], src[start + r]
        for e in range(x.shape[0]):
            d[e] = x[e] * factor


@njit(fastmath=FASTMATH, error_model="numpy")
def _finish_row(out_row, lse, i, acc, row_max, row_sum):
    """out_row = acc / row_sum and lse[i]; a row that attended nothing gets 0 and MASKED_SCORE."""
    if row_sum == 0:
        out_row[:] = 0
        lse[i] = MASKED_SCORE
    else:  # including a NaN row_sum, which must reach the output
        inv = acc.dtype.type(1) / row_sum
        for e in range(out_row.shape[0]):
            out_row[e] = acc[e] * inv
        lse[i] = row_max + math.log(row_sum)


@njit(fastmath=FASTMATH, error_model="numpy")
def _forward_head(q, k, v, mask, has_mask, causal, scale, out, lse):
    """One (batch, head): q (L, D), k (S, D), v (S, Dv), mask (L, S) -> out (L, Dv), lse (L,)."""
    L, D = q.shape
    S, Dv = v.shape
    dt = q.dtype.type
    offset = S - L
    neg = dt(MASKED_SCORE)
    qs = np.empty((TILE, D), q.dtype)
    kt = np.empty((D, TILE), q.dtype)
    s = np.empty((TILE, TILE), q.dtype)
    acc = np.empty((TILE, Dv), q.dtype)
    row_max = np.empty(TILE, q.dtype)
    row_sum = np.empty(TILE, q.dtype)
    for i0 in range(0, L, TILE):
        nq = min(TILE, L - i0)
        _scaled_rows(qs, q, i0, nq, scale)
        acc[:] = 0
        row_max[:] = neg
        row_sum[:] = 0
        key_end = _visible(i0 + nq - 1, causal, offset, S)
        for j0 in range(0, key_end, TILE):
            nk = min(TILE, key_end - j0)
            transpose_into(kt, k, j0, nk)
            s[:] = 0
            matmul_acc(s, qs, kt, nq, D, nk)
            for r in range(nq):
                row = s[r]
                seen = max(0, min(nk, _visible(i0 + r, causal, offset, S) - j0))
                if has_mask:
                    _mask_scores(row, mask[i0 + r], j0, seen)
                m_old = row_max[r]
                m_new = max_of(row, seen, m_old)
                if m_new == neg:  # nothing attendable yet: exp(neg - neg) would count masked keys as 1
                    total = dt(0)
                    for c in range(seen):
                        row[c] = row[c] if row[c] != row[c] else dt(0)  # masked scores become 0, NaN stays
                        total += row[c]
                    row[seen:nk] = 0
                    row_sum[r] += total
                    continue
                total = dt(0)
                for c in range(seen):
                    p = fast_exp(row[c] - m_new)
                    row[c] = p
                    total += p
                row[seen:nk] = 0
                correction = fast_exp(m_old - m_new)
                row_max[r] = m_new
                row_sum[r] = row_sum[r] * correction + total
                acc_r = acc[r]
                for e in range(Dv):
                    acc_r[e] *= correction
            matmul_acc(acc, s, v[j0:], nq, nk, Dv)
        for r in range(nq):
            _finish_row(out[i0 + r], lse, i0 + r, acc[r], row_max[r], row_sum[r])


@njit(fastmath=FASTMATH, error_model="numpy")
def _decode_head(q, k, v, mask, has_mask, causal, scale, out, lse):
    """_forward_head for a few query rows: dot products straight over the cache, no tiles."""
    L, D = q.shape
    S, Dv = v.shape
    dt = q.dtype.type
    neg = dt(MASKED_SCORE)
    s = np.empty(S, q.dtype)
    q_row = np.empty((1, D), q.dtype)
    acc = np.empty(Dv, q.dtype)
    for r in range(L):
        _scaled_rows(q_row, q, r, 1, scale)
        qr = q_row[0]
        seen = _visible(r, causal, S - L, S)
        m = neg
        for c in range(seen):
            kc = k[c]
            dot = dt(0)
            for d in range(D):
                dot += qr[d] * kc[d]
            s[c] = dot
            if not (has_mask and mask[r, c]):
                m = max(m, dot)
        total = dt(0)
        acc[:] = 0
        for c in range(seen):
            if not (has_mask and mask[r, c]):
                p = fast_exp(s[c] - m)
                total += p
                vc = v[c]
                for e in range(Dv):
                    acc[e] += p * vc[e]
        _finish_row(out[r], lse, r, acc, m, total)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _attention_forward(q, k, v, mask, has_mask, causal, scale, out, lse):
    B, H, L = q.shape[0], q.shape[1], q.shape[2]
    if L <= DECODE_MAX_ROWS:
        for bh in range(B * H):
            b, h = bh // H, bh % H
            _decode_head(q[b, h], k[b, h], v[b, h], mask[b, h], has_mask, causal, scale, out[b, h], lse[b, h])
        return
    for bh in range(B * H):
        b, h = bh // H, bh % H
        _forward_head(q[b, h], k[b, h], v[b, h], mask[b, h], has_mask, causal, scale, out[b, h], lse[b, h])


@njit(fastmath=FASTMATH, error_model="numpy")
def _backward_head(dout, q, k, v, out, lse, mask, has_mask, causal, scale, dq, dk, dv):
    """One (batch, head) of attention_backward; key blocks outside, query blocks inside."""
    L, D = q.shape
    S, Dv = v.shape
    dt = q.dtype.type
    offset = S - L
    neg = dt(MASKED_SCORE)
    delta = np.empty(L, q.dtype)
    for i in range(L):
        acc = dt(0)
        for e in range(Dv):
            acc += dout[i, e] * out[i, e]
        delta[i] = acc
    qs = np.empty((TILE, D), q.dtype)
    kt = np.empty((D, TILE), q.dtype)
    vt = np.empty((Dv, TILE), q.dtype)
    p = np.empty((TILE, TILE), q.dtype)
    ds = np.empty((TILE, TILE), q.dtype)
    dk_acc = np.empty((TILE, D), q.dtype)
    dv_acc = np.empty((TILE, Dv), q.dtype)
    dq[:] = 0
    for j0 in range(0, S, TILE):
        nk = min(TILE, S - j0)
        transpose_into(kt, k, j0, nk)
        transpose_into(vt, v, j0, nk)
        dk_acc[:] = 0
        dv_acc[:] = 0
        first_row = max(0, j0 - offset) if causal else 0  # earlier rows see none of these keys
        for i0 in range(first_row, L, TILE):
            nq = min(TILE, L - i0)
            _scaled_rows(qs, q, i0, nq, scale)
            p[:] = 0
            matmul_acc(p, qs, kt, nq, D, nk)
            for r in range(nq):
                row = p[r]
                seen = max(0, min(nk, _visible(i0 + r, causal, offset, S) - j0))
                shift = lse[i0 + r]
                if shift == neg:  # the row attends nothing
                    seen = 0
                if has_mask:
                    _mask_scores(row, mask[i0 + r], j0, seen)
                for c in range(seen):
                    row[c] = fast_exp(row[c] - shift)
                row[seen:nk] = 0
            matmul_acc(dv_acc, p.T, dout[i0:], nk, nq, Dv)
            ds[:] = 0
            matmul_acc(ds, dout[i0:], vt, nq, Dv, nk)
            for r in range(nq):
                d_r = delta[i0 + r]
                for c in range(nk):
                    ds[r, c] = p[r, c] * (ds[r, c] - d_r)
            matmul_acc(dk_acc, ds.T, qs, nk, nq, D)
            matmul_acc(dq[i0:], ds, k[j0:], nq, nk, D)
        copy_rows(dk, j0, dk_acc, nk)
        copy_rows(dv, j0, dv_acc, nk)
    factor = dt(scale)
    for i in range(L):
        dq_i = dq[i]
        for d in range(D):
            dq_i[d] *= factor


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _attention_backward(dout, q, k, v, out, lse, mask, has_mask, causal, scale, dq, dk, dv):
    B, H = q.shape[0], q.shape[1]
    for bh in range(B * H):
        b, h = bh // H, bh % H
        _backward_head(dout[b, h], q[b, h], k[b, h], v[b, h], out[b, h], lse[b, h], mask[b, h], has_mask, causal,
                       scale, dq[b, h], dk[b, h], dv[b, h])


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
    B, H, L, _ = q.shape
    S, Dv = v.shape[-2], v.shape[-1]
    (q, k, v), mask, has_mask = _prepare((q, k, v), mask, (B, H, L, S))
    out = np.empty((B, H, L, Dv), q.dtype)
    lse = np.empty((B, H, L), q.dtype)
    _attention_forward(q, k, v, mask, has_mask, bool(causal), float(scale), out, lse)
    return out, lse


def attention_backward(dout, q, k, v, out, lse, mask, causal, scale):
    """Gradients (dq, dk, dv) of attention_forward, recomputing the probabilities from lse."""
    B, H, L, _ = q.shape
    S = k.shape[-2]
    (dout, q, k, v, out, lse), mask, has_mask = _prepare((dout, q, k, v, out, lse), mask, (B, H, L, S))
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    _attention_backward(dout, q, k, v, out, lse, mask, has_mask, bool(causal), float(scale), dq, dk, dv)
    return dq, dk, dv
