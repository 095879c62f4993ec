"""Does pre-training on unlabelled text help a small downstream text? Learning curves, fine-tuned against scratch.

A character GPT (4 layers, 4 heads, width 128) is pre-trained once on the first 85% of a text (tinyshakespeare).
The last 15% -- plays the pre-training never saw -- is the downstream text: its last 30,000 characters
validate, the first N characters of the rest train, for several N. For each N and seed the same GPT is
trained on those N characters twice, from the pre-trained weights and from a random initialisation, until
its validation loss stops improving (patience of 3 evaluations, every 20 to 100 steps, more often for small
texts; 800 steps at most); the best validation loss is reported, with the steps and seconds it took.

    python examples/experiments/pretraining.py --text ../shared/data/tinyshakespeare.txt [--quick] [--out DIR]
        [--checkpoints DIR]

The pre-trained checkpoint is kept in --checkpoints (default out-pretrained/) and reused by later runs and by
pairs.py. Without --text, --quick trains on a small generated text.
"""
import io
import json
import os
import sys
from dataclasses import replace

import numpy as np

# common.py sits beside this script (and puts the repository root on the path)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import RESULTS, corpus_main, markdown_table, write_results  # noqa: E402
from minigen import optim, plots, random  # noqa: E402
from minigen.data import load_task  # noqa: E402
from minigen.data.batching import random_text_batch  # noqa: E402
from minigen.models.gpt import GPT  # noqa: E402
from minigen.optim.lr_scheduler import get_lr_warmup_cosine  # noqa: E402
from minigen.tokenizers import load_tokenizer  # noqa: E402
from minigen.training.gpt import GPTTrainConfig, train_gpt  # noqa: E402
from minigen.training.loop import Patience, fit  # noqa: E402
from minigen.training.progress import Progress  # noqa: E402
from minigen.training.step import evaluating  # noqa: E402

PRETRAIN_FRACTION = 0.85  # the rest of the text is never seen in pre-training

SETTINGS = {
    "full": {"pretrain": dict(n_layer=4, n_head=4, n_embd=128, block_size=128, batch_size=8, max_iters=800,
                              lr_decay_iters=800, eval_interval=400, eval_iters=10),
             "valid_chars": 30000, "sizes": (2000, 8000, 32000, 128000), "seeds": (0, 1, 2),
             "finetune": dict(block_size=64, batch_size=12, max_steps=800, eval_interval=100, patience=3,
                              valid_batches=12)},
    "quick": {"pretrain": dict(n_layer=1, n_head=2, n_embd=16, block_size=32, batch_size=4, max_iters=6,
                               warmup_iters=2, lr_decay_iters=6, eval_interval=6, eval_iters=2),
              "valid_chars": 2000, "sizes": (500, 2000), "seeds": (0,),
              "finetune": dict(block_size=32, batch_size=4, max_steps=6, eval_interval=2, patience=2,
                               valid_batches=2)},
}
LEARNING_RATE = {"pre-trained": 3e-4, "from scratch": 1e-3}  # fine-tuning takes smaller steps


# ----- shared with pairs.py -----------------------------------------------------------------------------
def read_corpus(path, quick):
    """The text at `path`; without one (quick runs only), a small generated text of dates written out."""
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read()
    if not quick:
        raise ValueError("--text is required for a full run (e.g. ../shared/data/tinyshakespeare.txt)")
    data = load_task("dates", n_train=1500, n_valid=1, n_test=1, seed=0)
    return "".join(f"{source} is {target}.{' ' if i % 3 else chr(10)}" for i, (source, target) in
                   enumerate(data.train))


def pretrain(text, checkpoints, options, fim_rate=0.0, corpus="pretrain", log=print):
    """Pre-train a character GPT on the first 85% of `text` (once: a finished run in the directory is reused);
    returns (model directory, pre-training metrics). The run goes to CHECKPOINTS/CORPUS (-fim with fim_rate)."""
    name = f"{corpus}-fim" if fim_rate else corpus
    out = os.path.join(checkpoints, name)
    metrics_path = os.path.join(out, "metrics.json")
    cfg = GPTTrainConfig(text=os.path.join(checkpoints, f"{corpus}.txt"), out=out, fim_rate=fim_rate, seed=0,
                         overwrite=True, **options)
    if os.path.exists(metrics_path):
        with open(metrics_path, encoding="utf-8") as f:
            metrics = json.load(f)
        if metrics["config"] == {**metrics["config"], **{k: v for k, v in vars(cfg).items() if k != "overwrite"}}:
            log(f"reusing the pre-trained model in {out}")
            return os.path.join(out, "best"), metrics
    os.makedirs(checkpoints, exist_ok=True)
    with open(cfg.text, "w", encoding="utf-8") as f:
        f.write(text[:int(PRETRAIN_FRACTION * len(text))])
    log(f"pre-training {name} on {cfg.text}")
    _, metrics = train_gpt(cfg, log=log)
    return os.path.join(out, "best"), metrics


