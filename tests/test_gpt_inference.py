"""Inference at scale: memory-mapped checkpoints, the preallocated KV cache, few-row and int8 Linear kernels."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigen as mg
from minigen import kernels, nn
from minigen.io.safetensors import load_file, save_file
from minigen.kernels import numpy_kernels
from minigen.models.gpt import GPT, GPTConfig

from gradcheck import check_gradients

CONFIG = dict(vocab_size=61, block_size=48, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small GPT saved in GPT-2's layout, and the model that wrote it."""
    mg.manual_seed(3)
    model = GPT(GPTConfig(**CONFIG)).eval()
    directory = tmp_path_factory.mktemp("gpt") / "model"
    model.save_pretrained(directory)
    return directory, model


# ----- loading without copies ------------------------------------------------------------------------------
def test_mmap_load_file_shares_the_map_and_never_writes_the_file(tmp_path):
    path = tmp_path / "t.safetensors"
    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.int8),
              "flags": np.array([True, False])}
    save_file(arrays, path)
    before = path.read_bytes()
    mapped = load_file(path, mmap=True)
    assert not mapped["a"].flags.owndata and isinstance(mapped["a"].base, np.ndarray)
    assert mapped["flags"].dtype == np.bool_ and mapped["flags"].tolist() == [True, False]
    for name, array in arrays.items():
        np.testing.assert_array_equal(mapped[name], array)
    mapped["a"][0, 0] = 99.0  # copy-on-write: the process sees it, the file does not
    assert mapped["a"][0, 0] == 99.0 and path.read_bytes() == before
    with pytest.raises(TypeError, match="mmap must be True or False"):
        load_file(path, mmap="yes")


def test_from_pretrained_uses_the_mapped_tensors_in_place(checkpoint):
    directory, original = checkpoint
    mg.manual_seed(0)
    drawn_before = mg.randn(3).data
    mg.manual_seed(0)
    model = GPT.from_pretrained(directory)
    np.testing.assert_array_equal(mg.randn(3).data, drawn_before)  # no random initialisation drew anything
    mapped = load_file(directory / "model.safetensors", mmap=True)
    c_attn = model.transformer.h[0].attn.c_attn.weight.data
    assert not c_attn.flags.c_contiguous and c_attn.T.flags.c_contiguous  # the Conv1D layout, seen transposed
    for name, p in model.named_parameters():
        assert not p.data.flags.owndata, f"{name} was copied"
    np.testing.assert_array_equal(c_attn.T, mapped["transformer.h.0.attn.c_attn.weight"])
    ids = np.array([[1, 5, 9, 2]])
    np.testing.assert_allclose(model(ids)[0].data, original(ids)[0].data, rtol=1e-5, atol=1e-5)


