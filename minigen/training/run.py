"""A training run's output directory, shared by every training command.

- An --out that already holds a run is refused unless the user says what to do with it: `resume=True`
  continues it, `overwrite=True` replaces it. A replacement trains in a fresh directory beside it and
  swaps it in at its first checkpoint, so until then the old run stays whole.
- SIGINT and SIGTERM do not stop a step half-way: they are noted, the loop saves `last/` after the
  current step and raises TrainingInterrupted (the command exits 130 or 143). A second signal during
  that save is noted too, so it cannot tear the checkpoint.
- `run_record()` says what made a run (version, command line, backend, BLAS, threads, seed), for
  metrics.json and trainer_state.json; `write_metrics()` writes metrics.json atomically.
- `load_model_dir()` is how every command that reads a model finds it in a run's directory.
"""
import json
import os
import secrets
import shlex
import shutil
import signal
import sys
import threading

from ..io.checkpoint import STATE_NAME, tidy_checkpoint
from ..io.config import fsync_dir, save_json

# Names whose presence marks a directory as holding a training run.
RUN_ENTRIES = ("best", "last", "metrics.json", STATE_NAME)


def load_model_dir(path):
    """The model directory a command reads from `path`: for a training output directory its best/ (the
    lowest validation loss or best validation score), else its last/ (a run stopped before its first
    evaluation kept no best/); any other directory is taken as a model directory itself."""
    for name in ("best", "last"):
        if os.path.isfile(os.path.join(path, name, "config.json")):
            return os.path.join(path, name)
    return path


def jsonable(obj):
    """`obj` as plain JSON values: NumPy scalars become numbers, non-finite floats (an infinite best loss
    before the first evaluation) become null."""
    text = json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    return json.loads(text.replace("Infinity", "null").replace("NaN", "null"))


def write_metrics(metrics, path):
    """Write a run's metrics.json atomically: a crash leaves the old file or the new one, never half of one."""
    save_json(jsonable(metrics), path)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving `path`; `exit_code` is the shell's 128 + signal number."""

    def __init__(self, signum, step, path):
        self.signum, self.step, self.path = signum, step, path
        self.exit_code = 128 + signum
        super().__init__(f"interrupted at step {step}; saved {path}; continue with --resume")


class RunDirectory:
    """The output directory of one run. `path(name)` is where a file or checkpoint of this run goes;
    call `committed()` right after the first checkpoint is written."""

    def __init__(self, out, resume=False, overwrite=False):
        if resume and overwrite:
            raise ValueError("--resume and --overwrite contradict each other: give one of them")
        self.out = os.path.abspath(os.fspath(out))
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise ValueError(f"--out {out!r} is an existing file; expected a directory (or a new path)")
        entries = os.listdir(self.out) if os.path.isdir(self.out) else []
        holds_run = any(name in entries for name in RUN_ENTRIES)
        if entries and not holds_run:
            raise ValueError(f"--out {out!r} is a non-empty directory that holds no training run; expected a new "
                             f"or empty directory")
        self.staging = None
        if holds_run and overwrite:
            self.staging = f"{self.out}.new-{secrets.token_hex(8)}"
            os.makedirs(self.staging)
        elif holds_run and not resume:
            raise FileExistsError(f"--out {out!r} already holds a training run; continue it with --resume, or "
                                  f"replace it with --overwrite")
        elif holds_run:  # resuming: a run killed while saving may have left a half-written copy beside one
            for name in ("last", "best"):
                tidy_checkpoint(os.path.join(self.out, name))
        self.directory = self.staging or self.out

    def path(self, *names):
        return os.path.join(self.directory, *names)

    def committed(self):
        """After the new run's first checkpoint: swap it in for the run it replaces (a no-op otherwise)."""
        if self.staging is None:
            return
        old = f"{self.out}.old-{secrets.token_hex(8)}"
        os.rename(self.out, old)
        os.rename(self.staging, self.out)
        fsync_dir(os.path.dirname(self.out))
        shutil.rmtree(old, ignore_errors=True)
        self.staging, self.directory = None, self.out

    def discard(self):
        """Remove a replacement that never reached its first checkpoint; the old run is untouched."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)


def train_in_run_directory(out, resume, overwrite, train):
    """train(run, stop) with `out` as a RunDirectory and SIGINT/SIGTERM caught as StopSignals; a new run's
    directory that never got its first checkpoint is discarded, whatever happens."""
    run = RunDirectory(out, resume=resume, overwrite=overwrite)
    try:
        with StopSignals() as stop:
            return train(run, stop)
    finally:
        run.discard()


def add_run_arguments(parser):
    """--resume and --overwrite, for a command that trains into --out."""
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last/ checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in --out (the old one is kept until the new one's first checkpoint)")


class StopSignals:
    """While active (in the main thread only), SIGINT and SIGTERM set `signum` instead of stopping the
    process; the previous handlers come back on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def _note(self, signum, frame):
        self.signum = self.signum or signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def blas_name():
    """The BLAS the matrix products run on, as far as it can be told."""
    try:
        from ..kernels.numba.blas import library
        name = library()
        if name:
            return name
    except Exception:  # no Numba: NumPy's own BLAS serves the products
        pass
    try:
        import numpy
        blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception:
        return None


def thread_count():
    """The threads the kernels use: Numba's pool when that backend is loaded, else MINIGEN_NUM_THREADS or the cores."""
    if "numba" in sys.modules:
        try:
            return int(sys.modules["numba"].get_num_threads())
        except Exception:
            pass
    from ..kernels import settings
    return settings.threads() or os.cpu_count()


def run_record(seed):
    """What made a run: minigen version, the command line, backend, BLAS, threads and the seed."""
    from .. import __version__
    from ..kernels import get_backend
    return {"minigen_version": __version__, "command": shlex.join(sys.argv), "backend": get_backend(),
            "blas": blas_name(), "threads": thread_count(), "seed": seed}
