"""Does a fixed-size context vector forget? Exact match against source length on the reverse task.

Three models learn to reverse strings of 4 to 32 letters, each for the same time budget:

- a GRU encoder-decoder whose decoder sees the source only through the final encoder states
  (attention 'none': the whole string must fit in one vector),
- the same GRU encoder-decoder with Bahdanau attention over every encoder state,
- a GPT reading ``source <sep>`` and completing ``reversed <eos>``, with about as many parameters.

The test set is split by source length (4-8, 9-16, 17-24, 25-32) and exact match is reported per
bucket, as a markdown table and a plot.

    python examples/experiments/long_range.py [--quick] [--out DIR] [--max-time SECONDS]
"""
import argparse
import json
import os
import sys

# Run from a checkout without installing: the repository root goes first on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from minigen import optim, plots, random  # noqa: E402
from minigen.data import Seq2SeqBatches, exact_match, load_task  # noqa: E402
from minigen.models.seq2seq import Seq2Seq, Seq2SeqConfig  # noqa: E402
from minigen.optim.lr_scheduler import get_lr_warmup_cosine  # noqa: E402
from minigen.training.pairs_gpt import complete, pairs_tokenizer, train_pairs_gpt  # noqa: E402
from minigen.training.loop import fit  # noqa: E402
from minigen.training.progress import Progress  # noqa: E402
from minigen.training.seq2seq import translate_pairs  # noqa: E402

BUCKETS = ((4, 8), (9, 16), (17, 24), (25, 32))
TASK_OPTIONS = {"min_len": 4, "max_len": 32}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# Sizes give the three models about the same number of parameters (the model without attention gets a
# wider state instead). --quick shrinks everything to a smoke run.
SETTINGS = {
    "full": {"splits": dict(n_train=20000, n_valid=500, n_test=1000), "max_time": 240.0, "max_steps": None,
             "none": dict(embedding_size=32, hidden_size=176), "bahdanau": dict(embedding_size=32, hidden_size=128),
             "gpt": dict(n_layer=2, n_head=4, n_embd=96)},
    "quick": {"splits": dict(n_train=300, n_valid=20, n_test=60), "max_time": 10.0, "max_steps": 8,
              "none": dict(embedding_size=8, hidden_size=16), "bahdanau": dict(embedding_size=8, hidden_size=16),
              "gpt": dict(n_layer=1, n_head=2, n_embd=16)},
}


def train_seq2seq_model(data, attention, sizes, max_time, max_steps, seed, batch_size=64, learning_rate=3e-3,
                        min_lr=1e-4):
    """Teacher-forced training of one Seq2Seq on ``data`` (AdamW, cosine decay over the budget)."""
    random.manual_seed(seed)
    tgt = data.tgt_vocab
    model = Seq2Seq(Seq2SeqConfig(len(data.src_vocab), len(tgt), attention=attention, pad_id=tgt.pad_id,
                                  bos_id=tgt.bos_id, eos_id=tgt.eos_id, **sizes), data.src_vocab, tgt)
    print(f"Seq2Seq (attention={attention}) with {model.num_parameters():,} parameters")
    optimizer = optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    batches = Seq2SeqBatches(data.train, data.src_vocab, tgt, batch_size=batch_size, seed=seed, bucket=True)
    stream = batches.forever()
    progress = Progress(total_steps=max_steps, max_time=max_time)

    def batch_loss(step):
        batch = next(stream)
        loss = model.loss(model(batch["src"], batch["src_lengths"], batch["tgt_in"]), batch["tgt_out"])
        return loss, int(batch["src_lengths"].sum() + batch["tgt_lengths"].sum()), {}

    def schedule(step):
        return get_lr_warmup_cosine(step, learning_rate, 0, progress.planned_steps(step), min_lr)

    # test exact match by length is what this experiment measures: no evaluation during training
    steps = fit(optimizer, list(model.parameters()), progress, batch_loss, schedule)
    return model, {"steps": steps, "train_seconds": round(progress.elapsed, 1)}


def bucket_exact_match(predictions, pairs):
    """{'4-8': exact match, ...} of predictions against the targets of ``pairs``, by source length."""
    result = {}
    for low, high in BUCKETS:
        index = [i for i, (source, _) in enumerate(pairs) if low <= len(source) <= high]
        result[f"{low}-{high}"] = exact_match([predictions[i] for i in index], [pairs[i][1] for i in index])
    return result


def run(quick=False, out=RESULTS, max_time=None, seed=0):
    """Train the three models, print and save the table and the plot; returns the results dict."""
    settings = SETTINGS["quick" if quick else "full"]
    max_time = max_time or settings["max_time"]
    data = load_task("reverse", seed=seed, **settings["splits"], **TASK_OPTIONS)
    max_length = TASK_OPTIONS["max_len"] + 2  # bos + the longest target + eos
    rows = {}
    for attention, name in (("none", "Seq2Seq, no attention"), ("bahdanau", "Seq2Seq, Bahdanau attention")):
        print(f"\n== {name} ==")
        model, info = train_seq2seq_model(data, attention, settings[attention], max_time, settings["max_steps"], seed)
        predictions = translate_pairs(model, data.test, max_length=max_length)
        rows[name] = {"parameters": model.num_parameters(), **info, **bucket_exact_match(predictions, data.test)}
    print("\n== GPT ==")
    model, metrics = train_pairs_gpt("reverse", max_time=max_time, max_steps=settings["max_steps"], seed=seed,
                                     task_options=TASK_OPTIONS, n_eval=0, **settings["splits"], **settings["gpt"])
    predictions, _ = complete(model, pairs_tokenizer(data), [s for s, _ in data.test], TASK_OPTIONS["max_len"] + 1)
    rows["GPT"] = {"parameters": metrics["parameters"], "steps": metrics["steps"],
                   "train_seconds": metrics["train_seconds"], **bucket_exact_match(predictions, data.test)}

    labels = [f"{low}-{high}" for low, high in BUCKETS]
    table = "\n".join(["| model | parameters | steps | " + " | ".join(f"length {b}" for b in labels) + " |",
                       "|---|---:|---:|" + "---:|" * len(labels)]
                      + [f"| {name} | {r['parameters']:,} | {r['steps']:,} | "
                         + " | ".join(f"{r[b]:.1%}" for b in labels) + " |" for name, r in rows.items()])
    print(f"\nTest exact match by source length (reverse task, {max_time:.0f} s of training each):\n{table}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "long_range.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "long_range.json"), "w", encoding="utf-8") as f:
        json.dump({"max_time": max_time, "quick": quick, "seed": seed, "rows": rows}, f, indent=1)
    midpoints = [(low + high) / 2 for low, high in BUCKETS]
    path = plots.save_loss_curves({name: (midpoints, [r[b] for b in labels]) for name, r in rows.items()},
                                  os.path.join(out, "long_range.png"), title="reverse: exact match by length",
                                  xlabel="source length (bucket middle)", ylabel="test exact match")
    print(f"wrote {path}, long_range.md and long_range.json to {out}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds with tiny models")
    parser.add_argument("--out", default=RESULTS, help="directory for the table and plot (default: results/)")
    parser.add_argument("--max-time", type=float, default=None, help="training seconds per model (default 240)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run(args.quick, args.out, args.max_time, args.seed)


if __name__ == "__main__":
    main()
