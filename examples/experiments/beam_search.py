"""Greedy decoding against beam search: exact match and decoding speed, and the length penalty's effect.

GRU + Bahdanau Seq2Seq models (hidden 128), each test set decoded with 1, 2, 4 and 8 beams (1 beam is
greedy search), then with 4 beams and length penalties -1, 0, 1 (the default) and 2 (a finished hypothesis
scores sum_logprobs / length ** length_penalty). The models:

- dates, trained until validation exact match stops improving (a sure model of a task with one answer);
- dates, trained for 300 steps only (an undertrained, unsure model);
- addition (two operands of 1 to 4 digits), trained until validation exact match stops improving;
- ambiguous: the target is the source copied with probability 0.4, or '#' and as many random letters with
  probability 0.6. The most probable output is the copy (0.4, against at most 0.6 / 26**n for any one
  '#' string), but its first letter is less probable than '#': greedy search commits to '#', beam search
  keeps the copy alive. The test reference is the most probable output, the copy. Trained for 4,000 steps.

    python examples/experiments/beam_search.py [--quick] [--out DIR] [--seed N]
"""
import argparse
import os
import sys
import string
import time
from dataclasses import asdict, replace

import numpy as np

# common.py sits beside this script (and puts the repository root on the path)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import RESULTS, Plateau, markdown_table, seq2seq_learner, train_until_plateau, write_results  # noqa: E402
from minigen import plots  # noqa: E402
from minigen.data import TaskData, exact_match, load_task  # noqa: E402
from minigen.tokenizers import CharTokenizer  # noqa: E402

BEAMS = (1, 2, 4, 8)
LENGTH_PENALTIES = (-1.0, 0.0, 1.0, 2.0)
SETTINGS = {
    "full": {"splits": dict(n_train=20000, n_valid=200, n_test=1000), "model": dict(embedding_size=32, hidden_size=128),
             "plateau": Plateau(eval_interval=250, patience=4, max_steps=6000, n_valid=200),
             "runs": (("dates", None), ("dates", 300), ("addition", None), ("ambiguous", 4000))},
    "quick": {"splits": dict(n_train=200, n_valid=20, n_test=40), "model": dict(embedding_size=8, hidden_size=16),
              "plateau": Plateau(eval_interval=4, patience=1, max_steps=8, warmup_steps=2, n_valid=20),
              "runs": (("dates", None), ("dates", 4), ("ambiguous", 4))},
}


def ambiguous_task(n_train, n_valid, n_test, seed, copy_probability=0.4, min_len=3, max_len=10):
    """Sources of random letters; training targets the copy (probability `copy_probability`) or '#' and
    random letters; validation and test targets the most probable output, the copy."""
    rng, letters = np.random.default_rng(seed), string.ascii_lowercase
    sources, seen = [], set()
    while len(sources) < n_train + n_valid + n_test:
        source = "".join(rng.choice(list(letters), size=int(rng.integers(min_len, max_len + 1))))
        if source not in seen:
            seen.add(source)
            sources.append(source)
    train = [(s, s if rng.random() < copy_probability else "#" + "".join(rng.choice(list(letters), size=len(s))))
             for s in sources[n_test + n_valid:]]
    copies = [(s, s) for s in sources[:n_test + n_valid]]
    vocab = CharTokenizer.from_chars(letters)
    return TaskData("ambiguous", train, copies[n_test:], copies[:n_test], vocab, CharTokenizer.from_chars(letters + "#"))


def decode(model, pairs, max_length, **options):
    """Outputs of `model.translate` for every source of `pairs` (batches of 250) and the seconds taken."""
    start, outputs = time.perf_counter(), []
    for i in range(0, len(pairs), 250):
        outputs += model.translate([s for s, _ in pairs[i:i + 250]], max_length=max_length, **options)
    return outputs, time.perf_counter() - start


