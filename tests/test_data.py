"""Tests of minigen.data: built-in tasks and their vocabularies, batching and metrics."""
import datetime
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.data import (DATE_FORMATS, IGNORE_INDEX, TASKS, Seq2SeqBatches, character_error_rate,
                          edit_distance, exact_match, format_date, load_task, pad_batch, random_text_batch,
                          split_train_val, token_accuracy)
from minigen.data.dates import CASE_STYLES, ordinal
from minigen.models.seq2seq import vocab_from_dict, vocab_to_dict
from minigen.tokenizers import CharTokenizer

Vocab = CharTokenizer.from_chars  # the vocabulary of one side of a Seq2Seq task

SMALL = dict(n_train=300, n_valid=50, n_test=50)
WEEKDAY_NAMES = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def sakamoto_weekday(year, month, day):
    """Weekday (Monday=0) by Sakamoto's method, independent of datetime."""
    offsets = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4]
    if month < 3:
        year -= 1
    sunday_based = (year + year // 4 - year // 100 + year // 400 + offsets[month - 1] + day) % 7
    return (sunday_based - 1) % 7


# ---------------------------------------------------------------- tasks

@pytest.mark.parametrize("name", TASKS)
def test_tasks_are_deterministic_by_seed(name):
    a, b = load_task(name, seed=3, **SMALL), load_task(name, seed=3, **SMALL)
    assert (a.train, a.valid, a.test) == (b.train, b.valid, b.test)
    assert a.src_vocab == b.src_vocab and a.tgt_vocab == b.tgt_vocab
    assert load_task(name, seed=4, **SMALL).train != a.train


@pytest.mark.parametrize("name", TASKS)
def test_splits_have_requested_sizes_and_disjoint_sources(name):
    data = load_task(name, **SMALL)
    assert data.name == name
    assert (len(data.train), len(data.valid), len(data.test)) == (300, 50, 50)
    sources = [set(s for s, _ in split) for split in (data.train, data.valid, data.test)]
    assert sum(map(len, sources)) == 400  # distinct inside each split and across splits
    for split in (data.train, data.valid, data.test):
        for source, target in split:
            data.src_vocab.encode(source)
            data.tgt_vocab.encode(target)


def test_test_split_does_not_depend_on_train_size():
    small = load_task("reverse", n_train=10, n_valid=5, n_test=20, seed=1)
    large = load_task("reverse", n_train=500, n_valid=5, n_test=20, seed=1)
    assert small.test == large.test and small.valid == large.valid


def test_default_dates_sizes():
    data = load_task("dates")
    assert (len(data.train), len(data.valid), len(data.test)) == (20000, 1000, 1000)


def test_reverse_sort_addition_targets():
    for source, target in load_task("reverse", **SMALL).train:
        assert target == source[::-1]
    for source, target in load_task("sort", **SMALL).train:
        assert target == "".join(sorted(source))
    for source, target in load_task("addition", **SMALL).train:
        a, b = source.split("+")
        assert int(target) == int(a) + int(b)


def test_length_options():
    for name in ("reverse", "sort"):
        data = load_task(name, min_len=5, max_len=7, **SMALL)
        lengths = {len(s) for split in (data.train, data.valid, data.test) for s, _ in split}
        assert lengths == {5, 6, 7}
    data = load_task("addition", min_len=3, max_len=25, **SMALL)
    operands = [x for s, _ in data.train for x in s.split("+")]
    assert all(3 <= len(x) <= 25 and x[0] != "0" for x in operands)
    assert max(len(x) for x in operands) > 19  # longer than an int64 holds
    assert load_task("addition", min_len=1, max_len=1, n_train=5, n_valid=0, n_test=0).train[0][0][1] == "+"


def test_vocab_holds_characters_not_drawn():
    data = load_task("dates", n_train=5, n_valid=1, n_test=1)
    for name in ("September", "SATURDAY", "feb", "thu"):
        data.src_vocab.encode(name)
    assert set(data.tgt_vocab.chars) == set("0123456789-")
    reverse = load_task("reverse", n_train=3, n_valid=0, n_test=0)
    assert reverse.src_vocab.chars == "abcdefghijklmnopqrstuvwxyz"


def test_task_errors():
    with pytest.raises(ValueError, match=r"unknown task 'dat'.*'dates'.*'reverse'.*'sort'.*'addition'"):
        load_task("dat")
    with pytest.raises(TypeError, match="max_length"):
        load_task("reverse", max_length=3)
    with pytest.raises(ValueError, match="min_len must be <= max_len"):
        load_task("sort", min_len=4, max_len=2)
    with pytest.raises(ValueError, match="n_train"):
        load_task("sort", n_train=-1)
    with pytest.raises(ValueError, match="only 26 distinct sources"):
        load_task("reverse", min_len=1, max_len=1, n_train=30, n_valid=0, n_test=0)
    with pytest.raises(ValueError, match="{Day}"):
        load_task("dates", formats=["{Day} {Month}"])
    with pytest.raises(TypeError, match="single str"):
        load_task("dates", formats="{Month} {d}")


# ---------------------------------------------------------------- dates

MARCH_3_2021 = datetime.date(2021, 3, 3)


@pytest.mark.parametrize("template, expected", [
    ("the {dth} of {Month}, {yyyy}", "the 3rd of March, 2021"),
    ("{mm}/{dd}/{yy}", "03/03/21"),
    ("{m}/{d}/{yyyy}", "3/3/2021"),
    ("{Weekday} {Month} {d} {yyyy}", "Wednesday March 3 2021"),
    ("{Month} {d}, {yyyy}", "March 3, 2021"),
    ("{d} {Month} {yyyy}", "3 March 2021"),
    ("{Mon} {d} {yyyy}", "Mar 3 2021"),
    ("{yyyy}.{mm}.{dd}", "2021.03.03"),
    ("{dth} {Month} {yy}", "3rd March 21"),
    ("{Wkd}, {d} {Mon} {yyyy}", "Wed, 3 Mar 2021"),
    ("{Month} {dth} {yyyy}", "March 3rd 2021"),
])
def test_hand_checked_formats(template, expected):
    assert template in DATE_FORMATS
    assert format_date(MARCH_3_2021, template) == expected


def test_format_inventory_and_case_variants():
    assert len(DATE_FORMATS) >= 20 and len(set(DATE_FORMATS)) == len(DATE_FORMATS)
    assert format_date(MARCH_3_2021, "{Wkd}, {d} {Mon} {yyyy}").lower() == "wed, 3 mar 2021"
    assert format_date(MARCH_3_2021, "{Month} {dth} {yyyy}").upper() == "MARCH 3RD 2021"
    # American month-first order and the 1950-2049 window for two-digit years.
    assert format_date(datetime.date(1950, 1, 2), "{mm}/{dd}/{yy}") == "01/02/50"
    assert format_date(datetime.date(2049, 12, 31), "{m}/{d}/{yy}") == "12/31/49"
    assert format_date(datetime.date(2000, 1, 1), "{Weekday}") == "Saturday"
    assert format_date(datetime.date(1969, 7, 20), "{Wkd}") == "Sun"


def test_ordinals():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 30, 31)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "30th", "31st"]


