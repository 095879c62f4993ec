"""What the experiments share: the two model families behind one interface, training until the validation
metric stops improving, exact match by bucket, and writing results with the machine and the commit.

A learner wraps one model with its batches and its decoding:

    learner = gpt_learner(data, n_layer=2, n_head=4, n_embd=64, seed=0)   # or seq2seq_learner(...)
    record = train_until_plateau(learner, data.valid, Plateau(eval_interval=250, patience=4, max_steps=8000))
    predictions = learner.predict([source for source, _ in data.test])
"""
import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

# Run from a checkout without installing: the repository root goes first on the path.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from minigen import kernels, optim, random  # noqa: E402
from minigen.data import Seq2SeqBatches, exact_match  # noqa: E402
from minigen.models.gpt import GPT, GPTConfig  # noqa: E402
from minigen.models.seq2seq import Seq2Seq, Seq2SeqConfig  # noqa: E402
from minigen.optim import adamw_param_groups  # noqa: E402
from minigen.optim.lr_scheduler import get_lr_warmup_cosine  # noqa: E402
from minigen.training.pairs_gpt import (EOS_TOKEN, complete, encode_pair, length_bucketed_batches,  # noqa: E402
                                        pairs_batch, pairs_tokenizer)
from minigen.training.seq2seq import translate_pairs  # noqa: E402
from minigen.training.loop import Patience, fit  # noqa: E402
from minigen.training.progress import Progress  # noqa: E402
from minigen.training.step import evaluating  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclass
class Learner:
    """One model with what training and testing it needs: `batch_loss()` -> the loss of the next training
    batch, `predict(sources)` -> greedy (or beam search) outputs."""
    name: str
    model: object
    batch_loss: object
    predict: object

    def parameters(self):
        return self.model.num_parameters()


def seq2seq_learner(data, attention, embedding_size, hidden_size, seed=0, batch_size=32, max_length=None):
    """A GRU encoder-decoder (bidirectional encoder) on `data`, attention 'none', 'bahdanau', ..."""
    random.manual_seed(seed)
    tgt = data.tgt_vocab
    model = Seq2Seq(Seq2SeqConfig(len(data.src_vocab), len(tgt), embedding_size=embedding_size,
                                  hidden_size=hidden_size, attention=attention, pad_id=tgt.pad_id,
                                  bos_id=tgt.bos_id, eos_id=tgt.eos_id), data.src_vocab, tgt)
    stream = Seq2SeqBatches(data.train, data.src_vocab, tgt, batch_size=batch_size, seed=seed, bucket=True).forever()
    max_length = max_length or max(len(t) for _, t in data.train + data.valid + data.test) + 2  # bos, eos

    def batch_loss():
        batch = next(stream)
        return model.loss(model(batch["src"], batch["src_lengths"], batch["tgt_in"]), batch["tgt_out"])

    def predict(sources, num_beams=1):
        return translate_pairs(model, [(s, "") for s in sources], num_beams=num_beams, max_length=max_length)
    return Learner(f"Seq2Seq, attention {attention}", model, batch_loss, predict)


def gpt_learner(data, n_layer, n_head, n_embd, seed=0, batch_size=32):
    """A character GPT reading ``source <sep>`` and completing ``target <eos>`` (loss on the completion)."""
    tokenizer = pairs_tokenizer(data)
    eos = tokenizer.token_to_id(EOS_TOKEN)
    train = [encode_pair(tokenizer, s, t) for s, t in data.train]
    longest = max(len(s) + len(t) for s, t in data.train + data.valid + data.test)
    max_new = max(len(t) for _, t in data.train + data.valid + data.test) + 1
    random.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=longest + 2, n_layer=n_layer, n_head=n_head,
                          n_embd=n_embd, bias=False, eos_token_id=eos))
    rng, lengths, batches = np.random.default_rng(seed), [len(ids) for ids, _ in train], []

    def batch_loss():
        if not batches:
            batches.extend(length_bucketed_batches(lengths, batch_size, rng))
        x, y = pairs_batch([train[i] for i in batches.pop()], eos)
        return model(x, y)[1]

    def predict(sources, num_beams=1):
        return complete(model, tokenizer, list(sources), max_new, num_beams=num_beams)[0]
    return Learner("GPT", model, batch_loss, predict)


@dataclass
class Plateau:
    """Train until validation exact match has not improved for `patience` evaluations (or is perfect), at
    most `max_steps` steps. AdamW, warm-up then cosine decay to `min_lr` over `max_steps`."""
    eval_interval: int = 250
    patience: int = 4
    max_steps: int = 10000
    learning_rate: float = 3e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    n_valid: int = 300
    target: float = 0.9  # the accuracy whose first crossing is reported in steps and seconds


