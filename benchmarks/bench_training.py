"""Model-level measurements, one per process: training throughput of the GPTs and of the Seq2Seq model,
greedy generation with the KV cache, and start-up (import, first training step).

`python -m benchmarks` runs this module as a worker for each side and case:

    python -m benchmarks.bench_training --case gpt-small --side minigen-numba [--steps 30 --warmup 3]
                                        [--text PATH] [--profile 25]

and reads the JSON object printed on the last line. A side is minigen on the backend named by
MINIGEN_BACKEND (the runner sets it) or `torch` (benchmarks/torch_reference.py; transformers'
GPT2LMHeadModel for generation). Both sides train on the very same batches. A training step is
forward + backward + gradient clipping (1.0) + AdamW step; the warm-up steps are not timed, the first
of them is timed on its own (`first_step`: with Numba, loading the cached kernels). `--profile N`
prints the N functions with the most own time in the timed steps (cProfile) to stderr.

This module imports only the standard library at the top, so that `import minigen` / `import torch`
are timed in a fresh interpreter.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

GPT_SHAPES = {"gpt-small": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12),
              "gpt-medium": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=8)}
# Generation: the small GPT with room for prompt + 200 tokens, biases on as in GPT2LMHeadModel.
GENERATE = dict(n_layer=4, n_head=4, n_embd=128, block_size=256, vocab_size=65, prompt=8)
# Seq2Seq: minigen's `train seq2seq` defaults on dates (GRU, bidirectional, Bahdanau, hidden 256, batch 64).
SEQ2SEQ = dict(embedding_size=64, hidden_size=256, batch_size=64, learning_rate=3e-3, weight_decay=0.01)
GPT_OPTIM = dict(learning_rate=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
GRAD_CLIP = 1.0
VOCAB = 65  # random-token batches: the size of tinyshakespeare's character vocabulary

# (warm-up steps, timed steps) per case; for `generate`, (warm-up tokens, timed new tokens). About 3 s (small)
# and 8 s (medium) of timed steps: shorter windows varied by 10-15% from run to run on the 2-core machine.
# Seq2Seq steps differ in length (length-bucketed batches): 15 steps gave runs of one side 1.5-9x apart, so
# its timed steps are split into WINDOWS windows over the same batches, and the median window is reported.
STEPS = {"gpt-small": {"full": (3, 100), "quick": (1, 2)},
         "gpt-medium": {"full": (2, 12), "quick": (1, 1)},
         "seq2seq": {"full": (3, 100), "quick": (1, 2)},
         "generate": {"full": (8, 200), "quick": (4, 16)}}
WINDOWS = {"seq2seq": 5}
CASES = tuple(STEPS)


def timed_import(side):
    """Import the side's framework; returns (module, seconds)."""
    start = time.perf_counter()
    if side == "torch":
        import torch as module
    else:
        import minigen as module
    return module, time.perf_counter() - start


def profiled(function, top):
    """Run function() under cProfile when top > 0 and print the `top` entries by own time to stderr."""
    if not top:
        return function()
    import cProfile
    import pstats
    profile = cProfile.Profile()
    result = profile.runcall(function)
    pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(top)
    return result


