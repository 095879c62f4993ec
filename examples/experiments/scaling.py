"""Training cost against sequence length (GRU Seq2Seq against GPT), and GPT compute against size and context.

1. Sequence length: the reverse task with every string exactly L letters long, for L from 8 to 128; a GRU
   encoder-decoder with and without Bahdanau attention and a GPT, the same sizes (about 100,000 parameters)
   as long_range.py. Measured: the time of one training step (forward, backward, AdamW) on 32 pairs, per
   step, per sample and per token, and the number of steps the model must take one after another
   (recurrent cells: 2L + 1 per layer; a GPT layer: one for the whole sequence).
2. GPT size: 2 layers x 32 to 4 x 256 at context 64; GPT context: 4 layers x 128 at contexts 32 to 512,
   each on random tokens (cost does not depend on the data). Measured: time per token against the training
   FLOPs per token, 6N + 6 * layers * context * width (N the parameters outside the embeddings: 2N a token
   forward, twice that backward; the attention scores and their weighted sum add 2 * layers * context * width
   forward), and the GFLOP/s this achieves.

Each time is the median of several timed steps after untimed warm-up steps (kernel compilation, caches), in
CPU seconds of the process: run with one thread (NUMBA_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1), that is the
compute a step costs, without the time spent waiting for a core shared with other jobs.

    python examples/experiments/scaling.py [--quick] [--out DIR]
"""
import argparse
import os
import sys
import time

import numpy as np

# common.py sits beside this script (and puts the repository root on the path)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import RESULTS, curves_by, gpt_learner, markdown_table, seq2seq_learner, write_results  # noqa: E402
from long_range import SETTINGS as LONG_RANGE  # noqa: E402
from minigen import optim, plots, random  # noqa: E402
from minigen.data import load_task  # noqa: E402
from minigen.models.gpt import GPT, GPTConfig  # noqa: E402

SETTINGS = {
    "full": {"lengths": (8, 16, 32, 64, 128), "warmup": 2, "repeats": 5, "models": LONG_RANGE["full"]["models"],
             "sizes": ((2, 32), (2, 64), (4, 128), (4, 256)), "size_context": 64, "size_batch": 16,
             "context_model": (4, 128), "contexts": (32, 64, 128, 256, 512), "context_tokens": 4096},
    "quick": {"lengths": (4, 8), "warmup": 1, "repeats": 1, "models": LONG_RANGE["quick"]["models"],
              "sizes": ((1, 16), (1, 32)), "size_context": 16, "size_batch": 4,
              "context_model": (1, 16), "contexts": (8, 16), "context_tokens": 64},
}
NAMES = {"none": "Seq2Seq, no attention", "bahdanau": "Seq2Seq, Bahdanau attention", "gpt": "GPT"}
BATCH = 32


def median_seconds(step, warmup, repeats):
    """Median CPU seconds of `step()` over `repeats` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    return float(np.median(times))


def training_step(model, loss_fn):
    optimizer = optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def by_length(settings):
    """Training cost of each family on reverse strings of each length."""
    rows = []
    for length in settings["lengths"]:
        data = load_task("reverse", n_train=BATCH * (settings["warmup"] + settings["repeats"]), n_valid=1, n_test=1,
                         min_len=length, max_len=length)
        for kind, sizes in settings["models"].items():
            learner = gpt_learner(data, batch_size=BATCH, **sizes) if kind == "gpt" else \
                seq2seq_learner(data, kind, batch_size=BATCH, **sizes)
            seconds = median_seconds(training_step(learner.model, learner.batch_loss),
                                     settings["warmup"], settings["repeats"])
            sequential = 1 if kind == "gpt" else 2 * length + 1  # encoder over L tokens, decoder over L + 1
            rows.append({"model": NAMES[kind], "length": length, "parameters": learner.parameters(),
                         "sequential_steps_per_layer": sequential, "ms_per_step": 1000 * seconds,
                         "ms_per_sample": 1000 * seconds / BATCH,
                         "us_per_token": 1e6 * seconds / (BATCH * (2 * length + 1))})
            print(rows[-1], flush=True)
    return rows


def gpt_cost(n_layer, n_embd, context, batch, settings):
    """One GPT's training time per token on random tokens, with its parameters and FLOPs per token."""
    random.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=context, n_layer=n_layer, n_head=4, n_embd=n_embd, bias=False))
    rng = np.random.default_rng(0)
    x, y = rng.integers(65, size=(batch, context)), rng.integers(65, size=(batch, context))
    seconds = median_seconds(training_step(model, lambda: model(x, y)[1]), settings["warmup"], settings["repeats"])
    non_embedding = model.num_parameters(exclude_embeddings=True)
    flops = 6 * non_embedding + 6 * n_layer * context * n_embd
    return {"layers": n_layer, "width": n_embd, "context": context, "batch": batch,
            "parameters": model.num_parameters(), "non_embedding_parameters": non_embedding,
            "train_flops_per_token": flops, "ms_per_step": 1000 * seconds,
            "us_per_token": 1e6 * seconds / (batch * context), "gflops": flops * batch * context / seconds / 1e9}


