"""Scalar math that LLVM can vectorize, for use inside @njit kernels.

Numba lowers `math.exp` and `math.tanh` to scalar libm calls (SVML is not available everywhere), which
keeps loops from vectorizing: a softmax row then runs several times slower than NumPy's SIMD exp. `fast_exp`
is the classic range reduction exp(x) = 2^n * exp(r), |r| <= ln2/2, with a polynomial for exp(r), written
so that every step is one vector instruction, with no conversion through floor and no select after the
polynomial (shown here for float32; float64 uses 2^52 and 1023):

- x is first clamped to [lo, hi] by compares that are false for NaN, so a NaN passes through untouched;
- adding the "shifter" 1.5 * 2^23 + 127 to x / ln2 rounds it to an integer n and leaves n + 127 in the
  low bits of the sum: an integer subtract of the shifter's bits gives n, and a shift by 23 puts n + 127
  into the exponent field, which is 2^n. (Subtracting the shifter as a float would be folded away
  under 'reassoc'.)
- lo and hi sit where n + 127 is 0 and 255, so that the same shift gives 2^n = 0 below (exp is exactly
  0) and 2^n = inf above. A NaN stays NaN through r and the polynomial, whatever its bits make of 2^n.

Each helper has a float32 variant (float32 constants, so a float32 loop is not silently promoted to
float64) and a float64 variant. fast_exp is within 1e-7 relative in float32 (a degree-6 minimax
polynomial; measured over every float32 input: 9e-8) and 3e-14 in float64. Like np.exp, fast_exp(-inf) is
0, fast_exp(nan) is nan, and large inputs give inf (a little early: above 88.37 in float32, 709.4 in
float64); inputs below -87.7 (float32) or -708.7 (float64), whose exp is subnormal, give 0.
tanh(x) = 2 sigmoid(2x) - 1 loses relative accuracy near 0: its error is about 2e-7 absolute in float32.

The pure-Python bodies of these functions only serve calls from outside @njit code.
"""
import math

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

# LLVM's fast-math flags minus 'nnan' and 'ninf': loops still vectorize (reductions need 'reassoc'),
# but NaN and inf keep their IEEE meaning, so a NaN in the input still shows up in the output.
# Kernels also use error_model="numpy": Python's model tests every division for a zero divisor,
# and that branch alone stops a loop from vectorizing.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


_INT_OF_SAME_WIDTH = {types.float32: types.int32, types.float64: types.int64}


