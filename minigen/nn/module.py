"""Module, Parameter and the containers, with PyTorch's names and state_dict semantics."""
from collections import OrderedDict
from contextlib import contextmanager
from collections.abc import Mapping

import numpy as np

from ..autograd import Tensor


class Parameter(Tensor):
    """A Tensor that a Module registers as a learnable parameter (requires_grad by default)."""

    def __init__(self, data, requires_grad=True):
        data = data.data if isinstance(data, Tensor) else data
        super().__init__(np.asarray(data), requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of layers and models: attributes that are Parameters or Modules are registered."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() before setting {name!r}")
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif value is None and name in self.__dict__.get("_none_params", ()):
            self._parameters[name] = None
        object.__setattr__(self, name, value)

    def register_parameter(self, name, param):
        """Register a Parameter or None (an absent parameter such as `bias=False`)."""
        self.__dict__.setdefault("_none_params", set()).add(name)
        setattr(self, name, param)
        if param is None:
            self._parameters[name] = None

    def register_buffer(self, name, array, persistent=True):
        """A non-learnable NumPy array kept with the module; saved in the state_dict unless persistent=False
        (e.g. a causal mask that is rebuilt at construction)."""
        object.__setattr__(self, name, array)
        self._buffers[name] = array
        non_persistent = self.__dict__.setdefault("_non_persistent", set())
        if persistent:
            non_persistent.discard(name)
        else:
            non_persistent.add(name)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ----- traversal ----------------------------------------------------------------------
    def named_modules(self, prefix=""):
        seen, stack = set(), [(prefix, self)]
        while stack:
            name, module = stack.pop(0)
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            stack[0:0] = [(f"{name}.{n}" if name else n, m) for n, m in module._modules.items() if m is not None]

    def modules(self):
        return (m for _, m in self.named_modules())

    def children(self):
        return (m for m in self._modules.values() if m is not None)

    def named_children(self):
        return ((n, m) for n, m in self._modules.items() if m is not None)

    def named_parameters(self, prefix=""):
        seen = set()
        for mod_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if p is None or id(p) in seen:
                    continue  # tied weights appear once, under their first name
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        return (p for _, p in self.named_parameters())

    def apply(self, fn):
        for module in list(self.modules())[::-1]:
            fn(module)
        return self

    # ----- modes and gradients ------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    @contextmanager
    def eval_mode(self):
        """Eval mode (no dropout) inside the with block; afterwards every module is back in its own mode, so a
        submodule the caller keeps in eval mode inside a training model stays in it."""
        modes = [(m, m.training) for m in self.modules()]
        for m, _ in modes:
            object.__setattr__(m, "training", False)
        try:
            yield self
        finally:
            for m, mode in modes:
                object.__setattr__(m, "training", mode)

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def requires_grad_(self, flag=True):
        for p in self.parameters():
            p.requires_grad = flag
        return self

    def to(self, dtype):
        """Convert every parameter and floating buffer to `dtype` in place."""
        dtype = np.dtype(dtype)
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    p.data = p.data.astype(dtype)
                    p.grad = None
            for n, b in list(m._buffers.items()):
                if isinstance(b, np.ndarray) and b.dtype.kind == "f":
                    m.register_buffer(n, b.astype(dtype), persistent=n not in m.__dict__.get("_non_persistent", ()))
        return self

    def double(self):
        return self.to(np.float64)

    def float(self):
        return self.to(np.float32)

    # ----- state ----------------------------------------------------------------------------
    def state_dict(self):
        """Parameter and buffer arrays by dotted name (copies), tied weights under every name."""
        out = OrderedDict()
        for key, (_, _, p) in self._state_entries().items():
            out[key] = np.array(p.data if isinstance(p, Tensor) else p, copy=True)
        return out

    def _state_entries(self):
        """{dotted name: (module, attribute name, Parameter or buffer)} for everything a state_dict holds."""
        entries = OrderedDict()
        for mod_name, module in self.named_modules():
            for name, p in list(module._parameters.items()) + list(module._buffers.items()):
                if p is not None and name not in module.__dict__.get("_non_persistent", ()):
                    entries[f"{mod_name}.{name}" if mod_name else name] = (module, name, p)
        return entries

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Copy arrays into parameters by name. Shapes must match; with strict, names must too. With assign=True
        (PyTorch's keyword) a parameter takes the array itself, without a copy, when its dtype matches: how
        `from_pretrained` uses a memory-mapped checkpoint in place.

        Everything is checked before anything is copied, so a failed load leaves the module unchanged.
        Raises TypeError for a state_dict that is not a mapping or values that are not numeric arrays
        (naming the keys), and ValueError listing missing, unexpected and mis-shaped keys.
        Returns (missing, unexpected)."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict).__name__}")
        own = self._state_entries()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        values, bad_type, bad_shape = {}, [], []
        for key, value in state_dict.items():
            if key not in own:
                continue
            try:
                value = np.asarray(value.data if isinstance(value, Tensor) else value)
            except ValueError as e:  # a ragged nested list
                bad_type.append(f"{key}: {e}")
                continue
            if value.dtype.kind not in "biuf":
                bad_type.append(f"{key}: dtype {value.dtype}")
                continue
            target = own[key][2]
            if value.dtype.kind == "f" and np.dtype(target.dtype).kind in "iu":
                bad_type.append(f"{key}: dtype {value.dtype} where the model holds {target.dtype}")
                continue
            shape = target.shape if isinstance(target, (Tensor, np.ndarray)) else None
            if value.shape != shape:
                bad_shape.append(f"{key}: checkpoint {value.shape}, model {shape}")
            values[key] = value
        if bad_type:
            raise TypeError(f"load_state_dict for {type(self).__name__}: expected bool, integer or floating-point "
                            f"arrays, got " + "; ".join(bad_type))
        if bad_shape or (strict and (missing or unexpected)):
            parts = []
            if missing and strict:
                parts.append(f"missing keys {missing}")
            if unexpected and strict:
                parts.append(f"unexpected keys {unexpected}")
            if bad_shape:
                parts.append("shape mismatch " + "; ".join(bad_shape))
            raise ValueError(f"load_state_dict for {type(self).__name__}: " + ", ".join(parts))
        for key, value in values.items():
            module, name, target = own[key]
            if isinstance(target, Tensor):
                target.data = value.astype(target.dtype, copy=not assign)
            else:
                module.register_buffer(name, value.astype(target.dtype, copy=True))
        return missing, unexpected

    # ----- repr -----------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + (")" if not lines else "\n" + "\n".join(lines) + "\n)")


class Sequential(Module):
    """Modules applied in order."""

    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(Module):
    """A list of Modules registered as children named 0, 1, 2, ..."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)
        return self

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        items = list(self._modules.values())
        return ModuleList(items[i]) if isinstance(i, slice) else items[i]


class ModuleDict(Module):
    """A dict of Modules registered as children by key."""

    def __init__(self, modules=None):
        super().__init__()
        for k, m in (modules or {}).items():
            setattr(self, k, m)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        setattr(self, key, module)

    def __contains__(self, key):
        return key in self._modules

    def __iter__(self):
        return iter(self._modules)

    def __len__(self):
        return len(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()
