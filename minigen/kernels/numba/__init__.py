"""Numba twins of the reference kernels in `numpy_kernels.py`, one file per idea.

`minigen.kernels.numba_kernels` re-exports them; every public function there has the signature
of its NumPy reference. Helpers shared by several files live in `scalar.py` (vectorizable exp,
sigmoid, tanh, erf) and `tiles.py` (small matrix products for the tiled attention).

The kernels compile for float32 and float64 only; every wrapper hands other dtypes (integers,
float16) to the NumPy reference, which gives NumPy's answer instead of a Numba typing error.
Compiled kernels are cached next to these files (see `minigen.kernels` for when they go elsewhere). Numba
checks a cached kernel against the modification time of its own source file only, but a kernel is compiled
together with the helpers it calls from other files (`blas.py` inlines GELU from `activations.py`, attention
its tiles from `tiles.py`, nearly everything `scalar.py`): an edit there left the old machine code running.
So `key_caches_on_sources` keys each kernel's cache on a digest of its file and of every file of this
folder that it imports from, directly or not; compiled code reads nothing from outside this folder.

Matrix products and the Linear layers (`blas.py`), attention and the AdamW update of a large parameter
split across Numba's threads (`pieces`); small calls stay serial, as a parallel region costs a few
microseconds to start. Inside prange, a piece calls a serial kernel on slices: the same loop written over
an index range of the whole arrays vectorized worse (2.5x slower). The row kernels stay serial: at the
models' sizes splitting them gained little (a small GPT's LayerNorm forward 24 -> 19 us, its backward
slower with per-thread partial sums).
"""
import ast
import hashlib
import os
import sys

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

threads = 1  # threads a kernel may split its work across; set by numba_kernels.set_num_threads


def pieces(work, min_work, most):
    """How many pieces a call should run in: 1 (serial, no parallel region) below min_work or on one
    thread, else one per thread, and at most `most` (the number of independent items)."""
    return max(1, min(threads, most)) if work >= min_work else 1



def _imported_files(path):
    """The files of path's folder that the module at `path` imports from: `from .x import ...` and
    `from . import x` (x a module of the folder, or a name of its __init__.py)."""
    folder = os.path.dirname(path)
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read(), path)
    files = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for name in [node.module] if node.module else [alias.name for alias in node.names]:
                file = os.path.join(folder, name.split(".")[0] + ".py")
                files.add(file if os.path.isfile(file) else os.path.join(folder, "__init__.py"))
    return files


def source_digest(path):
    """A digest of the module at `path` and of every file of its folder that it imports from, directly or not."""
    seen, pending = set(), [os.path.abspath(path)]
    while pending:
        file = pending.pop()
        if file not in seen:
            seen.add(file)
            pending.extend(_imported_files(file))
    digest = hashlib.sha256()
    for file in sorted(seen):
        with open(file, "rb") as source:
            digest.update(os.path.basename(file).encode() + b"\0" + source.read() + b"\0")
    return digest.hexdigest()


def key_caches_on_sources(package=__name__):
    """Key the cache of every cached Numba kernel defined in `package`'s modules on `source_digest` of its
    module instead of the module file's modification time and size, Numba's stamp (see the docstring above).
    Call it once the modules are imported, before their kernels' first call."""
    digests = {}
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(package + ".") or not getattr(module, "__file__", None):
            continue
        for value in vars(module).values():
            index = getattr(getattr(value, "_cache", None), "_cache_file", None)  # a Dispatcher with cache=True
            if index is not None and getattr(value, "py_func", None) is not None \
                    and value.py_func.__module__ == name:
                if module.__file__ not in digests:
                    digests[module.__file__] = source_digest(module.__file__)
                index._source_stamp = digests[module.__file__]
