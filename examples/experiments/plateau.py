"""Why a pair head can sit at chance: a toy task that needs two positions related meets a long plateau.

Sequences of 32 random digits, a GPT classifier (2 layers, 2 heads, width 64, the head on the last token), two
labels, trained with AdamW (lr 1e-3, batch 32) and scored every 250 steps on 500 fixed sequences:
- lookup: is the digit at position 5 at least 5? (one position read);
- equal: is the digit at position 20 the digit at position 5? (two positions related, as the seam of a
  next-passage pair is: the last token must compare what stands either side of it).
The same model in PyTorch (benchmarks/torch_reference.GPT with the same head and initialisation) runs beside
minigen's when torch is installed, on the same batches: the plateau is the task's, not the framework's.

    python examples/experiments/plateau.py [--quick] [--out DIR]
"""
import argparse
import importlib.util
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import numpy as np  # noqa: E402
from common import RESULTS, markdown_table  # noqa: E402
from pretraining import save_results  # noqa: E402

import minigen  # noqa: E402
from minigen.models.gpt import GPTConfig  # noqa: E402
from minigen.models.gpt_tasks import GPTForSequenceClassification  # noqa: E402

SHAPE = dict(vocab_size=10, block_size=32, n_layer=2, n_head=2, n_embd=64)
SETTINGS = {"full": dict(steps=1500, eval_interval=250, batch=32, valid=500),
            "quick": dict(steps=4, eval_interval=2, batch=4, valid=8)}


def batch(task, n, rng):
    """(digits (n, 32), labels (n,)) for `task`, half of each label."""
    x, y = rng.integers(0, 10, (n, 32)), rng.integers(0, 2, n)
    if task == "lookup":
        x[:, 5] = rng.integers(0, 5, n) + 5 * y
    else:
        x[:, 20] = np.where(y == 1, x[:, 5], (x[:, 5] + rng.integers(1, 10, n)) % 10)
    return x, y


def minigen_side():
    """(train_step(x, y) -> loss, predict(x) -> labels) of minigen's classifier."""
    minigen.manual_seed(0)
    model = GPTForSequenceClassification(GPTConfig(**SHAPE, dropout=0.0), num_labels=2)
    model.train()
    optimizer = minigen.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step(x, y):
        loss = model(x, labels=y)[1]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.data)

    def predict(x):
        with minigen.no_grad():
            return model(x)[0].data.argmax(-1)
    return train_step, predict


def torch_side():
    """The same for PyTorch's twin."""
    import torch
    from benchmarks.torch_reference import GPT
    torch.manual_seed(0)
    body = GPT(**SHAPE, bias=True)
    score = torch.nn.Linear(SHAPE["n_embd"], 2, bias=False)
    torch.nn.init.normal_(score.weight, 0.0, 0.02)
    optimizer = torch.optim.AdamW(list(body.parameters()) + list(score.parameters()), lr=1e-3)

    def logits(x):
        h = body.wte(torch.from_numpy(x)) + body.wpe(torch.arange(x.shape[1]))
        for block in body.h:
            h = block(h)
        return score(body.ln_f(h)[:, -1])

    def train_step(x, y):
        loss = torch.nn.functional.cross_entropy(logits(x), torch.from_numpy(y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    def predict(x):
        with torch.no_grad():
            return logits(x).argmax(-1).numpy()
    return train_step, predict


def run(quick=False, out=RESULTS):
    s = SETTINGS["quick" if quick else "full"]
    sides = {"minigen": minigen_side}
    if importlib.util.find_spec("torch") is not None:
        sides["PyTorch"] = torch_side
    rows, curves = [], {}
    for task in ("lookup", "equal"):
        valid = batch(task, s["valid"], np.random.default_rng(1234))
        for name, make in sides.items():
            train_step, predict = make()
            rng, start, history = np.random.default_rng(0), time.process_time(), []
            for step in range(s["steps"] + 1):
                if step % s["eval_interval"] == 0:
                    history.append((step, float((predict(valid[0]) == valid[1]).mean())))
                if step < s["steps"]:
                    loss = train_step(*batch(task, s["batch"], rng))
            rows.append({"task": task, "framework": name, "history": history, "last_loss": loss,
                         "cpu_seconds": time.process_time() - start})
            curves[f"{task}, {name}"] = ([h[0] for h in history], [h[1] for h in history])
            print(f"{task}, {name}: {history}", flush=True)
    steps = [h[0] for h in rows[0]["history"]]
    text = ("Validation accuracy by training step (chance: about 50%)\n\n"
            + markdown_table(["task, framework"] + [f"step {n:,}" for n in steps] + ["last training loss"],
                             [[f"{r['task']}, {r['framework']}"] + [f"{a:.1%}" for _, a in r["history"]]
                              + [f"{r['last_loss']:.3f}"] for r in rows]))
    save_results(out, "plateau", text, {"quick": quick, "settings": s, "rows": rows}, curves, xlabel="step",
                 ylabel="validation accuracy", title="One position read against two related")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few steps on a few sequences")
    parser.add_argument("--out", default=RESULTS, help="directory for the table, json and plot (default: results/)")
    args = parser.parse_args(argv)
    run(args.quick, args.out)


if __name__ == "__main__":
    main()
