"""Seq2Seq: an RNN/GRU encoder-decoder with optional attention, readable top to bottom.

    memory = encoder(embed(source))                     bidirectional GRU/RNN over the real tokens only
    h_0    = tanh(bridge(final encoder states))         one initial state per decoder layer
    for each target step t:
        h_t          = decoder cells([embed(y_{t-1}); c_{t-1}], h_{t-1})   (input feeding of the context)
        c_t, a_t     = attention(h_t, memory, source padding mask)
        logits_t     = out([h_t; c_t])

With attention='none' the decoder sees the source only through h_0: no context vector is fed or
projected, the classic encoder-decoder. Attention is Bahdanau's additive score or Luong's dot /
general score; all variants share this order of operations (attend with the new state, as Luong).

A bidirectional encoder gives each direction hidden_size // 2 units, as OpenNMT's `brnn` does, so
encoder outputs, decoder states and the dot-product attention all have hidden_size features.

The model implements the step protocol of `minigen.generation`, so `model.generate(src_ids, num_beams=4)`
takes Hugging Face's keywords; `model.translate(["the 3rd of March, 2021"])` works on strings when the
model carries its vocabularies (training and `from_pretrained` attach them).
"""
import json
import os
from dataclasses import asdict, dataclass, fields

import numpy as np

from .. import kernels, nn
from ..autograd import Tensor, is_grad_enabled, no_grad
from ..generation import check_attention_mask, generate
from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..io.config import parse_json
from ..nn import functional as F
from ..ops import BahdanauDecoder, cat, stack
from ..random import generator
from ..tokenizers.char import CharTokenizer

CELLS = {"gru": (nn.GRU, nn.GRUCell), "rnn": (nn.RNN, nn.RNNCell)}
ATTENTIONS = ("bahdanau", "luong-dot", "luong-general", "none")
SRC_VOCAB_FILE, TGT_VOCAB_FILE = "src_vocab.json", "tgt_vocab.json"