def train(step, batches, warmup, tokens_of, top, windows=1):
    """Time training steps: the first warm-up step alone, the other warm-ups untimed, then the rest in
    `windows` consecutive windows of equal steps. The rate is the median window's; `spread` holds the slowest
    and fastest window. `step(batch)` returns the loss as a float; tokens_of(batch) counts a batch's tokens."""
    start = time.perf_counter()
    step(batches[0])
    first = time.perf_counter() - start
    for batch in batches[1:warmup]:
        step(batch)
    timed_batches = batches[warmup:]
    size = max(1, len(timed_batches) // windows)
    parts = [timed_batches[i:i + size] for i in range(0, size * (len(timed_batches) // size), size)]

    def timed():
        spans = []
        for part in parts:
            start = time.perf_counter()
            loss = [step(batch) for batch in part][-1]
            spans.append(time.perf_counter() - start)
        return spans, loss

    spans, loss = profiled(timed, top)
    if not math.isfinite(loss):
        raise FloatingPointError(f"the loss became {loss}")
    rates = sorted(sum(tokens_of(b) for b in part) / seconds for part, seconds in zip(parts, spans))
    steps = sum(len(part) for part in parts)
    return {"rate": statistics.median(rates), "spread": [rates[0], rates[-1]], "unit": "tokens/s", "step_ms": 1e3 * sum(spans) / steps,
            "steps": steps, "first_step": first, "loss": loss}


# ----- GPT --------------------------------------------------------------------------------------------
def text_tokens(path, rng):
    """Character ids of the text at `path` and the vocabulary size, or random ids over VOCAB."""
    import numpy as np
    if not path:
        return rng.integers(0, VOCAB, 1 << 20), VOCAB
    with open(path, encoding="utf-8") as f:
        codes = np.frombuffer(f.read().encode("utf-32-le"), dtype=np.uint32)
    chars, ids = np.unique(codes, return_inverse=True)
    return ids, len(chars)


def gpt_batches(shape, count, text):
    """`count` (x, y) batches of random windows, nanoGPT's get_batch, the same for every side."""
    import numpy as np
    rng = np.random.default_rng(0)
    data, vocab = text_tokens(text, rng)
    T, B = shape["block_size"], shape["batch_size"]
    if len(data) <= T:
        raise ValueError(f"--text {text!r} has {len(data)} characters; need more than block_size {T}")
    batches = []
    for _ in range(count):
        window = rng.integers(len(data) - T, size=B)[:, None] + np.arange(T)
        batches.append((data[window].astype(np.int64), data[window + 1].astype(np.int64)))
    return batches, vocab


def update(loss, optimizer, params, clip_grad_norm_):
    """The update every training case times, on either framework: clear the gradients, backward, clip at
    GRAD_CLIP, step; returns the loss as a float."""
    optimizer.zero_grad()
    loss.backward()
    clip_grad_norm_(params, GRAD_CLIP)
    optimizer.step()
    return loss.item()


def gpt_step_minigen(mg, shape, vocab):
    from minigen.models.gpt import GPT, GPTConfig
    from minigen.nn.utils import clip_grad_norm_
    mg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=shape["block_size"], n_layer=shape["n_layer"],
                          n_head=shape["n_head"], n_embd=shape["n_embd"], dropout=0.0, bias=False))
    optimizer = mg.optim.AdamW(mg.optim.adamw_param_groups(model, GPT_OPTIM["weight_decay"]),
                               lr=GPT_OPTIM["learning_rate"], betas=GPT_OPTIM["betas"])
    params = list(model.parameters())

    def step(batch):
        _, loss = model(*batch)
        return update(loss, optimizer, params, clip_grad_norm_)
    return step


def gpt_step_torch(torch, shape, vocab):
    from benchmarks.torch_reference import GPT, adamw_param_groups
    torch.manual_seed(0)
    model = GPT(vocab, shape["block_size"], shape["n_layer"], shape["n_head"], shape["n_embd"], bias=False)
    optimizer = torch.optim.AdamW(adamw_param_groups(model, GPT_OPTIM["weight_decay"]),
                                  lr=GPT_OPTIM["learning_rate"], betas=GPT_OPTIM["betas"])
    params = list(model.parameters())

    def step(batch):
        _, loss = model(*(torch.from_numpy(a) for a in batch))
        return update(loss, optimizer, params, torch.nn.utils.clip_grad_norm_)
    return step


def gpt_case(args, framework):
    shape = GPT_SHAPES[args.case]
    batches, vocab = gpt_batches(shape, args.warmup + args.steps, args.text)
    build = gpt_step_torch if args.side == "torch" else gpt_step_minigen
    step = build(framework, shape, vocab)
    return train(step, batches, args.warmup, lambda batch: batch[0].size, args.profile)


# ----- Seq2Seq ----------------------------------------------------------------------------------------
def seq2seq_case(args, framework):
    from minigen.data import Seq2SeqBatches, load_task
    count = args.warmup + args.steps
    data = load_task("dates", n_train=SEQ2SEQ["batch_size"] * count, n_valid=1, n_test=1, seed=0)
    loader = Seq2SeqBatches(data.train, data.src_vocab, data.tgt_vocab, batch_size=SEQ2SEQ["batch_size"],
                            shuffle=True, seed=0, bucket=True)
    batches = list(loader)
    sizes = dict(src_vocab_size=len(data.src_vocab), tgt_vocab_size=len(data.tgt_vocab),
                 embedding_size=SEQ2SEQ["embedding_size"], hidden_size=SEQ2SEQ["hidden_size"],
                 pad_id=data.tgt_vocab.pad_id)
    if args.side == "torch":
        step = seq2seq_step_torch(framework, sizes)
    else:
        step = seq2seq_step_minigen(framework, sizes, data)
    # target tokens: the target characters and eos of every row
    return train(step, batches, args.warmup, lambda batch: int(batch["tgt_lengths"].sum()), args.profile,
                 WINDOWS["seq2seq"])


def seq2seq_step_minigen(mg, sizes, data):
    from minigen.models.seq2seq import Seq2Seq, Seq2SeqConfig
    from minigen.nn.utils import clip_grad_norm_
    mg.manual_seed(0)
    config = Seq2SeqConfig(**sizes, bos_id=data.tgt_vocab.bos_id, eos_id=data.tgt_vocab.eos_id)
    model = Seq2Seq(config, data.src_vocab, data.tgt_vocab)
    params = list(model.parameters())
    optimizer = mg.optim.AdamW(mg.optim.adamw_param_groups(model, SEQ2SEQ["weight_decay"]),
                               lr=SEQ2SEQ["learning_rate"])

    def step(batch):
        logits = model(batch["src"], batch["src_lengths"], batch["tgt_in"])
        loss = model.loss(logits, batch["tgt_out"])
        return update(loss, optimizer, params, clip_grad_norm_)
    return step


def seq2seq_step_torch(torch, sizes):
    from benchmarks.torch_reference import Seq2Seq, adamw_param_groups
    torch.manual_seed(0)
    model = Seq2Seq(**sizes)
    optimizer = torch.optim.AdamW(adamw_param_groups(model, SEQ2SEQ["weight_decay"]), lr=SEQ2SEQ["learning_rate"])
    params = list(model.parameters())

    def step(batch):
        src, lengths, tgt_in, tgt_out = (torch.from_numpy(batch[key])
                                         for key in ("src", "src_lengths", "tgt_in", "tgt_out"))
        logits = model(src, lengths, tgt_in)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1),
                                                 ignore_index=-100)
        return update(loss, optimizer, params, torch.nn.utils.clip_grad_norm_)
    return step


