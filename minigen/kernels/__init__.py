"""The compute layer under the ops: NumPy reference kernels and their Numba twins.

`minigen.kernels.<name>(...)` calls the kernel of the active backend. The backend is chosen by
the environment variable MINIGEN_BACKEND=numpy|numba or by `set_backend()`. Nothing here knows
about Tensors.
"""
import os
import warnings

from . import numpy_kernels

_BACKENDS = {"numpy": numpy_kernels}
_active = numpy_kernels
_active_name = "numpy"


def _load_numba():
    if "numba" in _BACKENDS:
        return _BACKENDS["numba"]
    try:
        from . import numba_kernels
    except Exception as e:  # Numba missing or broken: stay correct on NumPy
        warnings.warn(f"minigen: Numba backend unavailable ({e}); using NumPy", RuntimeWarning, stacklevel=3)
        return None
    _BACKENDS["numba"] = numba_kernels
    return numba_kernels


def set_backend(name):
    """Select the kernel backend: 'numpy' or 'numba'."""
    global _active, _active_name
    if name not in ("numpy", "numba"):
        raise ValueError(f"backend must be 'numpy' or 'numba', got {name!r}")
    module = numpy_kernels if name == "numpy" else _load_numba()
    if module is None:
        name, module = "numpy", numpy_kernels
    _active, _active_name = module, name


def get_backend():
    """The name of the active kernel backend."""
    return _active_name


def __getattr__(name):
    try:
        return getattr(_active, name)
    except AttributeError:
        # a kernel the active backend does not specialise falls back to the reference
        return getattr(numpy_kernels, name)
