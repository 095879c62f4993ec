"""Matrix products split across Numba's threads, each piece computed by NumPy's own BLAS on one thread.

Why: NumPy's OpenBLAS runs its own thread pool, and its idle threads keep spinning for a while after
each product. Any Numba kernel that runs in parallel right after a product (attention, say) then shares
the cores with those spinning threads, and on a small machine both lose: the two pools cannot be
used together. So minigen keeps one pool. With the Numba backend on more than one thread, `gemm` cuts
the rows of a product (or its columns, when there are few rows) into one piece per Numba thread; each thread
calls BLAS's gemm on its piece, with NumPy's OpenBLAS held at one thread for the call (`on_one_blas_thread`:
the count is read and given back around every split product, so the application's own NumPy keeps its
threads between minigen's calls). Each piece is one BLAS call on a plain sub-matrix, so the products run
at BLAS speed, and products and parallel attention run on the same threads. The Linear layers
(`linear_forward`, `linear_backward`, and `linear_gelu_*` for a Linear followed by GELU) give each thread a
block of rows and do everything for those rows while they are in its cache: bias and GELU after the product; in backward GELU's derivative, the input gradient,
and the block's share of the weight and bias gradients (summed over the blocks at the end).

BLAS is found in the process (the library NumPy loaded: OpenBLAS under its plain or `scipy_` names,
with 32- or 64-bit integers) and called by address through `_call`, so that the compiled kernels hold
no address and can be cached. When Intel's MKL is installed (the optional `mkl` package, see `mkl.py`),
the pieces call MKL's gemm instead, faster on these shapes; NumPy keeps its OpenBLAS, whose threads are
still held at one. When NumPy's OpenBLAS is not found (NumPy on MKL or Accelerate, say), `gemm` is the NumPy
reference and BLAS keeps its own threads.
"""
import ctypes
import glob
import os
import sys

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .. import numpy_kernels
from . import matvec, pieces
from .activations import check_approximate, gelu_backward, gelu_backward_flat, gelu_flat, gelu_forward
from .. import settings
from .mkl import Gemm, mkl_gemm

# Products below this many multiply-adds run as one BLAS call: a parallel region costs a few microseconds.
SPLIT_MIN_WORK = 2 ** 18
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS enums


class _Blas:
    """NumPy's OpenBLAS: its gemm (a `Gemm`) and its thread-count functions."""

    def __init__(self, library, prefix, suffix):
        def function(name, restype, argtypes):
            f = getattr(library, f"{prefix}{name}{suffix}")
            f.restype, f.argtypes = restype, argtypes
            return f
        config = function("openblas_get_config", ctypes.c_char_p, [])() or b"OpenBLAS"  # "OpenBLAS 0.3.31 ..."
        addresses = {np.dtype(np.float32): ctypes.cast(getattr(library, f"{prefix}cblas_sgemm{suffix}"),
                                                       ctypes.c_void_p).value,
                     np.dtype(np.float64): ctypes.cast(getattr(library, f"{prefix}cblas_dgemm{suffix}"),
                                                       ctypes.c_void_p).value}
        wide_ints = suffix == "64_" or b"USE64BITINT" in config
        name = " ".join(config.decode(errors="replace").split()[:2])
        self.gemm = Gemm(addresses, wide_ints, f"NumPy's {name}")
        self.get_threads = function("openblas_get_num_threads", ctypes.c_int, [])
        self.set_threads = function("openblas_set_num_threads", None, [ctypes.c_int])


def _candidate_paths():
    """Shared libraries that may be NumPy's BLAS: the ones NumPy's wheel ships first, then any OpenBLAS mapped
    into this process that another wheel did not vendor (SciPy ships its own in scipy.libs, say)."""
    numpy_dir = os.path.dirname(os.path.abspath(np.__file__))
    paths = []
    for pattern in ("../numpy.libs/*openblas*", ".dylibs/*openblas*"):
        paths += sorted(glob.glob(os.path.join(numpy_dir, pattern)))
    try:
        with open("/proc/self/maps") as maps:
            mapped = [line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1].lower()]
    except OSError:  # not Linux
        mapped = []
    paths += [p for p in mapped if ".libs/" not in p and ".dylibs/" not in p]
    return list(dict.fromkeys(os.path.realpath(p) for p in paths if os.path.isfile(p)))


