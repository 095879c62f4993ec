"""The matrix products of one GPT training step, through NumPy's BLAS, minigen's `kernels.gemm` and (when
installed) PyTorch.

Every Linear of a training step makes three products: the forward x @ W^T, and the backward's dx = dy @ W and
dW = dy^T @ x. This script times exactly those, for the small and the medium GPT of the training benchmark,
in one process and with each library's own thread pool, so that what BLAS alone costs a step can be told
apart from what the rest of a framework costs (kernels, copies, the Python engine). minigen's column is its
Numba backend: the products split across its threads, each piece on the BLAS it chose (MKL when the optional
mkl package is installed, else NumPy's OpenBLAS held at one thread; MINIGEN_BLAS chooses).

    python benchmarks/bench_blas.py [--repeat 5] [--markdown FILE]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import blas_info, products_library  # noqa: E402

MODELS = {"small GPT": dict(tokens=12 * 64, width=128, layers=4, vocab=65),
          "medium GPT": dict(tokens=8 * 256, width=384, layers=6, vocab=65)}


def products(tokens, width, layers, vocab):
    """(a, b, transpose_a, transpose_b) of one step: per block q/k/v, attention out, MLP in and out; then the
    head."""
    shapes = [(width, 3 * width), (width, width), (width, 4 * width), (4 * width, width)] * layers
    shapes.append((width, vocab))
    rng = np.random.default_rng(0)
    out = []
    for fan_in, fan_out in shapes:
        x = rng.standard_normal((tokens, fan_in), dtype=np.float32)
        w = rng.standard_normal((fan_out, fan_in), dtype=np.float32)
        dy = rng.standard_normal((tokens, fan_out), dtype=np.float32)
        out += [(x, w, False, True), (dy, w, False, False), (dy, x, True, False)]
    return out


def flops(work):
    return sum(2 * (a.shape[1] if ta else a.shape[0]) * (a.shape[0] if ta else a.shape[1]) * b.shape[0 if tb else 1]
               for a, b, ta, tb in work)


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
        for a, b, ta, tb in work:
            (a.T if ta else a) @ (b.T if tb else b)
    return run


def minigen_side(work):
    from minigen import kernels
    kernels.set_backend("numba")

    def run():
        for a, b, ta, tb in work:
            kernels.gemm(a, b, ta, tb)
    return run


def release_blas_threads():
    """The NumPy backend gives NumPy's BLAS back the threads the Numba backend held, for the next NumPy column."""
    from minigen import kernels
    kernels.set_backend("numpy")


def torch_side(work):
    import torch
    tensors = [(torch.from_numpy(a), torch.from_numpy(b), ta, tb) for a, b, ta, tb in work]

    def run():
        for a, b, ta, tb in tensors:
            torch.mm(a.t() if ta else a, b.t() if tb else b)
    return run, torch.get_num_threads()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed repeats; the best is reported")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    try:  # before minigen loads MKL (blas_info does), which PyTorch imported afterwards would bind to
        import torch  # noqa: F401  (optional: only for the comparison column)
        has_torch = True
    except ImportError:
        has_torch = False
    library, threads = blas_info()
    lines = [f"NumPy {np.__version__} with {library} ({threads} threads)"
             + f"; minigen's products on {products_library()}"
             + (f"; PyTorch {torch.__version__}" if has_torch else "; PyTorch not installed"), "",
             "| products of one step | GFLOP | NumPy BLAS ms | GFLOP/s | minigen ms | GFLOP/s | PyTorch ms | GFLOP/s "
             "| minigen / PyTorch time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, shape in MODELS.items():
        work = products(**shape)
        gflop = flops(work) / 1e9
        ours = best_seconds(numpy_side(work), args.repeat)
        split = best_seconds(minigen_side(work), args.repeat)
        release_blas_threads()
        row = f"| {name}: {len(work)} | {gflop:.2f} | {ours * 1e3:.1f} | {gflop / ours:.0f} | {split * 1e3:.1f} " \
              f"| {gflop / split:.0f} |"
        if has_torch:
            run, torch_threads = torch_side(work)
            theirs = best_seconds(run, args.repeat)
            row += f" {theirs * 1e3:.1f} ({torch_threads} threads) | {gflop / theirs:.0f} | {split / theirs:.2f} |"
        else:
            row += " - | - | - |"
        lines.append(row)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
