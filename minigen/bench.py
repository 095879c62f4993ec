"""`minigen bench`: run the benchmarks of a source checkout and write their markdown table.

The benchmarks live in the repository's `benchmarks/` directory beside the `minigen` package; they are
not installed with it. `minigen bench [OPTIONS]` runs `python -m benchmarks [OPTIONS]` from the checkout
that holds this package, and says so clearly when there is none (an installed copy). The options are
defined here once and shared by both commands.
"""
import argparse
import os
import subprocess
import sys

# What `--only` selects. The training cases report minigen (Numba and NumPy backends) against PyTorch;
# `kernels`, `kv-cache` and `seq2seq-decode` run benchmarks/bench_kernels.py, benchmarks/bench_generation.py and
# benchmarks/bench_seq2seq.py.
CASES = ("gpt-small", "gpt-medium", "generate", "seq2seq", "kernels", "kv-cache", "seq2seq-decode")
SIDES = ("minigen-numba", "minigen-numpy", "torch")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_arguments(parser):
    """The options of `python -m benchmarks` and `minigen bench`."""
    parser.add_argument("--quick", action="store_true",
                        help="tiny step counts: a smoke run of the whole tool (the figures mean nothing)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the report as markdown to FILE")
    parser.add_argument("--repeats", type=_positive_int, default=3,
                        help="runs per side; the sides alternate A B C A B C ... and medians are reported "
                             "(default 3)")
    parser.add_argument("--only", nargs="+", choices=CASES, metavar="CASE",
                        help=f"run only these cases, of: {', '.join(CASES)} (default: all)")
    parser.add_argument("--sides", nargs="+", choices=SIDES, metavar="SIDE",
                        help=f"measure only these sides, of: {', '.join(SIDES)} (default: all; torch only when "
                             "it is installed)")
    parser.add_argument("--text", metavar="PATH",
                        help="train the GPTs on batches of this text file, character-level (default: "
                             "../shared/data/tinyshakespeare.txt beside the repository if it exists, else "
                             "random tokens)")
    parser.add_argument("--threads", type=_positive_int, metavar="N",
                        help="threads of every library in every process (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, "
                             "MKL_NUM_THREADS, MINIGEN_NUM_THREADS); default: each library's own choice. On a "
                             "loaded machine 1 avoids the collapse of thread pools competing for the cores")


def to_argv(args):
    """The options in `args` as a `python -m benchmarks` command line; paths made absolute, since the
    benchmarks run from the checkout's directory."""
    argv = ["--repeats", str(args.repeats)]
    if args.quick:
        argv.append("--quick")
    if args.markdown:
        argv += ["--markdown", os.path.abspath(args.markdown)]
    if args.only:
        argv += ["--only", *args.only]
    if args.sides:
        argv += ["--sides", *args.sides]
    if args.text:
        argv += ["--text", os.path.abspath(args.text)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return argv


def checkout_root():
    """The directory holding both `minigen/` and `benchmarks/`; FileNotFoundError when the benchmarks are absent."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    entry = os.path.join(root, "benchmarks", "__main__.py")
    if not os.path.isfile(entry):
        raise FileNotFoundError(f"`minigen bench` needs a source checkout: the benchmarks are not installed with "
                                f"the package (this minigen is installed in {root}, with no benchmarks/ beside "
                                f"it). In a clone of the minigen repository, run `pip install -e .` and then "
                                f"`minigen bench` (or `python -m benchmarks`) there")
    return root


def run(args):
    """Run `python -m benchmarks` with the options in `args`; returns its exit status."""
    root = checkout_root()
    return subprocess.call([sys.executable, "-m", "benchmarks", *to_argv(args)], cwd=root)


def register(sub, train_sub):
    """Add `minigen bench` to the command line."""
    p = sub.add_parser("bench", help="run the benchmarks of a source checkout and write a markdown table",
                       description="GPT and Seq2Seq training throughput, greedy generation and start-up: "
                                   "minigen on its Numba and NumPy backends against PyTorch, each side in its "
                                   "own process, alternated, medians reported. Needs a source checkout.")
    add_arguments(p)
    p.set_defaults(func=run)
