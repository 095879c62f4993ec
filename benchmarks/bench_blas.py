"""The matrix products of one GPT training step, through NumPy's BLAS and (when installed) through PyTorch.

Every Linear of a training step makes three products: the forward x @ W^T, and the backward's dx = dy @ W and
dW = dy^T @ x. This script times exactly those, for the small and the medium GPT of the training benchmark,
in one process and with each library's own thread pool, so that what BLAS alone costs a step can be told
apart from what the rest of a framework costs (kernels, copies, the Python engine).

    python benchmarks/bench_blas.py [--repeat 5] [--markdown FILE]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import blas_info  # noqa: E402

MODELS = {"small GPT": dict(tokens=12 * 64, width=128, layers=4, vocab=65),
          "medium GPT": dict(tokens=8 * 256, width=384, layers=6, vocab=65)}


def products(tokens, width, layers, vocab):
    """(name, a, b, transpose_a) of one step: per block q/k/v, attention out, MLP in and out; then the head."""
    shapes = [(width, 3 * width), (width, width), (width, 4 * width), (4 * width, width)] * layers
    shapes.append((width, vocab))
    rng = np.random.default_rng(0)
    out = []
    for fan_in, fan_out in shapes:
        x = rng.standard_normal((tokens, fan_in), dtype=np.float32)
        w = rng.standard_normal((fan_out, fan_in), dtype=np.float32)
        dy = rng.standard_normal((tokens, fan_out), dtype=np.float32)
        out += [(x, w.T, False), (dy, w, False), (dy, x, True)]
    return out


def flops(work):
    return sum(2 * (a.shape[1] if t else a.shape[0]) * (a.shape[0] if t else a.shape[1]) * b.shape[1]
               for a, b, t in work)


def best_seconds(run, repeat):
    run()  # warm-up: thread pools start, caches fill
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def numpy_side(work):
    def run():
        for a, b, t in work:
            (a.T if t else a) @ b
    return run


def torch_side(work):
    import torch
    tensors = [(torch.from_numpy(a), torch.from_numpy(np.ascontiguousarray(b)), t) for a, b, t in work]

    def run():
        for a, b, t in tensors:
            torch.mm(a.t() if t else a, b)
    return run, torch.get_num_threads()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed repeats; the best is reported")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    library, threads = blas_info()
    try:
        import torch  # noqa: F401  (optional: only for the comparison column)
        has_torch = True
    except ImportError:
        has_torch = False
    lines = [f"NumPy {np.__version__} with {library} ({threads} threads)"
             + (f"; PyTorch {torch.__version__}" if has_torch else "; PyTorch not installed"), "",
             "| products of one step | GFLOP | NumPy BLAS ms | GFLOP/s | PyTorch ms | GFLOP/s | NumPy / PyTorch time |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, shape in MODELS.items():
        work = products(**shape)
        gflop = flops(work) / 1e9
        ours = best_seconds(numpy_side(work), args.repeat)
        row = f"| {name}: {len(work)} | {gflop:.2f} | {ours * 1e3:.1f} | {gflop / ours:.0f} |"
        if has_torch:
            run, torch_threads = torch_side(work)
            theirs = best_seconds(run, args.repeat)
            row += f" {theirs * 1e3:.1f} ({torch_threads} threads) | {gflop / theirs:.0f} | {ours / theirs:.2f} |"
        else:
            row += " - | - | - |"
        lines.append(row)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
