"""The Seq2Seq family end to end: model, decoding protocol, checkpoints, training loop, CLI and plots."""
import contextlib
import io
import json
import os
import re
import shlex

import numpy as np
import pytest

import minigen as mg
from minigen import plots
from minigen.cli import main
from minigen.data import Seq2SeqBatches, load_task
from minigen.models import Seq2Seq, Seq2SeqConfig
from minigen.tokenizers import CharTokenizer
from minigen.training.seq2seq import attention_map, train_seq2seq

VOCAB = CharTokenizer.from_chars("abcdef")


def make_model(dtype=np.float64, seed=0, **options):
    mg.manual_seed(seed)
    settings = dict(embedding_size=8, hidden_size=12, attention="bahdanau")
    settings.update(options)
    config = Seq2SeqConfig(len(VOCAB), len(VOCAB), **settings)
    return Seq2Seq(config, VOCAB, VOCAB).to(dtype).eval()


def batch(pairs):
    return next(iter(Seq2SeqBatches(pairs, VOCAB, VOCAB, batch_size=len(pairs), shuffle=False)))


PAIRS = [("abc", "cba"), ("f", "f"), ("deadbeef", "feebdaed"), ("ab", "ba")]


# ----- the decoding protocol ---------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["bahdanau", "luong-dot", "none"])
def test_greedy_generate_equals_argmax_of_full_forward(attention):
    """generate(num_beams=1) through the step protocol picks what re-running forward() on the prefix picks."""
    model = make_model(attention=attention)
    ids, mask = model.encode_sources(["deadbeef", "abc"])
    out = model.generate(ids, attention_mask=mask, max_length=8, eos_token_id=None)
    prefix = np.full((2, 1), VOCAB.bos_id)
    for _ in range(7):
        with mg.no_grad():
            logits = model(ids, mask.sum(1), prefix)
        prefix = np.concatenate([prefix, logits.data[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, prefix)


@pytest.mark.parametrize("cell,num_layers", [("gru", 1), ("gru", 2), ("rnn", 2)])
def test_graph_free_decode_step_equals_the_tensor_step_after_reordering(cell, num_layers):
    """Bahdanau decoding runs on arrays and reads each row's memory through state['rows']; it must give the
    Tensor step's logits, states and weights, also after a reorder that repeats and permutes rows (beams)."""
    model = make_model(cell=cell, num_layers=num_layers)
    ids, mask = model.encode_sources(["deadbeef", "abc", "f"])
    state, prefix = model.start_decoding(ids, mask)
    state = model.reorder_state(state, np.array([2, 0, 0, 1, 2]))
    tokens = np.array([VOCAB.bos_id, 3, 4, 5, 3])
    fast = model._decode_step_arrays(tokens, state["hidden"], state["context"], state)
    slow = model._decode_step_tensors(tokens, state["hidden"], state["context"], state)
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert state["outputs"].shape[0] == 3  # the memory is not copied per row
    np.testing.assert_array_equal(state["rows"], [2, 0, 0, 1, 2])


def test_decoding_with_the_input_gate_table_equals_decoding_without():
    """Many sources: the first cell's input gates come from a table built once per call; few: from the product."""
    model = make_model()
    texts = [("abcdef" * 2)[i:i + 1 + i % 5] for i in range(len(VOCAB) + 2)]
    ids, mask = model.encode_sources(texts)
    with_table, prefix = model.start_decoding(ids, mask)
    assert with_table["input_gates"] is not None
    assert model.start_decoding(ids[:2], mask[:2])[0]["input_gates"] is None
    without = dict(with_table, input_gates=None)
    tokens = prefix
    for _ in range(4):
        logits, with_table = model.decode_step(tokens, with_table)
        reference, without = model.decode_step(tokens, without)
        np.testing.assert_allclose(logits, reference, rtol=1e-12, atol=1e-12)
        tokens = logits.argmax(axis=1)[:, None]


@pytest.mark.parametrize("cell, bidirectional, num_layers", [("gru", True, 1), ("gru", False, 2), ("rnn", True, 2)])
def test_encoding_a_batch_looks_up_the_first_projections(cell, bidirectional, num_layers, monkeypatch):
    """Without gradients and with at least as many source tokens as the vocabulary, the encoder's first-layer input
    projections are rows of a table; the outputs, keys and decoder states equal those of the product."""
    model = make_model(cell=cell, bidirectional=bidirectional, num_layers=num_layers)
    texts = [("abcdef" * 2)[i:i + 1 + i % 5] for i in range(len(VOCAB) + 2)]
    ids, mask = model.encode_sources(texts)
    lengths = mask.sum(axis=1)
    looked_up = []
    real = model._source_projections
    monkeypatch.setattr(model, "_source_projections", lambda src: looked_up.append(src.shape) or real(src))
    with mg.no_grad():
        memory, hidden = model.encode(ids, lengths)
        few = model.encode(ids[:1, :2], lengths[:1].clip(max=2))
    assert looked_up == [ids.shape]  # one source of two tokens: the product (a table would cost more)
    reference, reference_hidden = model.encode(ids, lengths)  # with gradients: the product
    for key in ("outputs", "keys"):
        np.testing.assert_allclose(memory[key].data, reference[key].data, rtol=1e-12, atol=1e-12)
    for h, want in zip(hidden, reference_hidden):
        np.testing.assert_allclose(h.data, want.data, rtol=1e-12, atol=1e-12)
    assert few[0]["outputs"].shape == (1, 2, model.config.hidden_size)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_decoding_in_one_call_per_step_equals_the_array_step(dtype, num_beams, monkeypatch):
    """Up to FUSED_STEP_MAX_ROWS rows, the default model's decoding step is one kernel call
    (`kernels.seq2seq_decode_step`): the same sequences, scores and attention as the step of separate calls."""
    model = make_model(dtype)
    ids, mask = model.encode_sources(["deadbeef", "abc"])
    assert model._steps_in_one_call(2 * num_beams)
    options = dict(attention_mask=mask, max_length=8, num_beams=num_beams, num_return_sequences=num_beams,
                   eos_token_id=None, output_scores=True, output_attentions=True)
    fused = model.generate(ids, **options)
    monkeypatch.setattr(Seq2Seq, "FUSED_STEP_MAX_ROWS", 0)
    steps = model.generate(ids, **options)
    np.testing.assert_array_equal(fused.sequences, steps.sequences)
    tolerance = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    for a, b in zip(fused.scores + fused.attentions, steps.scores + steps.attentions):
        np.testing.assert_allclose(a, b, **tolerance)


def test_decoding_in_one_call_per_step_serves_only_what_it_computes():
    model = make_model()
    assert model._steps_in_one_call(1) and model._steps_in_one_call(Seq2Seq.FUSED_STEP_MAX_ROWS)
    assert not model._steps_in_one_call(Seq2Seq.FUSED_STEP_MAX_ROWS + 1)  # many rows: BLAS's products
    assert not make_model(num_layers=2)._steps_in_one_call(1)
    assert not make_model(cell="rnn")._steps_in_one_call(1)
    assert not make_model(attention="luong-dot")._steps_in_one_call(1)
    assert not make_model(dropout=0.1).train()._steps_in_one_call(1)
    assert make_model(dropout=0.1)._steps_in_one_call(1)


def test_teacher_forcing_ratio_zero_feeds_back_greedy_predictions():
    model = make_model()
    b = batch(PAIRS[:2])
    with mg.no_grad():
        logits = model(b["src"], b["src_lengths"], b["tgt_in"], teacher_forcing_ratio=0.0)
    greedy = model.generate(b["src"], attention_mask=b["src"] != 0, max_length=1 + b["tgt_in"].shape[1],
                            eos_token_id=None)
    np.testing.assert_array_equal(logits.data.argmax(-1), greedy[:, 1:])


@pytest.mark.parametrize("cell,bidirectional,num_layers", [("gru", True, 1), ("rnn", False, 2)])
def test_forward_does_not_depend_on_batch_composition(cell, bidirectional, num_layers):
    model = make_model(cell=cell, bidirectional=bidirectional, num_layers=num_layers)
    together = batch(PAIRS)
    with mg.no_grad():
        logits = model(together["src"], together["src_lengths"], together["tgt_in"]).data
        for i, pair in enumerate(PAIRS):
            alone = batch([pair])
            T = alone["tgt_in"].shape[1]
            np.testing.assert_allclose(model(alone["src"], alone["src_lengths"], alone["tgt_in"]).data[0],
                                       logits[i, :T], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_source_decoded_alone_equals_decoded_in_mixed_batch(num_beams):
    model = make_model()
    sources = [s for s, _ in PAIRS]
    together = model.translate(sources, num_beams=num_beams, num_return_sequences=num_beams, max_length=10)
    for source, result in zip(sources, together):
        assert model.translate([source], num_beams=num_beams, num_return_sequences=num_beams,
                               max_length=10)[0] == result


def test_beam_n_best_is_sorted_and_distinct():
    model = make_model(seed=3)
    ids, mask = model.encode_sources(["abcdef", "fa"])
    out = model.generate(ids, attention_mask=mask, num_beams=5, num_return_sequences=5, max_length=8,
                         output_scores=True)
    scores = out.sequences_scores.reshape(2, 5)
    assert np.all(np.diff(scores, axis=1) <= 0)
    for rows in out.sequences.reshape(2, 5, -1):
        assert len({tuple(r) for r in rows}) == 5


def test_last_attention_is_a_distribution_over_real_source_tokens():
    model = make_model()
    ids, mask = model.encode_sources(["abcdef", "ab"])
    out = model.generate(ids, attention_mask=mask, max_length=5, eos_token_id=None, output_attentions=True)
    assert len(out.attentions) == 4
    for weights in out.attentions:
        np.testing.assert_allclose(weights.sum(1), 1.0)
        assert np.all(weights[1, 2:] == 0)


# ----- the model ---------------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["bahdanau", "luong-dot", "luong-general", "none"])
@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_every_attention_and_cell_runs_forward_and_backward(attention, cell):
    model = make_model(np.float32, attention=attention, cell=cell, num_layers=2, dropout=0.1).train()
    b = batch(PAIRS)
    logits = model(b["src"], b["src_lengths"], b["tgt_in"], teacher_forcing_ratio=0.5)
    assert logits.shape == b["tgt_in"].shape + (len(VOCAB),) and logits.dtype == np.float32
    model.loss(logits, b["tgt_out"]).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and np.isfinite(p.grad).all(), name
        assert np.abs(p.grad).sum() > 0, name


@pytest.mark.parametrize("attention,cell", [("bahdanau", "gru"), ("luong-general", "rnn"), ("none", "gru")])
def test_gradients_of_the_full_model_match_central_differences(attention, cell):
    model = make_model(attention=attention, cell=cell, num_layers=2)
    b = batch(PAIRS[:3])
    rng = np.random.default_rng(0)

    def loss():
        return model.loss(model(b["src"], b["src_lengths"], b["tgt_in"]), b["tgt_out"])

    loss().backward()
    params = dict(model.named_parameters())
    names = ["src_embedding.weight", "encoder.weight_hh_l0", "encoder.weight_ih_l1", "bridge.bias",
             "decoder.0.weight_ih", "decoder.1.weight_hh", "out.weight"] + \
            ([] if attention == "none" else [n for n in params if n.startswith("attention.")])
    eps = 1e-6
    for name in names:
        p = params[name]
        direction = rng.standard_normal(p.shape)
        analytic = float((p.grad * direction).sum())
        original = p.data.copy()
        with mg.no_grad():
            p.data = original + eps * direction
            up = loss().item()
            p.data = original - eps * direction
            down = loss().item()
        p.data = original
        numeric = (up - down) / (2 * eps)
        assert abs(analytic - numeric) <= 1e-5 * max(1.0, abs(numeric)), (name, analytic, numeric)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_one_op_decoder_equals_the_step_by_step_decoder(dtype, monkeypatch):
    """The default shape (one GRU layer, Bahdanau, teacher forcing) trains through ops.BahdanauDecoder; the logits
    and every parameter's gradient equal those of the decoder built step by step from the layers."""
    model = make_model(dtype).train()
    assert model._decodes_in_one_op(1.0)
    b = batch(PAIRS)
    upstream = np.random.default_rng(0).standard_normal(b["tgt_in"].shape + (len(VOCAB),)).astype(dtype)
    results = []
    for one_op in (True, False):
        monkeypatch.setattr(model, "_decodes_in_one_op", lambda ratio, one_op=one_op: one_op)
        model.zero_grad()
        logits = model(b["src"], b["src_lengths"], b["tgt_in"])
        (logits * mg.tensor(upstream)).sum().backward()
        results.append((logits.data.copy(), {n: p.grad.copy() for n, p in model.named_parameters()}))
    (fused, fused_grads), (steps, step_grads) = results
    tolerance = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused, steps, **tolerance)
    for name in step_grads:
        np.testing.assert_allclose(fused_grads[name], step_grads[name], err_msg=name, **tolerance)


def test_the_one_op_decoder_serves_only_what_it_computes():
    assert not make_model(num_layers=2)._decodes_in_one_op(1.0)
    assert not make_model(cell="rnn")._decodes_in_one_op(1.0)
    assert not make_model(attention="luong-dot")._decodes_in_one_op(1.0)
    assert not make_model()._decodes_in_one_op(0.5)  # scheduled sampling feeds back predictions step by step
    assert not make_model(dropout=0.1).train()._decodes_in_one_op(1.0)
    assert make_model(dropout=0.1).eval()._decodes_in_one_op(1.0)


def test_tiny_model_overfits_eight_reverse_pairs():
    data = load_task("reverse", n_train=8, n_valid=1, n_test=1, seed=1, min_len=2, max_len=5, alphabet="abcd")
    mg.manual_seed(0)
    config = Seq2SeqConfig(len(data.src_vocab), len(data.tgt_vocab), embedding_size=16, hidden_size=32)
    model = Seq2Seq(config, data.src_vocab, data.tgt_vocab)
    optimizer = mg.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    b = next(iter(Seq2SeqBatches(data.train, data.src_vocab, data.tgt_vocab, batch_size=8, shuffle=False)))
    for _ in range(150):
        loss = model.loss(model(b["src"], b["src_lengths"], b["tgt_in"]), b["tgt_out"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sources, targets = zip(*data.train)
    assert model.translate(list(sources), max_length=8) == list(targets)
    assert [r[0] for r in model.translate(list(sources), num_beams=3, num_return_sequences=2,
                                          max_length=8)] == list(targets)


# ----- checkpoints -------------------------------------------------------------------------------
def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    model = make_model(np.float32, attention="luong-general", num_layers=2)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = Seq2Seq.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config and loaded.src_vocab == VOCAB and loaded.tgt_vocab == VOCAB
    b = batch(PAIRS)
    with mg.no_grad():
        np.testing.assert_array_equal(loaded(b["src"], b["src_lengths"], b["tgt_in"]).data,
                                      model(b["src"], b["src_lengths"], b["tgt_in"]).data)
    sources = [s for s, _ in PAIRS]
    assert loaded.translate(sources, num_beams=2) == model.translate(sources, num_beams=2)


def test_from_pretrained_rejects_bad_directories(tmp_path):
    with pytest.raises(FileNotFoundError):
        Seq2Seq.from_pretrained(tmp_path / "missing")
    make_model().save_pretrained(tmp_path / "ckpt")
    config_path = tmp_path / "ckpt" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(dict(config, attention="cosine")))
    with pytest.raises(ValueError, match="attention"):
        Seq2Seq.from_pretrained(tmp_path / "ckpt")
    config_path.write_text(json.dumps(dict(config, hidden_size=14)))
    with pytest.raises(ValueError, match="model.safetensors"):
        Seq2Seq.from_pretrained(tmp_path / "ckpt")
    config_path.write_text(json.dumps(config))
    (tmp_path / "ckpt" / "tgt_vocab.json").write_text('{"chars": "ba", "specials": []}')
    with pytest.raises(ValueError, match="tgt_vocab.json"):
        Seq2Seq.from_pretrained(tmp_path / "ckpt")


# ----- bad input ---------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    model = make_model()
    with pytest.raises(ValueError, match="'z'"):
        model.translate(["abz"])
    assert len(model.translate(["abz"], unk="replace")) == 1
    with pytest.raises(ValueError, match="empty"):
        model.translate([""])
    with pytest.raises(ValueError, match="empty"):
        model.generate(np.zeros((1, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="max_length"):
        model.translate(["abc"], max_length=0)
    with pytest.raises(ValueError, match="num_return_sequences"):
        model.translate(["abc"], num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="src_lengths"):
        model(np.array([[3, 4]]), np.array([3]), np.array([[1]]))
    with pytest.raises(ValueError, match="teacher_forcing_ratio"):
        model(np.array([[3, 4]]), np.array([2]), np.array([[1]]), teacher_forcing_ratio=1.5)
    with pytest.raises(ValueError, match="right"):
        model.generate(np.array([[0, 3, 4]]), attention_mask=np.array([[0, 1, 1]]))


@pytest.mark.parametrize("field,value", [("cell", "lstm"), ("attention", "luong"), ("hidden_size", 13),
                                         ("dropout", 1.0), ("eos_id", 99), ("num_layers", 0)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        Seq2SeqConfig(10, 10, **{field: value})


# ----- training loop and command line ------------------------------------------------------------
def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_train_and_translate_commands(tmp_path):
    out_dir = str(tmp_path / "run")
    code, printed, _ = run_cli("train", "seq2seq", "--task", "reverse", "--out", out_dir, "--max-steps", "12",
                               "--max-time", "0", "--n-train", "64", "--n-valid", "8", "--n-test", "8",
                               "--hidden-size", "16", "--embedding-size", "8", "--batch-size", "16",
                               "--eval-interval", "6", "--attention", "luong-dot", "--teacher-forcing-final", "0.5")
    assert code == 0
    hint = re.search(r"^saved \S+ \(valid exact match [\d.]+%\); try: (minigen translate .*)$", printed, re.M)
    assert hint and run_cli(*shlex.split(hint.group(1))[1:])[0] == 0  # the command it suggests runs as written
    metrics = json.loads(open(os.path.join(out_dir, "metrics.json")).read())
    for key in ("task", "steps", "train_seconds", "tokens_per_second", "valid_loss", "valid_exact_match",
                "test_exact_match", "test_exact_match_beam", "test_token_accuracy", "test_cer", "attention",
                "parameters"):
        assert key in metrics, key
    assert metrics["steps"] == 12 and metrics["attention"] == "luong-dot"
    assert [h["step"] for h in metrics["history"]] == [0, 6, 12]
    assert any(name.startswith("attention.") for name in os.listdir(out_dir))

    code, printed, _ = run_cli("translate", "--checkpoint", out_dir, "abc", "zyx", "--num-beams", "3",
                               "--num-return-sequences", "2")
    assert code == 0 and printed.count("1. ") == 2 and printed.count("2. ") == 2
    code, printed, _ = run_cli("translate", "--checkpoint", out_dir, "--show-attention", "abc")
    assert code == 0 and len(printed.splitlines()) >= 3
    png = os.path.join(out_dir, "abc.png")
    code, printed, _ = run_cli("translate", "--checkpoint", out_dir, "--attention-png", png, "abc")
    assert code == 0 and "attention map written to" in printed
    code, _, err = run_cli("translate", "--checkpoint", out_dir, "ab1")
    assert code == 2 and "'1'" in err
    code, printed, _ = run_cli("translate", "--checkpoint", out_dir, "ab1", "--unk", "replace")
    assert code == 0 and len(printed.splitlines()) == 1
    code, _, err = run_cli("translate", "--checkpoint", out_dir, "abc", "--max-length", "0")
    assert code == 2 and "max_length" in err


def test_train_seq2seq_api_rejects_unknown_options_and_missing_budget():
    with pytest.raises(TypeError, match="hidden"):
        train_seq2seq("reverse", hiden_size=8)
    with pytest.raises(ValueError, match="budget"):
        train_seq2seq("reverse", max_time=0, max_steps=0)


def test_attention_map_matches_generated_tokens():
    model = make_model()
    weights, src, tgt = attention_map(model, "abcd", max_length=6)
    assert src == list("abcd") and weights.shape == (len(tgt), 4)
    np.testing.assert_allclose(weights.sum(1), 1.0)


# ----- plots -------------------------------------------------------------------------------------
def test_plots_write_png_or_text(tmp_path, monkeypatch):
    weights = np.array([[0.9, 0.1], [0.2, 0.8]])
    table = plots.attention_table(weights, ["a", " "], ["x", "<eos>"])
    assert table.splitlines()[1].split() == ["x", "0.90*", "0.10"]
    curves = {"train": ([1, 2, 3], [3.0, 2.0, 1.0])}
    pytest.importorskip("matplotlib")
    assert plots.save_attention(weights, "ab", "xy", tmp_path / "a.png").endswith("a.png")
    assert open(tmp_path / "a.png", "rb").read(4) == b"\x89PNG"
    assert open(plots.save_loss_curves(curves, tmp_path / "l.png"), "rb").read(4) == b"\x89PNG"
    monkeypatch.setattr(plots, "_figure_class", lambda: None)
    text_path = plots.save_attention(weights, "ab", "xy", tmp_path / "b.png")
    assert text_path.endswith("b.txt") and "0.90*" in open(text_path).read()
    assert plots.save_loss_curves(curves, tmp_path / "l2.png").endswith("l2.csv")
    with pytest.raises(ValueError, match="src_tokens"):
        plots.attention_table(weights, ["a"], ["x", "y"])
