"""GPT: logits against an independent NumPy GPT-2, the KV cache, generation, errors, and Hugging Face parity.

The checkpoint directories here are written by hand (safetensors bytes, GPT-2 names, Conv1D (in, out)
layouts, a Hugging Face config.json), so loading is tested against the format, not against minigen's writer.
"""
import json
import os
import struct

import numpy as np
import pytest

import minigen
from minigen.models.gpt import GPT, GPTConfig
from minigen.optim import AdamW, adamw_param_groups

VOCAB, BLOCK, LAYERS, HEADS, WIDTH = 37, 24, 2, 4, 16


# ----- a GPT-2 directory written by hand, and GPT-2's forward pass in NumPy ------------------------
def random_gpt2_weights(rng, vocab=VOCAB, block=BLOCK, layers=LAYERS, width=WIDTH):
    """GPT-2 tensors under Hugging Face's names, Conv1D weights stored (in, out)."""
    w = {"wte.weight": rng.normal(0, 0.3, (vocab, width)), "wpe.weight": rng.normal(0, 0.1, (block, width)),
         "ln_f.weight": rng.normal(1, 0.1, width), "ln_f.bias": rng.normal(0, 0.1, width)}
    for i in range(layers):
        shapes = {"ln_1.weight": width, "ln_1.bias": width, "ln_2.weight": width, "ln_2.bias": width,
                  "attn.c_attn.weight": (width, 3 * width), "attn.c_attn.bias": 3 * width,
                  "attn.c_proj.weight": (width, width), "attn.c_proj.bias": width,
                  "mlp.c_fc.weight": (width, 4 * width), "mlp.c_fc.bias": 4 * width,
                  "mlp.c_proj.weight": (4 * width, width), "mlp.c_proj.bias": width}
        for name, shape in shapes.items():
            mean = 1.0 if name.startswith("ln") and name.endswith("weight") else 0.0
            w[f"h.{i}.{name}"] = rng.normal(mean, 0.3, shape)
    return {k: v.astype(np.float32) for k, v in w.items()}


def write_safetensors(path, tensors):
    """The safetensors format: 8-byte little-endian header size, JSON header, raw little-endian data."""
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def write_gpt2_dir(path, weights, prefix="transformer.", vocab=VOCAB, block=BLOCK, layers=LAYERS, heads=HEADS,
                   width=WIDTH, extra=None):
    os.makedirs(path, exist_ok=True)
    write_safetensors(os.path.join(path, "model.safetensors"), {prefix + k: v for k, v in weights.items()})
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab, "n_positions": block,
              "n_ctx": block, "n_embd": width, "n_layer": layers, "n_head": heads, "n_inner": None,
              "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.1,
              "embd_pdrop": 0.1, "attn_pdrop": 0.1, "bos_token_id": vocab - 1, "eos_token_id": vocab - 1,
              **(extra or {})}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return path


