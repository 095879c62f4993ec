"""Register-blocked matrix products on tiles, for the attention kernels.

SciPy is not a dependency, so `np.dot` is not available inside @njit code. A plain triple loop, even
with its innermost loop along contiguous rows, runs at about half of what the core can do: LLVM keeps
the output row in memory, reloading and storing it every few multiply-adds, and picks 256-bit vectors
even on AVX-512 machines. The products here are written one level lower, as LLVM IR (`_block`): a
block of ROWS output rows by one or two machine vectors of columns is held in vector registers for
the whole inner loop, so every loaded vector of `b` feeds ROWS fused multiply-adds and `out` is read
and written once per block. On the 2-core AVX-512 reference machine that is about 2x the plain loop
(~170 vs ~85 GFLOP/s in float32, operands in L1 cache). The vectors are as wide as the target's
registers (64 bytes with AVX-512, 32 with AVX, else 16: `VECTOR_BYTES`, read from the CPU features Numba
compiles for, which are part of its cache key).

Callers pad instead of handling ragged edges: the row count of a product is a multiple of ROWS and the
column count a multiple of `lanes(out)`, and the rows and columns read must exist (padded scratch
buffers, or arrays whose shapes happen to be whole blocks). Rows may lie anywhere (a head's rows inside
a (batch, time, 3 x width) projection, say), but each row must be contiguous: vectors are loaded from
and stored to consecutive elements. Every sum runs in a fixed order (k
ascending, one fused multiply-add each), so a product's result depends on its operands only.
"""
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils, codegen, config
from numba.extending import intrinsic

from .scalar import FASTMATH


def _vector_bytes():
    """Bytes in the widest vector register of the CPU Numba compiles for (NUMBA_CPU_FEATURES if set)."""
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else codegen.get_host_cpu_features()
    if "+avx512f" in features:
        return 64
    if "+avx" in features:
        return 32
    return 16


VECTOR_BYTES = _vector_bytes()
# Output rows per register block: 2 x ROWS accumulators, and ROWS + 2 loads feed 2 x ROWS FMAs. AVX-512 has
# 32 vector registers, room for 8 rows (10-15% faster than 4 at T >= 256); smaller targets have 16.
ROWS = 8 if VECTOR_BYTES == 64 else 4


@njit(inline="always")
def lanes(array):
    """Elements of `array`'s dtype per vector register: column counts of products are multiples of it."""
    return VECTOR_BYTES // array.itemsize


@njit(inline="always")
def round_up(n, multiple):
    """The smallest multiple of `multiple` that is >= n."""
    return (n + multiple - 1) // multiple * multiple


def _block(vectors, transposed, accumulate):
    """An intrinsic computing one ROWS x (vectors * lanes) block of out (+)= a @ b, see `_emit_block`."""
    @intrinsic
    def block(typingctx, out, om, on, a, am, ak, b, bk, count):
        arrays = (out, a, b)
        if not all(isinstance(x, types.Array) and x.ndim == 2 and x.layout in "CA" for x in arrays) \
                or out.dtype not in (types.float32, types.float64) or a.dtype != out.dtype or b.dtype != out.dtype:
            return None  # 2-D arrays of one float dtype

        def codegen(context, builder, signature, args):
            _emit_block(context, builder, signature, args, vectors, transposed, accumulate)
            return context.get_dummy_value()
        return types.void(out, om, on, a, am, ak, b, bk, count), codegen
    return block


def _emit_block(context, builder, signature, args, vectors, transposed, accumulate):
    """out[om + r, on + c] (+)= sum over t < count of a[am + r, ak + t] * b[bk + t, on + c], r < ROWS,
    c < vectors * lanes; with `transposed`, a[ak + t, am + r] instead (a is read one scalar at a time, so
    its layout costs nothing). Indices are not checked: callers keep them inside their padded buffers."""
    out_ty, a_ty, b_ty = signature.args[0], signature.args[3], signature.args[6]
    out, om, on, a, am, ak, b, bk, count = [context.cast(builder, v, t, types.intp) if isinstance(t, types.Integer)
                                            else context.make_array(t)(context, builder, v)
                                            for v, t in zip(args, signature.args)]
    intp = context.get_value_type(types.intp)
    suffix = "f32" if out_ty.dtype == types.float32 else "f64"
    width = VECTOR_BYTES * 8 // out_ty.dtype.bitwidth
    vec = ir.VectorType(context.get_value_type(out_ty.dtype), width)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), f"llvm.fma.v{width}{suffix}")

    def plus(x, n):
        return builder.add(x, ir.Constant(intp, n))

    def element(array, array_ty, row, col):
        return cgutils.get_item_pointer(context, builder, array_ty, array, [row, col])

    def vector_at(array, array_ty, row, col):
        return builder.bitcast(element(array, array_ty, row, col), vec.as_pointer())

    def broadcast(scalar):
        one = builder.insert_element(ir.Constant(vec, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined), ir.Constant(ir.VectorType(
            ir.IntType(32), width), [0] * width))

    blocks = [(r, w) for r in range(ROWS) for w in range(vectors)]
    out_ptrs = {(r, w): vector_at(out, out_ty, plus(om, r), plus(on, w * width)) for r, w in blocks}
    accs = {block: cgutils.alloca_once(builder, vec) for block in blocks}  # registers, after LLVM's mem2reg
    for block in blocks:
        builder.store(builder.load(out_ptrs[block], align=4) if accumulate else ir.Constant(vec, None), accs[block])
    with cgutils.for_range(builder, count) as loop:
        t_a, t_b = builder.add(ak, loop.index), builder.add(bk, loop.index)
        b_vecs = [builder.load(vector_at(b, b_ty, t_b, plus(on, w * width)), align=4) for w in range(vectors)]
        for r in range(ROWS):
            row, col = (t_a, plus(am, r)) if transposed else (plus(am, r), t_a)
            a_r = broadcast(builder.load(element(a, a_ty, row, col)))
            for w in range(vectors):
                builder.store(builder.call(fma, [a_r, b_vecs[w], builder.load(accs[r, w])]), accs[r, w])
    for block in blocks:
        builder.store(builder.load(accs[block]), out_ptrs[block], align=4)


