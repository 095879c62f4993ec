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
def linear_rows(x, layer, chunks):
    """x @ weight.T + bias for a layer as `layer_arrays` gives it, the weight read once across `chunks` threads:
    by rows of outputs (weight (N, K), float or int8 with a scale per row), or by rows of inputs when the weight is
    given as its (K, N) transpose (GPT-2's Conv1D layout), each thread's partial sums added at the end. One chunk
    opens no parallel region (it costs microseconds, and on a busy machine a wait for the other thread)."""
    weight, transposed, bias, has_bias, scale, has_scale = layer
    M = x.shape[0]
    if not transposed:
        N = weight.shape[0]
        out = np.empty((M, N), x.dtype)
        if chunks == 1:
            _dot_rows(x, weight, scale, has_scale, bias, has_bias, out, 0, N)
        else:
            for c in prange(chunks):
                _dot_rows(x, weight, scale, has_scale, bias, has_bias, out, c * N // chunks, (c + 1) * N // chunks)
        return out
    K, N = weight.shape
    parts = np.empty((chunks, M, N), x.dtype)
    if chunks == 1:
        _axpy_rows(x, weight, parts[0], 0, K)
    else:
        for c in prange(chunks):  # each thread streams one block of whole rows; their sums are added after
            _axpy_rows(x, weight, parts[c], c * K // chunks, (c + 1) * K // chunks)
    out = np.empty((M, N), x.dtype)
    for m in range(M):  # loops, not array expressions, which parallel=True would turn into parallel regions
        for j in range(N):
            total = bias[j] if has_bias else x.dtype.type(0.0)
            for c in range(chunks):
                total += parts[c, m, j]
            out[m, j] = total
    return out


def layer_arrays(x, weight, bias, scale):
    """A Linear layer's arrays as `linear_rows` takes them, for rows x: (weight as it lies in memory, whether that
    is the transpose, bias, has_bias, scale, has_scale), empty arrays where bias or scale are absent."""
    transposed = scale is None and not weight.flags.c_contiguous
    return (weight.T if transposed else weight, transposed,
            np.empty(0, x.dtype) if bias is None else np.ascontiguousarray(bias, dtype=x.dtype), bias is not None,
            np.empty(0, np.float32) if scale is None else scale, scale is not None)


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
    layer = layer_arrays(x, weight, bias, scale)
    chunks = pieces(weight.size * x.shape[0], PARALLEL_MIN_WORK, layer[0].shape[0])  # by the rows as they lie
    return linear_rows(x, layer, chunks)
