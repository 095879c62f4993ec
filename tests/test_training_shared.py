"""What the training loops share: one loop (fit), one learning-rate schedule, evaluation that restores the
model's mode, metrics.json written atomically, and one way to find the model in a run's directory."""
import io
import json
import math
import os

import numpy as np
import pytest

import minigen as mg
from minigen.models import GPT, GPTConfig
from minigen.optim.lr_scheduler import get_lr_warmup_cosine
from minigen.training import loop, pairs_gpt, seq2seq
from minigen.training.gpt import GPTTrainConfig, estimate_loss
from minigen.training.progress import Progress
from minigen.training.run import load_model_dir, write_metrics

SEQ2SEQ = dict(task="reverse", max_time=0, n_train=64, n_valid=4, n_test=4, hidden_size=8, embedding_size=4,
               batch_size=16, num_beams=1, log=None)


def nanogpt_lr(step, lr, warmup, decay, min_lr):
    """nanoGPT's get_lr, written out again as the reference."""
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if step > decay:
        return min_lr
    ratio = (step - warmup) / (decay - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


@pytest.mark.parametrize("step", [0, 4, 9, 10, 60, 109, 110, 500])
def test_schedule_at_warm_up_decay_and_end_points_equals_the_formula(step):
    assert get_lr_warmup_cosine(step, 1e-3, 10, 110, 1e-4) == pytest.approx(nanogpt_lr(step, 1e-3, 10, 110, 1e-4))


def recorded_lrs(monkeypatch):
    """The learning rate of every step the training loop takes."""
    lrs = []
    step = loop.optimization_step

    def recording(optimizer, loss, lr, *args):
        lrs.append(lr)
        return step(optimizer, loss, lr, *args)
    monkeypatch.setattr(loop, "optimization_step", recording)
    return lrs


def test_seq2seq_training_follows_the_schedule_over_its_steps(monkeypatch):
    lrs = recorded_lrs(monkeypatch)
    seq2seq.train_seq2seq(max_steps=12, warmup_steps=3, learning_rate=1e-2, min_lr=1e-3, eval_interval=12,
                          **SEQ2SEQ)
    assert lrs == pytest.approx([nanogpt_lr(s, 1e-2, 3, 12, 1e-3) for s in range(12)])


def test_pairs_gpt_training_warms_up_over_its_fraction_of_the_steps(monkeypatch):
    lrs = recorded_lrs(monkeypatch)
    pairs_gpt.train_pairs_gpt("reverse", max_time=None, max_steps=10, warmup=0.2, learning_rate=1e-2, min_lr=1e-3,
                              n_layer=1, n_head=1, n_embd=8, batch_size=4, n_train=20, n_valid=4, n_test=4, n_eval=0,
                              eval_interval=10, task_options=dict(min_len=1, max_len=3), log=None)
    assert lrs == pytest.approx([nanogpt_lr(s, 1e-2, 2, 10, 1e-3) for s in range(10)])


def test_a_time_budget_decays_over_the_steps_projected_at_the_pace_so_far(monkeypatch):
    monkeypatch.setattr(Progress, "elapsed", property(lambda self: 4.0))
    progress = Progress(total_steps=1000, max_time=10.0)
    # 4 s spent for 40 steps: 100 steps fit in 10 s, fewer than the 1000 allowed
    assert progress.planned_steps(40) == 100 and progress.fraction_done(40) == 0.4
    assert Progress(total_steps=50).planned_steps(40) == 50
    assert Progress(max_time=10.0).planned_steps(0) == 1


@pytest.fixture
def tiny_gpt():
    mg.manual_seed(0)
    return GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=8, dropout=0.1))


@pytest.mark.parametrize("training", [True, False])
def test_evaluation_restores_the_models_mode(tiny_gpt, training):
    tiny_gpt.train(training)
    cfg = GPTTrainConfig(block_size=4, batch_size=2, eval_iters=1)
    estimate_loss(tiny_gpt, {"val": np.arange(20) % 8}, cfg, step=0)
    assert tiny_gpt.training is training
    examples = [([1, 2, 3, 4], 2)]
    pairs_gpt.pairs_loss(tiny_gpt, examples, pad_id=0)
    assert tiny_gpt.training is training and all(m.training is training for m in tiny_gpt.modules())


def test_metrics_json_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_metrics({"val_loss": 1.5, "best": float("inf"), "step": np.int64(3)}, path)
    assert json.loads(path.read_text()) == {"val_loss": 1.5, "best": None, "step": 3}

    def crash(*args):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_metrics({"val_loss": 0.5}, path)
    # the old file is whole, and no temporary file is left beside it
    assert json.loads(path.read_text())["val_loss"] == 1.5 and os.listdir(tmp_path) == ["metrics.json"]


def test_load_model_dir_prefers_best_then_last_then_the_directory_itself(tmp_path):
    assert load_model_dir(str(tmp_path)) == str(tmp_path)
    for name in ("last", "best"):
        os.makedirs(tmp_path / name)
        (tmp_path / name / "config.json").write_text("{}")
        assert load_model_dir(str(tmp_path)) == os.path.join(str(tmp_path), name)
    os.makedirs(tmp_path / "empty" / "best")  # a best/ without a config.json is no model
    assert load_model_dir(str(tmp_path / "empty")) == str(tmp_path / "empty")


def test_fit_evaluates_at_step_0_every_interval_and_at_the_end(tiny_gpt):
    optimizer = mg.optim.AdamW(tiny_gpt.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)

    def batch_loss(step):
        x = rng.integers(0, 8, (2, 4))
        return tiny_gpt(x, np.roll(x, -1, axis=1))[1], x.size, {}
    evaluated, updates = [], []
    steps = loop.fit(optimizer, list(tiny_gpt.parameters()), Progress(total_steps=7, stream=io.StringIO()),
                     batch_loss, schedule=lambda step: 1e-3, evaluate=evaluated.append, eval_interval=3,
                     on_step=lambda step, loss: updates.append(step))
    assert steps == 7 and evaluated == [0, 3, 6, 7] and updates == list(range(1, 8))


def test_patience_ends_fit_after_evaluations_without_improvement(tiny_gpt):
    optimizer = mg.optim.AdamW(tiny_gpt.parameters(), lr=1e-3)
    x = np.zeros((1, 4), dtype=np.int64)
    metric = iter([3.0, 2.0, 2.5, 2.0, 2.1, 1.0])  # best 2.0 at step 2, then three evaluations no better
    patience, evaluated = loop.Patience(3), []

    def evaluate(step):
        evaluated.append(step)
        return patience.update(step, next(metric))
    steps = loop.fit(optimizer, list(tiny_gpt.parameters()), Progress(total_steps=100, stream=io.StringIO()),
                     lambda step: (tiny_gpt(x, x)[1], x.size, {}), schedule=lambda step: 1e-3, evaluate=evaluate,
                     eval_interval=2)
    assert steps == 8 and evaluated == [0, 2, 4, 6, 8]
    assert (patience.best, patience.best_step) == (2.0, 2)
    higher = loop.Patience(1, higher_is_better=True)
    assert [higher.update(s, v) for s, v in enumerate([0.5, 0.6, 0.6])] == [False, False, True]
    with pytest.raises(ValueError, match="patience"):
        loop.Patience(0)