@dataclass
class Seq2SeqConfig:
    """The shape of a Seq2Seq model.

    hidden_size is the size of the decoder state and of the encoder outputs (each direction of a
    bidirectional encoder has hidden_size // 2 units, so it must then be even). The decoder has as
    many layers as the encoder. pad_id / bos_id / eos_id are the special target ids (pad_id is also
    the source padding id).
    """
    src_vocab_size: int
    tgt_vocab_size: int
    embedding_size: int = 64
    hidden_size: int = 256
    num_layers: int = 1
    cell: str = "gru"
    bidirectional: bool = True
    attention: str = "bahdanau"
    dropout: float = 0.0
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self):
        for name in ("src_vocab_size", "tgt_vocab_size", "embedding_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Seq2SeqConfig.{name} must be a positive integer, got {value!r}")
        if self.cell not in CELLS:
            raise ValueError(f"Seq2SeqConfig.cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"Seq2SeqConfig.attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if not isinstance(self.bidirectional, bool):
            raise ValueError(f"Seq2SeqConfig.bidirectional must be True or False, got {self.bidirectional!r}")
        if self.bidirectional and self.hidden_size % 2:
            raise ValueError(f"Seq2SeqConfig.hidden_size must be even with a bidirectional encoder "
                             f"(hidden_size // 2 per direction), got {self.hidden_size}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Seq2SeqConfig.dropout must be a number in [0, 1), got {self.dropout!r}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
                    or not 0 <= value < self.tgt_vocab_size:
                raise ValueError(f"Seq2SeqConfig.{name} must be an id in [0, tgt_vocab_size="
                                 f"{self.tgt_vocab_size}), got {value!r}")
        if self.pad_id >= self.src_vocab_size:
            raise ValueError(f"Seq2SeqConfig.pad_id ({self.pad_id}) must be < src_vocab_size ({self.src_vocab_size})")
        if len({self.pad_id, self.bos_id, self.eos_id}) != 3:
            raise ValueError(f"Seq2SeqConfig: pad_id, bos_id and eos_id must differ, got "
                             f"{self.pad_id}, {self.bos_id}, {self.eos_id}")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d, where="config"):
        """A config from a dict such as config.json holds; ValueError naming `where` on bad fields."""
        known = {f.name for f in fields(cls)}
        missing = sorted({"src_vocab_size", "tgt_vocab_size"} - set(d))
        if missing:
            raise ValueError(f"{where}: missing required field(s) {missing}")
        return cls(**{k: v for k, v in d.items() if k in known})


class Seq2Seq(nn.Module):
    """RNN/GRU encoder-decoder: `logits = model(src, src_lengths, tgt_in)`; decode with `generate`."""

    FUSED_STEP_MAX_ROWS = 8  # decoding steps of up to this many rows run as one kernel call (`_steps_in_one_call`)

    def __init__(self, config, src_vocab=None, tgt_vocab=None):
        super().__init__()
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"Seq2Seq needs a Seq2SeqConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.src_vocab, self.tgt_vocab = _check_vocabs(config, src_vocab, tgt_vocab)
        rnn, cell = CELLS[c.cell]
        directions = 2 if c.bidirectional else 1
        self.src_embedding = nn.Embedding(c.src_vocab_size, c.embedding_size, padding_idx=c.pad_id)
        self.encoder = rnn(c.embedding_size, c.hidden_size // directions, num_layers=c.num_layers,
                           batch_first=True, dropout=c.dropout, bidirectional=c.bidirectional)
        self.bridge = nn.Linear(c.hidden_size, c.hidden_size)
        self.tgt_embedding = nn.Embedding(c.tgt_vocab_size, c.embedding_size, padding_idx=c.pad_id)
        context_size = 0 if c.attention == "none" else c.hidden_size
        self.decoder = nn.ModuleList([cell(c.embedding_size + context_size if layer == 0 else c.hidden_size,
                                           c.hidden_size) for layer in range(c.num_layers)])
        if c.attention == "bahdanau":
            self.attention = nn.BahdanauAttention(c.hidden_size, c.hidden_size, c.hidden_size)
        elif c.attention != "none":
            self.attention = nn.LuongAttention(c.hidden_size, c.hidden_size, method=c.attention[len("luong-"):])
        else:
            self.attention = None
        self.out = nn.Linear(c.hidden_size + context_size, c.tgt_vocab_size)

    def num_parameters(self):
        return sum(p.size for p in self.parameters())

    # ----- encoder -------------------------------------------------------------------------
    def encode(self, src, src_lengths):
        """Run the encoder once. Returns (memory, hidden): memory a dict with 'outputs' (B, S, H),
        'mask' (B, S) True at padding and 'keys' (the attention's precomputed key projection);
        hidden the decoder's initial states, one (B, H) Tensor per layer."""
        src, lengths = self._check_source(src, src_lengths)
        c = self.config
        embedded = F.dropout(self.src_embedding(src), c.dropout, self.training)
        # decoding a batch: the first layer's input projections looked up by token (`_source_projections`)
        looked_up = not (is_grad_enabled() or self.training and c.dropout) and src.size >= c.src_vocab_size
        outputs, h_n = self.encoder(embedded, lengths=lengths,
                                    first_projections=self._source_projections(src) if looked_up else None)
        B = src.shape[0]
        directions = 2 if c.bidirectional else 1
        # h_n is (layers * directions, B, H / directions): put the directions of a layer side by side
        finals = h_n.reshape(c.num_layers, directions, B, -1).permute(0, 2, 1, 3).reshape(c.num_layers, B, -1)
        initial = self.bridge(finals).tanh()
        memory = {"outputs": outputs, "lengths": lengths,
                  "mask": np.arange(src.shape[1])[None, :] >= lengths[:, None]}
        memory["keys"] = None if self.attention is None else self.attention.precompute_keys(outputs)
        return memory, [initial[layer] for layer in range(c.num_layers)]

    def _source_projections(self, src):
        """The encoder's first-layer input projections for sources src (B, S), one (S, B, G) array per direction, as
        rows of a table: the source vocabulary's embeddings projected once (V, G) per direction, each token's row
        taken, as the decoder's input gates are (`_input_gate_arrays`). For a batch of sources this replaces a
        product with 64 inputs, which runs at a fraction of BLAS's speed (15-30 against 3 ms for 250 x 35 tokens)."""
        encoder, embeddings = self.encoder, self.src_embedding.weight.data
        projections = []
        for suffix in encoder._suffixes(0):
            bias = getattr(encoder, "bias_ih" + suffix, None)
            table = kernels.linear_forward(embeddings, getattr(encoder, "weight_ih" + suffix).data,
                                           None if bias is None else bias.data)
            projections.append(table[src.T])
        return projections

    def _check_source(self, src, src_lengths):
        src = np.asarray(src.data if isinstance(src, Tensor) else src)
        lengths = np.asarray(src_lengths.data if isinstance(src_lengths, Tensor) else src_lengths)
        if src.ndim != 2 or src.dtype.kind not in "iu":
            raise ValueError(f"src must be a 2-D integer array (batch, source length), got shape {src.shape} "
                             f"and dtype {src.dtype}")
        if lengths.shape != (src.shape[0],) or lengths.dtype.kind not in "iu":
            raise ValueError(f"src_lengths must be integers of shape ({src.shape[0]},), got shape {lengths.shape} "
                             f"and dtype {lengths.dtype}")
        if src.shape[0] and (lengths.min() < 1 or lengths.max() > src.shape[1]):
            raise ValueError(f"src_lengths must lie in [1, {src.shape[1]}] (an empty source cannot be encoded), "
                             f"got values in [{lengths.min()}, {lengths.max()}]")
        _check_ids("src", src, self.config.src_vocab_size, "source")
        return src.astype(np.int64, copy=False), lengths.astype(np.int64, copy=False)

    # ----- decoder -------------------------------------------------------------------------
    def _step(self, tokens, hidden, context, memory):
        """One decoder step for previous tokens (B,): returns (features [h; c] (B, F), hidden, context,
        attention weights (B, S) or None)."""
        x = F.dropout(self.tgt_embedding(tokens), self.config.dropout, self.training)
        if self.attention is not None:
            x = cat([x, context], dim=-1)  # input feeding: the previous step's context
        new_hidden = []
        for layer, cell in enumerate(self.decoder):
            h = cell(x, hidden[layer])
            new_hidden.append(h)
            x = F.dropout(h, self.config.dropout, self.training) if layer + 1 < len(self.decoder) else h
        if self.attention is None:
            return x, new_hidden, None, None
        context, weights = self.attention(x, memory["outputs"], memory["mask"], projected_keys=memory["keys"])
        return cat([x, context], dim=-1), new_hidden, context, weights

    def _initial_context(self, batch, memory):
        if self.attention is None:
            return None
        return Tensor._wrap(np.zeros((batch, self.config.hidden_size), dtype=memory["outputs"].dtype))

    def forward(self, src, src_lengths, tgt_in, teacher_forcing_ratio=1.0):
        """Logits (B, T, tgt_vocab_size) for decoder inputs tgt_in (B, T) = bos + target (padded).

        With teacher_forcing_ratio < 1 (scheduled sampling), each row's input at step t > 0 is, with
        probability 1 - ratio, the model's own greedy prediction from step t - 1 instead of tgt_in[:, t]."""
        tgt_in = np.asarray(tgt_in.data if isinstance(tgt_in, Tensor) else tgt_in)
        if tgt_in.ndim != 2 or tgt_in.dtype.kind not in "iu" or tgt_in.shape[1] < 1:
            raise ValueError(f"tgt_in must be a 2-D integer array (batch, target length >= 1), got shape "
                             f"{tgt_in.shape} and dtype {tgt_in.dtype}")
        _check_ids("tgt_in", tgt_in, self.config.tgt_vocab_size, "target")
        if isinstance(teacher_forcing_ratio, (bool, np.bool_)) \
                or not isinstance(teacher_forcing_ratio, (int, float, np.integer, np.floating)):
            raise TypeError(f"teacher_forcing_ratio must be a number in [0, 1], got {teacher_forcing_ratio!r}")
        if not 0.0 <= teacher_forcing_ratio <= 1.0:
            raise ValueError(f"teacher_forcing_ratio must be in [0, 1], got {teacher_forcing_ratio}")
        memory, hidden = self.encode(src, src_lengths)
        B, T = tgt_in.shape
        if memory["outputs"].shape[0] != B:
            raise ValueError(f"tgt_in has {B} rows but src has {memory['outputs'].shape[0]}")
        if self._decodes_in_one_op(teacher_forcing_ratio):
            cell, attention = self.decoder[0], self.attention
            features = BahdanauDecoder.apply(self.tgt_embedding(tgt_in), hidden[0], memory["outputs"], memory["keys"],
                                             cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh,
                                             attention.W.weight, attention.v.weight, lengths=memory["lengths"])
            return self.out(features)
        context = self._initial_context(B, memory)
        tokens, features = tgt_in[:, 0], []
        for t in range(T):
            if t > 0:
                tokens = tgt_in[:, t]
                if teacher_forcing_ratio < 1.0:
                    own = generator().random(B) >= teacher_forcing_ratio
                    with no_grad():
                        predicted = np.argmax(self.out(features[-1]).data, axis=1)
                    tokens = np.where(own, predicted, tokens)
            step_features, hidden, context, _ = self._step(tokens, hidden, context, memory)
            features.append(step_features)
        # one output projection for all steps: a single GEMM instead of T small ones
        features = F.dropout(stack(features, dim=1), self.config.dropout, self.training)
        return self.out(features)

    def _decodes_in_one_op(self, teacher_forcing_ratio):
        """Whether teacher-forced decoding runs as the fused `ops.BahdanauDecoder` (the default model's shape: one
        GRU layer, Bahdanau attention, no dropout at work, every input the target's) rather than step by step."""
        c = self.config
        return c.cell == "gru" and c.num_layers == 1 and c.attention == "bahdanau" and teacher_forcing_ratio == 1.0 \
            and not (self.training and c.dropout > 0)

    @staticmethod
    def loss(logits, tgt_out, ignore_index=-100):
        """Mean cross-entropy of logits (B, T, V) against tgt_out (B, T); ignore_index positions skipped."""
        tgt_out = np.asarray(tgt_out.data if isinstance(tgt_out, Tensor) else tgt_out)
        if tgt_out.shape != logits.shape[:2]:
            raise ValueError(f"tgt_out has shape {tgt_out.shape}, expected {logits.shape[:2]} like the logits")
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), ignore_index=ignore_index)

    # ----- the decoding protocol of minigen.generation --------------------------------------
    def start_decoding(self, input_ids, attention_mask=None):
        """Encode the sources once. A missing attention_mask is taken as input_ids != pad_id (as Hugging
        Face does); padding must be on the right. The prefix is a column of bos ids.

        The state keeps one copy of the encoder's outputs and projected keys per source; decoding rows
        (beams, returned sequences) read theirs through state['rows'], so following the beams moves
        only each row's decoder state, never the (S, H) memory."""
        ids = np.asarray(input_ids)
        _check_ids("input_ids", ids, self.config.src_vocab_size, "source")
        if attention_mask is None:
            mask = ids != self.config.pad_id
        else:
            mask = check_attention_mask(attention_mask, ids.shape)
        lengths = mask.sum(axis=1)
        if not np.array_equal(mask, np.arange(ids.shape[1])[None, :] < lengths[:, None]):
            raise ValueError("attention_mask (or input_ids != pad_id) must mark each source as a run of real "
                             "tokens followed by padding on the right")
        if (lengths == 0).any():
            raise ValueError(f"source row {int(np.argmin(lengths))} is empty (no real tokens); "
                             "an empty source cannot be translated")
        with no_grad():
            memory, hidden = self.encode(ids, lengths)
        context = self._initial_context(len(ids), memory)
        state = {"outputs": memory["outputs"].data, "mask": memory["mask"], "lengths": lengths,
                 "keys": None if memory["keys"] is None else memory["keys"].data, "rows": np.arange(len(ids)),
                 "hidden": np.stack([h.data for h in hidden]),
                 "context": None if context is None else context.data, "attention": None}
        # a table of V rows pays for itself in one step of V rows or more; for a few sources it costs more than it saves
        table = isinstance(self.attention, nn.BahdanauAttention) and len(ids) >= self.config.tgt_vocab_size
        state.update(self._input_gate_arrays() if table else {"input_gates": None})
        return state, np.full((len(ids), 1), self.config.bos_id, dtype=np.int64)

    def _input_gate_arrays(self):
        """What `_decode_step_arrays` can compute once per `generate` call: the first cell's input gates for every
        target token (embedding @ W_ih[:, :E]^T + b_ih, a (V, G) table: a step looks its tokens' rows up instead of
        multiplying their embeddings) and the part of W_ih that multiplies the fed-back context."""
        cell, E = self.decoder[0], self.config.embedding_size
        weight = cell.weight_ih.data
        table = kernels.linear_forward(self.tgt_embedding.weight.data, np.ascontiguousarray(weight[:, :E]),
                                       cell.bias_ih.data if cell.bias else None)
        return {"input_gates": table, "context_weight": np.ascontiguousarray(weight[:, E:])}

    def decode_step(self, new_tokens, state):
        hidden, context, weights = state["hidden"], state["context"], None
        new_tokens = np.asarray(new_tokens, dtype=np.int64)
        if self._steps_in_one_call(len(new_tokens)):
            step = self._step_weights()
            for column in new_tokens.T:  # each column's logits are computed; only the last one's are returned
                logits, h, context, weights = kernels.seq2seq_decode_step(
                    column, hidden[0], context, step, state["keys"], state["outputs"], state["lengths"], state["rows"])
                hidden = h[None]
            return logits, dict(state, hidden=hidden, context=context, attention=weights)
        with no_grad():
            for column in new_tokens.T:
                if isinstance(self.attention, nn.BahdanauAttention) and (self.config.dropout == 0 or not self.training):
                    features, hidden, context, weights = self._decode_step_arrays(column, hidden, context, state)
                else:
                    features, hidden, context, weights = self._decode_step_tensors(column, hidden, context, state)
            logits = kernels.linear_forward(features, self.out.weight.data, self.out.bias.data)
        return logits, dict(state, hidden=hidden, context=context, attention=weights)

    def _steps_in_one_call(self, rows):
        """Whether a decoding step of `rows` rows runs as the one kernel call `kernels.seq2seq_decode_step`: the
        default model's shape (one GRU layer, Bahdanau attention; no dropout at work) and at most
        FUSED_STEP_MAX_ROWS rows (with more, the products dominate and BLAS computes them faster)."""
        c = self.config
        return 0 < rows <= self.FUSED_STEP_MAX_ROWS and c.cell == "gru" and c.num_layers == 1 \
            and c.attention == "bahdanau" and not (self.training and c.dropout > 0)

    def _step_weights(self):
        """The decoder's arrays as `kernels.seq2seq_decode_step` takes them."""
        cell, a = self.decoder[0], self.attention
        return (self.tgt_embedding.weight.data, cell.weight_ih.data, cell.bias_ih.data if cell.bias else None,
                cell.weight_hh.data, cell.bias_hh.data if cell.bias else None, a.W.weight.data, a.v.weight.data[0],
                self.out.weight.data, self.out.bias.data)

    def _decode_step_tensors(self, tokens, hidden, context, state):
        """`_step` on the memory of each decoding row (a gathered copy)."""
        rows = state["rows"]
        memory = {"outputs": Tensor._wrap(state["outputs"][rows]), "mask": state["mask"][rows],
                  "keys": None if state["keys"] is None else Tensor._wrap(state["keys"][rows])}
        features, hidden, context, weights = self._step(
            tokens, [Tensor._wrap(h) for h in hidden], None if context is None else Tensor._wrap(context), memory)
        return (features.data, np.stack([h.data for h in hidden]), None if context is None else context.data,
                None if weights is None else weights.data)

    def _decode_step_arrays(self, tokens, hidden, context, state):
        """`_step` with Bahdanau attention on arrays, no graph: decoding's hot loop. For many sources the tokens'
        input gates are rows of a table (`_input_gate_arrays`), the products go to BLAS, and the attention is one
        kernel call that reads the shared memory through state['rows']."""
        x, new_hidden = context, np.empty_like(hidden)
        for layer, cell in enumerate(self.decoder):
            if layer == 0 and state["input_gates"] is not None:  # the embeddings' share from the table
                gi = state["input_gates"][tokens] + kernels.linear_forward(x, state["context_weight"], None)
            else:
                if layer == 0:
                    x = np.concatenate([self.tgt_embedding.weight.data[tokens], x], axis=1)
                gi = kernels.linear_forward(x, cell.weight_ih.data, cell.bias_ih.data if cell.bias else None)
            gh = kernels.linear_forward(hidden[layer], cell.weight_hh.data, cell.bias_hh.data if cell.bias else None)
            if cell.mode == "gru":
                new_hidden[layer] = kernels.gru_gates_forward(gi, gh, hidden[layer])[0]
            else:
                new_hidden[layer] = np.tanh(gi + gh) if cell.mode == "tanh" else np.maximum(gi + gh, 0)
            x = new_hidden[layer]
        a = self.attention
        query = kernels.linear_forward(x, a.W.weight.data, None)
        context, weights = kernels.additive_attention_step(query, state["keys"], a.v.weight.data[0], state["outputs"],
                                                           state["lengths"], state["rows"])
        return np.concatenate([x, context], axis=1), new_hidden, context, weights

    def reorder_state(self, state, index):
        moved = {"rows": state["rows"][index], "hidden": state["hidden"][:, index]}
        for key in ("context", "attention"):
            moved[key] = None if state[key] is None else state[key][index]
        return dict(state, **moved)

    def last_attention(self, state):
        """The cross-attention weights (N, S) of the last decode_step (None without attention)."""
        return state["attention"]

    def generate(self, input_ids, attention_mask=None, **kwargs):
        """Hugging Face's `generate` over source ids (B, S): int64 (B * num_return_sequences, L) sequences
        that start with bos. eos_token_id and pad_token_id default to the config's. See
        minigen.generation.generate for every keyword."""
        kwargs.setdefault("eos_token_id", self.config.eos_id)
        kwargs.setdefault("pad_token_id", self.config.pad_id)
        with self.eval_mode():
            return generate(self, input_ids, attention_mask=attention_mask, **kwargs)

    # ----- strings in, strings out ----------------------------------------------------------
    def encode_sources(self, texts, unk="error"):
        """Source strings -> (ids (B, S) right-padded with pad_id, attention_mask (B, S)).

        Unknown characters raise ValueError naming them (unk='error'), or become <unk> (unk='replace')."""
        if self.src_vocab is None:
            raise ValueError("this model has no source vocabulary; pass src_vocab= or load it with from_pretrained")
        if isinstance(texts, str):
            raise TypeError(f"texts must be a list of strings, got the single str {texts!r}")
        texts = list(texts)
        if not texts:
            raise ValueError("texts is empty; expected at least one source string")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
            if not text:
                raise ValueError(f"texts[{i}] is an empty string; an empty source cannot be translated")
        encoded = [self.src_vocab.encode(text, unk=unk) for text in texts]
        lengths = np.array([len(e) for e in encoded])
        ids = np.full((len(encoded), lengths.max()), self.config.pad_id, dtype=np.int64)
        for row, e in zip(ids, encoded):
            row[:len(e)] = e
        return ids, np.arange(ids.shape[1])[None, :] < lengths[:, None]

    def translate(self, texts, unk="error", max_length=64, **kwargs):
        """Translate source strings; returns one string per source, or with num_return_sequences=n a list
        of n strings (best first) per source. Other keywords go to `generate` (num_beams, do_sample, ...)."""
        if self.tgt_vocab is None:
            raise ValueError("this model has no target vocabulary; pass tgt_vocab= or load it with from_pretrained")
        ids, mask = self.encode_sources(texts, unk=unk)
        sequences = self.generate(ids, attention_mask=mask, max_length=max_length, **kwargs)
        decoded = [self.tgt_vocab.decode(_until_eos(row[1:], self.config.eos_id), skip_special_tokens=True)
                   for row in sequences]
        n = kwargs.get("num_return_sequences", 1)
        return decoded if n == 1 else [decoded[i:i + n] for i in range(0, len(decoded), n)]

    # ----- checkpoints ----------------------------------------------------------------------
    def save_pretrained(self, directory, step=0, extra_manifest=None, optimizer_tensors=None):
        """Write an atomic checkpoint directory: config.json, model.safetensors, the vocabularies
        (src_vocab.json, tgt_vocab.json) when the model has them, trainer_state.json (step, ...) and,
        for a training run to resume, optimizer.safetensors."""
        extra = {}
        for name, vocab in ((SRC_VOCAB_FILE, self.src_vocab), (TGT_VOCAB_FILE, self.tgt_vocab)):
            if vocab is not None:
                extra[name] = json.dumps(vocab_to_dict(vocab), ensure_ascii=False, indent=2) + "\n"
        config = {"model_type": "seq2seq", **self.config.to_dict()}
        save_checkpoint(directory, tensors=self.state_dict(), config=config,
                        manifest={"step": int(step), **(extra_manifest or {})}, extra_files=extra,
                        optimizer_tensors=optimizer_tensors)

    @classmethod
    def from_pretrained(cls, directory, dtype=np.float32):
        """Load a directory written by save_pretrained; ValueError naming the file on anything malformed."""
        directory = os.fspath(directory)
        checkpoint = load_checkpoint(directory)
        where = os.path.join(directory, "config.json")
        if checkpoint.config.get("model_type") != "seq2seq":
            raise ValueError(f"{where}: model_type is {checkpoint.config.get('model_type')!r}, expected 'seq2seq'")
        config = Seq2SeqConfig.from_dict(checkpoint.config, where)
        vocabs = []
        for name in (SRC_VOCAB_FILE, TGT_VOCAB_FILE):
            raw = checkpoint.extra_files.get(name)
            try:
                vocabs.append(None if raw is None else vocab_from_dict(parse_json(raw)))
            except ValueError as e:
                raise ValueError(f"{os.path.join(directory, name)}: {e}") from None
        model = cls(config, *vocabs).to(dtype)
        try:
            model.load_state_dict(checkpoint.tensors, strict=True)
        except ValueError as e:
            raise ValueError(f"{os.path.join(directory, 'model.safetensors')}: {e}") from None
        return model


