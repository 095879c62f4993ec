"""What a pre-trained GPT is fine-tuned for beyond next-token prediction.

- `GPTForSequenceClassification`: the GPT body and a linear `score` head read at the last real token of
  each sequence, as Hugging Face's GPT2ForSequenceClassification. Used for sentence pairs ("is B the
  continuation of A?") by feeding `A <sep> B`.
- Fill-in-the-middle (Bavarian et al., 2022), PSM format: a document cut as prefix / middle / suffix is
  trained as `<PRE> prefix <SUF> suffix <MID> middle`, so that at inference the model, given
  `<PRE> prefix <SUF> suffix <MID>`, writes the middle.
"""
from dataclasses import replace

import numpy as np

from .. import nn
from ..autograd import Tensor, no_grad
from ..nn import functional as F
from ..random import generator
from .gpt import Transformer, init_gpt2_weights, load_gpt2_directory

FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"
FIM_TOKENS = (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)


class GPTForSequenceClassification(nn.Module):
    """`logits, loss = model(input_ids, attention_mask, labels)`: num_labels logits per sequence.

    The logits are `score(h)` at each row's last real token: the last position where `attention_mask` is 1,
    else -- as Hugging Face does -- the last position that is not `pad_token_id`, else the last position.
    Pad on the right: a causal model's last real token then sees exactly the real tokens. Parameter names
    are Hugging Face's (`transformer.*`, `score.weight`)."""

    def __init__(self, config, num_labels, pad_token_id=None):
        super().__init__()
        if not isinstance(num_labels, (int, np.integer)) or isinstance(num_labels, bool) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
        self.config, self.num_labels, self.pad_token_id = config, int(num_labels), pad_token_id
        self.transformer = Transformer(config)
        self.score = nn.Linear(config.n_embd, self.num_labels, bias=False)
        init_gpt2_weights(self, config.n_layer)

    @classmethod
    def from_gpt(cls, gpt, num_labels, pad_token_id=None):
        """A classifier whose body is a copy of the GPT `gpt`'s (the head starts fresh)."""
        model = cls(replace(gpt.config), num_labels, pad_token_id)
        model.transformer.load_state_dict(gpt.transformer.state_dict())
        return model

    @classmethod
    def from_pretrained(cls, directory, num_labels, pad_token_id=None, dtype=np.float32):
        """A classifier whose body is loaded from a GPT-2 directory (config.json + model.safetensors); its head
        too when the directory holds a GPT2ForSequenceClassification with num_labels labels."""
        config, weights, quantized = load_gpt2_directory(directory)
        if quantized:
            raise ValueError(f"{cls.__name__}.from_pretrained: {directory!r} holds an int8-quantized GPT; a "
                             f"classifier is fine-tuned from a float checkpoint")
        model = cls(config, num_labels, pad_token_id).to(dtype)
        body = {k[len("transformer."):]: v for k, v in weights.items() if k.startswith("transformer.")}
        model.transformer.load_state_dict(body)
        if weights.get("score.weight", np.empty(0)).shape == model.score.weight.shape:
            model.score.load_state_dict({"weight": weights["score.weight"]})
        return model.eval()

    def last_token_index(self, ids, attention_mask=None):
        """Index of each row's last real token, (B,)."""
        B, T = ids.shape
        if attention_mask is not None:
            mask = np.asarray(attention_mask).astype(bool)
            if mask.shape != ids.shape:
                raise ValueError(f"attention_mask must have the shape of input_ids {ids.shape}, got {mask.shape}")
            if not mask.any(axis=1).all():
                raise ValueError("attention_mask has a row with no real token")
            return T - 1 - np.argmax(mask[:, ::-1], axis=1)
        if self.pad_token_id is None:
            return np.full(B, T - 1)
        real = ids != self.pad_token_id
        return np.where(real.any(axis=1), T - 1 - np.argmax(real[:, ::-1], axis=1), T - 1)

    def forward(self, input_ids, attention_mask=None, labels=None):
        """Logits (B, num_labels) and the mean cross-entropy against integer `labels` (B,), or None."""
        ids = self.transformer.check_input_ids(input_ids)
        last = self.last_token_index(ids, attention_mask)
        h = self.transformer(ids)
        logits = self.score(h[np.arange(len(ids)), last])
        if labels is None:
            return logits, None
        labels = labels.data if isinstance(labels, Tensor) else np.asarray(labels)
        if labels.shape != (len(ids),) or labels.dtype.kind not in "iu" or labels.min() < 0 \
                or labels.max() >= self.num_labels:
            raise ValueError(f"labels must be {len(ids)} integers in [0, {self.num_labels}), got {labels!r}")
        return logits, F.cross_entropy(logits, labels)


# ----- fill-in-the-middle ------------------------------------------------------------------------------
def fim_sentinel_ids(tokenizer):
    """The ids of (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE) in `tokenizer`; ValueError when it lacks them."""
    ids = tuple(tokenizer.token_to_id(t) for t in FIM_TOKENS)
    if None in ids:
        raise ValueError(f"the tokenizer has no fill-in-the-middle tokens {FIM_TOKENS}; train with --fim-rate > 0 "
                         f"(they are then added as special tokens)")
    return ids


def fim_transform(ids, prefix_id, suffix_id, middle_id, rng=None, rate=0.5):
    """With probability `rate`, cut `ids` (1-D) at two uniform points into prefix / middle / suffix and return
    `[prefix_id] prefix [suffix_id] suffix [middle_id] middle` (3 tokens longer); otherwise `ids` unchanged."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {ids.shape}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    rng = generator() if rng is None else rng
    if rng.random() >= rate:
        return ids
    i, j = np.sort(rng.integers(0, len(ids) + 1, size=2))
    return np.concatenate([[prefix_id], ids[:i], [suffix_id], ids[j:], [middle_id], ids[i:j]]).astype(ids.dtype)


def fim_batch(x, y, sentinel_ids, rng, rate):
    """FIM-transform rows of a language-model batch (x, y = x shifted by one), keeping the shapes: a row
    chosen for FIM is rebuilt from its first T - 2 tokens (the transform adds 3), the others are kept."""
    B, T = x.shape
    x, y = x.copy(), y.copy()
    for row in range(B):
        tokens = np.concatenate([x[row], y[row, -1:]])
        short = tokens[:T - 2]
        moved = fim_transform(short, *sentinel_ids, rng=rng, rate=rate)
        if len(moved) != len(short):
            x[row], y[row] = moved[:-1], moved[1:]
    return x, y


def fill_in_the_middle(model, tokenizer, prefix, suffix, max_new_tokens=32, **generate_kwargs):
    """The middle text a FIM-trained `model` writes between `prefix` and `suffix` (PSM prompt).

    Generation stops at `max_new_tokens` or at any sentinel token; other keywords go to `model.generate`
    (greedy by default)."""
    pre, suf, mid = fim_sentinel_ids(tokenizer)
    prompt = [pre] + tokenizer.encode(prefix) + [suf] + tokenizer.encode(suffix) + [mid]
    if len(prompt) + max_new_tokens - 1 > model.config.block_size:  # the last token needs no forward pass
        raise ValueError(f"prefix + suffix take {len(prompt)} tokens with the sentinels; with max_new_tokens="
                         f"{max_new_tokens} that exceeds block_size {model.config.block_size}")
    with no_grad():
        out = model.generate(np.array([prompt]), max_new_tokens=max_new_tokens,
                             eos_token_id=[pre, suf, mid], pad_token_id=mid, **generate_kwargs)
    middle = [int(t) for t in out[0, len(prompt):] if t not in (pre, suf, mid)]
    return tokenizer.decode(middle)
