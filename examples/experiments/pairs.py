"""Do two passages belong together? Does the model fill in missing text? The pair head and fill-in-the-middle.

1. Next-passage prediction. Cut the text anywhere (every fifth character): passage A is the 8 characters
   before the cut, passage B the 8 characters after it (a positive) or after a cut at least 20,000 characters
   away (a negative, from another scene; at the seam a negative usually breaks a word). The pair is fed as the
   text A + B to GPTForSequenceClassification (a linear head on the last token); half the pairs are positive, so
   chance is 50%. Training pairs come from the first 85% of the text (negatives drawn afresh for every batch),
   validation pairs from the next 7.5%, test pairs from the last 7.5%. Trained until the validation accuracy
   stops improving, from scratch and from a causal GPT pre-trained for 2,000 steps on the first 85%. (An earlier
   version cut 56 characters either side, at sentence ends or anywhere, and fine-tuned 300 steps from an 800-step
   model: every variant stayed at chance. A pair head that must relate two positions meets a long plateau in
   training, in PyTorch as here; docs/claims.md shows it on a toy task.)
2. Fill-in-the-middle. A word of 3-10 letters is cut out of the held-out text with 48 characters either side; a
   GPT pre-trained with fill-in-the-middle (half its training windows in the prefix-suffix-middle order) writes
   the middle from prefix and suffix, a causal GPT pre-trained the same way continues the prefix. Both generate
   greedily as many characters as the word has; reported: exact match and character accuracy.

    python examples/experiments/pairs.py --text ../shared/data/tinyshakespeare.txt [--quick] [--out DIR]
        [--checkpoints DIR]

The pre-trained models are kept in --checkpoints (shared with pretraining.py, default out-pretrained/). Results
are written after every run; run again, the script takes the finished runs from results/pairs.json.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from common import RESULTS, corpus_main, markdown_table  # noqa: E402
from pretraining import (PRETRAIN_FRACTION, SETTINGS as PRETRAIN_SETTINGS, fit_until_plateau,  # noqa: E402
                         mean_spread, pretrain, read_corpus, save_results)

from minigen import random  # noqa: E402
from minigen.autograd import no_grad  # noqa: E402
from minigen.models.gpt import GPT  # noqa: E402
from minigen.models.gpt_tasks import GPTForSequenceClassification, fill_in_the_middle  # noqa: E402
from minigen.tokenizers import load_tokenizer  # noqa: E402

WORD = re.compile(r"(?<=[ \n])[A-Za-z]{3,10}(?=[ ,.;:!?\n])")
REGIONS = {"train": (0.0, PRETRAIN_FRACTION), "valid": (PRETRAIN_FRACTION, 0.925), "test": (0.925, 1.0)}
LEARNING_RATE = {"from scratch": 1e-3, "pre-trained": 3e-4}

SETTINGS = {
    "full": {"side": 8, "far": 20000, "valid_pairs": 300, "test_pairs": 1000, "fim_examples": 300, "context": 48,
             "seeds": (0, 1), "pretrain_iters": 2000,
             "train": dict(batch_size=16, max_steps=5000, eval_interval=250, patience=4)},
    "quick": {"side": 4, "far": 500, "valid_pairs": 16, "test_pairs": 16, "fim_examples": 5, "context": 8,
              "seeds": (0,), "pretrain_iters": 6,
              "train": dict(batch_size=4, max_steps=4, eval_interval=2, patience=2)},
}


# ----- next-passage prediction -------------------------------------------------------------------------
class PassagePairs:
    """Positive and negative (A, B) passages cut at every fifth character of text[start:end]."""

    def __init__(self, text, start, end, side, far):
        self.text, self.side, self.far = text, side, far
        self.cuts = np.arange(start + side, end - side + 1, 5)

    def passage(self, i, j):
        return self.text[self.cuts[i] - self.side:self.cuts[i]] + self.text[self.cuts[j]:self.cuts[j] + self.side]

    def sample(self, n, rng):
        """n pairs, each positive with probability 1/2: (texts, labels)."""
        first, labels = rng.integers(len(self.cuts), size=n), rng.integers(2, size=n)
        texts = []
        for i, label in zip(first, labels):
            j = i
            while not label and abs(self.cuts[j] - self.cuts[i]) < self.far:
                j = rng.integers(len(self.cuts))
            texts.append(self.passage(i, j))
        return texts, labels


def encode(tokenizer, texts):
    """(ids, attention_mask), right-padded (the head reads the last real token)."""
    rows = [tokenizer.encode(t) for t in texts]
    ids = np.zeros((len(rows), max(map(len, rows))), np.int64)
    mask = np.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, :len(row)], mask[r, :len(row)] = row, 1
    return ids, mask


@no_grad()
def accuracy(model, tokenizer, texts, labels, batch=200):
    predictions = [model(*encode(tokenizer, texts[i:i + batch]))[0].data.argmax(-1)
                   for i in range(0, len(texts), batch)]
    return float((np.concatenate(predictions) == labels).mean())


def pair_run(start, directory, text, settings, seed):
    """Train a pair classifier (`start`: 'from scratch' or 'pre-trained' from `directory`) until its validation
    accuracy stops improving; returns the test accuracy and the training record."""
    tokenizer = load_tokenizer(directory)
    regions = {name: PassagePairs(text, int(a * len(text)), int(b * len(text)), settings["side"], settings["far"])
               for name, (a, b) in REGIONS.items()}
    fixed = np.random.default_rng(1234)
    valid = regions["valid"].sample(settings["valid_pairs"], fixed)
    test = regions["test"].sample(settings["test_pairs"], fixed)
    random.manual_seed(seed)
    model = GPTForSequenceClassification.from_pretrained(directory, num_labels=2)
    if start == "from scratch":
        model = GPTForSequenceClassification(model.config, num_labels=2)
    model.train()
    rng, options = np.random.default_rng(seed), settings["train"]

    def batch_loss(step):
        texts, labels = regions["train"].sample(options["batch_size"], rng)
        ids, mask = encode(tokenizer, texts)
        return model(ids, attention_mask=mask, labels=labels)[1], int(mask.sum()), {}
    result = fit_until_plateau(model, batch_loss, lambda: accuracy(model, tokenizer, *valid),
                               LEARNING_RATE[start],
                               options["max_steps"], options["eval_interval"], options["patience"],
                               higher_is_better=True)
    model.eval()
    return {"test_accuracy": accuracy(model, tokenizer, *test), "test_pairs": len(test[0]),
            "train_cuts": len(regions["train"].cuts), **result}


# ----- fill-in-the-middle ------------------------------------------------------------------------------
def infill_examples(text, n, context, rng):
    """n (prefix, word, suffix) cut from the held-out part of `text` (the last 15%)."""
    start = int(PRETRAIN_FRACTION * len(text))
    words = [m for m in WORD.finditer(text, start + context) if m.end() + context <= len(text)]
    picked = [words[i] for i in rng.choice(len(words), size=min(n, len(words)), replace=False)]
    return [(text[m.start() - context:m.start()], m.group(), text[m.end():m.end() + context]) for m in picked]


def infill_scores(predictions, examples):
    words = [w for _, w, _ in examples]
    chars = sum(sum(a == b for a, b in zip(p, w)) for p, w in zip(predictions, words))
    return {"exact_match": float(np.mean([p == w for p, w in zip(predictions, words)])),
            "char_accuracy": chars / sum(map(len, words))}


def infill(directory, examples, use_suffix):
    """Greedy middles of `examples` by the model in `directory`: from prefix and suffix (fill-in-the-middle) or
    as a continuation of the prefix; each as many tokens as the word has."""
    model, tokenizer = GPT.from_pretrained(directory), load_tokenizer(directory)
    out = []
    for prefix, word, suffix in examples:
        if use_suffix:
            out.append(fill_in_the_middle(model, tokenizer, prefix, suffix, max_new_tokens=len(word)))
        else:
            ids = np.array([tokenizer.encode(prefix)])
            with no_grad():
                row = model.generate(ids, max_new_tokens=len(word))[0, ids.shape[1]:]
            out.append(tokenizer.decode([int(t) for t in row]))
    return out


# ----- the experiment ----------------------------------------------------------------------------------
def run(text_path=None, quick=False, out=RESULTS, checkpoints=None):
    """Every run of the experiment; the runs a stopped earlier invocation wrote to OUT/pairs.json (with the same
    settings) are taken from there."""
    checkpoints = checkpoints or (os.path.join(out, "checkpoints") if quick else "out-pretrained")
    settings = SETTINGS["quick" if quick else "full"]
    pre_options = PRETRAIN_SETTINGS["quick" if quick else "full"]["pretrain"]
    text = read_corpus(text_path, quick)
    record = {"quick": quick, "settings": json.loads(json.dumps(settings)), "learning_rate": LEARNING_RATE,
              "rows": [], "infill": {}}
    if os.path.exists(os.path.join(out, "pairs.json")):
        with open(os.path.join(out, "pairs.json"), encoding="utf-8") as f:
            earlier = json.load(f)
        if all(earlier.get(key) == record[key] for key in ("quick", "settings", "learning_rate")):
            record.update(rows=earlier["rows"], infill=earlier["infill"],
                          infill_examples=earlier.get("infill_examples"))
    fim_dir, fim_metrics = pretrain(text, checkpoints, pre_options, fim_rate=0.5)
    causal_dir, causal_metrics = pretrain(text, checkpoints, pre_options)
    iters = settings["pretrain_iters"]
    long_dir, long_metrics = pretrain(text, checkpoints, dict(pre_options, max_iters=iters, lr_decay_iters=iters,
                                                              eval_interval=iters // 4), corpus="pretrain-long")
    record["pretrain_valid_loss"] = {"causal": causal_metrics["best_val_loss"],
                                     "fill-in-the-middle": fim_metrics["best_val_loss"],
                                     f"causal, {iters:,} steps": long_metrics["best_val_loss"]}
    examples = infill_examples(text, settings["fim_examples"], settings["context"], np.random.default_rng(0))
    record["infill_examples"] = len(examples)
    for label, directory, suffix in (("fill-in-the-middle GPT, prefix + suffix", fim_dir, True),
                                     ("fill-in-the-middle GPT, prefix only", fim_dir, False),
                                     ("causal GPT, prefix only", causal_dir, False)):
        if label not in record["infill"]:
            record["infill"][label] = infill_scores(infill(directory, examples, suffix), examples)
            print(f"infill, {label}: {record['infill'][label]}", flush=True)
    # the model from scratch takes the pre-trained one's configuration and tokenizer, not its weights
    pair_runs(record, out, "from scratch", "from scratch", long_dir, text, settings)
    pair_runs(record, out, f"pre-trained (causal, {iters:,} steps)", "pre-trained", long_dir, text, settings)


def pair_runs(record, out, name, start, directory, text, settings):
    """pair_run for each seed not in the record yet."""
    for seed in settings["seeds"]:
        if any(r["model"] == name and r["seed"] == seed for r in record["rows"]):
            continue
        result = pair_run(start, directory, text, settings, seed)
        record["rows"].append({"model": name, "seed": seed, **result})
        print(f"{name}, seed {seed}: test accuracy {result['test_accuracy']:.1%} (best validation "
              f"{result['best']:.1%} at step {result['best_step']}, {result['steps']} steps, "
              f"{result['seconds']:.0f} s)", flush=True)
        write(out, record)


def write(out, record):
    """The tables of the runs so far, written with the plot of validation accuracy (the first seed of each)."""
    rows, curves = [], {}
    for name in dict.fromkeys(r["model"] for r in record["rows"]):
        group = [r for r in record["rows"] if r["model"] == name]
        rows.append([name, len(group), mean_spread([r["test_accuracy"] for r in group], ".1%"),
                     mean_spread([r["best"] for r in group], ".1%"), f"{np.mean([r['best_step'] for r in group]):,.0f}",
                     f"{np.mean([r['best_seconds'] for r in group]):,.0f}",
                     f"{np.mean([r['steps'] for r in group]):,.0f}"])
        curves[name] = ([h[0] for h in group[0]["history"]], [h[2] for h in group[0]["history"]])
    text = ("Next-passage prediction (chance: 50%)\n\n"
            + markdown_table(["model", "seeds", "test accuracy", "best validation accuracy", "steps to the best",
                              "seconds to the best", "steps run"], rows))
    if record["infill"]:
        text += (f"\n\nFill-in-the-middle: a word of 3-10 letters cut out of held-out text "
                 f"({record['infill_examples']} examples)\n\n"
                 + markdown_table(["model, input", "exact match", "character accuracy"],
                                  [[k, f"{v['exact_match']:.1%}", f"{v['char_accuracy']:.1%}"]
                                   for k, v in record["infill"].items()]))
    save_results(out, "pairs", text, record, curves, xlabel="step", ylabel="validation accuracy",
                 title="Next-passage prediction: validation accuracy")


def main(argv=None):
    corpus_main(run, __doc__.split("\n\n")[0], "where the pre-trained models are kept (default out-pretrained/; "
                "OUT/checkpoints with --quick)", argv)


if __name__ == "__main__":
    main()
