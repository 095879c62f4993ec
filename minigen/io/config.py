"""Safe files: strict JSON parsing, bounded JSON loading, field type checks, atomic writes.

The safetensors and checkpoint modules build on the parser and the atomic writer here.
"""
import json
import math
import os
import secrets

MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 64


def load_json(path, *, max_bytes=MAX_JSON_BYTES, max_depth=MAX_JSON_DEPTH):
    """Read a JSON file whose top level is an object and return it as a dict.

    Rejects, with a ValueError naming the file: files over ``max_bytes``, invalid UTF-8,
    invalid JSON, duplicate keys, NaN/Infinity (also as overflowing literals like 1e999),
    nesting deeper than ``max_depth`` and a top level that is not an object.
    Raises FileNotFoundError when the file does not exist.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)  # bounded even if the file grows after a stat
    if len(raw) > max_bytes:
        raise ValueError(f"{path}: JSON file is larger than max_bytes={max_bytes}")
    try:
        obj = parse_json(raw, max_depth=max_depth)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: top level must be a JSON object, got {type(obj).__name__}")
    return obj


def parse_json(raw, *, max_depth=MAX_JSON_DEPTH):
    """Parse UTF-8 JSON bytes strictly; any problem raises ValueError saying what it is.

    Rejected: invalid UTF-8 or JSON, duplicate keys in an object, NaN/Infinity (also as
    overflowing literals like 1e999) and nesting deeper than ``max_depth``.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not valid UTF-8 ({e})") from None
    try:  # the hooks raise ValueError themselves, with their own message
        obj = json.loads(text, object_pairs_hook=_no_duplicates,
                         parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:  # the C parser recurses; its limit is reached before any crash
        raise ValueError(f"JSON is nested too deeply (max_depth={max_depth})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e})") from None
    if _depth(obj) > max_depth:
        raise ValueError(f"JSON is nested too deeply (max_depth={max_depth})")
    return obj


def save_json(obj, path):
    """Write ``obj`` as indented JSON to ``path`` atomically; NaN/Infinity raise ValueError.

    The text is built before the file is touched, so an unserializable ``obj`` (TypeError)
    leaves any existing file unchanged.
    """
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def check_fields(cfg, schema, path, required=None):
    """Check the types of ``cfg``'s fields against ``schema`` ({key: type or tuple of types}).

    ``required`` lists the keys that must be present (default: every schema key); other
    schema keys are checked only when present, and keys outside the schema are allowed.
    bool does not satisfy int or float; int satisfies float (JSON has one number type).
    Raises ValueError naming ``path``, the key, the value and the expected type.
    """
    required = schema.keys() if required is None else required
    for key in required:
        if key not in cfg:
            raise ValueError(f"{path}: missing required field {key!r}")
    for key, expected in schema.items():
        if key in cfg and not _has_type(cfg[key], expected):
            names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
            raise ValueError(f"{path}: field {key!r} is {cfg[key]!r:.200} ({type(cfg[key]).__name__}), "
                             f"expected {names}")


def atomic_write(path, write):
    """Create or replace ``path`` so that it holds either its old content or all of the new.

    ``write(f)`` fills a binary temp file in the same directory (same filesystem, so the
    final rename is atomic); the data is fsynced before the rename and the directory after
    it. On any error the temp file is removed and ``path`` is untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{secrets.token_hex(8)}")
    try:
        with open(tmp, "xb") as f:  # "x": never clobber; mode follows the umask like open()
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def fsync_dir(directory):
    """Make renames inside ``directory`` durable (a no-op where directories cannot be opened)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _has_type(value, expected):
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def _depth(obj):
    """Nesting depth of parsed JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def _no_duplicates(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r:.100}")
        result[key] = value
    return result


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:50]} overflows to infinity")
    return value
