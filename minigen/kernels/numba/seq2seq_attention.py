"""The attention step of an RNN decoder (`nn.seq2seq_attention`): Bahdanau's additive scores and the
context vector, forward and backward in one pass each.

A decoder step scores its query against every encoder state and sums the states by the softmax weights.
As separate ops, the additive score v . tanh(query + key) is a broadcast add, a tanh and a product with
v through a (B, S, H) temporary, and the context a batch of (1, S) @ (S, H) products; in backward the
same again, plus a sum over S for the query's gradient. Here each (batch row, key) pair reads its H values
once; batch rows are split across threads when a call is large enough (`pieces`), and a call of one piece
runs the row kernel directly: a parallel region of one piece still wakes the thread pool, which cost 15 ms
a call on a loaded 2-core machine against 1 us serial.

Decoding needs no gradient: `additive_attention_step` scores, normalizes and sums in one pass per row with
no (B, S, H) temporary, and reads each beam's keys through a row index instead of a per-beam copy.
"""
import numpy as np
from numba import njit, prange

from .. import numpy_kernels
from . import FLOAT_DTYPES, pieces
from .scalar import FASTMATH, fast_exp, fast_tanh

# B * S * H below which a call stays serial (a parallel region costs a few microseconds).
PARALLEL_MIN_WORK = 2 ** 15