@intrinsic
def _bits_of(typingctx, x):
    """The IEEE bits of a float32 / float64 as an int32 / int64: a free reinterpretation, no conversion."""
    if x not in _INT_OF_SAME_WIDTH:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(signature.return_type))
    return _INT_OF_SAME_WIDTH[x](x), codegen


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float32 / float64 whose IEEE bits are the int32 / int64 `bits` (the inverse of _bits_of)."""
    floats = [f for f, i in _INT_OF_SAME_WIDTH.items() if i == bits]
    if not floats:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(signature.return_type))
    return floats[0](bits), codegen


@intrinsic
def select(typingctx, condition, if_true, if_false):
    """`if_true if condition else if_false` as one LLVM select: no branch in Numba's IR, so inlined
    helpers stay branch-free (vectorizable, and clear of Numba's variable-scope warnings)."""
    if if_true != if_false or not isinstance(condition, types.Boolean):
        return None

    def codegen(context, builder, signature, args):
        return builder.select(args[0], args[1], args[2])
    return if_true(condition, if_true, if_false), codegen


def fast_exp(x):
    """exp(x) for a float32 or float64 scalar inside @njit code (see the module docstring)."""
    return math.exp(x)


def fast_sigmoid(x):
    """1 / (1 + exp(-x)) inside @njit code; never overflows."""
    return 1.0 / (1.0 + math.exp(-x))


def fast_tanh(x):
    """tanh(x) inside @njit code, as 2 * sigmoid(2x) - 1."""
    return math.tanh(x)


def fast_erf(x):
    """erf(x) inside @njit code: a vectorizable approximation in float32, libm's erf in float64."""
    return math.erf(x)


@overload(fast_exp, inline="always", fastmath=FASTMATH)
def _fast_exp(x):
    if x == types.float32:
        f, i = np.float32, np.int32
        # n + 127 = 0 at lo and 255 at hi: 2^n is then exactly 0 and inf (see the module docstring)
        lo, hi, shifter, mantissa_bits = f(-88.0), f(88.5), f(1.5 * 2**23 + 127), i(23)
        shifter_bits = shifter.view(i)

        def exp32(x):
            c = select(x > hi, hi, x)
            c = select(c < lo, lo, c)
            bits = _bits_of(c * f(1.44269504) + shifter)
            n = f(i(bits - shifter_bits))
            # ln2 split in two so that n * ln2 is subtracted without rounding error (Cody-Waite)
            r = c - n * f(0.693359375) + n * f(2.12194440e-4)
            # minimax fit of exp on |r| <= ln2/2 with exp(0) = 1 exactly: 2e-9 relative before rounding
            p = f(0.0013843607)
            p = p * r + f(0.008374196)
            p = p * r + f(0.041668005)
            p = p * r + f(0.1666643)
            p = p * r + f(0.49999994)
            p = p * r + f(1.0)
            p = p * r + f(1.0)
            return p * _float_from_bits(i(bits << mantissa_bits))
        return exp32
    if x == types.float64:
        i = np.int64
        # n + 1023 = 0 at lo and 2047 at hi
        lo, hi, shifter, mantissa_bits = -709.0, 709.8, 1.5 * 2.0**52 + 1023, i(52)
        shifter_bits = np.float64(shifter).view(i)

        def exp64(x):
            c = select(x > hi, hi, x)
            c = select(c < lo, lo, c)
            bits = _bits_of(c * 1.4426950408889634 + shifter)
            n = float(bits - shifter_bits)
            r = c - n * 0.6931471803691238 - n * 1.9082149292705877e-10
            # Taylor series to degree 12: the remainder is below 2e-16 on |r| <= ln2/2
            p = 2.08767569878681e-09
            p = p * r + 2.505210838544172e-08
            p = p * r + 2.755731922398589e-07
            p = p * r + 2.7557319223985893e-06
            p = p * r + 2.48015873015873e-05
            p = p * r + 0.0001984126984126984
            p = p * r + 0.001388888888888889
            p = p * r + 0.008333333333333333
            p = p * r + 0.041666666666666664
            p = p * r + 0.16666666666666666
            p = p * r + 0.5
            p = p * r + 1.0
            p = p * r + 1.0
            return p * _float_from_bits(bits << mantissa_bits)
        return exp64
    return None


@overload(fast_sigmoid, inline="always", fastmath=FASTMATH)
def _fast_sigmoid(x):
    if isinstance(x, types.Float):
        one = _one(x)

        def sigmoid(x):
            return one / (one + fast_exp(-x))
        return sigmoid
    return None


@overload(fast_tanh, inline="always", fastmath=FASTMATH)
def _fast_tanh(x):
    if isinstance(x, types.Float):
        one, two = _one(x), 2 * _one(x)

        def tanh(x):
            return two / (one + fast_exp(-(x + x))) - one
        return tanh
    return None


def _one(numba_type):
    """1 as a constant of the scalar type, so float32 arithmetic stays float32."""
    return np.float32(1.0) if numba_type == types.float32 else 1.0


@overload(fast_erf, inline="always", fastmath=FASTMATH)
def _fast_erf(x):
    if x == types.float32:
        # erfc(|x|) = t exp(-x^2 + P(t)), t = 1 / (1 + |x|/2): Chebyshev fit from Numerical Recipes,
        # relative error below 1.2e-7 for every x, so about 2 ulp of erf in float32
        one, half = np.float32(1.0), np.float32(0.5)

        def erf32(x):
            a = abs(x)
            t = one / (one + half * a)
            p = np.float32(0.17087277)
            p = p * t + np.float32(-0.82215223)
            p = p * t + np.float32(1.48851587)
            p = p * t + np.float32(-1.13520398)
            p = p * t + np.float32(0.27886807)
            p = p * t + np.float32(-0.18628806)
            p = p * t + np.float32(0.09678418)
            p = p * t + np.float32(0.37409196)
            p = p * t + np.float32(1.00002368)
            p = p * t + np.float32(-1.26551223)
            erfc = t * fast_exp(p - a * a)
            return select(x >= 0, one - erfc, erfc - one)
        return erf32
    if x == types.float64:
        def erf64(x):
            return math.erf(x)
        return erf64
    return None


@njit(inline="always", fastmath=FASTMATH)
def max_of(row, count, initial):
    """max(initial, row[0], ..., row[count - 1]), NaNs skipped.

    Without 'nnan' LLVM will not vectorize a max reduction; eight independent running maxima keep
    eight compares in flight instead of one dependent chain, which makes a softmax row about 2x faster
    than one running max (and than calling a separate full-fast-math function per row). A NaN in the
    row still reaches the caller's output through exp(row - max)."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = initial
    count8 = count - count % 8
    for j in range(0, count8, 8):
        m0 = select(row[j] > m0, row[j], m0)
        m1 = select(row[j + 1] > m1, row[j + 1], m1)
        m2 = select(row[j + 2] > m2, row[j + 2], m2)
        m3 = select(row[j + 3] > m3, row[j + 3], m3)
        m4 = select(row[j + 4] > m4, row[j + 4], m4)
        m5 = select(row[j + 5] > m5, row[j + 5], m5)
        m6 = select(row[j + 6] > m6, row[j + 6], m6)
        m7 = select(row[j + 7] > m7, row[j + 7], m7)
    for j in range(count8, count):
        m0 = select(row[j] > m0, row[j], m0)
    return max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
