"""The per-(batch, head) attention kernels: tiled forward, untiled decoding step, tiled backward.

The (L, S) scores are cut into tiles of up to TILE_Q query rows by TILE_K keys; every product of a tile
runs as register blocks of ROWS rows (`tiles.py`). Forward: for each query tile the key tiles stream by;
each row keeps its running max and sum of exponentials, and its output accumulator is rescaled when the
max grows (the online softmax of FlashAttention), so only out and the log-sum-exp are saved. When
S <= TILE_K (every short sequence) there is a single key tile: the scores of a query tile are computed at
once and each row gets one plain softmax. Backward walks key tiles outside and query tiles inside,
recomputes the probabilities from the saved log-sum-exp and uses delta = rowsum(dout * out), so
dscores = p * (dout v^T - delta) needs no softmax Jacobian; the dk and dv products read p and dscores
transposed where they lie.

With `causal`, a query tile visits only the key tiles its last row sees, each block of ROWS query rows
gets only the keys its last row sees, and each block of ROWS keys meets only the query rows that see it:
about half the products of the full (L, S) square. Masked pairs get probability exactly 0 by selection
(a masked score is the finite MASKED_SCORE; exp of -inf is not reliable under fast-math). A query that
attends nothing outputs 0 with lse = MASKED_SCORE, as the reference does.

Scratch buffers come from `forward_scratch` and `backward_scratch`, once per call (or per thread), sized
for a head and padded so that products run on whole register blocks; K^T and V^T are built once per head
(forward) or key tile (backward). The padding's contents never reach an output: padded rows and columns
of a product only feed padded rows and columns.
"""
import math

import numpy as np
from numba import njit

from .scalar import FASTMATH, fast_exp, select
from .tiles import ROWS, add_product, add_product_t, copy_rows, dot_rows, lanes, round_up, set_product, transpose_into

MASKED_SCORE = -1e30
TILE_Q = 64  # query rows per tile (a multiple of ROWS)
TILE_K = 128  # keys per tile (a multiple of every dtype's lanes): the vectorized width of the score products


# ----- rows: helpers index 2-D arrays (a row view costs two atomic reference count updates) ----------
@njit(fastmath=FASTMATH, error_model="numpy")
def _visible(row, causal, offset, count):
    """How many keys query `row` may see before masking: all `count`, or those at <= row + offset."""
    if not causal:
        return count
    return max(0, min(count, row + offset + 1))


@njit(fastmath=FASTMATH, error_model="numpy")
def _seen(row, causal, offset, count, j0, nk):
    """How many of the keys j0 .. j0 + nk - 1 query `row` may see before masking."""
    return max(0, min(nk, _visible(row, causal, offset, count) - j0))


@njit(fastmath=FASTMATH, error_model="numpy")
def _block_seen(i0, nq, r, causal, offset, count, j0, nk):
    """_seen for the last query row of the block of ROWS tile rows holding tile row r (tile rows i0 + ...)."""
    return _seen(min(i0 + r - r % ROWS + ROWS, i0 + nq) - 1, causal, offset, count, j0, nk)


@njit(fastmath=FASTMATH, error_model="numpy")
def _mask_row(s, r, mask, i, start, count):
    """s[r, c] = MASKED_SCORE where mask[i, start + c], c < count; fast_exp then gives exactly 0 there."""
    neg = s.dtype.type(MASKED_SCORE)
    for c in range(count):
        if mask[i, start + c]:
            s[r, c] = neg


@njit(fastmath=FASTMATH, error_model="numpy")
def _zero(a, r, start, stop):
    """a[r, start:stop] = 0, as a loop (a slice assignment compiles to Numba's slower broadcasting code)."""
    for c in range(start, stop):
        a[r, c] = 0