# ----- additive scores ------------------------------------------------------------------------------
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _scores_rows(query, keys, v, scores, t, first, stop):
    H = query.shape[1]
    for b in range(first, stop):
        for s in range(keys.shape[1]):
            total = query.dtype.type(0)
            for h in range(H):
                x = fast_tanh(query[b, h] + keys[b, s, h])
                t[b, s, h] = x
                total += x * v[h]
            scores[b, s] = total


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _scores_backward_rows(dscores, t, v, dquery, dkeys, dv, first, stop):
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
def _scores_forward(query, keys, v, scores, t, chunks):
    B = query.shape[0]
    for chunk in prange(chunks):
        _scores_rows(query, keys, v, scores, t, chunk * B // chunks, (chunk + 1) * B // chunks)


@njit(cache=True, parallel=True)
def _scores_backward(dscores, t, v, dquery, dkeys, dv_parts, chunks):
    """Each chunk of rows adds its share of dv into its own row of dv_parts; the caller sums them in order."""
    B = t.shape[0]
    for chunk in prange(chunks):
        dv_parts[chunk, :] = 0
        _scores_backward_rows(dscores, t, v, dquery, dkeys, dv_parts[chunk], chunk * B // chunks,
                       (chunk + 1) * B // chunks)


def _check_shapes(query, keys, v, scores=None):
    """The kernels index without bounds checks: refuse shapes that do not fit together."""
    if len(keys) != 3 or query != (keys[0], keys[2]) or v != keys[2:] or scores not in (None, keys[:2]):
        raise ValueError(f"additive_scores: expected query (B, H), keys (B, S, H), v (H,) and scores (B, S), got "
                         f"shapes {query}, {keys}, {v}" + ("" if scores is None else f" and {scores}"))


def _float_arrays(*arrays):
    """The arrays, C-contiguous in their common dtype; None when that is not float32 or float64 (the reference
    then answers, in NumPy's dtype)."""
    dt = np.result_type(*arrays)
    return [np.ascontiguousarray(a, dtype=dt) for a in arrays] if dt in FLOAT_DTYPES else None


def _chunks(shape):
    """Chunks of batch rows for a (B, S, H) call."""
    B, S, H = shape
    return pieces(B * S * H, PARALLEL_MIN_WORK, B)


def additive_scores_forward(query, keys, v):
    """(scores, t) for query (B, H), keys (B, S, H), v (H,) (see `numpy_kernels.additive_scores_forward`)."""
    _check_shapes(query.shape, keys.shape, v.shape)
    arrays = _float_arrays(query, keys, v)
    if arrays is None:
        return numpy_kernels.additive_scores_forward(query, keys, v)
    query, keys, v = arrays
    dt = query.dtype
    scores, t = np.empty(keys.shape[:2], dt), np.empty(keys.shape, dt)
    chunks = _chunks(t.shape)
    if chunks == 1:
        _scores_rows(query, keys, v, scores, t, 0, len(t))
    else:
        _scores_forward(query, keys, v, scores, t, chunks)
    return scores, t


def additive_scores_backward(dscores, t, v):
    """(dquery, dkeys, dv) of additive_scores_forward (see `numpy_kernels.additive_scores_backward`)."""
    _check_shapes((t.shape[0], t.shape[2]), t.shape, v.shape, dscores.shape)
    arrays = _float_arrays(dscores, t, v)
    if arrays is None:
        return numpy_kernels.additive_scores_backward(dscores, t, v)
    dscores, t, v = arrays
    dt = t.dtype
    chunks = _chunks(t.shape)
    dquery, dkeys = np.empty((t.shape[0], t.shape[2]), dt), np.empty(t.shape, dt)
    dv_parts = np.empty((chunks, t.shape[2]), dt)
    if chunks == 1:
        dv_parts[:] = 0
        _scores_backward_rows(dscores, t, v, dquery, dkeys, dv_parts[0], 0, len(t))
    else:
        _scores_backward(dscores, t, v, dquery, dkeys, dv_parts, chunks)
    return dquery, dkeys, dv_parts.sum(axis=0)  # row after row, in chunk order: the same sum on every run


# ----- context ---------------------------------------------------------------------------------------
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _context_rows(weights, values, context, first, stop):
    for b in range(first, stop):
        for h in range(values.shape[2]):
            context[b, h] = 0
        for s in range(values.shape[1]):
            w = weights[b, s]
            for h in range(values.shape[2]):
                context[b, h] += w * values[b, s, h]


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _context_backward_rows(dcontext, weights, values, dweights, dvalues, first, stop):
    for b in range(first, stop):
        for s in range(values.shape[1]):
            w = weights[b, s]
            total = values.dtype.type(0)
            for h in range(values.shape[2]):
                g = dcontext[b, h]
                dvalues[b, s, h] = w * g
                total += g * values[b, s, h]
            dweights[b, s] = total


@njit(cache=True, parallel=True)
def _context_forward(weights, values, context, chunks):
    B = values.shape[0]
    for chunk in prange(chunks):
        _context_rows(weights, values, context, chunk * B // chunks, (chunk + 1) * B // chunks)


@njit(cache=True, parallel=True)
def _context_backward(dcontext, weights, values, dweights, dvalues, chunks):
    B = values.shape[0]
    for chunk in prange(chunks):
        _context_backward_rows(dcontext, weights, values, dweights, dvalues, chunk * B // chunks,
                               (chunk + 1) * B // chunks)


def _check_context_shapes(weights, values, dcontext=None):
    if len(values) != 3 or weights != values[:2] or dcontext not in (None, (values[0], values[2])):
        raise ValueError(f"attention_context: expected weights (B, S), values (B, S, H) and a gradient (B, H), got "
                         f"shapes {weights}, {values}" + ("" if dcontext is None else f" and {dcontext}"))


def attention_context_forward(weights, values):
    """context (B, H) = sum over s of weights[:, s] * values[:, s] (see `numpy_kernels.attention_context_forward`)."""
    _check_context_shapes(weights.shape, values.shape)
    arrays = _float_arrays(weights, values)
    if arrays is None:
        return numpy_kernels.attention_context_forward(weights, values)
    weights, values = arrays
    context = np.empty((values.shape[0], values.shape[2]), values.dtype)
    chunks = _chunks(values.shape)
    if chunks == 1:
        _context_rows(weights, values, context, 0, len(values))
    else:
        _context_forward(weights, values, context, chunks)
    return context


def attention_context_backward(dcontext, weights, values):
    """(dweights, dvalues) of attention_context_forward (see `numpy_kernels.attention_context_backward`)."""
    _check_context_shapes(weights.shape, values.shape, dcontext.shape)
    arrays = _float_arrays(dcontext, weights, values)
    if arrays is None:
        return numpy_kernels.attention_context_backward(dcontext, weights, values)
    dcontext, weights, values = arrays
    dweights, dvalues = np.empty_like(weights), np.empty_like(values)
    chunks = _chunks(values.shape)
    if chunks == 1:
        _context_backward_rows(dcontext, weights, values, dweights, dvalues, 0, len(values))
    else:
        _context_backward(dcontext, weights, values, dweights, dvalues, chunks)
    return dweights, dvalues


# ----- an attention step's softmax and context, shared by training's step and decoding's ---------------
@njit(fastmath=FASTMATH, error_model="numpy")
def _softmax_and_context(scores, length, values, context):
    """One row: scores (S,) become their softmax over the first `length` positions (0 after), in place, and
    context (Hv,) = that softmax @ values (S, Hv)."""
    top = scores[0]
    for s in range(1, length):
        top = max(top, scores[s])
    total = scores.dtype.type(0)
    for s in range(length):
        e = fast_exp(scores[s] - top)
        scores[s] = e
        total += e
    inverse = 1 / total
    for s in range(scores.shape[0]):
        scores[s] = scores[s] * inverse if s < length else 0
    context[:] = 0
    for s in range(length):
        w = scores[s]
        for h in range(values.shape[1]):
            context[h] += w * values[s, h]


# ----- training: scores, softmax and context in one pass each way (the fused decoder's step) -----------
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _attention_forward_rows(query, keys, v, values, lengths, context, weights, t, first, stop):
    H = keys.shape[2]
    for b in range(first, stop):
        length = lengths[b]
        for s in range(keys.shape[1]):
            total = query.dtype.type(0)
            for h in range(H):
                x = fast_tanh(query[b, h] + keys[b, s, h]) if s < length else query.dtype.type(0)
                t[b, s, h] = x
                total += x * v[h]
            weights[b, s] = total
        _softmax_and_context(weights[b], length, values[b], context[b])


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _attention_backward_rows(dcontext, weights, t, v, values, dkeys, dvalues, dquery, dv, first, stop):
    """Rows first .. stop - 1: dquery, and their gradients added into dkeys, dvalues and dv."""
    H, Hv = t.shape[2], values.shape[2]
    one = t.dtype.type(1)
    dweights = np.empty(t.shape[1], t.dtype)
    for b in range(first, stop):
        mean = t.dtype.type(0)  # sum over s of weights * dweights
        for s in range(t.shape[1]):
            w, total = weights[b, s], t.dtype.type(0)
            for h in range(Hv):
                total += dcontext[b, h] * values[b, s, h]
                dvalues[b, s, h] += w * dcontext[b, h]
            dweights[s] = total
            mean += w * total
        for h in range(H):
            dquery[b, h] = 0
        for s in range(t.shape[1]):
            g = weights[b, s] * (dweights[s] - mean)
            for h in range(H):
                x = t[b, s, h]
                d = g * v[h] * (one - x * x)
                dkeys[b, s, h] += d
                dquery[b, h] += d
                dv[h] += g * x


@njit(cache=True, parallel=True)
def _attention_forward_parallel(query, keys, v, values, lengths, context, weights, t, chunks):
    B = query.shape[0]
    for chunk in prange(chunks):
        _attention_forward_rows(query, keys, v, values, lengths, context, weights, t, chunk * B // chunks,
                                (chunk + 1) * B // chunks)


@njit(cache=True, parallel=True)
def _attention_backward_parallel(dcontext, weights, t, v, values, dkeys, dvalues, dquery, dv_parts, chunks):
    B = t.shape[0]
    for chunk in prange(chunks):
        _attention_backward_rows(dcontext, weights, t, v, values, dkeys, dvalues, dquery, dv_parts[chunk],
                                 chunk * B // chunks, (chunk + 1) * B // chunks)


def additive_attention_forward(query, keys, v, values, lengths):
    """(context (B, Hv), weights (B, S), t (B, S, H)) of training's attention step (see
    `numpy_kernels.additive_attention_forward`)."""
    (B, H), S = query.shape, keys.shape[1]
    if keys.shape != (B, S, H) or v.shape != (H,) or values.shape[:2] != (B, S) or lengths.shape != (B,):
        raise ValueError(f"additive_attention_forward: expected query (B, H), keys (B, S, H), v (H,), values "
                         f"(B, S, Hv) and lengths (B,), got shapes {query.shape}, {keys.shape}, {v.shape}, "
                         f"{values.shape} and {lengths.shape}")
    if B and (lengths.min() < 1 or lengths.max() > S):
        raise ValueError(f"additive_attention_forward: lengths must lie in [1, {S}]")
    arrays = _float_arrays(query, keys, v, values)
    if arrays is None:
        return numpy_kernels.additive_attention_forward(query, keys, v, values, lengths)
    query, keys, v, values = arrays
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    dt = query.dtype
    context, weights, t = np.empty((B, values.shape[2]), dt), np.empty((B, S), dt), np.empty((B, S, H), dt)
    chunks = _chunks(keys.shape)
    if chunks == 1:
        _attention_forward_rows(query, keys, v, values, lengths, context, weights, t, 0, B)
    else:
        _attention_forward_parallel(query, keys, v, values, lengths, context, weights, t, chunks)
    return context, weights, t


def additive_attention_backward(dcontext, weights, t, v, values, dkeys, dvalues):
    """(dquery, dv) of additive_attention_forward, the keys' and values' gradients added into dkeys and dvalues
    (see `numpy_kernels.additive_attention_backward`)."""
    B, S, H = t.shape
    if dcontext.shape != (B, values.shape[2]) or weights.shape != (B, S) or v.shape != (H,) or \
            values.shape[:2] != (B, S) or dkeys.shape != t.shape or dvalues.shape != values.shape:
        raise ValueError(f"additive_attention_backward: expected dcontext (B, Hv), weights (B, S), t (B, S, H), "
                         f"v (H,), values and dvalues (B, S, Hv), dkeys (B, S, H), got shapes {dcontext.shape}, "
                         f"{weights.shape}, {t.shape}, {v.shape}, {values.shape}, {dvalues.shape}, {dkeys.shape}")
    arrays = _float_arrays(dcontext, weights, t, v, values)
    accumulators_fit = all(a.dtype == t.dtype and a.flags.c_contiguous for a in (dkeys, dvalues))
    if arrays is None or not accumulators_fit:
        return numpy_kernels.additive_attention_backward(dcontext, weights, t, v, values, dkeys, dvalues)
    dcontext, weights, t, v, values = arrays
    chunks = _chunks(t.shape)
    dquery, dv_parts = np.empty((B, H), t.dtype), np.zeros((chunks, H), t.dtype)
    if chunks == 1:
        _attention_backward_rows(dcontext, weights, t, v, values, dkeys, dvalues, dquery, dv_parts[0], 0, B)
    else:
        _attention_backward_parallel(dcontext, weights, t, v, values, dkeys, dvalues, dquery, dv_parts, chunks)
    return dquery, dv_parts.sum(axis=0)  # in chunk order: the same sum on every run


# ----- decoding: scores, softmax and context in one pass, no gradient --------------------------------
@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _attention_step_rows(query, keys, v, values, lengths, rows, context, weights, first, stop):
    H = keys.shape[2]
    for n in range(first, stop):
        b = rows[n]
        length = lengths[b]
        for s in range(length):
            total = query.dtype.type(0)
            for h in range(H):
                total += fast_tanh(query[n, h] + keys[b, s, h]) * v[h]
            weights[n, s] = total
        _softmax_and_context(weights[n], length, values[b], context[n])


@njit(cache=True, parallel=True)
def _attention_step_parallel(query, keys, v, values, lengths, rows, context, weights, chunks):
    N = query.shape[0]
    for chunk in prange(chunks):
        _attention_step_rows(query, keys, v, values, lengths, rows, context, weights, chunk * N // chunks,
                             (chunk + 1) * N // chunks)


def additive_attention_step(query, keys, v, values, lengths, rows):
    """(context (N, Hv), weights (N, S)) of decoding's attention step (see
    `numpy_kernels.additive_attention_step`)."""
    (N, H), (B, S) = query.shape, keys.shape[:2]
    if keys.shape != (B, S, H) or v.shape != (H,) or values.shape[:2] != (B, S) or lengths.shape != (B,) \
            or rows.shape != (N,):
        raise ValueError(f"additive_attention_step: expected query (N, H), keys (B, S, H), v (H,), values (B, S, Hv), "
                         f"lengths (B,) and rows (N,), got shapes {query.shape}, {keys.shape}, {v.shape}, "
                         f"{values.shape}, {lengths.shape} and {rows.shape}")
    if len(rows) and (rows.min() < 0 or rows.max() >= B) or len(lengths) and (lengths.min() < 1 or lengths.max() > S):
        raise ValueError(f"additive_attention_step: rows must lie in [0, {B}) and lengths in [1, {S}]")
    arrays = _float_arrays(query, keys, v, values)
    if arrays is None:
        return numpy_kernels.additive_attention_step(query, keys, v, values, lengths, rows)
    query, keys, v, values = arrays
    lengths, rows = (np.ascontiguousarray(a, dtype=np.int64) for a in (lengths, rows))
    context, weights = np.empty((N, values.shape[2]), query.dtype), np.empty((N, S), query.dtype)
    chunks = pieces(N * S * H, PARALLEL_MIN_WORK, N)
    if chunks == 1:
        _attention_step_rows(query, keys, v, values, lengths, rows, context, weights, 0, N)
    else:
        _attention_step_parallel(query, keys, v, values, lengths, rows, context, weights, chunks)
    return context, weights
