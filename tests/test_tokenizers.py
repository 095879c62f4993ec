"""Tests of the character-level and byte-level BPE tokenizers."""
import json
import os
import tempfile
import unicodedata
from collections import Counter

import numpy as np
import pytest

try:
    import regex
except ImportError:  # optional: only the equivalence test needs it
    regex = None
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.tokenizers import ByteLevelBPETokenizer, CharTokenizer, load_tokenizer
from minigen.tokenizers.bpe import BYTE_TO_CHAR
from minigen.tokenizers.pretokenize import gpt2_pattern, pretokenize

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
BYTE_SYMBOLS = list(BYTE_TO_CHAR.values())
FILE_NAMES = ("vocab.json", "merges.txt", "tokenizer_config.json")
CORPUS = [
    "First Citizen: Before we proceed any further, hear me speak.\n\nAll: Speak, speak.\n",
    "You are all resolved rather to die than to famish? We'll see; they're here, I'd say.\n",
    "Ünïcödé wörds, 中文字符, числа 12345 and ٣٤٥, emoji 😀🎉 and tabs\tand  spaces  \n",
] * 3

# Alphabets that reach the corners: every kind of whitespace, combining marks, emoji, contractions.
FRAGMENTS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'", "x'", " ", "  ", "\n", "\r\n", "\t",
             "\x0b", "\x1c", "\x85", "\xa0", "\u2028", "\u3000", "\u200b", "a", "Zq", "é", "e\u0301",
             "中", "1", "٣", "Ⅻ", "½", "!", "?.", "😀", "👩‍👩‍👧", "\U0001F1EB\U0001F1F7", "\x00", "\ufeff"]
fragment_text = st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join)
any_text = st.one_of(st.text(), fragment_text)


def byte_vocab():
    return {c: i for i, c in enumerate(BYTE_SYMBOLS)}


def tiny_bpe(merges, special_tokens=()):
    """A GPT-2 style vocabulary: the 256 byte symbols, then one token per merge, then the specials."""
    vocab = byte_vocab()
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    for token in special_tokens:
        vocab[token] = len(vocab)
    return ByteLevelBPETokenizer(vocab, merges, list(special_tokens))


@pytest.fixture(scope="module")
def bpe():
    return ByteLevelBPETokenizer.train(CORPUS, vocab_size=400, special_tokens=["<|endoftext|>", "<pad>"])


# ---------------------------------------------------------------- character tokenizer

@given(st.one_of(st.text(min_size=1), fragment_text.filter(bool)))
def test_char_round_trip(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert tok.decode(ids) == text


def test_char_ids_sorted_and_specials_last():
    tok = CharTokenizer.from_text("hello", special_tokens=["<eos>"], unk_token="<unk>")
    assert tok.get_vocab() == {"e": 0, "h": 1, "l": 2, "o": 3, "<eos>": 4, "<unk>": 5}
    assert tok.vocab_size == len(tok) == 6
    assert tok.encode("he<eos>llo<eos>") == [1, 0, 4, 2, 2, 3, 4]
    assert tok.decode(np.array([1, 0, 4])) == "he<eos>"
    assert tok.decode([1, 0, 4], skip_special_tokens=True) == "he"
    assert tok.token_to_id("<eos>") == 4 and tok.id_to_token(4) == "<eos>" and tok.id_to_token(9) is None


def test_char_unknown_policy():
    strict = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"'z'.*position 2"):
        strict.encode("abzc")
    lenient = CharTokenizer.from_text("abc", unk_token="<unk>")
    assert lenient.encode("abzc") == [0, 1, 3, 2]
    assert lenient.decode(lenient.encode("abzc")) == "ab<unk>c"


def test_char_lone_surrogate():
    with pytest.raises(ValueError, match=r"surrogate.*position 1"):
        CharTokenizer.from_text("a\ud800b")
    with pytest.raises(ValueError, match=r"U\+D800.*position 3"):
        CharTokenizer.from_text("ab").encode("aba\ud800")
    assert CharTokenizer.from_text("ab", unk_token="?").encode("\udfff") == [2]


def test_char_save_load(tmp_path):
    tok = CharTokenizer.from_text("Hello, wörld 😀\n", special_tokens=["<eos>"], unk_token="<unk>")
    tok.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "CharTokenizer"
    for loaded in (CharTokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path)):
        assert isinstance(loaded, CharTokenizer)
        assert loaded.get_vocab() == tok.get_vocab()
        assert loaded.encode("wö<eos>?") == tok.encode("wö<eos>?")


