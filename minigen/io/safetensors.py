"""Reader and writer for the safetensors format, on NumPy only.

A file is: an 8-byte little-endian unsigned header length N, N bytes of UTF-8 JSON
(padded with spaces to a multiple of 8), then the data buffer. The header maps each tensor
name to ``{"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}`` (offsets relative
to the buffer) and may hold ``"__metadata__": {str: str}``. Data is little-endian, C order.

Loading validates the whole header against the file size before reading any tensor data,
so a corrupt or hostile file costs at most the header cap in memory and raises ValueError.
Loaded arrays are fresh, writable copies in native byte order: nothing refers back to
the file or the input bytes. BF16 tensors load as float32 (exact).

`load_file(path, mmap=True)` maps the file instead of reading it: each array is a view of the
mapping, so loading costs no reads and no memory until a tensor is used, and pages the system
already caches are shared. The mapping is private (copy-on-write): an array can be written, the
page written gets its own memory, and the file is never modified. Tensors that cannot be used in
place (BF16 and BOOL, a byte order other than the machine's, a misaligned offset) are copies.
"""
import json
import os
import sys

import numpy as np

from .config import atomic_write, parse_json

MAX_HEADER_SIZE = 100_000_000  # same cap as the reference implementation

# name -> (little-endian NumPy dtype, alignment rank). The rank is the position in the
# reference implementation's Dtype enum; writers sort by it descending, then by name,
# which is what makes our files byte-identical to theirs.
_DTYPES = {
    "BOOL": (np.dtype("?"), 0),
    "U8": (np.dtype("u1"), 4),
    "I8": (np.dtype("i1"), 5),
    "I16": (np.dtype("<i2"), 9),
    "U16": (np.dtype("<u2"), 10),
    "F16": (np.dtype("<f2"), 11),
    "BF16": (np.dtype("<u2"), 12),  # raw bits; widened to float32 after reading
    "I32": (np.dtype("<i4"), 13),
    "U32": (np.dtype("<u4"), 14),
    "F32": (np.dtype("<f4"), 15),
    "F64": (np.dtype("<f8"), 16),
    "I64": (np.dtype("<i8"), 17),
    "U64": (np.dtype("<u8"), 18),
}
_NAME_OF = {dt.newbyteorder("="): name for name, (dt, _) in _DTYPES.items() if name != "BF16"}
_MAX_NDIM = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32


def load_file(path, mmap=False):
    """Read a ``.safetensors`` file into ``{name: np.ndarray}`` (writable copies, file order); with mmap=True,
    views of a private map of the file (see the module's docstring)."""
    if not isinstance(mmap, bool):
        raise TypeError(f"load_file: mmap must be True or False, got {mmap!r}")
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        start, entries, _ = _read_header(f.read, size, path)
        if mmap:
            return _mapped_tensors(f, start, entries)
        tensors = {}
        for name, dtype, shape, begin, end in entries:
            arr = np.empty(shape, _DTYPES[dtype][0])
            f.seek(start + begin)
            if end > begin and f.readinto(arr.reshape(-1).view(np.uint8)) != end - begin:
                raise ValueError(f"{path}: file ended while reading tensor {name!r} (was it truncated?)")
            tensors[name] = _finish(arr, dtype)
    return tensors


def _mapped_tensors(f, start, entries):
    """{name: view of a copy-on-write map of the open file f} for a validated header's entries."""
    mapped = np.memmap(f, dtype=np.uint8, mode="c").view(np.ndarray)  # a plain array: slices stay plain
    tensors = {}
    for name, dtype, shape, begin, end in entries:
        np_dtype = _DTYPES[dtype][0]
        arr = mapped[start + begin:start + end].view(np_dtype).reshape(shape)
        usable = dtype not in ("BF16", "BOOL") and np_dtype.isnative and arr.flags.aligned
        tensors[name] = arr if usable else _finish(arr.copy(), dtype)
    return tensors


def load(data):
    """Parse safetensors bytes into ``{name: np.ndarray}`` (writable copies, file order)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"load: data must be bytes, bytearray or memoryview, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    pos = 0

    def read(n):
        nonlocal pos
        chunk = view[pos:pos + n]
        pos += len(chunk)
        return bytes(chunk)

    start, entries, _ = _read_header(read, len(view), "<bytes>")
    tensors = {}
    for name, dtype, shape, begin, end in entries:
        np_dtype = _DTYPES[dtype][0]
        flat = np.frombuffer(view, np_dtype, count=(end - begin) // np_dtype.itemsize, offset=start + begin)
        tensors[name] = _finish(flat.reshape(shape).copy(), dtype)
    return tensors


def load_metadata(path):
    """Return the ``__metadata__`` dict of a file ({} when absent), after validating its header."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        return _read_header(f.read, os.fstat(f.fileno()).st_size, path)[2]


def save(tensors, metadata=None):
    """Serialize ``{name: array}`` (and optional ``{str: str}`` metadata) to safetensors bytes."""
    header, arrays = _prepare(tensors, metadata)
    return b"".join([header] + [a.tobytes() for a in arrays])


def save_file(tensors, path, metadata=None):
    """Write ``{name: array}`` to ``path`` atomically (temp file, fsync, rename).

    Arrays of dtype float64/32/16, int64/32/16/8, uint64/32/16/8 and bool are stored as
    F64/F32/F16, I64/I32/I16/I8, U64/U32/U16/U8 and BOOL.
    """
    header, arrays = _prepare(tensors, metadata)

    def write(f):
        f.write(header)
        for a in arrays:
            f.write(a.data)

    atomic_write(path, write)


