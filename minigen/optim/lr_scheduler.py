"""Learning-rate schedules with torch.optim.lr_scheduler's names, plus nanoGPT's warm-up + cosine.

A scheduler sets each group's 'lr' from that group's initial lr and the number of `step()` calls:
construction applies step 0, and each `step()` (called after `optimizer.step()`) moves one on.
Rates are computed in closed form from the step count.
"""
import math
import numbers

from .optimizers import Optimizer


def get_lr_warmup_cosine(step, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    """nanoGPT's schedule: the learning rate for iteration `step` (counting from 0).

    Linear warm-up learning_rate * (step + 1) / (warmup_iters + 1) while step < warmup_iters, then
    cosine decay from learning_rate to min_lr, reached at lr_decay_iters, and min_lr after."""
    _check_int("get_lr_warmup_cosine", "step", step, 0)
    if not (isinstance(learning_rate, numbers.Real) and learning_rate >= 0):
        raise ValueError(f"get_lr_warmup_cosine: learning_rate must be >= 0, got {learning_rate!r}")
    _check_schedule("get_lr_warmup_cosine", warmup_iters, lr_decay_iters, min_lr)
    if step < warmup_iters:
        return learning_rate * (step + 1) / (warmup_iters + 1)
    if step >= lr_decay_iters:
        return min_lr
    decay_ratio = (step - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


class LRScheduler:
    """Base class, as `torch.optim.lr_scheduler.LRScheduler`. Subclasses implement `get_lr()`, the rates
    of all groups at step `last_epoch`. With last_epoch=-1 the groups' current lrs become their
    'initial_lr'; to resume, pass the last step taken (the groups must then hold 'initial_lr')."""

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: optimizer must be a minigen Optimizer, "
                            f"got {type(optimizer).__name__}")
        _check_int(type(self).__name__, "last_epoch", last_epoch, -1)
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] "
                                   "when resuming an optimizer")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self):
        raise NotImplementedError

    def step(self):
        """Advance one step and set every group's lr."""
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """The lrs set by the last step(), one per group."""
        return list(self._last_lr)

    def state_dict(self):
        """The scheduler's attributes except the optimizer (and functions): JSON-serialisable."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self.__dict__.items()
                if k not in ("optimizer", "lr_lambdas")}

    def load_state_dict(self, state_dict):
        """Restore attributes saved by state_dict(); the optimizer's own state_dict restores the lrs."""
        expected = set(self.state_dict())
        if not isinstance(state_dict, dict) or set(state_dict) != expected:
            got = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"{type(self).__name__}.load_state_dict: expected keys {sorted(expected)}, got {got}")
        if len(state_dict["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(f"{type(self).__name__}.load_state_dict: {len(state_dict['base_lrs'])} base_lrs "
                             f"for an optimizer with {len(self.optimizer.param_groups)} parameter groups")
        self.__dict__.update({k: list(v) if isinstance(v, list) else v for k, v in state_dict.items()})


class LambdaLR(LRScheduler):
    """lr = initial_lr * lr_lambda(step); lr_lambda is one function or a list of one per group.
    The functions are not part of state_dict()."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        n = len(optimizer.param_groups)
        lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * n
        if len(lambdas) != n:
            raise ValueError(f"LambdaLR: expected {n} lr_lambdas (one per param group), got {len(lambdas)}")
        for f in lambdas:
            if not callable(f):
                raise TypeError(f"LambdaLR: lr_lambda must be callable, got {type(f).__name__}")
        self.lr_lambdas = lambdas
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * f(self.last_epoch) for base, f in zip(self.base_lrs, self.lr_lambdas)]


class LinearLR(LRScheduler):
    """Scale the lr by a factor moving linearly from start_factor to end_factor over total_iters steps."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if not (isinstance(start_factor, numbers.Real) and 0 < start_factor <= 1):
            raise ValueError(f"LinearLR: start_factor must be in (0, 1], got {start_factor!r}")
        if not (isinstance(end_factor, numbers.Real) and 0 <= end_factor <= 1):
            raise ValueError(f"LinearLR: end_factor must be in [0, 1], got {end_factor!r}")
        _check_int("LinearLR", "total_iters", total_iters, 1)
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        done = min(self.total_iters, self.last_epoch) / self.total_iters
        factor = self.start_factor + (self.end_factor - self.start_factor) * done
        return [base * factor for base in self.base_lrs]


class ConstantLR(LRScheduler):
    """Scale the lr by `factor` for the first total_iters steps, then use the initial lr."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        if not (isinstance(factor, numbers.Real) and 0 <= factor <= 1):
            raise ValueError(f"ConstantLR: factor must be in [0, 1], got {factor!r}")
        _check_int("ConstantLR", "total_iters", total_iters, 0)
        self.factor, self.total_iters = factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        factor = 1.0 if self.last_epoch >= self.total_iters else self.factor
        return [base * factor for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * step / T_max)) / 2."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        _check_int("CosineAnnealingLR", "T_max", T_max, 1)
        if not (isinstance(eta_min, numbers.Real) and eta_min >= 0):
            raise ValueError(f"CosineAnnealingLR: eta_min must be >= 0, got {eta_min!r}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        coeff = (1.0 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * coeff for base in self.base_lrs]


class WarmupCosineLR(LRScheduler):
    """nanoGPT's schedule (`get_lr_warmup_cosine`) with each group's initial lr as the peak:
    linear warm-up over warmup_iters steps, cosine decay to min_lr at lr_decay_iters, min_lr after."""

    def __init__(self, optimizer, warmup_iters, lr_decay_iters, min_lr, last_epoch=-1):
        _check_schedule("WarmupCosineLR", warmup_iters, lr_decay_iters, min_lr)
        self.warmup_iters, self.lr_decay_iters, self.min_lr = warmup_iters, lr_decay_iters, min_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [get_lr_warmup_cosine(self.last_epoch, base, self.warmup_iters, self.lr_decay_iters, self.min_lr)
                for base in self.base_lrs]


def _check_int(owner, name, value, low, low_name=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an integer, got {value!r}")
    if value < low:
        bound = f"{low_name} ({low})" if low_name else low
        raise ValueError(f"{owner}: {name} must be >= {bound}, got {value}")


def _check_schedule(owner, warmup_iters, lr_decay_iters, min_lr):
    _check_int(owner, "warmup_iters", warmup_iters, 0)
    _check_int(owner, "lr_decay_iters", lr_decay_iters, warmup_iters, "warmup_iters")
    if not (isinstance(min_lr, numbers.Real) and min_lr >= 0):
        raise ValueError(f"{owner}: min_lr must be >= 0, got {min_lr!r}")
