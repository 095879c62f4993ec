"""The teacher-forced attention decoder as one op: a GRU cell with Bahdanau attention and input feeding, run over
every target step inside forward, with its backward through time written by hand.

    for t in 0 .. T-1:                                        h_{-1} = h0, c_{-1} = 0
        h_t = GRUCell([embedded_t; c_{t-1}], h_{t-1})         weight_ih (3H, E + H), weight_hh (3H, H)
        c_t, a_t = attention(query_weight h_t, keys, values)   Bahdanau: scores v . tanh(W h_t + keys[s])
    features = [h_t; c_t] for every t                          (B, T, 2H)

Built from the layers, each step is a dozen ops (a Linear, the cell's recurrence, the query, the scores, the
masked softmax, the context, the concatenations), each a graph node with its Python and its backward call: a
training step of the dates model spent a third of its time there. Here a step is four kernel calls each way
(two matrix products, the gates, the attention) and the graph holds one node. The products are arranged so that
one per step serves two purposes: h_t @ [W_hh; query_weight]^T gives the next step's hidden-side gates and this
step's query, and in backward [dgh_{t+1}, dquery_t] @ [W_hh; query_weight] gives h_t's gradient from both. The
embeddings' share of the input gates is one product for all steps; the weight gradients are one product each,
after the loop. `Seq2Seq.forward` uses this op for its default shape (one GRU layer, Bahdanau attention, no
dropout, full teacher forcing) and builds the steps from the layers otherwise.
"""
import numpy as np

from .. import kernels
from ..autograd import Function