def test_fine_tuning_a_mapped_model_leaves_the_file_unchanged(checkpoint, tmp_path):
    directory, _ = checkpoint
    before = (directory / "model.safetensors").read_bytes()
    model = GPT.from_pretrained(directory).train()
    optimizer = mg.optim.AdamW(model.parameters(), lr=1e-2)
    ids = np.random.default_rng(0).integers(0, CONFIG["vocab_size"], (2, 9))
    losses = []
    for _ in range(3):
        _, loss = model(ids[:, :-1], ids[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert (directory / "model.safetensors").read_bytes() == before
    model.save_pretrained(tmp_path / "tuned")  # the tuned weights save and load back
    again = GPT.from_pretrained(tmp_path / "tuned")
    np.testing.assert_array_equal(again.transformer.h[1].mlp.c_fc.weight.data, model.transformer.h[1].mlp.c_fc.weight.data)


def test_load_state_dict_assign_takes_the_arrays_and_refuses_floats_for_int8():
    layer = nn.Linear(3, 2)
    weight = np.ones((2, 3), np.float32)
    layer.load_state_dict({"weight": weight, "bias": np.zeros(2, np.float32)}, assign=True)
    assert layer.weight.data is weight
    nn.quantize.quantize_int8_(layer)
    with pytest.raises(TypeError, match="weight: dtype float32 where the model holds int8"):
        layer.load_state_dict({"weight": weight, "bias": np.zeros(2, np.float32), "weight_scale": np.ones(2, np.float32)})


def test_skip_init_leaves_tensors_undrawn():
    layer = nn.Linear(4, 3)
    layer.weight.data[...] = 7.0
    with nn.init.skip_init():
        assert nn.init.skipping()
        layer.reset_parameters()
    assert not nn.init.skipping() and (layer.weight.data == 7.0).all()


# ----- the KV cache ------------------------------------------------------------------------------------------
def test_kv_cache_writes_in_place_grows_and_reorders():
    rng = np.random.default_rng(1)
    cache = nn.KVCache(n_layer=2, batch_size=3, n_head=2, head_dim=4, capacity=3)
    keys = rng.standard_normal((3, 2, 2, 4)).astype(np.float32)
    for layer in range(2):
        k, v = cache.update(layer, keys + layer, keys - layer)
        assert k.shape == (3, 2, 2, 4) and np.shares_memory(k, cache.keys)
    cache.advance(2)
    more = rng.standard_normal((3, 2, 2, 4)).astype(np.float32)
    k, v = cache.update(0, more, more)  # past the capacity: the arrays grow, the filled part moves with them
    assert cache.capacity >= 4 and k.shape == (3, 2, 4, 4)
    np.testing.assert_array_equal(k[:, :, :2], keys)
    np.testing.assert_array_equal(k[:, :, 2:], more)
    cache.update(1, more, more)
    cache.advance(2)
    filled = cache.keys[:, :, :, :4].copy()
    cache.reorder(np.array([2, 2, 0]))
    np.testing.assert_array_equal(cache.keys[:, :, :, :4], filled[:, [2, 2, 0]])
    cache.reorder(np.array([0, 1, 2, 2]))  # more rows: several return sequences per prompt
    assert cache.batch_size == 4
    np.testing.assert_array_equal(cache.keys[:, 3, :, :4], filled[:, 0])
    with pytest.raises(ValueError, match=r"KVCache.update: keys and values must have shape \(4, 2, 1, 4\)"):
        cache.update(0, more[:, :, :1], more[:, :, :1])
    with pytest.raises(ValueError, match="capacity must be a positive integer"):
        nn.KVCache(1, 1, 1, 1, capacity=0)


def test_generate_allocates_the_cache_once(checkpoint, monkeypatch):
    """The cache is sized for prompt + max_new_tokens up front: no step grows it."""
    _, model = checkpoint
    grown = []
    monkeypatch.setattr(nn.KVCache, "_grow", lambda self, needed: grown.append(needed))
    created = []
    original_new_cache = model.transformer.new_cache
    monkeypatch.setattr(model.transformer, "new_cache",
                        lambda b, capacity: created.append(capacity) or original_new_cache(b, capacity))
    out = model.generate(np.array([[1, 2, 3]]), max_new_tokens=20, num_beams=2)
    assert out.shape[1] <= 23 and created == [23] and grown == []


@pytest.mark.parametrize("rows", [1, 2])  # batch 1 decodes every block in one kernel call (kernels.decode_blocks)
@pytest.mark.parametrize("quantized", [False, True])
def test_cached_decoding_matches_full_forward_logits(checkpoint, rows, quantized):
    """Each step's logits from the cache equal the full forward pass's at that position (float precision), for
    float and int8 weights; the cache holds the activations' float dtype, never the int8 of the weights."""
    directory, model = checkpoint
    if quantized:
        model = GPT.from_pretrained(directory, quantize="int8")
        assert model.transformer.new_cache(1, 4).keys.dtype == np.float32
    ids = np.random.default_rng(2).integers(0, CONFIG["vocab_size"], (rows, 12))
    full = model(ids)[0].data
    state, prefix = model.start_decoding(ids[:, :5], max_length=12)
    logits, state = model.decode_step(prefix, state)
    np.testing.assert_allclose(logits, full[:, 4], rtol=1e-4, atol=1e-5)
    for t in range(5, 12):
        logits, state = model.decode_step(ids[:, t:t + 1], state)
        np.testing.assert_allclose(logits, full[:, t], rtol=1e-4, atol=1e-5)


# ----- few-row and int8 kernels ------------------------------------------------------------------------------
@st.composite
def few_row_products(draw):
    M, K, N = draw(st.integers(1, 8)), draw(st.sampled_from([1, 3, 17, 64, 100])), draw(st.sampled_from([1, 5, 16, 33, 130]))
    seed = draw(st.integers(0, 2 ** 16))
    return M, K, N, seed, draw(st.booleans()), draw(st.sampled_from([np.float32, np.float64]))


@given(few_row_products())
def test_few_row_linear_equals_the_reference_in_both_layouts(case):
    M, K, N, seed, bias, dtype = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)).astype(dtype)
    weight = rng.standard_normal((N, K)).astype(dtype)
    b = rng.standard_normal(N).astype(dtype) if bias else None
    expected = numpy_kernels.linear_forward(x, weight, b)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    conv1d = np.ascontiguousarray(weight.T).T  # (N, K) seen through the transpose of a (K, N) array
    for w in (weight, conv1d):
        np.testing.assert_allclose(kernels.linear_forward(x, w, b), expected, rtol=tol, atol=tol)
        gx, gw, gb = kernels.linear_backward(np.ones((M, N), dtype), x, w, bias)
        np.testing.assert_allclose(gx, np.ones((M, N)) @ weight, rtol=tol, atol=tol)


