"""The per-(batch, head) attention kernels: tiled forward, untiled decoding step, tiled backward.

Forward walks query tiles of TILE_Q rows; for each it streams key tiles of TILE_K keys, keeping every
row's running max and sum of exponentials and rescaling its output accumulator when the max grows
(the online softmax of FlashAttention), and saves only out and the log-sum-exp. Backward walks key
tiles in the outer loop, recomputes the probabilities from the saved log-sum-exp and uses
D = rowsum(dout * out), so dscores = p * (dout v^T - D) needs no softmax Jacobian. With `causal`,
tiles wholly above the diagonal are skipped and those crossing it are cut to the keys their last row
sees. Masked pairs get probability exactly 0 by selection (a masked score is the finite MASKED_SCORE;
exp of -inf is not reliable under fast-math). A query that attends nothing outputs 0 with
lse = MASKED_SCORE, as the reference does.
"""
import math

import numpy as np
from numba import njit

from .scalar import FASTMATH, fast_exp, max_of, select
from .tiles import copy_rows, dot_rows, matmul_acc, transpose_into

MASKED_SCORE = -1e30
TILE_Q = 16  # query rows per tile: small, so that causal tiles crossing the diagonal waste little
TILE_K = 64  # keys per tile: the vectorized dimension of the score products


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


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _exp_row(row, count, running_max):
    """row[:count] = exp(row - m) for m = max(running_max, row[:count]); returns (m, sum of the row).

    While every score seen is masked, m stays MASKED_SCORE, and exp(m - m) = 1 must not count the
    masked keys: such a row becomes 0 (a NaN score stays NaN, so that it reaches the output)."""
    dt = row.dtype.type
    neg = dt(MASKED_SCORE)
    m = max_of(row, count, running_max)
    total = dt(0)
    if m == neg:
        for c in range(count):
            row[c] = select(row[c] != row[c], row[c], dt(0))
            total += row[c]
        return m, total
    for c in range(count):
        e = fast_exp(row[c] - m)
        row[c] = e
        total += e
    return m, total


