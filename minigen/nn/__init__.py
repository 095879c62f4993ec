"""Layers and modules with PyTorch's names, arguments and parameter layouts."""
from .module import Module, ModuleDict, ModuleList, Parameter, Sequential
from . import functional
