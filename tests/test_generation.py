"""Tests for minigen.generation: every strategy against independent references on toy models.

The toy models implement the step protocol with logits that are a fixed function of a row's
source and the tokens fed so far, so a plain per-row loop can recompute them for the references.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigen
from minigen.generation import (GenerateOutput, _top_k_desc, apply_repetition_penalty, block_repeated_ngrams,
                                generate, set_generation_seed, top_k_filtering, top_p_filtering)


class ToyModel:
    """Random trigram logits + a bias from the row's source tokens + a position term.

    decoder_only: the prefix is the prompt (a GPT); otherwise it is a bos column and the prompt only
    acts as the source an encoder would read (a Seq2Seq). The state keeps every row's source and the
    tokens fed so far, so a wrong reorder_state changes the logits.
    """

    def __init__(self, vocab=7, seed=0, decoder_only=True, bos=0, scale=2.0):
        rng = np.random.default_rng(seed)
        self.vocab, self.decoder_only, self.bos = vocab, decoder_only, bos
        self.table = rng.normal(size=(vocab, vocab, vocab)) * scale
        self.source_weight = rng.normal(size=(vocab, vocab))
        self.position = rng.normal(size=(64, vocab)) * 0.5
        self.calls = []

    def logits_for(self, source, tokens):
        """Reference logits of one row: source ids and the tokens so far (prefix included)."""
        previous = tokens[-2] if len(tokens) > 1 else 0
        return (self.table[previous, tokens[-1]] + self.source_weight[np.asarray(source)].mean(axis=0)
                + self.position[len(tokens)])

    def attention_for(self, source, tokens):
        scores = self.source_weight[np.asarray(source), tokens[-1]]
        return np.exp(scores) / np.exp(scores).sum()

    def start_decoding(self, input_ids, attention_mask):
        self.calls.append(("start", input_ids.shape))
        prefix = input_ids.copy() if self.decoder_only else np.full((len(input_ids), 1), self.bos)
        return {"source": input_ids.copy(), "fed": np.zeros((len(input_ids), 0), np.int64)}, prefix

    def decode_step(self, new_tokens, state):
        assert new_tokens.dtype == np.int64 and new_tokens.ndim == 2
        # The protocol: the whole prefix first, then one column per step.
        assert new_tokens.shape[1] == 1 or state["fed"].shape[1] == 0
        self.calls.append(("step", new_tokens.shape))
        fed = np.concatenate([state["fed"], new_tokens], axis=1)
        logits = np.stack([self.logits_for(s, t) for s, t in zip(state["source"], fed)])
        return logits.astype(np.float32), {"source": state["source"], "fed": fed}

    def reorder_state(self, state, index):
        assert state["fed"].shape[1] > 0, "reorder_state before the first decode_step"
        return {name: value[index] for name, value in state.items()}

    def last_attention(self, state):
        return np.stack([self.attention_for(s, t) for s, t in zip(state["source"], state["fed"])])


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    return x - x.max() - np.log(np.exp(x - x.max()).sum())


def start(model, source):
    return list(source) if model.decoder_only else [model.bos]


def reference_greedy(model, source, max_new, eos=(), repetition_penalty=1.0, ngram=0):
    """Argmax loop over one row, processors written out by hand."""
    tokens = start(model, source)
    for _ in range(max_new):
        logits = model.logits_for(source, tokens).astype(np.float32).astype(np.float64)
        for t in set(tokens) if repetition_penalty != 1.0 else ():
            logits[t] = logits[t] / repetition_penalty if logits[t] > 0 else logits[t] * repetition_penalty
        if ngram and len(tokens) >= ngram:
            for i in range(len(tokens) - ngram + 1):
                if tokens[i:i + ngram - 1] == tokens[len(tokens) - ngram + 1:]:
                    logits[tokens[i + ngram - 1]] = -np.inf
        tokens.append(int(np.argmax(logits)))
        if tokens[-1] in eos:
            break
    return tokens


def reference_beam(model, source, beams, max_new, eos=(), length_penalty=1.0, early_stopping=False):
    """One row of HF's beam search with lists: returns [(score, tokens)] best first."""
    prefix = start(model, source)
    p, max_length = len(prefix), len(prefix) + max_new
    k = max(2, 1 + len(eos)) * beams
    running, finished, done, cur = [(0.0, prefix)], [], False, p
    while True:
        candidates = []
        for score, tokens in running:
            lp = log_softmax(model.logits_for(source, tokens).astype(np.float32))
            candidates += [(score + lp[t], tokens + [t]) for t in range(model.vocab)]
        candidates = sorted(candidates, key=lambda c: -c[0])[:k]          # stable: lower beam, token first
        ended = [c[1][-1] in eos or cur + 1 >= max_length for c in candidates]
        if not done and not (early_stopping is True and len(finished) == beams):
            finished += [(c[0] / (cur + 1 - p) ** length_penalty, c[1])
                         for c, e in zip(candidates[:beams], ended) if e]
            finished = sorted(finished, key=lambda f: -f[0])[:beams]
        running = [c for c, e in zip(candidates, ended) if not e][:beams]
        cur += 1
        if running and len(finished) == beams:
            length = max_length - p if early_stopping == "never" and length_penalty > 0 else cur - p
            done = done or running[0][0] / length ** length_penalty <= finished[-1][0]
        if done or (early_stopping is True and len(finished) == beams) or all(ended):
            return finished


