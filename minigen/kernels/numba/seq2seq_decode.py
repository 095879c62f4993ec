"""A Seq2Seq decoding step as one call: the Numba twin of `numpy_kernels.seq2seq_decode_step`.

One source decoded greedily (or with a few beams) multiplies each decoder weight by one row a step: about half
a million multiply-adds for the default model, tens of microseconds of arithmetic. As separate kernel calls from
Python (the input's concatenation, two products, the GRU gates, the query, the attention step, the features'
concatenation, the output layer) a step took about 280 us, most of it the calls themselves; as this one call,
about 100 us, and `Seq2Seq.decode_step` around it 170-190 (same process, alternated). The same kernels run here
one after the other in compiled code: the products as `matvec.linear_rows` (each split across the threads when it
is large enough), the gates as `gru.py`'s row kernel, the attention as `seq2seq_attention.py`'s decoding kernel.
With many rows a step is bound by its products, which BLAS computes faster: the model takes this path for a few
rows only (`Seq2Seq.FUSED_STEP_MAX_ROWS`).
"""
import numpy as np
from numba import njit

from .. import numpy_kernels
from . import FLOAT_DTYPES, pieces
from .gru import _gates_forward_rows
from .matvec import PARALLEL_MIN_WORK, layer_arrays, linear_rows
from .scalar import FASTMATH
from .seq2seq_attention import _attention_step_rows


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _decode_step(tokens, hidden, context, embedding, ih, hh, query, v, keys, values, lengths, rows, out, chunks):
    N, H = hidden.shape
    E, Hv = embedding.shape[1], context.shape[1]
    x = np.empty((N, E + Hv), hidden.dtype)  # [embedding; context], the cell's input (input feeding)
    for n in range(N):
        for e in range(E):
            x[n, e] = embedding[tokens[n], e]
        for c in range(Hv):
            x[n, E + c] = context[n, c]
    gi = linear_rows(x, ih, chunks[0])
    gh = linear_rows(hidden, hh, chunks[1])
    h, r, z, g = np.empty_like(hidden), np.empty_like(hidden), np.empty_like(hidden), np.empty_like(hidden)
    _gates_forward_rows(gi, gh, hidden, h, r, z, g, 0, N)
    new_context = np.empty((N, Hv), hidden.dtype)
    attention = np.empty((N, keys.shape[1]), hidden.dtype)
    _attention_step_rows(linear_rows(h, query, chunks[2]), keys, v, values, lengths, rows, new_context, attention,
                         0, N)
    features = np.empty((N, H + Hv), hidden.dtype)  # [h; context], what the output layer reads
    for n in range(N):
        for j in range(H):
            features[n, j] = h[n, j]
        for c in range(Hv):
            features[n, H + c] = new_context[n, c]
    return linear_rows(features, out, chunks[3]), h, new_context, attention


@njit(cache=True)
def _outside(values, low, high):
    """Whether any of the integers `values` lies outside [low, high): one pass, where NumPy's min and max take two
    calls (a step's checks ran 27 us that way, half the kernel's own time for one row)."""
    for i in range(values.shape[0]):
        if values[i] < low or values[i] >= high:
            return True
    return False


def _checked(tokens, hidden, context, weights, keys, values, lengths, rows):
    """Raise ValueError on arrays of the wrong shape or indices out of range; return whether the kernel takes the
    arrays: one float dtype throughout, contiguous (weights as PyTorch lays them out, (out, in))."""
    embedding, w_ih, b_ih, w_hh, b_hh, w_query, v, w_out, b_out = weights
    for name, array, ndim in (("hidden", hidden, 2), ("keys", keys, 3), ("embedding", embedding, 2)):
        if array.ndim != ndim:
            raise ValueError(f"seq2seq_decode_step: {name} must be {ndim}-D, got shape {array.shape}")
    (N, H), (B, S, A), Hv, E = hidden.shape, keys.shape, values.shape[-1], embedding.shape[1]
    V, dt = w_out.shape[0], hidden.dtype
    fuses = dt in FLOAT_DTYPES and hidden.flags.c_contiguous and keys.dtype == dt and keys.flags.c_contiguous \
        and embedding.dtype == dt and embedding.flags.c_contiguous
    for name, array, shape in (("tokens", tokens, (N,)), ("context", context, (N, Hv)), ("rows", rows, (N,)),
                               ("values", values, (B, S, Hv)), ("lengths", lengths, (B,)),
                               ("w_ih", w_ih, (3 * H, E + Hv)), ("b_ih", b_ih, (3 * H,)),
                               ("w_hh", w_hh, (3 * H, H)), ("b_hh", b_hh, (3 * H,)), ("w_query", w_query, (A, H)),
                               ("v", v, (A,)), ("w_out", w_out, (V, H + Hv)), ("b_out", b_out, (V,))):
        if array is None:
            continue
        if array.shape != shape:
            raise ValueError(f"seq2seq_decode_step: {name} must have shape {shape} (from hidden {hidden.shape}, keys "
                             f"{keys.shape}, values {values.shape} and embedding {embedding.shape}), got {array.shape}")
        if array.dtype.kind == "f":
            fuses = fuses and array.dtype == dt and array.flags.c_contiguous
    for name, array, low, high in (("tokens", tokens, 0, len(embedding)), ("rows", rows, 0, B),
                                   ("lengths", lengths, 1, S + 1)):
        if _outside(array, low, high):
            raise ValueError(f"seq2seq_decode_step: {name} must lie in [{low}, {high}), got values in "
                             f"[{array.min()}, {array.max()}]")
    return fuses


def seq2seq_decode_step(tokens, hidden, context, weights, keys, values, lengths, rows):
    """(logits (N, V'), h (N, H), context (N, Hv), attention (N, S)) of one Seq2Seq decoding step (see
    `numpy_kernels.seq2seq_decode_step`), in one call."""
    tokens, lengths, rows = (np.ascontiguousarray(a, dtype=np.int64) for a in (tokens, lengths, rows))
    if not _checked(tokens, hidden, context, weights, keys, values, lengths, rows):
        return numpy_kernels.seq2seq_decode_step(tokens, hidden, context, weights, keys, values, lengths, rows)
    embedding, w_ih, b_ih, w_hh, b_hh, w_query, v, w_out, b_out = weights
    layers = [layer_arrays(hidden, w, b, None) for w, b in ((w_ih, b_ih), (w_hh, b_hh), (w_query, None),
                                                              (w_out, b_out))]
    chunks = tuple(pieces(len(hidden) * w.size, PARALLEL_MIN_WORK, len(w)) for w in (w_ih, w_hh, w_query, w_out))
    return _decode_step(tokens, hidden, context, embedding, *layers[:3], v, keys, values, lengths, rows, layers[3],
                        chunks)
