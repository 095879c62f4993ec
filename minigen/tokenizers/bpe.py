"""GPT-2's byte-level BPE tokenizer: training, encoding, decoding, vocab.json + merges.txt files."""
import heapq
import os
from collections import Counter, defaultdict

from ..io.config import atomic_write, save_json
from .char import VocabLookup, check_special_tokens, check_vocab, id_table, lookup_ids, read_json, special_splitter
from .pretokenize import gpt2_pattern


def bytes_to_unicode():
    """GPT-2's map byte -> printable character, in GPT-2's id order (ids 0..255 of its vocab)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(rest)}}


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}
_CACHE_LIMIT = 1 << 17
# Keys of a Hugging Face tokenizer_config.json that name special tokens.
_HF_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _surrogate_error(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return ValueError(f"text: lone surrogate {text[err.start]!r} at position {err.start} "
                          f"has no UTF-8 encoding")
    raise AssertionError("unreachable: called only after a UnicodeEncodeError")


def _to_symbols(word):
    """The byte symbols of `word`'s UTF-8 encoding (UnicodeEncodeError for a lone surrogate)."""
    # latin-1 turns byte b into chr(b), which BYTE_TO_CHAR (keyed by ordinal) then translates.
    return list(word.encode("utf-8").decode("latin-1").translate(BYTE_TO_CHAR))


