"""The gate arithmetic of one GRU step (gate order r, z, n as in PyTorch), forward and backward.

The two GEMMs of a step stay in BLAS; what is left is a dozen elementwise passes in NumPy, here
one vectorized pass per gate over each batch row, writing each output once.
"""
import numpy as np
from numba import njit

from .. import numpy_kernels
from . import FLOAT_DTYPES
from .scalar import FASTMATH, fast_sigmoid, fast_tanh


@njit(fastmath=FASTMATH, error_model="numpy")
def _sigmoid_gate(out, gi, gh, start):
    """out[j] = sigmoid(gi[start + j] + gh[start + j]): one gate of one batch row."""
    for j in range(out.shape[0]):
        out[j] = fast_sigmoid(gi[start + j] + gh[start + j])


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _gru_gates_forward(gi, gh, h, h_new, r, z, n):
    batch, hidden = h.shape
    for b in range(batch):
        gi_b, gh_b, r_b, z_b, n_b = gi[b], gh[b], r[b], z[b], n[b]
        _sigmoid_gate(r_b, gi_b, gh_b, 0)
        _sigmoid_gate(z_b, gi_b, gh_b, hidden)
        for j in range(hidden):
            n_b[j] = fast_tanh(gi_b[2 * hidden + j] + r_b[j] * gh_b[2 * hidden + j])
        h_b, out = h[b], h_new[b]
        for j in range(hidden):
            out[j] = n_b[j] + z_b[j] * (h_b[j] - n_b[j])


def _same_dtype(*arrays):
    dt = np.result_type(*arrays)
    return [np.ascontiguousarray(a, dtype=dt) for a in arrays]


def gru_gates_forward(gi, gh, h):
    """One GRU step from the projected gates gi, gh (B, 3H) and h (B, H); returns (h_new, r, z, n)."""
    if np.result_type(gi, gh, h) not in FLOAT_DTYPES:
        return numpy_kernels.gru_gates_forward(gi, gh, h)
    gi, gh, h = _same_dtype(gi, gh, h)
    h_new, r, z, n = (np.empty_like(h) for _ in range(4))
    _gru_gates_forward(gi, gh, h, h_new, r, z, n)
    return h_new, r, z, n


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _gru_gates_backward(dh_new, h, r, z, n, gh_n, dgi, dgh, dh):
    batch, hidden = h.shape
    one = h.dtype.type(1)
    for b in range(batch):
        for j in range(hidden):
            g, r_j, z_j, n_j = dh_new[b, j], r[b, j], z[b, j], n[b, j]
            dn_pre = g * (one - z_j) * (one - n_j * n_j)
            dz_pre = g * (h[b, j] - n_j) * z_j * (one - z_j)
            dr_pre = dn_pre * gh_n[b, j] * r_j * (one - r_j)
            dgi[b, j], dgi[b, hidden + j], dgi[b, 2 * hidden + j] = dr_pre, dz_pre, dn_pre
            dgh[b, j], dgh[b, hidden + j], dgh[b, 2 * hidden + j] = dr_pre, dz_pre, dn_pre * r_j
            dh[b, j] = g * z_j


def gru_gates_backward(dh_new, h, r, z, n, gh_n):
    """Gradients (dgi, dgh (B, 3H), dh (B, H)) of gru_gates_forward; gh_n = gh[:, 2H:]."""
    if np.result_type(dh_new, h, r, z, n, gh_n) not in FLOAT_DTYPES:
        return numpy_kernels.gru_gates_backward(dh_new, h, r, z, n, gh_n)
    dh_new, h, r, z, n, gh_n = _same_dtype(dh_new, h, r, z, n, gh_n)
    batch, hidden = h.shape
    dgi, dgh = np.empty((batch, 3 * hidden), h.dtype), np.empty((batch, 3 * hidden), h.dtype)
    dh = np.empty_like(h)
    _gru_gates_backward(dh_new, h, r, z, n, gh_n, dgi, dgh, dh)
    return dgi, dgh, dh
