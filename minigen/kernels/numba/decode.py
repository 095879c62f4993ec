"""A GPT's decoding step through all its blocks, as one call: the Numba twin of `numpy_kernels.decode_blocks`.

Decoding one token at batch 1 streams every weight once (the step's time is the time to read the weights, see
`matvec.py`), and the rest is a dozen small operations per block: two LayerNorms, the cache write, attention of
one query per head, GELU, two residual additions. Through the autograd engine each of them is an op, a Tensor
and a kernel call from Python: a 12-layer model of width 64 took 4.1 ms a step that way and takes 1.0-1.3 ms with this
kernel, and GPT-2 small's step went from about 35 to 30 ms in the same hour. Here they run in compiled code
between the products (`matvec.linear_rows`, split across the threads), and the heads split across the threads
by `attention.py`'s serial kernel. All the blocks go in one call, not one call each: that saved GPT-2 small
0.5-0.9 ms of its 13 (int8) to 23 (float32) ms of blocks per token, Python's share of twelve calls.
"""
import math

import numpy as np
from numba import njit, prange

from .. import numpy_kernels
from . import FLOAT_DTYPES, pieces
from .activations import check_approximate, gelu_flat
from .attention import _NO_MASK, _forward_heads
from .matvec import PARALLEL_MIN_WORK, layer_arrays, linear_rows
from .rows import _layer_norm_forward
from .scalar import FASTMATH


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)
def _attention(qkv, keys, values, length, n_head, scale, no_mask, chunks):
    """Each row's new query against the first `length` positions of its cache (the last one its own, stored
    here from qkv): the heads split across the threads. Returns (B, C)."""
    B, C = qkv.shape[0], qkv.shape[1] // 3
    D = C // n_head
    q = np.empty((B, n_head, 1, D), qkv.dtype)
    for b in range(B):
        for h in range(n_head):
            for d in range(D):
                q[b, h, 0, d] = qkv[b, h * D + d]
                keys[b, h, length - 1, d] = qkv[b, C + h * D + d]
                values[b, h, length - 1, d] = qkv[b, 2 * C + h * D + d]
    out = np.empty((B, n_head, 1, D), qkv.dtype)
    lse = np.empty((B, n_head, 1), qkv.dtype)
    n = B * n_head
    if chunks == 1:  # no parallel region (see matvec.linear_rows)
        _forward_heads(q, keys, values, length, no_mask, False, True, scale, out, lse, 0, n)
    else:
        for c in prange(chunks):
            _forward_heads(q, keys, values, length, no_mask, False, True, scale, out, lse, c * n // chunks,
                           (c + 1) * n // chunks)
    return out.reshape(B, C)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _layer_norm(x, weight, bias, eps):
    y = np.empty_like(x)
    stats = np.empty((2, x.shape[0]), x.dtype)
    _layer_norm_forward(x, weight, bias, eps, y, stats[0], stats[1])
    return y


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _decode_block(x, ln_1, attn, proj, ln_2, fc, mlp, keys, values, length, n_head, eps, tanh_form, no_mask,
                  chunks):
    C = x.shape[1]
    scale = 1.0 / math.sqrt(C // n_head)
    qkv = linear_rows(_layer_norm(x, ln_1[0], ln_1[1], eps), attn, chunks)
    x = x + linear_rows(_attention(qkv, keys, values, length, n_head, scale, no_mask, chunks), proj, chunks)
    h = linear_rows(_layer_norm(x, ln_2[0], ln_2[1], eps), fc, chunks)
    g = np.empty_like(h)
    gelu_flat(h.ravel(), tanh_form, g.ravel())
    return x + linear_rows(g, mlp, chunks)


def _norm(weight, bias):
    return weight, np.zeros_like(weight) if bias is None else bias


def _weights_fuse(dt, weights):
    """Whether the fused kernel takes a block's weights for rows of dtype dt: one float dtype throughout (float32
    rows under an int8 weight with float32 scales), weights that lie contiguously either way round (int8 ones
    as (N, K)), and contiguous vectors."""
    ln_1, attn, proj, ln_2, fc, mlp = weights
    if dt not in FLOAT_DTYPES:
        return False
    vectors = [a for a in (*ln_1, *ln_2, attn[1], proj[1], fc[1], mlp[1]) if a is not None]
    for weight, _, scale in (attn, proj, fc, mlp):
        if scale is not None:
            if weight.dtype != np.int8 or dt != np.float32 or scale.dtype != np.float32 or \
                    not weight.flags.c_contiguous or not scale.flags.c_contiguous:
                return False
        elif weight.dtype != dt or not (weight.flags.c_contiguous or weight.T.flags.c_contiguous):
            return False
    return ln_1[0] is not None and ln_2[0] is not None and \
        all(a.dtype == dt and a.ndim == 1 and a.flags.c_contiguous for a in vectors)


def _prepared(dt, weights):
    """A block's weights as `_decode_block` takes them: LayerNorms with a bias array, Linear layers as
    `matvec.layer_arrays` gives them."""
    ln_1, attn, proj, ln_2, fc, mlp = weights
    rows = np.empty((1, 0), dt)  # layer_arrays reads the rows' dtype only
    return (_norm(*ln_1), layer_arrays(rows, *attn), layer_arrays(rows, *proj), _norm(*ln_2),
            layer_arrays(rows, *fc), layer_arrays(rows, *mlp))


def _array_kinds(block):
    """What Numba's type of a prepared block depends on beyond its structure: each array's dtype, and whether it
    is writable and aligned (a user's arrays may be neither)."""
    return tuple((a.dtype, a.flags.writeable, a.flags.aligned) for part in block for a in part
                 if isinstance(a, np.ndarray))


class PreparedBlocks(tuple):
    """A GPT's blocks (each block's weights, as `decode_blocks` takes them) together with what the fused kernel
    needs from them for rows of one dtype, worked out once: checking, wrapping and typing some 200 arrays took
    0.45 ms a step in Python, more than a 12-layer width-64 model's whole step in the kernel. Still a tuple of
    the blocks, so the reference takes it as it is."""


def prepare_decode_blocks(blocks, dtype):
    """`blocks` prepared for `decode_blocks` on rows of `dtype`, to pass to every step of a generation."""
    prepared = PreparedBlocks(blocks)
    prepared.dtype = dt = np.dtype(dtype)
    prepared.arrays = prepared.one_call = None  # None: the reference decodes these blocks
    if prepared and all(_weights_fuse(dt, weights) for weights in prepared):
        prepared.arrays = tuple(_prepared(dt, weights) for weights in prepared)
        prepared.one_call = len({_array_kinds(block) for block in prepared.arrays}) == 1
    return prepared


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _decode_blocks(x, blocks, keys, values, length, n_head, eps, tanh_form, no_mask, chunks):
    for i in range(len(blocks)):  # blocks: a tuple of blocks of one type, so it can be indexed at run time
        ln_1, attn, proj, ln_2, fc, mlp = blocks[i]
        x = _decode_block(x, ln_1, attn, proj, ln_2, fc, mlp, keys[i], values[i], length, n_head, eps, tanh_form,
                          no_mask, chunks)
    return x


def decode_blocks(x, blocks, keys, values, length, n_head, eps, approximate):
    """One decoding step through every block of a pre-LayerNorm GPT for the rows of x (B, C) (see
    `numpy_kernels.decode_blocks`), in one call: the new keys and values are written into the cache's buffers
    (layers, B, H, capacity, D). `blocks` may come from `prepare_decode_blocks` (a generation prepares them once)."""
    dt = x.dtype
    if not isinstance(blocks, PreparedBlocks) or blocks.dtype != dt:
        blocks = prepare_decode_blocks(blocks, dt)
    if blocks.arrays is None or x.ndim != 2 or keys.dtype != dt or values.dtype != dt or \
            not (keys.flags.c_contiguous and values.flags.c_contiguous):  # none: x, as the reference
        return numpy_kernels.decode_blocks(x, blocks, keys, values, length, n_head, eps, approximate)
    tanh_form = check_approximate(approximate)
    x = np.ascontiguousarray(x)
    # one split for every block, by the smallest product: a small model's step stays on one thread
    chunks = pieces(x.shape[0] * blocks[0][2][0].size, PARALLEL_MIN_WORK, x.shape[1])
    arguments = (keys, values, int(length), int(n_head), float(eps), tanh_form, _NO_MASK, chunks)
    if blocks.one_call:
        return _decode_blocks(x, blocks.arrays, *arguments)
    for i, block in enumerate(blocks.arrays):  # blocks Numba types differently: one call each
        x = _decode_blocks(x, (block,), keys[i:i + 1], values[i:i + 1], *arguments[2:])
    return x
