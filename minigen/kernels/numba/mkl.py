"""Intel's MKL for the matrix products, when the optional `mkl` package is installed (`pip install minigen[mkl]`).

Why: the Linear layers' products are most of a GPT training step, and on one core MKL's sgemm runs the small
GPT's shapes at 170-190 GFLOP/s where NumPy's OpenBLAS reaches 125-150 (measured here, AVX-512). minigen
keeps NumPy on its own BLAS; only the products that `blas.py` splits across Numba's threads call MKL, by
address, like OpenBLAS.

The `mkl` wheel puts its libraries in <prefix>/lib (the virtual environment's, or the user base's for a
`--user` install). minigen sets MKL up before its first product: 32-bit integers (the LP64 interface), one
thread per call (its sequential layer: each call is already one thread's piece of a product) and
MKL's reproducible mode, strict (CNR: the same bits on every run whatever the arrays' alignment, which
otherwise picks among code paths); the strict mode measured no slower.

MINIGEN_BLAS chooses: 'auto' (the default: MKL when installed), 'mkl' (warns when it cannot be loaded) or
'openblas' (never MKL).

One effect reaches beyond minigen: MKL's runtime loads its parts into the process's global symbol scope, so a
library loaded afterwards that calls MKL dynamically binds to this sequential MKL. PyTorch imported after
minigen's Numba backend has loaded (its first kernel call) then runs its products on one thread; import torch
first, or set MINIGEN_BLAS=openblas, when both share a process (measured: PyTorch 2.13 imported after minigen
had loaded MKL reported `torch.get_num_threads()` 1 on this 2-core machine, 2 without minigen). MKL's
GNU-threaded layer limited to one BLAS thread leaves PyTorch the same way; unlimited, it would thread inside
minigen's own threads. Loaded into a link-map namespace of its own with dlmopen, where PyTorch could not bind
to it, MKL crashed on its first call.
"""
import ctypes
import glob
import os
import site
import sys
import warnings

import numpy as np

LP64, SEQUENTIAL = 0, 1  # MKL_Set_Interface_Layer / MKL_Set_Threading_Layer values (mkl_service.h)
CNR_AUTO, CNR_STRICT = 2, 0x10000  # MKL_CBWR_Set: the branch for this CPU, reproducible whatever the alignment


class Gemm:
    """A BLAS's cblas_sgemm / cblas_dgemm addresses by dtype, whether it takes 64-bit integers, and its name."""

    def __init__(self, addresses, wide_ints, name):
        self.addresses, self.wide_ints, self.name = addresses, wide_ints, name


def _library_paths():
    """MKL's runtime library wherever the `mkl` wheel may have put it."""
    folders = [os.path.join(sys.prefix, "lib")]
    if site.ENABLE_USER_SITE:
        folders.append(os.path.join(site.getuserbase(), "lib"))
    names = ("libmkl_rt.so*", "libmkl_rt*.dylib")
    return [path for folder in folders for name in names for path in sorted(glob.glob(os.path.join(folder, name)))]


def _load(path):
    """MKL at `path` set up as the module docstring says, as a Gemm; None when any step fails."""
    try:
        library = ctypes.CDLL(path)
        for name in ("MKL_Set_Interface_Layer", "MKL_Set_Threading_Layer", "MKL_CBWR_Set"):
            getattr(library, name).argtypes = [ctypes.c_int]
        if library.MKL_Set_Interface_Layer(LP64) != LP64 or library.MKL_Set_Threading_Layer(SEQUENTIAL) != SEQUENTIAL \
                or library.MKL_CBWR_Set(CNR_AUTO | CNR_STRICT) != 0:
            return None
        version = ctypes.create_string_buffer(256)
        library.MKL_Get_Version_String(version, len(version))
        addresses = {np.dtype(np.float32): ctypes.cast(library.cblas_sgemm, ctypes.c_void_p).value,
                     np.dtype(np.float64): ctypes.cast(library.cblas_dgemm, ctypes.c_void_p).value}
    except (OSError, AttributeError):
        return None
    words = version.value.decode(errors="replace").split()
    release = next((w.split("-")[0] for w in words if w[:1].isdigit()), None)  # "... Version 2026.2-Product Build"
    return Gemm(addresses, False, " ".join(filter(None, ("MKL", release, "(sequential, reproducible mode)"))))


def mkl_gemm(choice):
    """MKL as a Gemm when `choice` ('auto', 'mkl', 'openblas') allows it and it loads, else None; with 'mkl'
    a RuntimeWarning says why it is not used."""
    if choice == "openblas":
        return None
    for path in _library_paths():
        gemm = _load(path)
        if gemm is not None:
            return gemm
    if choice == "mkl":
        warnings.warn("MINIGEN_BLAS=mkl: Intel's MKL could not be loaded (`pip install mkl`, or minigen[mkl]); "
                      "the products use NumPy's OpenBLAS", RuntimeWarning, stacklevel=2)
    return None
