"""Training runs keep what they trained: an existing --out is refused or replaced atomically, SIGINT / SIGTERM
save last/ and exit 130 / 143, kill -9 at random moments leaves a run that resumes, a full disk keeps the previous
checkpoint; resumed runs number their steps on; run directories record what made them."""
import errno
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minigen.cli import main
from minigen.io.checkpoint import load_checkpoint
from minigen.training.run import StopSignals, TrainingInterrupted
from minigen.training.seq2seq import train_seq2seq

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
TEXT = ("First Citizen: Before we proceed any further, hear me speak.\nAll: Speak, speak.\n"
        "First Citizen: You are all resolved rather to die than to famish?\nAll: Resolved. resolved.\n") * 6
GPT_ARGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
            "--eval-iters", "2", "--warmup-iters", "3", "--lr-decay-iters", "30"]
SEQ2SEQ_ARGS = ["--task", "reverse", "--max-time", "0", "--n-train", "64", "--n-valid", "8", "--n-test", "8",
                "--hidden-size", "16", "--embedding-size", "8", "--batch-size", "16"]
SEQ2SEQ = dict(max_time=0, n_train=64, n_valid=8, n_test=8, hidden_size=16, embedding_size=8, batch_size=16)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def train_gpt(text_file, out, *args):
    return main(["train", "gpt", "--text", text_file, "--out", str(out), *GPT_ARGS, *args])


def last_step(out):
    return load_checkpoint(os.path.join(out, "last")).manifest["step"]


def litter(out):
    parent, name = os.path.split(str(out))
    return [entry for entry in os.listdir(parent) if entry.startswith(name + ".")]


