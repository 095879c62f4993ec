"""The `minigen` command. Each command lives in the module that implements it and registers its own options:

    minigen demo                 compare Seq2Seq and GPT on the dates task      (minigen.demo)
    minigen train seq2seq ...    train a Seq2Seq model on a built-in task       (minigen.training.seq2seq)
    minigen train gpt ...        train or fine-tune a GPT on a text file        (minigen.training.gpt)
    minigen translate ...        decode with a Seq2Seq checkpoint                (minigen.training.seq2seq)
    minigen generate ...         generate with a GPT checkpoint                  (minigen.training.gpt)
    minigen chat ...             multi-turn chat with a GPT checkpoint           (minigen.chat)
    minigen bench                run the benchmarks                              (benchmarks/)

Every option's help shows its default, and required options say so.
"""
import argparse
import importlib
import sys

from .training.run import TrainingInterrupted
from .process import tune_process

# (command, module) pairs; each module has `register(subparsers)` which adds parsers whose
# `func` default runs the command and returns an exit code.
COMMAND_MODULES = ["minigen.demo", "minigen.training.seq2seq", "minigen.training.gpt", "minigen.chat", "minigen.bench"]


def build_parser():
    parser = argparse.ArgumentParser(prog="minigen", description="Seq2Seq and GPT text generation on NumPy and Numba.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    train_parser = sub.add_parser("train", help="train a model")
    train = train_parser.add_subparsers(dest="family", metavar="FAMILY")

    def missing_family(args):
        train_parser.print_help(sys.stderr)
        raise SystemExit(2)  # argparse's status for a usage error

    train_parser.set_defaults(func=missing_family)  # a family's own func replaces it
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(sub, train)
    for command in [*sub.choices.values(), *train.choices.values()]:
        _show_defaults(command)
    return parser


def _show_defaults(parser):
    """Help texts that show each option's default and mark required options (argparse's
    ArgumentDefaultsHelpFormatter skips options without a help text)."""
    for action in parser._actions:
        flag_off = action.nargs == 0 and action.default is False  # --do-sample and the like: off unless given
        if argparse.SUPPRESS in (action.help, action.default) or not action.option_strings or flag_off:
            continue
        if action.required:
            action.help = f"(required) {action.help or ''}".strip()
        elif action.default not in (None, [], "") and "%(default)" not in (action.help or ""):
            action.help = f"{action.help} (default: %(default)s)" if action.help else "default: %(default)s"


def main(argv=None):
    """Run the command in `argv` (default sys.argv[1:]); returns the exit status.

    Bad input (the ValueError minigen raises after checking a value) and file problems (OSError: missing,
    existing, unreadable, disk full) print "minigen COMMAND: error: ..." and return 2; a training run whose
    loss stops being finite (FloatingPointError) prints the same way and returns 1. Argument errors exit 2
    through argparse. Training stopped by SIGINT or SIGTERM saves its last checkpoint, says where and
    returns 130 or 143, as a shell reports those signals. Anything else is a bug and keeps its traceback."""
    tune_process()  # a process of its own: see minigen/process.py
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    command = " ".join(filter(None, [args.command, getattr(args, "family", None)]))
    try:
        return args.func(args) or 0
    except (ValueError, OSError) as e:
        print(f"minigen {command}: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"minigen {command}: error: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(e, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
