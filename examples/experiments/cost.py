"""What a model costs: training and generation speed against model size, NumPy backend against Numba.

For three sizes of GPT and of GRU + Bahdanau Seq2Seq, on batches of the dates task (64 pairs per
training step; 11 new tokens per generated sequence, stopping at no eos, so every model does the same
work), measures training tokens/s and greedy generation tokens/s, batched (250 sequences at a time)
and one sequence at a time. Each backend runs in its own process, chosen with
``minigen.set_backend``, so that neither inherits the other's compiled kernels or warm caches; and
each runs with 1 and with 2 OpenBLAS threads (OPENBLAS_NUM_THREADS, which must be set before NumPy
loads), because on two cores the BLAS threads can cost small models more than they give.
Models are untrained: speed does not depend on the weights.

    python examples/experiments/cost.py [--quick] [--out DIR]
"""
import argparse
import json
import os
import subprocess
import sys
import time

# common.py sits beside this script (and puts the repository root on the path)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import minigen as mg  # noqa: E402
from common import RESULTS, curves_by  # noqa: E402
from minigen import optim, plots  # noqa: E402
from minigen.data import Seq2SeqBatches, load_task  # noqa: E402
from minigen.models.gpt import GPT, GPTConfig  # noqa: E402
from minigen.models.seq2seq import Seq2Seq, Seq2SeqConfig  # noqa: E402
from minigen.training.pairs_gpt import encode_pair, encode_prompt, left_pad, pairs_batch, pairs_tokenizer  # noqa: E402

BACKENDS = ("numpy", "numba")
NEW_TOKENS = 11  # a date and its eos
# (family, size name, model options)
SIZES = (("GPT", "small", dict(n_layer=2, n_head=4, n_embd=64)),
         ("GPT", "medium", dict(n_layer=4, n_head=4, n_embd=128)),
         ("GPT", "large", dict(n_layer=6, n_head=8, n_embd=256)),
         ("Seq2Seq", "small", dict(embedding_size=32, hidden_size=64)),
         ("Seq2Seq", "medium", dict(embedding_size=32, hidden_size=128)),
         ("Seq2Seq", "large", dict(embedding_size=64, hidden_size=256)))
SETTINGS = {"full": dict(train_steps=10, batch_sequences=500, single_sequences=20, sizes=("small", "medium", "large"),
                         blas_threads=(1, 2)),
            "quick": dict(train_steps=1, batch_sequences=20, single_sequences=2, sizes=("small",), blas_threads=(1,))}


