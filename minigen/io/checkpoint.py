"""Training checkpoints: one directory per checkpoint, replaced atomically.

Layout::

    config.json             model configuration (Hugging Face style)
    model.safetensors       model tensors
    trainer_state.json      the manifest: format_version, step and whatever else the caller
                            records (RNG state, data position, ...), all JSON-serializable
    optimizer.safetensors   optimizer state tensors (optional)
    <extra files>           e.g. vocab.json, merges.txt

Crash safety. A save never touches the live directory ``D`` while writing: it fills
``D.tmp-<random>`` beside it (every file fsynced), then renames ``D`` to ``D.old-<random>``,
renames the new directory to ``D``, fsyncs the parent and deletes ``D.old-<random>``.
Renames within one directory are atomic, so whenever the process dies one of these holds:
``D`` is the complete old or the complete new checkpoint (any ``.tmp``/``.old`` beside it is
litter), or -- between the two renames -- ``D`` is missing and ``D.old-<random>`` is the
complete old checkpoint, which ``load_checkpoint`` then reads (without changing anything).
The next successful save puts its directory at ``D`` and removes all such litter.
This assumes one writer per ``D`` at a time.

Readers may run while a save swaps the directory: a load checks that the directory it read
is still the same one afterwards (device and inode) and otherwise reads again, so it never
returns files mixed from two checkpoints.
"""
import os
import re
import secrets
import shutil
from dataclasses import dataclass

from .config import atomic_write, fsync_dir, load_json, save_json
from .safetensors import load_file, save_file

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
_RESERVED = {CONFIG_NAME, WEIGHTS_NAME, STATE_NAME, OPTIMIZER_NAME}
_READ_ATTEMPTS = 3


@dataclass
class Checkpoint:
    """A loaded checkpoint; ``path`` is the directory the files were read from."""

    config: dict
    tensors: dict
    manifest: dict
    optimizer_tensors: dict | None
    extra_files: dict
    path: str