def reference_logits(w, ids, heads=HEADS, eps=1e-5):
    """GPT-2's equations in float64: pre-LayerNorm blocks, causal softmax attention, tanh GELU, tied head."""
    w = {k: v.astype(np.float64) for k, v in w.items()}

    def layer_norm(x, g, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * g + b

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    T = ids.shape[1]
    x = w["wte.weight"][ids] + w["wpe.weight"][np.arange(T)]
    C = x.shape[-1]
    D = C // heads
    future = np.triu(np.ones((T, T), bool), 1)
    i = 0
    while f"h.{i}.ln_1.weight" in w:
        p = lambda name: w[f"h.{i}.{name}"]  # noqa: E731
        a = layer_norm(x, p("ln_1.weight"), p("ln_1.bias")) @ p("attn.c_attn.weight") + p("attn.c_attn.bias")
        q, k, v = (a[..., j * C:(j + 1) * C].reshape(*a.shape[:2], heads, D).transpose(0, 2, 1, 3) for j in range(3))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D)
        scores[..., future] = -np.inf
        att = np.exp(scores - scores.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = x + y @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        m = gelu(layer_norm(x, p("ln_2.weight"), p("ln_2.bias")) @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"))
        x = x + m @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
        i += 1
    return layer_norm(x, w["ln_f.weight"], w["ln_f.bias"]) @ w["wte.weight"].T


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    weights = random_gpt2_weights(np.random.default_rng(0))
    return write_gpt2_dir(str(tmp_path_factory.mktemp("gpt2")), weights), weights


@pytest.fixture(scope="module")
def model(gpt2_dir):
    return GPT.from_pretrained(gpt2_dir[0]).eval()


def padded_batch(rng, lengths, vocab=VOCAB):
    """Left-padded prompts (pad id 0) and their attention mask."""
    width = max(lengths)
    ids = np.zeros((len(lengths), width), np.int64)
    mask = np.zeros((len(lengths), width), np.int64)
    for row, n in enumerate(lengths):
        ids[row, width - n:] = rng.integers(1, vocab, n)
        mask[row, width - n:] = 1
    return ids, mask


# ----- the forward pass ------------------------------------------------------------------------
def test_logits_match_numpy_gpt2(gpt2_dir, model):
    path, weights = gpt2_dir
    ids = np.random.default_rng(1).integers(0, VOCAB, (3, BLOCK))
    logits, loss = model(ids)
    assert loss is None and logits.shape == (3, BLOCK, VOCAB) and logits.dtype == np.float32
    np.testing.assert_allclose(logits.data, reference_logits(weights, ids), atol=2e-5, rtol=1e-5)
    model64 = GPT.from_pretrained(path, dtype=np.float64).eval()
    np.testing.assert_allclose(model64(ids)[0].data, reference_logits(weights, ids), atol=1e-10, rtol=1e-10)
    assert model.config.dropout == 0.1 and model.config.eos_token_id == VOCAB - 1


def test_loads_unprefixed_names_and_ignores_mask_buffers(tmp_path, gpt2_dir):
    """Old GPT-2 files name tensors without `transformer.` and store the causal mask as attn.bias."""
    _, weights = gpt2_dir
    extra = {f"h.{i}.attn.bias": np.tril(np.ones((1, 1, BLOCK, BLOCK), np.float32)) for i in range(LAYERS)}
    path = write_gpt2_dir(str(tmp_path), {**weights, **extra}, prefix="")
    ids = np.arange(10)[None] % VOCAB
    np.testing.assert_allclose(GPT.from_pretrained(path)(ids)[0].data, reference_logits(weights, ids), atol=2e-5)


@pytest.mark.parametrize("kwargs", [{}, {"bias": False}, {"tie_word_embeddings": False}])
def test_save_pretrained_round_trip(tmp_path, kwargs):
    minigen.manual_seed(5)
    gpt = GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=1, n_head=2, n_embd=8, **kwargs))
    gpt.save_pretrained(tmp_path)
    with open(tmp_path / "config.json") as f:
        config = json.load(f)
    assert config["model_type"] == "gpt2" and config["n_positions"] == BLOCK
    back = GPT.from_pretrained(tmp_path)
    assert back.config == gpt.config
    ids = np.arange(12)[None]
    np.testing.assert_array_equal(back(ids)[0].data, gpt(ids)[0].data)


def test_loss_ignores_minus_100():
    minigen.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=1, n_head=2, n_embd=8)).double()
    rng = np.random.default_rng(2)
    ids, targets = rng.integers(0, VOCAB, (2, 9)), rng.integers(0, VOCAB, (2, 9))
    targets[0, :4] = -100
    targets[1, 7] = -100
    logits, loss = gpt(ids, targets)
    z = logits.data
    logp = z - z.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    keep = targets != -100
    expected = -np.take_along_axis(logp, np.where(keep, targets, 0)[..., None], -1)[..., 0][keep].mean()
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert all(p.grad is not None for p in gpt.parameters())