def test_dates_sources_describe_their_iso_targets():
    data = load_task("dates", n_train=2000, n_valid=100, n_test=100, seed=5)
    cases, used = set(), set()
    for source, target in data.train + data.valid + data.test:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", target)
        date = datetime.date.fromisoformat(target)
        assert datetime.date(1950, 1, 1) <= date <= datetime.date(2049, 12, 31)
        matches = {f for f in DATE_FORMATS for style in CASE_STYLES
                   if style(format_date(date, f)) == source}
        assert matches, (source, target)
        used.update(matches)
        if source.upper() != source.lower():
            cases.add("upper" if source.isupper() else "lower" if source.islower() else "mixed")
        words = re.findall(r"[a-z]+", source.lower())
        for word in words:
            for i, name in enumerate(WEEKDAY_NAMES):
                if word in (name, name[:3]):
                    assert i == sakamoto_weekday(date.year, date.month, date.day), (source, target)
    assert used == set(DATE_FORMATS)
    assert cases == {"upper", "lower", "mixed"}


def test_dates_options():
    data = load_task("dates", formats=["{Month} {d}, {yyyy}"], mixed_case=False, **SMALL)
    assert all(re.fullmatch(r"[A-Z][a-z]+ \d{1,2}, \d{4}", s) for s, _ in data.train)
    assert {c for c in data.src_vocab.chars if c.isupper()} == set("JFMASOND")


# ---------------------------------------------------------------- the Seq2Seq vocabulary