def numpy_blas():
    """NumPy's OpenBLAS as a `_Blas` (its Gemm, get_threads, set_threads), or None when NumPy uses
    another BLAS or it cannot be found."""
    for path in _candidate_paths():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_", "64_"), ("", "64_"), ("", "")):
            if not hasattr(library, f"{prefix}cblas_sgemm{suffix}") or \
                    not hasattr(library, f"{prefix}openblas_set_num_threads{suffix}"):
                continue
            return _Blas(library, prefix, suffix)
    return None


_blas = numpy_blas() if sys.platform != "win32" else None  # Windows: cdecl/stdcall details not handled
# the gemm the pieces call: MKL when installed and MINIGEN_BLAS allows it, else NumPy's OpenBLAS
_gemm = None if _blas is None else (mkl_gemm(settings.blas()) or _blas.gemm)


def available():
    """Whether products are split across Numba's threads (NumPy's BLAS was found)."""
    return _blas is not None


def gemm_address(dtype):
    """(address, wide_ints) of the gemm for `dtype` that compiled kernels call with `gemm_call` (inside
    `on_one_blas_thread`), or None when there is none (BLAS not found, or not a float32/float64 dtype)."""
    if _gemm is None or np.dtype(dtype) not in _gemm.addresses:
        return None
    return _gemm.addresses[np.dtype(dtype)], _gemm.wide_ints


def library():
    """The BLAS the split products call ("MKL 2026.2 (...)", "NumPy's OpenBLAS 0.3.31"), or None (NumPy's
    own matmul serves them)."""
    return None if _gemm is None else _gemm.name


def on_one_blas_thread(split_kernel, *args):
    """split_kernel(*args) with NumPy's OpenBLAS held at one thread, then given back the count it had
    (threadpoolctl's `threadpool_limits` pattern, per call). Each piece of a split product is one BLAS call
    from one of Numba's threads: OpenBLAS on several threads would cut it again across its own pool, whose idle
    threads then spin against Numba's. MKL's pieces run sequential anyway, so with MKL nothing is switched.
    The switch costs 2-4 us (three calls into OpenBLAS), paid only by products large enough to split: 34 in a
    small-GPT training step (about 0.1 ms of 24 or more), none in batch-1 decoding."""
    saved = _blas.get_threads() if _gemm is _blas.gemm else 1
    if saved == 1:
        return split_kernel(*args)
    _blas.set_threads(1)
    try:
        return split_kernel(*args)
    finally:
        _blas.set_threads(saved)


@intrinsic
def _call(typingctx, address, args):
    """Call the C function at `address` with the values of the tuple `args`, returning nothing.

    Integers and floats pass as the C types of their width; pointers pass as intp (the same registers)."""
    if not isinstance(address, types.Integer) or not isinstance(args, types.BaseTuple):
        return None

    def codegen(context, builder, signature, call_args):
        address_value, values = call_args
        arg_types = [context.get_value_type(t) for t in signature.args[1]]
        function_type = ir.FunctionType(ir.VoidType(), arg_types)
        function = builder.inttoptr(address_value, function_type.as_pointer())
        builder.call(function, [builder.extract_value(values, i) for i in range(len(arg_types))])
        return context.get_dummy_value()
    return types.void(address, args), codegen


@njit(inline="always")
def gemm_call(address, wide_ints, ta, tb, m, n, k, a_ptr, lda, b_ptr, ldb, c_ptr, ldc, one, zero):
    """c (m, n) = one * op(a) @ op(b) + zero * c through the gemm at `address` (see `gemm_address`), all
    row-major and given by pointer and leading dimension; op(x) = x.T when its flag (ta, tb) is set."""
    flags = (np.int32(ROW_MAJOR), np.int32(TRANS if ta else NO_TRANS), np.int32(TRANS if tb else NO_TRANS))
    if wide_ints:
        _call(address, flags + (np.int64(m), np.int64(n), np.int64(k), one, a_ptr, np.int64(lda), b_ptr,
                                np.int64(ldb), zero, c_ptr, np.int64(ldc)))
    else:
        _call(address, flags + (np.int32(m), np.int32(n), np.int32(k), one, a_ptr, np.int32(lda), b_ptr,
                                np.int32(ldb), zero, c_ptr, np.int32(ldc)))


@njit(inline="always")
def _gemm_rows(address, wide_ints, a, ta, b, tb, out, lo, hi):
    """out[lo:hi] = op(a)[lo:hi] @ op(b): one BLAS call on a block of out's rows."""
    n, k = out.shape[1], a.shape[0] if ta else a.shape[1]
    lda, size = a.shape[1], out.itemsize
    a_ptr = a.ctypes.data + (lo if ta else lo * lda) * size
    gemm_call(address, wide_ints, ta, tb, hi - lo, n, k, a_ptr, lda, b.ctypes.data, b.shape[1],
              out.ctypes.data + lo * n * size, n, out.dtype.type(1), out.dtype.type(0))