@njit(fastmath=FASTMATH, error_model="numpy")
def forward_head(q, k, v, mask, has_mask, causal, scale, out, lse):
    """One (batch, head): q (L, D), k (S, D), v (S, Dv), mask (L, S) -> out (L, Dv), lse (L,)."""
    L, D = q.shape
    S, Dv = v.shape
    dt = q.dtype.type
    offset = S - L
    neg = dt(MASKED_SCORE)
    kt = np.empty(((S + TILE_K - 1) // TILE_K, D, TILE_K), q.dtype)  # k^T, one contiguous block per key tile
    for jb in range(kt.shape[0]):
        transpose_into(kt[jb], k, jb * TILE_K, min(TILE_K, S - jb * TILE_K))
    qs = np.empty((TILE_Q, D), q.dtype)
    s = np.empty((TILE_Q, TILE_K), q.dtype)
    acc = np.empty((TILE_Q, Dv), q.dtype)
    row_max = np.empty(TILE_Q, q.dtype)
    row_sum = np.empty(TILE_Q, q.dtype)
    for i0 in range(0, L, TILE_Q):
        nq = min(TILE_Q, L - i0)
        _scaled_rows(qs, q, i0, nq, scale)
        acc[:] = 0
        row_max[:] = neg
        row_sum[:] = 0
        key_end = _visible(i0 + nq - 1, causal, offset, S)
        for j0 in range(0, key_end, TILE_K):
            nk = min(TILE_K, key_end - j0)
            s[:] = 0
            matmul_acc(s, qs, kt[j0 // TILE_K], nq, D, nk)
            for r in range(nq):
                row = s[r]
                seen = max(0, min(nk, _visible(i0 + r, causal, offset, S) - j0))
                if has_mask:
                    _mask_scores(row, mask[i0 + r], j0, seen)
                m_old = row_max[r]
                m_new, total = _exp_row(row, seen, m_old)
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
def decode_head(q, k, v, mask, has_mask, causal, scale, out, lse):
    """forward_head for a few query rows: all scores of a row at once, no tiles, no rescaling."""
    L, D = q.shape
    S, Dv = v.shape
    p = np.empty((1, S), q.dtype)
    q_row = np.empty((1, D), q.dtype)
    acc = np.empty((1, Dv), q.dtype)
    for r in range(L):
        _scaled_rows(q_row, q, r, 1, scale)
        seen = _visible(r, causal, S - L, S)
        scores = p[0]
        dot_rows(scores, k, q_row[0], seen)
        if has_mask:
            _mask_scores(scores, mask[r], 0, seen)
        m, total = _exp_row(scores, seen, q.dtype.type(MASKED_SCORE))
        acc[:] = 0
        matmul_acc(acc, p, v, 1, seen, Dv)
        _finish_row(out[r], lse, r, acc[0], m, total)


@njit(fastmath=FASTMATH, error_model="numpy")
def backward_head(dout, q, k, v, out, lse, mask, has_mask, causal, scale, dq, dk, dv):
    """One (batch, head) of attention_backward; key blocks outside, query blocks inside."""
    L, D = q.shape
    S, Dv = v.shape
    dt = q.dtype.type
    offset = S - L
    neg = dt(MASKED_SCORE)
    delta = np.empty(L, q.dtype)  # D = rowsum(dout * out)
    for i in range(L):
        acc = dt(0)
        for e in range(Dv):
            acc += dout[i, e] * out[i, e]
        delta[i] = acc
    qs = np.empty((L, D), q.dtype)  # q * scale: the scores' and dk's factor
    _scaled_rows(qs, q, 0, L, scale)
    kt = np.empty((D, TILE_K), q.dtype)
    vt = np.empty((Dv, TILE_K), q.dtype)
    p = np.empty((TILE_Q, TILE_K), q.dtype)
    ds = np.empty((TILE_Q, TILE_K), q.dtype)
    pt = np.empty((TILE_K, TILE_Q), q.dtype)  # p^T or ds^T: products need contiguous operands
    dk_acc = np.empty((TILE_K, D), q.dtype)
    dv_acc = np.empty((TILE_K, Dv), q.dtype)
    dq[:] = 0
    for j0 in range(0, S, TILE_K):
        nk = min(TILE_K, S - j0)
        transpose_into(kt, k, j0, nk)
        transpose_into(vt, v, j0, nk)
        dk_acc[:] = 0
        dv_acc[:] = 0
        first_row = max(0, j0 - offset) if causal else 0  # earlier rows see none of these keys
        for i0 in range(first_row, L, TILE_Q):
            nq = min(TILE_Q, L - i0)
            # keys of this block that any row of this query block sees (causal: fewer near the diagonal)
            nk_seen = max(0, min(nk, _visible(i0 + nq - 1, causal, offset, S) - j0))
            p[:] = 0
            matmul_acc(p, qs[i0:], kt, nq, D, nk_seen)
            for r in range(nq):
                row = p[r]
                seen = max(0, min(nk_seen, _visible(i0 + r, causal, offset, S) - j0))
                shift = lse[i0 + r]
                if shift == neg:  # the row attends nothing
                    seen = 0
                if has_mask:
                    _mask_scores(row, mask[i0 + r], j0, seen)
                for c in range(seen):
                    row[c] = fast_exp(row[c] - shift)
                row[seen:nk_seen] = 0
            transpose_into(pt, p, 0, nq)
            matmul_acc(dv_acc, pt, dout[i0:], nk_seen, nq, Dv)
            ds[:] = 0
            matmul_acc(ds, dout[i0:], vt, nq, Dv, nk_seen)
            for r in range(nq):
                d_r = delta[i0 + r]
                p_r, ds_r = p[r], ds[r]
                for c in range(nk_seen):
                    ds_r[c] = p_r[c] * (ds_r[c] - d_r)
            transpose_into(pt, ds, 0, nq)
            matmul_acc(dk_acc, pt, qs[i0:], nk_seen, nq, D)
            matmul_acc(dq[i0:], ds, k[j0:], nq, nk_seen, D)
        copy_rows(dk, j0, dk_acc, nk)
        copy_rows(dv, j0, dv_acc, nk)
    factor = dt(scale)
    for i in range(L):
        dq_i = dq[i]
        for d in range(D):
            dq_i[d] *= factor