_set1, _set2 = _block(1, False, False), _block(2, False, False)
_add1, _add2 = _block(1, False, True), _block(2, False, True)
_add1_t, _add2_t = _block(1, True, True), _block(2, True, True)
SET, ADD, ADD_T = 0, 1, 2  # the products: out = a @ b, out += a @ b, out += a.T @ b


@njit(inline="always")
def _run_block(mode, wide, out, om, on, a, am, ak, b, bk, count):
    """One register block of the product `mode`, two vectors of columns wide or one."""
    if mode == SET and wide:
        _set2(out, om, on, a, am, ak, b, bk, count)
    elif mode == SET:
        _set1(out, om, on, a, am, ak, b, bk, count)
    elif mode == ADD and wide:
        _add2(out, om, on, a, am, ak, b, bk, count)
    elif mode == ADD:
        _add1(out, om, on, a, am, ak, b, bk, count)
    elif wide:
        _add2_t(out, om, on, a, am, ak, b, bk, count)
    else:
        _add1_t(out, om, on, a, am, ak, b, bk, count)


@njit(fastmath=FASTMATH, error_model="numpy")
def _product(mode, out, om, a, am, ak, b, bk, rows, count, cols):
    step = lanes(out)
    pairs = cols - cols % (2 * step)
    for n in range(0, pairs, 2 * step):  # columns outside, so that b's column panel stays in L1 cache
        for m in range(0, rows, ROWS):
            _run_block(mode, True, out, om + m, n, a, am + m, ak, b, bk, count)
    if pairs < cols:
        for m in range(0, rows, ROWS):
            _run_block(mode, False, out, om + m, pairs, a, am + m, ak, b, bk, count)


@njit(inline="always")
def set_product(out, om, a, am, ak, b, bk, rows, count, cols):
    """out[om:om + rows, :cols] = a[am:am + rows, ak:ak + count] @ b[bk:bk + count, :cols].

    rows is a multiple of ROWS, cols of lanes(out); all three arrays 2-D C-contiguous, indices unchecked."""
    _product(SET, out, om, a, am, ak, b, bk, rows, count, cols)


@njit(inline="always")
def add_product(out, om, a, am, ak, b, bk, rows, count, cols):
    """out[om:om + rows, :cols] += a[am:am + rows, ak:ak + count] @ b[bk:bk + count, :cols] (as set_product)."""
    _product(ADD, out, om, a, am, ak, b, bk, rows, count, cols)


@njit(inline="always")
def add_product_t(out, om, a, am, ak, b, bk, rows, count, cols):
    """out[om:om + rows, :cols] += a[ak:ak + count, am:am + rows].T @ b[bk:bk + count, :cols] (as set_product):
    the transposed operand needs no copy."""
    _product(ADD_T, out, om, a, am, ak, b, bk, rows, count, cols)


@njit(fastmath=FASTMATH, error_model="numpy")
def copy_rows(dst, dst_row, src, src_row, count, factor):
    """dst[dst_row + r, :d] = src[src_row + r, :d] * factor for r < count, d the narrower of the two widths
    (one of them may be a padded buffer).

    Like every helper here, this indexes 2-D arrays instead of taking row views: a view costs two atomic
    reference count updates, which in a loop over short rows cost more than the rows' arithmetic."""
    f = src.dtype.type(factor)
    for r in range(count):
        for e in range(min(dst.shape[1], src.shape[1])):
            dst[dst_row + r, e] = src[src_row + r, e] * f


@njit(fastmath=FASTMATH, error_model="numpy")
def transpose_into(dst, src, start, count, factor):
    """dst[:, :count] = src[start:start + count].T * factor; writing along dst's rows is the faster order."""
    f = src.dtype.type(factor)
    for d in range(src.shape[1]):
        for c in range(count):
            dst[d, c] = src[start + c, d] * f


@njit(fastmath=FASTMATH, error_model="numpy")
def dot_rows(out, rows, vector, count):
    """out[0, c] = rows[c] . vector[0] for c < count (out and vector are single rows, (1, n) arrays); four
    rows per pass share each load of `vector`."""
    n = vector.shape[1]
    zero = vector.dtype.type(0)
    count4 = count - count % 4
    for c in range(0, count4, 4):
        a0 = a1 = a2 = a3 = zero
        for d in range(n):
            x = vector[0, d]
            a0 += rows[c, d] * x
            a1 += rows[c + 1, d] * x
            a2 += rows[c + 2, d] * x
            a3 += rows[c + 3, d] * x
        out[0, c], out[0, c + 1], out[0, c + 2], out[0, c + 3] = a0, a1, a2, a3
    for c in range(count4, count):
        a0 = zero
        for d in range(n):
            a0 += rows[c, d] * vector[0, d]
        out[0, c] = a0
