"""Every kernel on both backends at the shapes minigen's models use: times, speed-ups, attention memory.

    python benchmarks/bench_kernels.py [--markdown FILE] [--repeat 7] [--skip-large-attention]

Times are per call, the best of `--repeat` timings after one warm-up call (so compilation is excluded: it
is reported separately), each timing long enough (about 2 ms) for microsecond kernels; wall-clock, float32.
Each side runs as its backend would: NumPy's BLAS on its own threads for the reference, on one thread per
piece for the Numba side's split products. "speed-up" is NumPy time / Numba time; the report lists every case
where NumPy was faster (a kernel should then hand that case to the reference).
Attention peak memory (causal, B=8, H=8, d=64) is what tracemalloc sees during forward + backward:
every NumPy allocation including the kernels' outputs, but not the Numba kernels' scratch buffers
(O(T·d) per thread, allocated by Numba's runtime).
"serial vs prange" times attention forward + backward with (batch, head) pairs run on one thread and
in parallel (what more than one thread enables for calls above attention.PARALLEL_MIN_WORK), forced at
every size.
The last table times `import minigen` and the first call of every kernel in fresh interpreters.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

from minigen import kernels  # noqa: E402
from minigen.kernels import numba_kernels as nb  # noqa: E402
from minigen.kernels import numpy_kernels as ref  # noqa: E402

RNG = np.random.default_rng(0)


def randn(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def best_time(fn, repeat):
    """Best wall-clock seconds per call over `repeat` timings, after one warm-up call; each timing runs
    enough calls to last about 2 ms, so that microsecond kernels are not lost in the timer's noise."""
    start = time.perf_counter()
    fn()
    number = max(1, min(10000, int(0.002 / max(time.perf_counter() - start, 1e-7))))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


# ----- the cases: (kernel, shape label, arguments factory) ------------------------------------------
def row_cases():
    for rows, feats in [(1, 128), (768, 128), (768, 65), (2048, 384)]:
        x, dy = randn(rows, feats), randn(rows, feats)
        w, b = randn(feats), randn(feats)
        _, mean, rstd = ref.layer_norm_forward(x, w, b, 1e-5)
        label = f"({rows}, {feats})"
        yield "layer_norm_forward", label, (x, w, b, 1e-5)
        yield "layer_norm_backward", label, (dy, x, w, mean, rstd)
        yield "softmax_forward", label, (x,)
        yield "softmax_backward", label, (dy, ref.softmax_forward(x))
        yield "log_softmax_forward", label, (x,)
        yield "log_softmax_backward", label, (dy, ref.log_softmax_forward(x))
    for rows, classes in [(1, 65), (768, 65), (2048, 384), (64, 50257)]:
        logits = randn(rows, classes)
        target = RNG.integers(0, classes, rows)
        target[::7] = -100
        _, lse = ref.cross_entropy_forward(logits, target, -100, 0.1)
        scale = np.full(rows, 1.0 / rows, np.float32)
        label = f"({rows}, {classes})"
        yield "cross_entropy_forward", label, (logits, target, -100, 0.1)
        yield "cross_entropy_backward", label, (logits, target, lse, scale, -100, 0.1)


def elementwise_cases():
    for shape in [(1, 512), (768, 512), (2048, 1536)]:
        x, dy = randn(*shape), randn(*shape)
        for approximate in ("tanh", "none"):
            label = f"{shape} {approximate}"
            yield "gelu_forward", label, (x, approximate)
            yield "gelu_backward", label, (dy, x, approximate)
    for rows, dim, num in [(768, 128, 65), (2048, 384, 65), (2048, 768, 50257)]:
        yield "embedding_backward", f"({rows}, {dim}) into {num}", (RNG.integers(0, num, rows), randn(rows, dim), num)
    for batch, hidden in [(1, 128), (32, 256), (64, 512)]:
        gi, gh, h = randn(batch, 3 * hidden), randn(batch, 3 * hidden), randn(batch, hidden)
        _, r, z, n = ref.gru_gates_forward(gi, gh, h)
        label = f"B={batch} H={hidden}"
        yield "gru_gates_forward", label, (gi, gh, h)
        yield "gru_gates_backward", label, (randn(batch, hidden), h, r, z, n, np.ascontiguousarray(gh[:, 2 * hidden:]))
    for batch, keys, hidden in [(64, 15, 256), (64, 40, 256)]:
        query, projected, v = randn(batch, hidden), randn(batch, keys, hidden), randn(hidden)
        _, t = ref.additive_scores_forward(query, projected, v)
        label = f"B={batch} S={keys} H={hidden}"
        yield "additive_scores_forward", label, (query, projected, v)
        yield "additive_scores_backward", label, (randn(batch, keys), t, v)
        weights = randn(batch, keys)
        yield "attention_context_forward", label, (weights, projected)
        yield "attention_context_backward", label, (randn(batch, hidden), weights, projected)
    for size in [128, 16384, 589824]:
        state = (randn(size), randn(size), randn(size), np.abs(randn(size)))
        yield "adamw_update", f"{size} params", state + (1e-3, 0.9, 0.99, 1e-8, 0.1, 10)


