"""Does fill-in-the-middle training teach a GPT to write missing text from both sides? Infilling exact match.

Two character GPTs (2 layers, 4 heads, width 64) are trained alike on lines such as "March 3, 2021 is 2021-03-03."
-- one as a causal language model, one with fill-in-the-middle (half of its training windows rearranged as
prefix, suffix, middle). On held-out lines a piece of the written date is cut out: the year or the month's
name. Only the text after the gap gives it away (the ISO date). The fill-in-the-middle GPT writes the middle
from prefix and suffix; the causal GPT (and the fill-in-the-middle GPT as a causal model) continue the prefix.
Each generates greedily as many characters as the missing piece has, so the prefix-only models are told its
length. Reported: exact match by piece, next to the best a guess from the prefix and the length can do.

    python examples/experiments/infill.py [--quick] [--out DIR] [--checkpoints DIR]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from common import RESULTS, markdown_table  # noqa: E402
from pairs import infill, infill_scores  # noqa: E402
from pretraining import PRETRAIN_FRACTION, pretrain, save_results  # noqa: E402

from minigen.data.dates import MONTHS, draw_date_pair  # noqa: E402

FORMAT = "{Month} {d}, {yyyy}"
SETTINGS = {
    "full": {"lines": 20000, "examples": 300,
             "pretrain": dict(n_layer=2, n_head=4, n_embd=64, block_size=96, batch_size=12, max_iters=2000,
                              lr_decay_iters=2000, eval_interval=500, eval_iters=10)},
    "quick": {"lines": 400, "examples": 6,
              "pretrain": dict(n_layer=1, n_head=2, n_embd=16, block_size=80, batch_size=4, max_iters=6,
                               warmup_iters=2, lr_decay_iters=6, eval_interval=6, eval_iters=2)},
}


def dates_lines(n, seed=0):
    rng = np.random.default_rng(seed)
    return [f"{s} is {t}.\n" for s, t in (draw_date_pair(rng, (FORMAT,), mixed_case=False) for _ in range(n))]


def gaps(lines, piece):
    """(prefix, middle, suffix) of each line with its year or month name cut out; the line before is context."""
    out = []
    for before, line in zip(lines, lines[1:]):
        month, rest = line.split(" ", 1)
        year = rest.split(" ", 2)[1]  # "3, 2021 is ..." -> "2021"
        start = 0 if piece == "month" else line.index(year)
        middle = month if piece == "month" else year
        out.append((before + line[:start], middle, line[start + len(middle):]))
    return out


def guess_rate(examples, piece):
    """The exact match of the best guess from the length alone: one of the months that long, one of 100 years."""
    if piece == "year":
        return 1 / 100
    return float(np.mean([1 / sum(len(m) == len(w) for m in MONTHS) for _, w, _ in examples]))


def run(quick=False, out=RESULTS, checkpoints=None):
    checkpoints = checkpoints or (os.path.join(out, "checkpoints") if quick else "out-pretrained")
    settings = SETTINGS["quick" if quick else "full"]
    lines = dates_lines(settings["lines"])
    text, held_out = "".join(lines), lines[int(PRETRAIN_FRACTION * len(lines)):]
    record = {"quick": quick, "settings": settings, "rows": [], "pretrain_valid_loss": {}}
    # the fill-in-the-middle model is trained and measured first, and the results written before the causal one
    for fim_rate, models in ((0.5, (("fill-in-the-middle GPT, prefix + suffix", True),
                                    ("fill-in-the-middle GPT, prefix only", False))),
                             (0.0, (("causal GPT, prefix only", False),))):
        directory, metrics = pretrain(text, checkpoints, settings["pretrain"], fim_rate=fim_rate, corpus="dates")
        record["pretrain_valid_loss"]["fill-in-the-middle" if fim_rate else "causal"] = metrics["best_val_loss"]
        for piece in ("year", "month"):
            examples = gaps(held_out, piece)[:settings["examples"]]
            for model, suffix in models:
                scores = infill_scores(infill(directory, examples, suffix), examples)
                record["rows"].append({"piece": piece, "model": model, "examples": len(examples),
                                       "guess": guess_rate(examples, piece), **scores})
                print(f"{piece}, {model}: {scores}", flush=True)
        write(out, record)
    return record


def write(out, record):
    rows = sorted(record["rows"], key=lambda r: r["piece"] == "month")
    table = markdown_table(["missing piece", "model, input", "exact match", "character accuracy",
                            "best guess without the suffix"],
                           [[r["piece"], r["model"], f"{r['exact_match']:.1%}", f"{r['char_accuracy']:.1%}",
                             f"{r['guess']:.1%}"] for r in rows])
    curves = {m: ([1, 2], [r["exact_match"] for r in rows if r["model"] == m])
              for m in dict.fromkeys(r["model"] for r in rows)}
    save_results(out, "infill", f"Infilling a date's year or month name ({record['settings']['examples']} "
                 f"held-out lines each)\n\n{table}", record, curves, xlabel="missing piece: 1 year, 2 month name",
                 ylabel="exact match", title="Fill-in-the-middle against prefix-only")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds with tiny models")
    parser.add_argument("--out", default=RESULTS, help="directory for the table, json and plot (default: results/)")
    parser.add_argument("--checkpoints", default=None,
                        help="where the models are kept (default out-pretrained/; OUT/checkpoints with --quick)")
    args = parser.parse_args(argv)
    run(args.quick, args.out, args.checkpoints)


if __name__ == "__main__":
    main()