def strip(row, pad):
    row = list(row)
    while len(row) > 1 and row[-1] == pad:
        row.pop()
    return row


SOURCES = np.array([[1, 2, 3], [4, 5, 6], [6, 6, 2], [3, 0, 5]])


# ---------------------------------------------------------------- greedy

@pytest.mark.parametrize("decoder_only", [True, False])
def test_greedy_equals_argmax_loop(decoder_only):
    model = ToyModel(decoder_only=decoder_only)
    out = generate(model, SOURCES, max_new_tokens=8)
    p = SOURCES.shape[1] if decoder_only else 1
    assert out.dtype == np.int64 and out.shape == (4, p + 8)
    for source, row in zip(SOURCES, out):
        assert list(row) == reference_greedy(model, source, 8)


def test_protocol_calls_prefix_once_then_single_columns():
    model = ToyModel()
    generate(model, SOURCES[:2], max_new_tokens=4)
    assert model.calls == [("start", (2, 3)), ("step", (2, 3))] + [("step", (2, 1))] * 3


def test_greedy_with_eos_pads_finished_rows_and_stops_early():
    model = ToyModel(vocab=5, seed=3)
    eos = 2
    out = generate(model, SOURCES % 5, max_new_tokens=12, eos_token_id=eos, pad_token_id=4)
    refs = [reference_greedy(model, s, 12, eos=(eos,)) for s in SOURCES % 5]
    assert out.shape[1] == max(len(r) for r in refs)
    for ref, row in zip(refs, out):
        assert list(row[:len(ref)]) == ref and (row[len(ref):] == 4).all()
    assert any(r[-1] == eos for r in refs) and any(len(r) < out.shape[1] for r in refs)


def test_eos_list_and_pad_defaults_to_first_eos():
    model = ToyModel(vocab=5, seed=3)
    eos = [3, 2]
    out = generate(model, SOURCES % 5, max_new_tokens=12, eos_token_id=eos)
    for source, row in zip(SOURCES % 5, out):
        ref = reference_greedy(model, source, 12, eos=eos)
        assert list(row[:len(ref)]) == ref and (row[len(ref):] == 3).all()


def test_all_rows_finish_stops_before_max_length():
    model = ToyModel(vocab=5, seed=3)
    ref = reference_greedy(model, SOURCES[0] % 5, 30)
    eos = ref[4]                                  # the second generated token ends the row
    out = generate(model, SOURCES[:1] % 5, max_new_tokens=30, eos_token_id=eos)
    assert len(out[0]) <= 5 and out[0, -1] == eos