@given(few_row_products())
def test_int8_linear_equals_the_reference(case):
    M, K, N, seed, bias, _ = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)).astype(np.float32)
    q, scale = numpy_kernels.quantize_int8(rng.standard_normal((N, K)).astype(np.float32))
    b = rng.standard_normal(N).astype(np.float32) if bias else None
    expected = numpy_kernels.int8_linear_forward(x, q, scale, b)
    np.testing.assert_allclose(kernels.int8_linear_forward(x, q, scale, b), expected, rtol=1e-4, atol=1e-4)
    many = rng.standard_normal((11, K)).astype(np.float32)  # a prompt: dequantized once, then the float product
    np.testing.assert_allclose(kernels.int8_linear_forward(many, q, scale, b),
                               numpy_kernels.int8_linear_forward(many, q, scale, b), rtol=1e-4, atol=1e-4)


def test_quantize_int8_rounds_each_row_to_127_steps():
    weight = np.array([[0.0, 0.5, -1.27], [0.0, 0.0, 0.0], [2.54, -0.01, 1.0]], np.float32)
    q, scale = numpy_kernels.quantize_int8(weight)
    np.testing.assert_allclose(scale, [0.01, 0.0, 0.02], rtol=1e-6)
    np.testing.assert_array_equal(q, [[0, 50, -127], [0, 0, 0], [127, 0, 50]])
    assert q.flags.c_contiguous and q.dtype == np.int8
    assert np.abs(numpy_kernels.dequantize_int8(q, scale) - weight).max() <= scale.max() / 2 + 1e-7


def test_int8_linear_input_gradient_checks(rng=np.random.default_rng(9)):
    """The input gradient through an int8 weight (the weight itself is frozen) against central differences."""
    q, scale = numpy_kernels.quantize_int8(rng.standard_normal((5, 7)))
    bias = rng.standard_normal(5)

    def call(x):
        return nn.functional.linear(x, mg.tensor(q), mg.tensor(bias), weight_scale=scale.astype(np.float64))

    check_gradients(call, [rng.standard_normal((3, 7))], {}, rng)

    def call_gelu(x):
        return nn.functional.linear_gelu(x, mg.tensor(q), mg.tensor(bias), "tanh", scale.astype(np.float64))

    check_gradients(call_gelu, [rng.standard_normal((2, 7))], {}, rng)


@pytest.mark.parametrize("tuned", [False, True])
def test_decoding_a_mapped_checkpoint_equals_recomputing(checkpoint, tuned):
    """Batch-1 cached decoding of a memory-mapped checkpoint, and of one where a block's weight has since been
    replaced (decoding reads the weights as they are at each step), gives the tokens of recomputing the whole
    sequence at every step."""
    directory, _ = checkpoint
    model = GPT.from_pretrained(directory)
    weight = model.transformer.h[0].mlp.c_fc.weight
    if tuned:
        weight.data = weight.data + np.float32(0.01)
    ids = np.random.default_rng(4).integers(0, CONFIG["vocab_size"], (1, 5))
    np.testing.assert_array_equal(model.generate(ids, max_new_tokens=10),
                                  model.generate(ids, max_new_tokens=10, use_cache=False))


