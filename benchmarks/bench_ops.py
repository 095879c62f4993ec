"""Ops micro-benchmark: minigen's forward and forward+backward against the bare NumPy forward.

Shapes are those of the small GPT (batch 12, block 64, width 128, 4 heads, 65-character vocabulary)
and of the medium one (batch 8, block 256, width 384). The NumPy column is the forward alone, written
as directly as NumPy allows: the floor that minigen's forward can approach; a training step also pays
for the backward, which is why the fwd+bwd column is shown beside it.

    python benchmarks/bench_ops.py                   # the backend chosen by MINIGEN_BACKEND (numpy)
    python benchmarks/bench_ops.py --backend numba   # or both: --backend numpy numba
"""
import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
import minigen as mg  # noqa: E402
import minigen.nn.functional as F  # noqa: E402

SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_erf = np.vectorize(math.erf, otypes=[np.float64])  # NumPy has no erf: the honest pure-NumPy floor


def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_layer_norm(x, w, b, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    return xc / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps) * w + b


def np_cross_entropy(logits, target):
    shifted = logits - logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=1))
    return (lse - shifted[np.arange(len(target)), target]).mean()


def np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x))))  # x ** 3 is 50x slower


def np_gelu_erf(x):
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def cases(rng, dtype):
    """(name, shape text, inputs, minigen fn of Tensors, NumPy fn of arrays)."""
    def a(*shape):
        return (rng.standard_normal(shape) * 0.5).astype(dtype)

    targets = rng.integers(0, 65, size=12 * 64)
    return [
        ("matmul", "(768,128)@(128,512)", [a(768, 128), a(128, 512)], lambda x, w: x @ w, np.matmul),
        ("linear", "(2048,384)->1536", [a(2048, 384), a(1536, 384), a(1536)],
         F.linear, lambda x, w, b: x @ w.T + b),
        ("softmax", "(12*4*64,64)", [a(12 * 4 * 64, 64)], lambda x: F.softmax(x, -1), np_softmax),
        ("softmax", "(8*6*256,256)", [a(8 * 6 * 256, 256)], lambda x: F.softmax(x, -1), np_softmax),
        ("layer_norm", "(12*64,128)", [a(12 * 64, 128), a(128), a(128)],
         lambda x, w, b: F.layer_norm(x, 128, w, b), np_layer_norm),
        ("layer_norm", "(8*256,384)", [a(8 * 256, 384), a(384), a(384)],
         lambda x, w, b: F.layer_norm(x, 384, w, b), np_layer_norm),
        ("cross_entropy", "(12*64,65)", [a(12 * 64, 65)],
         lambda x: F.cross_entropy(x, targets), lambda x: np_cross_entropy(x, targets)),
        ("gelu tanh", "(12*64,512)", [a(12 * 64, 512)], lambda x: F.gelu(x, approximate="tanh"), np_gelu_tanh),
        ("gelu tanh", "(8*256,1536)", [a(8 * 256, 1536)], lambda x: F.gelu(x, approximate="tanh"), np_gelu_tanh),
        ("gelu erf", "(12*64,512)", [a(12 * 64, 512)], F.gelu, np_gelu_erf),
    ]


def time_per_call(fn, min_time):
    """Median seconds per call over 5 rounds, each long enough to last about min_time / 5."""
    fn()  # warm-up: caches, Numba compilation
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    calls = max(1, int(min_time / 5 / once))
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - start) / calls)
    return float(np.median(rounds))


def run(backend, dtype, min_time):
    mg.set_backend(backend)
    rng = np.random.default_rng(0)
    rows = []
    for name, shape, arrays, mg_fn, np_fn in cases(rng, dtype):
        tensors = [mg.tensor(x, requires_grad=True) for x in arrays]
        out = mg_fn(*tensors)
        upstream = np.ones(out.shape, dtype=out.dtype)

        def forward():
            with mg.no_grad():
                mg_fn(*tensors)

        def forward_backward():
            for t in tensors:
                t.grad = None
            mg_fn(*tensors).backward(upstream)

        rows.append((name, shape, time_per_call(forward, min_time), time_per_call(forward_backward, min_time),
                     time_per_call(lambda: np_fn(*arrays), min_time)))
    return rows


def print_table(backend, dtype, rows):
    print(f"\nbackend={backend}  dtype={np.dtype(dtype).name}  (ms per call; ratio = minigen / NumPy forward)")
    head = f"{'op':<14}{'shape':<22}{'minigen fwd':>12}{'fwd+bwd':>10}{'NumPy fwd':>11}{'fwd ratio':>11}{'f+b ratio':>11}"
    print(head)
    print("-" * len(head))
    for name, shape, fwd, both, ref in rows:
        print(f"{name:<14}{shape:<22}{fwd * 1e3:>12.3f}{both * 1e3:>10.3f}{ref * 1e3:>11.3f}"
              f"{fwd / ref:>11.2f}{both / ref:>11.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", nargs="+", choices=["numpy", "numba"], default=[mg.get_backend()])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds spent timing each function")
    args = parser.parse_args()
    for backend in args.backend:
        rows = run(backend, np.dtype(args.dtype), args.min_time)
        print_table(mg.get_backend(), args.dtype, rows)  # get_backend: numba may have fallen back to numpy


if __name__ == "__main__":
    main()
