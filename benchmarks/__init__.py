"""minigen's benchmarks: `python -m benchmarks` runs them and writes one markdown report (see __main__.py).

Nothing is imported here, so that a worker (`python -m benchmarks.bench_training`) times its own imports.
"""