def train_until_plateau(learner, valid, plateau, log=print):
    """Train `learner`, validating on `valid` pairs; the best model is kept. Returns a record with the
    steps, the training seconds (validation excluded) in CPU time and in wall time, the wall seconds with
    validation, the best valid exact match, the step and training CPU seconds at which it first reached
    `plateau.target`, and the history. CPU time is the compute a run costs when it runs on one thread
    (NUMBA_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1), without the waits for a core shared with other jobs."""
    log = log or (lambda *args: None)
    model, params = learner.model, list(learner.model.parameters())
    optimizer = optim.AdamW(adamw_param_groups(model, plateau.weight_decay), lr=plateau.learning_rate,
                            betas=(0.9, 0.99))
    valid = valid[:plateau.n_valid]
    patience = Patience(plateau.patience, higher_is_better=True)
    history, kept, clock = [], {}, {"train": 0.0, "cpu": 0.0}
    start = time.perf_counter()

    def evaluate(step):
        with evaluating(model):
            accuracy = exact_match(learner.predict([s for s, _ in valid]), [t for _, t in valid])
        history.append({"step": step, "train_seconds": round(clock["train"], 2),
                        "train_cpu_seconds": round(clock["cpu"], 2), "valid_exact_match": accuracy})
        log(f"{learner.name} step {step}: valid exact match {accuracy:.3f} ({clock['cpu']:.0f} CPU s, "
            f"{clock['train']:.0f} s training)")
        stop = patience.update(step, accuracy)
        if patience.best_step == step:
            kept["state"] = model.state_dict()
        return stop or accuracy >= 1.0

    def batch_loss(step):  # the step's clock starts here and stops in on_step, after the update
        clock["tick"] = time.perf_counter(), time.process_time()
        return learner.batch_loss(), 0, {}

    def on_step(step, loss_value):
        tick, cpu_tick = clock["tick"]
        clock["train"] += time.perf_counter() - tick
        clock["cpu"] += time.process_time() - cpu_tick

    def schedule(step):
        return get_lr_warmup_cosine(step, plateau.learning_rate, plateau.warmup_steps, plateau.max_steps,
                                    plateau.min_lr)
    steps = fit(optimizer, params, Progress(total_steps=plateau.max_steps, stream=io.StringIO()), batch_loss,
                schedule, evaluate, plateau.eval_interval, on_step=on_step)
    model.load_state_dict(kept["state"])
    model.eval()
    reached = next((h for h in history if h["valid_exact_match"] >= plateau.target), None)
    return {"steps": steps, "train_seconds": round(clock["train"], 1), "train_cpu_seconds": round(clock["cpu"], 1),
            "wall_seconds": round(time.perf_counter() - start, 1), "best_valid_exact_match": patience.best,
            "stopped_by": "patience" if patience.waited >= plateau.patience else
            "perfect" if patience.best >= 1.0 else "step cap",
            "steps_to_target": reached and reached["step"], "cpu_seconds_to_target": reached and reached["train_cpu_seconds"],
            "history": history}


def bucket_exact_match(predictions, pairs, buckets, key):
    """{'low-high': exact match} of predictions against the targets of `pairs`, grouped by key(source)."""
    result = {}
    for low, high in buckets:
        index = [i for i, (source, _) in enumerate(pairs) if low <= key(source) <= high]
        result[f"{low}-{high}"] = exact_match([predictions[i] for i in index], [pairs[i][1] for i in index])
    return result


def mean_spread(values):
    """'mean ± half the range' of a list of fractions, as percentages (one value: just the value)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1%}"
    return f"{np.mean(values):.1%} ± {(max(values) - min(values)) / 2:.1%}"


def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# the code a run ran is the checkout as it started (a long run may end after later commits)
COMMIT_AT_START = _git("rev-parse", "--short", "HEAD")
CHANGES_AT_START = bool(_git("status", "--porcelain", "--untracked-files=no"))


def machine():
    """Where and when a result was measured: CPU, cores, load, Python, NumPy, backend, the git commit at start."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "cpu": cpu, "cores": os.cpu_count(),
            "load_average": [round(x, 1) for x in os.getloadavg()], "python": platform.python_version(),
            "numpy": np.__version__, "backend": kernels.get_backend(), "commit": COMMIT_AT_START,
            "uncommitted_changes": CHANGES_AT_START,
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default")}


def curves_by(rows, name, x, y):
    """{name(row): (row[x] values, row[y] values)} over result rows, for plots.save_loss_curves."""
    curves = {}
    for row in rows:
        xs, ys = curves.setdefault(name(row), ([], []))
        xs.append(row[x])
        ys.append(row[y])
    return curves


def markdown_table(header, rows):
    """A markdown table: the first column left-aligned, the others right-aligned."""
    return "\n".join(["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
                     + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def write_results(out, name, text, payload):
    """Print `text` (markdown tables) followed by the machine line, and write it to OUT/NAME.md and
    `payload` with the machine record to OUT/NAME.json. Returns the machine record."""
    where = machine()
    text = (f"{text}\n\nMeasured {where['date_utc']} UTC on {where['cpu']} ({where['cores']} cores, load average "
            f"{where['load_average'][0]}), Python {where['python']}, NumPy {where['numpy']}, backend "
            f"{where['backend']}, BLAS threads {where['blas_threads']}, commit {where['commit']}"
            f"{' with uncommitted changes' if where['uncommitted_changes'] else ''}.\n")
    print("\n" + text)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(out, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump({**payload, "machine": where}, f, indent=1, default=float)
    return where


def corpus_main(run, description, checkpoints_help, argv=None):
    """The command line of an experiment that trains on a text: --text, --quick, --out and --checkpoints,
    passed to run(text, quick, out, checkpoints)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--text", default=None, help="the corpus, e.g. ../shared/data/tinyshakespeare.txt")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds with tiny models")
    parser.add_argument("--out", default=RESULTS, help="directory for the table, json and plot (default: results/)")
    parser.add_argument("--checkpoints", default=None, help=checkpoints_help)
    args = parser.parse_args(argv)
    return run(args.text, args.quick, args.out, args.checkpoints)
