"""Long range: does a fixed-size context vector forget, and does self-attention reach further than recurrence?

Three models with matched parameter counts, each trained until its validation exact match stops improving:

- a GRU encoder-decoder whose decoder sees the source only through the final encoder states
  (attention 'none': the whole source must fit in one vector; it gets a wider state to match the count),
- the same GRU encoder-decoder with Bahdanau attention over every encoder state,
- a GPT reading ``source <sep>`` and completing ``target <eos>``.

Two tasks:

- reverse: strings of 4 to 24 letters written backwards, test exact match by source length;
- lookback: 24 random letters (of 10) then a symbol naming k (1 to 24); the answer is the letter k positions
  before the symbol. Test accuracy by distance k.

Reported per model: steps, training CPU seconds (one thread; see common.train_until_plateau) and wall
seconds (validation included), the steps and CPU seconds at which validation exact match first reached 90%,
and test exact match by bucket; mean ± half the range over seeds where a task runs several.

    python examples/experiments/long_range.py [--quick] [--out DIR] [--seeds N]
    python examples/experiments/long_range.py --tasks lookback --models gpt --patience 20 --name NAME  # one part
    python examples/experiments/long_range.py --combine PART1 PART2 ...   # parts' results as one report
"""
import argparse
import json
import os
import string
import sys
from dataclasses import asdict, replace

import numpy as np

# common.py sits beside this script (and puts the repository root on the path)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (RESULTS, Plateau, bucket_exact_match, gpt_learner, markdown_table, mean_spread,  # noqa: E402
                    seq2seq_learner, train_until_plateau, write_results)
from minigen import plots  # noqa: E402
from minigen.data import TaskData, load_task  # noqa: E402
from minigen.tokenizers import CharTokenizer  # noqa: E402

K_SYMBOLS = string.ascii_uppercase + string.digits  # the symbol of k is K_SYMBOLS[k - 1]
TASKS = {
    "lookback": {"buckets": ((1, 3), (4, 6), (7, 12), (13, 18), (19, 24)),
                 "key": lambda source: K_SYMBOLS.index(source[-1]) + 1, "axis": "distance k",
                 "options": {"length": 24, "max_k": 24, "alphabet": "abcdefghij"}},
    "reverse": {"buckets": ((4, 8), (9, 12), (13, 16), (17, 20), (21, 24)), "key": len, "axis": "source length",
                "options": {"min_len": 4, "max_len": 24}},
}
# Sizes give the three models about the same number of parameters (about 100,000).
SETTINGS = {
    "full": {"splits": dict(n_train=20000, n_valid=200, n_test=1000), "seeds": {"reverse": 1, "lookback": 2},
             "plateau": Plateau(eval_interval=250, patience=4, max_steps=5000, n_valid=200),
             "models": {"none": dict(embedding_size=32, hidden_size=112),
                        "bahdanau": dict(embedding_size=32, hidden_size=84),
                        "gpt": dict(n_layer=2, n_head=4, n_embd=64)}},
    "quick": {"splits": dict(n_train=200, n_valid=20, n_test=60), "seeds": {"reverse": 1, "lookback": 2},
              "plateau": Plateau(eval_interval=4, patience=1, max_steps=8, warmup_steps=2, n_valid=20),
              "models": {"none": dict(embedding_size=8, hidden_size=16),
                         "bahdanau": dict(embedding_size=8, hidden_size=16),
                         "gpt": dict(n_layer=1, n_head=2, n_embd=16)}},
}
NAMES = {"none": "Seq2Seq, no attention", "bahdanau": "Seq2Seq, Bahdanau attention", "gpt": "GPT"}


def lookback_task(n_train, n_valid, n_test, seed, length, max_k, alphabet):
    """`length` random letters and the symbol of k -> the letter k positions back; distinct sources."""
    rng, pairs, seen = np.random.default_rng(seed), [], set()
    while len(pairs) < n_train + n_valid + n_test:
        letters = "".join(alphabet[i] for i in rng.integers(len(alphabet), size=length))
        k = int(rng.integers(1, max_k + 1))
        source = letters + K_SYMBOLS[k - 1]
        if source not in seen:
            seen.add(source)
            pairs.append((source, letters[-k]))
    test, valid, train = pairs[:n_test], pairs[n_test:n_test + n_valid], pairs[n_test + n_valid:]
    return TaskData("lookback", train, valid, test, CharTokenizer.from_chars(alphabet + K_SYMBOLS[:max_k]),
                    CharTokenizer.from_chars(alphabet))


def make_task(task, splits, seed):
    options = TASKS[task]["options"]
    if task == "reverse":
        return load_task("reverse", seed=seed, **splits, **options)
    return lookback_task(seed=seed, **splits, **options)


def learner_for(kind, data, sizes, seed):
    if kind == "gpt":
        return gpt_learner(data, seed=seed, **sizes)
    return seq2seq_learner(data, kind, seed=seed, **sizes)


def run_task(task, settings, seeds):
    """Train every model on every seed of `task`; returns {model name: [one record per seed]}."""
    spec, rows = TASKS[task], {}
    for seed in range(seeds):
        data = make_task(task, settings["splits"], seed)
        for kind, sizes in settings["models"].items():
            print(f"\n== {task}, {NAMES[kind]}, seed {seed} ==", flush=True)
            learner = learner_for(kind, data, sizes, seed)
            record = train_until_plateau(learner, data.valid, settings["plateau"])
            predictions = learner.predict([s for s, _ in data.test])
            record.update(parameters=learner.parameters(), seed=seed,
                          test=bucket_exact_match(predictions, data.test, spec["buckets"], spec["key"]))
            rows.setdefault(NAMES[kind], []).append(record)
    return rows