def _until_eos(ids, eos_id):
    """The ids before the first eos."""
    ends = np.flatnonzero(ids == eos_id)
    return ids[:ends[0]] if ends.size else ids


def vocab_to_dict(vocab):
    """The JSON form of a vocabulary in src_vocab.json and tgt_vocab.json:
    ``{"specials": [pad, bos, eos, unk], "chars": "..."}``."""
    return {"specials": [vocab.pad_token, vocab.bos_token, vocab.eos_token, vocab.unk_token], "chars": vocab.chars}


def vocab_from_dict(d):
    """The vocabulary (a CharTokenizer.from_chars) that `vocab_to_dict` described; ValueError when `d` is
    not such a dict."""
    if not isinstance(d, dict) or set(d) != {"specials", "chars"}:
        found = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"vocab dict must have exactly the keys 'chars' and 'specials', got {found}")
    chars, specials = d["chars"], d["specials"]
    if not isinstance(chars, str):
        raise ValueError(f"vocab dict 'chars' must be a str, got {type(chars).__name__}")
    if "".join(sorted(set(chars))) != chars:
        raise ValueError(f"vocab dict 'chars' must be distinct and sorted (as vocab_to_dict writes it), got {chars!r}")
    if not isinstance(specials, (list, tuple)) or not all(isinstance(s, str) for s in specials):
        raise ValueError(f"vocab dict 'specials' must be a list of str, got {specials!r}")
    return CharTokenizer.from_chars(chars, specials)


