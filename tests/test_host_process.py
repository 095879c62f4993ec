"""A library shares its process: importing and using minigen leaves the environment, NumPy's BLAS threads and
the allocator as they were; `minigen.tune_process()` is the one explicit, process-wide opt-in."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, **env):
    """Run `code` in a fresh interpreter (minigen's variables unset unless given); return its last line as JSON."""
    full_env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **env}
    for name in ("MINIGEN_BACKEND", "MINIGEN_NUM_THREADS", "MINIGEN_BLAS"):
        if name not in env:
            full_env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# Records every look-up of glibc's mallopt through ctypes, the only way minigen reaches it; then imports minigen,
# trains a small GPT for a step (products large enough to be split across Numba's threads) and generates.
USE_MINIGEN = """
import ctypes, json, os
mallopt_calls = []
class RecordingCDLL(ctypes.CDLL):
    def __getattr__(self, name):
        if name == "mallopt":
            mallopt_calls.append(name)
        return super().__getattr__(name)
ctypes.CDLL = RecordingCDLL
import numpy as np
environ = dict(os.environ)
try:
    from minigen.kernels.numba.blas import numpy_blas  # imports Numba, before the host sets its threads
    blas = numpy_blas()
except ImportError:
    blas = None
if blas is not None:
    blas.set_threads(2)  # the host's own choice, which minigen must give back
import minigen
from minigen.models.gpt import GPT, GPTConfig
from minigen.optim import AdamW
minigen.manual_seed(0)
gpt = GPT(GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=64))
optimizer = AdamW(gpt.parameters(), lr=1e-3)
ids = np.random.default_rng(0).integers(0, 65, (8, 33))
_, loss = gpt(ids[:, :-1], ids[:, 1:])
optimizer.zero_grad()
loss.backward()
optimizer.step()
gpt.generate(ids[:1, :4], max_new_tokens=4)
changed = sorted(k for k in set(environ) | set(os.environ) if environ.get(k) != os.environ.get(k))
result = {"backend": minigen.get_backend(), "changed": changed, "mallopt": len(mallopt_calls),
          "blas_threads": blas.get_threads() if blas is not None else None}
minigen.tune_process()
result["mallopt_after_tune_process"] = len(mallopt_calls)
print(json.dumps(result))
"""


def test_minigen_leaves_the_environment_blas_threads_and_allocator_as_they_were():
    result = run_python(USE_MINIGEN)
    assert result["changed"] == []
    assert result["mallopt"] == 0
    if result["blas_threads"] is not None:
        assert result["blas_threads"] == 2
    if sys.platform.startswith("linux"):  # the recorder sees mallopt when it is called
        assert result["mallopt_after_tune_process"] > 0


def test_the_numpy_backend_leaves_them_too():
    result = run_python(USE_MINIGEN, MINIGEN_BACKEND="numpy")
    assert result["backend"] == "numpy"
    assert result["changed"] == [] and result["mallopt"] == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the allocator settings are glibc's")
def test_tune_process_keeps_freed_memory_unless_the_user_chose():
    code = "import json, minigen; print(json.dumps(minigen.tune_process()))"
    assert run_python(code)["allocator"] is True
    assert run_python(code, MALLOC_TRIM_THRESHOLD_="131072")["allocator"] is False


def test_tune_process_gives_blas_the_minigen_thread_count():
    code = ("import json, minigen; from minigen.kernels.numba.blas import numpy_blas; done = minigen.tune_process(); "
            "blas = numpy_blas(); print(json.dumps([done.get('blas_threads'), blas and blas.get_threads()]))")
    pytest.importorskip("numba")
    tuned, now = run_python(code, MINIGEN_NUM_THREADS="1")
    if now is not None:
        assert tuned == now == 1


def test_the_cli_tunes_its_process(monkeypatch):
    from minigen import cli
    calls = []
    monkeypatch.setattr(cli, "tune_process", lambda: calls.append(True))
    assert cli.main([]) == 0
    assert calls == [True]


# ----- BLAS held at one thread during a split product only -------------------------------------------
def test_blas_runs_on_one_thread_during_a_split_product_and_gets_its_count_back(monkeypatch):
    pytest.importorskip("numba")
    from minigen.kernels.numba import blas
    import minigen.kernels.numba as nb_package
    if not blas.available() or blas._gemm is not blas._blas.gemm:
        pytest.skip("the products are not split on NumPy's OpenBLAS")
    monkeypatch.setattr(nb_package, "threads", 2)
    seen = []
    split_gemm = blas._split_gemm

    def recording(*args):
        seen.append(blas._blas.get_threads())
        return split_gemm(*args)
    monkeypatch.setattr(blas, "_split_gemm", recording)
    own = blas._blas.get_threads()
    a = np.random.default_rng(0).standard_normal((256, 128)).astype(np.float32)
    try:
        for host_threads in (2, 1):
            blas._blas.set_threads(host_threads)
            np.testing.assert_allclose(blas.gemm(a, a, False, True), a @ a.T, rtol=1e-4, atol=1e-3)
            assert blas._blas.get_threads() == host_threads
    finally:
        blas._blas.set_threads(own)
    assert seen == [1, 1]
