"""Corpus metrics for generated sequences: exact match, token accuracy, character error rate.

Predictions and references are strings or sequences of token ids, compared element by element.
"""


def _as_tuples(preds, refs):
    # A bare string would be taken as a list of one-character predictions: refuse it.
    for name, value in (("preds", preds), ("refs", refs)):
        if isinstance(value, str):
            raise TypeError(f"{name} must be a list of sequences, got a single str {value!r}")
    preds, refs = list(preds), list(refs)
    if len(preds) != len(refs):
        raise ValueError(f"preds and refs must have the same length, got {len(preds)} and {len(refs)}")
    if not refs:
        raise ValueError("preds and refs are empty; a metric needs at least one pair")
    return [tuple(p) for p in preds], [tuple(r) for r in refs]


def edit_distance(a, b):
    """Levenshtein distance: the fewest insertions, deletions and substitutions turning a into b."""
    if len(a) < len(b):
        a, b = b, a
    # One row of the dynamic-programming table over the shorter sequence.
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def exact_match(preds, refs):
    """Fraction of predictions equal to their reference."""
    preds, refs = _as_tuples(preds, refs)
    return sum(p == r for p, r in zip(preds, refs)) / len(refs)


def token_accuracy(preds, refs):
    """Fraction of reference positions where the prediction has the same token, over the corpus.

    Each prediction is compared position by position over its reference's length: missing
    positions count as wrong, extra predicted tokens are ignored.
    """
    preds, refs = _as_tuples(preds, refs)
    total = sum(len(r) for r in refs)
    if total == 0:
        raise ValueError("refs hold no tokens, so token accuracy is undefined")
    correct = sum(sum(x == y for x, y in zip(p, r)) for p, r in zip(preds, refs))
    return correct / total


def character_error_rate(preds, refs):
    """Corpus CER: the sum of edit distances divided by the sum of reference lengths."""
    preds, refs = _as_tuples(preds, refs)
    total = sum(len(r) for r in refs)
    if total == 0:
        raise ValueError("refs hold no characters, so the character error rate is undefined")
    return sum(edit_distance(p, r) for p, r in zip(preds, refs)) / total