@njit(parallel=True, cache=True)
def _split_gemm(address, wide_ints, a, ta, b, tb, out, chunks, by_rows):
    """out = op(a) @ op(b), op(x) = x.T when x's flag is set, in `chunks` pieces of out's rows (by_rows)
    or columns, one BLAS call each. All arrays C-contiguous, of out's dtype."""
    m, n = out.shape
    k = a.shape[0] if ta else a.shape[1]
    size = out.itemsize
    ldb = b.shape[1]
    for chunk in prange(chunks):
        if by_rows:
            _gemm_rows(address, wide_ints, a, ta, b, tb, out, chunk * m // chunks, (chunk + 1) * m // chunks)
        else:
            lo, hi = chunk * n // chunks, (chunk + 1) * n // chunks
            b_ptr = b.ctypes.data + (lo * ldb if tb else lo) * size
            gemm_call(address, wide_ints, ta, tb, m, hi - lo, k, a.ctypes.data, a.shape[1], b_ptr, ldb,
                      out.ctypes.data + lo * size, n, out.dtype.type(1), out.dtype.type(0))


@njit(parallel=True, cache=True)
def _split_linear(address, wide_ints, x, weight, bias, h, y, gelu, tanh_form, chunks):
    """h = x @ weight.T + bias (bias empty: none), and y = gelu(h) when `gelu`; each thread adds the bias (and
    applies GELU) to its block of rows right after its product, while the block is in its cache.

    GELU runs as the plain kernel on the block's slices: the same loop written over an index range of the
    whole arrays, inside prange, measured 2.5x slower (it did not vectorize as well)."""
    m, n = h.shape
    flat_h, flat_y = h.reshape(h.size), y.reshape(y.size)
    for chunk in prange(chunks):
        lo, hi = chunk * m // chunks, (chunk + 1) * m // chunks
        _gemm_rows(address, wide_ints, x, False, weight, True, h, lo, hi)
        if bias.shape[0]:
            _add_rows(flat_h[lo * n:hi * n], bias)
        if gelu:
            gelu_flat(flat_h[lo * n:hi * n], tanh_form, flat_y[lo * n:hi * n])


@njit(parallel=True, cache=True)
def _split_linear_backward(address, wide_ints, grad, h, x, weight, dh, gx, gw, gb, parts, bias_parts, gelu,
                           tanh_form, chunks):
    """The gradients of _split_linear given dy = grad: dh = grad * gelu'(h) when `gelu` (else dh is grad),
    gx = dh @ weight, gw = dh.T @ x, gb = dh's column sums (gb empty: no bias).

    Each thread takes a block of rows and does all of it on them: dh, gx, and its share of gw and gb (the
    product and sum over its rows), so the block is read from memory once. The first block's shares go straight
    into gw and gb, the others' into `parts` and `bias_parts`, added in block order (the same result on every
    run with the same thread count)."""
    m, n = grad.shape
    k = x.shape[1]
    size = x.itemsize
    flat_grad, flat_h, flat_dh = grad.reshape(grad.size), h.reshape(h.size), dh.reshape(dh.size)
    for chunk in prange(chunks):
        lo, hi = chunk * m // chunks, (chunk + 1) * m // chunks
        if gelu:
            gelu_backward_flat(flat_grad[lo * n:hi * n], flat_h[lo * n:hi * n], tanh_form, flat_dh[lo * n:hi * n])
            d = dh
        else:
            d = grad
        _gemm_rows(address, wide_ints, d, False, weight, False, gx, lo, hi)
        share = gw if chunk == 0 else parts[chunk - 1]
        gemm_call(address, wide_ints, True, False, n, k, hi - lo, d.ctypes.data + lo * n * size, n,
                  x.ctypes.data + lo * k * size, k, share.ctypes.data, k, x.dtype.type(1), x.dtype.type(0))
        if gb.shape[0]:
            _column_sums(d.reshape(d.size)[lo * n:hi * n], gb if chunk == 0 else bias_parts[chunk - 1])
    flat_gw = gw.reshape(gw.size)
    flat_parts = parts.reshape(chunks - 1, gw.size)
    for chunk in prange(chunks):
        lo, hi = chunk * gw.size // chunks, (chunk + 1) * gw.size // chunks
        for part in range(chunks - 1):
            _add_into(flat_gw[lo:hi], flat_parts[part, lo:hi])
    for part in range(chunks - 1):
        _add_into(gb, bias_parts[part])


@njit(cache=True)
def _add_rows(flat, row):
    """flat viewed as rows of row.size: add row to each."""
    n = row.shape[0]
    for i in range(flat.shape[0] // n):
        for j in range(n):
            flat[i * n + j] += row[j]


@njit(cache=True)
def _column_sums(flat, out):
    """out = column sums of flat viewed as rows of out.size."""
    n = out.shape[0]
    out[:] = 0
    for i in range(flat.shape[0] // n):
        for j in range(n):
            out[j] += flat[i * n + j]


@njit(cache=True)
def _add_into(out, x):
    for i in range(out.shape[0]):
        out[i] += x[i]


def _splittable(*arrays):
    """Whether BLAS was found, the first two arrays (a product's operands) are 2-D, and all arrays share one
    float dtype BLAS has a gemm for."""
    dtype = arrays[0].dtype
    return _gemm is not None and dtype in _gemm.addresses and all(a.dtype == dtype for a in arrays) \
        and arrays[0].ndim == arrays[1].ndim == 2


def gemm(a, b, transpose_a, transpose_b):
    """op(a) @ op(b) for 2-D arrays, op(x) = x.T when its flag is set (see `numpy_kernels.gemm`)."""
    if not _splittable(a, b):
        return numpy_kernels.gemm(a, b, transpose_a, transpose_b)
    m = a.shape[1] if transpose_a else a.shape[0]
    k = a.shape[0] if transpose_a else a.shape[1]
    n = b.shape[0] if transpose_b else b.shape[1]
    by_rows = m >= n  # each thread packs its part of the wider operand only
    chunks = _pieces(m * n * k, m if by_rows else n)
    if chunks == 0 or b.shape[1 if transpose_b else 0] != k:
        return numpy_kernels.gemm(a, b, transpose_a, transpose_b)  # one call (or NumPy's error message)
    out = np.empty((m, n), a.dtype)
    (a, transpose_a), (b, transpose_b) = _as_stored(a, transpose_a), _as_stored(b, transpose_b)
    on_one_blas_thread(_split_gemm, _gemm.addresses[a.dtype], _gemm.wide_ints, a, transpose_a, b, transpose_b, out,
                       chunks, by_rows)
    return out


def _as_stored(x, transpose):
    """(x as BLAS reads it, its flag): a transposed view of a contiguous array (a GPT-2 checkpoint's Conv1D weight
    used in place) is passed as that array with the flag flipped, not copied; other layouts are copied."""
    if not x.flags.c_contiguous and x.T.flags.c_contiguous:
        return x.T, not transpose
    return np.ascontiguousarray(x), transpose


def _pieces(work, most):
    """How many pieces a product of `work` multiply-adds runs in on the chosen gemm: one per thread, at most
    `most`; 0 when NumPy's matmul serves it instead: below SPLIT_MIN_WORK, or when it would be one piece on
    NumPy's own BLAS anyway."""
    chunks = pieces(work, SPLIT_MIN_WORK, most)
    return chunks if chunks > 1 or (work >= SPLIT_MIN_WORK and _gemm is not _blas.gemm) else 0


def _linear_chunks(x, weight, *others):
    """Row pieces for the Linear kernels (see `_pieces`); 0 (compose the plain kernels) unless the arrays are
    2-D of one float dtype the gemm takes."""
    if not _splittable(x, weight, *others) or x.shape[1] != weight.shape[1]:
        return 0
    return _pieces(x.shape[0] * weight.shape[0] * x.shape[1], x.shape[0])


def _few_rows(x, weight):
    """Whether a Linear layer has fewer rows than outputs (a recurrent cell: a batch of 64 against 768 gate
    outputs). Cut by rows, each thread's BLAS call would get too few rows to run well; `gemm` cuts such a
    product by its columns instead, and its weight gradient by the weight's rows, with no shares to add:
    1.2x faster forward and 1.3-1.5x backward at 64 x 320 -> 768, on OpenBLAS and on MKL."""
    return x.shape[0] < weight.shape[0]


def _linear(x, weight, bias, gelu, tanh_form, chunks):
    """(h, y) of _split_linear (y is h without GELU)."""
    h = np.empty((x.shape[0], weight.shape[0]), x.dtype)
    y = np.empty_like(h) if gelu else h
    on_one_blas_thread(_split_linear, _gemm.addresses[x.dtype], _gemm.wide_ints, np.ascontiguousarray(x),
                       np.ascontiguousarray(weight), np.ascontiguousarray(bias if bias is not None else weight[0, :0]),
                       h, y, gelu, tanh_form, chunks)
    return h, y


def _linear_backward(grad, x, weight, h, has_bias, gelu, tanh_form, chunks):
    """(gx, gw, gb) of _split_linear_backward (gb None without bias)."""
    n, k = weight.shape
    grad = np.ascontiguousarray(grad)
    h = np.ascontiguousarray(h) if gelu else grad
    gx, gw, gb = np.empty(x.shape, x.dtype), np.empty((n, k), x.dtype), np.empty(n if has_bias else 0, x.dtype)
    parts, bias_parts = np.empty((chunks - 1, n, k), x.dtype), np.empty((chunks - 1, gb.shape[0]), x.dtype)
    on_one_blas_thread(_split_linear_backward, _gemm.addresses[x.dtype], _gemm.wide_ints, grad, h,
                       np.ascontiguousarray(x), np.ascontiguousarray(weight), np.empty_like(h) if gelu else h, gx, gw,
                       gb, parts, bias_parts, gelu, tanh_form, chunks)
    return gx, gw, (gb if has_bias else None)


def _through_gemm(x, weight):
    """Whether a Linear's products go through `gemm` instead of the row-block kernels: a layer with fewer rows than
    outputs (see `_few_rows`), or a weight that is the transposed view of a contiguous array (a GPT-2 checkpoint's
    Conv1D weight used in place), which gemm reads as it lies and the row-block kernels would copy at every call."""
    return _few_rows(x, weight) or not weight.flags.c_contiguous


def linear_forward(x, weight, bias):
    """x @ weight.T + bias for 2-D x, bias may be None (see `numpy_kernels.linear_forward`)."""
    if matvec.applies(x, weight):
        return matvec.few_rows_linear(x, weight, bias)
    chunks = _linear_chunks(x, weight, *(() if bias is None else (bias,)))
    if chunks == 0:
        return numpy_kernels.linear_forward(x, weight, bias)
    if _through_gemm(x, weight):
        h = gemm(x, weight, False, True)
        if bias is not None:
            h += bias
        return h
    return _linear(x, weight, bias, False, False, chunks)[0]


def int8_linear_forward(x, q, scale, bias):
    """x @ (q * scale[:, None]).T + bias (see `numpy_kernels.int8_linear_forward`): for few rows the int8 weight is
    read once, each row's dot product scaled at its end; for more rows (a prompt) the weight is dequantized once
    and the product runs as a float Linear, whose work then outweighs the conversion."""
    if x.dtype != np.float32 or x.ndim != 2:
        return numpy_kernels.int8_linear_forward(x, q, scale, bias)
    if matvec.applies(x, q):
        return matvec.few_rows_linear(x, q, bias, np.ascontiguousarray(scale, dtype=np.float32))
    return linear_forward(x, numpy_kernels.dequantize_int8(q, scale), bias)


def linear_backward(grad, x, weight, has_bias):
    """(gx, gweight, gbias) of linear_forward (see `numpy_kernels.linear_backward`)."""
    chunks = _linear_chunks(x, weight, grad)
    if chunks == 0 or grad.shape != (x.shape[0], weight.shape[0]):
        return numpy_kernels.linear_backward(grad, x, weight, has_bias)
    if _through_gemm(x, weight):
        return gemm(grad, weight, False, False), gemm(grad, x, True, False), grad.sum(axis=0) if has_bias else None
    return _linear_backward(grad, x, weight, None, has_bias, False, False, chunks)


def linear_gelu_forward(x, weight, bias, approximate):
    """(h, y): h = x @ weight.T + bias (bias may be None), y = gelu(h) (see `numpy_kernels.linear_gelu_forward`)."""
    tanh_form = check_approximate(approximate)
    chunks = _linear_chunks(x, weight, *(() if bias is None else (bias,)))
    if chunks == 0 or _through_gemm(x, weight):
        h = linear_forward(x, weight, bias)
        return h, gelu_forward(h, approximate)
    return _linear(x, weight, bias, True, tanh_form, chunks)


def linear_gelu_backward(grad, x, weight, h, approximate, has_bias):
    """(gx, gweight, gbias) of linear_gelu_forward (see `numpy_kernels.linear_gelu_backward`)."""
    tanh_form = check_approximate(approximate)
    chunks = _linear_chunks(x, weight, grad, h)
    if chunks == 0 or grad.shape != h.shape or _through_gemm(x, weight):
        return linear_backward(gelu_backward(grad, h, approximate), x, weight, has_bias)
    return _linear_backward(grad, x, weight, h, has_bias, True, tanh_form, chunks)