def test_vocab_ids_and_special_handling():
    vocab = Vocab("cab")
    itos = [vocab.id_to_token(i) for i in range(len(vocab))]
    assert len(vocab) == 7 and itos == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "b", "c"]
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab == Vocab(["b", "a", "c", "a"]) and vocab.chars == "abc"
    assert vocab.encode("cab") == [6, 4, 5]
    assert vocab.decode([1, 6, 4, 2, 5, 0], skip_special_tokens=True) == "cab"
    assert vocab.decode(np.array([1, 6, 3, 2, 0]), skip_special_tokens=True) == "c"
    assert vocab.decode([1, 6, 3, 2, 0]) == "<bos>c<unk><eos><pad>"
    assert vocab.encode("a?b", unk="replace") == [4, 3, 5] == vocab.encode("a?b")
    with pytest.raises(ValueError, match=r"'\?' .* at position 1"):
        vocab.encode("a?b", unk="error")
    with pytest.raises(IndexError, match="7"):
        vocab.decode([4, 7])
    with pytest.raises(ValueError, match="unk"):
        vocab.encode("a", unk="skip")
    with pytest.raises(ValueError, match="single characters"):
        Vocab(["ab"])
    with pytest.raises(ValueError, match="also special"):
        Vocab("a_", specials=("_", "^", "$", "?"))


@settings(max_examples=30)
@given(st.text(alphabet="abcxyz ,.", max_size=30))
def test_vocab_encode_decode_round_trip(text):
    vocab = Vocab("xyzabc ,.")
    ids = [vocab.bos_id] + vocab.encode(text, unk="error") + [vocab.eos_id]
    assert vocab.decode(ids, skip_special_tokens=True) == text


def test_vocab_dict_round_trip_through_json():
    vocab = load_task("dates", n_train=1, n_valid=0, n_test=0).src_vocab
    restored = vocab_from_dict(json.loads(json.dumps(vocab_to_dict(vocab))))
    assert restored == vocab and restored.get_vocab() == vocab.get_vocab()
    custom = Vocab("ab", specials=("P", "B", "E", "U"))
    assert vocab_from_dict(vocab_to_dict(custom)).decode([1, 4, 2], skip_special_tokens=True) == "a"


@pytest.mark.parametrize("bad", [
    [], {"chars": "ab"}, {"chars": "ab", "specials": ["<pad>", "<bos>", "<eos>", "<unk>"], "x": 1},
    {"chars": ["a", "b"], "specials": ["<pad>", "<bos>", "<eos>", "<unk>"]},
    {"chars": "ba", "specials": ["<pad>", "<bos>", "<eos>", "<unk>"]},
    {"chars": "ab", "specials": "<pad>"}, {"chars": "ab", "specials": ["<pad>", "<bos>"]},
])
def test_vocab_from_dict_rejects_bad_dicts(bad):
    with pytest.raises(ValueError):
        vocab_from_dict(bad)


# ---------------------------------------------------------------- batching

