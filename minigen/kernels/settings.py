"""The environment variables the kernels read, each checked when minigen is imported: a bad value raises
ValueError naming the variable, what it got and what it takes.

- MINIGEN_BACKEND: 'numba' (the default) or 'numpy'.
- MINIGEN_NUM_THREADS: a positive integer, or unset (one thread per core).
- MINIGEN_BLAS: 'auto' (the default), 'mkl' or 'openblas': the BLAS of the split products (numba/mkl.py).
"""
import os


def _choice(variable, choices, default):
    value = os.environ.get(variable, "").strip().lower() or default
    if value not in choices:
        names = ", ".join(repr(c) for c in choices[:-1]) + f" or {choices[-1]!r}"
        raise ValueError(f"{variable} must be {names}, got {os.environ[variable]!r}")
    return value


def backend():
    return _choice("MINIGEN_BACKEND", ("numpy", "numba"), "numba")


def blas():
    return _choice("MINIGEN_BLAS", ("auto", "mkl", "openblas"), "auto")


def threads():
    """MINIGEN_NUM_THREADS as an int, or None when unset."""
    value = os.environ.get("MINIGEN_NUM_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"MINIGEN_NUM_THREADS must be a positive integer, got {value!r}")
    return int(value)