@njit(fastmath=FASTMATH, error_model="numpy")
def _zero_rows(a, rows):
    """a[:rows] = 0 (a's rows may be strided views of a wider array)."""
    for r in range(rows):
        _zero(a, r, 0, a.shape[1])


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _row_max(s, r, count, initial):
    """max(initial, s[r, :count]), NaNs skipped: `scalar.max_of` on a row of a 2-D array."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = initial
    count8 = count - count % 8
    for j in range(0, count8, 8):
        m0 = select(s[r, j] > m0, s[r, j], m0)
        m1 = select(s[r, j + 1] > m1, s[r, j + 1], m1)
        m2 = select(s[r, j + 2] > m2, s[r, j + 2], m2)
        m3 = select(s[r, j + 3] > m3, s[r, j + 3], m3)
        m4 = select(s[r, j + 4] > m4, s[r, j + 4], m4)
        m5 = select(s[r, j + 5] > m5, s[r, j + 5], m5)
        m6 = select(s[r, j + 6] > m6, s[r, j + 6], m6)
        m7 = select(s[r, j + 7] > m7, s[r, j + 7], m7)
    for j in range(count8, count):
        m0 = select(s[r, j] > m0, s[r, j], m0)
    return max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _exp_row(s, r, count, width, running_max):
    """s[r, :count] = exp(s[r, :count] - m) for m = max(running_max, s[r, :count]), s[r, count:width] = 0;
    returns (m, the sum). The zeros are selected in the same pass (width is the row's block width: the
    products after it read that far).

    A masked score (exactly MASKED_SCORE) is selected to 0 as well: while every score seen is masked, m
    is MASKED_SCORE too, and exp(m - m) = 1 must not count. A NaN score stays NaN, to reach the output."""
    dt = s.dtype.type
    neg = dt(MASKED_SCORE)
    m = _row_max(s, r, count, running_max)
    total = dt(0)
    for c in range(width):
        x = s[r, c]
        e = select((c < count) & (x != neg), fast_exp(x - m), dt(0))
        s[r, c] = e
        total += e
    return m, total


@njit(fastmath=FASTMATH, error_model="numpy")
def _finish_rows(acc, stats, out, lse, i0, nq):
    """out[i0 + r] = acc[r] / sum and lse; a row that attended nothing gets 0 and MASKED_SCORE."""
    for r in range(nq):
        i, row_sum = i0 + r, stats[1, r]
        if row_sum == 0:
            _zero(out, i, 0, out.shape[1])
            lse[i] = MASKED_SCORE
        else:  # including a NaN row_sum, which must reach the output
            inv = acc.dtype.type(1) / row_sum
            for e in range(out.shape[1]):
                out[i, e] = acc[r, e] * inv
            lse[i] = stats[0, r] + math.log(row_sum)


# ----- forward ---------------------------------------------------------------------------------------
@njit(fastmath=FASTMATH, error_model="numpy")
def _padded(buffer, a):
    """`a`, or when the caller sized `buffer` for a padded copy of it (it has rows), that copy."""
    if buffer.shape[0] == 0:
        return a
    copy_rows(buffer, 0, a, 0, a.shape[0], 1.0)
    return buffer


@njit(fastmath=FASTMATH, error_model="numpy")
def forward_scratch(q, v):
    """Buffers for forward_head on q (.., L, D), v (.., S, Dv): (qp, kt, vp, s, acc, stats).

    qp and vp are padded copies of q and v for shapes that are not whole register blocks (else empty)."""
    L, D = q.shape[-2], q.shape[-1]
    S, Dv = v.shape[-2], v.shape[-1]
    w, dt = lanes(q), q.dtype
    tq, tk, dvp = min(TILE_Q, round_up(L, ROWS)), min(TILE_K, round_up(S, max(w, ROWS))), round_up(Dv, w)
    qp = np.zeros((round_up(L, ROWS) if L % ROWS else 0, D), dt)
    kt = np.zeros(((S + tk - 1) // tk, D, tk), dt)  # k^T * scale, one contiguous block per key tile
    vp = np.zeros((S if Dv < dvp else 0, dvp), dt)
    return qp, kt, vp, np.zeros((tq, tk), dt), np.zeros((tq, dvp), dt), np.zeros((2, tq), dt)


@njit(fastmath=FASTMATH, error_model="numpy")
def forward_head(q, k, v, mask, has_mask, causal, scale, out, lse, scratch):
    """One (batch, head): q (L, D), k (S, D), v (S, Dv), mask (L, S) -> out (L, Dv), lse (L,)."""
    qp, kt, vp, s, acc, stats = scratch
    L, S = q.shape[0], k.shape[0]
    tk = kt.shape[2]
    for jb in range(kt.shape[0]):
        transpose_into(kt[jb], k, jb * tk, min(tk, S - jb * tk), scale)
    qb, vb = _padded(qp, q), _padded(vp, v)
    for i0 in range(0, L, s.shape[0]):
        nq = min(s.shape[0], L - i0)
        _forward_tile(qb, kt, vb, mask, has_mask, causal, S - L, i0, nq, s, acc, stats)
        _finish_rows(acc, stats, out, lse, i0, nq)


@njit(fastmath=FASTMATH, error_model="numpy")
def _forward_tile(q, kt, v, mask, has_mask, causal, offset, i0, nq, s, acc, stats):
    """Query rows i0 .. i0 + nq - 1 against every key they see: acc = the unnormalized output rows,
    stats = (row max, row sum of exponentials)."""
    S, D, tk, w = v.shape[0], q.shape[1], kt.shape[2], lanes(q)
    rows = round_up(nq, ROWS)
    _zero_rows(acc, rows)
    for r in range(nq):
        stats[0, r], stats[1, r] = MASKED_SCORE, 0
    for j0 in range(0, _visible(i0 + nq - 1, causal, offset, S), tk):
        nk = min(tk, S - j0)
        kb = kt[j0 // tk]
        for g in range(0, rows, ROWS):  # the scores each block of rows sees
            cols = _block_seen(i0, nq, g, causal, offset, S, j0, nk)
            if cols > 0:
                set_product(s, g, q, i0 + g, 0, kb, 0, ROWS, D, round_up(cols, w))
        for r in range(nq):
            seen = _seen(i0 + r, causal, offset, S, j0, nk)
            if has_mask:
                _mask_row(s, r, mask, i0 + r, j0, seen)
            m_old = stats[0, r]
            width = round_up(_block_seen(i0, nq, r, causal, offset, S, j0, nk), w)
            m_new, total = _exp_row(s, r, seen, width, m_old)
            if j0 > 0:  # an earlier key tile: rescale what it added to the new max
                correction = fast_exp(m_old - m_new)
                total += stats[1, r] * correction
                for e in range(acc.shape[1]):
                    acc[r, e] *= correction
            stats[0, r], stats[1, r] = m_new, total
        for g in range(0, rows, ROWS):
            cols = _block_seen(i0, nq, g, causal, offset, S, j0, nk)
            if cols > 0:
                add_product(acc, g, s, g, 0, v, j0, ROWS, cols, acc.shape[1])


@njit(fastmath=FASTMATH, error_model="numpy")
def decode_scratch(q, v):
    """Buffers for decode_head on q (.., L, D), v (.., S, Dv): one row each of scores, query and output."""
    dt = q.dtype
    return np.zeros((1, v.shape[-2]), dt), np.zeros((1, q.shape[-1]), dt), np.zeros((1, v.shape[-1]), dt), \
        np.zeros((2, 1), dt)


@njit(fastmath=FASTMATH, error_model="numpy")
def decode_head(q, k, v, mask, has_mask, causal, scale, out, lse, scratch):
    """forward_head for a few query rows: all scores of a row at once, no tiles, no K^T to build (which
    would cost as much as the row's products)."""
    p, q_row, acc, stats = scratch
    L, S, Dv = q.shape[0], v.shape[0], v.shape[1]
    for r in range(L):
        copy_rows(q_row, 0, q, r, 1, scale)
        seen = _visible(r, causal, S - L, S)
        dot_rows(p, k, q_row, seen)
        if has_mask:
            _mask_row(p, 0, mask, r, 0, seen)
        stats[0, 0], stats[1, 0] = _exp_row(p, 0, seen, seen, q.dtype.type(MASKED_SCORE))
        _zero(acc, 0, 0, Dv)
        for j in range(seen):
            p_j = p[0, j]
            for e in range(Dv):
                acc[0, e] += p_j * v[j, e]
        _finish_rows(acc, stats, out, lse, r, 1)


# ----- backward --------------------------------------------------------------------------------------
@njit(fastmath=FASTMATH, error_model="numpy")
def backward_scratch(q, k, v):
    """Buffers for backward_head on q (.., L, D), k (.., S, D), v (.., S, Dv): (per head, per key tile).

    Per head: padded copies of q, dout and k, and padded dq, dk, dv accumulators, for shapes that are
    not whole register blocks (else empty: the arrays themselves serve), and delta. Per key tile:
    k^T * scale, v^T, p and ds."""
    L, D = q.shape[-2], q.shape[-1]
    S, Dv = v.shape[-2], v.shape[-1]
    w, dt = lanes(q), q.dtype
    tq, tk = min(TILE_Q, round_up(L, ROWS)), min(TILE_K, round_up(S, max(w, ROWS)))
    lp, sp, dp, dvp = round_up(L, ROWS), round_up(S, ROWS), round_up(D, w), round_up(Dv, w)
    q_pad, k_pad, v_pad = L < lp or D < dp, S < sp or D < dp, S < sp or Dv < dvp
    heads = (np.zeros((lp if q_pad else 0, dp), dt), np.zeros((lp if L < lp or Dv < dvp else 0, dvp), dt),
             np.zeros((S if D < dp else 0, dp), dt),  # q, dout, k
             np.zeros((lp if q_pad else 0, dp), dt), np.zeros((sp if k_pad else 0, dp), dt),
             np.zeros((sp if v_pad else 0, dvp), dt), np.zeros(L, dt))  # dq, dk, dv, delta
    keys = (np.zeros((D, tk), dt), np.zeros((Dv, tk), dt), np.zeros((tq, tk), dt), np.zeros((tq, tk), dt))
    return heads, keys


@njit(fastmath=FASTMATH, error_model="numpy")
def _accumulator(buffer, a):
    """A zeroed accumulator for the output `a`: `a` itself, or the padded `buffer` when it has rows."""
    acc = a if buffer.shape[0] == 0 else buffer
    _zero_rows(acc, acc.shape[0])
    return acc


@njit(fastmath=FASTMATH, error_model="numpy")
def backward_head(dout, q, k, v, out, lse, mask, has_mask, causal, scale, dq, dk, dv, scratch):
    """One (batch, head) of attention_backward; key tiles outside, query tiles inside.

    ds carries the scale (dq = ds k, dk = ds^T q), and k^T carries it for the scores, as in forward."""
    (qp, dop, kp, dq_pad, dk_pad, dv_pad, delta), keys = scratch
    kt, vt = keys[0], keys[1]
    L, S = q.shape[0], k.shape[0]
    tk, tq = kt.shape[1], keys[2].shape[0]
    qb, dob, kb = _padded(qp, q), _padded(dop, dout), _padded(kp, k)
    grads = _accumulator(dq_pad, dq), _accumulator(dk_pad, dk), _accumulator(dv_pad, dv)
    for i in range(L):
        acc = q.dtype.type(0)
        for e in range(dout.shape[1]):
            acc += dout[i, e] * out[i, e]
        delta[i] = acc
    for j0 in range(0, S, tk):
        nk = min(tk, S - j0)
        transpose_into(kt, k, j0, nk, scale)
        transpose_into(vt, v, j0, nk, 1.0)
        first = max(0, j0 - (S - L)) if causal else 0  # earlier rows see none of these keys
        for i0 in range(first - first % ROWS, L, tq):
            _backward_tile(qb, dob, kb, lse, delta, mask, has_mask, causal, S - L, scale, i0, min(tq, L - i0),
                           j0, nk, keys, grads)
    for buffer, grad, rows in ((dq_pad, dq, L), (dk_pad, dk, S), (dv_pad, dv, S)):
        if buffer.shape[0]:
            copy_rows(grad, 0, buffer, 0, rows, 1.0)


@njit(fastmath=FASTMATH, error_model="numpy")
def _backward_tile(q, dout, k, lse, delta, mask, has_mask, causal, offset, scale, i0, nq, j0, nk, keys, grads):
    """Query rows i0 .. i0 + nq - 1 against keys j0 .. j0 + nk - 1: adds their part of dq, dk, dv."""
    kt, vt, p, ds = keys
    dq, dk, dv = grads
    S, D, Dv = k.shape[0], kt.shape[0], vt.shape[0]
    w = max(lanes(q), ROWS)  # widths: whole vectors, and whole blocks of keys for the dk, dv products
    rows = round_up(nq, ROWS)
    neg = q.dtype.type(MASKED_SCORE)
    for g in range(0, rows, ROWS):  # p and dout v^T, for the keys each block of rows sees
        cols = round_up(_block_seen(i0, nq, g, causal, offset, S, j0, nk), w)
        if cols > 0:
            set_product(p, g, q, i0 + g, 0, kt, 0, ROWS, D, cols)
            set_product(ds, g, dout, i0 + g, 0, vt, 0, ROWS, Dv, cols)
    for r in range(nq):
        i = i0 + r
        seen = _seen(i, causal, offset, S, j0, nk)
        shift = lse[i]
        if shift == neg:  # the row attends nothing
            seen = 0
        if has_mask:
            _mask_row(p, r, mask, i, j0, seen)
        d_i, zero, f = delta[i], q.dtype.type(0), q.dtype.type(scale)
        for c in range(round_up(_block_seen(i0, nq, r, causal, offset, S, j0, nk), w)):
            p_c = select(c < seen, fast_exp(p[r, c] - shift), zero)
            p[r, c] = p_c
            ds[r, c] = p_c * (ds[r, c] - d_i) * f
    for g in range(0, rows, ROWS):
        cols = _block_seen(i0, nq, g, causal, offset, S, j0, nk)
        if cols > 0:
            add_product(dq, i0 + g, ds, g, 0, k, j0, ROWS, cols, dq.shape[1])
    for c in range(0, nk, ROWS):  # dv += p^T dout, dk += ds^T q, over the rows that see key c
        t0 = max(0, j0 + c - offset - i0) if causal else 0
        if t0 < nq:
            add_product_t(dv, j0 + c, p, c, t0, dout, i0 + t0, ROWS, nq - t0, dv.shape[1])
            add_product_t(dk, j0 + c, ds, c, t0, q, i0 + t0, ROWS, nq - t0, dk.shape[1])
