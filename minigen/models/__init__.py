"""The two model families: GPT (decoder-only transformer) and Seq2Seq (RNN/GRU encoder-decoder)."""
from .gpt import GPT, GPTConfig
from .seq2seq import Seq2Seq, Seq2SeqConfig

__all__ = ["GPT", "GPTConfig", "Seq2Seq", "Seq2SeqConfig"]
