"""The everyday commands: help texts with defaults, errors reported as bad input only when they are, progress on a
terminal, and defaults that fit the smallest model `train gpt` accepts."""
import io
import sys

import pytest

import minigen
from minigen.cli import main
from minigen.models.gpt import GPT, GPTConfig
from minigen.tokenizers import CharTokenizer
from minigen.training.progress import Progress


def help_text(capsys, *command):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize("command, shown", [
    (["train", "gpt"], ["--out OUT (required)", "--text TEXT (required)", "--n-layer N_LAYER default: 4",
                        "--learning-rate LEARNING_RATE default: 0.001"]),
    (["train", "seq2seq"], ["--out OUT (required)", "--max-steps MAX_STEPS default: 3000",
                            "--hidden-size HIDDEN_SIZE default: 128"]),
    (["generate"], ["--checkpoint CHECKPOINT (required)", "--max-length MAX_LENGTH default: 50",
                    "--min-new-tokens MIN_NEW_TOKENS"]),
    (["translate"], ["--num-beams NUM_BEAMS default: 1", "--attention-png PATH"]),
    (["demo"], ["(default: demo-out)"]),
])
def test_help_shows_defaults_and_required_options(capsys, command, shown):
    text = help_text(capsys, *command)
    assert all(item in text for item in shown), text


def test_a_type_error_inside_a_command_is_a_bug_not_bad_input(monkeypatch):
    import minigen.training.gpt as gpt

    def broken(cfg, log=print):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    monkeypatch.setattr(gpt, "train_gpt", broken)
    with pytest.raises(TypeError, match="unsupported operand"):  # its traceback reaches the user
        main(["train", "gpt", "--text", "t.txt", "--out", "o"])


def test_progress_is_one_line_in_place_on_a_terminal_and_full_lines_in_a_pipe():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, in_place in ((Terminal(), True), (io.StringIO(), False)):
        progress = Progress(total_steps=10, every=0.0, stream=stream, start_step=4)
        for step in range(5, 8):
            progress.update(step, 1.0, 100)
        progress.wrap(lambda message: print(message, file=stream))("validation")
        lines = stream.getvalue().split("\n")
        if in_place:
            assert stream.getvalue().count("\r") == 3 and lines[0].startswith("\rstep 5/10") and lines[1] == "validation"
        else:
            assert "\r" not in stream.getvalue() and [line[:9] for line in lines[:3]] == ["step 5/10", "step 6/10",
                                                                                         "step 7/10"]
        # the first step loads the kernels: no ETA until there is a pace measured after it
        assert "ETA" not in stream.getvalue().split("step 6")[0] and "ETA" in stream.getvalue().split("step 7")[1]


@pytest.mark.parametrize("block_size", [1, 8])
def test_chat_defaults_fit_the_smallest_models(tmp_path, capsys, monkeypatch, block_size):
    tokenizer = CharTokenizer.from_text("User: Bot: hello there again\n")
    minigen.manual_seed(0)
    GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=1, n_head=1,
                  n_embd=4)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello there\nhello\nhello there again\n"))
    assert main(["chat", "--checkpoint", str(tmp_path)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main(["generate", "--checkpoint", str(tmp_path), "--prompt", "hello", "--min-new-tokens", "2"]) == 0
