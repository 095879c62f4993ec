"""The compute layer under the ops: NumPy reference kernels and their Numba twins.

`minigen.kernels.<name>(...)` calls the kernel of the active backend: 'numba' when Numba imports,
otherwise 'numpy' (with one RuntimeWarning saying why). A kernel the Numba backend does not provide
is served by the NumPy reference. Nothing here knows about Tensors.

Choosing and tuning the backend:

- `set_backend('numpy' | 'numba')` and `get_backend()`.
- MINIGEN_BACKEND=numpy|numba (read at import; default numba).
- MINIGEN_NUM_THREADS=N: let kernels use N threads (sets NUMBA_NUM_THREADS too if Numba is not
  imported yet; `minigen/__init__.py` gives BLAS the same number). Unset, Numba's pool has one thread
  per core, as PyTorch's does. With more than one thread, the Numba backend splits the Linear layers'
  matrix products across its threads and holds NumPy's BLAS at one thread (`numba/blas.py`: one
  pool instead of two fighting over the cores); `set_backend('numpy')` gives BLAS its threads back.
- MINIGEN_BLAS=auto|mkl|openblas (read at import; default auto): which BLAS the split products call. Intel's
  MKL when the optional `mkl` package is installed (`pip install minigen[mkl]`; faster products, see
  `numba/mkl.py`), else NumPy's OpenBLAS.
- NUMBA_CPU_FEATURES: when neither it nor NUMBA_CPU_NAME is set, minigen sets it on AVX-512 CPUs to the
  host's features with 512-bit vectors allowed (see `_wide_vector_features`); set either yourself to
  compile for another target.
- NUMBA_CACHE_DIR: where compiled kernels are cached. By default Numba writes next to the kernels'
  sources; when that directory is read-only, ~/.cache/minigen/numba (or a temporary directory) is used,
  so every start after the first loads the kernels instead of compiling them.

Numba is imported on the first kernel call (or get_backend()/set_backend()), not by `import minigen`.
"""
import os
import sys
import tempfile
import types
import warnings

from . import numpy_kernels, settings

BACKENDS = ("numpy", "numba")
MASKED_SCORE = numpy_kernels.MASKED_SCORE  # a constant both backends share; reading it loads no backend

_requested = settings.backend()  # the backend to resolve on first use
settings.blas()  # a bad MINIGEN_BLAS fails here, at import, not when the Numba backend loads
_threads = settings.threads()
_active = None  # the backend module once resolved
_numba_module = None
_numba_error = None  # why Numba could not be loaded; set once, so the warning is given once
_cached = set()  # kernel names bound in this module's namespace for fast lookup


def _writable_cache_dir():
    """NUMBA_CACHE_DIR for when the sources' directory is read-only: ~/.cache/minigen/numba or a tempdir."""
    for path in (os.path.join(os.path.expanduser("~"), ".cache", "minigen", "numba"),
                 os.path.join(tempfile.gettempdir(), "minigen-numba")):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    return None


def _prepare_numba_environment():
    """Settings Numba reads when it is imported: the cache directory and the thread pool size."""
    if not os.environ.get("NUMBA_CACHE_DIR"):
        sources = os.path.join(os.path.dirname(os.path.abspath(__file__)), "numba")
        pycache = os.path.join(sources, "__pycache__")
        if not os.access(pycache if os.path.isdir(pycache) else sources, os.W_OK):
            path = _writable_cache_dir()
            if path is not None:
                os.environ["NUMBA_CACHE_DIR"] = path
                if "numba" in sys.modules:  # imported already: its config has read the environment
                    sys.modules["numba"].config.CACHE_DIR = path
    if _threads is not None and "numba" not in sys.modules and not os.environ.get("NUMBA_NUM_THREADS"):
        os.environ["NUMBA_NUM_THREADS"] = str(_threads)
    own_target = os.environ.get("NUMBA_CPU_FEATURES") or os.environ.get("NUMBA_CPU_NAME")
    if "numba" not in sys.modules and not own_target:
        os.environ.update(_wide_vector_features())


def _wide_vector_features():
    """On an AVX-512 CPU, {"NUMBA_CPU_FEATURES": the host's features with 512-bit vectors allowed}, else {}.

    LLVM's tuning for these CPUs prefers 256-bit vectors (older ones slowed their clock for 512-bit code);
    the elementwise and row kernels measured faster with 512 (a small-GPT training step: 8%). A user's own
    NUMBA_CPU_FEATURES or NUMBA_CPU_NAME (say, `generic` for a portable cache) wins."""
    from llvmlite import binding
    features = binding.get_host_cpu_features()
    if not features.get("avx512f"):
        return {}
    return {"NUMBA_CPU_FEATURES": features.flatten() + ",-prefer-256-bit"}


def _load_numba():
    """The Numba backend module, or None (with one warning) when Numba is missing or broken."""
    global _numba_module, _numba_error
    if _numba_module is not None or _numba_error is not None:
        return _numba_module
    try:
        _prepare_numba_environment()
        from . import numba_kernels
        numba_kernels.set_num_threads(_threads or numba_kernels.numba_config.NUMBA_NUM_THREADS)
    except Exception as e:  # Numba missing, or a Numba/llvmlite/NumPy mismatch: stay correct on NumPy
        _numba_error = e
        warnings.warn(f"minigen: the Numba backend is unavailable ({type(e).__name__}: {e}); "
                      "using the NumPy kernels", RuntimeWarning, stacklevel=4)
        return None
    _numba_module = numba_kernels
    return numba_kernels


def _use(name):
    global _active, _requested
    module = numpy_kernels if name == "numpy" else _load_numba()
    _active, _requested = (module, name) if module is not None else (numpy_kernels, "numpy")
    if _numba_module is not None:  # BLAS is held at one thread only while the Numba backend splits products
        _numba_module.hold_blas_threads(_active is _numba_module)
    for kernel in _cached:
        globals().pop(kernel, None)
    _cached.clear()


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


def __getattr__(name):
    # every kernel has a NumPy reference, so only its names are served (and only they load a backend)
    reference = None if name.startswith("_") else getattr(numpy_kernels, name, None)
    if reference is None or isinstance(reference, types.ModuleType):
        raise AttributeError(f"module 'minigen.kernels' has no kernel {name!r}")
    if _active is None:
        _use(_requested)
    kernel = getattr(_active, name, reference)  # a kernel Numba does not specialise: the reference
    globals()[name] = kernel  # later look-ups skip __getattr__; set_backend() unbinds
    _cached.add(name)
    return kernel
