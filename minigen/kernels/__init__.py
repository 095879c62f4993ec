"""The compute layer under the ops: NumPy reference kernels and their Numba twins.

`minigen.kernels.<name>(...)` calls the kernel of the active backend: 'numba' when Numba imports,
otherwise 'numpy' (with one RuntimeWarning saying why). Every kernel is a plain function of
`numpy_kernels.py`, the reference: a few lines of NumPy that say what the kernel computes. Its Numba twin,
with the same name and signature, is re-exported by `numba_kernels.py`; a kernel the Numba backend does
not provide is served by the reference. Nothing here knows about Tensors.

Reading path: each name below is imported from `numpy_kernels`, so an editor's go-to-definition on
`kernels.layer_norm_forward` lands on the reference; the fast twin is `numba_kernels.layer_norm_forward`.

Choosing and tuning the backend:

- `set_backend('numpy' | 'numba')` and `get_backend()`.
- MINIGEN_BACKEND=numpy|numba (read at import; default numba).
- MINIGEN_NUM_THREADS=N: let kernels use N threads. Unset, they use Numba's pool, one thread per core, as
  PyTorch does. With more than one thread, the Numba backend splits the Linear layers' matrix products
  across its threads, and NumPy's BLAS is held at one thread during each split product (`numba/blas.py`).
- MINIGEN_BLAS=auto|mkl|openblas (read at import; default auto): which BLAS the split products call. Intel's
  MKL when the optional `mkl` package is installed (`pip install minigen[mkl]`; faster products, see
  `numba/mkl.py`), else NumPy's OpenBLAS.

Numba is imported on the first kernel call (or get_backend()/set_backend()), not by `import minigen`, and
nothing minigen does writes to os.environ: what it tunes it sets in `numba.config` (`_configure_numba`).
"""
import inspect
import os
import tempfile
import warnings

from . import numpy_kernels, settings
# Every kernel by name, bound to the active backend by `_bind`. Listed here so that readers and editors find
# each reference; a kernel appended to numpy_kernels.py is dispatched without being listed (see KERNELS),
# and tests/test_kernel_dispatch.py asks for it to be added here.
from .numpy_kernels import (  # noqa: F401
    MASKED_SCORE, adamw_amsgrad_update, adamw_update, additive_attention_backward, additive_attention_forward,
    additive_attention_step, additive_scores_backward,
    additive_scores_forward, attention_backward, attention_context_backward, attention_context_forward,
    attention_forward, cached_attention_forward, cross_entropy_backward, cross_entropy_forward, decode_blocks,
    dequantize_int8, embedding_backward, gelu_backward, gelu_forward, gemm, gru_gates_backward, gru_gates_forward,
    gru_sequence_forward, int8_linear_forward, layer_norm_backward, layer_norm_forward, linear_backward,
    linear_forward, linear_gelu_backward, linear_gelu_forward, log_softmax_backward, log_softmax_forward,
    packed_attention_backward, packed_attention_forward, packed_heads, prepare_decode_blocks, quantize_int8,
    seq2seq_decode_step, softmax_backward, softmax_forward)

BACKENDS = ("numpy", "numba")
# The kernels: the public functions of numpy_kernels.py (MASKED_SCORE is a constant both backends share).
KERNELS = tuple(name for name, value in vars(numpy_kernels).items() if not name.startswith("_")
                and inspect.isfunction(value) and value.__module__ == numpy_kernels.__name__)

_requested = settings.backend()  # the backend to resolve on first use
settings.blas()  # a bad MINIGEN_BLAS fails here, at import, not when the Numba backend loads
_threads = settings.threads()
_active = None  # the backend module once resolved
_numba_module = None
_numba_error = None  # why Numba could not be loaded; set once, so the warning is given once


def _bind(module):
    """Bind every kernel name in this module to `module`'s kernel, or to the reference where it has none."""
    for name in KERNELS:
        globals()[name] = getattr(module, name, getattr(numpy_kernels, name))


def _loading_backend_first(name):
    """What a kernel name is bound to until the backend is chosen: the first call loads it (importing Numba and
    the kernels takes over half a second, which `import minigen` should not pay), binds every name, and runs."""
    def first_call(*args, **kwargs):
        get_backend()
        return globals()[name](*args, **kwargs)
    first_call.__name__ = first_call.__qualname__ = name
    return first_call


