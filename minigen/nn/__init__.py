"""Layers and modules with PyTorch's names, arguments and parameter layouts."""
from .module import Module, ModuleDict, ModuleList, Parameter, Sequential
from . import functional
from . import init
from .layers import GELU, MLP, Dropout, Embedding, LayerNorm, Linear, ReLU, Sigmoid, Tanh
from .rnn import GRU, RNN, GRUCell, RNNCell
from .attention import MultiheadAttention
from .kv_cache import KVCache
from .seq2seq_attention import BahdanauAttention, LuongAttention
from . import utils
