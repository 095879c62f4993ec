"""Text generation for every minigen model, written once over a small step protocol.

Greedy search, multinomial sampling, beam search and beam sampling, with the keywords,
meanings and defaults of Hugging Face's ``generate``. Everything here works on NumPy arrays:
a model only implements the step protocol below and never knows which strategy is running.

The step protocol (:class:`DecodingModel`)::

    state, prefix = model.start_decoding(input_ids, attention_mask)
        input_ids: int64 (B, S); attention_mask: (B, S) array or None.
        prefix: int64 (B, P), the tokens every output starts with. A decoder-only model returns
            the prompt itself, an encoder-decoder model a column of its bos id.
        state: whatever the model needs (KV cache, encoder outputs, masks); generate never looks in.
    logits, state = model.decode_step(new_tokens, state)
        new_tokens: int64 (N, K), the tokens not fed yet: the whole prefix on the first call
            (K = P), then the token just chosen for each row (K = 1).
        logits: the next-token logits (N, V) as a NumPy array.
    state = model.reorder_state(state, index)
        index: int64 (N',); row i of the new state is row index[i] of the old one. Repeats rows
        (num_return_sequences, num_beams) and follows the beams. Only called after a decode_step.
    model.last_attention(state) -> (N, S) array or None          (optional, for output_attentions)
        the cross-attention weights of the last decode_step.

A row's logits must depend on that row alone. generate keeps the same promise: each row,
beam search included, is decoded exactly as it would be alone -- except under sampling, where
all rows draw from one random stream, so a sampled row depends on its place in the batch.

Where minigen differs from Hugging Face, on purpose:
- a prefix already as long as ``max_length`` raises ValueError (HF warns and generates anyway);
- ``output_scores`` or ``output_attentions`` alone already return a :class:`GenerateOutput`
  (HF silently drops them without ``return_dict_in_generate``);
- with ``eos_token_id`` set and ``pad_token_id`` None, the first eos id pads, without a warning;
- scores are float64 throughout and ties always go to the lower token / beam index.
"""

from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .random import generator, manual_seed, seeded_generator

__all__ = [
    "DecodingModel", "GenerateOutput", "generate", "set_generation_seed", "check_attention_mask",
    "apply_repetition_penalty", "block_repeated_ngrams", "top_k_filtering", "top_p_filtering",
]


