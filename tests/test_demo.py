"""`minigen demo`, the prompt -> completion GPT trainer, and the experiments' smoke runs."""
import importlib.util
import json
import os
import re
import shlex

import numpy as np
import pytest

from minigen.cli import main
from minigen.data import IGNORE_INDEX, exact_match, load_task
from minigen.models.gpt import GPT
from minigen.models.seq2seq import Seq2Seq
from minigen.tokenizers import load_tokenizer
from minigen.demo import QUICK_STEPS
from minigen.training.pairs_gpt import (EOS_TOKEN, SEP_TOKEN, complete, encode_pair, pairs_batch,
                                        pairs_tokenizer, train_pairs_gpt)

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "experiments")
# What the quick demo must reach (seed 0; it gave valid losses 0.54 and 1.18, exact match 12% and 0%), against
# about 2.5-3.6 (the log of the vocabulary size) untrained: the models learn, far from converged.
QUICK_VALID_LOSS = {"seq2seq": 0.7, "gpt": 1.4}
TINY = dict(task="reverse", task_options=dict(min_len=1, max_len=3, alphabet="abc"), n_train=25, n_valid=4,
            n_test=10, n_layer=1, n_head=2, n_embd=32, batch_size=16, learning_rate=1e-2, eval_interval=50,
            max_time=None, max_steps=100, num_beams=2, log=None)


def _written(directory, name):
    """The file a plot helper wrote for `name`: the PNG, or its text stand-in without matplotlib."""
    stem = os.path.splitext(name)[0]
    found = [f for f in os.listdir(directory) if os.path.splitext(f)[0] == stem]
    assert found, f"nothing written for {name} in {sorted(os.listdir(directory))}"
    return os.path.join(directory, found[0])


def test_demo_quick_writes_table_plots_and_models(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Seq2Seq GRU+Bahdanau" in printed and "test exact match, greedy" in printed
    summary = json.loads((out / "demo.json").read_text())
    assert summary["quick"] is True and summary["task"] == "dates"
    for name in ("seq2seq", "gpt"):
        row = summary["table"][name]
        assert row["steps"] == summary["steps"][name] == QUICK_STEPS  # a fixed number of steps, not seconds
        assert row["parameters"] > 0 and row["train_seconds"] > 0 and row["decode_sequences_per_second"] > 0
        assert row["valid_loss"] < QUICK_VALID_LOSS[name]
    assert summary["table"]["seq2seq"]["test_exact_match"] >= 0.08
    assert len(summary["samples"]) == 5
    assert {"source", "seq2seq", "gpt", "reference"} == set(summary["samples"][0])
    for name in summary["files"]:
        assert os.path.getsize(out / name) > 0
    assert [os.path.splitext(f)[0] for f in summary["files"]] == ["loss", "attention"]
    # the saved models load back and translate / complete
    seq2seq = Seq2Seq.from_pretrained(out / "seq2seq")
    assert isinstance(seq2seq.translate(["March 3, 2021"], max_length=12)[0], str)
    gpt = GPT.from_pretrained(out / "gpt")
    texts, _ = complete(gpt, load_tokenizer(str(out / "gpt")), ["March 3, 2021"], max_new_tokens=11)
    assert isinstance(texts[0], str)
    # every command the demo suggests runs as written
    hints = re.search(r"^Try:(.*)", printed, re.M | re.S).group(1).strip().splitlines()
    assert len(hints) == 2
    for hint in hints:
        argv = shlex.split(hint)
        assert argv[0] == "minigen" and main(argv[1:]) == 0, hint
    assert "attention" not in capsys.readouterr().err
    # a second demo into the same --out is refused, or replaces the first with --overwrite
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "demo.json").exists()


def test_demo_rejects_a_bad_budget(tmp_path, capsys):
    assert main(["demo", "--quick", "--max-time", "0", "--out", str(tmp_path)]) == 2
    assert "--max-time" in capsys.readouterr().err


def test_pairs_batch_puts_the_loss_on_the_completion_only():
    data = load_task("reverse", n_train=4, n_valid=1, n_test=1, max_len=4)
    tokenizer = pairs_tokenizer(data)
    sep, eos = tokenizer.token_to_id(SEP_TOKEN), tokenizer.token_to_id(EOS_TOKEN)
    examples = [encode_pair(tokenizer, "abc", "cba"), encode_pair(tokenizer, "a", "a")]
    assert examples[1] == ([tokenizer.token_to_id("a"), sep, tokenizer.token_to_id("a"), eos], 2)
    x, y = pairs_batch(examples, pad_id=eos)
    assert x.shape == y.shape == (2, 7)
    ids = tokenizer.encode
    np.testing.assert_array_equal(x[0], ids("abc") + [sep] + ids("cba"))
    np.testing.assert_array_equal(y[0], [IGNORE_INDEX] * 3 + ids("cba") + [eos])
    np.testing.assert_array_equal(x[1], ids("a") + [sep] + ids("a") + [eos] * 4)
    np.testing.assert_array_equal(y[1], [IGNORE_INDEX] + ids("a") + [eos] + [IGNORE_INDEX] * 4)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs_gpt")
    model, metrics = train_pairs_gpt(out=str(out), **TINY)
    return model, metrics, out


