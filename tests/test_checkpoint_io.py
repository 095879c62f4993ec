"""minigen.io.config and minigen.io.checkpoint: strict JSON, field checks, atomic checkpoints."""
import json
import os

import numpy as np
import pytest

from minigen.io import checkpoint as ck
from minigen.io import config as cfgio
from minigen.io import load_checkpoint, save_checkpoint


# ---------------------------------------------------------------- load_json / save_json

def write(path, text):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_json_round_trip(tmp_path):
    obj = {"n_embd": 32, "eps": 1e-5, "name": "gpt2 ü", "layers": [1, [2, {"x": None}]], "flag": True}
    cfgio.save_json(obj, tmp_path / "c.json")
    assert cfgio.load_json(tmp_path / "c.json") == obj
    assert os.listdir(tmp_path) == ["c.json"]


@pytest.mark.parametrize("text, problem", [
    ('{"a": NaN}', "NaN"), ('{"a": -Infinity}', "Infinity"), ('{"a": 1e999}', "infinity"),
    ('{"a": 1, "a": 2}', "duplicate key 'a'"), ("[1, 2]", "JSON object"), ('"s"', "JSON object"),
    ('{"a": ', "not valid JSON"), (b'{"a": "\xff"}', "UTF-8"), ("", "not valid JSON"),
    ("[" * 100_000, "nested too deeply"), ('{"a":' * 65 + "1" + "}" * 65, "nested too deeply"),
])
def test_load_json_rejects(tmp_path, text, problem):
    path = write(tmp_path / "bad.json", text)
    with pytest.raises(ValueError, match=problem) as info:
        cfgio.load_json(path)
    assert str(path) in str(info.value)


def test_load_json_limits(tmp_path):
    path = write(tmp_path / "c.json", '{"a": [[[1]]]}')
    assert cfgio.load_json(path, max_depth=4) == {"a": [[[1]]]}
    with pytest.raises(ValueError, match="max_depth=3"):
        cfgio.load_json(path, max_depth=3)
    with pytest.raises(ValueError, match="max_bytes=10"):
        cfgio.load_json(path, max_bytes=10)
    with pytest.raises(FileNotFoundError):
        cfgio.load_json(tmp_path / "missing.json")


def test_save_json_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    cfgio.save_json({"a": 1}, path)
    with pytest.raises(ValueError):
        cfgio.save_json({"a": float("nan")}, path)
    with pytest.raises(TypeError):
        cfgio.save_json({"a": object()}, path)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("simulated crash")))
    with pytest.raises(OSError):
        cfgio.save_json({"a": 2}, path)
    assert cfgio.load_json(path) == {"a": 1}
    assert os.listdir(tmp_path) == ["c.json"]


# ---------------------------------------------------------------- check_fields

SCHEMA = {"n_layer": int, "eps": float, "name": str, "pad": (int, type(None)), "tie": bool}


def test_check_fields_accepts_valid_configs():
    cfgio.check_fields({"n_layer": 2, "eps": 1e-5, "name": "x", "pad": None, "tie": True}, SCHEMA, "c.json")
    cfgio.check_fields({"n_layer": 2, "eps": 0, "name": "x", "pad": 3, "tie": False, "other": [1]},
                       SCHEMA, "c.json")  # int is a valid float; unknown keys are allowed
    cfgio.check_fields({"n_layer": 2}, SCHEMA, "c.json", required=["n_layer"])


@pytest.mark.parametrize("key, value, expected", [
    ("n_layer", True, "int"), ("n_layer", 2.0, "int"), ("n_layer", "2", "int"), ("eps", False, "float"),
    ("eps", "1e-5", "float"), ("name", 3, "str"), ("pad", 1.5, "int or NoneType"), ("tie", 1, "bool"),
])
def test_check_fields_reports_key_value_and_type(key, value, expected):
    cfg = {"n_layer": 2, "eps": 1e-5, "name": "x", "pad": None, "tie": True, key: value}
    with pytest.raises(ValueError) as info:
        cfgio.check_fields(cfg, SCHEMA, "dir/config.json")
    message = str(info.value)
    assert "dir/config.json" in message and repr(key) in message and repr(value) in message
    assert f"expected {expected}" in message


def test_check_fields_missing_required():
    with pytest.raises(ValueError, match="config.json: missing required field 'eps'"):
        cfgio.check_fields({"n_layer": 2}, {"n_layer": int, "eps": float}, "config.json")
    with pytest.raises(ValueError, match="'n_layer' is 'x'"):  # optional fields are still checked
        cfgio.check_fields({"n_layer": "x"}, {"n_layer": int}, "config.json", required=())


# ---------------------------------------------------------------- checkpoints