def test_gradient_matches_finite_differences():
    minigen.manual_seed(1)
    gpt = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)).double()
    rng = np.random.default_rng(3)
    ids, targets = rng.integers(0, 11, (2, 6)), rng.integers(0, 11, (2, 6))
    gpt(ids, targets)[1].backward()
    for p in (gpt.transformer.h[0].attn.c_attn.weight, gpt.transformer.wte.weight, gpt.transformer.ln_f.bias):
        direction = rng.normal(size=p.shape)
        analytic = float((p.grad * direction).sum())
        base = p.data.copy()
        losses = []
        for sign in (1, -1):
            p.data = base + sign * 1e-6 * direction
            losses.append(gpt(ids, targets)[1].item())
        p.data = base
        assert analytic == pytest.approx((losses[0] - losses[1]) / 2e-6, rel=1e-5, abs=1e-8)


def test_tiny_gpt_overfits_tiny_text():
    text = "the cat sat on the mat. " * 4
    chars = sorted(set(text))
    data = np.array([chars.index(c) for c in text])
    minigen.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=len(chars), block_size=32, n_layer=2, n_head=2, n_embd=32))
    optimizer = AdamW(adamw_param_groups(gpt, 0.0), lr=1e-2)
    x, y = data[None, :32], data[None, 1:33]
    for _ in range(60):
        _, loss = gpt(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    out = gpt.generate(x[:, :8], max_length=32)
    assert "".join(chars[i] for i in out[0]) == text[:32]


# ----- generation ------------------------------------------------------------------------------
@pytest.mark.parametrize("num_beams", [1, 3])
def test_cached_generation_equals_uncached(model, num_beams):
    ids, mask = padded_batch(np.random.default_rng(4), [5, 2, 7])
    kw = dict(attention_mask=mask, max_length=BLOCK, num_beams=num_beams, num_return_sequences=num_beams)
    cached = model.generate(ids, **kw)
    np.testing.assert_array_equal(cached, model.generate(ids, use_cache=False, **kw))
    assert cached.shape == (3 * num_beams, BLOCK)


def test_cached_sampling_equals_uncached(model):
    ids = np.random.default_rng(5).integers(0, VOCAB, (2, 4))
    kw = dict(max_new_tokens=12, do_sample=True, top_k=10, top_p=0.9, temperature=0.8, num_return_sequences=3, seed=7)
    first = model.generate(ids, **kw)
    np.testing.assert_array_equal(first, model.generate(ids, use_cache=False, **kw))
    np.testing.assert_array_equal(first, model.generate(ids, **kw))
    assert first.shape == (6, 16)


def test_one_beam_equals_greedy(model):
    ids, mask = padded_batch(np.random.default_rng(6), [3, 6])
    greedy = model.generate(ids, attention_mask=mask, max_length=20)
    np.testing.assert_array_equal(model.generate(ids, attention_mask=mask, max_length=20, num_beams=1), greedy)
    # the greedy tokens are the argmax of the full forward pass at every step
    ids_alone = greedy[1:2]
    logits = model(ids_alone[:, :-1])[0].data
    np.testing.assert_array_equal(logits[0, 5:].argmax(-1), ids_alone[0, 6:])


@pytest.mark.parametrize("num_beams", [1, 4])
def test_left_padded_batch_equals_prompts_alone(model, num_beams):
    lengths = [6, 1, 4, 6]
    ids, mask = padded_batch(np.random.default_rng(7), lengths)
    batch = model.generate(ids, attention_mask=mask, max_new_tokens=10, num_beams=num_beams)
    for row, n in enumerate(lengths):
        alone = model.generate(ids[row:row + 1, 6 - n:], max_new_tokens=10, num_beams=num_beams)
        np.testing.assert_array_equal(batch[row, 6 - n:], alone[0])


@pytest.mark.parametrize("use_cache", [True, False])
def test_crop_context_conditions_on_the_last_block_size_tokens(model, use_cache):
    """nanoGPT's sampling loop, greedy: the next token is the argmax over the last block_size tokens."""
    prompt = np.random.default_rng(10).integers(0, VOCAB, (2, BLOCK + 3))
    out = model.generate(prompt, max_length=BLOCK + 12, crop_context=True, use_cache=use_cache)
    seq = prompt
    while seq.shape[1] < BLOCK + 12:
        seq = np.concatenate([seq, model(seq[:, -BLOCK:])[0].data[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, seq)
    short = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(model.generate(short, max_length=BLOCK + 4, crop_context=True, num_beams=2),
                                  model.generate(short, max_length=BLOCK + 4, crop_context=True, num_beams=2,
                                                 use_cache=False))


def test_eos_from_config_stops_generation(gpt2_dir):
    gpt = GPT.from_pretrained(gpt2_dir[0])
    prompt = np.array([[1, 2, 3]])
    free = gpt.generate(prompt, max_length=BLOCK, eos_token_id=None)
    assert free.shape == (1, BLOCK)
    gpt.config.eos_token_id = int(free[0, 3])
    np.testing.assert_array_equal(gpt.generate(prompt, max_length=BLOCK), free[:, :4])


# ----- errors ----------------------------------------------------------------------------------
def test_prompt_longer_than_block_size(model):
    with pytest.raises(ValueError, match="block_size"):
        model.generate(np.zeros((1, BLOCK + 1), np.int64), max_length=BLOCK + 5)
    with pytest.raises(ValueError, match="block_size"):
        model(np.zeros((1, BLOCK + 1), np.int64))
    with pytest.raises(ValueError, match="block_size"):
        model.generate(np.zeros((1, 4), np.int64), max_length=BLOCK + 2)
    # the last token needs logits at length BLOCK only
    assert model.generate(np.zeros((1, 4), np.int64), max_length=BLOCK + 1).shape == (1, BLOCK + 1)


@pytest.mark.parametrize("ids, match", [(np.array([[1, VOCAB]]), "input_ids.*outside"),
                                        (np.array([[-1, 2]]), "input_ids"),
                                        (np.array([[1.0, 2.0]]), "input_ids.*(integer|dtype)")])
def test_bad_input_ids(model, ids, match):
    with pytest.raises(ValueError, match=match):
        model(ids)
    with pytest.raises(ValueError, match=match):
        model.generate(ids, max_length=10)


def test_bad_targets(model):
    ids = np.array([[1, 2, 3]])
    for targets, match in ((np.array([[1, 2, VOCAB]]), "targets.*outside"), (np.array([[1, 2]]), "targets.*shape"),
                           (np.array([[1.0, 2.0, 3.0]]), "targets.*integer")):
        with pytest.raises(ValueError, match=match):
            model(ids, targets)


@pytest.mark.parametrize("kwargs, match", [
    ({"do_sample": True, "temperature": 0.0}, "temperature"),
    ({"do_sample": True, "temperature": -1.0}, "temperature"),
    ({"do_sample": True, "top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"num_return_sequences": 3}, "num_return_sequences"),
    ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences"),
    ({"max_length": 3}, "max_length"),
    ({"attention_mask": np.ones((1, 2))}, "attention_mask"),
    ({"attention_mask": np.array([[1, 1, 0]])}, "padded on the left"),
])
def test_impossible_generation_arguments(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        model.generate(np.array([[1, 2, 3]]), **{"max_length": 10, **kwargs})


def test_config_and_directory_errors(tmp_path, gpt2_dir):
    with pytest.raises(ValueError, match="n_head"):
        GPTConfig(n_embd=10, n_head=4)
    with pytest.raises(ValueError, match="vocab_size"):
        GPTConfig(vocab_size=0)
    with pytest.raises(FileNotFoundError, match="config.json"):
        GPT.from_pretrained(tmp_path)
    path = write_gpt2_dir(str(tmp_path / "bad"), gpt2_dir[1], extra={"n_layer": "two"})
    with pytest.raises(ValueError, match="n_layer"):
        GPT.from_pretrained(path)
    path = write_gpt2_dir(str(tmp_path / "short"), gpt2_dir[1], extra={"n_layer": 3})
    with pytest.raises(ValueError, match="missing keys"):
        GPT.from_pretrained(path)


def test_adamw_param_groups_decay_only_matrices():
    gpt = GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=2, n_embd=8))
    gpt.transformer.h[0].requires_grad_(False)
    decay, no_decay = adamw_param_groups(gpt, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) == 2 + 4 and len(no_decay["params"]) == 8 + 2  # block 1: matrices + biases; ln_f


# ----- Hugging Face transformers (optional) ----------------------------------------------------
@pytest.fixture(scope="module")
def hf():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=97, n_positions=48, n_embd=32, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return torch, transformers, transformers.GPT2LMHeadModel(config).eval()


def test_transformers_checkpoint_loads_with_same_logits_and_generations(tmp_path, hf):
    torch, _, hf_model = hf
    hf_model.save_pretrained(tmp_path)
    gpt = GPT.from_pretrained(tmp_path)
    ids, mask = padded_batch(np.random.default_rng(8), [7, 3, 5], vocab=97)
    with torch.no_grad():
        expected = hf_model(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(gpt(ids)[0].data, expected, atol=1e-5)
    for num_beams in (1, 3):
        with torch.no_grad():
            ref = hf_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_length=30,
                                    num_beams=num_beams, do_sample=False, pad_token_id=0).numpy()
        np.testing.assert_array_equal(gpt.generate(ids, attention_mask=mask, max_length=30, num_beams=num_beams), ref)


@pytest.mark.parametrize("kwargs", [{}, {"bias": False}, {"tie_word_embeddings": False}])
def test_minigen_checkpoint_loads_in_transformers(tmp_path, hf, kwargs):
    torch, transformers, _ = hf
    minigen.manual_seed(2)
    gpt = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16, **kwargs))
    gpt.save_pretrained(tmp_path)
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = np.random.default_rng(9).integers(0, 50, (2, 11))
    with torch.no_grad():
        np.testing.assert_allclose(hf_model(torch.tensor(ids)).logits.numpy(), gpt(ids)[0].data, atol=1e-5)


def test_bpe_files_read_by_transformers_gpt2_tokenizer(tmp_path, hf):
    """A BPE trained by minigen, saved as GPT-2's vocab.json + merges.txt: transformers' GPT2Tokenizer
    encodes and decodes as minigen does, and a GPT + tokenizer directory generates the same text in both."""
    torch, transformers, _ = hf
    from minigen.tokenizers import ByteLevelBPETokenizer, load_tokenizer
    text = "Once upon a time there was a tiny model. It lived once upon a hill, a long time ago. " * 3
    tokenizer = ByteLevelBPETokenizer.train([text], vocab_size=300, special_tokens=["<|endoftext|>"])
    minigen.manual_seed(3)
    gpt = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=16,
                        eos_token_id=tokenizer.token_to_id("<|endoftext|>")))
    gpt.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    hf_tokenizer = transformers.GPT2Tokenizer.from_pretrained(tmp_path)
    for sample in ("Once upon a time", " there was a hill!", "ümlaut tiny  models<|endoftext|>x"):
        assert hf_tokenizer.encode(sample) == load_tokenizer(str(tmp_path)).encode(sample)
    prompt = np.array([tokenizer.encode("Once upon a time")])
    ours = gpt.generate(prompt, max_length=30)
    with torch.no_grad():
        theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).generate(
            torch.tensor(prompt), attention_mask=torch.ones(prompt.shape, dtype=torch.long), max_length=30,
            do_sample=False).numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert hf_tokenizer.decode(theirs[0]) == tokenizer.decode(ours[0].tolist())


