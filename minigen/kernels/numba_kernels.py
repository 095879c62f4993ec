"""The Numba backend: every kernel of `numpy_kernels` that has a faster twin, same names and signatures.

The implementations live in the `numba` subpackage, one file per idea. A kernel missing here is
served by the NumPy reference (see `minigen.kernels._bind`).
"""
from numba import config as numba_config, set_num_threads as numba_set_num_threads

from . import numba as numba_package
from .numba.activations import gelu_backward, gelu_forward
from .numba.adam import adamw_amsgrad_update, adamw_update
from .numba.attention import attention_backward, attention_forward, cached_attention_forward, \
    packed_attention_backward, packed_attention_forward
from .numba.attention_heads import MASKED_SCORE
from .numba.blas import gemm, int8_linear_forward, linear_backward, linear_forward, linear_gelu_backward, \
    linear_gelu_forward
from .numba.decode import decode_blocks, prepare_decode_blocks
from .numba.embedding import embedding_backward
from .numba.gru import gru_gates_backward, gru_gates_forward, gru_sequence_forward
from .numba.rows import (cross_entropy_backward, cross_entropy_forward, layer_norm_backward, layer_norm_forward,
                         log_softmax_backward, log_softmax_forward, softmax_backward, softmax_forward)
from .numba.seq2seq_attention import additive_attention_backward, additive_attention_forward, \
    additive_attention_step, additive_scores_backward, additive_scores_forward, attention_context_backward, \
    attention_context_forward
from .numba.seq2seq_decode import seq2seq_decode_step

__all__ = ["MASKED_SCORE", "adamw_amsgrad_update", "adamw_update", "additive_attention_backward",
           "additive_attention_forward", "additive_attention_step",
           "additive_scores_backward", "additive_scores_forward", "attention_backward",
           "attention_context_backward", "attention_context_forward", "attention_forward",
           "cached_attention_forward", "cross_entropy_backward", "cross_entropy_forward", "decode_blocks",
           "embedding_backward", "gelu_backward", "gelu_forward", "gemm", "gru_gates_backward",
           "gru_gates_forward", "gru_sequence_forward", "int8_linear_forward", "layer_norm_backward",
           "layer_norm_forward", "linear_backward", "linear_forward", "linear_gelu_backward",
           "linear_gelu_forward", "log_softmax_backward", "log_softmax_forward",
           "packed_attention_backward", "packed_attention_forward", "prepare_decode_blocks", "seq2seq_decode_step",
           "set_num_threads",
           "softmax_backward", "softmax_forward"]


def set_num_threads(n):
    """Use n threads (at most NUMBA_NUM_THREADS) where a kernel can: with n > 1, matrix products are split
    across them (BLAS runs on one thread meanwhile, see `blas.py`) and attention runs (batch, head) pairs in
    parallel; n = 1 keeps every kernel serial. minigen starts with MINIGEN_NUM_THREADS, or one thread per core
    when it is unset."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be a positive int, got {n!r}")
    numba_package.threads = min(n, numba_config.NUMBA_NUM_THREADS)
    numba_set_num_threads(numba_package.threads)
