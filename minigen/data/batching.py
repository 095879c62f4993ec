"""Turning examples into padded int64 batches: pairs for Seq2Seq, a token stream for GPT."""
import numpy as np

from ..tokenizers.char import CharTokenizer

# Targets padded with this value are skipped by cross-entropy, as in PyTorch.
IGNORE_INDEX = -100


def pad_batch(seqs, pad_id):
    """Stack 1-D integer sequences into ``(ids, lengths)``: ids (B, T) int64 right-padded with
    ``pad_id`` to the longest length T, lengths (B,) int64."""
    if len(seqs) == 0:
        raise ValueError("seqs must hold at least one sequence, got an empty list")
    arrays = []
    for i, seq in enumerate(seqs):
        array = np.asarray(seq)
        if array.ndim != 1:
            raise ValueError(f"seqs[{i}] must be 1-D, got shape {array.shape}")
        if array.size and array.dtype.kind not in "iu":
            raise TypeError(f"seqs[{i}] must hold integer ids, got dtype {array.dtype}")
        arrays.append(array)
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    ids = np.full((len(arrays), int(lengths.max())), pad_id, dtype=np.int64)
    for row, array in zip(ids, arrays):
        row[:len(array)] = array
    return ids, lengths


class Seq2SeqBatches:
    """Batches of (source, target) string pairs for teacher-forced Seq2Seq training.

    Each pass over the object is one epoch and yields dicts of int64 arrays:
    ``src`` (B, S) padded with the source pad id, ``src_lengths`` (B,), ``tgt_in`` (B, T) = bos +
    target padded with the target pad id, ``tgt_out`` (B, T) = target + eos padded with
    ``IGNORE_INDEX`` (-100), and ``tgt_lengths`` (B,) = len(target) + 1.

    With ``shuffle`` the order is redrawn every epoch from a NumPy Generator seeded with ``seed``,
    so a run is reproducible. With ``bucket``, examples are sorted by length inside pools of
    ``POOL_BATCHES`` batches before they are cut into batches, which cuts padding while keeping
    the batches varied; the batch order is then shuffled.
    """

    POOL_BATCHES = 50

    def __init__(self, pairs, src_vocab, tgt_vocab, batch_size=32, shuffle=True, seed=0,
                 bucket=False, drop_last=False):
        if not isinstance(src_vocab, CharTokenizer) or not isinstance(tgt_vocab, CharTokenizer):
            raise TypeError(f"src_vocab and tgt_vocab must be CharTokenizer vocabularies, got "
                            f"{type(src_vocab).__name__} and {type(tgt_vocab).__name__}")
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if len(pairs) == 0:
            raise ValueError("pairs must hold at least one (source, target) pair, got none")
        self.src, self.tgt_in, self.tgt_out = [], [], []
        for i, pair in enumerate(pairs):
            if len(pair) != 2 or not all(isinstance(s, str) for s in pair):
                raise TypeError(f"pairs[{i}] must be a (source, target) pair of str, got {pair!r}")
            target = tgt_vocab.encode(pair[1], unk="error")
            self.src.append(src_vocab.encode(pair[0], unk="error"))
            self.tgt_in.append([tgt_vocab.bos_id] + target)
            self.tgt_out.append(target + [tgt_vocab.eos_id])
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.batch_size, self.shuffle = int(batch_size), shuffle
        self.bucket, self.drop_last = bucket, drop_last
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        n = len(self.src)
        return n // self.batch_size if self.drop_last else (n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        n = len(self.src)
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        if self.bucket:
            src_len = np.array([len(s) for s in self.src])
            tgt_len = np.array([len(t) for t in self.tgt_in])
            pool = self.POOL_BATCHES * self.batch_size
            chunks = [order[i:i + pool] for i in range(0, n, pool)]
            # lexsort is stable: ties keep the shuffled order, sorted by source then target length.
            order = np.concatenate([c[np.lexsort((tgt_len[c], src_len[c]))] for c in chunks])
        batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.bucket and self.shuffle:
            batches = [batches[i] for i in self.rng.permutation(len(batches))]
        for index in batches:
            yield self.collate(index)

    def forever(self):
        """Batches epoch after epoch (each one reshuffled), for a training loop that its budget stops."""
        while True:
            yield from self

    def collate(self, index):
        """The batch dict of the examples at positions ``index``."""
        src, src_lengths = pad_batch([self.src[i] for i in index], self.src_vocab.pad_id)
        tgt_in, tgt_lengths = pad_batch([self.tgt_in[i] for i in index], self.tgt_vocab.pad_id)
        tgt_out, _ = pad_batch([self.tgt_out[i] for i in index], IGNORE_INDEX)
        return {"src": src, "src_lengths": src_lengths, "tgt_in": tgt_in, "tgt_out": tgt_out,
                "tgt_lengths": tgt_lengths}


def random_text_batch(data, block_size, batch_size, rng):
    """nanoGPT's get_batch: ``batch_size`` random windows of a 1-D token array.

    Returns ``(x, y)`` int64 (batch_size, block_size) with ``x = data[i:i+block_size]`` and
    ``y = data[i+1:i+1+block_size]`` (the next tokens) for starts i drawn with ``rng``.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    data = np.asarray(data)
    if data.ndim != 1:
        raise ValueError(f"data must be a 1-D array of token ids, got shape {data.shape}")
    for name, value in (("block_size", block_size), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if len(data) <= block_size:
        raise ValueError(f"data has {len(data)} tokens but block_size is {block_size}: "
                         f"need more than block_size tokens to make an (x, y) window")
    starts = rng.integers(len(data) - block_size, size=batch_size)
    window = starts[:, None] + np.arange(block_size)
    return data[window].astype(np.int64), data[window + 1].astype(np.int64)


def split_train_val(ids, val_fraction=0.1):
    """Split a token array in order: the first ``1 - val_fraction`` for training, the rest for
    validation (views of ``np.asarray(ids)``, no shuffling, as nanoGPT does)."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {ids.shape}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n_train = int(len(ids) * (1 - val_fraction))
    return ids[:n_train], ids[n_train:]
