"""Small dense products on tiles, for the tiled attention kernels.

SciPy is not a dependency, so `np.dot` is not available inside @njit code; these loops are the
replacement. The innermost loop runs along contiguous rows of `out` and `b`, so LLVM vectorizes it;
two rows of `out` and four rows of `b` are handled per pass, so every loaded vector of `b` feeds two
FMAs and every `out` vector is loaded and stored once per four products: about 2x the naive loop.
"""
from numba import njit

from .scalar import FASTMATH


@njit(fastmath=FASTMATH, error_model="numpy")
def matmul_acc(out, a, b, rows, inner, cols):
    """out[:rows, :cols] += a[:rows, :inner] @ b[:inner, :cols].

    All three are C-contiguous (or a leading-axis slice of such an array): a transposed operand is
    copied with `transpose_into` first, which costs less than compiling and running a strided variant."""
    inner4 = inner - inner % 4
    rows2 = rows - rows % 2
    for m in range(0, rows2, 2):
        o0, o1 = out[m], out[m + 1]
        for k in range(0, inner4, 4):
            a00, a01, a02, a03 = a[m, k], a[m, k + 1], a[m, k + 2], a[m, k + 3]
            a10, a11, a12, a13 = a[m + 1, k], a[m + 1, k + 1], a[m + 1, k + 2], a[m + 1, k + 3]
            b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
            for n in range(cols):
                x0, x1, x2, x3 = b0[n], b1[n], b2[n], b3[n]
                o0[n] += a00 * x0 + a01 * x1 + a02 * x2 + a03 * x3
                o1[n] += a10 * x0 + a11 * x1 + a12 * x2 + a13 * x3
        for k in range(inner4, inner):
            a0k, a1k, bk = a[m, k], a[m + 1, k], b[k]
            for n in range(cols):
                o0[n] += a0k * bk[n]
                o1[n] += a1k * bk[n]
    if rows2 < rows:
        m = rows2
        o0 = out[m]
        for k in range(0, inner4, 4):
            a00, a01, a02, a03 = a[m, k], a[m, k + 1], a[m, k + 2], a[m, k + 3]
            b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
            for n in range(cols):
                o0[n] += a00 * b0[n] + a01 * b1[n] + a02 * b2[n] + a03 * b3[n]
        for k in range(inner4, inner):
            a0k, bk = a[m, k], b[k]
            for n in range(cols):
                o0[n] += a0k * bk[n]


@njit(fastmath=FASTMATH, error_model="numpy")
def transpose_into(dst, src, start, count):
    """dst[:, :count] = src[start:start + count].T"""
    for c in range(count):
        row = src[start + c]
        for d in range(row.shape[0]):
            dst[d, c] = row[d]


@njit(fastmath=FASTMATH, error_model="numpy")
def copy_rows(dst, start, src, count):
    """dst[start:start + count] = src[:count], row by row (no broadcasting machinery to compile)."""
    for c in range(count):
        d, x = dst[start + c], src[c]
        for e in range(x.shape[0]):
            d[e] = x[e]


@njit(fastmath=FASTMATH, error_model="numpy")
def dot_rows(out, rows, vector, count):
    """out[c] = rows[c] . vector for c < count; four rows per pass share each load of `vector`."""
    n = vector.shape[0]
    zero = vector.dtype.type(0)
    count4 = count - count % 4
    for c in range(0, count4, 4):
        r0, r1, r2, r3 = rows[c], rows[c + 1], rows[c + 2], rows[c + 3]
        a0 = a1 = a2 = a3 = zero
        for d in range(n):
            x = vector[d]
            a0 += r0[d] * x
            a1 += r1[d] * x
            a2 += r2[d] * x
            a3 += r3[d] * x
        out[c], out[c + 1], out[c + 2], out[c + 3] = a0, a1, a2, a3
    for c in range(count4, count):
        row = rows[c]
        a0 = zero
        for d in range(n):
            a0 += row[d] * vector[d]
        out[c] = a0
