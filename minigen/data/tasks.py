"""Character vocabularies and the built-in sequence-to-sequence tasks, generated from a seed.

Example::

    data = load_task("dates", seed=0)
    source, target = data.train[0]          # e.g. ('Mar 14 1987', '1987-03-14')
    ids = data.src_vocab.encode(source, add_eos=True)
"""
import inspect
import string
from dataclasses import dataclass

import numpy as np

from . import dates

DEFAULT_SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class Vocab:
    """A character vocabulary: the special tokens first, then the characters in sorted order.

    ``specials`` names the padding, begin, end and unknown tokens, in that order, so their ids
    are ``pad_id=0, bos_id=1, eos_id=2, unk_id=3``. Characters are sorted so that the ids do not
    depend on the order they were given in; duplicates are dropped.
    """

    def __init__(self, chars, specials=DEFAULT_SPECIALS):
        try:
            chars = list(chars)
        except TypeError:
            raise TypeError(f"chars must be an iterable of characters, "
                            f"got {type(chars).__name__}") from None
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"chars must hold single characters, got {c!r}")
        specials = tuple(specials)
        if len(specials) != 4 or not all(isinstance(s, str) and s for s in specials):
            raise ValueError(f"specials must be 4 non-empty strings (pad, bos, eos, unk), got {specials!r}")
        if len(set(specials)) != 4:
            raise ValueError(f"specials must be distinct, got {specials!r}")
        clash = sorted(set(chars) & set(specials))
        if clash:
            raise ValueError(f"characters {clash} are also special tokens in {specials!r}")
        self.specials = specials
        self.chars = "".join(sorted(set(chars)))
        self.itos = list(specials) + list(self.chars)
        self.stoi = {token: i for i, token in enumerate(self.itos)}
        # Text is looked up among characters only, so a special's name typed in text is not a special.
        self._char_ids = {c: i + len(specials) for i, c in enumerate(self.chars)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = range(4)

    def __len__(self):
        return len(self.itos)

    def __eq__(self, other):
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self):
        return f"Vocab(size={len(self)}, chars={self.chars!r})"

    def encode(self, text, add_bos=False, add_eos=False, unk="error"):
        """Token ids of ``text`` as a list of ints.

        An unknown character raises ValueError naming it and its position, or becomes ``unk_id``
        with ``unk='replace'``.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if unk not in ("error", "replace"):
            raise ValueError(f"unk must be 'error' or 'replace', got {unk!r}")
        ids = [self.bos_id] if add_bos else []
        for position, c in enumerate(text):
            token = self._char_ids.get(c)
            if token is None:
                if unk == "error":
                    raise ValueError(f"character {c!r} at position {position} of {text!r} is not in the "
                                     f"vocabulary {self.chars!r} (pass unk='replace' to map it to "
                                     f"{self.specials[3]!r})")
                token = self.unk_id
            ids.append(token)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids, strip_special=True):
        """Text of token ids. With strip_special, stop at the first eos and drop the other specials;
        without, write every token, specials by their names."""
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"ids must be a 1-D sequence of token ids, got shape {ids.shape}")
        if ids.size and ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
        pieces = []
        for position, token in enumerate(ids.tolist()):
            if not 0 <= token < len(self.itos):
                raise IndexError(f"token id {token!r} at position {position} is out of range for a "
                                 f"vocabulary of {len(self.itos)} tokens")
            if strip_special and token < len(self.specials):
                if token == self.eos_id:
                    break
                continue
            pieces.append(self.itos[token])
        return "".join(pieces)

    def to_dict(self):
        """A JSON-ready description: ``{"specials": [...], "chars": "..."}``."""
        return {"specials": list(self.specials), "chars": self.chars}

    @classmethod
    def from_dict(cls, d):
        """The vocabulary that ``to_dict`` described; ValueError when ``d`` is not such a dict."""
        if not isinstance(d, dict) or set(d) != {"specials", "chars"}:
            found = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"vocab dict must have exactly the keys 'chars' and 'specials', got {found}")
        chars, specials = d["chars"], d["specials"]
        if not isinstance(chars, str):
            raise ValueError(f"vocab dict 'chars' must be a str, got {type(chars).__name__}")
        if "".join(sorted(set(chars))) != chars:
            raise ValueError(f"vocab dict 'chars' must be distinct and sorted (as to_dict writes it), "
                             f"got {chars!r}")
        if not isinstance(specials, (list, tuple)) or not all(isinstance(s, str) for s in specials):
            raise ValueError(f"vocab dict 'specials' must be a list of str, got {specials!r}")
        return cls(chars, specials)


@dataclass
class TaskData:
    """A generated task: (source, target) string pairs per split and the vocabularies of each side."""

    name: str
    train: list
    valid: list
    test: list
    src_vocab: Vocab
    tgt_vocab: Vocab


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
    return TaskData(name, split["train"], split["valid"], split["test"], Vocab(src_chars), Vocab(tgt_chars))