def _timed(fn, repeats):
    """Seconds per call of fn(), after one untimed call (compilation, caches)."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _gpt_workload(data, options):
    tokenizer = pairs_tokenizer(data)
    pairs = [encode_pair(tokenizer, s, t) for s, t in data.train]
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, bias=False, **options))
    x, y = pairs_batch(pairs[:64], pad_id=0)
    tokens = int(sum(len(ids) - 1 for ids, _ in pairs[:64]))

    def train_step(optimizer):
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def generate(sources):
        ids, mask = left_pad([encode_prompt(tokenizer, s) for s in sources], pad_id=0)
        model.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, eos_token_id=None)
    return model, train_step, tokens, generate


def _seq2seq_workload(data, options):
    model = Seq2Seq(Seq2SeqConfig(len(data.src_vocab), len(data.tgt_vocab), attention="bahdanau", **options),
                    data.src_vocab, data.tgt_vocab)
    batch = next(iter(Seq2SeqBatches(data.train[:64], data.src_vocab, data.tgt_vocab, batch_size=64, shuffle=False)))
    tokens = int(batch["src_lengths"].sum() + batch["tgt_lengths"].sum())

    def train_step(optimizer):
        loss = model.loss(model(batch["src"], batch["src_lengths"], batch["tgt_in"]), batch["tgt_out"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def generate(sources):
        ids, mask = model.encode_sources(sources)
        model.generate(ids, attention_mask=mask, max_length=NEW_TOKENS + 1, eos_token_id=None)
    return model, train_step, tokens, generate


def measure(backend, quick):
    """Every size of both families on one backend (call in a fresh process)."""
    settings = SETTINGS["quick" if quick else "full"]
    mg.set_backend(backend)
    data = load_task("dates", n_train=1000, n_valid=10, n_test=settings["batch_sequences"], seed=0)
    sources = [s for s, _ in data.test]
    rows = []
    for family, size, options in SIZES:
        if size not in settings["sizes"]:
            continue
        mg.manual_seed(0)
        workload = _gpt_workload if family == "GPT" else _seq2seq_workload
        model, train_step, tokens, generate = workload(data, options)
        optimizer = optim.AdamW(model.parameters(), lr=1e-4)
        step_seconds = _timed(lambda: train_step(optimizer), settings["train_steps"])
        batch_seconds = _timed(lambda: [generate(sources[i:i + 250]) for i in range(0, len(sources), 250)], 1)
        single = sources[:settings["single_sequences"]]
        single_seconds = _timed(lambda: [generate([s]) for s in single], 1)
        rows.append({"family": family, "size": size, "parameters": model.num_parameters(),
                     "backend": mg.get_backend(), "requested_backend": backend,
                     "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
                     "train_ms_per_step": round(1000 * step_seconds, 1),
                     "train_tokens_per_second": round(tokens / step_seconds),
                     "generate_tokens_per_second_batched": round(len(sources) * NEW_TOKENS / batch_seconds),
                     "generate_tokens_per_second_single": round(len(single) * NEW_TOKENS / single_seconds)})
        print(f"{family} {size}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def run(quick=False, out=RESULTS):
    """Measure each backend and BLAS thread count in a subprocess; print and save the table and plot."""
    rows = []
    for threads in SETTINGS["quick" if quick else "full"]["blas_threads"]:
        for backend in BACKENDS:
            print(f"== backend {backend}, {threads} BLAS thread(s) ==", flush=True)
            command = [sys.executable, os.path.abspath(__file__), "--worker", backend] + (["--quick"] if quick else [])
            env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
            result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, env=env)
            rows += json.loads(result.stdout)
    rows.sort(key=lambda r: (r["family"], r["parameters"], r["requested_backend"], r["blas_threads"]))
    header = ("| model | size | parameters | backend | BLAS threads | train ms/step | train tokens/s | "
              "generate tokens/s, batch 250 | generate tokens/s, batch 1 |")
    lines = [header, "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        backend = r["backend"] if r["backend"] == r["requested_backend"] else \
            f"{r['requested_backend']} (unavailable, ran {r['backend']})"
        lines.append(f"| {r['family']} | {r['size']} | {r['parameters']:,} | {backend} | {r['blas_threads']} | "
                     f"{r['train_ms_per_step']:,} | {r['train_tokens_per_second']:,} | "
                     f"{r['generate_tokens_per_second_batched']:,} | {r['generate_tokens_per_second_single']:,} |")
    table = "\n".join(lines)
    print(f"\nTraining (batches of 64 dates) and greedy generation ({NEW_TOKENS} tokens a sequence):\n{table}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cost.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "cost.json"), "w", encoding="utf-8") as f:
        json.dump({"quick": quick, "rows": rows}, f, indent=1)
    paths = []
    for key, kind in (("train_tokens_per_second", "training"), ("generate_tokens_per_second_batched", "generation")):
        curves = curves_by(rows, lambda r: f"{r['family']}, {r['requested_backend']}, {r['blas_threads']} BLAS thread(s)",
                           "parameters", key)
        paths.append(plots.save_loss_curves(curves, os.path.join(out, f"cost_{kind}.png"), log_y=True,
                                            title=f"{kind} speed against model size", xlabel="parameters",
                                            ylabel="tokens/s"))
    print(f"wrote {', '.join(os.path.basename(p) for p in paths)}, cost.md and cost.json to {out}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small size of each family, a few steps")
    parser.add_argument("--out", default=RESULTS, help="directory for the table and plot (default: results/)")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args.quick)))
    else:
        run(args.quick, args.out)


if __name__ == "__main__":
    main()