def _finish(arr, dtype):
    if dtype == "BF16":  # bfloat16 is the top half of a float32
        wide = arr.astype(np.uint32)
        wide <<= 16  # in place: an operator would turn a 0-d array into a scalar
        return wide.view(np.float32)
    if dtype == "BOOL":  # a byte other than 0/1 must still read as a proper True
        return arr.view(np.uint8).astype(bool)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _prepare(tensors, metadata):
    """Validate inputs; return the padded header (with its length prefix) and the arrays in file order."""
    if not isinstance(tensors, dict):
        raise TypeError(f"save: tensors must be a dict of name -> np.ndarray, got {type(tensors).__name__}")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise TypeError(f"save: metadata must be a dict of str -> str or None, got {type(metadata).__name__}")
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"save: metadata must map str -> str, got {k!r}: {v!r}")
    items = []
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"save: tensor names must be str, got {name!r} ({type(name).__name__})")
        if name == "__metadata__":
            raise ValueError("save: '__metadata__' is reserved and cannot name a tensor")
        if not isinstance(value, (np.ndarray, np.generic)):
            raise TypeError(f"save: tensor {name!r} must be a np.ndarray, got {type(value).__name__}")
        dtype = _NAME_OF.get(value.dtype.newbyteorder("="))
        if dtype is None:
            raise TypeError(f"save: tensor {name!r} has unsupported dtype {value.dtype}; "
                            f"supported: float64/32/16, int64/32/16/8, uint64/32/16/8, bool")
        items.append((name, dtype, np.asarray(value, _DTYPES[dtype][0], order="C")))
    items.sort(key=lambda item: (-_DTYPES[item[1]][1], item[0]))

    header = {} if metadata is None else {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    for name, dtype, arr in items:
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    try:
        raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:  # lone surrogates have no UTF-8 form
        raise ValueError(f"save: tensor names and metadata must be encodable as UTF-8: {e}") from None
    raw += b" " * (-len(raw) % 8)  # keeps the buffer 8-byte aligned within the file
    return len(raw).to_bytes(8, "little") + raw, [arr for _, _, arr in items]


def _read_header(read, size, where):
    """Read and fully validate a header via ``read(n)``, for a source of ``size`` bytes.

    Returns ``(buffer_start, entries, metadata)`` with entries ``(name, dtype, shape,
    begin, end)`` sorted by offset. Nothing larger than the header is allocated.
    """
    if size < 8:
        raise ValueError(f"{where}: {size} bytes is too short for a safetensors file (need at least 8)")
    n = int.from_bytes(read(8), "little")
    if n > MAX_HEADER_SIZE:
        raise ValueError(f"{where}: header length {n} exceeds the {MAX_HEADER_SIZE}-byte limit")
    if 8 + n > size:
        raise ValueError(f"{where}: header length {n} runs past the end of the {size}-byte file")
    raw = read(n)
    if len(raw) != n:
        raise ValueError(f"{where}: file ended inside the header (was it truncated?)")
    try:
        header = parse_json(raw)
    except ValueError as e:
        raise ValueError(f"{where}: bad header: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{where}: header must be a JSON object, got {type(header).__name__}")

    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata  # the reference reads null as "no metadata"
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{where}: '__metadata__' must be an object of string values, got {metadata!r:.200}")

    entries = sorted((_check_entry(name, info, where) for name, info in header.items()),
                     key=lambda e: (e[3], e[4]))
    # As the reference: tensors must tile the buffer from 0 with no gap or overlap.
    position = 0
    for name, _, _, begin, end in entries:
        if begin != position:
            problem = "overlaps the previous tensor" if begin < position else "leaves a gap before it"
            raise ValueError(f"{where}: tensor {name!r} starts at {begin}, expected {position} ({problem})")
        position = end
    if 8 + n + position != size:
        raise ValueError(f"{where}: tensors cover {position} data bytes but the file holds "
                         f"{size - 8 - n} after the header")
    return 8 + n, entries, metadata


def _check_entry(name, info, where):
    """Validate one tensor entry and return ``(name, dtype, shape, begin, end)``."""
    def bad(what):
        return ValueError(f"{where}: tensor {name!r}: {what}")

    if not isinstance(info, dict):
        raise bad(f"entry must be an object, got {info!r:.200}")
    if set(info) != {"dtype", "shape", "data_offsets"}:
        raise bad(f"entry must have exactly the keys dtype, shape, data_offsets; got {sorted(info)!r:.200}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise bad(f"unknown dtype {dtype!r:.100}; expected one of {', '.join(_DTYPES)}")
    if not isinstance(shape, list) or not all(_is_size(d) for d in shape):
        raise bad(f"shape must be a list of non-negative integers, got {shape!r:.200}")
    if len(shape) > _MAX_NDIM:
        raise bad(f"shape has {len(shape)} dimensions, at most {_MAX_NDIM} supported")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_size(o) for o in offsets):
        raise bad(f"data_offsets must be [begin, end] of non-negative integers, got {offsets!r:.200}")
    begin, end = offsets
    if end < begin:
        raise bad(f"data_offsets [{begin}, {end}] end before they begin")
    itemsize = _DTYPES[dtype][0].itemsize
    count = 1
    for d in shape:  # NumPy's own limit: the product of the non-zero dims must fit in intp
        count *= d or 1
        if count * itemsize > sys.maxsize:
            raise bad(f"shape {shape} is too large to allocate")
    nbytes = 0 if 0 in shape else count * itemsize
    if end - begin != nbytes:
        raise bad(f"data_offsets [{begin}, {end}] hold {end - begin} bytes but shape {shape} "
                  f"of {dtype} needs {nbytes}")
    return name, dtype, tuple(shape), begin, end


def _is_size(x):
    return type(x) is int and 0 <= x <= sys.maxsize  # type() rather than isinstance: bool is not a size
