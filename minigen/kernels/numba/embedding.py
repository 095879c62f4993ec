"""The embedding gradient: scatter-add rows of dy into a (num_embeddings, D) table.

np.add.at is a slow unbuffered ufunc loop; a plain loop over ids adds each row with SIMD."""
import numpy as np
from numba import njit

from .. import numpy_kernels
from . import FLOAT_DTYPES
from .scalar import FASTMATH


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _embedding_backward(ids, dy, dw):
    """Adds dy[i] to dw[ids[i]]; returns the first position of an id out of range, or -1."""
    num = dw.shape[0]
    for i in range(ids.shape[0]):
        row = ids[i]
        if row < 0:  # negative ids count from the end, as in NumPy indexing
            row += num
        if row < 0 or row >= num:
            return i
        out, g = dw[row], dy[i]
        for j in range(g.shape[0]):
            out[j] += g[j]
    return -1


def embedding_backward(ids, dy, num_embeddings):
    """Scatter-add rows of dy (N, D) into a (num_embeddings, D) gradient; repeated ids accumulate."""
    if dy.dtype not in FLOAT_DTYPES:
        return numpy_kernels.embedding_backward(ids, dy, num_embeddings)
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    dy = np.ascontiguousarray(dy)
    dw = np.zeros((num_embeddings, dy.shape[1]), dtype=dy.dtype)
    bad = _embedding_backward(ids, dy, dw)
    if bad >= 0:
        raise IndexError(f"embedding_backward: ids[{bad}] = {ids[bad]} is out of range for "
                         f"num_embeddings={num_embeddings}")
    return dw