def run(quick=False, out=RESULTS, seed=0):
    settings = SETTINGS["quick" if quick else "full"]
    rows, penalties = [], []
    for task, fixed_steps in settings["runs"]:
        data = ambiguous_task(seed=seed, **settings["splits"]) if task == "ambiguous" else \
            load_task(task, seed=seed, **settings["splits"])
        plateau = settings["plateau"] if fixed_steps is None else \
            replace(settings["plateau"], eval_interval=fixed_steps, max_steps=fixed_steps, patience=2)
        learner = seq2seq_learner(data, "bahdanau", seed=seed, **settings["model"])
        label = f"{task}, {'until plateau' if fixed_steps is None else f'{fixed_steps:,} steps'}"
        print(f"\n== {label} ==", flush=True)
        record = train_until_plateau(learner, data.valid, plateau)
        max_length = max(len(t) for _, t in data.train + data.test) + 2  # bos + target + eos
        references = [t for _, t in data.test]
        decode(learner.model, data.test[:50], max_length)  # untimed: the kernels' first calls
        for beams in BEAMS:
            outputs, seconds = decode(learner.model, data.test, max_length, num_beams=beams)
            rows.append({"model": label, "task": task, "parameters": learner.parameters(), "train_steps": record["steps"],
                         "train_cpu_seconds": record["train_cpu_seconds"], "beams": beams,
                         "exact_match": exact_match(outputs, references), "sequences_per_second": len(outputs) / seconds})
            print(f"{beams} beam(s): exact match {rows[-1]['exact_match']:.1%}", flush=True)
        for penalty in LENGTH_PENALTIES:
            outputs, _ = decode(learner.model, data.test, max_length, num_beams=4, length_penalty=penalty)
            penalties.append({"model": label, "length_penalty": penalty, "exact_match": exact_match(outputs, references),
                              "mean_length": float(np.mean([len(o) for o in outputs])),
                              "reference_length": float(np.mean([len(r) for r in references]))})

    greedy = {r["model"]: r for r in rows if r["beams"] == 1}
    beams_table = markdown_table(
        ["model", "training steps", "training CPU s", "beams", "exact match", "vs greedy", "sequences/s", "time vs greedy"],
        [[r["model"], f"{r['train_steps']:,}", f"{r['train_cpu_seconds']:,.0f}", r["beams"], f"{r['exact_match']:.1%}",
          f"{100 * (r['exact_match'] - greedy[r['model']]['exact_match']):+.1f} pt", f"{r['sequences_per_second']:,.0f}",
          f"{greedy[r['model']]['sequences_per_second'] / r['sequences_per_second']:.1f}x"] for r in rows])
    penalty_table = markdown_table(
        ["model", "length penalty", "exact match (4 beams)", "mean output length", "mean reference length"],
        [[p["model"], f"{p['length_penalty']:g}", f"{p['exact_match']:.1%}", f"{p['mean_length']:.2f}",
          f"{p['reference_length']:.2f}"] for p in penalties])
    write_results(out, "beam_search", f"Exact match and decoding speed by beam size ({len(data.test)} test examples "
                  f"per model, length penalty 1):\n\n{beams_table}\n\nThe length penalty, 4 beams:\n\n{penalty_table}",
                  {"quick": quick, "seed": seed, "plateau": asdict(settings["plateau"]), "rows": rows,
                   "length_penalty": penalties})
    paths = [plots.save_loss_curves({label: (list(BEAMS), [r[key] for r in rows if r["model"] == label])
                                     for label in greedy}, os.path.join(out, name), title=title,
                                    xlabel="beams", ylabel=ylabel, log_y=key == "sequences_per_second")
             for key, name, title, ylabel in (
                 ("exact_match", "beam_search.png", "Seq2Seq: exact match by beam size", "test exact match"),
                 ("sequences_per_second", "beam_search_speed.png", "Seq2Seq: decoding speed by beam size",
                  "sequences/s"))]
    paths.append(plots.save_loss_curves(
        {label: (list(LENGTH_PENALTIES), [p["exact_match"] for p in penalties if p["model"] == label])
         for label in greedy}, os.path.join(out, "beam_search_length_penalty.png"),
        title="Seq2Seq, 4 beams: exact match by length penalty", xlabel="length penalty", ylabel="test exact match"))
    print(f"wrote {', '.join(os.path.basename(p) for p in paths)}, beam_search.md and beam_search.json to {out}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds with tiny models")
    parser.add_argument("--out", default=RESULTS, help="directory for the tables and plots (default: results/)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run(args.quick, args.out, args.seed)


if __name__ == "__main__":
    main()
