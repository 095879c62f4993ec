"""The built-in sequence-to-sequence tasks, generated from a seed, with a character vocabulary per side.

Example::

    data = load_task("dates", seed=0)
    source, target = data.train[0]          # e.g. ('Mar 14 1987', '1987-03-14')
    ids = data.src_vocab.encode(source)     # a CharTokenizer.from_chars: <pad> <bos> <eos> <unk>, then characters
"""
import inspect
import string
from dataclasses import dataclass

import numpy as np

from ..tokenizers.char import CharTokenizer
from . import dates


@dataclass
class TaskData:
    """A generated task: (source, target) string pairs per split and the vocabularies of each side."""

    name: str
    train: list
    valid: list
    test: list
    src_vocab: CharTokenizer
    tgt_vocab: CharTokenizer


def _check_lengths(min_len, max_len):
    for name, value in (("min_len", min_len), ("max_len", max_len)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if min_len > max_len:
        raise ValueError(f"min_len must be <= max_len, got min_len={min_len}, max_len={max_len}")


def _check_alphabet(alphabet):
    if not isinstance(alphabet, str) or not alphabet or len(set(alphabet)) != len(alphabet):
        raise ValueError(f"alphabet must be a non-empty str of distinct characters, got {alphabet!r}")


def _random_string(rng, alphabet, min_len, max_len):
    length = int(rng.integers(min_len, max_len + 1))
    return "".join(alphabet[i] for i in rng.integers(len(alphabet), size=length))


def _dates(formats=dates.DATE_FORMATS, mixed_case=True):
    """Dates in human formats -> ``yyyy-mm-dd`` (conventions in ``minigen.data.dates``)."""
    if isinstance(formats, str):
        raise TypeError(f"formats must be a list of date formats, got the single str {formats!r}")
    formats = tuple(formats)
    if not formats:
        raise ValueError("formats must hold at least one date format, got none")
    for template in formats:
        dates.check_format(template)
    return (lambda rng: dates.draw_date_pair(rng, formats, mixed_case),
            dates.source_chars(formats, mixed_case), string.digits + "-")


def _reverse(min_len=1, max_len=12, alphabet=string.ascii_lowercase):
    """Random letter strings -> the same string reversed."""
    _check_lengths(min_len, max_len)
    _check_alphabet(alphabet)

    def draw(rng):
        s = _random_string(rng, alphabet, min_len, max_len)
        return s, s[::-1]
    return draw, alphabet, alphabet


def _sort(min_len=1, max_len=12, alphabet=string.ascii_lowercase):
    """Random letter strings -> their characters in alphabet order."""
    _check_lengths(min_len, max_len)
    _check_alphabet(alphabet)
    rank = {c: i for i, c in enumerate(alphabet)}

    def draw(rng):
        s = _random_string(rng, alphabet, min_len, max_len)
        return s, "".join(sorted(s, key=rank.__getitem__))
    return draw, alphabet, alphabet


def _addition(min_len=1, max_len=4):
    """Sums written "a+b" -> the decimal result; each operand has between min_len and max_len digits."""
    _check_lengths(min_len, max_len)

    def number(rng):
        # Digit by digit, so operands may be longer than an int64 holds; no leading zeros.
        length = int(rng.integers(min_len, max_len + 1))
        first = str(int(rng.integers(0 if length == 1 else 1, 10)))
        return first + "".join(str(d) for d in rng.integers(10, size=length - 1))

    def draw(rng):
        a, b = number(rng), number(rng)
        return f"{a}+{b}", str(int(a) + int(b))
    return draw, string.digits + "+", string.digits


_TASK_BUILDERS = {"dates": _dates, "reverse": _reverse, "sort": _sort, "addition": _addition}
TASKS = tuple(_TASK_BUILDERS)


def load_task(name, n_train=20000, n_valid=1000, n_test=1000, seed=0, **task_options):
    """Generate a built-in task: ``dates``, ``reverse``, ``sort`` or ``addition``.

    The splits are deterministic for a seed and hold distinct sources, none shared between splits.
    The test split is drawn first, then valid, then train, so the test set does not change when
    only ``n_train`` or ``n_valid`` does. Options: dates takes ``formats`` and ``mixed_case``;
    reverse and sort take ``min_len``, ``max_len`` (string length) and ``alphabet``; addition takes
    ``min_len``, ``max_len`` (digits per operand). The vocabularies hold every character the task
    can produce, not only the drawn ones.
    """
    if name not in _TASK_BUILDERS:
        raise ValueError(f"unknown task {name!r}; expected one of {TASKS}")
    builder = _TASK_BUILDERS[name]
    allowed = tuple(inspect.signature(builder).parameters)
    unknown = sorted(set(task_options) - set(allowed))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for task {name!r}; expected some of {allowed}")
    for arg, value in (("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test), ("seed", seed)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{arg} must be a non-negative int, got {value!r}")
    draw, src_chars, tgt_chars = builder(**task_options)
    rng = np.random.default_rng(seed)
    sizes = {"test": n_test, "valid": n_valid, "train": n_train}
    total = sum(sizes.values())
    pairs, seen = [], set()
    # The source space can be smaller than the request (e.g. reverse with max_len=2): stop drawing
    # once repeats show that new sources have become too rare to find.
    repeats, max_repeats = 0, 10 * total + 1000
    while len(pairs) < total:
        source, target = draw(rng)
        if source in seen:
            repeats += 1
            if repeats > max_repeats:
                raise ValueError(f"task {name!r} with options {task_options} gave only {len(pairs)} distinct "
                                 f"sources in {len(pairs) + repeats} draws, fewer than the {total} requested "
                                 f"(n_train + n_valid + n_test); ask for fewer or widen the options")
            continue
        seen.add(source)
        pairs.append((source, target))
    split = {}
    start = 0
    for key, size in sizes.items():
        split[key] = pairs[start:start + size]
        start += size
    return TaskData(name, split["train"], split["valid"], split["test"], CharTokenizer.from_chars(src_chars),
                    CharTokenizer.from_chars(tgt_chars))
