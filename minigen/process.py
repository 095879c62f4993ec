"""Process-wide tuning for a process that does little else than run minigen: `tune_process()`, an explicit
opt-in. The `minigen` command calls it; `import minigen` does not, because a library shares its process: the
allocator and BLAS's threads belong to the application that imports it (PyTorch, likewise, leaves malloc alone
and changes threads only on `torch.set_num_threads`).

The allocator: every op returns new arrays, and a training step frees and allocates the same few dozen
megabytes over and over. glibc's malloc serves large blocks with fresh mmap()s (and hands memory at the top of
its heap back to the kernel) by default, so each step touches new pages: about 12,000 page faults a step for
the medium GPT, where PyTorch took 3,800. With blocks up to 32 MB served from the heap, and up to 256 MB of
freed heap kept, the pages are reused (about 300 faults a step). Either setting alone did not help (the heap
trimming alone made the medium GPT 20% slower). Measured gain: see `tune_process`.

Not here: holding BLAS at one thread for the whole process. minigen holds it only during each product it splits
across its own threads, which costs a few microseconds a product (see `kernels/numba/blas.py`).
"""
import ctypes
import os
import sys

MMAP_THRESHOLD = 32 << 20  # the largest value glibc accepts
TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


def keep_freed_memory():
    """Set glibc's mmap and trim thresholds as above; returns whether they were set. A user who set
    MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ (glibc's own variables) keeps their choice; other C
    libraries (musl, macOS, Windows) are left alone."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ \
            or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1


def tune_process():
    """Tune this whole process for minigen, for good; returns what was set, as a dict.

    - glibc's allocator keeps the memory minigen frees (`keep_freed_memory`, up to 256 MB kept in the process):
      a medium-GPT training step (6 layers, width 384, block 256, batch 8) took 240-270 page faults instead of
      8,900-9,200 (two runs each), and trained 4% faster on a quiet machine (the small GPT within noise);
    - with MINIGEN_NUM_THREADS=N, NumPy's own BLAS (OpenBLAS) runs on N threads too, so that the products minigen
      leaves to NumPy (the NumPy backend, a product too small to split) stay within the cap.

    Call it at the start of a program that trains or serves with minigen and nothing else; a library or an
    application with its own use of NumPy should not."""
    from .kernels import settings
    done = {"allocator": keep_freed_memory()}
    threads = settings.threads()
    if threads is not None:
        try:
            from .kernels.numba.blas import numpy_blas  # found in the process with ctypes; the module needs Numba
        except ImportError:
            return done
        blas = numpy_blas()
        if blas is not None:
            blas.set_threads(threads)
            done["blas_threads"] = threads
    return done