# ----- sequence classification and fill-in-the-middle ------------------------------------------------
def test_sequence_classification_reads_the_last_real_token(gpt2_dir, model):
    from minigen.models.gpt_tasks import GPTForSequenceClassification
    clf = GPTForSequenceClassification.from_pretrained(gpt2_dir[0], num_labels=3, pad_token_id=0)
    for name, value in clf.transformer.state_dict().items():
        np.testing.assert_array_equal(value, model.transformer.state_dict()[name])
    ids = np.array([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]])
    mask = (np.arange(5) < np.array([[5], [3]])).astype(np.int64)
    by_pad, _ = clf(ids)
    by_mask, _ = clf(ids, attention_mask=mask)
    alone, _ = clf(ids[1:, :3])
    np.testing.assert_allclose(by_pad.data, by_mask.data, atol=1e-6)
    np.testing.assert_allclose(by_pad.data[1], alone.data[0], atol=1e-5)
    h = model.transformer(ids[:1]).data[0, -1]
    np.testing.assert_allclose(by_pad.data[0], clf.score.weight.data @ h, atol=1e-5)
    clf.train()
    logits, loss = clf(ids, attention_mask=mask, labels=np.array([2, 0]))
    loss.backward()
    assert logits.shape == (2, 3) and clf.score.weight.grad is not None
    with pytest.raises(ValueError, match="labels"):
        clf(ids, labels=np.array([3, 0]))
    with pytest.raises(ValueError, match="num_labels"):
        GPTForSequenceClassification(model.config, 0)
    copied = GPTForSequenceClassification.from_gpt(model, 2).eval()
    np.testing.assert_array_equal(copied.transformer(ids).data, model.transformer(ids).data)