def fit_until_plateau(model, batch_loss, validate, learning_rate, max_steps, eval_interval, patience,
                      higher_is_better=False):
    """Train `model` with AdamW (warm-up, cosine decay over `max_steps`) until `validate()` has not improved for
    `patience` evaluations or `max_steps` are done; the best weights are put back. Returns the best value, the
    step and seconds it was reached at, the steps and seconds run and the history [(step, seconds, value)]."""
    optimizer = optim.AdamW(optim.adamw_param_groups(model, 0.1), lr=learning_rate, betas=(0.9, 0.99))
    progress = Progress(total_steps=max_steps, stream=io.StringIO())
    stopper, history, best = Patience(patience, higher_is_better), [], {}
    warmup = min(50, max_steps // 10)

    def evaluate(step):
        with evaluating(model):
            value = validate()
        history.append((step, round(progress.elapsed, 1), value))
        stop = stopper.update(step, value)
        if stopper.best_step == step:
            best.update(state=model.state_dict(), seconds=progress.elapsed)
        return stop

    def schedule(step):
        return get_lr_warmup_cosine(step, learning_rate, warmup, max_steps, learning_rate / 10)

    steps = fit(optimizer, list(model.parameters()), progress, batch_loss, schedule, evaluate, eval_interval)
    model.load_state_dict(best["state"])
    return {"best": stopper.best, "best_step": stopper.best_step, "best_seconds": round(best["seconds"], 1),
            "steps": steps, "seconds": round(progress.elapsed, 1), "history": history}


def save_results(out, name, text, record, curves, **plot_options):
    """common.write_results (OUT/NAME.md and .json, printed) and the plot OUT/NAME.png."""
    write_results(out, name, text, record)
    plots.save_loss_curves(curves, os.path.join(out, f"{name}.png"), **plot_options)


def mean_spread(values, fmt=".3f"):
    """'mean ± half the range' of a list, each formatted with `fmt` (one value: just the value)."""
    spread = f" ± {(max(values) - min(values)) / 2:{fmt}}" if len(values) > 1 else ""
    return f"{np.mean(values):{fmt}}{spread}"


# ----- this experiment -----------------------------------------------------------------------------------
def downstream_run(model, train_ids, valid_batches, learning_rate, seed, settings):
    """Train `model` as a language model on `train_ids` until the loss on `valid_batches` stops improving."""
    rng = np.random.default_rng(seed)
    block, batch = settings["block_size"], settings["batch_size"]
    # a small text is overfitted within a few epochs: evaluate every epoch, but every 20 to eval_interval steps
    eval_interval = min(settings["eval_interval"], max(20, len(train_ids) // (block * batch)))

    def validate():
        return float(np.mean([model(x, y)[1].item() for x, y in valid_batches]))
    return fit_until_plateau(model, lambda step: (model(*random_text_batch(train_ids, block, batch, rng))[1],
                                                  block * batch, {}),
                             validate, learning_rate, settings["max_steps"], eval_interval, settings["patience"])


def run(text_path=None, quick=False, out=RESULTS, checkpoints=None):
    checkpoints = checkpoints or (os.path.join(out, "checkpoints") if quick else "out-pretrained")
    settings = SETTINGS["quick" if quick else "full"]
    tune = settings["finetune"]
    text = read_corpus(text_path, quick)
    directory, pre_metrics = pretrain(text, checkpoints, settings["pretrain"])
    tokenizer = load_tokenizer(directory)
    downstream = np.asarray(tokenizer.encode(text[int(PRETRAIN_FRACTION * len(text)):]), dtype=np.int64)
    train_pool, valid_ids = downstream[:-settings["valid_chars"]], downstream[-settings["valid_chars"]:]
    rng = np.random.default_rng(1234)
    valid_batches = [random_text_batch(valid_ids, tune["block_size"], tune["batch_size"], rng)
                     for _ in range(tune["valid_batches"])]
    record = {"quick": quick, "settings": settings, "learning_rate": LEARNING_RATE,
              "pretrain": {k: pre_metrics[k] for k in ("iters", "train_seconds", "best_val_loss", "parameters")},
              "rows": []}
    print(f"pre-trained: {pre_metrics['iters']} steps, validation loss {pre_metrics['best_val_loss']:.3f}")
    for seed in settings["seeds"]:  # seeds outermost: every finished seed is a complete learning curve
        for size in settings["sizes"]:
            for start in ("pre-trained", "from scratch"):
                random.manual_seed(seed)
                model = GPT.from_pretrained(directory)
                if start == "from scratch":
                    model = GPT(replace(model.config))
                result = downstream_run(model.train(), train_pool[:size], valid_batches, LEARNING_RATE[start],
                                        seed, tune)
                record["rows"].append({"start": start, "chars": size, "seed": seed, **result})
                print(f"seed {seed}, {size:,} characters, {start}: best validation loss {result['best']:.3f} at "
                      f"step {result['best_step']} ({result['steps']} steps, {result['seconds']:.0f} s)", flush=True)
            text, curves = summarize(record["rows"])
            save_results(out, "pretraining", text, record, curves, ylabel="best validation loss",
                         xlabel="downstream training characters (log10)",
                         title="Pre-trained vs from scratch, by downstream data")
    return record


def summarize(rows):
    """The markdown table (mean ± half the range over seeds) and the plot's curves of the rows so far."""
    table, curves = [], {}
    for size in sorted({r["chars"] for r in rows}):
        for start in LEARNING_RATE:
            group = [r for r in rows if r["start"] == start and r["chars"] == size]
            if not group:
                continue
            table.append([f"{size:,}", start, len(group), mean_spread([r["best"] for r in group]),
                          f"{np.mean([r['best_step'] for r in group]):,.0f}",
                          f"{np.mean([r['best_seconds'] for r in group]):,.0f}",
                          f"{np.mean([r['steps'] for r in group]):,.0f}"])
            x, y = curves.setdefault(start, ([], []))
            x.append(np.log10(size))
            y.append(float(np.mean([r["best"] for r in group])))
    header = ["downstream characters", "start", "seeds", "best validation loss", "steps to the best",
              "seconds to the best", "steps run"]
    return markdown_table(header, table), curves


def main(argv=None):
    corpus_main(run, __doc__.split("\n\n")[0], "where the pre-trained model is kept (default out-pretrained/; "
                "OUT/checkpoints with --quick)", argv)


if __name__ == "__main__":
    main()
