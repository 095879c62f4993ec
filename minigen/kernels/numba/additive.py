"""Additive (Bahdanau) attention scores, v . tanh(query + key), forward and backward in one pass each.

A decoder step of a Seq2Seq model scores its query against every encoder state. As separate ops that is
a broadcast add, a tanh and a product with v (a matrix-vector product through a (B, S, H) temporary), and
in backward the same again plus a sum over S for the query's gradient. Here each (batch row, key) pair
reads its H values once and writes tanh (kept for backward) once; batch rows are split across threads.
"""
import numpy as np
from numba import njit, prange

from .. import numpy_kernels
from . import FLOAT_DTYPES, pieces
from .scalar import FASTMATH, fast_tanh

# B * S * H below which a call stays serial (a parallel region costs a few microseconds).
PARALLEL_MIN_WORK = 2 ** 15


@njit(fastmath=FASTMATH, error_model="numpy")
def _forward_rows(query, keys, v, scores, t, first, stop):
    H = query.shape[1]
    for b in range(first, stop):
        for s in range(keys.shape[1]):
            total = query.dtype.type(0)
            for h in range(H):
                x = fast_tanh(query[b, h] + keys[b, s, h])
                t[b, s, h] = x
                total += x * v[h]
            scores[b, s] = total


@njit(fastmath=FASTMATH, error_model="numpy")
def _backward_rows(dscores, t, v, dquery, dkeys, dv, first, stop):
    """dquery and dkeys of rows first .. stop - 1; their share of dv is added into dv."""
    H = t.shape[2]
    one = t.dtype.type(1)
    for b in range(first, stop):
        for h in range(H):
            dquery[b, h] = 0
        for s in range(t.shape[1]):
            g = dscores[b, s]
            for h in range(H):
                x = t[b, s, h]
                d = g * v[h] * (one - x * x)
                dkeys[b, s, h] = d
                dquery[b, h] += d
                dv[h] += g * x


@njit(cache=True, parallel=True)
def _forward(query, keys, v, scores, t, chunks):
    B = query.shape[0]
    for chunk in prange(chunks):
        _forward_rows(query, keys, v, scores, t, chunk * B // chunks, (chunk + 1) * B // chunks)


@njit(cache=True, parallel=True)
def _backward(dscores, t, v, dquery, dkeys, dv_parts, chunks):
    """Each chunk of rows adds its share of dv into its own row of dv_parts; the caller sums them in order."""
    B = t.shape[0]
    for chunk in prange(chunks):
        dv_parts[chunk, :] = 0
        _backward_rows(dscores, t, v, dquery, dkeys, dv_parts[chunk], chunk * B // chunks,
                       (chunk + 1) * B // chunks)


def _check_shapes(query, keys, v, scores=None):
    """The kernels index without bounds checks: refuse shapes that do not fit together."""
    if len(keys) != 3 or query != (keys[0], keys[2]) or v != keys[2:] or scores not in (None, keys[:2]):
        raise ValueError(f"additive scores: expected query (B, H), keys (B, S, H), v (H,) and scores (B, S), got "
                         f"shapes {query}, {keys}, {v}" + ("" if scores is None else f" and {scores}"))


def _chunks(t):
    B, S, H = t.shape
    return pieces(B * S * H, PARALLEL_MIN_WORK, B)


def additive_scores_forward(query, keys, v):
    """(scores, t) for query (B, H), keys (B, S, H), v (H,) (see `numpy_kernels.additive_scores_forward`)."""
    dt = np.result_type(query, keys, v)
    if dt not in FLOAT_DTYPES:
        return numpy_kernels.additive_scores_forward(query, keys, v)
    _check_shapes(query.shape, keys.shape, v.shape)
    query, keys, v = (np.ascontiguousarray(a, dtype=dt) for a in (query, keys, v))
    scores, t = np.empty(keys.shape[:2], dt), np.empty(keys.shape, dt)
    _forward(query, keys, v, scores, t, _chunks(t))
    return scores, t


def additive_scores_backward(dscores, t, v):
    """(dquery, dkeys, dv) of additive_scores_forward (see `numpy_kernels.additive_scores_backward`)."""
    dt = np.result_type(dscores, t, v)
    if dt not in FLOAT_DTYPES:
        return numpy_kernels.additive_scores_backward(dscores, t, v)
    _check_shapes((t.shape[0], t.shape[2]), t.shape, v.shape, dscores.shape)
    dscores, t, v = (np.ascontiguousarray(a, dtype=dt) for a in (dscores, t, v))
    chunks = _chunks(t)
    dquery, dkeys = np.empty((t.shape[0], t.shape[2]), dt), np.empty(t.shape, dt)
    dv_parts = np.empty((chunks, t.shape[2]), dt)
    _backward(dscores, t, v, dquery, dkeys, dv_parts, chunks)
    dv = dv_parts[0].copy()
    for part in dv_parts[1:]:  # in chunk order: the same sum on every run
        dv += part
    return dquery, dkeys, dv