def test_char_bad_input():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(IndexError, match=r"id 3 .*vocab_size 3"):
        tok.decode([0, 3])
    with pytest.raises(IndexError, match=r"id -1"):
        tok.decode([-1])
    with pytest.raises(TypeError, match=r"1.5"):
        tok.decode([0, 1.5])
    with pytest.raises(TypeError, match="text"):
        tok.encode(b"abc")
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match="neither one character"):
        CharTokenizer({"ab": 0})


@given(data=st.data())
def test_char_bad_files_raise_value_error(data):
    with tempfile.TemporaryDirectory() as directory:
        CharTokenizer.from_text("abc", special_tokens=["<s>"]).save_pretrained(directory)
        name = data.draw(st.sampled_from(["vocab.json", "tokenizer_config.json"]))
        path = os.path.join(directory, name)
        with open(path, encoding="utf-8") as f:
            good = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(data.draw(mutated_json(good)))
        check_load_or_value_error(CharTokenizer.from_pretrained, directory)


# ---------------------------------------------------------------- pre-tokenization

def test_pretokenize_known_splits():
    assert pretokenize("Hello world's  end\n\n 12 😀!") == [
        "Hello", " world", "'s", " ", " end", "\n\n", " 12", " 😀!"]


def same_classes_in_both_unicode_versions(c):
    """True when `regex`'s Unicode database classifies `c` as this Python's unicodedata does
    (the two can be of different Unicode versions)."""
    category = unicodedata.category(c)[0]
    return (bool(regex.match(r"\p{L}", c)) == (category == "L")
            and bool(regex.match(r"\p{N}", c)) == (category == "N"))


@pytest.mark.skipif(regex is None, reason="the regex package is not installed")
@given(st.one_of(st.text(st.characters(exclude_categories=["Cs"]).filter(same_classes_in_both_unicode_versions)),
                 fragment_text))
def test_pretokenize_matches_regex_package(text):
    assert pretokenize(text) == regex.findall(GPT2_PATTERN, text)


def test_pretokenize_classes_cover_every_letter_and_number():
    pattern = gpt2_pattern()
    for cp in range(0, 0x110000, 7):  # a sample of all planes keeps this quick
        c = chr(cp)
        if unicodedata.category(c)[0] in "LN":
            assert pattern.fullmatch(c), f"U+{cp:04X}"


# ---------------------------------------------------------------- byte-level BPE

def test_byte_ids_match_gpt2():
    tok = tiny_bpe([])
    assert tok.encode("!") == [0] and tok.encode(" ") == [220] and tok.encode("\n") == [198]
    assert tok.token_to_id("Ā") == 188 and tok.id_to_token(255) == "Ń"


def test_hello_world_two_tokens():
    merges = [("H", "e"), ("He", "l"), ("Hel", "l"), ("Hell", "o"),
              ("Ġ", "w"), ("Ġw", "o"), ("Ġwo", "r"), ("Ġwor", "l"), ("Ġworl", "d")]
    tok = tiny_bpe(merges)
    assert tok.encode("Hello world") == [tok.token_to_id("Hello"), tok.token_to_id("Ġworld")]
    assert tok.decode(tok.encode("Hello world")) == "Hello world"


def test_merges_apply_in_rank_order():
    ab_first = tiny_bpe([("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")])
    bc_first = tiny_bpe([("b", "c"), ("a", "b"), ("a", "bc")])
    no_abc = tiny_bpe([("b", "c"), ("a", "b")])
    assert [ab_first.id_to_token(i) for i in ab_first.encode("abc")] == ["abc"]
    assert [bc_first.id_to_token(i) for i in bc_first.encode("abc")] == ["abc"]
    assert [no_abc.id_to_token(i) for i in no_abc.encode("abcab")] == ["a", "bc", "ab"]
    # every occurrence of the best pair merges, left to right
    aa = tiny_bpe([("a", "a")])
    assert [aa.id_to_token(i) for i in aa.encode("aaaaa")] == ["aa", "aa", "a"]


