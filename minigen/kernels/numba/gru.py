"""The gate arithmetic of one GRU step (gate order r, z, n as in PyTorch), forward and backward.

The two GEMMs of a step stay in BLAS; what is left is a dozen elementwise passes in NumPy, here
one vectorized pass per gate over each batch row, writing each output once; a large batch's rows are split
across the threads (batched beam search: 1,000 rows a step).
"""
import numpy as np
from numba import njit, prange

from .. import numpy_kernels
from . import FLOAT_DTYPES, pieces
from .blas import gemm_address, gemm_call, on_one_blas_thread
from .scalar import FASTMATH, fast_sigmoid, fast_tanh

# states (rows x hidden) below which a step's gates stay on one thread: a parallel region costs microseconds, a
# state of 64 x 256 (a training batch) about as much to compute
PARALLEL_MIN_ELEMENTS = 2 ** 15
# rows up to which a sequence's hidden-side product is a loop in the kernel, not BLAS (20 steps, hidden 128:
# 1 row 153 against 646 us, 8 rows 1.15 against 1.06 ms, 16 rows 2.3 against 2.9, 32 rows 4.6 against 3.6)
LOOP_MAX_ROWS = 16


@njit(fastmath=FASTMATH, error_model="numpy")
def _sigmoid_gate(out, gi, gh, start):
    """out[j] = sigmoid(gi[start + j] + gh[start + j]): one gate of one batch row."""
    for j in range(out.shape[0]):
        out[j] = fast_sigmoid(gi[start + j] + gh[start + j])


@njit(fastmath=FASTMATH, error_model="numpy")
def _gates_forward_rows(gi, gh, h, h_new, r, z, n, first, stop):
    hidden = h.shape[1]
    for b in range(first, stop):
        gi_b, gh_b, r_b, z_b, n_b = gi[b], gh[b], r[b], z[b], n[b]
        _sigmoid_gate(r_b, gi_b, gh_b, 0)
        _sigmoid_gate(z_b, gi_b, gh_b, hidden)
        for j in range(hidden):
            n_b[j] = fast_tanh(gi_b[2 * hidden + j] + r_b[j] * gh_b[2 * hidden + j])
        h_b, out = h[b], h_new[b]
        for j in range(hidden):
            out[j] = n_b[j] + z_b[j] * (h_b[j] - n_b[j])


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)
def _gru_gates_forward(gi, gh, h, h_new, r, z, n, chunks):
    """Rows in `chunks` blocks across the threads; one chunk opens no parallel region."""
    batch = h.shape[0]
    if chunks == 1:
        _gates_forward_rows(gi, gh, h, h_new, r, z, n, 0, batch)
        return
    for c in prange(chunks):
        _gates_forward_rows(gi, gh, h, h_new, r, z, n, c * batch // chunks, (c + 1) * batch // chunks)


def _same_dtype(*arrays):
    dt = np.result_type(*arrays)
    return [np.ascontiguousarray(a, dtype=dt) for a in arrays]


def gru_gates_forward(gi, gh, h):
    """One GRU step from the projected gates gi, gh (B, 3H) and h (B, H); returns (h_new, r, z, n)."""
    if np.result_type(gi, gh, h) not in FLOAT_DTYPES:
        return numpy_kernels.gru_gates_forward(gi, gh, h)
    gi, gh, h = _same_dtype(gi, gh, h)
    h_new, r, z, n = (np.empty_like(h) for _ in range(4))
    _gru_gates_forward(gi, gh, h, h_new, r, z, n, pieces(h.size, PARALLEL_MIN_ELEMENTS, h.shape[0]))
    return h_new, r, z, n


@njit(fastmath=FASTMATH, error_model="numpy")
def _gates_backward_rows(dh_new, h, r, z, n, gh_n, dgi, dgh, dh, first, stop):
    hidden = h.shape[1]
    one = h.dtype.type(1)
    for b in range(first, stop):
        for j in range(hidden):
            g, r_j, z_j, n_j = dh_new[b, j], r[b, j], z[b, j], n[b, j]
            dn_pre = g * (one - z_j) * (one - n_j * n_j)
            dz_pre = g * (h[b, j] - n_j) * z_j * (one - z_j)
            dr_pre = dn_pre * gh_n[b, j] * r_j * (one - r_j)
            dgi[b, j], dgi[b, hidden + j], dgi[b, 2 * hidden + j] = dr_pre, dz_pre, dn_pre
            dgh[b, j], dgh[b, hidden + j], dgh[b, 2 * hidden + j] = dr_pre, dz_pre, dn_pre * r_j
            dh[b, j] = g * z_j


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)
def _gru_gates_backward(dh_new, h, r, z, n, gh_n, dgi, dgh, dh, chunks):
    batch = h.shape[0]
    if chunks == 1:
        _gates_backward_rows(dh_new, h, r, z, n, gh_n, dgi, dgh, dh, 0, batch)
        return
    for c in prange(chunks):
        _gates_backward_rows(dh_new, h, r, z, n, gh_n, dgi, dgh, dh, c * batch // chunks, (c + 1) * batch // chunks)


def gru_gates_backward(dh_new, h, r, z, n, gh_n):
    """Gradients (dgi, dgh (B, 3H), dh (B, H)) of gru_gates_forward; gh_n = gh[:, 2H:]."""
    if np.result_type(dh_new, h, r, z, n, gh_n) not in FLOAT_DTYPES:
        return numpy_kernels.gru_gates_backward(dh_new, h, r, z, n, gh_n)
    dh_new, h, r, z, n, gh_n = _same_dtype(dh_new, h, r, z, n, gh_n)
    batch, hidden = h.shape
    dgi, dgh = np.empty((batch, 3 * hidden), h.dtype), np.empty((batch, 3 * hidden), h.dtype)
    dh = np.empty_like(h)
    _gru_gates_backward(dh_new, h, r, z, n, gh_n, dgi, dgh, dh, pieces(h.size, PARALLEL_MIN_ELEMENTS, h.shape[0]))
    return dgi, dgh, dh


@njit(fastmath=FASTMATH, error_model="numpy")
def _state_row(x_proj, gh, bias, h, out):
    """out = the GRU's next state for one row from its projections x_proj (3H,) and gh (3H,) = W_hh h (bias_hh
    not yet added)."""
    H = h.shape[0]
    for j in range(H):
        r = fast_sigmoid(x_proj[j] + gh[j] + bias[j])
        z = fast_sigmoid(x_proj[H + j] + gh[H + j] + bias[H + j])
        n = fast_tanh(x_proj[2 * H + j] + r * (gh[2 * H + j] + bias[2 * H + j]))
        out[j] = n + z * (h[j] - n)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _gru_sequence_forward(x_proj, h0, weight_hh, bias_hh, mask, reverse, hs):
    """A few rows: the hidden-side product as a loop, one row at a time."""
    T, B, H = hs.shape
    h, gh = h0.copy(), np.empty(3 * H, h0.dtype)
    for step in range(T):
        t = T - 1 - step if reverse else step
        for b in range(B):
            if mask[t, b]:
                for g in range(3 * H):
                    total = h.dtype.type(0)
                    for k in range(H):
                        total += weight_hh[g, k] * h[b, k]
                    gh[g] = total
                _state_row(x_proj[t, b], gh, bias_hh, h[b], hs[t, b])
                h[b] = hs[t, b]
            else:
                hs[t, b] = h[b]


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)
def _gru_sequence_blas(address, wide_ints, x_proj, h0, weight_hh, bias_hh, mask, reverse, hs, chunks):
    """Each thread takes a block of rows through every step: one BLAS call for its rows' hidden-side product,
    then their gates while the product is in its cache. One parallel region for the whole sequence."""
    T, B, H = hs.shape
    G = 3 * H
    one, zero = hs.dtype.type(1), hs.dtype.type(0)
    for c in prange(chunks):
        lo, hi = c * B // chunks, (c + 1) * B // chunks
        h = h0[lo:hi].copy()
        gh = np.empty((hi - lo, G), hs.dtype)
        for step in range(T):
            t = T - 1 - step if reverse else step
            gemm_call(address, wide_ints, False, True, hi - lo, G, H, h.ctypes.data, H, weight_hh.ctypes.data, H,
                      gh.ctypes.data, G, one, zero)
            for i in range(hi - lo):
                if mask[t, lo + i]:
                    _state_row(x_proj[t, lo + i], gh[i], bias_hh, h[i], hs[t, lo + i])
                    h[i] = hs[t, lo + i]
                else:
                    hs[t, lo + i] = h[i]