class DecodingModel(Protocol):
    """The step protocol that every model decoded by :func:`generate` implements (see module doc)."""

    def start_decoding(self, input_ids: np.ndarray, attention_mask: np.ndarray | None) -> tuple[Any, np.ndarray]:
        """Encode the inputs; return (state, prefix) with prefix int64 (B, P)."""

    def decode_step(self, new_tokens: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        """Feed the tokens (N, K) not fed yet; return next-token logits (N, V) and the new state."""

    def reorder_state(self, state: Any, index: np.ndarray) -> Any:
        """Return a state whose row i is row index[i] of the given one."""


@dataclass
class GenerateOutput:
    """The result of :func:`generate` with ``return_dict_in_generate`` (or output_scores / output_attentions).

    sequences: int64 (B * num_return_sequences, L), prefix + generated tokens, right-padded.
    scores: one (N, V) array per step, the processed scores tokens were chosen from (N = rows decoded:
        B * num_return_sequences, or B * num_beams in beam search); None unless output_scores.
    sequences_scores: beam search only, with output_scores: the final score of each returned sequence.
    attentions: one (N, S) array (or None) per step from ``model.last_attention``; None unless output_attentions.
    """

    sequences: np.ndarray
    scores: tuple | None = None
    sequences_scores: np.ndarray | None = None
    attentions: tuple | None = None


def set_generation_seed(seed: int) -> None:
    """Reseed the stream that sampling draws from when generate gets no ``seed``: minigen's global
    generator, so this is :func:`minigen.manual_seed` (as torch.manual_seed governs HF sampling)."""
    manual_seed(seed)


# ---------------------------------------------------------------- logits processors (HF semantics)

def apply_repetition_penalty(scores, sequences, penalty, ignore_lengths=None):
    """HF's RepetitionPenaltyLogitsProcessor: for each token present in a row of ``sequences``, a positive
    score is divided by ``penalty`` and a negative one multiplied by it (once, however often it occurs).
    ``ignore_lengths`` (N,) excludes that many leading positions of each row (left padding)."""
    rows, vocab = scores.shape
    # Ids outside the vocabulary (and ignored positions) land in a spare column that is dropped.
    ids = np.minimum(sequences, vocab)
    if ignore_lengths is not None:
        ids = np.where(np.arange(ids.shape[1]) < ignore_lengths[:, None], vocab, ids)
    seen = np.zeros((rows, vocab + 1), dtype=bool)
    seen[np.arange(rows)[:, None], ids] = True
    penalized = np.where(scores < 0, scores * penalty, scores / penalty)
    return np.where(seen[:, :vocab], penalized, scores)


def block_repeated_ngrams(scores, sequences, ngram_size):
    """HF's NoRepeatNGramLogitsProcessor: set to -inf every token that would complete an n-gram
    already present in the row (prompt included)."""
    rows, length = sequences.shape
    if length < ngram_size:
        return scores
    vocab = scores.shape[1]
    windows = sliding_window_view(sequences, ngram_size, axis=1)          # (N, L - n + 1, n)
    suffix = sequences[:, length - ngram_size + 1:]                       # the last n - 1 tokens
    matches = np.all(windows[:, :, :-1] == suffix[:, None, :], axis=2)
    row, window = np.nonzero(matches)
    banned = np.zeros((rows, vocab + 1), dtype=bool)
    banned[row, np.minimum(windows[row, window, -1], vocab)] = True
    return np.where(banned[:, :vocab], -np.inf, scores)


def top_k_filtering(scores, top_k, min_tokens_to_keep=1):
    """HF's TopKLogitsWarper: set to -inf every score below the k-th largest of its row (ties kept)."""
    vocab = scores.shape[1]
    k = min(max(top_k, min_tokens_to_keep), vocab)
    kth = np.partition(scores, vocab - k, axis=1)[:, vocab - k, None]
    return np.where(scores < kth, -np.inf, scores)


def top_p_filtering(scores, top_p, min_tokens_to_keep=1):
    """HF's TopPLogitsWarper (nucleus): keep the smallest set of most likely tokens whose probability
    reaches ``top_p``, and at least ``min_tokens_to_keep``; set the rest to -inf."""
    order = np.argsort(scores, axis=1, kind="stable")                     # ascending, as HF
    cumulative = np.cumsum(_softmax(np.take_along_axis(scores, order, axis=1)), axis=1)
    remove_sorted = cumulative <= 1.0 - top_p
    remove_sorted[:, scores.shape[1] - min_tokens_to_keep:] = False
    remove = np.empty_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=1)
    return np.where(remove, -np.inf, scores)


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax(x):
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# ---------------------------------------------------------------- settings and validation

@dataclass(frozen=True)
class _Settings:
    max_length: int | None     # resolved with the prefix length when max_new_tokens is given
    max_new_tokens: int | None
    min_length: int            # resolved with the prefix length when min_new_tokens is given
    min_new_tokens: int | None
    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    num_beams: int
    num_return_sequences: int
    repetition_penalty: float
    no_repeat_ngram_size: int
    length_penalty: float
    early_stopping: bool | str
    eos: np.ndarray            # int64 (n_eos,), empty when no eos
    pad: int | None
    output_scores: bool
    output_attentions: bool