def product_cases():
    """The Linear layers' products of the small and the medium GPT, and their packed attention."""
    for rows, width in [(768, 128), (2048, 384)]:
        x, g = randn(rows, width), randn(rows, 4 * width)
        w_qkv, w_fc = randn(3 * width, width), randn(4 * width, width)
        yield "gemm", f"x ({rows}, {width}) @ W.T, W ({3 * width}, {width})", (x, w_qkv, False, True)
        yield "gemm", f"g.T @ x, g ({rows}, {4 * width})", (g, x, True, False)
        label = f"x ({rows}, {width}), W ({3 * width}, {width}), bias"
        yield "linear_forward", label, (x, w_qkv, randn(3 * width))
        yield "linear_backward", label, (g[:, :3 * width].copy(), x, w_qkv, True)
        h, _ = ref.linear_gelu_forward(x, w_fc, None, "tanh")
        label = f"x ({rows}, {width}), W ({4 * width}, {width}), bias, tanh"
        yield "linear_gelu_forward", label, (x, w_fc, randn(4 * width), "tanh")
        yield "linear_gelu_backward", label, (g, x, w_fc, h, "tanh", True)
    for B, T, H, D, what in [(12, 64, 4, 32, "small GPT"), (8, 256, 6, 64, "medium GPT")]:
        qkv = randn(B, T, 3 * H * D)
        out, lse = ref.packed_attention_forward(qkv, H, D ** -0.5)
        label = f"B={B} T={T} H={H} d={D} ({what})"
        yield "packed_attention_forward", label, (qkv, H, D ** -0.5)
        yield "packed_attention_backward", label, (randn(B, T, H * D), qkv, out, lse, H, D ** -0.5)


def attention_cases(large):
    shapes = [(1, 4, 1, 64, 32, "decode, cache 64"), (1, 4, 1, 512, 32, "decode, cache 512"),
              (12, 4, 64, 64, 32, "small GPT"), (8, 6, 256, 256, 64, "medium GPT")]
    for B, H, L, S, D, what in shapes:
        q, k, v = randn(B, H, L, D), randn(B, H, S, D), randn(B, H, S, D)
        out, lse = ref.attention_forward(q, k, v, None, True, D ** -0.5)
        label = f"B={B} H={H} L={L} S={S} d={D} ({what})"
        yield "attention_forward", label, (q, k, v, None, True, D ** -0.5)
        if L > 1:
            yield "attention_backward", label, (randn(B, H, L, D), q, k, v, out, lse, None, True, D ** -0.5)
    if large:
        q, k, v = (randn(8, 8, 1024, 64) for _ in range(3))
        out, lse = ref.attention_forward(q, k, v, None, True, 0.125)
        dout = randn(8, 8, 1024, 64)
        label = "B=8 H=8 T=1024 d=64 causal"
        yield "attention_forward", label, (q, k, v, None, True, 0.125)
        yield "attention_backward", label, (dout, q, k, v, out, lse, None, True, 0.125)


def copy_args(args):
    """Fresh copies of array arguments, for the in-place kernels."""
    return tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)


def kernel_rows(cases, repeat):
    rows = []
    for name, label, args in cases:
        in_place = name.startswith("adamw")
        big = name.startswith("attention") and "T=1024" in label
        runs = {}
        for side, module in (("numpy", ref), ("numba", nb)):
            kernels.set_backend(side)  # the NumPy backend gives BLAS its threads back; Numba's splits products
            if side == "numba":
                time.sleep(0.3)  # OpenBLAS's idle threads spin ~0.1 s after the reference's last product
            fn = getattr(module, name)
            call_args = copy_args(args) if in_place else args
            runs[side] = best_time(lambda: fn(*call_args), 1 if big else repeat)
        rows.append((name, label, runs["numpy"], runs["numba"]))
        print(f"{name:24s} {label:42s} numpy {runs['numpy'] * 1e3:10.3f} ms  numba {runs['numba'] * 1e3:9.3f} ms  "
              f"x{runs['numpy'] / runs['numba']:.2f}", flush=True)
    return rows