@st.composite
def decode_steps(draw):
    """A GPT's blocks for kernels.decode_blocks: two blocks, both float64, both float32, both int8 (weights with
    scales), or an int8 and a float32 block (which Numba types differently); weights as PyTorch lays them out or
    as transposed views of GPT-2's Conv1D arrays; with and without biases. (Few kinds: each kind of block
    compiles the kernel anew; read-only weights, as memory-mapped from a checkpoint, are the model tests'.)"""
    B, H, D = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.sampled_from([1, 4, 9, 16]))
    past, spare = draw(st.integers(0, 20)), draw(st.integers(0, 3))
    scenario = draw(st.sampled_from(["float64", "float32", "int8", "mixed"]))
    kinds = ["int8", "float32"] if scenario == "mixed" else [scenario] * 2
    conv1d, bias, approximate = draw(st.booleans()), draw(st.booleans()), draw(st.sampled_from(["tanh", "none"]))
    seed = draw(st.integers(0, 2 ** 16))
    return B, H, D, past, spare, kinds, conv1d, bias, approximate, seed


def _decode_block_weights(rng, C, kind, conv1d, bias):
    dt = np.float64 if kind == "float64" else np.float32

    def vector(n):
        return rng.standard_normal(n).astype(dt) if bias else None

    def linear(n_out, n_in):
        weight = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dt)
        if kind == "int8":
            q, scale = numpy_kernels.quantize_int8(weight)
            return q, vector(n_out), scale
        return (np.ascontiguousarray(weight.T).T if conv1d else weight), vector(n_out), None

    norm = (1 + 0.1 * rng.standard_normal(C).astype(dt), vector(C))
    return norm, linear(3 * C, C), linear(C, C), norm, linear(4 * C, C), linear(C, 4 * C)