def _int_at_least(name, value, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _real(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return float(value)


def _check_input_ids(input_ids):
    ids = np.asarray(input_ids)
    if ids.ndim != 2 or ids.dtype.kind not in "iu" or ids.shape[0] < 1 or ids.shape[1] < 1:
        raise ValueError(f"input_ids must be a non-empty 2-D integer array (batch, sequence), "
                         f"got shape {ids.shape} and dtype {ids.dtype}")
    if (ids < 0).any():
        raise ValueError(f"input_ids must be non-negative token ids, got minimum {ids.min()}")
    return ids.astype(np.int64)


def check_attention_mask(attention_mask, shape):
    """None, or a bool array of `shape` from a mask of 0s and 1s (bools, ints or floats, a Tensor too).

    Other values raise ValueError: cast to bool, a 2 or a -1 would silently count as a real token.
    generate checks its mask with this; a model's start_decoding may do the same when called directly."""
    if attention_mask is None:
        return None
    mask = np.asarray(attention_mask)
    if mask.shape != shape:
        raise ValueError(f"attention_mask must have the shape of input_ids {shape}, got {mask.shape}")
    if mask.dtype.kind not in "biuf":
        raise ValueError(f"attention_mask must hold 0s and 1s, got dtype {mask.dtype}")
    if mask.dtype.kind != "b":
        bad = mask[(mask != 0) & (mask != 1)]
        if bad.size:
            raise ValueError(f"attention_mask must hold only 0 (padding) and 1 (real token), got {bad[0].item()!r}")
    return mask.astype(bool)


def _check_token_ids(name, value):
    """None, an id or a list of ids -> int64 array (empty for None)."""
    values = [] if value is None else [value] if np.ndim(value) == 0 else list(value)
    for v in values:
        _int_at_least(name, v, 0)
    return np.asarray(values, dtype=np.int64)


def _is_eos(tokens, eos):
    """Which of `tokens` are one of the ids `eos` (np.isin costs 0.1 ms a step, a batch-1 step's third)."""
    hit = np.zeros(tokens.shape, dtype=bool)
    for one in eos:
        hit |= tokens == one
    return hit


def _settings(max_length, max_new_tokens, min_length, min_new_tokens, do_sample, temperature, top_k, top_p,
              num_beams, num_return_sequences, repetition_penalty, no_repeat_ngram_size, length_penalty,
              early_stopping, eos_token_id, pad_token_id, output_scores, output_attentions):
    """Validate every keyword of generate."""
    if max_new_tokens is not None:
        max_new_tokens = _int_at_least("max_new_tokens", max_new_tokens, 1)
    if max_new_tokens is None or max_length is not None:
        max_length = _int_at_least("max_length", max_length, 1)
    min_length = _int_at_least("min_length", min_length, 0)
    if min_new_tokens is not None:
        min_new_tokens = _int_at_least("min_new_tokens", min_new_tokens, 0)
    if max_new_tokens is not None and min_new_tokens is not None and min_new_tokens > max_new_tokens:
        raise ValueError(f"min_new_tokens ({min_new_tokens}) must be <= max_new_tokens ({max_new_tokens})")
    temperature = _real("temperature", temperature)
    if do_sample and not (0.0 < temperature < np.inf):
        raise ValueError(f"temperature must be a finite number > 0 when do_sample=True, got {temperature}")
    top_k = _int_at_least("top_k", top_k, 0)
    top_p = _real("top_p", top_p)
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    num_beams = _int_at_least("num_beams", num_beams, 1)
    num_return_sequences = _int_at_least("num_return_sequences", num_return_sequences, 1)
    if (num_beams > 1 or not do_sample) and num_return_sequences > num_beams:
        raise ValueError(f"num_return_sequences ({num_return_sequences}) must be <= num_beams ({num_beams}) "
                         f"unless sampling with num_beams=1")
    repetition_penalty = _real("repetition_penalty", repetition_penalty)
    if not 0.0 < repetition_penalty < np.inf:
        raise ValueError(f"repetition_penalty must be a finite number > 0, got {repetition_penalty}")
    no_repeat_ngram_size = _int_at_least("no_repeat_ngram_size", no_repeat_ngram_size, 0)
    length_penalty = _real("length_penalty", length_penalty)
    if not np.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be finite, got {length_penalty}")
    if isinstance(early_stopping, (bool, np.bool_)):
        early_stopping = bool(early_stopping)
    elif early_stopping != "never":
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    eos = _check_token_ids("eos_token_id", eos_token_id)
    if pad_token_id is not None:
        pad_token_id = _int_at_least("pad_token_id", pad_token_id, 0)
    elif eos.size:
        pad_token_id = int(eos[0])                # HF's fallback
    return _Settings(max_length, max_new_tokens, min_length, min_new_tokens, bool(do_sample), temperature, top_k,
                     top_p, num_beams, num_return_sequences, repetition_penalty, no_repeat_ngram_size,
                     length_penalty, early_stopping, eos, pad_token_id, bool(output_scores),
                     bool(output_attentions))


# ---------------------------------------------------------------- generate

def generate(model: DecodingModel, input_ids, attention_mask=None, max_length=20, max_new_tokens=None,
             min_length=0, min_new_tokens=None, do_sample=False, temperature=1.0, top_k=50, top_p=1.0, num_beams=1, num_return_sequences=1,
             repetition_penalty=1.0, no_repeat_ngram_size=0, length_penalty=1.0, early_stopping=False,
             eos_token_id=None, pad_token_id=None, seed=None, output_scores=False, output_attentions=False,
             return_dict_in_generate=False):
    """Generate continuations of ``input_ids`` with ``model``, as Hugging Face's ``generate`` does.

    The strategy follows from the keywords: greedy (the default), multinomial sampling
    (``do_sample=True``), beam search (``num_beams > 1``) or beam sampling (both).

    max_length: length of prefix + new tokens (the prefix is the prompt for a decoder-only model,
        the bos column for an encoder-decoder); ``max_new_tokens`` overrides it with P + max_new_tokens.
    min_length, min_new_tokens: eos cannot be chosen while the sequence (prefix included) is shorter than
        ``min_length`` or fewer than ``min_new_tokens`` tokens were generated (HF's MinLength and
        MinNewTokensLength processors).
    temperature, top_k, top_p: sampling warpers, applied in that order and only when ``do_sample``.
    repetition_penalty, no_repeat_ngram_size: processors over prefix + generated tokens. When the
        prefix is the prompt, positions left-padded out by ``attention_mask`` escape the penalty (as HF).
    length_penalty, early_stopping: beam search; a finished hypothesis scores
        sum_logprobs / generated_length ** length_penalty, and early_stopping is True, False or "never".
        The num_return_sequences best hypotheses come back sorted and distinct; should fewer exist
        with a finite score (a vocabulary smaller than the beams, every token banned), the missing
        ones are the prefix followed by padding, with score -inf.
    eos_token_id: an id or a list of ids that end a row; later positions get ``pad_token_id``.
    seed: an int (negative ones are taken modulo 2**64, as torch.manual_seed does) that seeds a private
        random stream; without it sampling draws from minigen's global generator (reseeded by
        :func:`minigen.manual_seed`).

    Returns int64 sequences (B * num_return_sequences, L), right-padded with ``pad_token_id``, or a
    :class:`GenerateOutput` when ``return_dict_in_generate``, ``output_scores`` or ``output_attentions``.
    """
    input_ids = _check_input_ids(input_ids)
    attention_mask = check_attention_mask(attention_mask, input_ids.shape)
    s = _settings(max_length, max_new_tokens, min_length, min_new_tokens, do_sample, temperature, top_k, top_p, num_beams,
                  num_return_sequences, repetition_penalty, no_repeat_ngram_size, length_penalty,
                  early_stopping, eos_token_id, pad_token_id, output_scores, output_attentions)
    if output_attentions and not hasattr(model, "last_attention"):
        raise ValueError(f"output_attentions=True needs {type(model).__name__}.last_attention(state)")
    rng = generator() if seed is None else seeded_generator(seed, "generate")

    state, prefix = model.start_decoding(input_ids, attention_mask)
    prefix = np.asarray(prefix)
    if prefix.ndim != 2 or prefix.dtype.kind not in "iu" or prefix.shape[0] != input_ids.shape[0]:
        raise ValueError(f"{type(model).__name__}.start_decoding must return an integer prefix of shape "
                         f"({input_ids.shape[0]}, P), got shape {prefix.shape} and dtype {prefix.dtype}")
    prefix = prefix.astype(np.int64)
    if s.max_new_tokens is not None:
        s = replace(s, max_length=prefix.shape[1] + s.max_new_tokens)
    if prefix.shape[1] >= s.max_length:
        raise ValueError(f"max_length ({s.max_length}) leaves no room after the prefix of length "
                         f"{prefix.shape[1]}; raise max_length or use max_new_tokens")
    if s.min_new_tokens is not None:
        s = replace(s, min_length=max(s.min_length, prefix.shape[1] + s.min_new_tokens))
    if s.min_length > s.max_length:
        raise ValueError(f"min_length ({s.min_length}, prefix included) must be <= max_length ({s.max_length})")

    ignore_lengths = None
    if attention_mask is not None and prefix.shape == input_ids.shape and np.array_equal(prefix, input_ids):
        ignore_lengths = np.argmax(attention_mask, axis=1)     # leading padded positions

    logits, state = _decode(model, prefix, state, len(prefix))
    decode = _greedy_or_sample if s.num_beams == 1 else _beam_search
    out = decode(model, state, logits, prefix, s, rng, ignore_lengths)
    return out if (return_dict_in_generate or output_scores or output_attentions) else out.sequences


def _decode(model, tokens, state, rows, vocab=None):
    """One decode_step, with the shape of its logits checked and cast to float64."""
    logits, state = model.decode_step(tokens, state)
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] != rows or (vocab is not None and logits.shape[1] != vocab):
        raise ValueError(f"{type(model).__name__}.decode_step must return logits of shape "
                         f"({rows}, {vocab or 'vocab_size'}), got {logits.shape}")
    return logits.astype(np.float64), state


def _attention(model, state, s):
    if not s.output_attentions:
        return None
    attention = model.last_attention(state)
    return None if attention is None else np.array(attention)


def _process(scores, sequences, s, ignore_lengths, min_tokens_to_keep):
    """HF's processors: minimum length (a banned eos stays -inf under the others, so its place in the order
    does not matter), repetition penalty, n-gram blocking, then the sampling warpers."""
    if sequences.shape[1] < s.min_length and s.eos.size:
        scores = scores.copy()
        scores[:, s.eos] = -np.inf
    if s.repetition_penalty != 1.0:
        scores = apply_repetition_penalty(scores, sequences, s.repetition_penalty, ignore_lengths)
    if s.no_repeat_ngram_size > 0:
        scores = block_repeated_ngrams(scores, sequences, s.no_repeat_ngram_size)
    if s.do_sample:
        if s.temperature != 1.0:
            scores = scores / s.temperature
        if s.top_k != 0:
            scores = top_k_filtering(scores, s.top_k, min_tokens_to_keep)
        if s.top_p < 1.0:
            scores = top_p_filtering(scores, s.top_p, min_tokens_to_keep)
    return scores


def _sample(scores, rng, unfinished):
    """One token per row drawn from softmax(scores) by inverting the cumulative distribution."""
    empty = ~(scores > -np.inf).any(axis=1)
    if (empty & unfinished).any():
        raise ValueError("cannot sample: every token of a row was filtered out "
                         "(check no_repeat_ngram_size, top_k and top_p)")
    # A finished row's token is replaced by padding anyway; give it something to draw from.
    probs = _softmax(np.where(empty[:, None], 0.0, scores))
    cumulative = np.cumsum(probs, axis=1)
    draw = rng.random(len(scores))[:, None] * cumulative[:, -1:]
    tokens = (cumulative <= draw).sum(axis=1)
    # Rounding may push the draw past the last token with non-zero probability.
    last_possible = probs.shape[1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=1)
    return np.minimum(tokens, last_possible)


def _greedy_or_sample(model, state, logits, prefix, s, rng, ignore_lengths):
    """Greedy search or multinomial sampling, num_return_sequences rows per input row."""
    rows = np.repeat(np.arange(len(prefix)), s.num_return_sequences)
    attention = _attention(model, state, s)
    if s.num_return_sequences > 1:
        state = model.reorder_state(state, rows)
        attention = None if attention is None else attention[rows]
    logits = logits[rows]
    ignore_lengths = None if ignore_lengths is None else ignore_lengths[rows]
    n, length, vocab = len(rows), prefix.shape[1], logits.shape[1]
    sequences = np.empty((n, s.max_length), dtype=np.int64)
    sequences[:, :length] = prefix[rows]
    unfinished = np.ones(n, dtype=bool)
    all_scores, all_attentions = [], []
    while True:
        scores = _process(logits, sequences[:, :length], s, ignore_lengths, 1)
        if s.output_scores:  # kept only when asked for: a (rows, vocab) float64 array a step adds up
            all_scores.append(scores)
        if s.output_attentions:
            all_attentions.append(attention)
        tokens = _sample(scores, rng, unfinished) if s.do_sample else np.argmax(scores, axis=1)
        if s.eos.size:
            tokens = np.where(unfinished, tokens, s.pad)
            unfinished &= ~_is_eos(tokens, s.eos)
        sequences[:, length] = tokens
        length += 1
        if length == s.max_length or not unfinished.any():
            break
        logits, state = _decode(model, tokens[:, None], state, n, vocab)
        attention = _attention(model, state, s)
    return GenerateOutput(sequences[:, :length], tuple(all_scores) if s.output_scores else None, None,
                          tuple(all_attentions) if s.output_attentions else None)


def _top_k_desc(values, k):
    """Column indices of the k largest entries of each row, best first. Ties go to the lower index,
    so a row's choice never depends on the other rows or on the sort's internals."""
    if k < values.shape[1]:
        index = np.sort(np.argpartition(-values, k - 1, axis=1)[:, :k], axis=1)
        picked = np.take_along_axis(values, index, axis=1)
        kth = picked.min(axis=1, keepdims=True)
        # argpartition splits ties at the k-th value arbitrarily: redo those (rare) rows in full.
        split_ties = (picked == kth).sum(axis=1) < (values == kth).sum(axis=1)
        for r in np.flatnonzero(split_ties):
            index[r] = np.sort(np.argsort(-values[r], kind="stable")[:k])
    else:
        index = np.broadcast_to(np.arange(values.shape[1]), values.shape)
    order = np.argsort(-np.take_along_axis(values, index, axis=1), axis=1, kind="stable")
    return np.take_along_axis(index, order, axis=1)


def _beam_search(model, state, logits, prefix, s, rng, ignore_lengths):
    """HF's beam search (and beam sampling), every batch row on its own.

    Each step ranks the beams * V continuations of a row and keeps the best K = max(2, 1 + n_eos) * beams
    (or samples K without replacement under beam sampling). The best `beams` of them that did not just
    end continue; those among the top `beams` that end (eos or max_length) join the row's finished
    hypotheses, which keep the best `beams` by sum_logprobs / generated_length ** length_penalty.
    A row stops taking hypotheses once HF's early-stopping test says none can improve on them.
    As in HF, the processors act on log-probabilities here (log_softmax first), not on raw logits.
    """
    batch, prompt_len = prefix.shape
    beams, vocab = s.num_beams, logits.shape[1]
    k = min(max(2, 1 + s.eos.size) * beams, beams * vocab)
    min_tokens_to_keep = s.eos.size + 1 if s.eos.size else 2
    flat = np.repeat(np.arange(batch), beams)
    attention = _attention(model, state, s)
    attention = None if attention is None else attention[flat]
    state = model.reorder_state(state, flat)
    logits = logits[flat]
    ignore_lengths = None if ignore_lengths is None else ignore_lengths[flat]

    fill = s.pad if s.pad is not None else 0
    running = np.full((batch, beams, s.max_length), fill, dtype=np.int64)
    running[:, :, :prompt_len] = prefix[:, None, :]
    # Only the first beam is live at the start, so the first step does not pick the same token `beams` times.
    running_scores = np.full((batch, beams), -np.inf)
    running_scores[:, 0] = 0.0
    finished = running.copy()
    finished_scores = np.full((batch, beams), -np.inf)
    finished_valid = np.zeros((batch, beams), dtype=bool)
    finished_length = np.full((batch, beams), prompt_len)
    can_improve = np.ones(batch, dtype=bool)
    row = np.arange(batch)[:, None]
    all_scores, all_attentions = [], []
    cur = prompt_len
    while True:
        log_probs = _log_softmax(logits)
        log_probs = _process(log_probs, running[:, :, :cur].reshape(batch * beams, cur), s,
                             ignore_lengths, min_tokens_to_keep)
        if s.output_scores:
            all_scores.append(log_probs)
        if s.output_attentions:
            all_attentions.append(attention)
        totals = (log_probs.reshape(batch, beams, vocab) + running_scores[:, :, None]).reshape(batch, -1)

        if s.do_sample:   # K draws without replacement from softmax(totals): Gumbel top-k (-log Exp(1) is Gumbel)
            picked = _top_k_desc(totals - np.log(rng.standard_exponential(totals.shape)), k)
            picked = np.take_along_axis(picked, np.argsort(-totals[row, picked], axis=1, kind="stable"), axis=1)
        else:
            picked = _top_k_desc(totals, k)
        top_scores = totals[row, picked]
        source, tokens = picked // vocab, picked % vocab
        candidates = running[row, source]                                    # (batch, k, max_length)
        candidates[:, :, cur] = tokens
        ended = _is_eos(tokens, s.eos) | (cur + 1 >= s.max_length)

        # The best candidates that did not end go on; ended ones fill in (dead) only if too few remain.
        keep = np.argsort(ended, axis=1, kind="stable")[:, :beams]
        running = candidates[row, keep]
        running_scores = np.where(ended[row, keep], -np.inf, top_scores[row, keep])
        parents = (source[row, keep] + row * beams).ravel()

        # Ended candidates among the top `beams` become finished hypotheses, if the row still takes them.
        hypothesis_scores = top_scores / float(cur + 1 - prompt_len) ** s.length_penalty
        row_full = finished_valid.all(axis=1) & (s.early_stopping is True)
        eligible = (ended & (np.arange(k) < beams) & np.isfinite(hypothesis_scores)
                    & (can_improve & ~row_full)[:, None])
        merged_valid = np.concatenate([finished_valid, eligible], axis=1)
        merged_scores = np.concatenate([finished_scores, np.where(eligible, hypothesis_scores, -np.inf)], axis=1)
        best = np.lexsort((-merged_scores, ~merged_valid), axis=1)[:, :beams]   # stable: older first on ties
        finished = np.concatenate([finished, candidates], axis=1)[row, best]
        finished_scores = merged_scores[row, best]
        finished_valid = merged_valid[row, best]
        finished_length = np.concatenate([finished_length, np.full((batch, k), cur + 1)], axis=1)[row, best]

        cur += 1
        if s.early_stopping == "never" and s.length_penalty > 0.0:
            best_length = s.max_length - prompt_len
        else:
            best_length = cur - prompt_len
        best_possible = running_scores[:, 0] / float(best_length) ** s.length_penalty
        worst_kept = np.where(finished_valid.all(axis=1), finished_scores.min(axis=1), -np.inf)
        can_improve &= best_possible > worst_kept
        if (not can_improve.any() or (s.early_stopping is True and finished_valid.all())
                or ended.all()):
            break
        state = model.reorder_state(state, parents)
        logits, state = _decode(model, running[:, :, cur - 1].reshape(-1, 1), state, batch * beams, vocab)
        attention = _attention(model, state, s)

    n = s.num_return_sequences
    length = finished_length[:, :n].max()
    return GenerateOutput(finished[:, :n, :length].reshape(batch * n, length),
                          tuple(all_scores) if s.output_scores else None,
                          finished_scores[:, :n].ravel() if s.output_scores else None,
                          tuple(all_attentions) if s.output_attentions else None)
