"""GPT: a decoder-only transformer, laid out like GPT-2 so its checkpoints load by name.

    x = wte(ids) + wpe(positions)
    for each block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
    logits = ln_f(x) @ wte.weight.T                       (the output head is tied to wte)

Parameter names follow Hugging Face's GPT2LMHeadModel (`transformer.h.0.attn.c_attn.weight` ...). The only
difference is the layout of the four projection weights: GPT-2 stores them as Conv1D (in, out); minigen's
Linear stores (out, in) as PyTorch does, so `minigen.io.gpt2` transposes them on the way in and out.
"""
import math
import os
from dataclasses import asdict, dataclass, fields

import numpy as np

from .. import nn
from ..autograd import Tensor, is_grad_enabled, no_grad
from ..generation import check_attention_mask, generate
from ..nn import functional as F
from .. import kernels
from ..nn import quantize as quantization
from ..nn.kv_cache import KVCache
from ..ops.attention import CachedCausalSelfAttention, PackedCausalSelfAttention
from ..random import generator


@dataclass
class GPTConfig:
    """The shape of a GPT. Defaults are GPT-2 small's."""
    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    layer_norm_epsilon: float = 1e-5
    activation: str = "gelu_new"
    tie_word_embeddings: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        for name in ("dropout", "layer_norm_epsilon"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
                raise TypeError(f"GPTConfig.{name} must be a number, got {type(value).__name__} {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"GPTConfig.activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0):
                raise ValueError(f"GPTConfig.{name} must be None or a token id >= 0, got {value!r}")

    def to_dict(self):
        """The fields as a plain dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """A config from a dict; keys that are not fields are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# GPT-2's "gelu_new" is the tanh approximation; "gelu" is the exact erf form.
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a causal mask; fused q/k/v projection `c_attn` as in GPT-2."""

    def __init__(self, config, layer_index=0):
        super().__init__()
        self.n_head, self.n_embd, self.layer_index = config.n_head, config.n_embd, layer_index
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x, cache=None, padding=None):
        """x (B, T, C). `cache` (a KVCache) holds the keys and values of earlier positions and takes this layer's
        new ones; `padding` (B, S) is True at the key positions that must not be attended (S counts the
        cached positions too), the ops' convention."""
        qkv = self.c_attn(x)
        if self.training and self.dropout > 0:
            if cache is not None:
                raise ValueError("CausalSelfAttention: a KV cache is for inference; call model.eval() first")
            y = self._dropout_attention(qkv, padding)
        elif padding is None and (cache is None or cache.length == 0):
            # training, scoring and a prompt's first pass: one fused op reads q, k, v where they lie in qkv
            if cache is not None:
                cache.update(self.layer_index, *kernels.packed_heads(qkv.data, 3, self.n_head)[1:])
            y = PackedCausalSelfAttention.apply(qkv, self.n_head)
        else:
            # decoding (or a padded batch): the new positions against all keys so far, one op
            _, k, v = kernels.packed_heads(qkv.data, 3, self.n_head)
            if cache is None:
                y = CachedCausalSelfAttention.apply(qkv, np.ascontiguousarray(k), np.ascontiguousarray(v),
                                                    self.n_head, padding=padding)
            else:  # the cache's buffers, read up to the new positions in place
                cache.update(self.layer_index, k, v)
                y = CachedCausalSelfAttention.apply(qkv, cache.keys[self.layer_index], cache.values[self.layer_index],
                                                    self.n_head, length=cache.length + x.shape[1], padding=padding)
        return F.dropout(self.c_proj(y), self.dropout, self.training)

    def _dropout_attention(self, qkv, padding):
        """Attention with dropout on its weights, through the general op (the fused ones have no dropout)."""
        B, T, C3 = qkv.shape
        H = self.n_head
        qkv = qkv.reshape(B, T, 3, H, C3 // (3 * H)).permute(2, 0, 3, 1, 4)  # (3, B, H, T, D)
        q, k, v = qkv[0], qkv[1], qkv[2]
        allowed = None if padding is None else ~padding[:, None, None, :]  # the public op's convention: True attends
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, is_causal=True, dropout_p=self.dropout)
        return y.transpose(1, 2).reshape(B, T, C3 // 3)


class MLP(nn.Module):
    """The feed-forward block: expand 4x, GELU, project back."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.approximate = ACTIVATIONS[config.activation]
        self.dropout = config.dropout

    def forward(self, x):
        c_fc = self.c_fc  # c_fc, then GELU, as one op
        x = F.linear_gelu(x, c_fc.weight, c_fc.bias, self.approximate, c_fc.weight_scale)
        return F.dropout(self.c_proj(x), self.dropout, self.training)


class Block(nn.Module):
    """A pre-LayerNorm transformer block."""

    def __init__(self, config, layer_index=0):
        super().__init__()
        eps = config.layer_norm_epsilon
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=eps, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_index)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, padding=None):
        x = x + self.attn(self.ln_1(x), cache, padding)
        return x + self.mlp(self.ln_2(x))

    def decoding_weights(self):
        """The block's arrays as `kernels.decode_blocks` takes them: (ln_1, attn, proj, ln_2, fc, mlp), LayerNorms
        as (weight, bias), Linear layers as (weight, bias, scale), None where absent."""
        def linear(layer):
            return layer.weight.data, _data(layer.bias), _data(layer.weight_scale)
        attn, mlp = self.attn, self.mlp
        return ((self.ln_1.weight.data, _data(self.ln_1.bias)), linear(attn.c_attn), linear(attn.c_proj),
                (self.ln_2.weight.data, _data(self.ln_2.bias)), linear(mlp.c_fc), linear(mlp.c_proj))


def _data(value):
    """The array of a parameter or buffer (a Tensor or an array), or None."""
    return value.data if isinstance(value, Tensor) else value


def _same_arrays(blocks, other):
    """Whether `other` holds the very arrays of `blocks` (each block's weights as `decoding_weights` gives them),
    in the same places: identity, not values, so a parameter given a new array since is seen."""
    return other is not None and len(other) == len(blocks) and \
        all(a is b for block, old in zip(blocks, other) for part, was in zip(block, old) for a, b in zip(part, was))


class Transformer(nn.Module):
    """The GPT body under GPT-2's names (wte, wpe, h, ln_f): token ids -> final hidden states."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.h = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon, bias=config.bias)

    def check_input_ids(self, input_ids, name="input_ids"):
        """Validate token ids: a (batch, length) or (length,) integer array within the vocabulary."""
        vocab = self.config.vocab_size
        ids = input_ids.data if isinstance(input_ids, Tensor) else np.asarray(input_ids)
        if ids.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise ValueError(f"{name} must have shape (batch, length) with length >= 1, got {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            bad = ids[(ids < 0) | (ids >= vocab)][0]
            raise ValueError(f"{name} contains id {int(bad)} outside the vocabulary [0, {vocab})")
        return ids.astype(np.int64, copy=False)

    def _check_position_ids(self, position_ids, B, T):
        """position_ids as an int64 array of shape (B, T) or (1, T) with ids in [0, block_size)."""
        pos = position_ids.data if isinstance(position_ids, Tensor) else np.asarray(position_ids)
        if pos.dtype.kind not in "iu":
            raise ValueError(f"position_ids must hold integer positions, got dtype {pos.dtype}")
        if pos.ndim == 1:
            pos = pos[None, :]
        if pos.ndim != 2 or pos.shape[1] != T or pos.shape[0] not in (1, B):
            raise ValueError(f"position_ids must have shape ({B}, {T}) or (1, {T}) like input_ids, got {pos.shape}")
        block = self.config.block_size
        if pos.size and (pos.min() < 0 or pos.max() >= block):
            bad = pos[(pos < 0) | (pos >= block)][0]
            raise ValueError(f"position_ids contains position {int(bad)} outside [0, block_size={block})")
        return pos.astype(np.int64, copy=False)

    def forward(self, input_ids, position_ids=None, cache=None, attention_mask=None):
        """The final hidden states ln_f(x), (B, T, n_embd).

        `cache` (a KVCache, see `new_cache`) turns on incremental decoding: keys and values of earlier
        positions are read from it and the new ones stored. `attention_mask` (B, past + T) is 1 at the
        positions that may be attended, 0 at padding (Hugging Face's convention)."""
        ids = self.check_input_ids(input_ids)
        B, T = ids.shape
        if cache is not None and cache.batch_size != B:
            raise ValueError(f"cache holds {cache.batch_size} sequences but input_ids has {B}")
        past = 0 if cache is None else cache.length
        if past + T > self.config.block_size:
            raise ValueError(f"sequence length {past + T} exceeds block_size {self.config.block_size}")
        if position_ids is None:
            position_ids = np.arange(past, past + T)[None, :]
        else:
            position_ids = self._check_position_ids(position_ids, B, T)
        padding = None
        if attention_mask is not None:
            padding = ~np.asarray(attention_mask).astype(bool)  # Hugging Face's 1 = attend, to the ops' True = skip
            if padding.shape != (B, past + T):
                raise ValueError(f"attention_mask must have shape {(B, past + T)} (batch, past + new tokens), "
                                 f"got {padding.shape}")
        x = self.wte(ids) + self.wpe(position_ids)
        if cache is not None and B == T == 1 and padding is None and not (self.training or is_grad_enabled()):
            # batch-1 decoding: every block in one kernel call on arrays (the step's time is reading the weights),
            # which stores the new keys and values in the cache
            cache.make_room(1)
            weights = tuple(block.decoding_weights() for block in self.h)
            if not _same_arrays(weights, cache.decoding_weights):  # prepared at a generation's first step
                cache.decoding_weights = kernels.prepare_decode_blocks(weights, x.data.dtype)
            first = self.h[0]
            h = kernels.decode_blocks(x.data[:, 0], cache.decoding_weights, cache.keys, cache.values,
                                      cache.length + 1, first.attn.n_head, first.ln_1.eps, first.mlp.approximate)
            x = Tensor(h[:, None])
        else:
            x = F.dropout(x, self.config.dropout, self.training)
            for block in self.h:
                x = block(x, cache, padding)
        if cache is not None:
            cache.advance(T)
        return self.ln_f(x)

    def new_cache(self, batch_size, capacity):
        """An empty KVCache for `batch_size` sequences of up to `capacity` positions (at most block_size)."""
        c = self.config
        return KVCache(c.n_layer, batch_size, c.n_head, c.n_embd // c.n_head, min(capacity, c.block_size),
                       self.ln_f.weight.dtype)  # the activations' dtype (the embeddings may be int8)


def init_gpt2_weights(module, n_layer):
    """GPT-2's initialisation: N(0, 0.02), residual projections N(0, 0.02/sqrt(2*n_layer)), zero biases."""
    if nn.init.skipping():  # weights about to be loaded: leave them undrawn
        return
    rng = generator()
    residual_std = 0.02 / math.sqrt(2 * n_layer)
    for name, p in module.named_parameters():
        if name.endswith("c_proj.weight"):
            p.data = rng.normal(0.0, residual_std, p.shape).astype(p.dtype)
        elif p.ndim == 2:
            p.data = rng.normal(0.0, 0.02, p.shape).astype(p.dtype)
        elif name.endswith("bias"):
            p.data = np.zeros(p.shape, p.dtype)
        else:  # LayerNorm weights
            p.data = np.ones(p.shape, p.dtype)


class GPT(nn.Module):
    """A GPT language model: `logits, loss = model(input_ids, targets)`."""

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT needs a GPTConfig, got config of type {type(config).__name__} "
                            f"(use GPTConfig.from_dict for a dict)")
        self.config = config
        self.transformer = Transformer(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        init_gpt2_weights(self, config.n_layer)

    @property
    def head_weight(self):
        """The output projection (vocab_size, n_embd): wte's weight when tied."""
        return self.transformer.wte.weight if self.config.tie_word_embeddings else self.lm_head.weight

    def head(self, h):
        """Logits from final hidden states h (..., n_embd): the output projection (tied to wte by default)."""
        layer = self.transformer.wte if self.config.tie_word_embeddings else self.lm_head
        return F.linear(h, layer.weight, weight_scale=layer.weight_scale)

    def quantize(self, method="int8"):
        """Weight-only int8 for inference, in place: every Linear and both embeddings (so the tied head too)
        hold int8 weights with a float32 scale per row (see `nn.quantize`); LayerNorms, biases, activations and
        the KV cache stay float32. Returns the model."""
        if method != "int8":
            raise ValueError(f"quantize: method must be 'int8', got {method!r}")
        return quantization.quantize_int8_(self)

    @property
    def quantized(self):
        """Whether the weights are int8 (`quantize`)."""
        return self.transformer.wte.weight.dtype == np.int8

    def num_parameters(self, exclude_embeddings=False):
        """Number of parameters (tied weights counted once); optionally without the position embeddings."""
        n = sum(p.size for p in self.parameters())
        return n - self.transformer.wpe.weight.size if exclude_embeddings else n

    def check_input_ids(self, input_ids, name="input_ids"):
        """Validate token ids: a (batch, length) or (length,) integer array within the vocabulary."""
        return self.transformer.check_input_ids(input_ids, name)

    def _check_targets(self, targets, shape):
        tgt = targets.data if isinstance(targets, Tensor) else np.asarray(targets)
        if tgt.dtype.kind not in "iu":
            raise ValueError(f"targets must hold integer token ids, got dtype {tgt.dtype}")
        tgt = tgt.reshape(shape) if tgt.ndim == 1 and len(shape) == 2 and shape[0] == 1 else tgt
        if tgt.shape != shape:
            raise ValueError(f"targets must have the shape of input_ids {shape}, got {tgt.shape}")
        bad = (tgt != -100) & ((tgt < 0) | (tgt >= self.config.vocab_size))
        if bad.any():
            raise ValueError(f"targets contains id {int(tgt[bad][0])} outside the vocabulary "
                             f"[0, {self.config.vocab_size}) (use -100 for positions to ignore)")
        return tgt.astype(np.int64, copy=False)

    def forward(self, input_ids, targets=None, position_ids=None, cache=None, attention_mask=None):
        """Logits (B, T, V) and the mean cross-entropy against `targets` (-100 ignored), or None without targets.

        See `Transformer.forward` for position_ids, cache and attention_mask."""
        h = self.transformer(input_ids, position_ids, cache, attention_mask)
        logits = self.head(h)
        if targets is None:
            return logits, None
        B, T, V = logits.shape
        tgt = self._check_targets(targets, (B, T))
        return logits, F.cross_entropy(logits.reshape(B * T, V), tgt.reshape(-1), ignore_index=-100)

    # ----- the decoding protocol of minigen.generation --------------------------------------
    def start_decoding(self, input_ids, attention_mask=None, use_cache=True, crop_context=False, max_length=None):
        """Begin decoding the prompts `input_ids` (B, S), left-padded where `attention_mask` is 0.

        Returns (state, prefix): the prompt is the prefix every output starts with. With crop_context, a
        sequence longer than block_size is conditioned on its last block_size tokens (nanoGPT's sampling);
        without it, that raises ValueError. `max_length` (prompt + new tokens), when known, sizes the KV cache
        once for the whole generation."""
        ids = self.check_input_ids(input_ids)
        if ids.shape[1] > self.config.block_size and not crop_context:
            raise ValueError(f"input_ids has length {ids.shape[1]}, longer than block_size {self.config.block_size}")
        mask = check_attention_mask(attention_mask, ids.shape)
        mask = np.ones(ids.shape, bool) if mask is None else mask
        if not mask[:, -1].all():
            # a right-padded prompt would continue after its padding: a silent wrong answer
            raise ValueError(f"attention_mask: rows {np.flatnonzero(~mask[:, -1]).tolist()} end with padding; a "
                             f"decoder-only model needs prompts padded on the left")
        state = {"mask": np.zeros((ids.shape[0], 0), bool), "pending_mask": mask, "crop_context": crop_context,
                 "tokens": np.zeros((ids.shape[0], 0), np.int64),
                 "cache": self.transformer.new_cache(ids.shape[0], max(max_length or 0, ids.shape[1] + 1))
                 if use_cache else None}
        return state, ids

    def decode_step(self, new_tokens, state):
        """Feed `new_tokens` (N, K); return the next-token logits (N, V) and the state."""
        new_tokens = np.asarray(new_tokens, dtype=np.int64)
        K = new_tokens.shape[1]
        pending = state.pop("pending_mask", None)
        new_mask = pending if pending is not None else np.ones((new_tokens.shape[0], K), bool)
        state["mask"] = np.concatenate([state["mask"], new_mask], axis=1)
        state["tokens"] = np.concatenate([state["tokens"], new_tokens], axis=1)
        block = self.config.block_size
        if state["mask"].shape[1] > block:
            if not state["crop_context"]:
                raise ValueError(f"generation reached length {state['mask'].shape[1]}, longer than block_size "
                                 f"{block}; lower max_length or max_new_tokens")
            # the window slides: positions shift, so cached keys are stale and each step recomputes it
            state["mask"], state["tokens"] = state["mask"][:, -block:], state["tokens"][:, -block:]
            state["cache"] = None
        mask = state["mask"]
        # left padding: positions count real tokens only, as in Hugging Face's GPT-2
        positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        attention_mask = None if mask.all() else mask
        with no_grad():
            if state["cache"] is not None:
                h = self.transformer(new_tokens, positions[:, -K:], state["cache"], attention_mask)
            else:
                h = self.transformer(state["tokens"], positions, None, attention_mask)
            # only the last position's logits are needed: skip the (T, V) head product of the prompt
            logits = self.head(h[:, -1, :])
        return logits.data, state

    def reorder_state(self, state, index):
        """Row i of the new state is row index[i] of `state` (beams, repeated return sequences). The KV cache is
        reordered in place: the state passed in is not to be used again."""
        state = dict(state)
        for key in ("mask", "tokens", "pending_mask"):
            if state.get(key) is not None:
                state[key] = state[key][index]
        if state["cache"] is not None:
            state["cache"].reorder(index)
        return state

    def generate(self, input_ids, attention_mask=None, use_cache=True, crop_context=False, **kwargs):
        """Hugging Face's `generate`: prompt + continuation as an int64 array (see minigen.generation.generate).

        eos_token_id defaults to the config's, as Hugging Face's generation config does; use_cache=False
        recomputes the whole sequence at every step (the reference the KV cache is tested against).
        crop_context=True lets prompt + continuation outgrow block_size: each token is then predicted from
        the last block_size tokens, as nanoGPT samples (Hugging Face raises instead, as minigen does by default)."""
        kwargs.setdefault("eos_token_id", self.config.eos_token_id)
        decoder = _Decoder(self, use_cache, crop_context, _final_length(input_ids, kwargs))
        with self.eval_mode():
            return generate(decoder, input_ids, attention_mask=attention_mask, **kwargs)

    # ----- Hugging Face checkpoint directories ------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory, dtype=np.float32, quantize=None):
        """Load a GPT from a Hugging Face GPT-2 directory (config.json + model.safetensors), in eval mode
        as Hugging Face returns it (call `.train()` to fine-tune with dropout).

        The file is memory-mapped and its tensors are the parameters (GPT-2's Conv1D weights as transposed
        views): loading reads nothing and copies nothing. A parameter that is written to (fine-tuning) gets
        its own memory; the file is never modified. quantize="int8" quantizes a float checkpoint on loading
        (see `quantize`); a checkpoint saved quantized loads quantized."""
        if quantize not in (None, "int8"):
            raise ValueError(f"from_pretrained: quantize must be None or 'int8', got {quantize!r}")
        config, weights, quantized = load_gpt2_directory(directory)
        with nn.init.skip_init():
            model = cls(config)
        if quantized:  # int8 layers to load into
            quantization.quantize_int8_(model, from_weights=False)
        # the parameters take the mapped tensors themselves: nothing is read until used, nothing copied
        model.load_state_dict(weights, strict=True, assign=True)
        if not quantized and np.dtype(dtype) != np.float32:
            model.to(dtype)
        if quantize == "int8" and not quantized:
            model.quantize("int8")
        return model.eval()

    def save_pretrained(self, directory):
        """Write config.json + model.safetensors in Hugging Face's GPT-2 layout (each file atomically). A
        quantized model writes its int8 weights and scales, and the scheme as config.json's
        `quantization_config` (minigen reads it back; transformers does not know it)."""
        from ..io import gpt2
        from ..io.config import save_json
        from ..io.safetensors import save_file
        os.makedirs(directory, exist_ok=True)
        tensors = gpt2.state_dict_to_hf(self.state_dict(), self.config.tie_word_embeddings, self.config.bias)
        save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
        config = gpt2.config_to_hf(self.config.to_dict())
        if self.quantized:
            config["quantization_config"] = quantization.quantization_config()
        save_json(config, os.path.join(directory, "config.json"))


def load_gpt2_directory(directory):
    """(GPTConfig, minigen state dict, whether it is int8-quantized) from a Hugging Face GPT-2 directory, the
    tensors memory-mapped; FileNotFoundError if absent."""
    from ..io import gpt2
    from ..io.config import load_json
    from ..io.safetensors import load_file
    directory = os.fspath(directory)
    config_path, weights_path = os.path.join(directory, "config.json"), os.path.join(directory, "model.safetensors")
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"from_pretrained: {path!r} not found (expected a checkpoint directory with "
                                    f"config.json and model.safetensors)")
    hf_config = load_json(config_path)
    config = GPTConfig(**gpt2.config_from_hf(hf_config, config_path))
    quantized = hf_config.get("quantization_config") is not None
    if quantized:
        quantization.check_quantization_config(hf_config["quantization_config"], config_path)
    return config, gpt2.state_dict_from_hf(load_file(weights_path, mmap=True), config.bias), quantized


def _final_length(input_ids, kwargs):
    """The length generate's sequences may reach (prompt + new tokens) from its keywords, or None when they do
    not say it plainly (generate checks them and raises)."""
    def integer(value):
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    prompt = np.shape(input_ids)[-1] if np.ndim(input_ids) else 0
    new, total = kwargs.get("max_new_tokens"), kwargs.get("max_length", 20)
    if new is not None:
        return prompt + int(new) if integer(new) else None
    return int(total) if integer(total) else None


class _Decoder:
    """Binds use_cache, crop_context and the final length to the model's decoding protocol."""

    def __init__(self, model, use_cache, crop_context, max_length):
        self.model, self.use_cache, self.crop_context, self.max_length = model, use_cache, crop_context, max_length

    def start_decoding(self, input_ids, attention_mask=None):
        return self.model.start_decoding(input_ids, attention_mask, self.use_cache, self.crop_context,
                                         self.max_length)

    def decode_step(self, new_tokens, state):
        return self.model.decode_step(new_tokens, state)

    def reorder_state(self, state, index):
        return self.model.reorder_state(state, index)

