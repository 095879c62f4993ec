"""min_length and min_new_tokens of generate: eos is banned until the sequence is long enough, as in Hugging Face."""
import numpy as np
import pytest

from minigen.generation import generate


class EosFirstModel:
    """A decoder-only toy whose best next token is always eos (id 0), then 1, then 2."""
    vocab = 4

    def start_decoding(self, input_ids, attention_mask):
        return None, input_ids.copy()

    def decode_step(self, new_tokens, state):
        return np.tile(np.array([3.0, 2.0, 1.0, 0.0]), (len(new_tokens), 1)), state

    def reorder_state(self, state, index):
        return state


PROMPT = np.array([[2, 3, 1]])


@pytest.mark.parametrize("options", [dict(), dict(num_beams=3), dict(do_sample=True, top_k=2, seed=0)])
def test_eos_is_banned_until_min_new_tokens(options):
    out = generate(EosFirstModel(), PROMPT, max_new_tokens=8, min_new_tokens=4, eos_token_id=0, **options)
    assert out.shape[1] >= 3 + 4 and 0 not in out[0, 3:7]
    if not options.get("do_sample"):
        assert out[0, 3:].tolist() == [1, 1, 1, 1, 0]


def test_min_length_counts_the_prompt_and_the_larger_minimum_wins():
    model = EosFirstModel()
    assert generate(model, PROMPT, max_length=10, min_length=5, eos_token_id=0).tolist() == [[2, 3, 1, 1, 1, 0]]
    out = generate(model, PROMPT, max_length=10, min_length=5, min_new_tokens=4, eos_token_id=0)
    assert out.tolist() == [[2, 3, 1, 1, 1, 1, 1, 0]]
    # without a minimum, eos comes first
    assert generate(model, PROMPT, max_new_tokens=5, eos_token_id=0).tolist() == [[2, 3, 1, 0]]


@pytest.mark.parametrize("kwargs, words", [
    (dict(min_length=-1), ["min_length", "-1", ">= 0"]),
    (dict(min_length=2.5), ["min_length", "2.5", "integer"]),
    (dict(min_new_tokens=True), ["min_new_tokens", "True", "integer"]),
    (dict(min_new_tokens=6, max_new_tokens=5), ["min_new_tokens", "6", "max_new_tokens", "5"]),
    (dict(min_length=30, max_length=20, max_new_tokens=None), ["min_length", "30", "max_length", "20"]),
])
def test_bad_minimums_name_the_argument_and_the_value(kwargs, words):
    with pytest.raises(ValueError) as info:
        generate(EosFirstModel(), PROMPT, eos_token_id=0, **{"max_new_tokens": 5, **kwargs})
    assert all(w in str(info.value) for w in words), str(info.value)