def test_pad_batch():
    ids, lengths = pad_batch([[5, 6, 7], [8], []], pad_id=0)
    assert ids.dtype == np.int64 and lengths.dtype == np.int64
    np.testing.assert_array_equal(ids, [[5, 6, 7], [8, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(lengths, [3, 1, 0])
    with pytest.raises(ValueError, match="empty"):
        pad_batch([], 0)
    with pytest.raises(TypeError, match="integer"):
        pad_batch([[1.5]], 0)


def test_seq2seq_batches_layout():
    src_vocab, tgt_vocab = Vocab("abc"), Vocab("xy")
    pairs = [("abc", "x"), ("a", "xyy"), ("bb", "yx")]
    batches = Seq2SeqBatches(pairs, src_vocab, tgt_vocab, batch_size=3, shuffle=False)
    assert len(batches) == 1
    (batch,) = list(batches)
    np.testing.assert_array_equal(batch["src"], [[4, 5, 6], [4, 0, 0], [5, 5, 0]])
    np.testing.assert_array_equal(batch["src_lengths"], [3, 1, 2])
    np.testing.assert_array_equal(batch["tgt_in"], [[1, 4, 0, 0], [1, 4, 5, 5], [1, 5, 4, 0]])
    np.testing.assert_array_equal(batch["tgt_out"], [[4, 2, -100, -100], [4, 5, 5, 2], [5, 4, 2, -100]])
    np.testing.assert_array_equal(batch["tgt_lengths"], [2, 4, 3])
    assert IGNORE_INDEX == -100 and all(v.dtype == np.int64 for v in batch.values())
    with pytest.raises(ValueError, match="'q' .*at position 0"):
        Seq2SeqBatches([("q", "x")], src_vocab, tgt_vocab)


@pytest.mark.parametrize("bucket", [False, True])
def test_seq2seq_batches_epochs_cover_data_and_follow_seed(bucket):
    data = load_task("reverse", n_train=1000, n_valid=0, n_test=0, min_len=1, max_len=20)
    vocab = data.src_vocab

    def two_epochs(seed):
        batches = Seq2SeqBatches(data.train, vocab, vocab, batch_size=16, seed=seed, bucket=bucket)
        return [[[vocab.decode(row, skip_special_tokens=True) for row in b["src"]] for b in batches] for _ in range(2)]

    first, second = two_epochs(0)
    assert sorted(s for b in first for s in b) == sorted(s for s, _ in data.train)
    assert len(first) == 63 and first != second  # reshuffled every epoch
    assert two_epochs(0) == [first, second] and two_epochs(1)[0] != first


def test_bucketing_reduces_padding():
    data = load_task("reverse", n_train=2000, n_valid=0, n_test=0, min_len=1, max_len=30)

    def padding(bucket):
        batches = Seq2SeqBatches(data.train, data.src_vocab, data.tgt_vocab, batch_size=32, bucket=bucket)
        return sum(int((b["src"] == 0).sum()) for b in batches)

    assert padding(True) < padding(False) / 3


def test_drop_last():
    pairs = [("a", "x")] * 10
    batches = Seq2SeqBatches(pairs, Vocab("a"), Vocab("x"), batch_size=4, drop_last=True)
    assert len(batches) == 2 and [len(b["src"]) for b in batches] == [4, 4]
    assert len(Seq2SeqBatches(pairs, Vocab("a"), Vocab("x"), batch_size=4)) == 3


def test_forever_runs_epoch_after_epoch():
    batches = Seq2SeqBatches([("a", "x")] * 5, Vocab("a"), Vocab("x"), batch_size=2)
    stream = batches.forever()
    assert [len(next(stream)["src"]) for _ in range(7)] == [2, 2, 1, 2, 2, 1, 2]


def test_random_text_batch_and_split():
    data = np.arange(100, dtype=np.uint16)
    rng = np.random.default_rng(0)
    x, y = random_text_batch(data, block_size=8, batch_size=5, rng=rng)
    assert x.shape == y.shape == (5, 8) and x.dtype == np.int64
    np.testing.assert_array_equal(y, x + 1)
    np.testing.assert_array_equal(x, x[:, :1] + np.arange(8))
    # With one token more than block_size, the only window starts at 0 and y ends at the last token.
    x, y = random_text_batch(np.arange(10), block_size=9, batch_size=50, rng=rng)
    assert set(x[:, 0].tolist()) == {0} and set(y[:, -1].tolist()) == {9}
    with pytest.raises(ValueError, match="10 tokens.*block_size is 10"):
        random_text_batch(np.arange(10), 10, 2, rng)
    train, val = split_train_val(np.arange(1000))
    np.testing.assert_array_equal(train, np.arange(900))
    np.testing.assert_array_equal(val, np.arange(900, 1000))
    assert len(split_train_val(list(range(10)), val_fraction=0.3)[1]) == 3
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val(np.arange(10), val_fraction=1.0)


# ---------------------------------------------------------------- metrics

def test_metrics_on_hand_examples():
    preds, refs = ["2021-03-03", "2021-03-04", "abc"], ["2021-03-03", "2021-03-03", "abcd"]
    assert exact_match(preds, refs) == pytest.approx(1 / 3)
    assert token_accuracy(preds, refs) == pytest.approx((10 + 9 + 3) / 24)
    assert character_error_rate(preds, refs) == pytest.approx(2 / 24)
    assert token_accuracy(["abcdef"], ["abc"]) == 1.0
    assert character_error_rate(["abcdef"], ["abc"]) == 1.0
    assert edit_distance("kitten", "sitting") == 3
    assert exact_match([[1, 2], np.array([3])], [(1, 2), [4]]) == 0.5
    with pytest.raises(ValueError, match="2 and 1"):
        exact_match(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="same length"):
        character_error_rate(["a"], ["a", "b"])
    with pytest.raises(TypeError, match="single str"):
        token_accuracy("abc", "abc")


texts = st.text(alphabet="abcd", max_size=8)


@settings(max_examples=40)
@given(st.lists(st.tuples(texts, texts.filter(bool)), min_size=1, max_size=5))
def test_metric_properties(pairs):
    preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
    assert (character_error_rate(preds, refs) == 0) == (preds == refs)
    assert 0 <= exact_match(preds, refs) <= 1
    assert (exact_match(preds, refs) == 1) == (preds == refs)
    assert 0 <= token_accuracy(preds, refs) <= 1
    assert character_error_rate(refs, refs) == 0 and token_accuracy(refs, refs) == 1


@settings(max_examples=40)
@given(texts, texts)
def test_edit_distance_properties(a, b):
    d = edit_distance(a, b)
    assert d == edit_distance(b, a)
    assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))
    assert (d == 0) == (a == b)
