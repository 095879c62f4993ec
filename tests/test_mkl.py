"""The products' BLAS: MINIGEN_BLAS, Intel's MKL when installed (`minigen.kernels.numba.mkl`), NumPy's OpenBLAS
otherwise. The MKL runs need the optional `mkl` package and are skipped without it."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("minigen.kernels.numba_kernels")
from minigen.kernels import settings  # noqa: E402
from minigen.kernels.numba import blas, mkl  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_MKL = bool(mkl._library_paths())  # found, not loaded: loading would bind this process's later imports to it
needs_mkl = pytest.mark.skipif(not HAVE_MKL, reason="the optional mkl package is not installed")

# In a fresh interpreter: which BLAS the products call, how many pieces a large product takes, and the Linear
# kernels against the NumPy reference (computed with NumPy's own matmul), twice, to see the same bits.
PROBE = """
import json, numpy as np
from minigen import kernels
from minigen.kernels import numpy_kernels as ref
from minigen.kernels.numba import blas
rng = np.random.default_rng(0)
x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((300, 96), (130, 96), (130,)))
g = rng.standard_normal((300, 130)).astype(np.float32)
runs = [(kernels.linear_forward(x, w, b), *kernels.linear_backward(g, x, w, True)) for _ in range(2)]
expected = (ref.linear_forward(x, w, b), *ref.linear_backward(g, x, w, True))
print(json.dumps({"library": blas.library(), "pieces": blas._pieces(2 ** 20, 300),
                  "error": max(float(np.max(np.abs(a - e) / (1 + np.abs(e)))) for a, e in zip(runs[0], expected)),
                  "same_bits": all(np.array_equal(a, c) for a, c in zip(*runs))}))
"""


def probe(**env):
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ROOT, **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_minigen_blas_is_read_and_checked(monkeypatch):
    for value, choice in (("", "auto"), (" MKL ", "mkl"), ("openblas", "openblas")):
        monkeypatch.setenv("MINIGEN_BLAS", value)
        assert settings.blas() == choice
    monkeypatch.setenv("MINIGEN_BLAS", "atlas")
    with pytest.raises(ValueError, match="MINIGEN_BLAS must be 'auto', 'mkl' or 'openblas', got 'atlas'"):
        settings.blas()


def test_a_bad_minigen_blas_fails_at_import():
    done = subprocess.run([sys.executable, "-c", "import minigen"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": ROOT, "MINIGEN_BLAS": "fast"})
    assert done.returncode != 0
    assert "MINIGEN_BLAS must be 'auto', 'mkl' or 'openblas', got 'fast'" in done.stderr


def test_openblas_never_loads_mkl(monkeypatch):
    monkeypatch.setattr(mkl, "_library_paths", lambda: pytest.fail("looked for MKL"))
    assert mkl.mkl_gemm("openblas") is None


def test_mkl_missing_or_broken_falls_back(monkeypatch, tmp_path):
    """No library, or a file that is not MKL: None, silently under 'auto', with a warning under 'mkl'."""
    not_a_library = tmp_path / "libmkl_rt.so.3"
    not_a_library.write_text("not a shared library")
    for paths in ([], [str(not_a_library)]):
        monkeypatch.setattr(mkl, "_library_paths", lambda: paths)
        assert mkl.mkl_gemm("auto") is None
        with pytest.warns(RuntimeWarning, match="MINIGEN_BLAS=mkl: Intel's MKL could not be loaded"):
            assert mkl.mkl_gemm("mkl") is None


@pytest.mark.skipif(not blas.available(), reason="NumPy's BLAS is not an OpenBLAS minigen can call")
def test_openblas_products_match_the_reference():
    """MINIGEN_BLAS=openblas: NumPy's OpenBLAS; a product on one thread is left to NumPy's matmul (0 pieces)."""
    result = probe(MINIGEN_BLAS="openblas", MINIGEN_NUM_THREADS="1")
    assert result["library"].startswith("NumPy's OpenBLAS")
    assert result["pieces"] == 0
    assert result["error"] < 1e-4 and result["same_bits"]


@needs_mkl
@pytest.mark.skipif(not blas.available(), reason="NumPy's BLAS is not an OpenBLAS minigen can call")
@pytest.mark.parametrize("threads", ["1", "2"])
def test_mkl_products_match_the_reference(threads):
    """MINIGEN_BLAS=mkl: the Linear kernels call MKL (one piece per thread, one on a single thread too), agree
    with NumPy's products and give the same bits twice."""
    result = probe(MINIGEN_BLAS="mkl", MINIGEN_NUM_THREADS=threads)
    assert result["library"].startswith("MKL ") and "sequential" in result["library"]
    assert result["pieces"] == int(threads)
    assert result["error"] < 1e-4 and result["same_bits"]