def gru_sequence_forward(x_proj, h0, weight_hh, bias_hh, mask, reverse):
    """A GRU's states over a whole sequence in one call, with no gradient (see `numpy_kernels.gru_sequence_forward`).
    Up to LOOP_MAX_ROWS rows (batch-1 decoding's encoder) the hidden-side product is a loop here: a BLAS call
    per step costs more than its arithmetic. More rows (a batch of sources) take one BLAS call per step and
    thread (`_gru_sequence_blas`)."""
    T, B, G = x_proj.shape
    H = h0.shape[-1]
    if h0.shape != (B, H) or G != 3 * H or weight_hh.shape != (G, H) or bias_hh is not None and bias_hh.shape != (G,) \
            or mask is not None and mask.shape != (T, B):
        raise ValueError(f"gru_sequence_forward: expected x_proj (T, B, 3H), h0 (B, H), weight_hh (3H, H), "
                         f"bias_hh (3H,) and mask (T, B), got shapes {x_proj.shape}, {h0.shape}, {weight_hh.shape}, "
                         f"{None if bias_hh is None else bias_hh.shape} and {None if mask is None else mask.shape}")
    bias = np.zeros(G, x_proj.dtype) if bias_hh is None else bias_hh
    dtype = np.result_type(x_proj, h0, weight_hh, bias)
    blas = gemm_address(dtype) if dtype in FLOAT_DTYPES else None
    if dtype not in FLOAT_DTYPES or B > LOOP_MAX_ROWS and blas is None:
        return numpy_kernels.gru_sequence_forward(x_proj, h0, weight_hh, bias_hh, mask, reverse)
    x_proj, h0, weight_hh, bias = _same_dtype(x_proj, h0, weight_hh, bias)
    mask = np.ones((T, B), np.bool_) if mask is None else np.ascontiguousarray(mask, dtype=np.bool_)
    hs = np.empty((T, B, H), x_proj.dtype)
    if B <= LOOP_MAX_ROWS:
        _gru_sequence_forward(x_proj, h0, weight_hh, bias, mask, bool(reverse), hs)
    else:
        on_one_blas_thread(_gru_sequence_blas, *blas, x_proj, h0, weight_hh, bias, mask, bool(reverse), hs,
                           pieces(B * G * H, PARALLEL_MIN_ELEMENTS, B))
    return hs