def test_max_new_tokens_and_max_length():
    model = ToyModel()
    assert generate(model, SOURCES, max_new_tokens=3).shape == (4, 6)
    assert generate(model, SOURCES, max_length=5).shape == (4, 5)
    assert generate(model, SOURCES).shape == (4, 20)                           # HF's default
    assert generate(model, SOURCES, max_length=4, max_new_tokens=6).shape == (4, 9)   # overrides
    seq2seq = ToyModel(decoder_only=False)
    assert generate(seq2seq, SOURCES, max_length=5).shape == (4, 5)            # counts the bos column
    out = generate(seq2seq, SOURCES, max_new_tokens=5)
    assert out.shape == (4, 6) and (out[:, 0] == 0).all()


@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=3, num_return_sequences=2),
                                    dict(num_beams=2, eos_token_id=1, length_penalty=0.5)])
@pytest.mark.parametrize("decoder_only", [True, False])
def test_rows_decode_as_they_would_alone(kwargs, decoder_only):
    model = ToyModel(vocab=6, seed=1, decoder_only=decoder_only)
    sources = SOURCES % 6
    kwargs = dict(kwargs, max_new_tokens=7, output_scores=True)
    batch = generate(model, sources, **kwargs)
    n = kwargs.get("num_return_sequences", 1)
    pad = kwargs.get("eos_token_id", 0)
    for i, source in enumerate(sources):
        alone = generate(model, source[None], **kwargs)
        for j in range(n):
            assert strip(alone.sequences[j], pad) == strip(batch.sequences[i * n + j], pad)
        if batch.sequences_scores is not None:
            np.testing.assert_array_equal(alone.sequences_scores, batch.sequences_scores[i * n:(i + 1) * n])


# ---------------------------------------------------------------- processors

def test_repetition_penalty_hand_example():
    scores = np.array([[2.0, -1.0, 0.5, 3.0], [2.0, -1.0, 0.5, 3.0]])
    sequences = np.array([[0, 1, 1], [0, 1, 1]])
    out = apply_repetition_penalty(scores, sequences, 2.0)
    np.testing.assert_array_equal(out, [[1.0, -2.0, 0.5, 3.0]] * 2)
    out = apply_repetition_penalty(scores, sequences, 2.0, ignore_lengths=np.array([1, 0]))
    np.testing.assert_array_equal(out, [[2.0, -2.0, 0.5, 3.0], [1.0, -2.0, 0.5, 3.0]])


def test_no_repeat_ngram_hand_example():
    scores = np.zeros((1, 5))
    sequences = np.array([[1, 2, 3, 1, 2]])
    assert np.isinf(block_repeated_ngrams(scores, sequences, 3)).nonzero()[1].tolist() == [3]
    assert np.isinf(block_repeated_ngrams(scores, sequences, 2)).nonzero()[1].tolist() == [3]
    assert np.isinf(block_repeated_ngrams(scores, sequences, 1)).nonzero()[1].tolist() == [1, 2, 3]
    assert not np.isinf(block_repeated_ngrams(scores, sequences, 6)).any()     # no complete 6-gram yet


def test_top_k_and_top_p_hand_examples():
    scores = np.log(np.array([[0.1, 0.4, 0.2, 0.3]]))
    assert np.isfinite(top_k_filtering(scores, 2)).nonzero()[1].tolist() == [1, 3]
    assert np.isfinite(top_k_filtering(np.array([[1.0, 2.0, 2.0, 0.0]]), 1)).sum() == 2   # ties kept, as HF
    assert np.isfinite(top_p_filtering(scores, 0.65)).nonzero()[1].tolist() == [1, 3]
    assert np.isfinite(top_p_filtering(scores, 0.75)).nonzero()[1].tolist() == [1, 2, 3]
    assert np.isfinite(top_p_filtering(scores, 1e-9)).nonzero()[1].tolist() == [1]       # keeps one
    assert np.isfinite(top_p_filtering(scores, 1e-9, min_tokens_to_keep=2)).sum() == 2