class ByteLevelBPETokenizer(VocabLookup):
    """GPT-2's byte-level BPE.

    Text is split around special tokens (matched whole, longest first, never split), the rest is
    pre-tokenized with GPT-2's pattern, and each word's UTF-8 bytes, written as GPT-2's byte symbols, are
    merged pair by pair in merge-rank order. Every string therefore encodes, and decode(encode(s)) == s.
    Decoding joins the tokens' bytes and decodes them as UTF-8 with errors='replace', so ids that cut a
    character in two give U+FFFD, as Hugging Face does. A lone surrogate (e.g. '\\ud800') has no UTF-8
    encoding: `encode` and `train` raise ValueError naming its position.

    `vocab` maps token -> id (ids 0..len(vocab)-1) and must hold the 256 byte symbols; `merges` is a
    list of token pairs in rank order, each pair and its concatenation in `vocab`; `special_tokens`
    must be in `vocab`.
    """

    def __init__(self, vocab, merges, special_tokens=None):
        self._init(vocab, merges, special_tokens, "vocab", lambda i: f"merges[{i}]")

    def _init(self, vocab, merges, special_tokens, vocab_source, merge_source):
        check_vocab(vocab, vocab_source)
        self.special_tokens = check_special_tokens(special_tokens, vocab, vocab_source)
        for token in self.special_tokens:
            try:
                token.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{vocab_source}: special token {token!r} has no UTF-8 encoding") from None
        for token in vocab:
            if token not in self.special_tokens and (not token or not all(c in CHAR_TO_BYTE for c in token)):
                raise ValueError(f"{vocab_source}: key {token!r} is neither made of GPT-2 byte symbols "
                                 f"nor a special token")
        missing = [c for c in BYTE_TO_CHAR.values() if c not in vocab]
        if missing:
            raise ValueError(f"{vocab_source}: lacks {len(missing)} of the 256 byte symbols, e.g. "
                             f"{missing[0]!r} (byte 0x{CHAR_TO_BYTE[missing[0]]:02x})")
        self._ranks = {}
        for rank, pair in enumerate(merges):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(t, str) for t in pair):
                raise ValueError(f"{merge_source(rank)}: expected a pair of token strings, got {pair!r}")
            left, right = pair
            for token in (left, right, left + right):
                if token not in vocab:
                    raise ValueError(f"{merge_source(rank)}: merge {left!r} {right!r} needs token {token!r}, "
                                     f"which is not in the vocab")
            if (left, right) in self._ranks:
                raise ValueError(f"{merge_source(rank)}: merge {left!r} {right!r} repeats the merge of rank "
                                 f"{self._ranks[left, right]}")
            self._ranks[left, right] = rank
        self._vocab = dict(vocab)
        self._id_to_token = id_table(vocab, str)
        self._id_to_bytes = id_table(vocab, self._token_bytes)
        self._id_to_bytes_no_special = id_table(
            vocab, lambda t: b"" if t in self.special_tokens else self._token_bytes(t))
        self._splitter = special_splitter(self.special_tokens)
        self._cache = {}  # pre-token word -> ids

    def _token_bytes(self, token):
        if token in self.special_tokens:
            return token.encode("utf-8")
        return bytes(CHAR_TO_BYTE[c] for c in token)

    @classmethod
    def train(cls, texts, vocab_size, special_tokens=None):
        """Learn merges on `texts` (a string or an iterable of strings) until the vocabulary reaches
        `vocab_size` (or no pair is left). Ids 0..255 are the byte symbols (as in GPT-2), then the merged
        tokens, then the special tokens (as GPT-2's <|endoftext|> is last). Ties between equally frequent
        pairs go to the pair of smaller ids."""
        if isinstance(texts, str):
            texts = [texts]
        special_tokens = list(dict.fromkeys(special_tokens or []))
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size: expected an int, got {vocab_size!r}")
        if vocab_size < 256 + len(special_tokens):
            raise ValueError(f"vocab_size: expected at least 256 byte symbols + {len(special_tokens)} special "
                             f"tokens, got {vocab_size}")
        splitter, pattern = special_splitter(special_tokens), gpt2_pattern()
        word_counts = Counter()
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}]: expected str, got {type(text).__name__}")
            for piece in splitter.split(text)[::2] if splitter else [text]:
                word_counts.update(pattern.findall(piece))
        tokens = list(BYTE_TO_CHAR.values())
        symbol_id = {c: i for i, c in enumerate(tokens)}
        words, counts = [], []
        for word, count in word_counts.items():
            try:
                words.append([symbol_id[c] for c in _to_symbols(word)])
            except UnicodeEncodeError as err:
                raise ValueError(f"texts: lone surrogate {word[err.start]!r} in the word {word!r} has no "
                                 f"UTF-8 encoding") from None
            counts.append(count)
        merges = _learn_merges(words, counts, tokens, vocab_size - len(special_tokens))
        vocab = {token: i for i, token in enumerate(tokens)}
        for token in special_tokens:
            vocab.setdefault(token, len(vocab))
        return cls(vocab, merges, special_tokens)

    @property
    def merges(self):
        """The merges in rank order, as (left, right) token pairs."""
        return list(self._ranks)

    def encode(self, text):
        """Token ids of `text`."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        pieces = self._splitter.split(text) if self._splitter else [text]
        findall, cache, ids = gpt2_pattern().findall, self._cache, []
        try:
            for i, piece in enumerate(pieces):
                if i % 2:  # split() with one capture group alternates text, special, text, ...
                    ids.append(self._vocab[piece])
                    continue
                for word in findall(piece):
                    word_ids = cache.get(word)
                    if word_ids is None:
                        word_ids = self._encode_word(word)
                    ids.extend(word_ids)
        except UnicodeEncodeError:
            raise _surrogate_error(text) from None
        return ids

    def _encode_word(self, word):
        ranks, symbols = self._ranks, _to_symbols(word)
        while len(symbols) > 1:
            pair = min(zip(symbols, symbols[1:]), key=lambda p: ranks.get(p, len(ranks)))
            if pair not in ranks:
                break
            symbols = _merge_pair(symbols, pair, pair[0] + pair[1])
        if len(self._cache) >= _CACHE_LIMIT:  # bound memory on endless distinct words
            self._cache.clear()
        ids = self._cache[word] = [self._vocab[s] for s in symbols]
        return ids

    def decode(self, ids, skip_special_tokens=False):
        """The text of `ids` (list of ints, int, or 1-D integer array); invalid UTF-8 becomes U+FFFD."""
        table = self._id_to_bytes_no_special if skip_special_tokens else self._id_to_bytes
        return b"".join(lookup_ids(table, ids)).decode("utf-8", errors="replace")

    def save_pretrained(self, directory):
        """Write GPT-2's vocab.json and merges.txt, and a tokenizer_config.json that Hugging Face's
        GPT2Tokenizer reads, into `directory` (created if needed)."""
        os.makedirs(directory, exist_ok=True)
        vocab = dict(sorted(self._vocab.items(), key=lambda item: item[1]))
        save_json(vocab, os.path.join(directory, "vocab.json"))
        merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self._ranks)
        atomic_write(os.path.join(directory, "merges.txt"), lambda f: f.write(merges.encode("utf-8")))
        config = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False,
                  "additional_special_tokens": self.special_tokens,
                  "added_tokens_decoder": {str(self._vocab[t]): {"content": t, "special": True}
                                           for t in self.special_tokens}}
        if "<|endoftext|>" in self.special_tokens:  # GPT-2's convention
            config.update(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
        save_json(config, os.path.join(directory, "tokenizer_config.json"))

    @classmethod
    def from_pretrained(cls, directory):
        """Load vocab.json + merges.txt (GPT-2's files, or those of `save_pretrained`), validating them.
        Special tokens come from tokenizer_config.json when present (its bos/eos/unk/... tokens,
        additional_special_tokens and added_tokens_decoder), else <|endoftext|> if in the vocab."""
        vocab_path = os.path.join(directory, "vocab.json")
        merges_path = os.path.join(directory, "merges.txt")
        config_path = os.path.join(directory, "tokenizer_config.json")
        vocab = read_json(vocab_path)
        check_vocab(vocab, vocab_path)
        merges, line_numbers = _read_merges(merges_path)
        if os.path.exists(config_path):
            special_tokens = _special_tokens_from_config(read_json(config_path), config_path)
            check_special_tokens(special_tokens, vocab, config_path)
        else:
            special_tokens = ["<|endoftext|>"] if "<|endoftext|>" in vocab else []
        tokenizer = cls.__new__(cls)
        tokenizer._init(vocab, merges, special_tokens, vocab_path,
                        lambda i: f"{merges_path} line {line_numbers[i]}")
        return tokenizer


def _merge_pair(symbols, pair, merged):
    """`symbols` with each occurrence of `pair`, left to right, replaced by `merged`."""
    left, right = pair
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
            out.append(merged)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def _learn_merges(words, counts, tokens, target_size):
    """Merge the most frequent adjacent pair until `tokens` has `target_size` entries.

    `words` are lists of token ids weighted by `counts`; `tokens` (id -> string) grows in place. Pair
    counts are updated only for the words that hold the merged pair, and a heap with stale entries
    skipped on pop finds the most frequent pair.
    """
    pair_counts, where = defaultdict(int), defaultdict(set)
    for w, (word, count) in enumerate(zip(words, counts)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += count
            where[pair].add(w)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    token_ids = {token: i for i, token in enumerate(tokens)}
    merges, merged_pairs = [], set()
    while len(tokens) < target_size and heap:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts[pair] != -negative_count:
            continue  # stale: a newer entry holds the current count
        left, right = pair
        new_token = tokens[left] + tokens[right]
        # Two different pairs can spell the same token ("a"+"bc", "ab"+"c"): it keeps one id.
        new_id = token_ids.setdefault(new_token, len(tokens))
        if new_id == len(tokens):
            tokens.append(new_token)
        if pair not in merged_pairs:
            merged_pairs.add(pair)
            merges.append((tokens[left], tokens[right]))
        delta = defaultdict(int)
        for w in where.pop(pair):
            word, count = words[w], counts[w]
            new_word = _merge_pair(word, pair, new_id)
            if len(new_word) == len(word):
                continue  # stale entry of `where`: the pair left this word earlier
            for p in zip(word, word[1:]):
                delta[p] -= count
            for p in zip(new_word, new_word[1:]):
                delta[p] += count
                where[p].add(w)
            words[w] = new_word
        for p, change in delta.items():
            if change:
                pair_counts[p] += change
                if pair_counts[p] > 0:
                    heapq.heappush(heap, (-pair_counts[p], p))
    return merges


def _read_merges(path):
    """(pairs, line numbers) of a merges.txt; a first line '#version...' is skipped."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from None
    if lines and lines[-1] == "":
        lines.pop()
    pairs, line_numbers = [], []
    for number, line in enumerate(lines, 1):
        if number == 1 and line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{path} line {number}: expected two tokens separated by one space, got {line!r}")
        pairs.append(tuple(parts))
        line_numbers.append(number)
    return pairs, line_numbers


def _special_tokens_from_config(config, path):
    """The special tokens named by a Hugging Face tokenizer_config.json."""
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    decoder = config.get("added_tokens_decoder", {})
    additional = config.get("additional_special_tokens") or []
    if not isinstance(decoder, dict) or not isinstance(additional, list):
        raise ValueError(f"{path}: added_tokens_decoder must be an object and additional_special_tokens a list")
    named = [config.get(key) for key in _HF_SPECIAL_KEYS] + additional
    named += [entry for entry in decoder.values() if isinstance(entry, dict) and entry.get("special")]
    tokens = []
    for entry in named:
        token = entry.get("content") if isinstance(entry, dict) else entry  # AddedToken or plain string
        if entry is not None and not isinstance(token, str):
            raise ValueError(f"{path}: special token entry {entry!r} is not a string or an object with content")
        if token is not None and token not in tokens:
            tokens.append(token)
    return tokens
