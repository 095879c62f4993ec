"""Bad input at the public entry points: the right exception type, with a message naming the argument, the
value seen and what was expected -- never a NumPy error from deep inside, never a silent wrong answer.

Checks already made elsewhere are not repeated here (Embedding ids, cross_entropy targets and load_state_dict
shapes in test_layers / test_functional / test_module, generate's keywords in test_generation, the GPT's ids
and targets in test_gpt, `train gpt` errors in test_gpt_training).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import minigen as mg
from minigen import nn
from minigen.cli import main
from minigen.models import GPT, GPTConfig, Seq2Seq, Seq2SeqConfig
from minigen.tokenizers import ByteLevelBPETokenizer, CharTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V = 11  # vocabulary of the tiny models (Seq2Seq: source and target)


@pytest.fixture(scope="module")
def gpt():
    mg.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=8))


@pytest.fixture(scope="module")
def seq2seq():
    mg.manual_seed(0)
    return Seq2Seq(Seq2SeqConfig(V, V, embedding_size=4, hidden_size=6))


SRC, LENGTHS, TGT = np.array([[3, 4, 5]]), np.array([3]), np.array([[1, 3, 4]])


def entry_points(gpt, seq2seq):
    """{name: call(ids)} for every public function that takes token ids (a (1, 3) array)."""
    embedding = nn.Embedding(V, 4)
    return {
        "Embedding": lambda ids: embedding(ids),
        "GPT.forward": lambda ids: gpt(ids),
        "GPT.forward targets": lambda ids: gpt(SRC, ids),
        "GPT.generate": lambda ids: gpt.generate(ids, max_new_tokens=2),
        "Seq2Seq.forward src": lambda ids: seq2seq(ids, LENGTHS, TGT),
        "Seq2Seq.forward tgt_in": lambda ids: seq2seq(SRC, LENGTHS, ids),
        "Seq2Seq.loss": lambda ids: seq2seq.loss(seq2seq(SRC, LENGTHS, TGT), ids),
        "Seq2Seq.generate": lambda ids: seq2seq.generate(ids, max_new_tokens=2),
        "CharTokenizer.decode": lambda ids: CharTokenizer.from_text("abcdefghijk").decode(ids[0]),
        "CharTokenizer.from_chars decode": lambda ids: CharTokenizer.from_chars("abcd").decode(ids[0]),
    }


ENTRY_POINTS = ["Embedding", "GPT.forward", "GPT.forward targets", "GPT.generate", "Seq2Seq.forward src",
                "Seq2Seq.forward tgt_in", "Seq2Seq.loss", "Seq2Seq.generate", "CharTokenizer.decode",
                "CharTokenizer.from_chars decode"]


# ----- token ids -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_float_token_ids_are_refused_naming_the_dtype(name, gpt, seq2seq):
    # TypeError is the rule for a wrong dtype (nn, functional, tokenizers); the models raise ValueError
    with pytest.raises((TypeError, ValueError), match="float64"):
        entry_points(gpt, seq2seq)[name](np.array([[1.0, 2.0, 3.0]]))


@pytest.mark.parametrize("bad", [-1, 99])
@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_token_ids_out_of_range_are_refused_naming_the_id(name, bad, gpt, seq2seq):
    with pytest.raises((ValueError, IndexError), match=rf"(?<!\d){bad}(?!\d)"):
        entry_points(gpt, seq2seq)[name](np.array([[3, 4, bad]]))


@pytest.mark.parametrize("call, argument", [
    (lambda m: m(np.array([[3, 4, 99]]), LENGTHS, TGT), "src"),
    (lambda m: m(SRC, LENGTHS, np.array([[1, 99, 4]])), "tgt_in"),
    (lambda m: m.generate(np.array([[3, 99]]), max_new_tokens=2), "input_ids"),
])
def test_seq2seq_id_errors_name_the_argument(seq2seq, call, argument):
    with pytest.raises(ValueError, match=argument):
        call(seq2seq)


@pytest.mark.parametrize("family", ["gpt", "seq2seq"])
def test_generate_accepts_a_tensor_of_ids(family, gpt, seq2seq):
    model = gpt if family == "gpt" else seq2seq
    assert np.asarray(mg.tensor(SRC)).dtype == np.int64
    np.testing.assert_array_equal(model.generate(mg.tensor(SRC), max_new_tokens=3),
                                  model.generate(SRC, max_new_tokens=3))


# ----- masks and lengths ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family, mask", [("gpt", [[2, 1, 1]]), ("gpt", [[-1, 1, 1]]), ("gpt", [[0.5, 1, 1]]),
                                          ("seq2seq", [[1, 1, 2]])])
def test_attention_mask_values_must_be_zero_or_one(family, mask, gpt, seq2seq):
    model = gpt if family == "gpt" else seq2seq
    with pytest.raises(ValueError, match="attention_mask"):
        model.generate(SRC, attention_mask=np.array(mask), max_new_tokens=2)


def test_gpt_prompt_without_a_real_token_is_refused(gpt):
    with pytest.raises(ValueError, match="attention_mask|empty"):
        gpt.generate(np.array([[1, 2]]), attention_mask=np.array([[0, 0]]), max_new_tokens=2)


def test_gpt_right_padded_prompt_is_refused_or_decoded_as_alone(gpt):
    alone = gpt.generate(np.array([[1, 2]]), max_new_tokens=4)
    try:
        padded = gpt.generate(np.array([[1, 2, 0]]), attention_mask=np.array([[1, 1, 0]]), max_new_tokens=4)
    except ValueError as e:
        assert "attention_mask" in str(e)
        return
    np.testing.assert_array_equal(padded[0, 3:], alone[0, 2:])


@pytest.mark.parametrize("position_ids", [np.array([[0, 1, 16]]), np.array([[0, 1]])])
def test_gpt_position_ids_are_checked(gpt, position_ids):
    with pytest.raises(ValueError, match="position_ids"):
        gpt(SRC, position_ids=position_ids)


# ----- layer input widths --------------------------------------------------------------------------------
def test_width_errors_name_the_layer_inside_containers():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"Linear: input of shape \(2, 3\) must have 4 features"):
        model(mg.zeros(2, 4))
    with pytest.raises(ValueError, match=r"Linear: input of shape \(5, 6\) must have 4 features"):
        nn.MLP(4, 8)(mg.zeros(5, 6))
    with pytest.raises(ValueError, match=r"GRUCell: input of shape \(2, 5\) must have 3 features"):
        nn.GRUCell(3, 4)(mg.zeros(2, 5))


@pytest.mark.parametrize("build, argument", [
    (lambda: nn.Linear(-1, 3), "in_features"), (lambda: nn.Linear(4.5, 3), "in_features"),
    (lambda: nn.Embedding(-1, 3), "num_embeddings"), (lambda: nn.LayerNorm(-2), "normalized_shape"),
    (lambda: nn.GRU(3, -4), "hidden_size"),
])
def test_layer_sizes_are_checked(build, argument):
    with pytest.raises((ValueError, TypeError), match=argument):
        build()


# ----- generation arguments (Hugging Face's rules) -------------------------------------------------------
@pytest.mark.parametrize("kwargs, words", [
    (dict(num_return_sequences=3, num_beams=2), ["num_return_sequences", "3", "num_beams", "2"]),
    (dict(num_return_sequences=2), ["num_return_sequences", "2"]),
    (dict(do_sample=True, top_p=1.5), ["top_p", "1.5", "(0, 1]"]),
    (dict(do_sample=True, top_p=0.0), ["top_p", "0.0"]),
    (dict(do_sample=True, temperature=0.0), ["temperature", "0.0", "> 0"]),
    (dict(do_sample=True, temperature=-0.5), ["temperature", "-0.5"]),
    (dict(max_new_tokens=True), ["max_new_tokens", "True", "integer"]),
    (dict(num_beams=2.0), ["num_beams", "2.0", "integer"]),
    (dict(top_k=3.5, do_sample=True), ["top_k", "3.5"]),
    (dict(eos_token_id=[2, -1]), ["eos_token_id", "-1"]),
])
def test_generate_errors_name_the_argument_and_the_value(gpt, kwargs, words):
    with pytest.raises(ValueError) as info:
        gpt.generate(SRC, **{"max_new_tokens": 2, **kwargs})
    assert all(w in str(info.value) for w in words), str(info.value)


def test_max_new_tokens_wins_over_max_length_as_in_hugging_face(gpt, seq2seq):
    # max_length alone would leave no room after the 3-token prompt; max_new_tokens overrides it
    assert gpt.generate(SRC, max_length=2, max_new_tokens=2).shape == (1, 5)
    assert seq2seq.generate(SRC, max_length=1, max_new_tokens=2, eos_token_id=None).shape == (1, 3)
    # sampling-only arguments are ignored by greedy search, as in Hugging Face
    np.testing.assert_array_equal(gpt.generate(SRC, max_new_tokens=3, temperature=-1.0, top_k=0),
                                  gpt.generate(SRC, max_new_tokens=3))


@pytest.mark.parametrize("call", [
    lambda m: m.generate(SRC, max_new_tokens=2, do_sample=True, seed="x"),
    lambda m: m.generate(SRC, max_new_tokens=2, do_sample=True, seed=2.5),
    lambda m: mg.manual_seed("x"),
    lambda m: mg.manual_seed(True),
])
def test_seeds_that_are_not_ints_are_refused_naming_the_seed(gpt, call):
    with pytest.raises(TypeError, match="seed"):
        call(gpt)


def test_negative_seeds_are_accepted_as_in_pytorch(gpt):
    # -1 is the 64-bit pattern of 2**64 - 1, as torch.manual_seed reads it
    sample = dict(max_new_tokens=4, do_sample=True, top_k=0)
    np.testing.assert_array_equal(gpt.generate(SRC, seed=-1, **sample), gpt.generate(SRC, seed=2**64 - 1, **sample))
    assert mg.manual_seed(-1).random() == mg.manual_seed(2**64 - 1).random()
    mg.manual_seed(0)


# ----- state dicts -----------------------------------------------------------------------------------------
def test_load_state_dict_needs_a_mapping():
    with pytest.raises(TypeError, match="state_dict"):
        nn.Linear(4, 3).load_state_dict([("weight", np.zeros((3, 4))), ("bias", np.zeros(3))])


@pytest.mark.parametrize("bias", [np.array(["a", "b", "c"]), np.array([None, None, None], dtype=object)])
def test_load_state_dict_refuses_non_numeric_values_and_changes_nothing(bias):
    layer = nn.Linear(4, 3)
    before = layer.state_dict()
    with pytest.raises((ValueError, TypeError), match="bias"):
        layer.load_state_dict({"weight": np.ones((3, 4)), "bias": bias})
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


# ----- tokenizers -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
@pytest.mark.parametrize("ids", [[True], None])
def test_decode_refuses_bools_and_none(tokenizer, ids):
    tok = (CharTokenizer.from_text("abc") if tokenizer == "char"
           else ByteLevelBPETokenizer.train(["abc abc"], vocab_size=257))
    with pytest.raises(TypeError, match="ids"):
        tok.decode(ids)


# ----- the command line -------------------------------------------------------------------------------------
def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize("argv, words", [
    (["generate", "--checkpoint", "{missing}", "--prompt", "hi"], ["config.json", "not found"]),
    (["translate", "--checkpoint", "{missing}", "abc"], ["no checkpoint directory", "{missing}"]),
    (["chat", "--checkpoint", "{missing}"], ["config.json", "not found"]),
    (["train", "seq2seq", "--out", "{out}", "--max-steps", "0", "--max-time", "0"], ["max_steps", "max_time"]),
    (["train", "seq2seq", "--out", "{out}", "--max-steps", "1", "--hidden-size", "7"], ["hidden_size", "7"]),
    (["train", "gpt", "--text", "{text}", "--out", "{out}", "--n-head", "3", "--n-embd", "16"], ["n_head", "3"]),
    (["demo", "--max-time", "-1"], ["--max-time", "-1"]),
])
def test_command_errors_exit_2_with_a_message(tmp_path, capsys, argv, words):
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question. " * 20, encoding="utf-8")
    paths = {"missing": str(tmp_path / "missing"), "out": str(tmp_path / "out"), "text": str(text)}
    code, err = run(capsys, *[a.format(**paths) for a in argv])
    assert code == 2 and err.startswith("minigen ") and "error:" in err
    assert all(w.format(**paths) in err for w in words), err


def test_generate_command_refuses_an_empty_prompt(tmp_path, capsys):
    from minigen.tokenizers import CharTokenizer as Char
    mg.manual_seed(0)
    GPT(GPTConfig(vocab_size=3, block_size=8, n_layer=1, n_head=1, n_embd=4)).save_pretrained(tmp_path)
    Char.from_text("abc").save_pretrained(tmp_path)
    code, err = run(capsys, "generate", "--checkpoint", str(tmp_path), "--prompt", "")
    assert code == 2 and "--prompt" in err


def test_argument_type_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "gpt", "--text", "t.txt", "--block-size", "abc"])
    assert info.value.code == 2 and "--block-size" in capsys.readouterr().err


def test_console_entry_point_reports_errors_without_a_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "minigen", "train", "gpt", "--text", str(tmp_path / "none.txt"),
                           "--out", str(tmp_path / "out")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "none.txt" in proc.stderr and "--text" in proc.stderr


def test_text_that_is_not_utf8_names_the_file(tmp_path, capsys):
    path = tmp_path / "binary.bin"
    path.write_bytes(b"\xff\xfe\x00binary\x80" * 50)
    code, err = run(capsys, "train", "gpt", "--text", str(path), "--out", str(tmp_path / "out"))
    assert code == 2 and "binary.bin" in err


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    text, out = tmp_path / "text.txt", tmp_path / "taken"
    text.write_text("to be or not to be, that is the question. " * 20, encoding="utf-8")
    out.write_text("not a directory")
    code, err = run(capsys, "train", "gpt", "--text", str(text), "--out", str(out), "--n-layer", "1",
                    "--n-head", "1", "--n-embd", "4", "--block-size", "8", "--max-iters", "1", "--eval-iters", "1")
    assert code == 2 and "--out" in err


def test_init_from_error_names_the_option(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question. " * 20, encoding="utf-8")
    code, err = run(capsys, "train", "gpt", "--text", str(text), "--out", str(tmp_path / "out"),
                    "--init-from", str(tmp_path / "missing"))
    assert code == 2 and "--init-from" in err


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_seq2seq_command_reports_a_nan_loss_without_a_traceback(tmp_path, capsys):
    code, err = run(capsys, "train", "seq2seq", "--task", "reverse", "--out", str(tmp_path / "out"),
                    "--max-steps", "40", "--max-time", "0", "--n-train", "64", "--n-valid", "8", "--n-test", "8",
                    "--hidden-size", "8", "--embedding-size", "4", "--batch-size", "8", "--learning-rate", "1e12",
                    "--min-lr", "1e12", "--warmup-steps", "0", "--grad-clip", "0", "--eval-interval", "1000")
    assert code == 1 and "at step" in err and "nan" in err


def test_train_without_a_family_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train"])
    assert info.value.code == 2 and "seq2seq" in capsys.readouterr().err


def test_file_system_errors_of_a_command_exit_2_naming_the_path(tmp_path, capsys):
    # --out below a regular file: os.makedirs raises an OSError (NotADirectoryError / FileExistsError)
    (tmp_path / "file").write_text("not a directory")
    out = tmp_path / "file" / "out"
    code, err = run(capsys, "train", "seq2seq", "--task", "reverse", "--out", str(out), "--max-steps", "1",
                    "--max-time", "0", "--n-train", "16", "--n-valid", "4", "--n-test", "4", "--hidden-size", "4",
                    "--embedding-size", "2", "--batch-size", "4")
    assert code == 2 and err.startswith("minigen train seq2seq: error:") and str(tmp_path / "file") in err, err


def test_from_pretrained_of_a_missing_directory_names_it(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        Seq2Seq.from_pretrained(missing)


# ----- everything else ---------------------------------------------------------------------------------------
def test_gpt_needs_a_config():
    with pytest.raises(TypeError, match="GPTConfig"):
        GPT({"vocab_size": 3})


@pytest.mark.parametrize("call, dim", [(lambda t: t.transpose(0, 5), 5), (lambda t: t.unsqueeze(3), 3),
                                       (lambda t: t.unsqueeze(-4), -4), (lambda t: t.squeeze(5), 5),
                                       (lambda t: t.permute(0, 2), 2), (lambda t: t.flatten(-3), -3)])
def test_dims_out_of_range_raise_index_error_naming_the_dim(call, dim):
    with pytest.raises(IndexError, match=rf"dim {dim} out of range for a tensor with 2 dimensions"):
        call(mg.zeros(2, 1))


def test_dims_at_the_ends_of_the_range_still_work():
    t = mg.zeros(2, 1)
    assert t.unsqueeze(2).shape == (2, 1, 1) and t.unsqueeze(-3).shape == (1, 2, 1)
    assert t.squeeze(-1).shape == (2,) and t.transpose(-2, 1).shape == (1, 2) and t.permute(-1, 0).shape == (1, 2)


def test_tensor_of_strings_is_refused():
    with pytest.raises(TypeError, match="str|<U1"):
        mg.tensor(["a", "b"])


@pytest.mark.parametrize("call, argument", [
    (lambda m: GPTConfig(dropout="a"), "dropout"),
    (lambda m: m(SRC, LENGTHS, TGT, teacher_forcing_ratio="a"), "teacher_forcing_ratio"),
    (lambda m: nn.utils.clip_grad_norm_([nn.Parameter(np.ones(2))], 1.0, norm_type="x"), "norm_type"),
    (lambda m: nn.Dropout("a"), "p"),
    (lambda m: nn.GRU(3, 4, dropout="a"), "dropout"),
])
def test_numeric_options_of_the_wrong_type_name_the_argument(seq2seq, call, argument):
    with pytest.raises((TypeError, ValueError), match=argument):
        call(seq2seq)
