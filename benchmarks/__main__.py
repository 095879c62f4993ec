"""Run minigen's benchmarks and write one markdown report: `python -m benchmarks` (or `minigen bench`).

    python -m benchmarks [--quick] [--markdown FILE] [--repeats N] [--only CASE ...] [--sides SIDE ...]
                         [--text PATH] [--threads N]

Each measurement runs in its own process (benchmarks/bench_training.py as a worker); the sides
(minigen on Numba, minigen on NumPy, PyTorch) take turns A B C A B C ... for `--repeats` rounds and the
medians are reported with their ratios to PyTorch. benchmarks/bench_kernels.py and
benchmarks/bench_generation.py and benchmarks/bench_seq2seq.py (Seq2Seq decoding against PyTorch), when present,
are run too and their output is included.
"""
import argparse
import importlib.util
import os
import sys
import tempfile
import time

from minigen.bench import CASES, SIDES, add_arguments

from . import common
from .bench_training import GENERATE, GPT_SHAPES, STEPS, WINDOWS

DEFAULT_TEXT = os.path.join(os.path.dirname(common.REPO), "shared", "data", "tinyshakespeare.txt")
KERNELS_SCRIPT = os.path.join(common.REPO, "benchmarks", "bench_kernels.py")
KV_CACHE_SCRIPT = os.path.join(common.REPO, "benchmarks", "bench_generation.py")
SEQ2SEQ_DECODE_SCRIPT = os.path.join(common.REPO, "benchmarks", "bench_seq2seq.py")
MODEL_CASES = tuple(STEPS)
COLUMNS = {"minigen-numba": "minigen (Numba)", "minigen-numpy": "minigen (NumPy)", "torch": "PyTorch"}
BUSY_LOAD = 0.5  # load average per core above which the report warns that the figures are unreliable
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "MINIGEN_NUM_THREADS")


def gpt_label(case):
    s = GPT_SHAPES[case]
    return (f"{s['n_layer']} layers, {s['n_head']} heads, width {s['n_embd']}, block {s['block_size']}, "
            f"batch {s['batch_size']}")


TITLES = {"gpt-small": "GPT small training, tokens/s", "gpt-medium": "GPT medium training, tokens/s",
          "generate": "Greedy generation with KV cache, tokens/s (PyTorch: transformers)",
          "seq2seq": "Seq2Seq training, target tokens/s"}


def steps(case, quick, unit="step"):
    warmup, timed = STEPS[case]["quick" if quick else "full"]
    return f"{timed} timed {unit}{'s' * (timed > 1)} after {warmup} warm-up {unit}{'s' * (warmup > 1)}"


def definitions(cases, text, quick):
    """What each row of the throughput table measures, for the cases that ran."""
    data = f"character batches of {os.path.basename(text)}" if text else "random token batches, vocabulary 65"
    g = GENERATE
    rows = {"gpt-small": f"- **GPT small**: {gpt_label('gpt-small')}, no bias, no dropout, {data}; forward + backward "
                         f"+ gradient clipping (1.0) + AdamW (weight decay 0.1 on 2-D weights); "
                         f"{steps('gpt-small', quick)}. PyTorch: nanoGPT's model (benchmarks/torch_reference.py), "
                         "torch.optim.AdamW, torch.nn.utils.clip_grad_norm_.",
            "gpt-medium": f"- **GPT medium**: {gpt_label('gpt-medium')}, otherwise as GPT small; "
                          f"{steps('gpt-medium', quick)}.",
            "generate": f"- **Generation**: greedy, KV cache, batch 1, prompt {g['prompt']}; "
                        f"{steps('generate', quick, 'token')}; {g['n_layer']} layers, {g['n_head']} heads, width "
                        f"{g['n_embd']}, block {g['block_size']}, vocabulary {g['vocab_size']}, with biases "
                        "(as GPT-2). "
                        "minigen `GPT.generate` against transformers' `GPT2LMHeadModel.generate(do_sample=False, "
                        "use_cache=True)` of the same configuration (PyTorch column).",
            "seq2seq": "- **Seq2Seq**: `minigen train seq2seq` defaults on the dates task: bidirectional GRU encoder "
                       "(hidden 256), Bahdanau attention, GRUCell decoder with input feeding, embeddings 64, batch 64 "
                       "(length-bucketed), teacher forcing, clipping 1.0, AdamW; target tokens (eos included) per "
                       f"second, {steps('seq2seq', quick)}, timed in {WINDOWS['seq2seq']} windows of equal steps "
                       "whose median is the run's figure. PyTorch: the same model with nn.GRU over packed "
                       "sequences and nn.GRUCell (benchmarks/torch_reference.py)."}
    return [rows[case] for case in MODEL_CASES if case in cases]