class BahdanauDecoder(Function):
    """Features (B, T, 2H) = [h_t; c_t] of a teacher-forced GRU decoder with Bahdanau attention and input feeding.

    embedded (B, T, E): the decoder's input embeddings; h0 (B, H): the initial state; values (B, S, Hv = H): the
    encoder's outputs; keys (B, S, A): their projection U values + b (`BahdanauAttention.precompute_keys`);
    weight_ih (3H, E + H), weight_hh (3H, H), bias_ih, bias_hh (3H,) or None: the GRUCell's; query_weight (A, H):
    the attention's W; v (1, A): its score vector. lengths (B,): each source's real positions (padding after)."""

    def forward(self, embedded, h0, values, keys, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, v, *, lengths):
        B, T, E = embedded.shape
        H, S, A = h0.shape[1], values.shape[1], query_weight.shape[0]
        G = 3 * H
        if T < 1 or h0.shape != (B, H) or values.shape != (B, S, H) or keys.shape != (B, S, A) or \
                weight_ih.shape != (G, E + H) or weight_hh.shape != (G, H) or query_weight.shape != (A, H) or \
                v.shape != (1, A) or np.shape(lengths) != (B,):
            raise ValueError(f"BahdanauDecoder: expected embedded (B, T >= 1, E), h0 (B, H), values (B, S, H), keys "
                             f"(B, S, A), weight_ih (3H, E + H), weight_hh (3H, H), query_weight (A, H), v (1, A) and "
                             f"lengths (B,), got {embedded.shape}, {h0.shape}, {values.shape}, {keys.shape}, "
                             f"{weight_ih.shape}, {weight_hh.shape}, {query_weight.shape}, {v.shape} and "
                             f"{np.shape(lengths)}")
        dt = embedded.dtype
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.x = np.ascontiguousarray(embedded.transpose(1, 0, 2))  # time-major: each step's rows contiguous
        self.w_embed, self.w_context = (np.ascontiguousarray(w) for w in (weight_ih[:, :E], weight_ih[:, E:]))
        self.w_state = np.concatenate([weight_hh, query_weight])  # (3H + A, H): next gates and query from h_t
        b_state = np.zeros(G + A, dt)
        if bias_hh is not None:
            b_state[:G] = bias_hh
        self.weight_hh, self.query_weight, self.values, self.keys, self.v = weight_hh, query_weight, values, keys, v[0]
        self.has_bias = bias_ih is not None, bias_hh is not None

        gi_embed = kernels.linear_forward(self.x.reshape(T * B, E), self.w_embed, bias_ih).reshape(T, B, G)
        self.h_prev, self.states, self.contexts = (np.empty((T, B, H), dt) for _ in range(3))
        self.gates = np.empty((4, T, B, H), dt)  # r, z, n and the hidden-side n gate, for the gates' backward
        self.weights, self.t = [], []  # each step's attention weights (B, S) and tanh (B, S, A), kept as made
        h, context = h0, None
        gh = kernels.linear_forward(h0, weight_hh, bias_hh)
        for t in range(T):
            gi = gi_embed[t] if context is None else gi_embed[t] + kernels.gemm(context, self.w_context, False, True)
            self.h_prev[t] = h
            h, r, z, n = kernels.gru_gates_forward(gi, gh, h)
            self.gates[:, t] = r, z, n, gh[:, 2 * H:]
            if t + 1 < T:
                both = kernels.linear_forward(h, self.w_state, b_state)
                gh, query = both[:, :G], both[:, G:]
            else:  # the last step needs no next gates
                query = kernels.linear_forward(h, query_weight, None)
            context, weights, tanh = kernels.additive_attention_forward(query, keys, self.v, values, self.lengths)
            self.weights.append(weights)
            self.t.append(tanh)
            self.states[t], self.contexts[t] = h, context
        return np.concatenate([self.states, self.contexts], axis=2).transpose(1, 0, 2).copy()

    def backward(self, grad):
        T, B, H = self.states.shape
        G, A, E = 3 * H, self.query_weight.shape[0], self.x.shape[2]
        grad = grad.transpose(1, 0, 2)  # time-major view
        dgi_all, dgh_all = np.empty((T, B, G), grad.dtype), np.empty((T, B, G), grad.dtype)
        dquery_all = np.empty((T, B, A), grad.dtype)
        dkeys, dvalues = np.zeros_like(self.keys), np.zeros_like(self.values)
        dv = np.zeros(A, grad.dtype)
        upstream = np.zeros((B, G + A), grad.dtype)  # [dgh_{t+1}, dquery_t]: h_t's gradient in one product
        dh_direct = None  # h_t's gradient through step t+1's z * h
        dcontext_next = np.zeros((B, H), grad.dtype)  # c_t's gradient through step t+1's input
        for t in range(T - 1, -1, -1):
            dcontext = grad[t, :, H:] + dcontext_next
            dquery, dv_t = kernels.additive_attention_backward(dcontext, self.weights[t], self.t[t], self.v,
                                                               self.values, dkeys, dvalues)
            dv += dv_t
            dquery_all[t] = upstream[:, G:] = dquery
            if t + 1 < T:
                dh = grad[t, :, :H] + dh_direct + kernels.gemm(upstream, self.w_state, False, False)
            else:  # no later step: the query's gradient only
                dh = grad[t, :, :H] + kernels.gemm(dquery, self.query_weight, False, False)
            r, z, n, gh_n = self.gates[:, t]
            dgi, dgh, dh_direct = kernels.gru_gates_backward(dh, self.h_prev[t], r, z, n, gh_n)
            dgi_all[t], dgh_all[t] = dgi, dgh
            upstream[:, :G] = dgh
            if t:
                dcontext_next = kernels.gemm(dgi, self.w_context, False, False)
        dh0 = dh_direct + kernels.gemm(dgh_all[0], self.weight_hh, False, False)

        def flat(a):
            return a.reshape(-1, a.shape[-1])
        dw_embed = kernels.gemm(flat(dgi_all), flat(self.x), True, False)
        dw_context = kernels.gemm(flat(dgi_all[1:]), flat(self.contexts[:-1]), True, False) if T > 1 else \
            np.zeros_like(self.w_context)
        dweight_ih = np.concatenate([dw_embed, dw_context], axis=1)
        dweight_hh = kernels.gemm(flat(dgh_all), flat(self.h_prev), True, False)
        dquery_weight = kernels.gemm(flat(dquery_all), flat(self.states), True, False)
        dembedded = kernels.gemm(flat(dgi_all), self.w_embed, False, False).reshape(T, B, E).transpose(1, 0, 2)
        dbias_ih = dgi_all.sum(axis=(0, 1)) if self.has_bias[0] else None
        dbias_hh = dgh_all.sum(axis=(0, 1)) if self.has_bias[1] else None
        return dembedded, dh0, dvalues, dkeys, dweight_ih, dweight_hh, dbias_ih, dbias_hh, dquery_weight, dv[None]
