"""The benchmark runner (`python -m benchmarks`, `minigen bench`): a quick smoke run and its pieces."""
import argparse
import os
import subprocess
import sys

import pytest

from minigen import bench

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import common  # noqa: E402


def test_quick_run_writes_the_expected_table(tmp_path):
    report = tmp_path / "bench.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "gpt-small", "--repeats", "1",
                           "--sides", "minigen-numpy", "--markdown", str(report)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    assert text.startswith("# minigen benchmarks")
    assert "- CPU: " in text and "numpy " in text and "threads" in text
    lines = text.splitlines()
    header = lines.index("| benchmark | minigen (NumPy) |")
    assert lines[header + 1] == "|---|---:|"
    row = lines[header + 2].split(" | ")
    assert row[0] == "| GPT small training, tokens/s" and row[1].rstrip(" |").replace(",", "").isdigit()
    for name in ("import (minigen, or torch), s", "first training step, small GPT, s", "later steps, small GPT, ms"):
        assert any(line.startswith(f"| {name} | ") for line in lines), name
    assert "## Problems" not in text and "GPT medium" not in text
    assert text.strip() in done.stdout  # the report is printed as well


def test_alternate_takes_turns_and_records_failures():
    calls = []

    def measure(side):
        calls.append(side)
        if side == "b" and len(calls) == 5:
            raise common.WorkerError("worker b died\nTraceback: boom")
        return {"rate": float(len(calls)), "unit": "tokens/s"}

    results = common.alternate(["a", "b", "c"], 2, measure, log=lambda line: None)
    assert calls == ["a", "b", "c", "a", "b", "c"]
    assert [r["rate"] for r in results["a"]] == [1.0, 4.0]
    assert results["b"][1] == {"error": "worker b died\nTraceback: boom"}
    assert common.median_of(results["b"], "rate") == 2.0 and common.errors(results["b"]) == [results["b"][1]["error"]]
    assert common.median_of([{"error": "x"}], "rate") is None


def test_markdown_helpers():
    assert common.table(["what", "n"], [["x", 1]]) == ["| what | n |", "|---|---:|", "| x | 1 |"]
    assert common.number(12345.6) == "12,346" and common.number(None) == "failed"
    assert common.ratio(3.0, 2.0) == "1.50x" and common.ratio(None, 2.0) == "" and common.ratio(1.0, None) == ""


def test_worker_rejects_bad_step_counts():
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_training", "--case", "gpt-small", "--side",
                           "minigen-numpy", "--steps", "0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--steps must be >= 1" in done.stderr


def bench_parser():
    parser = argparse.ArgumentParser(prog="minigen")
    sub = parser.add_subparsers(dest="command")
    bench.register(sub, None)
    return parser


def test_minigen_bench_options_become_a_benchmarks_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = bench_parser().parse_args(["bench", "--quick", "--markdown", "out.md", "--only", "gpt-small", "seq2seq",
                                      "--sides", "torch", "--threads", "1", "--text", "t.txt"])
    assert args.func is bench.run
    assert bench.to_argv(args) == ["--repeats", "3", "--quick", "--markdown", str(tmp_path / "out.md"), "--only",
                                   "gpt-small", "seq2seq", "--sides", "torch", "--text", str(tmp_path / "t.txt"),
                                   "--threads", "1"]
    assert bench.checkout_root() == REPO


@pytest.mark.parametrize("argv", [["bench", "--repeats", "0"], ["bench", "--only", "gpt-huge"],
                                  ["bench", "--sides", "jax"]])
def test_minigen_bench_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert argv[-1] in capsys.readouterr().err


def test_minigen_bench_runs_the_benchmarks_of_the_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --markdown path is the caller's, not the checkout's
    args = bench_parser().parse_args(["bench", "--quick", "--only", "gpt-small", "--repeats", "1", "--sides",
                                      "minigen-numpy", "--markdown", "report.md"])
    assert bench.run(args) == 0
    assert "| GPT small training, tokens/s | " in (tmp_path / "report.md").read_text()


def test_minigen_bench_without_a_checkout_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "__file__", str(tmp_path / "site-packages" / "minigen" / "bench.py"))
    args = bench_parser().parse_args(["bench", "--quick"])
    with pytest.raises(FileNotFoundError, match="source checkout"):
        bench.run(args)