# ----- running ----------------------------------------------------------------------------------------
def worker_env(side, threads):
    env = dict(common.SIDE_ENV[side])
    if threads:
        env.update({name: str(threads) for name in THREAD_VARIABLES})
    return env


def worker_args(case, args, text):
    argv = ["--case", case]
    if args.quick:
        argv.append("--quick")
    if text and case.startswith("gpt"):
        argv += ["--text", text]
    return argv


def run_case(case, sides, args, text):
    """{side: [result per round]} of one case."""
    base = worker_args(case, args, text)
    if case == "generate" and "torch" in sides and not installed("transformers"):
        sides = [s for s in sides if s != "torch"]
        print("  (transformers is not installed: no PyTorch side for generation)", flush=True)
    return common.alternate(sides, args.repeats,
                            lambda side: common.run_worker("bench_training", [*base, "--side", side],
                                                           worker_env(side, args.threads)),
                            log=lambda line: print(line, flush=True))


def prime_numba_cache(args):
    """One untimed small-GPT run on the Numba backend, so that the first-step figures load compiled kernels
    from Numba's cache rather than compile them."""
    try:
        common.run_worker("bench_training", ["--case", "gpt-small", "--side", "minigen-numba", "--quick"],
                          worker_env("minigen-numba", args.threads))
    except common.WorkerError as e:
        print(f"  priming the Numba cache failed: {str(e).splitlines()[-1]}", flush=True)


def run_script(path, argv, args, tidy):
    """Run another benchmark script; returns (markdown lines, problem or None)."""
    name = os.path.relpath(path, common.REPO)
    if not os.path.isfile(path):
        return [f"{name} is not in this checkout."], None
    print(f"{name} {' '.join(argv)}", flush=True)
    env = {**os.environ, **worker_env("minigen-numba", args.threads)}
    env.pop("MINIGEN_BACKEND")  # the script chooses its backends itself
    status, out, err = common.run_script(path, argv, env)
    if status:
        tail = "\n".join(err.strip().splitlines()[-5:])
        return [f"{name} failed (exit {status}); see the problems below."], f"{name} exited with {status}:\n{tail}"
    return tidy(out), None


def kernel_section(args):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "kernels.md")
        quick = ["--repeat", "1", "--skip-large-attention", "--skip-startup"] if args.quick else []
        argv = ["--markdown", path, *quick]

        def tidy(stdout):
            with open(path) as f:  # its own report under this section's title: sub-headings one level down
                lines = f.read().strip().splitlines()
            return [f"#{line}" if line.startswith("#") else line for line in lines if not line.startswith("# ")]
        return run_script(KERNELS_SCRIPT, argv, args, tidy)


def kv_cache_section(args):
    argv = ["--rounds", str(args.repeats)] + (["--new-tokens", "16"] if args.quick else [])
    return run_script(KV_CACHE_SCRIPT, argv, args, lambda out: ["```text", *out.strip().splitlines(), "```"])


def seq2seq_decode_section(args):
    argv = ["--rounds", str(args.repeats)] + (["--quick"] if args.quick else [])
    return run_script(SEQ2SEQ_DECODE_SCRIPT, argv, args, lambda out: ["```text", *out.strip().splitlines(), "```"])


def installed(name):
    return importlib.util.find_spec(name) is not None


# ----- the report -------------------------------------------------------------------------------------
def throughput_table(results, sides):
    headers = ["benchmark", *(COLUMNS[s] for s in sides)]
    minigen = [s for s in sides if s != "torch"]
    if "torch" in sides:
        headers += [f"{COLUMNS[s].split('(')[1][:-1]} / PyTorch" for s in minigen]
    rows = []
    for case in MODEL_CASES:
        if case not in results:
            continue
        medians = {s: common.median_of(results[case].get(s, []), "rate") for s in sides}
        row = [TITLES[case]] + [with_spread(medians[s], results[case][s]) if s in results[case] else "n/a"
                                for s in sides]
        if "torch" in sides:
            row += [common.ratio(medians[s], medians["torch"]) for s in minigen]
        rows.append(row)
    return common.table(headers, rows)


def with_spread(median, runs):
    """The median and, over several runs, the slowest and fastest run: `12,345 (11,900-12,600)`."""
    rates = [r["rate"] for r in runs if "rate" in r]
    if len(rates) < 2:
        return common.number(median)
    return f"{common.number(median)} ({common.number(min(rates))}-{common.number(max(rates))})"


def startup_table(results, sides):
    runs = results["gpt-small"]
    rows = [["import (minigen, or torch), s"] + [seconds(runs[s], "import", 3) for s in sides],
            ["first training step, small GPT, s"] + [seconds(runs[s], "first_step", 3) for s in sides],
            ["later steps, small GPT, ms"] + [seconds(runs[s], "step_ms", 1) for s in sides]]
    return common.table(["", *(COLUMNS[s] for s in sides)], rows)