@given(decode_steps())
@settings(max_examples=40, deadline=None)
def test_decode_blocks_equals_the_reference(case):
    """The fused decoding step through a GPT's blocks against its NumPy composition: the new x, and every
    layer's cache written at position `past` only."""
    B, H, D, past, spare, kinds, conv1d, bias, approximate, seed = case
    rng = np.random.default_rng(seed)
    C, dt = H * D, np.float64 if kinds[0] == "float64" else np.float32
    blocks = tuple(_decode_block_weights(rng, C, kind, conv1d, bias) for kind in kinds)
    keys, values = (rng.standard_normal((len(blocks), B, H, past + 1 + spare, D)).astype(dt) for _ in range(2))
    x = rng.standard_normal((B, C)).astype(dt)
    keys_ref, values_ref = keys.copy(), values.copy()
    expected = numpy_kernels.decode_blocks(x, blocks, keys_ref, values_ref, past + 1, H, 1e-5, approximate)
    keys_prepared, values_prepared = keys.copy(), values.copy()
    got = kernels.decode_blocks(x, blocks, keys, values, past + 1, H, 1e-5, approximate)
    tol = 1e-10 if dt == np.float64 else 2e-4
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)
    np.testing.assert_allclose(keys, keys_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(values, values_ref, rtol=tol, atol=tol)
    # the blocks prepared once, as a generation passes them to every step: the same step
    prepared = kernels.prepare_decode_blocks(blocks, dt)
    again = kernels.decode_blocks(x, prepared, keys_prepared, values_prepared, past + 1, H, 1e-5, approximate)
    np.testing.assert_array_equal(again, got)
    np.testing.assert_array_equal(keys_prepared, keys)
    np.testing.assert_array_equal(values_prepared, values)


def test_decoding_prepares_the_weights_once_and_sees_a_new_array(checkpoint):
    """Batch-1 decoding prepares the blocks' weights for its kernel at a generation's first step and reuses them
    at the later steps; a parameter given a new array in between is used from the next step on."""
    directory, _ = checkpoint
    model = GPT.from_pretrained(directory)
    ids = np.random.default_rng(5).integers(0, CONFIG["vocab_size"], (1, 8))
    state, prefix = model.start_decoding(ids[:, :4], max_length=8)
    _, state = model.decode_step(prefix, state)  # the prompt: not a one-token step
    assert state["cache"].decoding_weights is None
    _, state = model.decode_step(ids[:, 4:5], state)
    prepared = state["cache"].decoding_weights
    _, state = model.decode_step(ids[:, 5:6], state)
    assert prepared is not None and state["cache"].decoding_weights is prepared
    # the last block's MLP output: it changes no cached key or value, so the full forward is the reference
    layer = model.transformer.h[-1].mlp.c_proj
    layer.weight.data = np.ascontiguousarray(layer.weight.data) * np.float32(2.0)
    logits, state = model.decode_step(ids[:, 6:7], state)
    assert state["cache"].decoding_weights is not prepared
    np.testing.assert_allclose(logits, model(ids[:, :7])[0].data[:, -1], rtol=1e-4, atol=1e-5)


# ----- quantized models --------------------------------------------------------------------------------------
def test_quantize_save_load_round_trip_is_bit_identical(checkpoint, tmp_path):
    directory, original = checkpoint
    model = GPT.from_pretrained(directory, quantize="int8")
    assert model.quantized and model.transformer.h[0].mlp.c_fc.weight.dtype == np.int8
    model.save_pretrained(tmp_path / "q")
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "minigen_int8"
    again = GPT.from_pretrained(tmp_path / "q")
    assert again.quantized
    saved, loaded = model.state_dict(), again.state_dict()
    assert saved.keys() == loaded.keys()
    for name in saved:
        assert saved[name].dtype == loaded[name].dtype and np.array_equal(saved[name], loaded[name]), name
    ids = np.random.default_rng(3).integers(0, CONFIG["vocab_size"], (2, 6))
    np.testing.assert_array_equal(again(ids)[0].data, model(ids)[0].data)
    np.testing.assert_array_equal(again.generate(ids, max_new_tokens=8), model.generate(ids, max_new_tokens=8))
    # close to the float model: per-row int8 of N(0, 0.02) weights
    assert np.abs(model(ids)[0].data - original(ids)[0].data).max() < 0.05
    # cached int8 decoding equals recomputing the whole sequence
    np.testing.assert_array_equal(model.generate(ids, max_new_tokens=8, num_beams=3),
                                  model.generate(ids, max_new_tokens=8, num_beams=3, use_cache=False))


def test_damaged_quantized_checkpoints_are_refused(checkpoint, tmp_path):
    directory, _ = checkpoint
    GPT.from_pretrained(directory, quantize="int8").save_pretrained(tmp_path / "q")
    weights = tmp_path / "q" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-100])  # truncated
    with pytest.raises(ValueError, match="model.safetensors"):
        GPT.from_pretrained(tmp_path / "q")
    weights.write_bytes(data)
    tensors = load_file(weights)
    tensors["transformer.h.0.attn.c_attn.weight_scale"] = tensors["transformer.h.0.attn.c_attn.weight_scale"][:-1]
    save_file(tensors, weights)  # mis-sized scales
    with pytest.raises(ValueError, match="weight_scale"):
        GPT.from_pretrained(tmp_path / "q")
    config_path = tmp_path / "q" / "config.json"
    config = json.loads(config_path.read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not minigen's int8 scheme"):
        GPT.from_pretrained(tmp_path / "q")
    with pytest.raises(ValueError, match="quantize must be None or 'int8'"):
        GPT.from_pretrained(directory, quantize="int4")
    with pytest.raises(ValueError, match="method must be 'int8'"):
        GPT(GPTConfig(**CONFIG)).quantize("fp8")


@pytest.mark.parametrize("rows", [2, 64, 300])
def test_linear_kernels_read_a_transposed_weight_in_place(rows):
    """Products large enough to split across threads take a Conv1D weight's transposed view as it lies (gemm's
    flag flipped), forward and backward, with and without GELU."""
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 96)).astype(np.float32)
    weight = rng.standard_normal((128, 96)).astype(np.float32)
    conv1d = np.ascontiguousarray(weight.T).T
    bias, grad = rng.standard_normal(128).astype(np.float32), rng.standard_normal((rows, 128)).astype(np.float32)
    np.testing.assert_allclose(kernels.linear_forward(x, conv1d, bias), numpy_kernels.linear_forward(x, weight, bias),
                               rtol=1e-4, atol=1e-4)
    for got, want in zip(kernels.linear_backward(grad, x, conv1d, True),
                         numpy_kernels.linear_backward(grad, x, weight, True)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    h, y = kernels.linear_gelu_forward(x, conv1d, bias, "tanh")
    np.testing.assert_allclose(y, numpy_kernels.linear_gelu_forward(x, weight, bias, "tanh")[1], rtol=1e-4, atol=1e-4)
    for got, want in zip(kernels.linear_gelu_backward(grad, x, conv1d, h, "tanh", True),
                         numpy_kernels.linear_gelu_backward(grad, x, weight, h, "tanh", True)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