@pytest.mark.parametrize("decoder_only", [True, False])
def test_repetition_penalty_and_ngram_blocking_in_greedy(decoder_only):
    model = ToyModel(vocab=6, seed=2, decoder_only=decoder_only)
    sources = SOURCES % 6
    out = generate(model, sources, max_new_tokens=10, repetition_penalty=1.7, no_repeat_ngram_size=2)
    for source, row in zip(sources, out):
        assert list(row) == reference_greedy(model, source, 10, repetition_penalty=1.7, ngram=2)
        bigrams = list(zip(row[:-1], row[1:]))
        assert len(bigrams) == len(set(bigrams))


def test_repetition_penalty_ignores_left_padding():
    model = ToyModel(vocab=6, seed=2)
    prompts = np.array([[5, 5, 1, 2], [3, 4, 1, 2]])
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    scores = generate(model, prompts, attention_mask=mask, max_new_tokens=1, repetition_penalty=3.0,
                      output_scores=True).scores[0]
    raw = model.logits_for(prompts[0], list(prompts[0])).astype(np.float32)
    penalized = apply_repetition_penalty(raw[None], np.array([[1, 2]]), 3.0)[0]
    np.testing.assert_allclose(scores[0], penalized, rtol=1e-6)                # token 5 not penalized


@given(values=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40),
                         elements=st.sampled_from([-np.inf, -2.0, -1.0, 0.0, 0.5, 3.0])), data=st.data())
def test_beam_candidates_break_ties_by_lower_index(values, data):
    k = data.draw(st.integers(1, values.shape[1]))
    np.testing.assert_array_equal(_top_k_desc(values, k), np.argsort(-values, axis=1, kind="stable")[:, :k])


# ---------------------------------------------------------------- sampling

def test_sampling_is_reproducible_with_a_seed_and_set_generation_seed():
    model = ToyModel()
    kwargs = dict(max_new_tokens=10, do_sample=True, num_return_sequences=3)
    a = generate(model, SOURCES, seed=7, **kwargs)
    assert a.shape == (12, 13)
    np.testing.assert_array_equal(a, generate(model, SOURCES, seed=7, **kwargs))
    assert not np.array_equal(a, generate(model, SOURCES, seed=8, **kwargs))
    set_generation_seed(3)
    b = generate(model, SOURCES, **kwargs)
    minigen.manual_seed(3)
    np.testing.assert_array_equal(b, generate(model, SOURCES, **kwargs))


@pytest.mark.parametrize("kwargs", [dict(top_k=1), dict(top_p=1e-9), dict(temperature=1e-4, top_k=0)])
def test_degenerate_sampling_equals_greedy(kwargs):
    model = ToyModel()
    greedy = generate(model, SOURCES, max_new_tokens=8)
    sampled = generate(model, SOURCES, max_new_tokens=8, do_sample=True, seed=0, **kwargs)
    np.testing.assert_array_equal(greedy, sampled)


@pytest.mark.parametrize("kwargs", [dict(top_k=0), dict(temperature=0.5, top_k=3), dict(top_p=0.8, top_k=0)])
def test_sampling_frequencies_follow_the_warped_distribution(kwargs):
    model = ToyModel(scale=0.7)
    draws = 6000
    out = generate(model, SOURCES[:1], max_new_tokens=1, do_sample=True, seed=1,
                   num_return_sequences=draws, output_scores=True, **kwargs)
    expected = np.exp(log_softmax(out.scores[0][0]))
    assert (expected < 0.999).all()
    frequencies = np.bincount(out.sequences[:, -1], minlength=model.vocab) / draws
    np.testing.assert_allclose(frequencies, expected, atol=0.025)
    assert (frequencies[expected == 0] == 0).all()
    logits = model.logits_for(SOURCES[0], list(SOURCES[0])).astype(np.float32).astype(np.float64)
    warped = logits[None] / kwargs.get("temperature", 1.0)
    if kwargs.get("top_k"):
        warped = top_k_filtering(warped, kwargs["top_k"])
    if "top_p" in kwargs:
        warped = top_p_filtering(warped, kwargs["top_p"])
    np.testing.assert_allclose(out.scores[0][0], warped[0], rtol=1e-12)


