"""The character-level convergence benchmark: nanoGPT's CPU recipe on a text file, minigen beside PyTorch.

    python benchmarks/convergence.py ../shared/data/tinyshakespeare.txt [--max-iters 2000] [--sides minigen torch]

Recipe: character tokens, first 90% train / last 10% validation, 4 layers, 4 heads, width 128, block 64,
batch 12, no dropout, no biases, AdamW (lr 1e-3, betas 0.9/0.99, weight decay 0.1 on 2-D weights), 100
warm-up steps then cosine decay to 1e-4 at the last step, clipping at 1.0. The validation loss is the mean
over 200 random batches. Each side runs in its own process; the PyTorch side needs torch installed.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

RECIPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, learning_rate=1e-3, min_lr=1e-4,
              warmup_iters=100, beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0, eval_iters=200)


def run_minigen(text, max_iters, out):
    from minigen.training.gpt import GPTTrainConfig, train_gpt
    cfg = GPTTrainConfig(text=text, out=out, tokenizer="char", dropout=0.0, bias=False, max_iters=max_iters,
                         lr_decay_iters=max_iters, eval_interval=max_iters, seed=1337, **RECIPE)
    _, metrics = train_gpt(cfg, log=lambda *a: None)
    return {"val_loss": metrics["val_loss"], "train_seconds": metrics["train_seconds"],
            "tokens_per_second": metrics["tokens_per_second"]}


def run_torch(text, max_iters):
    import torch
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks.torch_reference import GPT, adamw_param_groups
    from minigen.optim.lr_scheduler import get_lr_warmup_cosine
    torch.manual_seed(1337)
    with open(text, encoding="utf-8") as f:
        data = f.read()
    chars = sorted(set(data))
    table = {c: i for i, c in enumerate(chars)}
    ids = np.array([table[c] for c in data], dtype=np.int64)
    n = int(0.9 * len(ids))
    train, val = ids[:n], ids[n:]
    r = RECIPE
    model = GPT(len(chars), r["block_size"], r["n_layer"], r["n_head"], r["n_embd"], bias=False)
    opt = torch.optim.AdamW(adamw_param_groups(model, r["weight_decay"]), lr=r["learning_rate"],
                            betas=(r["beta1"], r["beta2"]))
    rng = np.random.default_rng(1337)

    def batch(split, rng):
        starts = rng.integers(0, len(split) - r["block_size"] - 1, r["batch_size"])
        x = np.stack([split[i:i + r["block_size"]] for i in starts])
        y = np.stack([split[i + 1:i + 1 + r["block_size"]] for i in starts])
        return torch.from_numpy(x), torch.from_numpy(y)

    start = time.perf_counter()
    for step in range(max_iters):
        lr = get_lr_warmup_cosine(step, r["learning_rate"], r["warmup_iters"], max_iters, r["min_lr"])
        for g in opt.param_groups:
            g["lr"] = lr
        _, loss = model(*batch(train, rng))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r["grad_clip"])
        opt.step()
    seconds = time.perf_counter() - start
    model.eval()
    eval_rng = np.random.default_rng(0)
    with torch.no_grad():
        val_loss = float(np.mean([model(*batch(val, eval_rng))[1].item() for _ in range(r["eval_iters"])]))
    return {"val_loss": val_loss, "train_seconds": round(seconds, 2),
            "tokens_per_second": round(max_iters * r["batch_size"] * r["block_size"] / seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text")
    parser.add_argument("--max-iters", type=int, default=2000)
    parser.add_argument("--sides", nargs="+", default=["minigen", "torch"], choices=["minigen", "torch"])
    parser.add_argument("--worker", choices=["minigen", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default="out-convergence")
    args = parser.parse_args()
    if args.worker:
        result = (run_minigen(args.text, args.max_iters, args.out) if args.worker == "minigen"
                  else run_torch(args.text, args.max_iters))
        print(json.dumps(result))
        return
    rows = []
    for side in args.sides:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), args.text, "--max-iters", str(args.max_iters),
                               "--worker", side, "--out", args.out], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{side}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append((side, json.loads(proc.stdout.strip().splitlines()[-1])))
    print(f"| side | validation loss after {args.max_iters} steps | training seconds | tokens/s |")
    print("|---|---:|---:|---:|")
    for side, r in rows:
        val = "nan" if not math.isfinite(r["val_loss"]) else f"{r['val_loss']:.4f}"
        print(f"| {side} | {val} | {r['train_seconds']:.0f} | {r['tokens_per_second']:,.0f} |")


if __name__ == "__main__":
    main()