def attention_memory(T):
    """Peak traced bytes of forward + backward, causal, B=8, H=8, d=64, for each backend."""
    q, k, v, dout = (randn(8, 8, T, 64) for _ in range(4))
    peaks = {}
    for side, module in (("numpy", ref), ("numba", nb)):
        module.attention_forward(q[:1, :1, :8], k[:1, :1, :8], v[:1, :1, :8], None, True, 0.125)  # compiled
        tracemalloc.start()
        out, lse = module.attention_forward(q, k, v, None, True, 0.125)
        module.attention_backward(dout, q, k, v, out, lse, None, True, 0.125)
        peaks[side] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del out, lse
    return peaks


def parallel_rows(large, repeat):
    """(label, serial seconds, parallel seconds) for attention forward + backward."""
    import numba
    from minigen.kernels.numba import attention
    shapes = [(12, 4, 64, 32), (8, 6, 256, 64)] + ([(8, 8, 1024, 64)] if large else [])
    threads = numba.config.NUMBA_NUM_THREADS
    saved = attention.PARALLEL_MIN_WORK, numba.get_num_threads()
    rows = []
    try:
        for B, H, T, D in shapes:
            q, k, v, dout = (randn(B, H, T, D) for _ in range(4))

            def step():
                out, lse = nb.attention_forward(q, k, v, None, True, D ** -0.5)
                nb.attention_backward(dout, q, k, v, out, lse, None, True, D ** -0.5)
            times = []
            for parallel in (False, True):
                attention.PARALLEL_MIN_WORK = 0
                nb.set_num_threads(threads if parallel else 1)
                times.append(best_time(step, 1 if T >= 1024 else repeat))
            label = f"B={B} H={H} T={T} d={D}"
            rows.append((label, *times))
            print(f"attention fwd+bwd {label}: serial {times[0] * 1e3:.2f} ms, prange on {threads} threads "
                  f"{times[1] * 1e3:.2f} ms", flush=True)
    finally:
        attention.PARALLEL_MIN_WORK = saved[0]
        nb.set_num_threads(saved[1])
    return rows, threads


# ----- start-up: import and first calls, in fresh interpreters ---------------------------------------
FIRST_CALLS = """
import time, json
t0 = time.perf_counter()
import numpy as np
import minigen
t1 = time.perf_counter()
from minigen import kernels
kernels.get_backend()
t2 = time.perf_counter()
x = np.ones((4, 8), np.float32)
t = np.zeros(4, np.int64)
for dtype in (np.float32, np.float64):
    a = x.astype(dtype)
    y, mean, rstd = kernels.layer_norm_forward(a, None, None, 1e-5)
    kernels.layer_norm_backward(a, a, None, mean, rstd)
    kernels.softmax_backward(a, kernels.softmax_forward(a))
    kernels.log_softmax_backward(a, kernels.log_softmax_forward(a))
    losses, lse = kernels.cross_entropy_forward(a, t, -100, 0.0)
    kernels.cross_entropy_backward(a, t, lse, np.ones(4, dtype), -100, 0.0)
    for approximate in ("none", "tanh"):
        kernels.gelu_backward(a, kernels.gelu_forward(a, approximate), approximate)
    kernels.embedding_backward(t, a, 3)
    h_new, r, z, n = kernels.gru_gates_forward(np.ones((2, 6), dtype), np.ones((2, 6), dtype), np.ones((2, 2), dtype))
    kernels.gru_gates_backward(h_new, h_new, r, z, n, n)
    kernels.adamw_update(a.copy(), a, a.copy(), a.copy(), 1e-3, 0.9, 0.99, 1e-8, 0.1, 1)
    scores, tanh = kernels.additive_scores_forward(a, np.ones((4, 2, 8), dtype), a[0])
    kernels.additive_scores_backward(scores, tanh, a[0])
    kernels.attention_context_backward(kernels.attention_context_forward(scores, tanh), scores, tanh)
    q = np.ones((1, 2, 3, 4), dtype)
    out, lse = kernels.attention_forward(q, q, q, None, True, 0.5)
    kernels.attention_backward(out, q, q, q, out, lse, None, True, 0.5)
    kernels.attention_forward(q[:, :, :1], q, q, None, True, 0.5)
    b = np.ones((64, 64), dtype)  # large enough to be split across threads
    kernels.gemm(b, b, False, True)
    kernels.linear_forward(b, b, b[0])
    kernels.linear_backward(b, b, b, True)
    h, y = kernels.linear_gelu_forward(b, b, b[0], "tanh")
    kernels.linear_gelu_backward(b, b, b, h, "tanh", True)
    qkv = np.ones((1, 3, 24), dtype)
    out, lse = kernels.packed_attention_forward(qkv, 2, 0.5)
    kernels.packed_attention_backward(out, qkv, out, lse, 2, 0.5)
t3 = time.perf_counter()
print(json.dumps({"import minigen": t1 - t0, "load the Numba backend": t2 - t1,
                  "first call of every kernel, float32 and float64": t3 - t2}))
"""