def test_sampling_with_every_token_banned_raises():
    with pytest.raises(ValueError, match="filtered out"):
        generate(ToyModel(vocab=3), np.array([[0, 1]]), max_new_tokens=3, do_sample=True, no_repeat_ngram_size=1)


def test_sampling_with_eos_pads_after_the_end():
    model = ToyModel(vocab=4, seed=5, scale=0.5)
    out = generate(model, SOURCES % 4, max_new_tokens=15, do_sample=True, seed=2, eos_token_id=1,
                   pad_token_id=3, num_return_sequences=5)
    ended = 0
    for row in out[:, 3:]:
        hits = np.flatnonzero(row == 1)
        if hits.size:
            ended += 1
            assert (row[hits[0] + 1:] == 3).all()
    assert ended > 0


# ---------------------------------------------------------------- beam search

@pytest.mark.parametrize("decoder_only", [True, False])
def test_one_beam_equals_greedy(decoder_only):
    model = ToyModel(decoder_only=decoder_only)
    greedy = generate(model, SOURCES, max_new_tokens=8, eos_token_id=3)
    beam = generate(model, SOURCES, max_new_tokens=8, eos_token_id=3, num_beams=1)
    np.testing.assert_array_equal(greedy, beam)


@pytest.mark.parametrize("eos", [None, 0])
@pytest.mark.parametrize("decoder_only", [True, False])
def test_beam_search_is_exact_with_enough_beams(eos, decoder_only):
    """With num_beams >= V ** (new_tokens - 1) nothing is pruned: the n-best of an exhaustive search."""
    vocab, new = 3, 3
    model = ToyModel(vocab=vocab, seed=4, decoder_only=decoder_only)
    source = SOURCES[1] % vocab
    out = generate(model, source[None], max_new_tokens=new, num_beams=9, num_return_sequences=9,
                   length_penalty=0.0, eos_token_id=eos, output_scores=True)
    prefix = start(model, source)
    complete = []
    for length in range(1, new + 1):
        for tail in itertools.product(range(vocab), repeat=length):
            ends_early = eos is not None and eos in tail[:-1]
            too_short = length < new and (eos is None or tail[-1] != eos)
            if ends_early or too_short:
                continue
            tokens = prefix + list(tail)
            score = sum(log_softmax(model.logits_for(source, tokens[:i]).astype(np.float32))[tokens[i]]
                        for i in range(len(prefix), len(tokens)))
            complete.append((score, tokens))
    best = sorted(complete, key=lambda c: -c[0])[:9]
    for row, (_, tokens) in zip(out.sequences, best):
        assert list(row[:len(tokens)]) == tokens and (row[len(tokens):] == eos).all()
    np.testing.assert_allclose(out.sequences_scores, [b[0] for b in best], rtol=1e-9)


@pytest.mark.parametrize("early_stopping", [False, True, "never"])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, -0.5, 2.0])
@pytest.mark.parametrize("decoder_only", [True, False])
def test_beam_search_matches_per_row_reference(early_stopping, length_penalty, decoder_only):
    model = ToyModel(vocab=6, seed=6, decoder_only=decoder_only)
    sources = SOURCES % 6
    beams, new, eos = 3, 7, (1,)
    out = generate(model, sources, max_new_tokens=new, num_beams=beams, num_return_sequences=beams,
                   eos_token_id=list(eos), pad_token_id=5, length_penalty=length_penalty,
                   early_stopping=early_stopping, return_dict_in_generate=True, output_scores=True)
    assert isinstance(out, GenerateOutput)
    for i, source in enumerate(sources):
        ref = reference_beam(model, source, beams, new, eos, length_penalty, early_stopping)
        rows = out.sequences[i * beams:(i + 1) * beams]
        for (score, tokens), row, got in zip(ref, rows, out.sequences_scores[i * beams:]):
            assert list(row[:len(tokens)]) == tokens and (row[len(tokens):] == 5).all()
            assert got == pytest.approx(score, rel=1e-9)