@given(any_text)
def test_bpe_round_trip(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


@given(st.lists(st.one_of(any_text, st.sampled_from(["<|endoftext|>", "<pad>", "<|endoftext", "<pad"]))))
def test_bpe_special_tokens_never_split(bpe, parts):
    text = "".join(parts)
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert ids.count(bpe.token_to_id("<|endoftext|>")) == text.count("<|endoftext|>")


def test_bpe_special_tokens(bpe):
    eot, pad = bpe.token_to_id("<|endoftext|>"), bpe.token_to_id("<pad>")
    assert (eot, pad) == (398, 399) and bpe.vocab_size == 400
    assert bpe.encode("<|endoftext|>") == [eot]
    speak = bpe.token_to_id("Ġspeak")
    ids = bpe.encode(" speak<|endoftext|><pad> speak")
    assert ids == [speak, eot, pad, speak]
    assert bpe.decode(ids, skip_special_tokens=True) == " speak speak"


def test_bpe_decode_incomplete_utf8_is_replaced():
    tok = tiny_bpe([])
    ids = tok.encode("é😀")  # 2 + 4 bytes
    assert len(ids) == 6
    assert tok.decode(ids[:1]) == "\ufffd"
    assert tok.decode(ids[2:5]) == "\ufffd"
    assert tok.decode(ids[:2] + ids[2:]) == "é😀"


def test_bpe_lone_surrogate():
    tok = tiny_bpe([])
    with pytest.raises(ValueError, match=r"surrogate '\\ud83d' at position 2"):
        tok.encode("ab\ud83d c")
    with pytest.raises(ValueError, match="surrogate"):
        ByteLevelBPETokenizer.train(["ok \udc00"], vocab_size=260)


def naive_train(texts, vocab_size):
    """Reference BPE trainer: recount every pair after every merge."""
    words = Counter(word for text in texts for word in pretokenize(text))
    tokens = list(BYTE_SYMBOLS)
    ids = {t: i for i, t in enumerate(tokens)}
    split = [([ids[c] for c in "".join(BYTE_TO_CHAR[b] for b in w.encode())], n) for w, n in words.items()]
    merges = []
    while len(tokens) < vocab_size:
        counts = Counter()
        for symbols, n in split:
            for pair in zip(symbols, symbols[1:]):
                counts[pair] += n
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        new_id = ids.setdefault(tokens[best[0]] + tokens[best[1]], len(tokens))
        if new_id == len(tokens):
            tokens.append(tokens[best[0]] + tokens[best[1]])
        if (tokens[best[0]], tokens[best[1]]) not in merges:
            merges.append((tokens[best[0]], tokens[best[1]]))
        for k, (symbols, n) in enumerate(split):
            out, i = [], 0
            while i < len(symbols):
                if symbols[i:i + 2] == list(best):
                    out.append(new_id)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            split[k] = (out, n)
    return merges


@settings(max_examples=15)
@given(st.lists(st.one_of(st.sampled_from(CORPUS), fragment_text, st.text(max_size=20)), min_size=1, max_size=6),
       st.integers(256, 330))
def test_train_matches_naive_reference(texts, vocab_size):
    trained = ByteLevelBPETokenizer.train(texts, vocab_size)
    assert trained.merges == naive_train(texts, vocab_size)
    assert trained.vocab_size <= vocab_size


def test_train_reaches_vocab_size_and_round_trips(bpe):
    assert len(bpe.merges) == 400 - 256 - 2
    for text in CORPUS:
        assert bpe.decode(bpe.encode(text)) == text
        assert len(bpe.encode(text)) < len(text.encode()) / 2  # merges were learned from this corpus


def test_bpe_save_load(bpe, tmp_path):
    bpe.save_pretrained(tmp_path)
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").split("\n")[0] == "#version: 0.2"
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert vocab == bpe.get_vocab()
    for loaded in (ByteLevelBPETokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path)):
        assert isinstance(loaded, ByteLevelBPETokenizer)
        assert loaded.merges == bpe.merges and loaded.special_tokens == bpe.special_tokens
        for text in CORPUS + ["x<|endoftext|>y<pad>"]:
            assert loaded.encode(text) == bpe.encode(text)


def test_bpe_loads_gpt2_files_without_config(tmp_path):
    tiny_bpe([("Ġ", "t")], special_tokens=["<|endoftext|>"]).save_pretrained(tmp_path)
    os.remove(tmp_path / "tokenizer_config.json")
    tok = ByteLevelBPETokenizer.from_pretrained(tmp_path)
    assert tok.special_tokens == ["<|endoftext|>"]
    assert tok.encode(" t<|endoftext|>") == [256, 257]


def test_bpe_bad_input():
    tok = tiny_bpe([])
    with pytest.raises(IndexError, match=r"id 256 .*vocab_size 256"):
        tok.decode([1, 256])
    with pytest.raises(TypeError, match="integer array"):
        tok.decode(np.array([1.0]))
    with pytest.raises(ValueError, match="byte symbols"):
        ByteLevelBPETokenizer({"a": 0}, [])
    with pytest.raises(ValueError, match=r"merges\[0\].*'ab'"):
        ByteLevelBPETokenizer(byte_vocab(), [("a", "b")])
    with pytest.raises(ValueError, match="vocab_size"):
        ByteLevelBPETokenizer.train(["abc"], vocab_size=100)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        ByteLevelBPETokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text(json.dumps(byte_vocab()), encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        ByteLevelBPETokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer_config.json"):
        CharTokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "absent")