def save_checkpoint(path, *, tensors, config, manifest, optimizer_tensors=None, extra_files=None):
    """Write a checkpoint directory at ``path``, atomically replacing any previous one.

    ``tensors`` and ``optimizer_tensors`` map names to arrays; ``config`` and ``manifest``
    are JSON-serializable dicts, and ``manifest`` must hold an integer ``step`` >= 0
    (``format_version`` is filled in when absent). ``extra_files`` maps plain file names
    to bytes or str (str is written as UTF-8).
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    if not isinstance(config, dict):
        raise TypeError(f"save_checkpoint: config must be a dict, got {type(config).__name__}")
    if not isinstance(manifest, dict):
        raise TypeError(f"save_checkpoint: manifest must be a dict, got {type(manifest).__name__}")
    manifest = {"format_version": FORMAT_VERSION, **manifest}
    _check_manifest(manifest, "save_checkpoint: manifest")
    extra = _encode_extra_files(extra_files)

    os.makedirs(parent, exist_ok=True)
    if os.path.exists(path):
        _check_replaceable(path)
    tmp = f"{path}.tmp-{secrets.token_hex(8)}"
    os.mkdir(tmp)
    try:
        save_file(tensors, os.path.join(tmp, WEIGHTS_NAME))
        save_json(config, os.path.join(tmp, CONFIG_NAME))
        save_json(manifest, os.path.join(tmp, STATE_NAME))
        if optimizer_tensors is not None:
            save_file(optimizer_tensors, os.path.join(tmp, OPTIMIZER_NAME))
        for name, data in extra.items():
            atomic_write(os.path.join(tmp, name), lambda f, data=data: f.write(data))
        _swap_in(tmp, path)
    except OSError as e:  # a full disk, say: the message names the checkpoint, the old one stays in place
        shutil.rmtree(tmp, ignore_errors=True)
        message = f"could not write the checkpoint {path}: {e.strerror or e}"
        raise (OSError(e.errno, message) if e.errno else OSError(message)) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, litter in _litter(path):
        shutil.rmtree(litter, ignore_errors=True)


def load_checkpoint(path):
    """Read and validate a checkpoint directory written by ``save_checkpoint``.

    Raises FileNotFoundError when the directory or a required file is missing, and
    ValueError naming the file when any file is malformed.
    """
    path = os.path.abspath(os.fspath(path))
    for _ in range(_READ_ATTEMPTS):
        source = path if os.path.isdir(path) else _orphan(path)
        if source is None:
            raise FileNotFoundError(f"load_checkpoint: no checkpoint directory at {path}")
        before = _identity(source)
        try:
            checkpoint = _read(source)
        except FileNotFoundError:
            if _identity(source) == before:
                raise
            continue
        if _identity(source) == before:
            return checkpoint
    raise RuntimeError(f"load_checkpoint: {path} was replaced {_READ_ATTEMPTS} times while being read")


def _read(directory):
    config = load_json(os.path.join(directory, CONFIG_NAME))
    manifest = load_json(os.path.join(directory, STATE_NAME))
    _check_manifest(manifest, os.path.join(directory, STATE_NAME))
    tensors = load_file(os.path.join(directory, WEIGHTS_NAME))
    optimizer_path = os.path.join(directory, OPTIMIZER_NAME)
    optimizer_tensors = load_file(optimizer_path) if os.path.exists(optimizer_path) else None
    extra_files = {}
    for name in sorted(os.listdir(directory)):
        full = os.path.join(directory, name)
        if name not in _RESERVED and os.path.isfile(full):
            with open(full, "rb") as f:
                extra_files[name] = f.read()
    return Checkpoint(config, tensors, manifest, optimizer_tensors, extra_files, directory)


def _check_manifest(manifest, where):
    """Raise ValueError unless ``manifest`` has a supported format_version and a step."""
    version, step = manifest.get("format_version"), manifest.get("step")
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"{where}: format_version is {version!r}, expected an integer from 1 to "
                         f"{FORMAT_VERSION} (a newer version of minigen may have written it)")
    if type(step) is not int or step < 0:
        raise ValueError(f"{where}: step is {step!r}, expected an integer >= 0")


def _encode_extra_files(extra_files):
    """Validate extra file names and return ``{name: bytes}``."""
    encoded = {}
    for name, data in (extra_files or {}).items():
        if not isinstance(name, str):
            raise TypeError(f"save_checkpoint: extra file names must be str, got {name!r}")
        if (name in _RESERVED or name in ("", ".", "..") or name.startswith(".")
                or "/" in name or (os.altsep and os.altsep in name) or os.sep in name):
            raise ValueError(f"save_checkpoint: extra file name {name!r} must be a plain, non-hidden file "
                             f"name other than {sorted(_RESERVED)}")
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"save_checkpoint: extra file {name!r} must be bytes or str, got {type(data).__name__}")
        encoded[name] = bytes(data)
    return encoded


def _check_replaceable(path):
    """Refuse to swap out something that is not a checkpoint (a typo must not delete a folder)."""
    if not os.path.isdir(path):
        raise ValueError(f"save_checkpoint: {path} exists and is not a directory")
    entries = os.listdir(path)
    if entries and STATE_NAME not in entries and WEIGHTS_NAME not in entries:
        raise ValueError(f"save_checkpoint: {path} is a non-empty directory without {STATE_NAME} or "
                         f"{WEIGHTS_NAME}; refusing to replace it")


def _swap_in(new, path):
    """Move the complete directory ``new`` to ``path``, keeping the old one until it is in place."""
    old = None
    if os.path.exists(path):
        old = f"{path}.old-{secrets.token_hex(8)}"
        os.rename(path, old)
    try:
        os.rename(new, path)
    except BaseException:
        if old is not None:
            os.rename(old, path)
        raise
    fsync_dir(os.path.dirname(path))


def tidy_checkpoint(path):
    """Finish what a save killed midway left beside the checkpoint `path`: when `path` is missing, its old copy
    (the orphan of a save that died between its two renames) is put back; the other .tmp/.old entries go."""
    orphan = _orphan(path)
    if orphan is not None and not os.path.exists(path):
        os.rename(orphan, path)
        fsync_dir(os.path.dirname(path))
    for _, litter in _litter(path):
        shutil.rmtree(litter, ignore_errors=True)


def _litter(path):
    """``(kind, path)`` for the ``path.tmp-*`` / ``path.old-*`` entries a save left beside ``path``."""
    parent, name = os.path.split(path)
    if not os.path.isdir(parent):  # no parent, no litter: the caller reports the missing path itself
        return []
    pattern = re.compile(re.escape(name) + r"\.(tmp|old)-[0-9a-f]{16}")
    matches = (pattern.fullmatch(e) for e in sorted(os.listdir(parent)))
    return [(m.group(1), os.path.join(parent, m.group(0))) for m in matches if m]


def _orphan(path):
    """The ``.old`` directory left when a save died between its two renames, else None."""
    olds = [p for kind, p in _litter(path) if kind == "old" and os.path.isdir(p)]
    return max(olds, key=os.path.getmtime) if olds else None


def _identity(directory):
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