def test_pairs_gpt_learns_a_tiny_task(tiny_run):
    _, metrics, _ = tiny_run
    assert metrics["steps"] == 100
    assert metrics["valid_loss"] < 0.5 < metrics["history"][0]["valid_loss"]
    assert metrics["test_exact_match"] >= 0.5 and metrics["test_exact_match_beam"] >= 0.5
    assert metrics["tokens_per_second"] > 0 and metrics["decode_tokens_per_second"] > 0


def test_pairs_gpt_checkpoint_reloads_and_batches_like_single_prompts(tiny_run):
    model, metrics, out = tiny_run
    data = load_task(TINY["task"], n_train=TINY["n_train"], n_valid=TINY["n_valid"], n_test=TINY["n_test"],
                     **TINY["task_options"])
    sources = [s for s, _ in data.test]
    batched, _ = complete(model, pairs_tokenizer(data), sources, max_new_tokens=4)
    assert batched[:len(metrics["samples"])] == [output for _, output, _ in metrics["samples"]]
    # left padding must not change a prompt's completion
    singles = [complete(model, pairs_tokenizer(data), [s], max_new_tokens=4)[0][0] for s in sources]
    assert batched == singles
    reloaded = GPT.from_pretrained(out)
    assert complete(reloaded, load_tokenizer(str(out)), sources, max_new_tokens=4)[0] == batched
    assert json.loads((out / "metrics.json").read_text())["test_exact_match"] == metrics["test_exact_match"]


@pytest.mark.parametrize("options, message", [
    (dict(max_time=None, max_steps=None), "max_time"),
    (dict(max_steps=0), "max_steps"),
    (dict(n_eval=-1), "n_eval"),
    (dict(warmup=1.5), "warmup"),
    (dict(batch_size=100), "batch_size"),
])
def test_train_pairs_gpt_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        train_pairs_gpt(**{**TINY, **options})


def _load_experiment(name):
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", os.path.join(EXPERIMENTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, plots", [
    ("long_range", ["long_range_reverse.png", "long_range_reverse_curves.png", "long_range_lookback.png",
                    "long_range_lookback_curves.png"]),
    ("beam_search", ["beam_search.png", "beam_search_speed.png", "beam_search_length_penalty.png"]),
    ("cost", ["cost_training.png", "cost_generation.png"]),
    ("scaling", ["scaling_length.png", "scaling_size.png", "scaling_context.png"]),
    ("pretraining", ["pretraining.png"]),
    ("pairs", ["pairs.png"]),
    ("infill", ["infill.png"]),
    ("plateau", ["plateau.png"]),
])
def test_experiment_quick_run_writes_its_table_and_plot(name, plots, tmp_path, capsys):
    _load_experiment(name).main(["--quick", "--out", str(tmp_path)])
    text = (tmp_path / f"{name}.md").read_text()
    assert re.search(r"^\|---\|", text, re.M) and text in capsys.readouterr().out
    results = json.loads((tmp_path / f"{name}.json").read_text())
    assert results["rows"]
    if name != "cost":  # the experiments built on common.py record where they ran
        assert results["machine"]["commit"] and results["machine"]["cores"] >= 1
        assert f"commit {results['machine']['commit']}" in text
    for plot in plots:
        assert os.path.getsize(_written(tmp_path, plot)) > 0
    if name == "long_range":  # parts of the experiment run apart are reported as one
        _load_experiment(name).main(["--out", str(tmp_path), "--combine", "long_range", "--name", "combined"])
        combined = json.loads((tmp_path / "combined.json").read_text())
        assert combined["rows"] == results["rows"] and combined["parts"] == ["long_range"]
        assert f"commit {results['machine']['commit']}" in (tmp_path / "combined.md").read_text()


def test_train_until_plateau_stops_on_patience_and_keeps_the_best_model():
    common = _load_experiment("common")
    data = load_task("reverse", n_train=64, n_valid=8, n_test=4, min_len=1, max_len=4, alphabet="abc")
    learner = common.seq2seq_learner(data, "bahdanau", embedding_size=8, hidden_size=16, batch_size=16)
    plateau = common.Plateau(eval_interval=5, patience=2, max_steps=200, warmup_steps=2, learning_rate=1e-2)
    record = common.train_until_plateau(learner, data.valid, plateau, log=None)
    history = [h["valid_exact_match"] for h in record["history"]]
    assert record["best_valid_exact_match"] == max(history)
    assert record["steps"] == 5 * (len(history) - 1) <= 200
    if record["stopped_by"] == "patience":  # the last two evaluations did not beat the best before them
        assert max(history[-2:]) <= max(history[:-2])
    # the model kept is the best one: validating it again gives the best exact match
    predictions = learner.predict([s for s, _ in data.valid])
    assert exact_match(predictions, [t for _, t in data.valid]) == record["best_valid_exact_match"]