@given(seed=st.integers(0, 10_000), beams=st.integers(2, 4), vocab=st.integers(3, 8),
       eos=st.sampled_from([(), (0,), (0, 2)]), decoder_only=st.booleans(),
       length_penalty=st.sampled_from([-1.0, 0.0, 1.0, 3.0]), early_stopping=st.sampled_from([False, True, "never"]))
def test_beam_search_matches_reference_on_random_models(seed, beams, vocab, eos, decoder_only, length_penalty,
                                                        early_stopping):
    model = ToyModel(vocab=vocab, seed=seed, decoder_only=decoder_only, scale=1.0)
    sources = np.random.default_rng(seed).integers(0, vocab, size=(2, 3))
    n = min(beams, 2)
    out = generate(model, sources, max_new_tokens=6, num_beams=beams, num_return_sequences=n,
                   eos_token_id=list(eos) or None, length_penalty=length_penalty, early_stopping=early_stopping,
                   output_scores=True)
    for i, source in enumerate(sources):
        ref = reference_beam(model, source, beams, 6, eos, length_penalty, early_stopping)[:n]
        scores = out.sequences_scores[i * n:(i + 1) * n]
        assert list(scores) == sorted(scores, reverse=True)
        rows = [tuple(r) for r in out.sequences[i * n:(i + 1) * n]]
        assert len(set(rows)) == n
        for (score, tokens), row, got in zip(ref, rows, scores):
            assert list(row[:len(tokens)]) == tokens and got == pytest.approx(score, rel=1e-9)


def test_more_beams_than_hypotheses_fills_with_padding():
    model = ToyModel(vocab=2, seed=1)
    out = generate(model, np.array([[1, 0]]), max_new_tokens=1, num_beams=4, num_return_sequences=4,
                   pad_token_id=7, output_scores=True)
    assert sorted(out.sequences[:2, -1].tolist()) == [0, 1] and np.isfinite(out.sequences_scores[:2]).all()
    np.testing.assert_array_equal(out.sequences[2:], [[1, 0, 7], [1, 0, 7]])
    assert np.isneginf(out.sequences_scores[2:]).all()


def test_beam_search_follows_states_with_reorder_state():
    """Sequence-dependent logits: a beam fed through a wrongly reordered state would score differently."""
    model = ToyModel(vocab=8, seed=9, decoder_only=False)
    out = generate(model, SOURCES, max_new_tokens=6, num_beams=4, num_return_sequences=4, output_scores=True)
    for i, source in enumerate(SOURCES):
        for row, score in zip(out.sequences[i * 4:(i + 1) * 4], out.sequences_scores[i * 4:(i + 1) * 4]):
            tokens = list(row)
            total = sum(log_softmax(model.logits_for(source, tokens[:t]).astype(np.float32))[tokens[t]]
                        for t in range(1, len(tokens)))
            assert score == pytest.approx(total / (len(tokens) - 1), rel=1e-9)


def test_beam_sampling_is_reproducible_and_scored_like_its_tokens():
    model = ToyModel(vocab=6, seed=2, decoder_only=False, scale=0.5)
    kwargs = dict(max_new_tokens=6, num_beams=3, num_return_sequences=2, do_sample=True, eos_token_id=1,
                  length_penalty=0.0, output_scores=True, seed=11)
    a, b = generate(model, SOURCES % 6, **kwargs), generate(model, SOURCES % 6, **kwargs)
    np.testing.assert_array_equal(a.sequences, b.sequences)
    assert not np.array_equal(a.sequences, generate(model, SOURCES % 6, **dict(kwargs, seed=12)).sequences)
    for i, source in enumerate(SOURCES % 6):
        pair = a.sequences_scores[2 * i:2 * i + 2]
        assert pair[0] >= pair[1]
        for row, score in zip(a.sequences[2 * i:2 * i + 2], pair):
            ends = np.flatnonzero(row[1:] == 1)
            tokens = list(row[:ends[0] + 2] if ends.size else row)
            # top_k=50 keeps the whole vocabulary, so scores are the plain log-probabilities
            total = sum(log_softmax(model.logits_for(source, tokens[:t]).astype(np.float32))[tokens[t]]
                        for t in range(1, len(tokens)))
            assert score == pytest.approx(total, rel=1e-9)


