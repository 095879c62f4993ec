"""Reliability and safety across the package: no unsafe deserialization anywhere in the source, pickle
checkpoints refused, bounded memory over a few hundred training steps, no autograd graph outliving its
use, anomaly mode naming the op behind a NaN, and the Seq2Seq trainer stopping on a NaN loss."""
import ast
import gc
import pathlib
import re
import tracemalloc
import weakref

import numpy as np
import pytest

import minigen as mg
from minigen import optim
from minigen.autograd import Function
from minigen.data import random_text_batch
from minigen.models.gpt import GPT, GPTConfig
from minigen.nn.utils import clip_grad_norm_

REPO = pathlib.Path(__file__).resolve().parent.parent
# Where users' files are read or code that users copy lives: the package, its examples and benchmarks.
SCANNED_DIRS = ("minigen", "examples", "benchmarks")


# ----- 1. the source never deserializes with pickle or runs strings as code -------------------------
BANNED_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}
BANNED_BUILTINS = {"eval", "exec", "compile"}
BANNED_ATTRIBUTES = {"read_pickle", "to_pickle"}  # pandas' pickle readers and writers


def _dotted(node):
    """'np.load' for the expression np.load, None for anything that is not a chain of names."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id] + parts[::-1])


def unsafe_uses(source, filename="<source>"):
    """Lines of `source` that could deserialize untrusted data with pickle or execute a string, as
    'file:line: what'. Flags imports of pickle-like modules, any reference to numpy's load except a call
    with allow_pickle=False, any torch.load, and the builtins eval / exec / compile."""
    tree = ast.parse(source, filename)
    problems = []

    def flag(node, what):
        problems.append(f"{filename}:{node.lineno}: {what}")

    numpy_loads, torch_loads = {"numpy.load"}, {"torch.load"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in BANNED_MODULES:
                    flag(node, f"import {alias.name}")
                if alias.name == "numpy":
                    numpy_loads.add(f"{alias.asname or 'numpy'}.load")
                if alias.name == "torch":
                    torch_loads.add(f"{alias.asname or 'torch'}.load")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            for alias in node.names:
                if module.split(".")[0] in BANNED_MODULES or alias.name in BANNED_MODULES:
                    flag(node, f"from {module} import {alias.name}")
                elif module in ("numpy", "torch") and alias.name == "load":
                    flag(node, f"from {module} import load")

    safe_loads = set()  # the func nodes of np.load(..., allow_pickle=False)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in numpy_loads and any(k.arg == "allow_pickle" and isinstance(k.value, ast.Constant)
                                       and k.value.value is False for k in node.keywords):
            safe_loads.add(id(node.func))
        if name in ("__import__", "importlib.import_module") and node.args \
                and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).split(".")[0] in BANNED_MODULES:
            flag(node, f"{name}({node.args[0].value!r})")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = _dotted(node)
            if name in numpy_loads and id(node) not in safe_loads:
                flag(node, f"{name} without allow_pickle=False")
            elif name in torch_loads:
                flag(node, name)
            elif node.attr in BANNED_ATTRIBUTES:
                flag(node, f".{node.attr}")
            elif node.attr in BANNED_BUILTINS and _dotted(node.value) in ("builtins", "__builtins__"):
                flag(node, name)
        elif isinstance(node, ast.Name) and node.id in BANNED_BUILTINS:
            flag(node, f"builtin {node.id}")
    return problems


def test_source_has_no_unsafe_deserialization_or_eval():
    files = [p for d in SCANNED_DIRS for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 20, "the scan found too few files: is REPO right?"
    problems = []
    for path in files:
        problems += unsafe_uses(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert not problems, "unsafe loading or code execution:\n" + "\n".join(problems)


@pytest.mark.parametrize("snippet", [
    "import pickle", "import pickle as p", "from pickle import loads", "from _pickle import Unpickler",
    "import cPickle", "import dill", "import joblib", "import shelve", "import marshal", "import os, cloudpickle",
    "from multiprocessing.reduction import pickle", "x = __import__('pickle')", "importlib.import_module('dill')",
    "import numpy as np\nnp.load(f)", "import numpy as np\nnp.load(f, allow_pickle=True)",
    "import numpy\nnumpy.load(f, allow_pickle=flag)", "import numpy as xp\nread = xp.load", "from numpy import load",
    "import torch\ntorch.load(f)", "import torch as T\nT.load(f, weights_only=True)", "from torch import load",
    "eval(text)", "exec(code)", "run = eval", "compile(src, 'f', 'exec')", "import builtins\nbuiltins.exec(s)",
    "frame.read_pickle(path)",
])
def test_scanner_flags_each_unsafe_pattern(snippet):
    assert unsafe_uses(snippet)


@pytest.mark.parametrize("snippet", [
    "import numpy as np\nnp.load(f, allow_pickle=False)", "model.eval()", "import re\nre.compile('a+')",
    "import json\njson.loads(s)", "kind = 'pickle'", "import numpy as np\nnp.save(f, a)", "from . import io",
    "def f(allow_pickle=False):\n    return allow_pickle", "load = 3\nload(1)",
])
def test_scanner_accepts_safe_code(snippet):
    assert unsafe_uses(snippet) == []


def test_pickle_checkpoints_are_refused_without_being_opened(tmp_path):
    """A directory holding only PyTorch's pickled pytorch_model.bin is refused with FileNotFoundError naming
    the file expected; nothing unpickles it (its payload would create a marker file)."""
    from minigen.io import load_checkpoint
    from minigen.models import Seq2Seq
    from minigen.tokenizers import load_tokenizer
    marker = tmp_path / "unpickled"
    # protocol-0 pickle calling builtins.open(marker, 'w'), written by hand (the tests do not import pickle)
    payload = f"c__builtin__\nopen\n(S'{marker}'\nS'w'\ntR.".encode()
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "pytorch_model.bin").write_bytes(payload)
    (directory / "tokenizer.pkl").write_bytes(payload)
    (directory / "config.json").write_text('{"model_type": "gpt2", "vocab_size": 5, "n_positions": 4, '
                                           '"n_layer": 1, "n_head": 1, "n_embd": 4}', encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        GPT.from_pretrained(directory)
    with pytest.raises(FileNotFoundError, match="trainer_state.json|model.safetensors"):
        Seq2Seq.from_pretrained(directory)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(directory)
    with pytest.raises(FileNotFoundError, match="merges.txt|CharTokenizer"):
        load_tokenizer(directory)
    assert not marker.exists()


# ----- 2. soak: bounded memory, no graph outliving its use --------------------------------------------
# Growth allowed between the traced size after warm-up and after the measured steps. A leak of one
# float32 (4, 16, 20) logits array per step would add 5 KiB a step, 1.2 MiB over the GPT's 250 steps.
MEMORY_TOLERANCE = 256 * 1024


def live_functions():
    """The autograd graph nodes alive now (every recorded op is one Function instance). type() rather than
    isinstance(): the latter dereferences weak proxies, and a dead one raises ReferenceError."""
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), Function))


def traced_growth(warm_up, measured):
    """Run warm_up(), then trace allocations over measured(); return the bytes still held afterwards."""
    warm_up()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        measured()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def assert_generation_keeps_no_graph(model, generate, baseline):
    """generate() (which decodes under no_grad) adds no live Function, during or after decoding."""
    seen = []
    decode_step = model.decode_step

    def counting_step(tokens, state):
        out = decode_step(tokens, state)
        seen.append(live_functions())
        return out

    model.decode_step = counting_step  # an instance attribute: generate() calls it through the protocol
    try:
        generate()
    finally:
        del model.decode_step
    assert seen and max(seen) == baseline, f"Function objects alive during generation: {seen}, before: {baseline}"
    assert live_functions() == baseline


def test_gpt_soak_memory_is_flat_and_graphs_are_freed():
    gc.collect()
    baseline = live_functions()  # graphs other tests may still hold
    mg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=16))
    optimizer = optim.AdamW(model.parameters(), lr=3e-3)
    data = np.tile(np.random.default_rng(0).permutation(20), 20)  # a cycle the model can learn
    rng = np.random.default_rng(1)
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    losses = []

    def steps(n):
        for _ in range(n):
            x, y = random_text_batch(data, 16, 4, rng)
            _, loss = model(x, y)
            optimizer.zero_grad()
            loss.backward()
            clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())

    def generations():
        model.generate(prompt, max_new_tokens=8)
        model.generate(prompt, max_new_tokens=8, num_beams=3, num_return_sequences=2)
        model.generate(prompt, max_new_tokens=8, do_sample=True, top_k=5, seed=0)

    growth = traced_growth(lambda: (steps(50), generations()), lambda: (steps(250), generations()))
    assert growth < MEMORY_TOLERANCE, f"traced memory grew by {growth} bytes over 250 steps"
    assert np.mean(losses[-20:]) < np.mean(losses[:20])  # it did train

    gc.collect()
    assert live_functions() == baseline  # backward freed every graph
    assert_generation_keeps_no_graph(model, lambda: model.generate(prompt, max_new_tokens=3, num_beams=2), baseline)
    with mg.no_grad():
        logits, _ = model(prompt)
    assert not logits.requires_grad and logits.is_leaf and live_functions() == baseline
    ref = weakref.ref(logits)
    del logits
    assert ref() is None


def test_seq2seq_soak_memory_is_flat_and_graphs_are_freed():
    seq2seq = pytest.importorskip("minigen.models.seq2seq")
    Seq2Seq, Seq2SeqConfig = seq2seq.Seq2Seq, seq2seq.Seq2SeqConfig
    gc.collect()
    baseline = live_functions()
    mg.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(12, 12, embedding_size=8, hidden_size=8, attention="bahdanau"))
    optimizer = optim.AdamW(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    src = rng.integers(3, 12, (4, 6))
    lengths = np.array([6, 5, 4, 2])
    tgt = np.concatenate([np.full((4, 1), 1), src[:, ::-1], np.full((4, 1), 2)], axis=1)
    losses = []

    def steps(n):
        for _ in range(n):
            logits = model(src, lengths, tgt[:, :-1])
            loss = model.loss(logits, tgt[:, 1:])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())

    def generations():
        model.generate(src, max_new_tokens=6)
        model.generate(src, max_new_tokens=6, num_beams=2, output_attentions=True)

    growth = traced_growth(lambda: (steps(30), generations()), lambda: (steps(150), generations()))
    assert growth < MEMORY_TOLERANCE, f"traced memory grew by {growth} bytes over 150 steps"
    assert losses[-1] < losses[0]
    gc.collect()
    assert live_functions() == baseline
    assert_generation_keeps_no_graph(model, lambda: model.generate(src, max_new_tokens=3, num_beams=2), baseline)


def test_graphs_are_freed_by_reference_counting_alone():
    """A graph dropped without backward goes away at once: no reference cycle waits for the collector."""
    from minigen.models import Seq2Seq, Seq2SeqConfig
    mg.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=2, n_head=2, n_embd=8))
    seq2seq = Seq2Seq(Seq2SeqConfig(10, 10, embedding_size=4, hidden_size=6))
    gc.collect()
    baseline = live_functions()
    gc.disable()
    try:
        logits, loss = gpt(np.array([[1, 2, 3]]), np.array([[2, 3, 4]]))
        assert live_functions() > baseline
        ref = weakref.ref(loss)
        del logits, loss
        assert ref() is None and live_functions() == baseline
        logits = seq2seq(np.array([[3, 4, 5]]), np.array([3]), np.array([[1, 3, 4]]))
        assert live_functions() > baseline
        del logits
        assert live_functions() == baseline
    finally:
        gc.enable()


# ----- 3. anomaly mode and NaN losses -----------------------------------------------------------------
def leaf(values):
    return mg.tensor(np.array(values, dtype=np.float64), requires_grad=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_anomaly_mode_names_log_at_zero():
    with mg.detect_anomaly():
        with pytest.raises(FloatingPointError, match="Log.*non-finite"):
            leaf([0.0, 2.0]).log().sum().backward()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_anomaly_mode_names_the_op_that_made_the_nan_not_a_later_one():
    """(sqrt(x) * 0).sum(): the Mul and Sum gradients are finite; sqrt's backward turns 0 / 0 into NaN."""
    x = leaf([0.0, 4.0])
    (x.sqrt() * 0.0).sum().backward()  # without the mode the NaN reaches .grad silently
    assert np.isnan(x.grad[0])
    with mg.detect_anomaly():
        with pytest.raises(FloatingPointError, match="Sqrt"):
            (leaf([0.0, 4.0]).sqrt() * 0.0).sum().backward()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_anomaly_mode_covers_the_fused_ops_of_a_model():
    """A NaN weight makes the loss NaN; the first backward to meet it (the loss's own) is named."""
    mg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=1, n_embd=4))
    model.transformer.h[0].mlp.c_fc.weight.data[0, 0] = np.nan
    with mg.detect_anomaly():
        _, loss = model(np.array([[1, 2, 3]]), np.array([[2, 3, 4]]))
        with pytest.raises(FloatingPointError, match=r"backward of (\w+) produced a non-finite gradient") as info:
            loss.backward()
    assert re.match(r"backward of (\w+)", str(info.value)).group(1) in Function.registry


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_seq2seq_training_stops_on_a_nan_loss_naming_the_step():
    from minigen.training.seq2seq import train_seq2seq
    with pytest.raises(FloatingPointError, match=r"loss became nan at step \d+"):
        train_seq2seq("reverse", max_time=0, max_steps=40, n_train=64, n_valid=8, n_test=8, hidden_size=8,
                      embedding_size=4, batch_size=8, learning_rate=1e12, min_lr=1e12, warmup_steps=0,
                      grad_clip=0, eval_interval=1000, log=lambda *a: None)