def make(step, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        tensors={"wte.weight": rng.standard_normal((5, 4)).astype(np.float32), "ln.bias": np.zeros(4)},
        config={"model_type": "gpt2", "n_embd": 4, "layer_norm_epsilon": 1e-5},
        manifest={"step": step, "rng": {"state": [int(x) for x in rng.integers(0, 2**32, 4)], "pos": 2},
                  "best_val_loss": 1.5},
        optimizer_tensors={"exp_avg.wte.weight": rng.standard_normal((5, 4)).astype(np.float32),
                           "step": np.array(step, np.int64)},
        extra_files={"vocab.json": '{"a": 0}', "merges.txt": b"#version: 0.2\na b\n"},
    )


def assert_checkpoint(loaded, parts):
    assert loaded.config == parts["config"]
    assert loaded.manifest == {"format_version": ck.FORMAT_VERSION, **parts["manifest"]}
    for mine, theirs in [(loaded.tensors, parts["tensors"]), (loaded.optimizer_tensors, parts["optimizer_tensors"])]:
        assert sorted(mine) == sorted(theirs)
        for name in theirs:
            np.testing.assert_array_equal(mine[name], theirs[name])
            assert mine[name].dtype == theirs[name].dtype
    assert loaded.extra_files == {k: v.encode() if isinstance(v, str) else v
                                  for k, v in parts["extra_files"].items()}


def test_checkpoint_round_trip(tmp_path):
    parts = make(step=7)
    save_checkpoint(tmp_path / "ckpt", **parts)
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["config.json", "merges.txt", "model.safetensors",
                                                      "optimizer.safetensors", "trainer_state.json", "vocab.json"]
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert_checkpoint(loaded, parts)
    assert loaded.path == str(tmp_path / "ckpt")


def test_checkpoint_without_optimizer_or_extras(tmp_path):
    save_checkpoint(tmp_path / "ckpt", tensors={"w": np.ones(2)}, config={}, manifest={"step": 0})
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.optimizer_tensors is None and loaded.extra_files == {}
    assert loaded.manifest == {"format_version": 1, "step": 0}


def test_overwrite_replaces_everything_and_leaves_no_litter(tmp_path):
    save_checkpoint(tmp_path / "ckpt", **make(step=1))
    parts = make(step=2, seed=1)
    del parts["extra_files"]["merges.txt"]
    save_checkpoint(tmp_path / "ckpt", **parts)
    assert_checkpoint(load_checkpoint(tmp_path / "ckpt"), parts)
    assert os.listdir(tmp_path) == ["ckpt"]


@pytest.mark.parametrize("filename, damage", [
    ("model.safetensors", lambda b: b[:-3]),
    ("model.safetensors", lambda b: b"\xff" * 8 + b[8:]),
    ("optimizer.safetensors", lambda b: b[:20]),
    ("config.json", lambda b: b"{not json"),
    ("config.json", lambda b: b"[1, 2]"),
    ("trainer_state.json", lambda b: b'{"format_version": 1}'),
    ("trainer_state.json", lambda b: b'{"format_version": 1, "step": -1}'),
    ("trainer_state.json", lambda b: b'{"format_version": 99, "step": 3}'),
    ("trainer_state.json", lambda b: b'{"format_version": true, "step": 3}'),
    ("trainer_state.json", lambda b: b'{"format_version": 1, "step": 3.0}'),
])
def test_corrupted_file_raises_value_error_naming_it(tmp_path, filename, damage):
    save_checkpoint(tmp_path / "ckpt", **make(step=3))
    path = tmp_path / "ckpt" / filename
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=filename):
        load_checkpoint(tmp_path / "ckpt")


@pytest.mark.parametrize("filename", ["config.json", "model.safetensors", "trainer_state.json"])
def test_missing_files(tmp_path, filename):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nowhere")
    save_checkpoint(tmp_path / "ckpt", **make(step=3))
    os.remove(tmp_path / "ckpt" / filename)
    with pytest.raises(FileNotFoundError, match=filename):
        load_checkpoint(tmp_path / "ckpt")


def crash_on_call(monkeypatch, name, call_number):
    """Make ``os.<name>`` raise on its ``call_number``-th call (1-based), as a crash would."""
    real, calls = getattr(os, name), []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == call_number:
            raise OSError(f"simulated crash in os.{name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, flaky)


@pytest.mark.parametrize("name, call_number", [
    ("replace", 1), ("replace", 3), ("fsync", 2),  # while writing the new files
    ("rename", 1),  # moving the old directory aside
    ("rename", 2),  # moving the new directory into place
])
def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch, name, call_number):
    before = make(step=1)
    save_checkpoint(tmp_path / "ckpt", **before)
    crash_on_call(monkeypatch, name, call_number)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(tmp_path / "ckpt", **make(step=2, seed=1))
    monkeypatch.undo()
    assert_checkpoint(load_checkpoint(tmp_path / "ckpt"), before)
    assert os.listdir(tmp_path) == ["ckpt"]