def seconds(runs, key, digits):
    value = common.median_of(runs, key)
    return "failed" if value is None else f"{value:.{digits}f}"


def runs_table(results, sides):
    rows = []
    for case, by_side in results.items():
        for side in sides:
            if side in by_side:
                figures = [common.number(r["rate"]) if "rate" in r else "failed" for r in by_side[side]]
                rows.append([TITLES[case].split(",")[0], COLUMNS[side], " · ".join(figures)])
    return common.table(["benchmark", "side", "tokens/s of each run, in order"], rows, "lll")


def reported_threads(results):
    """The thread pool sizes the workers reported: {'blas': n, 'numba': n, 'torch': n}, first seen."""
    found = {}
    for by_side in results.values():
        for runs in by_side.values():
            for run in runs:
                for key, value in run.get("threads", {}).items():
                    found.setdefault(key, value)
    return found


def report(args, sides, text, results, sections, problems, run):
    """The markdown report; `run` holds the command line, the start time and the load averages."""
    loads = run["loads"]
    lines = ["# minigen benchmarks", ""]
    if args.quick:
        lines += ["**Quick run: tiny step counts, a smoke test of the tool; the figures mean nothing.**", ""]
    cores = os.cpu_count() or 1
    if loads[0] >= BUSY_LOAD * cores:  # the start only: by the end the benchmark's own processes count too
        lines += [f"**The machine was busy (load average {loads[0]:.1f} on {cores} cores at the start): thread pools "
                  "compete with other processes, which can slow any side down many times. These figures are not "
                  "representative; re-run on a quiet machine (or compare with --threads 1).**", ""]
    lines += common.machine_lines(reported_threads(results))
    threads = f"{args.threads} per library (--threads)" if args.threads else "each library's default"
    lines += [f"- Load average (1 min): {loads[0]:.1f} at the start, {loads[1]:.1f} at the end (the benchmark's own "
              f"processes included); threads: {threads}",
              f"- Medians of {args.repeats} run(s) per side (the slowest and fastest run in brackets); every run is a "
              f"fresh process and the sides take turns "
              f"({', '.join(sides)}, ...). Ratios are minigen / PyTorch throughput: above 1.00x minigen is faster.",
              f"- Started {run['started']}: `python -m benchmarks {' '.join(run['argv'])}`", ""]
    if results:
        lines += ["## Throughput", "", *throughput_table(results, sides), "",
                  *definitions(results, text, args.quick), ""]
    if "gpt-small" in results:
        lines += ["## Start-up", "", *startup_table(results, sides), "",
                  "Import in a fresh interpreter (minigen's includes NumPy; Numba loads on the first kernel call). The "
                  "first step follows model construction and includes, on the Numba backend, importing Numba and "
                  "loading the kernels from its cache (warmed by an untimed run first).", ""]
    if results:
        lines += ["## Every run", "", *runs_table(results, sides), ""]
    for title, body in sections:
        lines += [f"## {title}", "", *body, ""]
    if problems:
        lines += ["## Problems", ""] + [f"- {p.splitlines()[0]}\n\n  ```text\n" + "\n".join(
            f"  {line}" for line in p.splitlines()[1:]) + "\n  ```" for p in problems] + [""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    add_arguments(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    cases = args.only or CASES
    sides = list(args.sides or SIDES)
    if "torch" in sides and not installed("torch"):
        sides.remove("torch")
        print("torch is not installed: measuring minigen only", flush=True)
    if args.text and not os.path.isfile(args.text):
        parser.error(f"--text: no file at {args.text!r}")
    text = args.text or (DEFAULT_TEXT if os.path.isfile(DEFAULT_TEXT) else None)
    run = {"argv": argv, "started": time.strftime("%Y-%m-%d %H:%M"), "loads": [os.getloadavg()[0]]}
    results, sections, problems = {}, [], []
    if "minigen-numba" in sides and "gpt-small" in cases:
        prime_numba_cache(args)
    for case in (c for c in MODEL_CASES if c in cases):
        print(f"{case}:", flush=True)
        results[case] = run_case(case, sides, args, text)
        problems += [e for by_side in results[case].values() for e in common.errors(by_side)]
    for case, title, section in (("kernels", "Kernels (benchmarks/bench_kernels.py)", kernel_section),
                                 ("kv-cache", "KV cache (benchmarks/bench_generation.py)", kv_cache_section),
                                 ("seq2seq-decode", "Seq2Seq decoding (benchmarks/bench_seq2seq.py)",
                                  seq2seq_decode_section)):
        if case in cases:
            body, problem = section(args)
            sections.append((title, body))
            problems += [problem] if problem else []
    run["loads"].append(os.getloadavg()[0])
    markdown = report(args, sides, text, results, sections, problems, run)
    print()
    print(markdown)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
