"""minigen.io.safetensors: format compatibility, round trips, and hostile input."""
import json
import os
import struct
import tempfile
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from minigen.io import safetensors as sf

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16,
    "U8": np.uint8, "BOOL": np.bool_,
}


def build(header, data=b"", length=None):
    """Assemble a file by hand: length prefix, JSON header, data buffer."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def assert_same(loaded, expected):
    assert sorted(loaded) == sorted(expected)
    for name, arr in expected.items():
        assert loaded[name].dtype == arr.dtype and loaded[name].shape == arr.shape, name
        np.testing.assert_array_equal(loaded[name], arr)


# ---------------------------------------------------------------- byte compatibility

def test_bytes_match_hand_built_file():
    tensors = {"b": np.array([1, 2, 3], np.uint8), "w": np.array([1.0, -2.0], np.float32)}
    header = (b'{"__metadata__":{"k":"v"},'
              b'"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
              b'"b":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}}    ')  # 132 bytes + 4 spaces
    expected = (b"\x88\x00\x00\x00\x00\x00\x00\x00" + header
                + b"\x00\x00\x80?\x00\x00\x00\xc0" + b"\x01\x02\x03")
    assert sf.save(tensors, metadata={"k": "v"}) == expected
    assert_same(sf.load(expected), tensors)


def test_empty_file_bytes():
    assert sf.save({}) == b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "
    assert sf.load(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ") == {}


def test_order_is_alignment_descending_then_name():
    tensors = {name.lower(): np.zeros(1, dt) for name, dt in DTYPES.items()}
    tensors["a_f32"] = np.zeros(1, np.float32)
    raw = sf.save(tensors)
    n = struct.unpack("<Q", raw[:8])[0]
    order = list(json.loads(raw[8:8 + n]))
    assert order == ["u64", "i64", "f64", "a_f32", "f32", "u32", "i32", "f16", "u16", "i16",
                     "i8", "u8", "bool"]


def test_header_is_padded_to_eight_bytes():
    for name in ["a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh"]:
        raw = sf.save({name: np.ones(3, np.float32)})
        n = struct.unpack("<Q", raw[:8])[0]
        assert n % 8 == 0 and raw[8 + n - 1:8 + n] in (b" ", b"}")


# ---------------------------------------------------------------- round trips

SHAPES = [(), (0,), (3, 0, 2), (1,), (5,), (2, 3), (2, 1, 4)]


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip_every_dtype_and_shape(dtype, shape, tmp_path):
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal(shape) * 50).astype(dtype)
    tensors = {"x": arr, "y": np.arange(3, dtype=np.float32)}
    assert_same(sf.load(sf.save(tensors)), tensors)
    sf.save_file(tensors, tmp_path / "m.safetensors")
    loaded = sf.load_file(tmp_path / "m.safetensors")
    assert_same(loaded, tensors)
    assert all(a.flags.writeable and a.flags.owndata for a in loaded.values())


@given(hnp.arrays(st.sampled_from(list(DTYPES.values())), hnp.array_shapes(min_dims=0, min_side=0, max_side=4)))
def test_round_trip_random_arrays(arr):
    out = sf.load(sf.save({"t": arr}))["t"]
    assert out.dtype == arr.dtype and out.shape == arr.shape
    assert out.tobytes() == arr.tobytes()  # bit-exact, NaN payloads and -0.0 included


def test_non_contiguous_and_big_endian_inputs_are_stored_canonically():
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    tensors = {"t": base.T, "s": base[::2, 1::3], "be": np.arange(5, dtype=">i4")}
    loaded = sf.load(sf.save(tensors))
    for name, arr in tensors.items():
        np.testing.assert_array_equal(loaded[name], arr)
        assert loaded[name].flags.c_contiguous and loaded[name].dtype.isnative
    assert sf.save({"be": np.arange(5, dtype=">i4")}) == sf.save({"be": np.arange(5, dtype="<i4")})


def test_numpy_scalars_save_as_zero_dim():
    out = sf.load(sf.save({"s": np.float32(2.5)}))["s"]
    assert out.shape == () and out == 2.5


def test_bf16_loads_as_float32():
    bits = np.array([0x3F80, 0xC020, 0x7F80, 0x0000, 0x8000], "<u2")  # 1, -2.5, inf, 0, -0
    raw = build({"b": {"dtype": "BF16", "shape": [5], "data_offsets": [0, 10]},
                 "s": {"dtype": "BF16", "shape": [], "data_offsets": [10, 12]}},
                bits.tobytes() + b"\x40\x40")  # 0x4040 = 3.0
    out = sf.load(raw)
    assert out["b"].dtype == np.float32
    np.testing.assert_array_equal(out["b"], [1.0, -2.5, np.inf, 0.0, -0.0])
    assert np.signbit(out["b"][4])
    assert out["s"].shape == () and out["s"] == 3.0


def test_bool_bytes_other_than_one_read_as_true():
    out = sf.load(build({"m": {"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]}}, b"\x00\x02\xff"))
    assert out["m"].tolist() == [False, True, True]
    assert out["m"].view(np.uint8).tolist() == [0, 1, 1]


def test_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    sf.save_file({"a": np.zeros(2)}, path, metadata={"format": "np", "step": "3"})
    assert sf.load_metadata(path) == {"format": "np", "step": "3"}
    sf.save_file({"a": np.zeros(2)}, path)
    assert sf.load_metadata(path) == {}
    assert sf.load(build({"__metadata__": None})) == {}  # the reference accepts null


# ---------------------------------------------------------------- save errors

@pytest.mark.parametrize("value", [np.array([1 + 2j]), np.array([object()]), np.array(["s"]),
                                   np.zeros(2, "datetime64[s]")])
def test_save_unsupported_dtype_names_key(value):
    with pytest.raises(TypeError, match="'bad'"):
        sf.save({"ok": np.zeros(1), "bad": value})


def test_save_bad_arguments():
    with pytest.raises(TypeError, match="names must be str"):
        sf.save({3: np.zeros(1)})
    with pytest.raises(TypeError, match="'x' must be a np.ndarray"):
        sf.save({"x": [1.0, 2.0]})
    with pytest.raises(ValueError, match="reserved"):
        sf.save({"__metadata__": np.zeros(1)})
    with pytest.raises(TypeError, match="metadata"):
        sf.save({}, metadata={"a": 1})
    with pytest.raises(TypeError, match="metadata"):
        sf.save({}, metadata=[("a", "b")])
    with pytest.raises(TypeError, match="dict"):
        sf.save([np.zeros(1)])
    with pytest.raises(TypeError, match="bytes"):
        sf.load("not bytes")
    with pytest.raises(ValueError, match="UTF-8"):
        sf.save({"\ud800": np.zeros(1)})


# ---------------------------------------------------------------- atomic writes

def test_crash_during_replace_keeps_old_file_and_leaves_no_litter(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    sf.save_file({"a": np.ones(3)}, path)
    before = path.read_bytes()

    def crash(*args):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        sf.save_file({"a": np.zeros(1000)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_error_in_input_leaves_no_file(tmp_path):
    with pytest.raises(TypeError):
        sf.save_file({"a": np.array([1j])}, tmp_path / "m.safetensors")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- hostile input

VALID = sf.save({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(3, dtype=np.int64),
                 "m": np.array([True, False]), "e": np.zeros((0, 4), np.float16)},
                metadata={"k": "v"})
HEADER_LEN = struct.unpack("<Q", VALID[:8])[0]
HEADER = json.loads(VALID[8:8 + HEADER_LEN])
DATA = VALID[8 + HEADER_LEN:]
PEAK_LIMIT = 2_000_000  # bytes; the valid file is ~200 bytes


def load_checked(raw):
    """Load ``raw`` from bytes and from a file: either both succeed or both raise ValueError
    naming the source; the peak allocation stays small either way."""
    outcomes = []
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f.safetensors")
        with open(path, "wb") as f:
            f.write(raw)
        for source, call in [("<bytes>", lambda: sf.load(raw)), (path, lambda: sf.load_file(path))]:
            tracemalloc.start()
            try:
                result = call()
            except ValueError as e:
                assert source in str(e)
                result = None
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            assert peak < PEAK_LIMIT + len(raw), (source, peak)
            outcomes.append(result)
    assert (outcomes[0] is None) == (outcomes[1] is None)
    return outcomes[0]


def assert_rejected(raw):
    assert load_checked(raw) is None


def test_valid_fixture_loads():
    assert load_checked(VALID) is not None


def test_every_truncation_is_rejected():
    for end in range(len(VALID)):
        assert_rejected(VALID[:end])
    assert_rejected(VALID + b"\x00")  # trailing bytes no tensor covers


@given(st.integers(0, 2**64 - 1))
def test_lying_header_length(n):
    raw = struct.pack("<Q", n) + VALID[8:]
    result = load_checked(raw)
    assert result is None or n == HEADER_LEN


@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_flipped_bytes_raise_only_value_error(flips):
    raw = bytearray(VALID)
    for pos, value in flips:
        raw[pos] = value
    result = load_checked(bytes(raw))
    if result is not None:  # a flip inside the data, or one that leaves the header valid
        assert all(isinstance(v, np.ndarray) for v in result.values())


def entry_mutations():
    """(field, bad value) pairs that make a tensor entry invalid."""
    bad_int = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=3),
                        st.integers(max_value=-1), st.integers(min_value=2**63))
    return st.one_of(
        st.tuples(st.just("dtype"), st.one_of(st.sampled_from(["F8_E4M3", "f32", "", "C64", "Q4"]),
                                              st.integers(), st.none(), st.lists(st.text(max_size=2)))),
        st.tuples(st.just("shape"), st.one_of(
            st.lists(bad_int, min_size=1, max_size=3), bad_int, st.just([2**62]), st.just([2**62, 2**62]),
            st.just([2**31, 2**31, 0]), st.just([1] * 65), st.just({"0": 2}))),
        st.tuples(st.just("data_offsets"), st.one_of(
            st.lists(bad_int, min_size=2, max_size=2), st.lists(st.integers(0, 64), max_size=1),
            st.lists(st.integers(0, 64), min_size=3, max_size=3), st.just([24, 0]), st.just([0, 2**64]),
            bad_int)),
    )


@given(st.sampled_from(["w", "b", "m"]), entry_mutations())
def test_invalid_entry_is_rejected(name, mutation):
    field, value = mutation
    header = json.loads(json.dumps(HEADER))
    header[name][field] = value
    assert_rejected(build(header, DATA))


@given(st.sampled_from(["w", "b", "m", "e"]), st.integers(-64, 64), st.integers(-64, 64))
def test_shifted_offsets_are_rejected(name, shift_begin, shift_end):
    header = json.loads(json.dumps(HEADER))
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin + shift_begin, end + shift_end]
    result = load_checked(build(header, DATA))
    # A zero-size tensor may sit at any boundary between tensors; nothing else may move.
    assert result is None or (shift_begin == shift_end and (shift_begin == 0 or name == "e"))


@pytest.mark.parametrize("header", [
    # overlapping: two tensors share bytes, buffer size still matches their union
    {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
     "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
    # gap between tensors
    {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
     "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}},
    # reversed offsets
    {"a": {"dtype": "F32", "shape": [0], "data_offsets": [12, 0]}},
    # out of range
    {"a": {"dtype": "F32", "shape": [3], "data_offsets": [4, 16]}},
    # shape product disagrees with offsets
    {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}},
    # absurd shapes, zero-size by offsets
    {"a": {"dtype": "U8", "shape": [2**62], "data_offsets": [0, 12]}},
    {"a": {"dtype": "F64", "shape": [2**62, 0], "data_offsets": [0, 0]},
     "b": {"dtype": "U8", "shape": [12], "data_offsets": [0, 12]}},
    # booleans are not sizes, though Python treats True as 1
    {"a": {"dtype": "U8", "shape": [12, True], "data_offsets": [0, 12]}},
    {"a": {"dtype": "U8", "shape": [12], "data_offsets": [False, 12]}},
    # extra or missing keys, wrong entry type
    {"a": {"dtype": "U8", "shape": [12], "data_offsets": [0, 12], "extra": 1}},
    {"a": {"dtype": "U8", "shape": [12]}},
    {"a": [0, 12]},
    # bad metadata
    {"__metadata__": {"k": 1}, "a": {"dtype": "U8", "shape": [12], "data_offsets": [0, 12]}},
    {"__metadata__": ["k"], "a": {"dtype": "U8", "shape": [12], "data_offsets": [0, 12]}},
    # non-object JSON
    [1, 2], "x", 3, None,
], ids=lambda h: json.dumps(h)[:40])
def test_structurally_invalid_headers(header):
    assert_rejected(build(header, bytes(12)))


@pytest.mark.parametrize("raw_header", [
    b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}',
    b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4],"dtype":"U8"}}',
    b'{"a":{"dtype":"U8","shape":[NaN],"data_offsets":[0,4]}}',
    b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,Infinity]}}',
    b'{"a":{"dtype":"U8","shape":[4.0],"data_offsets":[0,4]}}',
    b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}',
    b'{"a":{"dtype":"U8","shape":[1' + b"0" * 5000 + b'],"data_offsets":[0,4]}}',
    b'\xff{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b"",
], ids=lambda h: h[:30].decode("latin-1"))
def test_malformed_json_headers(raw_header):
    assert_rejected(build(raw_header, bytes(4)))


def test_huge_header_length_is_rejected_before_reading(tmp_path):
    path = tmp_path / "f.safetensors"
    path.write_bytes(struct.pack("<Q", sf.MAX_HEADER_SIZE + 1) + b"{}")
    with pytest.raises(ValueError, match="exceeds"):
        sf.load_file(path)
    with pytest.raises(ValueError, match="too short"):
        sf.load(b"\x00" * 7)


# ---------------------------------------------------------------- cross-check with the reference

def reference_arrays():
    rng = np.random.default_rng(1)
    return {"layer.0.weight": rng.standard_normal((3, 4)).astype(np.float32),
            "layer.0.bias": rng.standard_normal(4),
            "ids": np.arange(7, dtype=np.int64), "mask": np.array([[True, False]]),
            "half": np.ones((2, 2), np.float16), "z": np.zeros((0, 2), np.int32), "b": np.array([7], np.uint8),
            "i8": np.array([-1, 2], np.int8), "i16": np.array([300], np.int16), "u16": np.array([7], np.uint16),
            "emb.ü→": np.ones(1, np.uint32), 'quote"tab\tctl\x01': np.ones(1, np.uint64)}


def test_cross_check_with_safetensors_package(tmp_path):
    ref = pytest.importorskip("safetensors.numpy")
    tensors = reference_arrays()
    ours = sf.save(tensors, metadata={"format": "np"})
    theirs = ref.save(tensors, metadata={"format": "np"})
    assert ours == theirs
    assert_same(ref.load(ours), tensors)
    assert_same(sf.load(theirs), tensors)
    ref.save_file(tensors, tmp_path / "ref.safetensors")
    assert_same(sf.load_file(tmp_path / "ref.safetensors"), tensors)
    sf.save_file(tensors, tmp_path / "ours.safetensors")
    assert_same(ref.load_file(tmp_path / "ours.safetensors"), tensors)