for _name in KERNELS:
    globals()[_name] = _loading_backend_first(_name)
del _name


def _writable_cache_dir():
    """~/.cache/minigen/numba, or a directory in the temporary directory: where compiled kernels go when the
    sources' directory is read-only."""
    for path in (os.path.join(os.path.expanduser("~"), ".cache", "minigen", "numba"),
                 os.path.join(tempfile.gettempdir(), "minigen-numba")):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    return None


def _cache_dir_for_kernels(numba_config):
    """Where the kernels' compiled code is cached: Numba's default (next to the sources) when that is
    writable or the application chose a NUMBA_CACHE_DIR, else `_writable_cache_dir()`."""
    if numba_config.CACHE_DIR:
        return numba_config.CACHE_DIR
    sources = os.path.join(os.path.dirname(os.path.abspath(__file__)), "numba")
    pycache = os.path.join(sources, "__pycache__")
    if os.access(pycache if os.path.isdir(pycache) else sources, os.W_OK):
        return ""
    return _writable_cache_dir() or ""


def _wide_vector_features():
    """On an AVX-512 CPU, the host's features with 512-bit vectors allowed, else None.

    LLVM's tuning for these CPUs prefers 256-bit vectors (older ones slowed their clock for 512-bit code);
    the elementwise and row kernels measured faster with 512 (a small-GPT training step: 8%)."""
    from llvmlite import binding
    features = binding.get_host_cpu_features()
    return features.flatten() + ",-prefer-256-bit" if features.get("avx512f") else None


def _configure_numba():
    """Import the Numba kernels with minigen's settings made in numba.config, never in os.environ (where the
    application's own Numba code and every child process would inherit them):

    - the compile target: on AVX-512, 512-bit vectors (`_wide_vector_features`), unless NUMBA_CPU_FEATURES or
      NUMBA_CPU_NAME chose one (say, `generic` for a portable cache). Numba compiles for one target per process,
      so this also applies to code the application compiles with Numba afterwards;
    - the cache directory, only while the kernels are defined (Numba picks a function's cache location then):
      the application's own NUMBA_CACHE_DIR setting is untouched;
    - the threads: MINIGEN_NUM_THREADS caps the kernels (`numba_kernels.set_num_threads`)."""
    from numba import config
    if config.CPU_FEATURES is None and config.CPU_NAME is None:
        config.CPU_FEATURES = _wide_vector_features()
    own_cache_dir = config.CACHE_DIR
    config.CACHE_DIR = _cache_dir_for_kernels(config)
    try:
        from . import numba_kernels
    finally:
        config.CACHE_DIR = own_cache_dir
    from .numba import key_caches_on_sources
    key_caches_on_sources()
    numba_kernels.set_num_threads(_threads or config.NUMBA_NUM_THREADS)
    return numba_kernels


def _load_numba():
    """The Numba backend module, or None (with one warning) when Numba is missing or broken."""
    global _numba_module, _numba_error
    if _numba_module is not None or _numba_error is not None:
        return _numba_module
    try:
        _numba_module = _configure_numba()
    except Exception as e:  # Numba missing, or a Numba/llvmlite/NumPy mismatch: stay correct on NumPy
        _numba_error = e
        warnings.warn(f"minigen: the Numba backend is unavailable ({type(e).__name__}: {e}); "
                      "using the NumPy kernels", RuntimeWarning, stacklevel=4)
    return _numba_module


def _use(name):
    global _active, _requested
    module = numpy_kernels if name == "numpy" else _load_numba()
    _active, _requested = (module, name) if module is not None else (numpy_kernels, "numpy")
    _bind(_active)


def set_backend(name):
    """Select the kernel backend, 'numpy' or 'numba'; 'numba' falls back to 'numpy' if Numba cannot load."""
    if name not in BACKENDS:
        raise ValueError(f"set_backend: backend must be 'numpy' or 'numba', got {name!r}")
    _use(name)


def get_backend():
    """The name of the active kernel backend: 'numpy' or 'numba'."""
    if _active is None:
        _use(_requested)
    return _requested
