"""Safe file formats: safetensors, strict JSON configs and atomic checkpoint directories.

Nothing here uses pickle; every reader validates its input and raises ValueError naming
the file on malformed data.
"""
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import atomic_write, check_fields, load_json, parse_json, save_json
from .safetensors import load, load_file, load_metadata, save, save_file

__all__ = [
    "Checkpoint", "load_checkpoint", "save_checkpoint",
    "atomic_write", "check_fields", "load_json", "parse_json", "save_json",
    "load", "load_file", "load_metadata", "save", "save_file",
]
