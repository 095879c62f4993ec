"""The fused recurrence: one direction of one RNN/GRU layer over a whole sequence, with hand-written BPTT.

The caller computes the input-side projection x @ W_ih^T + b_ih for every step at once (one GEMM);
this op runs the steps: the hidden-side product h @ W_hh^T per step (`kernels.gemm`, BLAS), the GRU gate
arithmetic in kernels (`kernels.gru_gates_*`, whose reference is in minigen/kernels/numpy_kernels.py). One graph
node per layer and direction instead of dozens per step keeps long sequences cheap. Without gradients (decoding's
encoder) a GRU's whole sequence is one `kernels.gru_sequence_forward` call, with no Python per step."""
import numpy as np

from ..autograd import Function, is_grad_enabled
from .. import kernels

MODES = ("gru", "tanh", "relu")


class Recurrence(Function):
    """Every hidden state h_1..h_T (T, B, H) of h_t = cell(x_proj[t], h_{t-1}), starting from h0 (B, H).

    x_proj (T, B, G) is the input-side projection; weight_hh (G, H); bias_hh (G,) or None.
    mode 'gru': G = 3H, gates r, z, n as in PyTorch; 'tanh' / 'relu': G = H, h_t = act(x_proj[t] + W_hh h + b_hh).
    mask (T, B) bool or None: where False the step is padding and the state passes through unchanged, so
    a row's state after its last real step is carried to the end. reverse walks t from T-1 down to 0."""

    def forward(self, x_proj, h0, weight_hh, bias_hh=None, mask=None, reverse=False, mode="gru"):
        if mode not in MODES:
            raise ValueError(f"Recurrence: mode must be one of {MODES}, got {mode!r}")
        T, B, G = x_proj.shape
        H = h0.shape[-1]
        expected = 3 * H if mode == "gru" else H
        if G != expected or h0.shape != (B, H) or weight_hh.shape != (G, H):
            raise ValueError(f"Recurrence ({mode}): x_proj {x_proj.shape}, h0 {h0.shape}, weight_hh {weight_hh.shape} "
                             f"need x_proj (T, B, {expected}), h0 (B, H), weight_hh ({expected}, H) with H={H}")
        if mask is not None and np.shape(mask) != (T, B):
            raise ValueError(f"Recurrence: mask has shape {np.shape(mask)}, expected (T, B) = {(T, B)}")
        keep = is_grad_enabled()  # what backward needs is kept only when there may be a backward
        if mode == "gru" and not keep:  # decoding's encoder: the whole sequence in one kernel call, no Python per step
            return kernels.gru_sequence_forward(x_proj, h0, weight_hh, bias_hh, mask, reverse)
        self.mode, self.mask, self.has_bias = mode, mask, bias_hh is not None
        self.steps = range(T - 1, -1, -1) if reverse else range(T)
        self.weight_hh = weight_hh
        if keep:
            self.h_prev = np.empty((T, B, H), dtype=x_proj.dtype)
            # what each step's backward needs: r, z, n and gh_n for a GRU, the activation's output otherwise
            self.saved = np.empty((4 if mode == "gru" else 1, T, B, H), dtype=x_proj.dtype)
        hs = np.empty((T, B, H), dtype=x_proj.dtype)
        h = h0
        for t in self.steps:
            gh = kernels.gemm(h, weight_hh, False, True)
            if bias_hh is not None:
                gh += bias_hh
            if keep:
                self.h_prev[t] = h
            if mode == "gru":
                h_new, r, z, n = kernels.gru_gates_forward(x_proj[t], gh, h)  # (a GRU here has gradients)
                self.saved[0, t], self.saved[1, t], self.saved[2, t], self.saved[3, t] = r, z, n, gh[:, 2 * H:]
            else:
                pre = x_proj[t] + gh
                h_new = np.tanh(pre) if mode == "tanh" else np.maximum(pre, 0)
                if keep:
                    self.saved[0, t] = h_new
            hs[t] = h_new if mask is None else np.where(mask[t][:, None], h_new, h)
            h = hs[t]
        return hs

    def backward(self, grad):
        T, B, H = self.h_prev.shape
        dx_proj = np.empty((T, B, self.weight_hh.shape[0]), dtype=grad.dtype)
        # the hidden-side gate gradients; for tanh/relu they equal the input-side ones
        dgh_all = np.empty_like(dx_proj) if self.mode == "gru" else dx_proj
        dh = np.zeros((B, H), dtype=grad.dtype)
        for t in reversed(self.steps):
            dh = dh + grad[t]  # everything that flows into the state after step t
            d_new, d_carry = dh, None
            if self.mask is not None:
                keep = self.mask[t][:, None]
                d_new, d_carry = np.where(keep, dh, 0.0), np.where(keep, 0.0, dh)
            if self.mode == "gru":
                r, z, n, gh_n = self.saved[:, t]
                dgi, dgh, dh = kernels.gru_gates_backward(d_new, self.h_prev[t], r, z, n, gh_n)
            else:
                out = self.saved[0, t]
                dgi = dgh = d_new * (1.0 - out * out) if self.mode == "tanh" else d_new * (out > 0)
                dh = 0.0
            dx_proj[t], dgh_all[t] = dgi, dgh
            dh = dh + kernels.gemm(dgh, self.weight_hh, False, False)
            if d_carry is not None:
                dh = dh + d_carry
        dweight = kernels.gemm(dgh_all.reshape(-1, dgh_all.shape[-1]), self.h_prev.reshape(-1, H), True, False)
        dbias = dgh_all.sum(axis=(0, 1)) if self.has_bias else None
        return dx_proj, dh, dweight, dbias
