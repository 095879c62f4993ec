"""Linear layers on a few rows (decoding one token per sequence) at the speed of memory.

A decoding step multiplies each weight matrix by one row per sequence: every weight is read once and used
for a handful of multiply-adds, so the time is the time to stream the weights from memory. BLAS's gemv runs
that on one thread (about 20 GB/s here); these kernels give each thread its own slice of the weight's outputs,
so both cores stream (about 34 GB/s), and each weight read serves all the rows of the call.

Two layouts of the weight, each read in the order it lies in memory:
- `_dot_rows`: weight (N, K) as PyTorch stores it: out[m, n] = dot(x[m], weight[n]), times scale[n] for an
  int8 weight (one scale per row, see `nn.quantize`): the int8 values are widened as they are read;
- `_axpy_rows`: weight_t (K, N), the transpose a GPT-2 checkpoint stores (Conv1D): out[m] += x[m, k] * weight_t[k].
Each thread streams one contiguous block of the weight: a block of rows (outputs) for `_dot_rows`, of inputs for
`_axpy_rows`, whose partial sums are added at the end (cut by outputs, each thread would read a part of every
row: shorter streams, slower).
"""
import numpy as np
from numba import njit, prange

from . import FLOAT_DTYPES, pieces
from .scalar import FASTMATH


@njit(fastmath=FASTMATH, error_model="numpy")
def _row_dots(x, row, n, scale, has_scale, bias, has_bias, out):
    """out[:, n] = x @ row (times scale[n], plus bias[n])."""
    dt = out.dtype.type
    for m in range(x.shape[0]):
        xm = x[m]
        acc = dt(0.0)
        for k in range(x.shape[1]):
            acc += xm[k] * dt(row[k])  # an int8 row widened to x's float type, not to float64
        if has_scale:
            acc *= scale[n]
        out[m, n] = acc + bias[n] if has_bias else acc


@njit(fastmath=FASTMATH, error_model="numpy")
def _four_row_dots(x, weight, n, bias, has_bias, out):
    """out[0, n:n + 4] for one row x: four float rows of the weight streamed side by side (more reads in flight
    than one row at a time: 1.1-1.2x on the output head)."""
    dt = out.dtype.type
    r0, r1, r2, r3 = weight[n], weight[n + 1], weight[n + 2], weight[n + 3]
    x0 = x[0]
    a0, a1, a2, a3 = dt(0.0), dt(0.0), dt(0.0), dt(0.0)
    for k in range(x.shape[1]):
        xk = x0[k]
        a0 += xk * r0[k]
        a1 += xk * r1[k]
        a2 += xk * r2[k]
        a3 += xk * r3[k]
    for i, acc in enumerate((a0, a1, a2, a3)):
        out[0, n + i] = acc + bias[n + i] if has_bias else acc


