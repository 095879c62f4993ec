"""Optimizer state as NumPy arrays plus a JSON-serialisable dict, for safetensors checkpoints (no pickle).

    arrays, meta = optimizer_state_to_arrays(opt)     # arrays: {"state.<index>.<name>": ndarray}
    optimizer_state_from_arrays(opt, arrays, meta)    # meta: {"optimizer", "param_groups", "state"}
"""
import math
import re

import numpy as np

_ARRAY_NAME = re.compile(r"state\.(\d+)\.([A-Za-z_][A-Za-z0-9_]*)")


def optimizer_state_to_arrays(optimizer):
    """Split `optimizer.state_dict()` into (arrays, meta).

    arrays maps "state.<param index>.<state name>" (e.g. "state.0.exp_avg") to arrays; meta holds the
    optimizer's class name, its param_groups (tuples become lists) and the non-array state values
    (e.g. the step count) keyed by the parameter index as a string. json.dumps(meta) works."""
    state_dict = optimizer.state_dict()
    arrays, scalars = {}, {}
    for index, entry in state_dict["state"].items():
        scalars[str(index)] = {}
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                arrays[f"state.{index}.{key}"] = value
            else:
                scalars[str(index)][key] = _jsonable(value, f"state[{index}][{key!r}]")
    groups = [{k: _jsonable(v, f"param_groups[{i}][{k!r}]") for k, v in group.items()}
              for i, group in enumerate(state_dict["param_groups"])]
    return arrays, {"optimizer": type(optimizer).__name__, "param_groups": groups, "state": scalars}


def optimizer_state_from_arrays(optimizer, arrays, meta):
    """Load state saved by `optimizer_state_to_arrays` into `optimizer` (same class, same groups).

    Raises ValueError when the optimizer class, the groups, an array's name or a shape does not match."""
    name = "optimizer_state_from_arrays"
    if not isinstance(meta, dict) or not {"optimizer", "param_groups", "state"} <= set(meta):
        got = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{name}: meta must be a dict with 'optimizer', 'param_groups' and 'state', got {got}")
    if meta["optimizer"] != type(optimizer).__name__:
        raise ValueError(f"{name}: the state was saved from {meta['optimizer']}, "
                         f"cannot load it into {type(optimizer).__name__}")
    groups = []
    for i, (saved, group) in enumerate(zip(meta["param_groups"], optimizer.param_groups)):
        if not isinstance(saved, dict) or not isinstance(saved.get("params"), list):
            raise ValueError(f"{name}: meta param_groups[{i}] must be a dict with a 'params' list, got {saved!r}")
        # JSON turned tuples (betas) into lists: give them back the type the optimizer uses
        groups.append({k: tuple(v) if isinstance(v, list) and isinstance(group.get(k), tuple) else v
                       for k, v in saved.items()})
    groups += meta["param_groups"][len(groups):]  # a count mismatch is reported by load_state_dict
    state = {}
    for index, values in meta["state"].items():
        if not str(index).isdigit() or not isinstance(values, dict):
            raise ValueError(f"{name}: meta state entry {index!r}: expected a parameter index and a dict, "
                             f"got {values!r}")
        state[int(index)] = dict(values)
    for key, array in arrays.items():
        match = _ARRAY_NAME.fullmatch(key)
        if match is None:
            raise ValueError(f"{name}: array name {key!r} is not of the form 'state.<index>.<name>'")
        state.setdefault(int(match.group(1)), {})[match.group(2)] = array
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _jsonable(value, where):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise TypeError(f"optimizer_state_to_arrays: {where} = {value!r} cannot be stored as JSON "
                    "(expected None, a bool, an int, a finite float, a str or a list of them)")