def test_beam_scores_and_attentions_per_step():
    model = ToyModel(decoder_only=False)
    out = generate(model, SOURCES, max_new_tokens=4, num_beams=2, output_scores=True, output_attentions=True)
    assert len(out.scores) == len(out.attentions) == 4
    assert all(s.shape == (8, model.vocab) for s in out.scores)
    assert all(a.shape == (8, 3) for a in out.attentions)
    np.testing.assert_allclose(out.attentions[0][::2], [model.attention_for(s, [0]) for s in SOURCES])


def test_greedy_scores_and_attentions():
    model = ToyModel(decoder_only=False)
    out = generate(model, SOURCES, max_new_tokens=3, output_attentions=True, output_scores=True)
    assert out.sequences_scores is None and len(out.scores) == 3
    for i, source in enumerate(SOURCES):
        tokens = list(out.sequences[i])
        for step in range(3):
            prefix = tokens[:step + 1]
            np.testing.assert_allclose(out.scores[step][i], model.logits_for(source, prefix), rtol=1e-6)
            np.testing.assert_allclose(out.attentions[step][i], model.attention_for(source, prefix), rtol=1e-12)
    plain = generate(model, SOURCES, max_new_tokens=3, return_dict_in_generate=True)
    assert plain.scores is None and plain.attentions is None


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("kwargs, name", [
    (dict(max_length=0), "max_length"), (dict(max_length=2.5), "max_length"), (dict(max_length=None), "max_length"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(temperature=0.0, do_sample=True), "temperature"),
    (dict(temperature=-1.0, do_sample=True), "temperature"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
    (dict(top_k=-1), "top_k"), (dict(num_beams=0), "num_beams"),
    (dict(num_return_sequences=2), "num_return_sequences"),
    (dict(num_beams=2, num_return_sequences=3, do_sample=True), "num_return_sequences"),
    (dict(num_return_sequences=0, do_sample=True), "num_return_sequences"),
    (dict(repetition_penalty=0.0), "repetition_penalty"), (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size"),
    (dict(length_penalty=float("inf")), "length_penalty"), (dict(early_stopping="sometimes"), "early_stopping"),
    (dict(eos_token_id=-1), "eos_token_id"), (dict(pad_token_id=-2), "pad_token_id"),
    (dict(max_length=3), "max_length"),                              # no room after a 3-token prompt
    (dict(attention_mask=np.ones((4, 2))), "attention_mask"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate(ToyModel(), SOURCES, **kwargs)


@pytest.mark.parametrize("input_ids", [np.array([1, 2, 3]), np.array([[1.0, 2.0]]), np.array([[1, -2]]),
                                       np.zeros((1, 0), np.int64)])
def test_bad_input_ids(input_ids):
    with pytest.raises(ValueError, match="input_ids"):
        generate(ToyModel(), input_ids)


def test_output_attentions_needs_last_attention_and_temperature_ignored_when_greedy():
    class WithoutAttention:
        def __init__(self, toy):
            self.start_decoding, self.decode_step, self.reorder_state = (
                toy.start_decoding, toy.decode_step, toy.reorder_state)
    model = ToyModel()
    with pytest.raises(ValueError, match="output_attentions"):
        generate(WithoutAttention(model), SOURCES, max_new_tokens=2, output_attentions=True)
    np.testing.assert_array_equal(generate(model, SOURCES, max_new_tokens=3, temperature=0.0),
                                  generate(model, SOURCES, max_new_tokens=3))


def test_wrong_logits_shape_from_model_is_reported():
    class Broken(ToyModel):
        def decode_step(self, new_tokens, state):
            logits, state = super().decode_step(new_tokens, state)
            return logits[:1], state
    with pytest.raises(ValueError, match="decode_step"):
        generate(Broken(), SOURCES, max_new_tokens=2)

    class BadPrefix(ToyModel):
        def start_decoding(self, input_ids, attention_mask):
            state, prefix = super().start_decoding(input_ids, attention_mask)
            return state, prefix[0]
    with pytest.raises(ValueError, match="start_decoding"):
        generate(BadPrefix(), SOURCES, max_new_tokens=2)


# ---------------------------------------------------------------- Hugging Face cross-check (optional)

@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return torch, transformers


class HFAdapter:
    """An uncached transformers causal LM behind the step protocol: the state is the token history."""

    def __init__(self, torch, model):
        self.torch, self.model = torch, model

    def start_decoding(self, input_ids, attention_mask):
        return np.zeros((len(input_ids), 0), np.int64), input_ids

    def decode_step(self, new_tokens, history):
        history = np.concatenate([history, new_tokens], axis=1)
        with self.torch.no_grad():
            logits = self.model(self.torch.from_numpy(history)).logits[:, -1]
        return logits.numpy(), history

    def reorder_state(self, history, index):
        return history[index]


def tiny_gpt2(torch, transformers, vocab=12):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.4)
    return model


@pytest.mark.parametrize("kwargs", [
    dict(), dict(repetition_penalty=1.8), dict(no_repeat_ngram_size=2), dict(eos_token_id=3, pad_token_id=6),
    dict(num_beams=3, eos_token_id=3, pad_token_id=6, num_return_sequences=3),
    dict(num_beams=4, eos_token_id=[3, 5], pad_token_id=6, length_penalty=-1.0, num_return_sequences=2),
    dict(num_beams=3, eos_token_id=3, pad_token_id=6, length_penalty=2.0, early_stopping="never"),
    dict(num_beams=3, eos_token_id=3, pad_token_id=6, early_stopping=True, no_repeat_ngram_size=3),
    dict(num_beams=2, repetition_penalty=1.5),
])
def test_matches_transformers_generate(hf, kwargs):
    torch, transformers = hf
    model = tiny_gpt2(torch, transformers)
    prompts = np.array([[1, 2, 3], [4, 4, 7], [9, 10, 11]])
    kwargs = dict(kwargs, max_new_tokens=8)
    ours = generate(HFAdapter(torch, model), prompts, output_scores=True, **kwargs)
    theirs = model.generate(torch.from_numpy(prompts), do_sample=False, return_dict_in_generate=True,
                            output_scores=True, attention_mask=torch.ones(prompts.shape, dtype=torch.long),
                            **dict({"pad_token_id": 6}, **kwargs))
    np.testing.assert_array_equal(ours.sequences, theirs.sequences.numpy())
    if kwargs.get("num_beams", 1) > 1:
        np.testing.assert_allclose(ours.sequences_scores, theirs.sequences_scores.numpy(), rtol=1e-4, atol=1e-5)
    for a, b in zip(ours.scores, theirs.scores):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-4)


def test_processors_match_transformers(hf):
    torch, transformers = hf
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 30)) * 3
    sequences = rng.integers(0, 6, size=(5, 9))
    t_scores, t_ids = torch.from_numpy(scores), torch.from_numpy(sequences)
    pairs = [
        (apply_repetition_penalty(scores, sequences, 1.3), transformers.RepetitionPenaltyLogitsProcessor(1.3)),
        (block_repeated_ngrams(scores, sequences, 2), transformers.NoRepeatNGramLogitsProcessor(2)),
        (top_k_filtering(scores, 4), transformers.TopKLogitsWarper(4)),
        (top_p_filtering(scores, 0.7), transformers.TopPLogitsWarper(0.7)),
        (top_p_filtering(scores, 0.3, 3), transformers.TopPLogitsWarper(0.3, min_tokens_to_keep=3)),
    ]
    for ours, processor in pairs:
        np.testing.assert_allclose(ours, processor(t_ids, t_scores.clone()).numpy(), rtol=1e-12)
