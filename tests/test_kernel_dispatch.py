"""How `minigen.kernels` dispatches: plain names, each with a NumPy reference that a reader finds, and a compiled
cache that follows edits to every file a kernel is compiled from."""
import ast
import json
import os
import subprocess
import sys
import textwrap

import pytest

from minigen import kernels
from minigen.kernels import numpy_kernels as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_kernels_are_plain_attributes():
    assert "__getattr__" not in vars(kernels)
    kernels.get_backend()
    for name in kernels.KERNELS:
        assert callable(vars(kernels)[name]), name


def test_every_kernel_is_imported_by_name_from_its_reference():
    """The explicit import list in minigen/kernels/__init__.py is what takes a reader (and go-to-definition)
    from `kernels.<name>` to the reference; a kernel appended to numpy_kernels.py belongs in it."""
    path = os.path.join(os.path.dirname(kernels.__file__), "__init__.py")
    with open(path, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    listed = {alias.name for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "numpy_kernels"
              for alias in node.names}
    missing = sorted(set(kernels.KERNELS) - listed)
    assert not missing, f"add {missing} to the `from .numpy_kernels import (...)` list in {path}"


def test_every_numba_kernel_has_a_reference():
    """A twin's agreement with its reference is tested kernel by kernel in test_kernels.py."""
    nb = pytest.importorskip("minigen.kernels.numba_kernels")
    twins = [name for name in nb.__all__ if name not in ("MASKED_SCORE", "set_num_threads")]
    assert sorted(set(twins) - set(kernels.KERNELS)) == []


def test_the_numba_backend_serves_its_twins_and_the_reference_the_rest():
    nb = pytest.importorskip("minigen.kernels.numba_kernels")
    previous = kernels.get_backend()
    try:
        kernels.set_backend("numba")
        for name in kernels.KERNELS:
            assert getattr(kernels, name) is getattr(nb, name, getattr(ref, name)), name
        kernels.set_backend("numpy")
        for name in kernels.KERNELS:
            assert getattr(kernels, name) is getattr(ref, name), name
    finally:
        kernels.set_backend(previous)


# ----- the compiled cache follows edits -----------------------------------------------------------
def test_every_cached_kernel_is_keyed_on_its_sources():
    pytest.importorskip("minigen.kernels.numba_kernels")
    from minigen.kernels import numba as nb_package
    kernels.get_backend()
    stamps = {}
    for name, module in sys.modules.items():
        if name.startswith("minigen.kernels.numba.") and module is not None:
            for value in vars(module).values():
                index = getattr(getattr(value, "_cache", None), "_cache_file", None)
                if index is not None and value.py_func.__module__ == name:
                    stamps[value.py_func.__qualname__] = (index._source_stamp, nb_package.source_digest(module.__file__))
    assert stamps and all(stamp == digest for stamp, digest in stamps.values())


def test_the_digest_covers_the_files_a_module_imports_from(tmp_path):
    pytest.importorskip("numba")
    from minigen.kernels.numba import source_digest
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("SCALE = 1\n")
    (package / "helper.py").write_text("from . import SCALE\n")
    (package / "kernel.py").write_text("from .helper import SCALE\n")
    (package / "other.py").write_text("")
    before = source_digest(package / "kernel.py")
    (package / "other.py").write_text("UNRELATED = 1\n")
    assert source_digest(package / "kernel.py") == before
    (package / "__init__.py").write_text("SCALE = 2\n")  # reached through helper.py
    assert source_digest(package / "kernel.py") != before


RUN_KERNEL = """
import json, sys
sys.path.insert(0, sys.argv[1])
import pkg.kernel
from minigen.kernels.numba import key_caches_on_sources
key_caches_on_sources("pkg")
value = pkg.kernel.apply(1)
print(json.dumps([value, pkg.kernel.apply.stats.cache_hits[pkg.kernel.apply.signatures[0]]]))
"""


def test_editing_a_helper_in_another_file_recompiles_the_cached_kernel(tmp_path):
    """Numba alone keys a cached kernel on its own file: the helper's old code kept running."""
    pytest.importorskip("numba")
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    helper = package / "helper.py"
    helper.write_text("from numba import njit\n\n@njit\ndef offset(x):\n    return x + 1\n")
    (package / "kernel.py").write_text(textwrap.dedent("""
        from numba import njit
        from .helper import offset

        @njit(cache=True)
        def apply(x):
            return offset(x)
        """))

    def run():
        done = subprocess.run([sys.executable, "-c", RUN_KERNEL, str(tmp_path)], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
        assert done.returncode == 0, done.stderr
        return tuple(json.loads(done.stdout.strip().splitlines()[-1]))

    assert run() == (2, 0)  # compiled
    assert run() == (2, 1)  # loaded from the cache
    helper.write_text("from numba import njit\n\n@njit\ndef offset(x):\n    return x + 2\n")
    assert run() == (3, 0)  # recompiled, not the stale cached code
