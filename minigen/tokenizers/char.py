"""Character-level tokenizer, and the file and id checks shared with the BPE tokenizer."""
import os
import re

import numpy as np

from ..io.config import load_json, save_json


def read_json(path):
    """A JSON object from a file that may be untrusted (io.config's strict reader): any defect is a
    ValueError naming the file; a missing file is a FileNotFoundError naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    return load_json(path)


def check_vocab(vocab, source):
    """Check that `vocab` maps strings to the ids 0..len(vocab)-1, each once; `source` names it in errors.

    Contiguous ids (as in every GPT-2 style vocab.json) keep a hostile file from making a decoding
    table of one huge id, and make vocab_size == len(vocab)."""
    if not isinstance(vocab, dict):
        raise ValueError(f"{source}: expected a JSON object mapping token -> id, got {type(vocab).__name__}")
    seen = {}
    for token, index in vocab.items():
        if not isinstance(token, str):
            raise ValueError(f"{source}: key {token!r} is a {type(token).__name__}, expected a string")
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"{source}: key {token!r} has id {index!r}, expected a non-negative integer")
        if not 0 <= index < len(vocab):
            raise ValueError(f"{source}: key {token!r} has id {index}, expected 0..{len(vocab) - 1} "
                             f"(one id per entry)")
        if index in seen:
            raise ValueError(f"{source}: keys {seen[index]!r} and {token!r} share id {index}")
        seen[index] = token


def check_special_tokens(special_tokens, vocab, source):
    """Return `special_tokens` as a list after checking each is a non-empty string in `vocab`."""
    special_tokens = list(special_tokens or [])
    for token in special_tokens:
        if not isinstance(token, str) or not token:
            raise ValueError(f"{source}: special token {token!r} is not a non-empty string")
        if token not in vocab:
            raise ValueError(f"{source}: special token {token!r} is not in the vocabulary")
    return special_tokens


def id_table(vocab, value):
    """A list indexed by id holding value(token), for a vocab checked by check_vocab."""
    table = [None] * len(vocab)
    for token, index in vocab.items():
        table[index] = value(token)
    return table


def lookup_ids(table, ids):
    """[table[i] for i in ids] with a clear error for a non-integer or unknown id (ids: ints or 1-D array)."""
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"ids: expected a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
        ids = ids.tolist()
    elif isinstance(ids, (int, np.integer)):
        ids = [ids]
    elif not isinstance(ids, list):
        try:
            ids = list(ids)
        except TypeError:
            raise TypeError(f"ids: expected an int, a list of ints or a 1-D integer array, got "
                            f"{type(ids).__name__}") from None
    try:
        # negative ids would silently index from the end, and True would read as id 1
        if not any(isinstance(i, (bool, np.bool_)) for i in ids) and (not ids or min(ids) >= 0):
            return [table[i] for i in ids]
    except (IndexError, TypeError):
        pass
    for i in ids:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"ids: expected integers, got {i!r} of type {type(i).__name__}")
        if not 0 <= i < len(table):
            raise IndexError(f"ids: id {i} is not in the vocabulary (vocab_size {len(table)})")
    raise AssertionError("unreachable: a failed lookup always has a bad id")


def special_splitter(special_tokens):
    """A regex whose split() separates the special tokens (longest first) from the text between them."""
    if not special_tokens:
        return None
    alternatives = sorted(special_tokens, key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")


# Special tokens with a role, beside unk_token: saved in tokenizer_config.json when set.
NAMED_TOKENS = ("pad_token", "bos_token", "eos_token")


class VocabLookup:
    """What every tokenizer answers from its `_vocab` (token -> id) and `_id_to_token` (id -> token)."""

    @property
    def vocab_size(self):
        """Number of tokens, special tokens included (ids are 0..vocab_size-1)."""
        return len(self._id_to_token)

    def __len__(self):
        return self.vocab_size

    def get_vocab(self):
        """A copy of the token -> id mapping."""
        return dict(self._vocab)

    def token_to_id(self, token):
        """The id of `token`, or None."""
        return self._vocab.get(token)

    def id_to_token(self, index):
        """The token of id `index`, or None."""
        return self._id_to_token[index] if 0 <= index < len(self._id_to_token) else None


class CharTokenizer(VocabLookup):
    """One token per Unicode character (code point), plus optional special tokens.

    `from_text` gives the sorted distinct characters ids 0..n-1 (the same ids as nanoGPT's character
    encoding), then special tokens ids n, n+1, ... in the order given. Special tokens are matched as
    whole strings in `encode`, before characters.

    `from_chars` gives the layout of a Seq2Seq vocabulary instead: padding, begin, end and unknown
    tokens first (`pad_id`, `bos_id`, `eos_id`, `unk_id` = 0, 1, 2, 3), then the sorted characters.

    Unknown characters: by default `encode` raises ValueError naming the character and its position;
    with `unk_token` set they map to it (unless `encode` is called with unk='error'). A lone surrogate
    (e.g. '\\ud800') has no UTF-8 form and is never in a vocabulary, so it is an unknown character like
    any other.

    Files: `vocab.json` (token -> id) and `tokenizer_config.json`
    (`{"tokenizer_class": "CharTokenizer", "special_tokens": [...], "unk_token": ...}`).
    """

    def __init__(self, vocab, special_tokens=None, unk_token=None, pad_token=None, bos_token=None, eos_token=None):
        self._init(vocab, special_tokens, unk_token, "vocab", pad_token, bos_token, eos_token)

    def _init(self, vocab, special_tokens, unk_token, source, pad_token=None, bos_token=None, eos_token=None):
        check_vocab(vocab, source)
        self.special_tokens = check_special_tokens(special_tokens, vocab, source)
        named = {"pad_token": pad_token, "bos_token": bos_token, "eos_token": eos_token, "unk_token": unk_token}
        for name, token in named.items():
            if token is not None:
                check_special_tokens([token], vocab, f"{source} ({name})")
                if token not in self.special_tokens:
                    self.special_tokens.append(token)
            setattr(self, name, token)
        for token in vocab:
            if token not in self.special_tokens:
                if len(token) != 1:
                    raise ValueError(f"{source}: key {token!r} is neither one character nor a special token")
                if 0xD800 <= ord(token) <= 0xDFFF:
                    raise ValueError(f"{source}: key {token!r} is a lone surrogate, which has no UTF-8 form")
        self._vocab = dict(vocab)
        self._id_to_token = id_table(vocab, str)
        self._splitter = special_splitter(self.special_tokens)

    @classmethod
    def from_text(cls, text, special_tokens=None, unk_token=None):
        """Build the vocabulary from the distinct characters of `text` (see the class docstring)."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        chars = sorted(set(text))
        bad = next((c for c in chars if 0xD800 <= ord(c) <= 0xDFFF), None)
        if bad is not None:
            raise ValueError(f"text: lone surrogate {bad!r} at position {text.index(bad)} has no UTF-8 form")
        specials = list(special_tokens or [])
        if unk_token is not None and unk_token not in specials:
            specials.append(unk_token)
        tokens = chars + [s for s in dict.fromkeys(specials) if s not in chars]
        if not tokens:
            raise ValueError("text: empty and no special tokens given, the vocabulary would be empty")
        return cls({t: i for i, t in enumerate(tokens)}, specials, unk_token)

    @classmethod
    def from_chars(cls, chars, specials=("<pad>", "<bos>", "<eos>", "<unk>")):
        """A Seq2Seq vocabulary: the four `specials` (padding, begin, end, unknown) at ids 0-3, then the
        distinct `chars` sorted, so the ids do not depend on the order the characters came in."""
        try:
            chars = list(chars)
        except TypeError:
            raise TypeError(f"chars must be an iterable of characters, got {type(chars).__name__}") from None
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
        tokens = list(specials) + sorted(set(chars))
        pad, bos, eos, unk = specials
        return cls({t: i for i, t in enumerate(tokens)}, list(specials), unk_token=unk, pad_token=pad,
                   bos_token=bos, eos_token=eos)

    @property
    def chars(self):
        """The characters of the vocabulary (every token but the special ones), in id order, as one str."""
        return "".join(t for t in self._id_to_token if t not in self.special_tokens)

    # The ids of the named special tokens; None for a role the tokenizer has no token for.
    pad_id = property(lambda self: self._vocab.get(self.pad_token))
    bos_id = property(lambda self: self._vocab.get(self.bos_token))
    eos_id = property(lambda self: self._vocab.get(self.eos_token))
    unk_id = property(lambda self: self._vocab.get(self.unk_token))

    def __eq__(self, other):
        return (isinstance(other, CharTokenizer) and self._vocab == other._vocab
                and self.special_tokens == other.special_tokens
                and (self.pad_token, self.bos_token, self.eos_token, self.unk_token)
                == (other.pad_token, other.bos_token, other.eos_token, other.unk_token))

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size}, chars={self.chars!r})"

    def encode(self, text, unk="replace"):
        """Token ids of `text` (special tokens matched whole, then one id per character).

        An unknown character becomes the unk_token with unk='replace' when there is one; otherwise, and
        always with unk='error', it raises ValueError naming the character and its position."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        if unk not in ("error", "replace"):
            raise ValueError(f"unk must be 'error' or 'replace', got {unk!r}")
        unk_id = self.unk_id if unk == "replace" else None
        if self._splitter is None:
            return self._encode_chars(text, 0, unk_id)
        ids, offset = [], 0
        for i, piece in enumerate(self._splitter.split(text)):
            # split() with one capture group alternates text, special, text, ...
            ids.extend([self._vocab[piece]] if i % 2 else self._encode_chars(piece, offset, unk_id))
            offset += len(piece)
        return ids

    def _encode_chars(self, text, offset, unk_id):
        vocab = self._vocab
        try:
            return [vocab[c] for c in text]
        except KeyError:
            pass
        ids = []
        for position, c in enumerate(text, offset):
            index = vocab.get(c, unk_id)
            if index is None:
                raise ValueError(
                    f"text: character {c!r} (U+{ord(c):04X}) at position {position} is not in the "
                    f"vocabulary; build it from text that contains it or set unk_token"
                )
            ids.append(index)
        return ids

    def decode(self, ids, skip_special_tokens=False):
        """The text of `ids` (list of ints, int, or 1-D integer array)."""
        tokens = lookup_ids(self._id_to_token, ids)
        if skip_special_tokens:
            tokens = [t for t in tokens if t not in self.special_tokens]
        return "".join(tokens)

    def save_pretrained(self, directory):
        """Write vocab.json and tokenizer_config.json into `directory` (created if needed)."""
        os.makedirs(directory, exist_ok=True)
        vocab = dict(sorted(self._vocab.items(), key=lambda item: item[1]))
        config = {"tokenizer_class": "CharTokenizer", "special_tokens": self.special_tokens,
                  "unk_token": self.unk_token}
        config.update({name: getattr(self, name) for name in NAMED_TOKENS if getattr(self, name) is not None})
        save_json(vocab, os.path.join(directory, "vocab.json"))
        save_json(config, os.path.join(directory, "tokenizer_config.json"))

    @classmethod
    def from_pretrained(cls, directory):
        """Load a tokenizer written by `save_pretrained`, validating both files."""
        config_path = os.path.join(directory, "tokenizer_config.json")
        vocab_path = os.path.join(directory, "vocab.json")
        config = read_json(config_path)
        if not isinstance(config, dict) or config.get("tokenizer_class") != "CharTokenizer":
            raise ValueError(f'{config_path}: expected an object with "tokenizer_class": "CharTokenizer"')
        special_tokens = config.get("special_tokens", [])
        if not isinstance(special_tokens, list) or not all(isinstance(t, str) for t in special_tokens):
            raise ValueError(f"{config_path}: special_tokens must be a list of strings, got {special_tokens!r}")
        named = {name: config.get(name) for name in ("unk_token",) + NAMED_TOKENS}
        for name, token in named.items():
            if token is not None and not isinstance(token, str):
                raise ValueError(f"{config_path}: {name} must be a string or null, got {token!r}")
        vocab = read_json(vocab_path)
        check_vocab(vocab, vocab_path)
        check_special_tokens(special_tokens + [t for t in named.values() if t is not None], vocab, config_path)
        tokenizer = cls.__new__(cls)
        tokenizer._init(vocab, special_tokens, named.pop("unk_token"), vocab_path, **named)
        return tokenizer
