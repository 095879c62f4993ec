"""Greedy generation speed: minigen with and without its KV cache, and transformers' generate beside it.

    python benchmarks/bench_generation.py [--new-tokens 256] [--rounds 3] [--no-transformers]

The model is the small character GPT (4 layers, 4 heads, width 128, block 512, vocabulary 65) with
random weights, batch 1, a prompt of 8 tokens. Each measurement runs in its own subprocess (a warm-up
generation first, then one timed run); the sides alternate round by round and the medians are reported.
transformers' side (when torch and transformers are installed) loads the very same weights from a
directory written by `save_pretrained`, and its tokens are checked against minigen's.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

PROMPT = np.arange(8)[None] % 65
SIDES = ("minigen-cached", "minigen-uncached", "transformers")


def write_model(directory):
    import minigen
    from minigen.models.gpt import GPT, GPTConfig
    minigen.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=512, n_layer=4, n_head=4, n_embd=128, bias=False))
    model.save_pretrained(directory)


def measure(side, directory, new_tokens):
    """One timed greedy generation of `new_tokens` tokens: (seconds, tokens)."""
    if side == "transformers":
        import torch
        import transformers
        transformers.logging.set_verbosity_error()
        model = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
        prompt = torch.tensor(PROMPT)
        mask = torch.ones_like(prompt)

        def run(n):
            with torch.no_grad():
                return model.generate(prompt, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                      do_sample=False, pad_token_id=0).numpy()
    else:
        from minigen.models.gpt import GPT
        model = GPT.from_pretrained(directory)
        use_cache = side == "minigen-cached"

        def run(n):
            return model.generate(PROMPT, max_new_tokens=n, use_cache=use_cache)
    run(8)  # warm-up: first calls, kernel compilation, allocator
    start = time.perf_counter()
    tokens = run(new_tokens)
    return time.perf_counter() - start, tokens[0, PROMPT.shape[1]:].tolist()


def worker(args):
    seconds, tokens = measure(args.worker, args.directory, args.new_tokens)
    print(json.dumps({"seconds": seconds, "tokens": tokens}))


def available(side):
    if side != "transformers":
        return True
    import importlib.util
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-transformers", action="store_true")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--directory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    sides = [s for s in SIDES if available(s) and not (s == "transformers" and args.no_transformers)]
    with tempfile.TemporaryDirectory() as directory:
        write_model(directory)
        times, tokens = {s: [] for s in sides}, {}
        for round_ in range(args.rounds):
            for side in sides if round_ % 2 == 0 else sides[::-1]:
                out = subprocess.run([sys.executable, __file__, "--worker", side, "--directory", directory,
                                      "--new-tokens", str(args.new_tokens)], check=True, capture_output=True, text=True)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                times[side].append(result["seconds"])
                tokens[side] = result["tokens"]
    print(f"greedy generation, batch 1, prompt 8, {args.new_tokens} new tokens; 4 layers, 4 heads, width 128, "
          f"block 512, vocab 65; medians of {args.rounds} runs; load average {os.getloadavg()[0]:.1f}")
    rate = {s: args.new_tokens / statistics.median(t) for s, t in times.items()}
    for side in sides:
        print(f"  {side:17} {rate[side]:8.1f} tokens/s   ({statistics.median(times[side]) * 1e3:7.1f} ms)")
    print(f"  KV cache speed-up (cached / uncached): {rate['minigen-cached'] / rate['minigen-uncached']:.1f}x")
    if "transformers" in rate:
        print(f"  minigen cached / transformers: {rate['minigen-cached'] / rate['transformers']:.2f}x")
        same = tokens["transformers"] == tokens["minigen-cached"]
        print(f"  same tokens as transformers: {same}")
    print(f"  cached tokens == uncached tokens: {tokens['minigen-cached'] == tokens['minigen-uncached']}")


if __name__ == "__main__":
    main()