def test_hard_crash_between_renames_is_recovered(tmp_path):
    """A process killed after moving the old directory aside, before moving the new one in."""
    before, after = make(step=1), make(step=2, seed=1)
    save_checkpoint(tmp_path / "ckpt", **before)
    save_checkpoint(tmp_path / "staged", **after)
    os.rename(tmp_path / "ckpt", tmp_path / "ckpt.old-0123456789abcdef")
    os.rename(tmp_path / "staged", tmp_path / "ckpt.tmp-fedcba9876543210")

    loaded = load_checkpoint(tmp_path / "ckpt")  # reads the old one, changes nothing
    assert_checkpoint(loaded, before)
    assert loaded.path == str(tmp_path / "ckpt.old-0123456789abcdef")
    assert len(os.listdir(tmp_path)) == 2

    save_checkpoint(tmp_path / "ckpt", **after)  # the next save puts its own in place and cleans up
    assert_checkpoint(load_checkpoint(tmp_path / "ckpt"), after)
    assert os.listdir(tmp_path) == ["ckpt"]


def test_leftover_litter_is_ignored_by_load(tmp_path):
    parts = make(step=4)
    save_checkpoint(tmp_path / "ckpt", **parts)
    (tmp_path / "ckpt.tmp-00000000000000aa").mkdir()
    (tmp_path / "ckpt.old-00000000000000bb").mkdir()
    assert_checkpoint(load_checkpoint(tmp_path / "ckpt"), parts)
    assert len(os.listdir(tmp_path)) == 3


def test_load_rereads_when_a_save_swaps_the_directory_midway(tmp_path, monkeypatch):
    first, second = make(step=1), make(step=2, seed=1)
    save_checkpoint(tmp_path / "ckpt", **first)
    real_load_file, swapped = ck.load_file, []

    def load_file_racing_a_save(path):
        if not swapped:  # config and manifest were read from the first checkpoint already
            swapped.append(True)
            save_checkpoint(tmp_path / "ckpt", **second)
        return real_load_file(path)

    monkeypatch.setattr(ck, "load_file", load_file_racing_a_save)
    assert_checkpoint(load_checkpoint(tmp_path / "ckpt"), second)


def test_save_checkpoint_validates_arguments(tmp_path):
    parts = make(step=1)
    bad_cases = [
        (ValueError, "step", dict(parts, manifest={"rng": 1})),
        (ValueError, "step", dict(parts, manifest={"step": True})),
        (ValueError, "format_version", dict(parts, manifest={"step": 1, "format_version": 2})),
        (TypeError, "manifest", dict(parts, manifest=[("step", 1)])),
        (TypeError, "config", dict(parts, config="gpt2")),
        (ValueError, "extra file name", dict(parts, extra_files={"../evil": b""})),
        (ValueError, "extra file name", dict(parts, extra_files={"config.json": b"{}"})),
        (ValueError, "extra file name", dict(parts, extra_files={".hidden": b""})),
        (TypeError, "'vocab.json' must be bytes or str", dict(parts, extra_files={"vocab.json": {"a": 0}})),
        (TypeError, "'wte.weight'", dict(parts, tensors={"wte.weight": np.array([object()])})),
        (TypeError, "not JSON serializable", dict(parts, config={"a": object()})),
    ]
    for error, message, kwargs in bad_cases:
        with pytest.raises(error, match=message):
            save_checkpoint(tmp_path / "ckpt", **kwargs)
        assert os.listdir(tmp_path) == [], message


def test_save_refuses_to_replace_a_non_checkpoint(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing"):
        save_checkpoint(tmp_path / "notes", **make(step=1))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        save_checkpoint(tmp_path / "file", **make(step=1))
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["file", "notes"]
    (tmp_path / "empty").mkdir()
    save_checkpoint(tmp_path / "empty", **make(step=1))
    assert load_checkpoint(tmp_path / "empty").manifest["step"] == 1


def test_manifest_is_plain_json(tmp_path):
    save_checkpoint(tmp_path / "ckpt", **make(step=5))
    state = json.loads((tmp_path / "ckpt" / "trainer_state.json").read_text())
    assert state["format_version"] == 1 and state["step"] == 5 and state["rng"]["pos"] == 2


def test_tidy_checkpoint_restores_an_orphan_and_removes_half_written_copies(tmp_path):
    from minigen.io.checkpoint import tidy_checkpoint
    (tmp_path / "best").mkdir()
    (tmp_path / "best.tmp-0123456789abcdef").mkdir()  # a save killed while writing
    tidy_checkpoint(tmp_path / "best")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    (tmp_path / "last.old-0123456789abcdef").mkdir()  # a save killed between its two renames
    (tmp_path / "last.old-0123456789abcdef" / "config.json").write_text("{}")
    (tmp_path / "last.tmp-fedcba9876543210").mkdir()
    tidy_checkpoint(tmp_path / "last")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "last"]
    assert (tmp_path / "last" / "config.json").read_text() == "{}"
