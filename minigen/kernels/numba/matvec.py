"""Linear layers on a few rows (decoding one token per sequence) at the speed of memory.

A decoding step multiplies each weight matrix by one row per sequence: every weight is read once and used
for a handful of multiply-adds, so the time is the time to stream the weights from memory. BLAS's gemv runs
that on one thread (about 20 GB/s here); these kernels give each thread its own slice of the weight's outputs,
so both cores stream (about 34 GB/s), and each weight read serves all the rows of the call.

Three layouts of the weight, each read in the order it lies in memory:
- `_dot_rows`: weight (N, K) as PyTorch stores it: out[m, n] = dot(x[m], weight[n]);
- `_axpy_rows`: weight_t (K, N), the transpose a GPT-2 checkpoint stores (Conv1D): out[m] += x[m, k] * weight_t[k];
- `_int8_rows`: int8 weight (N, K) with one float32 scale per block of `group` inputs (see `quantize.py`),
  dequantized on the fly: out[m, n] = sum over blocks of scale[n, b] * dot(q[n, block], x[m, block]).
Each kernel fills outputs first .. stop - 1; `_parallel` runs one slice per thread.
"""
import numpy as np
from numba import njit, prange

from .. import numpy_kernels
from . import FLOAT_DTYPES, pieces
from .scalar import FASTMATH


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _dot_rows(x, weight, bias, has_bias, out, first, stop):
    M, K = x.shape
    for n in range(first, stop):
        row = weight[n]
        for m in range(M):
            acc = out.dtype.type(0.0)
            for k in range(K):
                acc += x[m, k] * row[k]
            out[m, n] = acc + bias[n] if has_bias else acc


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _axpy_rows(x, weight_t, bias, has_bias, out, first, stop):
    M, K = x.shape
    for m in range(M):
        for n in range(first, stop):
            out[m, n] = bias[n] if has_bias else 0.0
    for k in range(K):
        row = weight_t[k]
        for m in range(M):
            xk = x[m, k]
            for n in range(first, stop):
                out[m, n] += xk * row[n]


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _int8_rows(x, q, scale, group, bias, has_bias, out, first, stop):
    M, K = x.shape
    blocks = scale.shape[1]
    for n in range(first, stop):
        row, row_scale = q[n], scale[n]
        for m in range(M):
            acc = np.float32(0.0)
            for b in range(blocks):
                part = np.float32(0.0)
                for k in range(b * group, min(K, (b + 1) * group)):
                    part += np.float32(row[k]) * x[m, k]
                acc += part * row_scale[b]
            out[m, n] = acc + bias[n] if has_bias else acc


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)
def _dot_rows_parallel(x, weight, bias, has_bias, out, chunks):
    N = out.shape[1]
    for c in prange(chunks):
        _dot_rows(x, weight, bias, has_bias, out, c * N // chunks, (c + 1) * N // chunks)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)
def _axpy_rows_parallel(x, weight_t, bias, has_bias, out, chunks):
    N = out.shape[1]
    for c in prange(chunks):
        # slices of whole cache lines (16 floats), so two threads never write one line
        first, stop = (c * N // chunks) // 16 * 16, ((c + 1) * N // chunks) // 16 * 16
        _axpy_rows(x, weight_t, bias, has_bias, out, first, N if c == chunks - 1 else stop)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)
def _int8_rows_parallel(x, q, scale, group, bias, has_bias, out, chunks):
    N = out.shape[1]
    for c in prange(chunks):
        _int8_rows(x, q, scale, group, bias, has_bias, out, c * N // chunks, (c + 1) * N // chunks)


MAX_ROWS = 8  # up to this many rows the kernels beat BLAS's gemm (see the module's docstring)
PARALLEL_MIN_WORK = 2 ** 16  # multiply-adds below which a call stays serial (a parallel region costs microseconds)


def applies(x, weight):
    """Whether `few_rows_linear` serves x @ weight.T: few rows, float operands of one dtype, and a weight that
    lies (N, K) or (K, N) contiguously."""
    return x.ndim == 2 and x.shape[0] <= MAX_ROWS and x.dtype in FLOAT_DTYPES and weight.dtype == x.dtype \
        and weight.ndim == 2 and (weight.flags.c_contiguous or weight.T.flags.c_contiguous)


def few_rows_linear(x, weight, bias):
    """x @ weight.T + bias (bias may be None) for the few rows of x (see `applies`), the weight read once."""
    x = np.ascontiguousarray(x)
    out = np.empty((x.shape[0], weight.shape[0]), x.dtype)
    has_bias = bias is not None
    bias = np.ascontiguousarray(bias, dtype=x.dtype) if has_bias else out[0, :0]
    chunks = pieces(weight.size * x.shape[0], PARALLEL_MIN_WORK, weight.shape[0] // 16)
    if weight.flags.c_contiguous:
        if chunks > 1:
            _dot_rows_parallel(x, weight, bias, has_bias, out, chunks)
        else:
            _dot_rows(x, weight, bias, has_bias, out, 0, weight.shape[0])
    elif chunks > 1:
        _axpy_rows_parallel(x, weight.T, bias, has_bias, out, chunks)
    else:
        _axpy_rows(x, weight.T, bias, has_bias, out, 0, weight.shape[0])
    return out


def int8_linear_forward(x, q, scale, bias):
    """x @ dequantize(q, scale).T + bias, as `numpy_kernels.int8_linear_forward`: for few rows the int8 weight is
    read once and dequantized on the fly; for more rows (a prompt) it is dequantized once and BLAS runs the
    product, whose work then outweighs the conversion."""
    if x.ndim != 2 or x.shape[0] > MAX_ROWS or x.dtype != np.float32:
        return numpy_kernels.int8_linear_forward(x, q, scale, bias)
    x = np.ascontiguousarray(x)
    out = np.empty((x.shape[0], q.shape[0]), np.float32)
    has_bias = bias is not None
    bias = np.ascontiguousarray(bias, dtype=np.float32) if has_bias else out[0, :0]
    group = -(-q.shape[1] // scale.shape[1])
    chunks = pieces(q.size * x.shape[0], PARALLEL_MIN_WORK, q.shape[0])
    if chunks > 1:
        _int8_rows_parallel(x, q, scale, group, bias, has_bias, out, chunks)
    else:
        _int8_rows(x, q, scale, group, bias, has_bias, out, 0, q.shape[0])
    return out
