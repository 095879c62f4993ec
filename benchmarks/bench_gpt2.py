"""GPT-2 at real scale: loading, memory, prompt processing and decoding, minigen beside transformers.

    python -m benchmarks.bench_gpt2 [--case gpt2-small|gpt2-medium] [--rounds 3] [--new-tokens 128]
                                    [--directory DIR] [--no-transformers] [--quick]
                                    [--only load prefill decode decode8 rss]
                                    [--llama-bench BIN --gguf F32.gguf [Q8_0.gguf]]

The checkpoint is GPT-2-shaped with random weights (no hub): written by transformers' `save_pretrained` when
it is installed, else by minigen's own. Every measurement runs in a fresh process, the sides alternate round
by round (minigen float32, minigen int8, transformers) and medians with their spread are printed:

- load: `from_pretrained` seconds with the file in the page cache (int8: quantizing on load included);
- prefill: one 1 x 1024 prompt through the model filling the KV cache, the next-token logits of its last
  position only (transformers: `logits_to_keep=1`), tokens/s;
- decode: greedy generation of --new-tokens tokens after an 8-token prompt, batch 1 and batch 8, tokens/s
  (batch 8 counts 8 tokens a step);
- peak RSS of a process that loads the model and generates 256 tokens, MiB.

The machine's streaming-read bandwidth on all cores (a parallel sum over 512 MiB) is probed in each minigen
batch-1 decoding process just before and just after it decodes (on a shared machine it moved between 15 and 25
GB/s from one minute to the next), and with it the decoding limit it implies: every token reads every weight
once, so batch-1 decoding can run at most at bandwidth / weight bytes tokens/s (float32: 4 bytes a weight, int8:
1 byte plus a float32 scale a row). Each run is set against its own probes.

With --llama-bench (llama.cpp's `llama-bench` binary) and --gguf (the same checkpoint converted by llama.cpp's
`convert_hf_to_gguf.py`, --outtype f32 and optionally q8_0), llama.cpp takes its turn in the same rounds for
prefill and batch-1 decoding (`llama-bench -p 1024 -n 0`, and `-pg 8,NEW` counted as the other sides are: new
tokens over the time of the prompt and the new tokens; one repetition after its warm-up, on as many threads as
minigen uses): this machine's bandwidth moves so much from hour to hour that only a figure from the same run says
where minigen stands against it.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

CASES = {"gpt2-small": dict(n_layer=12, n_head=12, n_embd=768),
         "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
         "tiny": dict(n_layer=2, n_head=2, n_embd=64)}  # --quick: the benchmark's own test
SIDES = ("minigen", "minigen-int8", "transformers")
LLAMA_SIDES = ("llama.cpp-f32", "llama.cpp-q8_0")  # with --llama-bench: prefill and batch-1 decoding only
TASKS = {"load": ("load", 1), "prefill": ("prefill", 1), "decode": ("decode", 1), "decode8": ("decode", 8),
         "rss": ("rss", 1)}
PROMPT = 8


def transformers_available():
    import importlib.util
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))


def write_checkpoint(directory, case):
    """A GPT-2-shaped checkpoint with random weights in `directory`; returns who wrote it."""
    shape = CASES[case]
    if transformers_available():
        import torch
        import transformers
        torch.manual_seed(0)
        config = transformers.GPT2Config(**shape, **({"n_positions": 512} if case == "tiny" else {}))
        transformers.GPT2LMHeadModel(config).save_pretrained(directory)
        return "transformers"
    import minigen
    from minigen.models.gpt import GPT, GPTConfig
    minigen.manual_seed(0)
    GPT(GPTConfig(**shape, **({"block_size": 512} if case == "tiny" else {}))).save_pretrained(directory)
    return "minigen"


def stream_bandwidth(megabytes=512):
    """GB/s of a parallel sum over `megabytes` on all of Numba's threads, each summing one contiguous half
    (the best of 5)."""
    from numba import get_num_threads, njit, prange

    @njit(parallel=True, fastmath=True)
    def total(blocks):  # one row per thread; each inner loop starts at 0, so it vectorizes
        sums = np.zeros(blocks.shape[0], np.float32)
        for c in prange(blocks.shape[0]):
            row, s = blocks[c], np.float32(0.0)
            for i in range(row.size):
                s += row[i]
            sums[c] = s
        return sums.sum()

    blocks = np.ones((get_num_threads(), megabytes * 2 ** 20 // 4 // get_num_threads()), np.float32)
    total(blocks)
    best = min(_seconds(lambda: total(blocks)) for _ in range(5))
    return blocks.nbytes / best / 1e9


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def weight_bytes(directory):
    """(float32 bytes, int8 bytes) a decoding step reads: every weight matrix (the tied head once) and vector."""
    from minigen.io.safetensors import load_file
    tensors = load_file(os.path.join(directory, "model.safetensors"), mmap=True)
    f32 = sum(a.size * 4 for name, a in tensors.items() if "wpe" not in name and "attn.bias" not in name)
    int8 = sum(a.size + (a.shape[0] * 4 if a.ndim == 2 else 3 * a.size) for name, a in tensors.items()
               if "wpe" not in name and "attn.bias" not in name)
    return f32, int8


# ----- one side's measurements, in a worker process -----------------------------------------------
def load(side, directory):
    if side == "transformers":
        import torch
        import transformers
        transformers.logging.set_verbosity_error()
        torch.set_grad_enabled(False)
        return transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
    from minigen.models.gpt import GPT
    return GPT.from_pretrained(directory, quantize="int8" if side == "minigen-int8" else None)


def generate(side, model, prompt, new_tokens):
    if side == "transformers":
        import torch
        ids = torch.tensor(prompt)
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, do_sample=False, pad_token_id=0).numpy()
    return model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)


def prefill(side, model, prompt):
    if side == "transformers":
        import torch
        return model(torch.tensor(prompt), use_cache=True, logits_to_keep=1).logits[:, -1].numpy()
    state, prefix = model.start_decoding(prompt, max_length=prompt.shape[1])
    return model.decode_step(prefix, state)[0]


def measure(side, directory, task, new_tokens, rows):
    """One measurement (a dict) of `task` for `side`."""
    with open(os.path.join(directory, "model.safetensors"), "rb") as f:  # into the page cache
        while f.read(1 << 24):
            pass
    if task == "load":
        load(side, directory)  # the first load imports and compiles what loading needs
        return {"seconds": _seconds(lambda: load(side, directory))}
    model = load(side, directory)
    vocab, block = model.config.vocab_size, getattr(model.config, "n_positions", None) or model.config.block_size
    rng = np.random.default_rng(0)
    if task == "prefill":
        prompt = rng.integers(0, vocab, (1, block))
        prefill(side, model, prompt[:, :16])  # warm-up: kernels, thread pools
        return {"tokens_per_second": block / _seconds(lambda: prefill(side, model, prompt))}
    if task == "rss":
        generate(side, model, rng.integers(0, vocab, (1, PROMPT)), 256)
        return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    prompt = rng.integers(0, vocab, (rows, PROMPT))
    generate(side, model, prompt, 4)  # warm-up
    tokens = []
    probes = [stream_bandwidth()] if side != "transformers" and rows == 1 else []
    seconds = _seconds(lambda: tokens.append(generate(side, model, prompt, new_tokens)))
    result = {"tokens_per_second": rows * new_tokens / seconds, "tokens": tokens[0][:, PROMPT:].tolist()}
    if probes:  # the machine's bandwidth moves from minute to minute: probe it just before and after decoding
        result["gb_per_second"] = (probes[0] + stream_bandwidth()) / 2
    return result


def run_llama(binary, gguf, task, new_tokens, rows):
    """llama-bench's tokens/s for prefill (1 x 1024) or batch-1 decoding of new_tokens, None for other tasks."""
    if task not in ("prefill", "decode") or rows != 1:
        return None
    from minigen.training.run import thread_count
    # decoding as the other sides count it: the prompt's processing and the new tokens timed together, new tokens
    # counted (llama-bench's -n alone would time the new tokens without the prompt)
    lengths = ["-p", "1024", "-n", "0"] if task == "prefill" else \
        ["-p", "0", "-n", "0", "-pg", f"{PROMPT},{new_tokens}"]
    out = subprocess.run([binary, "-m", gguf, *lengths, "-r", "1", "-t", str(thread_count()), "-o", "json"],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{binary} failed:\n" + "\n".join(out.stderr.strip().splitlines()[-6:]))
    test = json.loads(out.stdout)[0]
    return {"tokens_per_second": (test["n_gen"] or test["n_prompt"]) / (test["avg_ns"] / 1e9)}


def run(side, directory, task, new_tokens, rows=1):
    out = subprocess.run([sys.executable, __file__, "--worker", side, "--task", task, "--directory", directory,
                          "--new-tokens", str(new_tokens), "--rows", str(rows)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{side} {task} failed:\n" + "\n".join(out.stderr.strip().splitlines()[-6:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(values, digits=1):
    """'median (min-max)' of the values."""
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("gpt2-small", "gpt2-medium"), default="gpt2-small")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--directory", help="reuse (or write) the checkpoint here instead of a temporary directory")
    parser.add_argument("--no-transformers", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a 2-layer model, 1 round, 8 tokens (a smoke run)")
    parser.add_argument("--only", nargs="+", choices=TASKS, default=list(TASKS),
                        help="measure only these")
    parser.add_argument("--llama-bench", metavar="BIN", help="llama.cpp's llama-bench, run beside minigen")
    parser.add_argument("--gguf", nargs="+", metavar="FILE", default=[],
                        help="the checkpoint converted for llama.cpp: float32, then optionally q8_0")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if bool(args.llama_bench) != bool(args.gguf) or len(args.gguf) > 2:
        parser.error(f"--llama-bench and --gguf go together, with one or two GGUF files; got --llama-bench "
                     f"{args.llama_bench!r} and --gguf {args.gguf!r}")
    if args.worker:
        print(json.dumps(measure(args.worker, args.directory, args.task, args.new_tokens, args.rows)))
        return
    case = "tiny" if args.quick else args.case
    rounds, new_tokens = (1, 8) if args.quick else (args.rounds, args.new_tokens)
    sides = [s for s in SIDES if s != "transformers" or (transformers_available() and not args.no_transformers)]
    gguf = dict(zip(LLAMA_SIDES, args.gguf))
    sides += list(gguf)
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.directory or scratch
        if not os.path.isfile(os.path.join(directory, "model.safetensors")):
            writer = write_checkpoint(directory, case)
        else:
            writer = "an existing directory"
        f32_bytes, int8_bytes = weight_bytes(directory)
        tasks = [TASKS[name] for name in args.only]
        results = {(s, t, r): [] for s in sides for t, r in tasks}
        for round_ in range(rounds):
            for task, rows in tasks:
                for side in (sides if round_ % 2 == 0 else sides[::-1]):
                    if side in gguf:
                        result = run_llama(args.llama_bench, gguf[side], task, new_tokens, rows)
                        if result is None:
                            continue
                    else:
                        result = run(side, directory, task, new_tokens, rows)
                    results[(side, task, rows)].append(result)
                    print(f"  round {round_ + 1} {side:13} {task} x{rows}: "
                          f"{ {k: v for k, v in result.items() if k != 'tokens'} }", flush=True)
    print(f"\n{case} ({CASES[case]}), checkpoint written by {writer}; medians (min-max) of {rounds} rounds; "
          f"load average {os.getloadavg()[0]:.1f}")
    decoding = {s: results.get((s, "decode", 1), []) for s in ("minigen", "minigen-int8")}
    bandwidth = [r["gb_per_second"] for runs in decoding.values() for r in runs]
    if bandwidth:
        bw = statistics.median(bandwidth)
        print(f"streaming read on all cores, probed just before and after each batch-1 decoding run: "
              f"{summary(bandwidth)} GB/s -> batch-1 decoding limit {bw * 1e9 / f32_bytes:.1f} tokens/s in float32 "
              f"({f32_bytes / 1e6:.0f} MB a token), {bw * 1e9 / int8_bytes:.1f} in int8 ({int8_bytes / 1e6:.0f} MB)")
    rows = [("from_pretrained, s", "load", 1, "seconds", 2), ("prefill 1 x 1024 (block), tokens/s", "prefill", 1,
            "tokens_per_second", 0), ("decode batch 1, tokens/s", "decode", 1, "tokens_per_second", 1),
            ("decode batch 8, tokens/s", "decode", 8, "tokens_per_second", 1),
            ("peak RSS generating 256 tokens, MiB", "rss", 1, "peak_rss_mib", 0)]
    rows = [row for row in rows if results.get((sides[0], row[1], row[2]))]
    print(f"{'':38}" + "".join(f"{s:>28}" for s in sides))
    for label, task, n, key, digits in rows:
        print(f"{label:38}" + "".join(f"{summary([r[key] for r in results[(s, task, n)]], digits):>28}"
                                      for s in sides))
    med = {(s, t, n): statistics.median([r[k] for r in results[(s, t, n)]]) for s in sides
           for _, t, n, k, _ in rows if results[(s, t, n)]}
    for ours, theirs, task in (("minigen", "llama.cpp-f32", "decode"), ("minigen-int8", "llama.cpp-q8_0", "decode"),
                               ("minigen", "llama.cpp-f32", "prefill")):
        if (ours, task, 1) in med and (theirs, task, 1) in med:
            print(f"{ours} / {theirs}, {'batch-1 decoding' if task == 'decode' else 'prefill'}: "
                  f"{med[(ours, task, 1)] / med[(theirs, task, 1)]:.2f}x")
    if not bandwidth:
        return
    for s, nbytes in (("minigen", f32_bytes), ("minigen-int8", int8_bytes)):  # each run against its own probes
        shares = [r["tokens_per_second"] * nbytes / (r["gb_per_second"] * 1e9) for r in decoding[s]]
        print(f"{s} batch-1 decoding: {statistics.median(shares):.0%} ({min(shares):.0%}-{max(shares):.0%}) of the "
              f"bandwidth limit ({nbytes / 1e6:.0f} MB a token at the probed GB/s)")
    if ("llama.cpp-f32", "decode", 1) in med:  # it reads the same float32 weights; probed in minigen's runs only
        share = med[("llama.cpp-f32", "decode", 1)] * f32_bytes / (statistics.median(bandwidth) * 1e9)
        print(f"llama.cpp-f32 batch-1 decoding: {share:.0%} of the limit at the median probe")
    print(f"int8 / float32 batch-1 decoding: "
          f"{med[('minigen-int8', 'decode', 1)] / med[('minigen', 'decode', 1)]:.2f}x")
    if "transformers" in sides:
        for label, task, n, _, _ in rows:
            print(f"  minigen / transformers, {label}: {med[('minigen', task, n)] / med[('transformers', task, n)]:.2f}x")
        same = results[("minigen", "decode", 1)][-1]["tokens"] == results[("transformers", "decode", 1)][-1]["tokens"]
        print(f"  greedy tokens identical to transformers' (batch 1): {same}")


if __name__ == "__main__":
    main()