def startup_rows():
    """Seconds for `import minigen`, loading the backend and the first kernel calls: warm cache, then cold."""
    import json
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("MINIGEN_BACKEND", None)
    results = []
    with tempfile.TemporaryDirectory() as cache:
        for label, extra in (("warm cache", {}), ("cold cache (compiles)", {"NUMBA_CACHE_DIR": cache})):
            if not extra:  # make sure the default cache is populated first
                subprocess.run([sys.executable, "-c", FIRST_CALLS], env=env, check=True, capture_output=True)
            done = subprocess.run([sys.executable, "-c", FIRST_CALLS], env={**env, **extra}, check=True,
                                  capture_output=True, text=True)
            for what, seconds in json.loads(done.stdout.strip().splitlines()[-1]).items():
                if label.startswith("cold") and what == "import minigen":
                    continue
                results.append((f"{what} ({label})", seconds))
                print(f"{what} ({label}): {seconds:.3f} s", flush=True)
    return results


# ----- report ---------------------------------------------------------------------------------------
def markdown(kernel_table, memory, parallel, startup):
    lines = ["# Kernel benchmark: NumPy reference vs Numba", "",
             f"numpy {np.__version__}, numba {__import__('numba').__version__}, {os.cpu_count()} CPUs, "
             f"load average {os.getloadavg()[0]:.1f} at the end. Best of several runs, wall-clock, float32.", ""]
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        lines += ["The machine was busy: OpenBLAS's threads then wait on each other, so NumPy times that involve "
                  "matrix products (attention) can be many times too slow; run again on an idle machine, or "
                  "with OPENBLAS_NUM_THREADS=1, for a fair ratio.", ""]
    lines += ["| kernel | shape | NumPy ms | Numba ms | speed-up |", "|---|---|---:|---:|---:|"]
    for name, label, t_np, t_nb in kernel_table:
        lines.append(f"| {name} | {label} | {t_np * 1e3:.3f} | {t_nb * 1e3:.3f} | {t_np / t_nb:.2f}x |")
    losses = [f"{name} {label}" for name, label, t_np, t_nb in kernel_table if t_np < t_nb]
    lines += ["", "NumPy faster: " + ("; ".join(losses) if losses else "in no case measured.")]
    if memory:
        lines += ["", "## Attention peak memory, forward + backward (B=8, H=8, d=64, causal)", "",
                  "| T | NumPy MiB | Numba MiB | ratio |", "|---:|---:|---:|---:|"]
        for T, peaks in memory:
            lines.append(f"| {T} | {peaks['numpy'] / 2**20:.1f} | {peaks['numba'] / 2**20:.1f} | "
                         f"{peaks['numpy'] / peaks['numba']:.1f}x |")
    if parallel:
        rows, threads = parallel
        lines += ["", f"## Attention forward + backward: serial vs prange over (batch, head), {threads} threads", "",
                  "| shape | serial ms | prange ms | prange speed-up |", "|---|---:|---:|---:|"]
        lines += [f"| {label} | {t_s * 1e3:.2f} | {t_p * 1e3:.2f} | {t_s / t_p:.2f}x |" for label, t_s, t_p in rows]
    if startup:
        lines += ["", "## Start-up", "", "| what | seconds |", "|---|---:|"]
        lines += [f"| {what} | {seconds:.3f} |" for what, seconds in startup]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables as markdown to FILE")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per case (best is kept)")
    parser.add_argument("--skip-large-attention", action="store_true",
                        help="skip T=1024 attention (the NumPy reference needs ~1 GiB and tens of seconds)")
    parser.add_argument("--skip-startup", action="store_true", help="skip the fresh-interpreter start-up timings")
    parser.add_argument("--skip-parallel", action="store_true", help="skip the serial vs prange comparison")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    large = not args.skip_large_attention
    cases = [*row_cases(), *elementwise_cases(), *product_cases(), *attention_cases(large)]
    table = kernel_rows(cases, args.repeat)
    memory = []
    for T in ([256, 512, 1024] if large else [256, 512]):
        peaks = attention_memory(T)
        memory.append((T, peaks))
        print(f"attention peak memory T={T}: numpy {peaks['numpy'] / 2**20:.1f} MiB, "
              f"numba {peaks['numba'] / 2**20:.1f} MiB", flush=True)
    parallel = None if args.skip_parallel else parallel_rows(large, args.repeat)
    startup = [] if args.skip_startup else startup_rows()
    report = markdown(table, memory, parallel, startup)
    print()
    print(report)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
