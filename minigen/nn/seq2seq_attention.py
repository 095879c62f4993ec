"""Attention for RNN encoder-decoders: additive (Bahdanau) and multiplicative (Luong) scoring.

Both take one decoder state per row, query (B, Hq), and the encoder states keys (B, S, Hk), and return
(context (B, Hk), weights (B, S)): weights = softmax over s of score(query, keys[:, s]), context = weights @ keys.
mask (B, S) is True at padding positions, which get weight 0. A row with every position masked gets
all-zero weights and context. Keys stay fixed while the decoder runs, so their projection is computed once
with `precompute_keys(keys)` and passed back as `projected_keys=` at every step."""
import numpy as np

from ..autograd import Tensor
from ..ops.attention import MASKED_SCORE, AdditiveScores, AttentionContext
from . import functional as F
from .layers import Linear
from .module import Module


class _Seq2SeqAttention(Module):
    """Shared checks, masking and the weighted sum; subclasses define precompute_keys and _scores."""

    def __init__(self, query_size, key_size):
        super().__init__()
        self.query_size, self.key_size = query_size, key_size

    def _check(self, query, keys, mask):
        name = type(self).__name__
        if query.ndim != 2 or query.shape[1] != self.query_size:
            raise ValueError(f"{name}: query has shape {query.shape}, expected (batch, {self.query_size})")
        if keys.ndim != 3 or keys.shape[2] != self.key_size or keys.shape[0] != query.shape[0]:
            raise ValueError(f"{name}: keys has shape {keys.shape}, expected ({query.shape[0]}, S, {self.key_size}) "
                             "(batch, source length, key_size)")
        if mask is None:
            return None
        mask = np.asarray(mask.data if isinstance(mask, Tensor) else mask)
        if mask.shape != keys.shape[:2] or mask.dtype != np.bool_:
            raise ValueError(f"{name}: mask must be a boolean array of shape {keys.shape[:2]} (batch, source "
                             f"length), got shape {mask.shape} and dtype {mask.dtype}")
        return mask

    def forward(self, query, keys, mask=None, projected_keys=None):
        """(context (B, key_size), weights (B, S)) for query (B, query_size) and keys (B, S, key_size)."""
        mask = self._check(query, keys, mask)
        if projected_keys is None:
            projected_keys = self.precompute_keys(keys)
        elif projected_keys.ndim != 3 or projected_keys.shape[:2] != keys.shape[:2]:
            raise ValueError(f"{type(self).__name__}: projected_keys has shape {projected_keys.shape}, expected "
                             f"{keys.shape[:2]} + (features,) as returned by precompute_keys(keys)")
        scores = self._scores(query, projected_keys)
        if mask is not None:
            scores = scores.masked_fill(mask, MASKED_SCORE)
        weights = F.softmax(scores, dim=-1)
        if mask is not None:
            weights = weights.masked_fill(mask, 0.0)  # all-masked rows: zero weights rather than uniform
        return AttentionContext.apply(weights, keys), weights


class BahdanauAttention(_Seq2SeqAttention):
    """Additive attention: score(q, k) = v . tanh(W q + U k).

    W = Linear(query_size, hidden_size, bias=False), U = Linear(key_size, hidden_size) (its bias is the
    score's one bias), v = Linear(hidden_size, 1, bias=False)."""

    def __init__(self, query_size, key_size, hidden_size, dtype=None):
        super().__init__(query_size, key_size)
        self.hidden_size = hidden_size
        self.W = Linear(query_size, hidden_size, bias=False, dtype=dtype)
        self.U = Linear(key_size, hidden_size, dtype=dtype)
        self.v = Linear(hidden_size, 1, bias=False, dtype=dtype)

    def precompute_keys(self, keys):
        """U k for every key (B, S, hidden_size); reuse it across decoder steps."""
        return self.U(keys)

    def _scores(self, query, projected_keys):
        # v(tanh(W q + U k)) as one op: no (B, S, hidden_size) temporaries besides the tanh
        return AdditiveScores.apply(self.W(query), projected_keys, self.v.weight)


class LuongAttention(_Seq2SeqAttention):
    """Multiplicative attention: score(q, k) = q . k ('dot', needs query_size == key_size) or q . W k ('general',
    W = Linear(key_size, query_size, bias=False))."""

    def __init__(self, query_size, key_size, method="dot", dtype=None):
        super().__init__(query_size, key_size)
        if method not in ("dot", "general"):
            raise ValueError(f"LuongAttention: method must be 'dot' or 'general', got {method!r}")
        if method == "dot" and query_size != key_size:
            raise ValueError(f"LuongAttention: method 'dot' needs query_size == key_size, got {query_size} "
                             f"and {key_size}; use method='general'")
        self.method = method
        if method == "general":
            self.W = Linear(key_size, query_size, bias=False, dtype=dtype)

    def precompute_keys(self, keys):
        """W k for every key (B, S, query_size) ('general'), the keys themselves ('dot')."""
        return self.W(keys) if self.method == "general" else keys

    def _scores(self, query, projected_keys):
        return (projected_keys @ query.unsqueeze(-1)).squeeze(-1)
