"""Greedy decoding against beam search on trained Seq2Seq models: exact match and decoding speed.

GRU + Bahdanau Seq2Seq models are trained on dates (for the full budget and for an eighth of it, to
see a less sure model) and on addition; each test set is then decoded with 1, 2, 4 and 8 beams (1 beam
is greedy search). Beam search keeps the best few partial outputs at each step: it pays when the
greedy choice of one character dooms the rest, and costs about one decoder step per beam. Reported:
exact match and sequences decoded per second, as a markdown table and plots.

    python examples/experiments/beam_search.py [--quick] [--out DIR] [--max-time SECONDS]
"""
import argparse
import json
import os
import sys
import time

# Run from a checkout without installing: the repository root goes first on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from minigen import plots  # noqa: E402
from minigen.data import exact_match, load_task  # noqa: E402
from minigen.training.seq2seq import train_seq2seq, translate_pairs  # noqa: E402

BEAMS = (1, 2, 4, 8)
RUNS = (("dates", 1.0), ("dates", 0.125), ("addition", 1.0))  # (task, fraction of the training budget)
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

SETTINGS = {
    "full": {"splits": dict(n_train=20000, n_valid=500, n_test=1000), "max_time": 150.0,
             "model": dict(embedding_size=32, hidden_size=128, eval_interval=250)},
    "quick": {"splits": dict(n_train=300, n_valid=20, n_test=40), "max_time": 10.0,
              "model": dict(embedding_size=8, hidden_size=16, eval_interval=10, max_steps=10)},
}


def run(quick=False, out=RESULTS, max_time=None, seed=0):
    """Train one model per run, decode its test set with each beam size; print and save the results."""
    settings = SETTINGS["quick" if quick else "full"]
    max_time = max_time or settings["max_time"]
    rows = []
    for task, fraction in RUNS:
        label = f"{task}, {fraction * max_time:.0f} s of training"
        print(f"\n== {label} ==")
        data = load_task(task, seed=seed, **settings["splits"])
        max_length = max(len(t) for _, t in data.train + data.valid + data.test) + 2  # bos + target + eos
        model, metrics = train_seq2seq(task, max_time=fraction * max_time, seed=seed, max_length=max_length,
                                       **settings["splits"], **settings["model"])
        references = [t for _, t in data.test]
        for beams in BEAMS:
            start = time.perf_counter()
            predictions = translate_pairs(model, data.test, num_beams=beams, max_length=max_length)
            seconds = time.perf_counter() - start
            rows.append({"model": label, "task": task, "parameters": metrics["parameters"],
                         "train_steps": metrics["steps"], "beams": beams,
                         "exact_match": exact_match(predictions, references),
                         "sequences_per_second": len(references) / seconds})
            print(f"{beams} beam(s): exact match {rows[-1]['exact_match']:.1%}, "
                  f"{rows[-1]['sequences_per_second']:,.0f} sequences/s")

    greedy = {r["model"]: r["sequences_per_second"] for r in rows if r["beams"] == 1}
    table = "\n".join(["| model | training steps | beams | exact match | sequences/s | time vs greedy |",
                       "|---|---:|---:|---:|---:|---:|"]
                      + [f"| {r['model']} | {r['train_steps']:,} | {r['beams']} | {r['exact_match']:.1%} | "
                         f"{r['sequences_per_second']:,.0f} | {greedy[r['model']] / r['sequences_per_second']:.1f}x |"
                         for r in rows])
    print(f"\nGreedy against beam search ({len(data.test)} test examples per task):\n{table}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "beam_search.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "beam_search.json"), "w", encoding="utf-8") as f:
        json.dump({"max_time": max_time, "quick": quick, "seed": seed, "rows": rows}, f, indent=1)
    paths = [plots.save_loss_curves({label: (list(BEAMS), [r[key] for r in rows if r["model"] == label])
                                     for label in greedy}, os.path.join(out, name), title=title,
                                    xlabel="beams", ylabel=ylabel, log_y=key == "sequences_per_second")
             for key, name, title, ylabel in (
                 ("exact_match", "beam_search.png", "Seq2Seq: exact match by beam size", "test exact match"),
                 ("sequences_per_second", "beam_search_speed.png", "Seq2Seq: decoding speed by beam size",
                  "sequences/s"))]
    print(f"wrote {', '.join(os.path.basename(p) for p in paths)}, beam_search.md and beam_search.json to {out}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds with tiny models")
    parser.add_argument("--out", default=RESULTS, help="directory for the table and plots (default: results/)")
    parser.add_argument("--max-time", type=float, default=None, help="training seconds per model (default 150)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run(args.quick, args.out, args.max_time, args.seed)


if __name__ == "__main__":
    main()
