"""GPT training: bit-identical resume, crash safety, NaN stops, fine-tuning with frozen parts, the CLI commands."""
import json
import os
import re
import sys

import numpy as np
import pytest

from minigen.cli import main
from minigen.io.checkpoint import load_checkpoint
from minigen.models.gpt import GPT
from minigen.tokenizers import load_tokenizer
from minigen.training.gpt import GPTTrainConfig, train_gpt

TEXT = ("First Citizen: Before we proceed any further, hear me speak.\nAll: Speak, speak.\n"
        "First Citizen: You are all resolved rather to die than to famish?\nAll: Resolved. resolved.\n") * 6
TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, eval_iters=2, warmup_iters=3,
            lr_decay_iters=30, learning_rate=1e-2, min_lr=1e-3)
TINY_ARGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
             "--eval-iters", "2", "--warmup-iters", "3", "--lr-decay-iters", "30"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, text_file):
    """A tiny char GPT trained for 30 steps: (output directory, metrics)."""
    out = str(tmp_path_factory.mktemp("trained"))
    _, metrics = train_gpt(GPTTrainConfig(text=text_file, out=out, max_iters=30, eval_interval=10, **TINY),
                           log=lambda *a: None)
    return out, metrics


def run(text_file, out, log=lambda *a: None, **kw):
    return train_gpt(GPTTrainConfig(text=text_file, out=out, **{**TINY, **kw}), log=log)


def test_training_lowers_the_loss_and_writes_checkpoints(trained):
    out, metrics = trained
    assert len(metrics["loss_history"]) == 30 and metrics["iters"] == 30
    assert [row[0] for row in metrics["val_history"]] == [0, 10, 20, 30]
    assert metrics["val_history"][-1][2] < metrics["val_history"][0][2] - 0.4
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f)["loss_history"] == metrics["loss_history"]
    for name in ("best", "last"):
        model = GPT.from_pretrained(os.path.join(out, name))
        assert model.config.vocab_size == load_tokenizer(os.path.join(out, name)).vocab_size
    assert load_checkpoint(os.path.join(out, "last")).manifest["step"] == 30