def _check_ids(name, ids, vocab_size, side):
    """Raise ValueError naming the argument and the vocabulary (source or target) for an id outside it."""
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids.min() if ids.min() < 0 else ids.max()
        raise ValueError(f"{name}: id {bad} is outside the {side} vocabulary [0, {vocab_size})")


def _check_vocabs(config, src_vocab, tgt_vocab):
    """Vocabularies must match the config's sizes and special ids."""
    for side, vocab, size in (("src", src_vocab, config.src_vocab_size), ("tgt", tgt_vocab, config.tgt_vocab_size)):
        if vocab is None:
            continue
        if not isinstance(vocab, CharTokenizer) or vocab.pad_id is None:
            raise TypeError(f"{side}_vocab must be a CharTokenizer with a pad token (CharTokenizer.from_chars), "
                            f"got {vocab!r}")
        if len(vocab) != size:
            raise ValueError(f"{side}_vocab has {len(vocab)} tokens but config.{side}_vocab_size is {size}")
        if vocab.pad_id != config.pad_id:
            raise ValueError(f"{side}_vocab.pad_id is {vocab.pad_id} but config.pad_id is {config.pad_id}")
    if tgt_vocab is not None and (tgt_vocab.bos_id, tgt_vocab.eos_id) != (config.bos_id, config.eos_id):
        raise ValueError(f"tgt_vocab has bos/eos ids {tgt_vocab.bos_id}/{tgt_vocab.eos_id} but the config has "
                         f"{config.bos_id}/{config.eos_id}")
    return src_vocab, tgt_vocab