def gpt_scaling(settings):
    sizes = [gpt_cost(layers, width, settings["size_context"], settings["size_batch"], settings)
             for layers, width in settings["sizes"]]
    layers, width = settings["context_model"]
    contexts = [gpt_cost(layers, width, context, max(1, settings["context_tokens"] // context), settings)
                for context in settings["contexts"]]
    for row in sizes + contexts:
        print(row, flush=True)
    return sizes, contexts


def tables(length_rows, sizes, contexts):
    shortest = {r["model"]: r for r in length_rows if r["length"] == length_rows[0]["length"]}
    first = markdown_table(
        ["model", "parameters", "length L", "sequential steps per layer", "CPU ms per step (32 pairs)", "ms per sample",
         "µs per token", "time per step vs shortest"],
        [[r["model"], f"{r['parameters']:,}", r["length"], r["sequential_steps_per_layer"], f"{r['ms_per_step']:,.1f}",
          f"{r['ms_per_sample']:.2f}", f"{r['us_per_token']:.1f}",
          f"{r['ms_per_step'] / shortest[r['model']]['ms_per_step']:.1f}x"] for r in length_rows])

    def gpt_table(rows):
        return markdown_table(
            ["layers x width", "context", "batch", "parameters", "training MFLOP per token", "CPU ms per step",
             "µs per token", "GFLOP/s"],
            [[f"{r['layers']} x {r['width']}", r["context"], r["batch"], f"{r['parameters']:,}",
              f"{r['train_flops_per_token'] / 1e6:.2f}", f"{r['ms_per_step']:,.1f}", f"{r['us_per_token']:.2f}",
              f"{r['gflops']:.1f}"] for r in rows])
    return (f"Training cost against sequence length (reverse task, every string L letters, 32 pairs a step):\n\n"
            f"{first}\n\nGPT training cost against model size:\n\n{gpt_table(sizes)}\n\n"
            f"GPT training cost against context length:\n\n{gpt_table(contexts)}")


def run(quick=False, out=RESULTS):
    settings = SETTINGS["quick" if quick else "full"]
    length_rows = by_length(settings)
    sizes, contexts = gpt_scaling(settings)
    write_results(out, "scaling", tables(length_rows, sizes, contexts),
                  {"quick": quick, "settings": settings, "rows": length_rows, "gpt_sizes": sizes,
                   "gpt_contexts": contexts})
    curves = curves_by(length_rows, lambda r: r["model"], "length", "ms_per_sample")
    paths = [plots.save_loss_curves(curves, os.path.join(out, "scaling_length.png"), log_y=True,
                                    title="training time per sample against length", xlabel="length L",
                                    ylabel="ms per sample")]
    for key, rows, xlabel in (("size", sizes, "training FLOPs per token"), ("context", contexts, "context length")):
        x = [r["train_flops_per_token"] if key == "size" else r["context"] for r in rows]
        paths.append(plots.save_loss_curves({"GPT": (x, [r["us_per_token"] for r in rows])},
                                            os.path.join(out, f"scaling_{key}.png"), log_y=True,
                                            title=f"GPT training time per token against {key}", xlabel=xlabel,
                                            ylabel="µs per token"))
    print(f"wrote {', '.join(os.path.basename(p) for p in paths)}, scaling.md and scaling.json to {out}")
    return length_rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two short lengths and two tiny GPTs, one step each")
    parser.add_argument("--out", default=RESULTS, help="directory for the tables and plots (default: results/)")
    args = parser.parse_args(argv)
    run(args.quick, args.out)


if __name__ == "__main__":
    main()