# ----- an existing --out ------------------------------------------------------------------------------
def test_an_existing_run_is_refused_without_resume_or_overwrite(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert train_gpt(text_file, out, "--max-iters", "4") == 0
    assert train_gpt(text_file, out, "--max-iters", "2") == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "--resume" in err and "--overwrite" in err
    assert last_step(out) == 4
    assert main(["train", "seq2seq", "--out", str(out), *SEQ2SEQ_ARGS, "--max-steps", "2"]) == 2
    assert "--overwrite" in capsys.readouterr().err and last_step(out) == 4
    (tmp_path / "papers").mkdir()
    (tmp_path / "papers" / "thesis.txt").write_text("mine")
    assert train_gpt(text_file, tmp_path / "papers", "--max-iters", "2", "--overwrite") == 2
    assert "holds no training run" in capsys.readouterr().err
    assert os.listdir(tmp_path / "papers") == ["thesis.txt"]


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert train_gpt(text_file, out, "--max-iters", "4") == 0
    short = tmp_path / "short.txt"
    short.write_text("too short", encoding="utf-8")
    # fails after the replacement directory was made, before its first checkpoint: the old run stays
    assert main(["train", "gpt", "--text", str(short), "--out", str(out), *GPT_ARGS, "--overwrite"]) == 2
    assert last_step(out) == 4 and not litter(out)
    assert train_gpt(text_file, out, "--max-iters", "2", "--overwrite") == 0
    assert last_step(out) == 2 and not litter(out)
    assert json.loads((out / "metrics.json").read_text())["iters"] == 2
    capsys.readouterr()
    assert train_gpt(text_file, out, "--max-iters", "2", "--resume", "--overwrite") == 2
    assert "--resume and --overwrite" in capsys.readouterr().err


# ----- signals ---------------------------------------------------------------------------------------
def start(command, out, *args):
    argv = [sys.executable, "-m", "minigen", *command, "--out", str(out), *args]
    return subprocess.Popen(argv, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(proc, out, seconds=120):
    deadline = time.monotonic() + seconds
    while not os.path.isdir(os.path.join(out, "last")):
        assert proc.poll() is None, f"training ended early: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.02)


@pytest.mark.parametrize("family, signals, code", [
    ("gpt", [signal.SIGINT, signal.SIGINT], 130),   # Ctrl-C twice in a row
    ("gpt", [signal.SIGTERM], 143),
    ("seq2seq", [signal.SIGINT], 130),
])
def test_a_signal_saves_last_and_exits_with_the_shells_code(tmp_path, text_file, family, signals, code):
    out = tmp_path / "run"
    if family == "gpt":
        proc = start(["train", "gpt", "--text", text_file], out, *GPT_ARGS, "--max-iters", "100000",
                     "--eval-interval", "100000")
    else:
        proc = start(["train", "seq2seq"], out, *SEQ2SEQ_ARGS, "--max-steps", "100000", "--eval-interval", "3")
    try:
        wait_for_checkpoint(proc, out)
        time.sleep(0.3)
        for sig in signals:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    step = last_step(out)
    assert proc.returncode == code
    assert f"interrupted at step {step}; saved {out / 'last'}; continue with --resume" in err
    assert not litter(out / "last")


def test_signals_during_training_and_its_save_are_noted_not_raised():
    previous = signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # a second signal, as during the save of last/
        time.sleep(0.01)
    assert stop.signum == signal.SIGTERM and signal.getsignal(signal.SIGINT) is previous


def test_seq2seq_interrupted_and_resumed_equals_an_uninterrupted_run(tmp_path, capsys):
    full, _ = train_seq2seq("reverse", out=str(tmp_path / "full"), max_steps=12, eval_interval=4, **SEQ2SEQ)

    def interrupt_at_step_4(message):
        if message.startswith("step 4:"):
            os.kill(os.getpid(), signal.SIGINT)  # noted by the handler; training stops after this step's save

    out = str(tmp_path / "resumed")
    with pytest.raises(TrainingInterrupted, match="interrupted at step 4") as info:
        train_seq2seq("reverse", out=out, max_steps=12, eval_interval=4, log=interrupt_at_step_4, **SEQ2SEQ)
    assert info.value.exit_code == 130 and last_step(out) == 4
    capsys.readouterr()
    resumed, metrics = train_seq2seq("reverse", out=out, max_steps=12, eval_interval=4, resume=True, **SEQ2SEQ)
    printed = capsys.readouterr().out
    assert "resumed from" in printed and re.search(r"^step 5/12 ", printed, re.M)
    assert metrics["steps"] == 12 and [h["step"] for h in metrics["history"]] == [0, 4, 8, 12]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_a_resumed_gpt_run_numbers_its_steps_on(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert train_gpt(text_file, out, "--max-iters", "5") == 0
    capsys.readouterr()
    assert train_gpt(text_file, out, "--max-iters", "8", "--resume") == 0
    printed = capsys.readouterr().out
    assert re.search(r"^step 6/8 \| ", printed, re.M) and not re.search(r"^step 1/8", printed, re.M)


# ----- kill -9 and a full disk ------------------------------------------------------------------------
def test_kill_9_at_random_moments_leaves_a_run_that_resumes(tmp_path, text_file):
    """Every step evaluates and saves both checkpoints, so random kills land in saves as often as not."""
    out = tmp_path / "run"
    rng = random.Random(0)
    for attempt in range(3):
        args = ["--max-iters", "100000", "--eval-interval", "1", "--eval-iters", "1"]
        proc = start(["train", "gpt", "--text", text_file], out, *GPT_ARGS, *args, *(["--resume"] * (attempt > 0)))
        try:
            wait_for_checkpoint(proc, out)
            time.sleep(rng.uniform(0.0, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            proc.kill()
            proc.stderr.close()
        step = last_step(out)  # last/, or the whole copy a torn swap left beside it
        assert 0 <= step < 100000
    assert train_gpt(text_file, out, "--max-iters", str(step + 2), "--eval-interval", "1000", "--resume") == 0
    assert last_step(out) == step + 2 and not litter(out / "last") and not litter(out / "best")


def test_a_full_disk_keeps_the_previous_checkpoint_and_names_the_path(tmp_path, text_file, capsys, monkeypatch):
    import minigen.io.checkpoint as checkpoint
    real_save_file, saves_of_last = checkpoint.save_file, []

    def save_file(tensors, path):
        if f"{os.sep}last.tmp-" in path and path.endswith("model.safetensors"):
            saves_of_last.append(path)
            if len(saves_of_last) == 3:  # last/ was saved at steps 0 and 1; the disk fills at step 2
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save_file(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    out = tmp_path / "run"
    assert train_gpt(text_file, out, "--max-iters", "5", "--eval-interval", "1") == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and str(out / "last") in err
    assert last_step(out) == 1 and not litter(out / "last")


# ----- what a run records and says --------------------------------------------------------------------
def test_run_directories_record_what_made_them_and_say_how_to_use_them(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    assert train_gpt(text_file, out, "--max-iters", "3", "--seed", "7") == 0
    printed = capsys.readouterr().out
    for record in (json.loads((out / "metrics.json").read_text())["run"],
                   load_checkpoint(os.path.join(out, "last")).manifest["run"]):
        assert record["seed"] == 7 and record["backend"] in ("numpy", "numba") and record["threads"] >= 1
        assert record["minigen_version"] and "command" in record and "blas" in record
    assert [f for f in os.listdir(out) if f.startswith("loss.")]
    hint = re.search(r"saved (\S+) \(val loss [\d.]+\); try: (minigen generate .*)$", printed, re.M)
    assert hint and hint.group(1) == str(out / "best")
    assert main(shlex.split(hint.group(2))[1:] + ["--max-new-tokens", "3"]) == 0
