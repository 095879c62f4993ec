"""What the benchmark runner shares: worker subprocesses, alternation, medians, the machine, markdown."""
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The environment of each side's worker process. A minigen side picks its kernels with MINIGEN_BACKEND.
SIDE_ENV = {"minigen-numba": {"MINIGEN_BACKEND": "numba"}, "minigen-numpy": {"MINIGEN_BACKEND": "numpy"},
            "torch": {}}


class WorkerError(RuntimeError):
    """A worker process failed; the message holds the command and the end of its stderr."""


def run_worker(module, args, env=None):
    """Run `python -m benchmarks.<module> ARGS` from the repository in a fresh interpreter and return the
    JSON object it prints on its last stdout line. Raises WorkerError when it fails."""
    command = [sys.executable, "-m", f"benchmarks.{module}", *args]
    path = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": path, **(env or {})},
                          capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise WorkerError(f"`{' '.join(command[1:])}` exited with {done.returncode}:\n{tail}")
    return json.loads(lines[-1])


def run_script(path, args, env):
    """Run a benchmark script in its own interpreter with the environment `env`; returns (exit status,
    stdout, stderr)."""
    done = subprocess.run([sys.executable, path, *args], cwd=REPO, env=env, capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr


def alternate(sides, repeats, measure, log=print):
    """Call measure(side) for the sides in turn, A B C A B C ..., `repeats` rounds, so that a change in the
    machine's load hits every side alike. Returns {side: [result, ...]}; a side whose run fails is recorded
    as {"error": message} for that run and the others go on."""
    results = {side: [] for side in sides}
    for round_ in range(repeats):
        for side in sides:
            try:
                result = measure(side)
            except WorkerError as e:
                result = {"error": str(e)}
                log(f"  {side} run {round_ + 1}/{repeats} FAILED: {str(e).splitlines()[-1]}")
            else:
                log(f"  {side} run {round_ + 1}/{repeats}: {describe(result)}")
            results[side].append(result)
    return results


def describe(result):
    """A one-line summary of a worker result, for the progress log."""
    parts = [f"{result['rate']:,.0f} {result['unit']}"] if "rate" in result else []
    if "first_step" in result:
        parts.append(f"first step {result['first_step']:.2f} s")
    return ", ".join(parts)


def median_of(results, key):
    """Median of `key` over the successful runs, or None when none succeeded."""
    values = [r[key] for r in results if key in r]
    return statistics.median(values) if values else None


def errors(results):
    """The error messages of a side's failed runs."""
    return [r["error"] for r in results if "error" in r]


# ----- the machine -------------------------------------------------------------------------------------
def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def memory_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def blas_info():
    """(name and version, threads) of NumPy's BLAS. The thread count is asked of NumPy's OpenBLAS through its
    C API (found as minigen's Numba backend finds it); None when that is not possible (another BLAS)."""
    import numpy as np
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    name = f"{blas.get('name', 'unknown BLAS')} {blas.get('version', '')}".strip()
    try:
        from minigen.kernels.numba.blas import numpy_blas
    except ImportError:  # no Numba
        return name, None
    library = numpy_blas()
    return name, (library.get_threads() if library is not None else None)


def products_library():
    """The BLAS minigen's Numba backend calls for its split matrix products (MKL when the optional mkl package is
    installed, else NumPy's OpenBLAS; see MINIGEN_BLAS), or None (no Numba, or NumPy's matmul serves them)."""
    try:
        from minigen.kernels.numba.blas import library
    except ImportError:
        return None
    return library()


def version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_lines(threads):
    """Markdown lines describing the machine and the software, for the top of the report. `threads` holds
    the pool sizes the workers reported ('blas', 'numba', 'torch'); missing ones are left out."""
    flags = cpu_flags()
    simd = next((name for name, flag in (("AVX-512", "avx512f"), ("AVX2", "avx2")) if flag in flags), None)
    memory = memory_gib()
    blas, parent_blas_threads = blas_info()

    def with_threads(text, key, default=None):
        count = threads.get(key, default)
        return text if count is None else f"{text} ({count} thread{'s' * (count != 1)})"
    cpu = f"{cpu_model()} (platform.processor(): {platform.processor() or 'n/a'})"
    details = [f"{os.cpu_count()} cores", simd, f"{memory:.1f} GiB" if memory else None]
    software = [with_threads(f"numpy {version('numpy')} with {blas}", "blas", parent_blas_threads)]
    software += [with_threads(f"{name} {version(name)}", name) for name in ("numba", "torch") if version(name)]
    products = products_library()
    if products:
        software.append(f"minigen's matrix products on {products}")
    if version("transformers"):
        software.append(f"transformers {version('transformers')}")
    return [f"- CPU: {cpu}, {', '.join(filter(None, details))}",
            f"- {platform.system()} {platform.release()}, Python {platform.python_version()}",
            f"- {', '.join(software)}"]


# ----- markdown ----------------------------------------------------------------------------------------
def table(headers, rows, align=None):
    """A markdown table; `align` is one of 'l' / 'r' per column (default: first left, the rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def number(value, digits=0):
    """A figure with thousands separators, or 'failed' for None."""
    return "failed" if value is None else f"{value:,.{digits}f}"


def ratio(value, reference):
    return "" if value is None or not reference else f"{value / reference:.2f}x"
