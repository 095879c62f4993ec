"""Multi-head attention with PyTorch's names, layouts and mask conventions, plus a KV cache for decoding."""
import numpy as np

from ..autograd import Tensor
from ..ops import cat
from . import functional as F
from . import init
from .kv_cache import KVCache
from .layers import Linear, check_features, empty_parameter
from .module import Module


def _mask_array(mask, name):
    arr = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
    if arr.dtype != np.bool_ and arr.dtype.kind != "f":
        raise TypeError(f"MultiheadAttention: {name} must be boolean or floating, got dtype {arr.dtype}")
    return arr


class MultiheadAttention(Module):
    """Multi-head attention as torch.nn.MultiheadAttention.

    Parameters: in_proj_weight (3E, E) holding the q, k, v projections stacked (or, when kdim or vdim
    differ from embed_dim, q_proj_weight (E, E), k_proj_weight (E, kdim), v_proj_weight (E, vdim)),
    in_proj_bias (3E,), out_proj.weight (E, E), out_proj.bias (E,). Initialised as PyTorch: xavier_uniform_
    projections, zero biases, out_proj.weight as a Linear's.

    Inputs are (L, B, E) (or (B, L, E) with batch_first, or unbatched (L, E)). Boolean masks are True where
    a query may NOT attend (PyTorch's convention for this module); float masks are added to the scores.

    KV cache: `forward(..., kv_cache=cache)` with an `nn.KVCache(1, B, num_heads, head_dim, capacity)` (the
    one GPT decoding uses) attends over the cached keys and values followed by those of the new tokens, and
    stores the new ones in the cache in place. It holds projected keys and values per head, so reordering it
    for beam search is `cache.reorder(index)`. For incremental self-attention pass the new tokens as query, key
    and value, with is_causal=True: causal alignment is to the end, so each new query sees the whole cache.
    Gradients reach the new tokens' keys and values; the cached ones are constants."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, *, kdim=None, vdim=None, batch_first=False,
                 dtype=None):
        super().__init__()
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim ({embed_dim}) must be a positive multiple of "
                             f"num_heads ({num_heads})")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"MultiheadAttention: dropout must be in [0, 1], got {dropout}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.dropout, self.batch_first = dropout, batch_first
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        same = self._qkv_same_embed_dim
        self.register_parameter("in_proj_weight", empty_parameter(3 * embed_dim, embed_dim, dtype=dtype)
                                if same else None)
        for name, size in (("q_proj_weight", embed_dim), ("k_proj_weight", self.kdim), ("v_proj_weight", self.vdim)):
            self.register_parameter(name, None if same else empty_parameter(embed_dim, size, dtype=dtype))
        self.register_parameter("in_proj_bias", empty_parameter(3 * embed_dim, dtype=dtype) if bias else None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self):
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def _project(self, query, key, value):
        """q, k, v of shape (B, num_heads, length, head_dim) from batch-first inputs."""
        E, H, D = self.embed_dim, self.num_heads, self.head_dim
        b = self.in_proj_bias
        B, L, S = query.shape[0], query.shape[1], key.shape[1]
        if self._qkv_same_embed_dim and query is key and key is value:
            # self-attention: one product for all three projections
            qkv = F.linear(query, self.in_proj_weight, b).reshape(B, L, 3, H, D).permute(2, 0, 3, 1, 4)
            return qkv[0], qkv[1], qkv[2]
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            weights = (w[:E], w[E:2 * E], w[2 * E:])
        else:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        biases = (None, None, None) if b is None else (b[:E], b[E:2 * E], b[2 * E:])
        return tuple(F.linear(x, w, bias).reshape(B, n, H, D).transpose(1, 2)
                     for x, w, bias, n in zip((query, key, value), weights, biases, (L, S, S)))

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False, kv_cache=None):
        """Returns (attn_output, attn_weights).

        key_padding_mask (B, S): True (or -inf) at keys to ignore. attn_mask (L, S) or (B * num_heads, L, S).
        is_causal applies the causal mask itself (query i attends keys j <= i + S - L); attn_mask may be
        given too. With kv_cache, S counts the cached keys as well. attn_weights are averaged over
        heads (B, L, S), per head (B, num_heads, L, S) with average_attn_weights=False, or None when
        need_weights=False (which lets the fused attention op run). A query with no key left outputs 0."""
        q_in, k_in, v_in, batched = self._batch_first(query, key, value)
        B, L = q_in.shape[0], q_in.shape[1]
        q, k, v = self._project(q_in, k_in, v_in)
        if kv_cache is not None:
            k, v = self._extend_cache(kv_cache, k, v)
        S = k.shape[2]
        blocked, additive = self._masks(key_padding_mask, attn_mask, B, L, S, batched)
        dropout_p = self.dropout if self.training else 0.0
        out, weights = F._attention(q, k, v, blocked, additive, dropout_p, is_causal, None, need_weights)
        out = self.out_proj(out.transpose(1, 2).reshape(B, L, self.embed_dim))
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if weights is not None:
            weights = weights.mean(dim=1) if average_attn_weights else weights
            weights = weights if batched else weights.squeeze(0)
        return out, weights

    def _batch_first(self, query, key, value):
        """Inputs as (B, length, features), checked, and whether they were batched."""
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"MultiheadAttention: query {query.shape}, key {key.shape} and value {value.shape} "
                             "must all be 3-D (batched) or all 2-D (unbatched)")
        check_features(query, self.embed_dim, "MultiheadAttention", "query")
        check_features(key, self.kdim, "MultiheadAttention", "key")
        check_features(value, self.vdim, "MultiheadAttention", "value")
        batched = query.ndim == 3
        if not batched:
            inputs = tuple(x.unsqueeze(0) for x in (query, key, value))
        elif self.batch_first:
            inputs = (query, key, value)
        else:
            inputs = tuple(x.transpose(0, 1) for x in (query, key, value))
        if query is key and key is value:
            inputs = (inputs[0],) * 3  # keep self-attention recognisable for the single fused projection
        q, k, v = inputs
        if k.shape[:2] != v.shape[:2] or k.shape[0] != q.shape[0]:
            raise ValueError(f"MultiheadAttention: query {query.shape}, key {key.shape} and value {value.shape} "
                             "need the same batch size, and key and value the same length")
        return q, k, v, batched

    def _extend_cache(self, kv_cache, k, v):
        """The cached keys and values followed by the new ones k, v (B, H, T, D), which are stored in the cache."""
        if not isinstance(kv_cache, KVCache):
            raise TypeError(f"MultiheadAttention: kv_cache must be an nn.KVCache, got {type(kv_cache).__name__}")
        past = kv_cache.length
        if kv_cache.keys.shape[1:3] != k.shape[:2] or kv_cache.keys.shape[4] != k.shape[3]:
            raise ValueError(f"MultiheadAttention: kv_cache holds (batch, heads, head_dim) "
                             f"{kv_cache.keys.shape[1:3] + kv_cache.keys.shape[4:]}, expected {k.shape[:2] + k.shape[3:]}")
        keys, values = kv_cache.update(0, k.data, v.data)
        kv_cache.advance(k.shape[2])
        if past == 0:
            return k, v
        return cat([Tensor._wrap(keys[:, :, :past]), k], dim=2), cat([Tensor._wrap(values[:, :, :past]), v], dim=2)

    def _masks(self, key_padding_mask, attn_mask, B, L, S, batched):
        """Both masks as (blocked bool array or None, additive float array or None), broadcastable to (B, H, L, S)."""
        pieces = []
        if key_padding_mask is not None:
            kpm = _mask_array(key_padding_mask, "key_padding_mask")
            expected = (B, S) if batched else (S,)
            if kpm.shape != expected:
                raise ValueError(f"MultiheadAttention: key_padding_mask has shape {kpm.shape}, expected {expected} "
                                 "(batch, key length)")
            pieces.append(kpm.reshape(B, 1, 1, S))
        if attn_mask is not None:
            am = _mask_array(attn_mask, "attn_mask")
            per_head = (B * self.num_heads, L, S)
            if am.shape == (L, S):
                pieces.append(am)
            elif am.shape == per_head:
                pieces.append(am.reshape(B, self.num_heads, L, S))
            else:
                raise ValueError(f"MultiheadAttention: attn_mask has shape {am.shape}, expected {(L, S)} or "
                                 f"{per_head} (batch * num_heads, query length, key length)")
        blocked = additive = None
        for m in pieces:
            if m.dtype == np.bool_:
                blocked = m if blocked is None else blocked | m
            else:
                additive = m if additive is None else additive + m
        return blocked, additive

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"
