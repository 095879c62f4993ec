"""Tokenizers: character-level and GPT-2's byte-level BPE, with Hugging Face style files."""
import os

from .bpe import ByteLevelBPETokenizer
from .char import CharTokenizer, read_json

__all__ = ["CharTokenizer", "ByteLevelBPETokenizer", "load_tokenizer"]


def load_tokenizer(directory):
    """Load the tokenizer saved in `directory`: a CharTokenizer when tokenizer_config.json names it,
    else a ByteLevelBPETokenizer when merges.txt is present."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no such directory: {directory}")
    config_path = os.path.join(directory, "tokenizer_config.json")
    if os.path.exists(config_path):
        config = read_json(config_path)
        if isinstance(config, dict) and config.get("tokenizer_class") == "CharTokenizer":
            return CharTokenizer.from_pretrained(directory)
    if os.path.exists(os.path.join(directory, "merges.txt")):
        return ByteLevelBPETokenizer.from_pretrained(directory)
    raise FileNotFoundError(f"{directory}: found neither merges.txt (ByteLevelBPETokenizer) nor a "
                            f"tokenizer_config.json naming CharTokenizer")
