"""SGD, Adam and AdamW with PyTorch's update rules, parameter groups and state_dict layout.

An optimizer holds `param_groups`, a list of dicts each with 'params' (a list of Parameters) and
that group's options, and `state`, a dict from Parameter to that parameter's arrays (moments,
momentum buffer, step count). Updates work in place on `Parameter.data`.
"""
import copy
import numbers
from collections import defaultdict

import numpy as np

from .. import kernels
from ..autograd import Tensor, enable_grad


class Optimizer:
    """Base class of the optimizers, as `torch.optim.Optimizer`.

    `params` is an iterable of Parameters, or of dicts {'params': [...], option: value} whose options
    override `defaults` for that group. Subclasses validate options in `_check_options`, name the
    state each parameter needs in `_state_keys` and update one group in `_step_group`.
    """

    def __init__(self, params, defaults):
        name = type(self).__name__
        if isinstance(params, (Tensor, dict)):
            raise TypeError(f"{name}: params must be an iterable of Parameters or of dicts, "
                            f"got a single {type(params).__name__}; wrap it in a list")
        self._check_options(defaults, "")
        self.defaults = defaults
        self.state = defaultdict(dict)
        self.param_groups = []
        groups = list(params)
        if not groups:
            raise ValueError(f"{name}: params is an empty parameter list; expected Parameters or dicts of options")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        """Add a group of parameters with its own options (missing options take the defaults)."""
        name = type(self).__name__
        where = f"param group {len(self.param_groups)}"
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}: {where} must be a dict with a 'params' entry, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError(f"{name}: {where} has no 'params' entry")
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: {where}, parameter {i} is a {type(p).__name__}; expected a Parameter")
            if p.dtype.kind != "f":
                raise TypeError(f"{name}: {where}, parameter {i} has dtype {p.dtype}; expected a float dtype")
            if not p.is_leaf:
                raise ValueError(f"{name}: {where}, parameter {i} is not a leaf tensor; optimize Parameters")
            if id(p) in seen:
                raise ValueError(f"{name}: {where}, parameter {i} of shape {p.shape} appears more than once "
                                 "in the parameter groups")
            seen.add(id(p))
        group = dict(param_group)
        for key, default in self.defaults.items():
            group.setdefault(key, default)
        self._check_options(group, f"{where}: ")
        group["params"] = params
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """Clear the gradients: set them to None (the default) or fill them with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def step(self, closure=None):
        """Update every parameter that has a gradient. `closure`, if given, recomputes and returns the loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    # ----- state ------------------------------------------------------------------------------
    def state_dict(self):
        """{'state': {index: {name: value}}, 'param_groups': [{option: value, 'params': [index]}]}.

        Parameters are numbered in group order, as in PyTorch. Arrays are copies, so the result is
        a snapshot that later steps do not change."""
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {}
        for p, entry in self.state.items():
            if id(p) in index and entry:
                state[index[id(p)]] = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in entry.items()}
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore options and state saved by `state_dict()` (arrays are copied, cast to each parameter's dtype).

        Raises ValueError naming the group and parameter when the number of groups, a group's size,
        an array's shape or a state entry's keys do not match this optimizer."""
        name = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"{name}: expected a dict with keys 'state' and 'param_groups', got {got}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}: the saved state has {len(saved_groups)} parameter groups, "
                             f"the optimizer has {len(self.param_groups)}")
        located, merged_groups = {}, []
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}: param group {i} has {len(saved['params'])} parameters in the saved "
                                 f"state and {len(group['params'])} in the optimizer")
            for j, (index, p) in enumerate(zip(saved["params"], group["params"])):
                located[index] = (i, j, p)
            options = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            merged = {**group, **options}
            self._check_options(merged, f"param group {i}: ")
            merged_groups.append(merged)
        new_state = {}
        for index, entry in state_dict["state"].items():
            if index not in located:
                raise ValueError(f"{name}: the saved state has an entry for parameter index {index}, "
                                 f"which no parameter group lists")
            i, j, p = located[index]
            where = f"param group {i}, parameter {j} (index {index})"
            expected = set(self._state_keys(merged_groups[i]))
            if set(entry) != expected:
                raise ValueError(f"{name}: {where}: state has keys {sorted(entry)}, expected {sorted(expected)}")
            restored = {}
            for key, value in entry.items():
                if key == "step":
                    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                        raise ValueError(f"{name}: {where}: 'step' must be a non-negative integer, got {value!r}")
                    value = int(value)
                else:
                    value = np.asarray(value)
                    if value.shape != p.shape:
                        raise ValueError(f"{name}: {where}: state {key!r} has shape {value.shape}, "
                                         f"the parameter has shape {p.shape}")
                    value = np.array(value, dtype=p.dtype, order="C")
                restored[key] = value
            new_state[p] = restored
        for group, merged in zip(self.param_groups, merged_groups):
            group.update(merged)
        self.state = defaultdict(dict, new_state)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k != "params"]
        return "\n".join(lines + [")"])

    # ----- for subclasses ---------------------------------------------------------------------
    def _check_options(self, options, where):
        raise NotImplementedError

    def _state_keys(self, group):
        raise NotImplementedError

    def _step_group(self, group):
        raise NotImplementedError

    def _check_range(self, where, key, value, low, high=None):
        """Raise unless low <= value (and value < high when high is given); NaN is always rejected."""
        name = type(self).__name__
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name}: {where}{key} must be a real number, got {value!r}")
        if not (low <= value and (high is None or value < high)):
            bound = f">= {low}" if high is None else f"in [{low}, {high})"
            raise ValueError(f"{name}: {where}{key} must be {bound}, got {value}")


def _param_and_grad(p):
    """The parameter's array, made contiguous and writable once (updates are in place), and its
    gradient as a contiguous array of the parameter's dtype."""
    data = p.data
    if not (data.flags.c_contiguous and data.flags.writeable):
        p.data = data = np.array(data, order="C")
    if p.grad.shape != data.shape:
        raise ValueError(f"a gradient of shape {p.grad.shape} was set on a parameter of shape {data.shape}")
    return data, np.ascontiguousarray(p.grad, dtype=data.dtype)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov momentum and L2 weight decay,
    as `torch.optim.SGD`:

        g = grad + weight_decay * p
        buf = g (first step), else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
        p -= lr * g
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def _check_options(self, options, where):
        for key in ("lr", "momentum", "weight_decay"):
            self._check_range(where, key, options[key], 0.0)
        self._check_range(where, "dampening", options["dampening"], float("-inf"))
        if options["nesterov"] and (options["momentum"] <= 0 or options["dampening"] != 0):
            raise ValueError(f"SGD: {where}nesterov=True needs momentum > 0 and dampening = 0, got "
                             f"momentum={options['momentum']}, dampening={options['dampening']}")

    def _state_keys(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _step_group(self, group):
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            param, grad = _param_and_grad(p)
            if weight_decay != 0:
                grad = grad + weight_decay * param
            if momentum != 0:
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = grad.copy()
                else:
                    buf *= momentum
                    buf += (1.0 - group["dampening"]) * grad
                grad = grad + momentum * buf if group["nesterov"] else buf
            param -= lr * grad


class Adam(Optimizer):
    """Adam, as `torch.optim.Adam`, with its update running in the `adamw_update` kernel.

    weight_decay is an L2 penalty added to the gradient; with decoupled_weight_decay=True (AdamW)
    it instead shrinks the parameter, p *= 1 - lr * weight_decay, before the Adam step. amsgrad=True
    divides by the running maximum of the second moment.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 decoupled_weight_decay=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _check_options(self, options, where):
        for key in ("lr", "eps", "weight_decay"):
            self._check_range(where, key, options[key], 0.0)
        betas = options["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{type(self).__name__}: {where}betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            self._check_range(where, f"betas[{i}]", beta, 0.0, 1.0)

    def _state_keys(self, group):
        keys = ("step", "exp_avg", "exp_avg_sq")
        return keys + ("max_exp_avg_sq",) if group["amsgrad"] else keys

    def _step_group(self, group):
        lr, eps = group["lr"], group["eps"]
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            param, grad = _param_and_grad(p)
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = np.zeros_like(param)
                state["exp_avg_sq"] = np.zeros_like(param)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = np.zeros_like(param)
            state["step"] += 1
            weight_decay = group["weight_decay"]
            if weight_decay != 0 and not group["decoupled_weight_decay"]:
                grad = grad + weight_decay * param
                weight_decay = 0.0
            if group["amsgrad"]:
                kernels.adamw_amsgrad_update(param, grad, state["exp_avg"], state["exp_avg_sq"],
                                             state["max_exp_avg_sq"], lr, beta1, beta2, eps, weight_decay,
                                             state["step"])
            else:
                kernels.adamw_update(param, grad, state["exp_avg"], state["exp_avg_sq"], lr, beta1, beta2, eps,
                                     weight_decay, state["step"])


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as `torch.optim.AdamW`:
    p *= 1 - lr * weight_decay, then the Adam step."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         decoupled_weight_decay=True)


def adamw_param_groups(model, weight_decay):
    """AdamW parameter groups: decay on weights of 2 or more dims only (not biases, LayerNorm, ...)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