def task_table(task, rows, target):
    labels = [f"{low}-{high}" for low, high in TASKS[task]["buckets"]]
    header = ["model", "parameters", "seeds", "steps", "training CPU s", "wall s", f"steps to {target:.0%}",
              f"training CPU s to {target:.0%}", "stopped by"] + [f"{TASKS[task]['axis']} {b}" for b in labels]

    def mean(records, key):
        values = [r[key] for r in records if r[key] is not None]
        reached = f"{np.mean(values):,.0f}" if values else "not reached"
        return reached + (f" ({len(values)} of {len(records)})" if values and len(values) < len(records) else "")
    body = [[name, f"{records[0]['parameters']:,}", len(records), mean(records, "steps"),
             mean(records, "train_cpu_seconds"), mean(records, "wall_seconds"), mean(records, "steps_to_target"),
             mean(records, "cpu_seconds_to_target"), ", ".join(sorted({r["stopped_by"] for r in records}))]
            + [mean_spread([r["test"][b] for r in records]) for b in labels] for name, records in rows.items()]
    return markdown_table(header, body)


def save_plots(out, name, results):
    paths = []
    for task, rows in results.items():
        spec = TASKS[task]
        labels = [f"{low}-{high}" for low, high in spec["buckets"]]
        middles = [(low + high) / 2 for low, high in spec["buckets"]]
        curves = {model: (middles, [np.mean([r["test"][b] for r in records]) for b in labels])
                  for model, records in rows.items()}
        paths.append(plots.save_loss_curves(curves, os.path.join(out, f"{name}_{task}.png"),
                                            title=f"{task}: test exact match by {spec['axis']}",
                                            xlabel=f"{spec['axis']} (bucket middle)", ylabel="test exact match"))
        learning = {model: ([h["train_cpu_seconds"] for h in records[0]["history"]],
                            [h["valid_exact_match"] for h in records[0]["history"]]) for model, records in rows.items()}
        paths.append(plots.save_loss_curves(learning, os.path.join(out, f"{name}_{task}_curves.png"),
                                            title=f"{task}: validation exact match while training (seed 0)",
                                            xlabel="training CPU seconds", ylabel="valid exact match"))
    return paths


def run(quick=False, out=RESULTS, seeds=None, tasks=tuple(TASKS), models=tuple(NAMES), patience=None,
        name="long_range", learning_rate=None):
    """Train and test `models` on `tasks`; write OUT/NAME.md, .json and the plots after each task."""
    settings = dict(SETTINGS["quick" if quick else "full"])
    settings["models"] = {kind: sizes for kind, sizes in settings["models"].items() if kind in models}
    default = settings["plateau"]
    plateau = settings["plateau"] = replace(default, patience=patience or default.patience,
                                            learning_rate=learning_rate or default.learning_rate)
    results = {}
    for task in tasks:
        results[task] = run_task(task, settings, seeds or settings["seeds"][task])
        report(out, name, results, {"quick": quick, "plateau": asdict(plateau), "models": settings["models"]})
    return results


def report(out, name, results, payload, note=""):
    """Write the tables of `results` ({task: {model: records}}) to OUT/NAME.md and .json, and the plots."""
    target = payload["plateau"]["target"]
    text = "\n\n".join(f"{task}: test exact match by {TASKS[task]['axis']}\n\n" + task_table(task, rows, target)
                       for task, rows in results.items())
    write_results(out, name, text + note, {**payload, "rows": results, "tasks": {
        task: {k: v for k, v in spec.items() if k != "key"} for task, spec in TASKS.items()}})
    paths = save_plots(out, name, results)
    print(f"wrote {', '.join(os.path.basename(p) for p in paths)}, {name}.md and {name}.json to {out}")


def combine(out, parts, name="long_range"):
    """One report from the results of runs of parts of the experiment (OUT/PART.json, e.g. each task's
    models run side by side in their own processes), with each part's commit and date."""
    results, payload, lines = {}, None, []
    for part in parts:
        with open(os.path.join(out, f"{part}.json"), encoding="utf-8") as f:
            loaded = json.load(f)
        payload = payload or {key: loaded[key] for key in ("quick", "plateau", "models")}
        for task, rows in loaded["rows"].items():
            results.setdefault(task, {}).update(rows)
        where = loaded["machine"]
        lines.append(f"- {', '.join(f'{t}: {m}' for t, rows in loaded['rows'].items() for m in rows)}: "
                     f"finished {where['date_utc']} UTC, commit {where['commit']}, load average "
                     f"{where['load_average'][0]}")
    report(out, name, results, {**payload, "parts": parts},
           note="\n\nCombined from runs of parts of the experiment:\n\n" + "\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds with tiny models")
    parser.add_argument("--out", default=RESULTS, help="directory for the tables and plots (default: results/)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per task (default: 1 reverse, 2 lookback)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=tuple(TASKS))
    parser.add_argument("--models", nargs="+", choices=NAMES, default=tuple(NAMES))
    parser.add_argument("--patience", type=int, default=None, help="evaluations without improvement (default 4)")
    parser.add_argument("--learning-rate", type=float, default=None, help="peak learning rate (default 3e-3)")
    parser.add_argument("--name", default="long_range", help="file name of the results (default long_range)")
    parser.add_argument("--combine", nargs="+", metavar="PART", help="report OUT/PART.json files as one, OUT/NAME")
    args = parser.parse_args(argv)
    if args.combine:
        combine(args.out, args.combine, args.name)
    else:
        run(args.quick, args.out, args.seeds, args.tasks, args.models, args.patience, args.name, args.learning_rate)


if __name__ == "__main__":
    main()