# ---------------------------------------------------------------- untrusted files

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8)


def mutated_json(good):
    """Text derived from the valid JSON `good`: truncated, retyped, replaced, nested deeply, or bytes."""
    def retype(key_value):
        obj = json.loads(good)
        key, value = key_value
        obj[key if key in obj or not obj else sorted(obj)[len(key) % len(obj)]] = value
        return json.dumps(obj)

    depth = st.integers(1, 100_000)
    return st.one_of(
        st.integers(0, len(good)).map(lambda n: good[:n]),
        st.tuples(st.text(max_size=3), json_values).map(retype),
        json_values.map(json.dumps),
        depth.map(lambda n: "[" * n + "]" * n),
        depth.map(lambda n: '{"a":' * n + "1" + "}" * n),
        st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
        st.just('{"a": 0, "a": 1}'),
    )


def mutated_merges(good):
    lines = good.split("\n")
    return st.one_of(
        st.integers(0, len(good)).map(lambda n: good[:n]),
        st.tuples(st.integers(0, len(lines)), st.text(max_size=8)).map(
            lambda t: "\n".join(lines[:t[0]] + [t[1]] + lines[t[0]:])),
        st.integers(0, len(lines) - 1).map(lambda i: "\n".join(lines[:i] + lines[i + 1:])),
        st.text(max_size=30),
    )


def check_load_or_value_error(load, directory):
    """Loading succeeds or raises ValueError naming the file at fault (for a mismatch between
    files, such as a merge whose token the vocab lacks, the file that refers to the other)."""
    try:
        tokenizer = load(directory)
    except ValueError as err:
        assert any(os.path.join(directory, name) in str(err) for name in FILE_NAMES)
    else:
        assert tokenizer.decode(tokenizer.encode("a")) == "a"


@given(data=st.data())
def test_bpe_bad_files_raise_value_error(data):
    with tempfile.TemporaryDirectory() as directory:
        tiny_bpe([("a", "b"), ("ab", "c")], special_tokens=["<|endoftext|>"]).save_pretrained(directory)
        name = data.draw(st.sampled_from(["vocab.json", "merges.txt", "tokenizer_config.json"]))
        path = os.path.join(directory, name)
        with open(path, encoding="utf-8") as f:
            good = f.read()
        mutation = mutated_merges(good) if name == "merges.txt" else mutated_json(good)
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(data.draw(mutation))
        check_load_or_value_error(ByteLevelBPETokenizer.from_pretrained, directory)


def test_bad_file_messages(tmp_path):
    tok = tiny_bpe([("a", "b")])
    tok.save_pretrained(tmp_path)
    merges = tmp_path / "merges.txt"
    merges.write_text("#version: 0.2\na b\nx\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges.txt line 3: expected two tokens"):
        ByteLevelBPETokenizer.from_pretrained(tmp_path)
    merges.write_text("#version: 0.2\na b\nab zz\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges.txt line 3: .*'zz'"):
        ByteLevelBPETokenizer.from_pretrained(tmp_path)
    merges.write_text("a b\n", encoding="utf-8")
    vocab = tok.get_vocab()
    for bad, problem in (({**vocab, "x": -1}, "'x' has id -1"), ({**vocab, "xyz": 10**9}, "expected 0..257"),
                         ({**vocab, "ab": "1"}, "'ab'.*integer"), ({**vocab, "zz": 0}, "share id 0"),
                         ([1, 2], "JSON object")):
        (tmp_path / "vocab.json").write_text(json.dumps(bad), encoding="utf-8")
        with pytest.raises(ValueError, match=f"vocab.json.*{problem}"):
            ByteLevelBPETokenizer.from_pretrained(tmp_path)


def test_char_tokenizer_keeps_its_named_special_tokens_through_save_and_load(tmp_path):
    tokenizer = CharTokenizer.from_chars("ba")
    tokenizer.save_pretrained(tmp_path)
    loaded = CharTokenizer.from_pretrained(tmp_path)
    assert loaded == tokenizer and (loaded.pad_id, loaded.bos_id, loaded.eos_id, loaded.unk_id) == (0, 1, 2, 3)
    assert CharTokenizer.from_text("ab").pad_id is None and CharTokenizer.from_text("ab") != tokenizer