@njit(fastmath=FASTMATH, error_model="numpy")
def _scaled_row_dots(x, weight, scale, bias, has_bias, out, first, stop):
    """out[0, first:stop] for one row x and int8 weight rows, one at a time (streamed from memory 2x faster than
    four side by side, 8-10 against 5 GB/s: widening four int8 streams at once vectorized worse)."""
    dt = out.dtype.type
    x0, out0 = x[0], out[0]
    for n in range(first, stop):
        row = weight[n]
        acc = dt(0.0)
        for k in range(x0.shape[0]):
            acc += x0[k] * dt(row[k])
        acc *= scale[n]
        out0[n] = acc + bias[n] if has_bias else acc


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _dot_rows(x, weight, scale, has_scale, bias, has_bias, out, first, stop):
    if x.shape[0] == 1:
        if has_scale:
            _scaled_row_dots(x, weight, scale, bias, has_bias, out, first, stop)
            return
        while first + 4 <= stop:
            _four_row_dots(x, weight, first, bias, has_bias, out)
            first += 4
    widened = np.empty(x.shape[1], out.dtype)
    for n in range(first, stop):  # each row read from memory once, from L1 for the other rows of x
        if has_scale and x.shape[0] > 1:  # int8: widen the row once for all rows of x
            row = weight[n]
            for k in range(x.shape[1]):
                widened[k] = row[k]
            _row_dots(x, widened, n, scale, has_scale, bias, has_bias, out)
        else:
            _row_dots(x, weight[n], n, scale, has_scale, bias, has_bias, out)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _axpy_rows(x, weight_t, out, first, stop):
    """out (M, N) = x[:, first:stop] @ weight_t[first:stop]: rows first .. stop - 1 of weight_t, four at a time
    (four streams from memory at once, and one pass over the sums for four rows: 1.35x one at a time)."""
    M, N = out.shape
    acc = np.zeros((M, N), out.dtype)  # its own memory: summing through `out` (which might alias weight_t
    k = first                           # for all LLVM knows) would not vectorize
    while k + 4 <= stop:
        r0, r1, r2, r3 = weight_t[k], weight_t[k + 1], weight_t[k + 2], weight_t[k + 3]
        for m in range(M):
            x0, x1, x2, x3, acc_m = x[m, k], x[m, k + 1], x[m, k + 2], x[m, k + 3], acc[m]
            for j in range(N):
                acc_m[j] += x0 * r0[j] + x1 * r1[j] + x2 * r2[j] + x3 * r3[j]
        k += 4
    for k in range(k, stop):
        row = weight_t[k]
        for m in range(M):
            xk, acc_m = x[m, k], acc[m]
            for j in range(N):
                acc_m[j] += xk * row[j]
    out[:] = acc


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)
def _dot_rows_parallel(x, weight, scale, has_scale, bias, has_bias, out, chunks):
    N = out.shape[1]
    for c in prange(chunks):
        _dot_rows(x, weight, scale, has_scale, bias, has_bias, out, c * N // chunks, (c + 1) * N // chunks)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)
def _axpy_rows_parallel(x, weight_t, parts):
    K, chunks = weight_t.shape[0], parts.shape[0]
    for c in prange(chunks):  # each thread streams one block of whole rows; their sums are added after
        _axpy_rows(x, weight_t, parts[c], c * K // chunks, (c + 1) * K // chunks)


# Float weights: one row (batch-1 decoding); with more rows BLAS's gemm reads the weight once too and computes
# faster. int8 weights: up to 8 rows (the alternative is dequantizing the whole weight at every step).
MAX_ROWS, MAX_ROWS_INT8 = 1, 8
PARALLEL_MIN_WORK = 2 ** 16  # multiply-adds below which a call stays serial (a parallel region costs microseconds)


def applies(x, weight):
    """Whether `few_rows_linear` serves x @ weight.T: few rows of floats, and a weight of their dtype that lies
    (N, K) or (K, N) contiguously, or an int8 weight (N, K)."""
    if x.ndim != 2 or x.dtype not in FLOAT_DTYPES or weight.ndim != 2:
        return False
    if weight.dtype == np.int8:
        return x.shape[0] <= MAX_ROWS_INT8 and x.dtype == np.float32 and weight.flags.c_contiguous
    return x.shape[0] <= MAX_ROWS and weight.dtype == x.dtype and \
        (weight.flags.c_contiguous or weight.T.flags.c_contiguous)


def few_rows_linear(x, weight, bias, scale=None):
    """x @ weight.T + bias (bias may be None) for the few rows of x (see `applies`), the weight read once;
    weight may be int8 with one float32 scale per row (`scale`, see `nn.quantize`)."""
    x = np.ascontiguousarray(x)
    out = np.empty((x.shape[0], weight.shape[0]), x.dtype)
    has_bias, has_scale = bias is not None, scale is not None
    bias = np.ascontiguousarray(bias, dtype=x.dtype) if has_bias else out[0, :0]
    scale = scale if has_scale else out[0, :0]
    by_rows = weight.flags.c_contiguous  # else cut by inputs: the rows of weight.T
    chunks = pieces(weight.size * x.shape[0], PARALLEL_MIN_WORK, weight.shape[0 if by_rows else 1])
    if by_rows:
        if chunks > 1:
            _dot_rows_parallel(x, weight, scale, has_scale, bias, has_bias, out, chunks)
        else:
            _dot_rows(x, weight, scale, has_scale, bias, has_bias, out, 0, weight.shape[0])
    else:
        # a sum per thread, added at the end: a few rows of N values against the weight's K x N
        parts = np.empty((chunks,) + out.shape, out.dtype)
        if chunks > 1:
            _axpy_rows_parallel(x, weight.T, parts)
        else:
            _axpy_rows(x, weight.T, parts[0], 0, weight.shape[1])
        np.sum(parts, axis=0, out=out)
        if has_bias:
            out += bias
    return out