def test_sequence_classification_learns_a_label_written_at_the_first_position():
    # the label is read at the last token, so the body must learn to carry it there through attention
    from minigen.models.gpt_tasks import GPTForSequenceClassification
    minigen.manual_seed(0)
    clf = GPTForSequenceClassification(GPTConfig(vocab_size=8, block_size=16, n_layer=1, n_head=2, n_embd=16,
                                                 bias=False), num_labels=2).train()
    optimizer = AdamW(clf.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(150):
        ids = rng.integers(1, 8, (32, 12))
        _, loss = clf(ids, labels=(ids[:, 0] < 4).astype(np.int64))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ids = rng.integers(1, 8, (200, 12))
    assert (clf.eval()(ids)[0].data.argmax(-1) == (ids[:, 0] < 4)).mean() > 0.95


def test_fim_transform_is_prefix_suffix_middle():
    from minigen.models.gpt_tasks import fim_batch, fim_transform
    ids = np.arange(10, 30)
    rng = np.random.default_rng(0)
    assert fim_transform(ids, 1, 2, 3, rng, rate=0.0) is ids
    for _ in range(20):
        out = fim_transform(ids, 1, 2, 3, rng, rate=1.0)
        assert len(out) == len(ids) + 3 and out[0] == 1
        s, m = int(np.flatnonzero(out == 2)[0]), int(np.flatnonzero(out == 3)[0])
        prefix, suffix, middle = out[1:s], out[s + 1:m], out[m + 1:]
        np.testing.assert_array_equal(np.concatenate([prefix, middle, suffix]), ids)
    x = np.tile(np.arange(10, 26), (6, 1))
    fx, fy = fim_batch(x, x + 1, (1, 2, 3), np.random.default_rng(1), rate=0.5)
    assert fx.shape == x.shape and np.array_equal(fx[:, 1:], fy[:, :-1])
    moved = (fx != x).any(axis=1)
    assert 0 < moved.sum() < 6 and (fx[moved, 0] == 1).all()


def test_transformers_sequence_classification_parity(tmp_path, hf):
    torch, transformers, _ = hf
    from minigen.models.gpt_tasks import GPTForSequenceClassification
    config = transformers.GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=2, n_head=2, num_labels=2,
                                     pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf_clf = transformers.GPT2ForSequenceClassification(config).eval()
    hf_clf.save_pretrained(tmp_path)
    clf = GPTForSequenceClassification.from_pretrained(tmp_path, num_labels=2, pad_token_id=0)
    ids = np.array([[4, 9, 13, 0, 0], [7, 7, 8, 9, 1]])
    with torch.no_grad():
        expected = hf_clf(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(clf(ids)[0].data, expected, atol=1e-5)
