"""The `minigen` command. Each command lives in the module that implements it and registers its own options:

    minigen demo                 compare Seq2Seq and GPT on the dates task      (minigen.demo)
    minigen train seq2seq ...    train a Seq2Seq model on a built-in task       (minigen.training.seq2seq)
    minigen train gpt ...        train or fine-tune a GPT on a text file        (minigen.training.gpt)
    minigen translate ...        decode with a Seq2Seq checkpoint                (minigen.training.seq2seq)
    minigen generate ...         generate with a GPT checkpoint                  (minigen.training.gpt)
    minigen chat ...             multi-turn chat with a GPT checkpoint           (minigen.chat)
    minigen bench                run the benchmarks                              (benchmarks/)
"""
import argparse
import importlib
import sys

# (command, module) pairs; each module has `register(subparsers)` which adds parsers whose
# `func` default runs the command and returns an exit code.
COMMAND_MODULES = ["minigen.demo", "minigen.training.seq2seq", "minigen.training.gpt", "minigen.chat"]


def build_parser():
    parser = argparse.ArgumentParser(prog="minigen", description="Seq2Seq and GPT text generation on NumPy and Numba.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = sub.add_parser("train", help="train a model").add_subparsers(dest="family", metavar="FAMILY")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(sub, train)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        if args.command == "train":
            parser.parse_args(["train", "--help"])
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"minigen {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