# ----- generation -------------------------------------------------------------------------------------
def generate_case(args, framework):
    """Greedy decoding with the KV cache, batch 1: new tokens per second of one `generate` call."""
    import numpy as np
    g = GENERATE
    prompt = (np.arange(g["prompt"]) % g["vocab_size"])[None, :]
    if args.side == "torch":
        import transformers
        transformers.logging.set_verbosity_error()
        framework.manual_seed(0)
        config = transformers.GPT2Config(vocab_size=g["vocab_size"], n_positions=g["block_size"], n_embd=g["n_embd"],
                                         n_layer=g["n_layer"], n_head=g["n_head"], resid_pdrop=0.0, embd_pdrop=0.0,
                                         attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = transformers.GPT2LMHeadModel(config).eval()
        ids, mask = framework.from_numpy(prompt), framework.ones(prompt.shape, dtype=framework.long)

        def run(n):
            with framework.no_grad():
                out = model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                     use_cache=True)
            return out.shape[1] - prompt.shape[1]
    else:
        from minigen.models.gpt import GPT, GPTConfig
        framework.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=g["vocab_size"], block_size=g["block_size"], n_layer=g["n_layer"],
                              n_head=g["n_head"], n_embd=g["n_embd"], bias=True)).eval()

        def run(n):
            return model.generate(prompt, max_new_tokens=n, use_cache=True).shape[1] - prompt.shape[1]
    start = time.perf_counter()
    run(args.warmup)
    first = time.perf_counter() - start

    def timed():
        start = time.perf_counter()
        produced = run(args.steps)
        return time.perf_counter() - start, produced

    seconds, produced = profiled(timed, args.profile)
    if produced != args.steps:
        raise RuntimeError(f"generate produced {produced} new tokens, expected {args.steps}")
    return {"rate": produced / seconds, "unit": "tokens/s", "step_ms": 1e3 * seconds / produced, "steps": produced,
            "first_step": first}


def threads(side, framework):
    """The thread pools this side ran with: torch's, or NumPy's BLAS and (on the Numba backend) Numba's."""
    if side == "torch":
        return {"torch": framework.get_num_threads()}
    from benchmarks.common import blas_info
    pools = {"blas": blas_info()[1]}
    if side == "minigen-numba":
        import numba
        pools["numba"] = numba.get_num_threads()
    return pools


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES, required=True)
    parser.add_argument("--side", choices=("minigen-numba", "minigen-numpy", "torch"), required=True)
    parser.add_argument("--warmup", type=int, help="warm-up steps (tokens for generate); default per case")
    parser.add_argument("--steps", type=int, help="timed steps (new tokens for generate); default per case")
    parser.add_argument("--quick", action="store_true", help="the tiny default step counts")
    parser.add_argument("--text", help="a text file for the GPT batches (default: random tokens)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N functions with the most own time in the timed part (cProfile)")
    args = parser.parse_args(argv)
    warmup, steps = STEPS[args.case]["quick" if args.quick else "full"]
    args.warmup = warmup if args.warmup is None else args.warmup
    args.steps = steps if args.steps is None else args.steps
    if args.warmup < 1 or args.steps < 1:
        parser.error(f"--warmup and --steps must be >= 1, got {args.warmup} and {args.steps}")
    if args.text and not os.path.isfile(args.text):
        parser.error(f"--text: no file at {args.text!r}")
    framework, import_seconds = timed_import(args.side)
    if args.side != "torch":
        framework.tune_process()  # a training process of its own, as under the `minigen` command
        framework.set_backend(args.side.split("-")[1])
    case = {"seq2seq": seq2seq_case, "generate": generate_case}.get(args.case, gpt_case)
    result = case(args, framework)
    result["import"] = import_seconds
    result["threads"] = threads(args.side, framework)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