def test_resume_is_bit_identical(tmp_path, text_file, trained):
    _, full = trained
    out = str(tmp_path / "resumed")
    run(text_file, out, max_iters=15, eval_interval=10)
    model, resumed = run(text_file, out, max_iters=30, eval_interval=10, resume=True)
    assert resumed["loss_history"] == full["loss_history"]  # exact float equality, step by step
    assert resumed["val_history"][-1] == full["val_history"][-1]
    uninterrupted = GPT.from_pretrained(os.path.join(trained[0], "last"))
    for (name, a), b in zip(uninterrupted.state_dict().items(), model.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_stops_with_the_step_and_keeps_last_checkpoint(tmp_path, text_file, capsys):
    out = str(tmp_path / "nan")
    code = main(["train", "gpt", "--text", text_file, "--out", out, *TINY_ARGS, "--max-iters", "30",
                 "--eval-interval", "1000", "--learning-rate", "1e6", "--min-lr", "1e6", "--warmup-iters", "0"])
    err = capsys.readouterr().err
    assert code == 1 and re.search(r"loss became (nan|inf|-inf) at step [1-9]", err)
    last = os.path.join(out, "last")
    assert load_checkpoint(last).manifest["step"] == 0
    model = GPT.from_pretrained(last)
    assert all(np.isfinite(p.data).all() for p in model.parameters())


def test_init_from_with_frozen_embeddings_and_blocks(tmp_path, text_file, trained):
    source = GPT.from_pretrained(os.path.join(trained[0], "best"))
    out = str(tmp_path / "finetune")
    run(text_file, out, max_iters=5, eval_interval=5, init_from=trained[0], freeze=["embeddings", "blocks:1"],
        n_layer=3, n_embd=8)  # the model's shape comes from the checkpoint, not from these options
    tuned = GPT.from_pretrained(os.path.join(out, "last"))
    before, after = source.state_dict(), tuned.state_dict()
    assert before.keys() == after.keys()
    for name in before:
        frozen = name.startswith(("transformer.wte", "transformer.wpe", "transformer.h.0."))
        assert np.array_equal(before[name], after[name]) == frozen, name


def test_bad_freeze_option(tmp_path, text_file):
    with pytest.raises(ValueError, match="--freeze"):
        run(text_file, str(tmp_path / "x"), max_iters=1, freeze=["decoder"])


@pytest.mark.parametrize("content, message", [(None, "no such file"), ("", "empty"), ("abc" * 5, "block-size")])
def test_cli_errors_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "input.txt"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    code = main(["train", "gpt", "--text", str(path), "--out", str(tmp_path / "out"), *TINY_ARGS])
    err = capsys.readouterr().err
    assert code == 2 and "error" in err and message in err


def test_generate_command(trained, capsys):
    out, _ = trained
    code = main(["generate", "--checkpoint", out, "--prompt", "All: ", "--max-length", "16",
                 "--num-return-sequences", "3", "--do-sample", "--temperature", "0.8", "--top-k", "20",
                 "--top-p", "0.95", "--seed", "1"])
    printed = capsys.readouterr().out
    samples = [block.strip("\n") for block in printed.split("---")[2::2]]
    assert code == 0 and len(samples) == 3 and all(s.startswith("All: ") and len(s) == 16 for s in samples)
    assert main(["generate", "--checkpoint", os.path.join(out, "last"), "--prompt", "All: ", "--max-new-tokens",
                 "8", "--num-beams", "3", "--num-return-sequences", "2"]) == 0
    assert len(capsys.readouterr().out.split("---")[2::2]) == 2
    assert main(["generate", "--checkpoint", out, "--prompt", "All: ", "--max-length", "40"]) == 0  # past block_size
    assert len(capsys.readouterr().out) == 41


@pytest.mark.parametrize("args, message", [(["--num-return-sequences", "2"], "num_return_sequences"),
                                           (["--max-length", "40", "--no-crop-context"], "block_size"),
                                           (["--prompt", "All: \u00e9"], "not in the vocabulary")])
def test_generate_command_errors(trained, capsys, args, message):
    code = main(["generate", "--checkpoint", trained[0], "--prompt", "All", "--max-length", "10", *args])
    assert code == 2 and message in capsys.readouterr().err


def test_fim_training_and_fill_in_the_middle(tmp_path, text_file):
    from minigen.models.gpt_tasks import FIM_TOKENS, fill_in_the_middle
    out = str(tmp_path / "fim")
    model, _ = run(text_file, out, max_iters=5, eval_interval=5, fim_rate=0.5)
    tokenizer = load_tokenizer(os.path.join(out, "last"))
    assert all(tokenizer.token_to_id(t) is not None for t in FIM_TOKENS)
    middle = fill_in_the_middle(model, tokenizer, "Fir", "zen:", max_new_tokens=6)
    assert isinstance(middle, str) and len(middle) <= 6


# ----- chat ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    """A random GPT with a context window of 48 characters and a char tokenizer over TEXT."""
    import minigen
    from minigen.models.gpt import GPTConfig
    from minigen.tokenizers import CharTokenizer
    path = str(tmp_path_factory.mktemp("chat"))
    tokenizer = CharTokenizer.from_text(TEXT)
    minigen.manual_seed(0)
    GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=48, n_layer=1, n_head=2, n_embd=16)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_chat_keeps_recent_turns_within_the_window(chat_dir):
    from minigen.chat import ChatSession
    model, tokenizer = GPT.from_pretrained(chat_dir), load_tokenizer(chat_dir)
    session = ChatSession(model, tokenizer, user_prefix="A: ", bot_prefix="B: ", max_new_tokens=10)
    newline = tokenizer.encode("\n")[0]
    replies = [session.reply(text) for text in ("hear me", "speak", "die", "famish")]
    assert all("\n" not in r and len(r) <= 10 for r in replies) and len(session.turns) == 8
    prompt = session.prompt_ids("all")
    assert len(prompt) <= 48 - 10 + 1
    text = tokenizer.decode(prompt)
    assert text.endswith("A: all\nB: ") and text.startswith(("A: ", "B: "))  # whole turns, newest kept
    kept = text.count("\n") - 1
    assert 0 < kept < 8 and tokenizer.decode(sum(session.turns[-kept:], [])) + "A: all\nB: " == text
    assert newline in prompt
    # a user turn longer than the window keeps its end
    long_prompt = session.prompt_ids("speak " * 20)
    assert len(long_prompt) == 39 and tokenizer.decode(long_prompt).endswith("speak \nB: ")
    session.reset()
    assert session.prompt_ids("hi") == tokenizer.encode("A: hi\nB: ")


def test_chat_command_reads_stdin(chat_dir, capsys, monkeypatch):
    import io
    monkeypatch.setattr(sys, "stdin", io.StringIO("hear me\n/reset\nspeak\n"))
    assert main(["chat", "--checkpoint", chat_dir, "--user-prefix", "A: ", "--bot-prefix", "B: ",
                 "--max-new-tokens", "8", "--do-sample", "--seed", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith("B: ") for line in lines)
