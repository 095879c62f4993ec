"""Gradient utilities with torch.nn.utils' names."""
import math

import numpy as np

from ..autograd import Tensor


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients of `parameters` in place so that their joint norm is at most `max_norm`.

    The joint norm is the `norm_type`-norm of all gradients concatenated (float('inf') for the largest
    magnitude). Every gradient is multiplied by min(1, max_norm / (total_norm + 1e-6)), as in PyTorch;
    parameters without a gradient are skipped. Returns the total norm before clipping, as a float.
    With error_if_nonfinite=True a NaN or infinite total norm raises RuntimeError instead."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    max_norm, norm_type = _number("max_norm", max_norm), _number("norm_type", norm_type)
    if not max_norm >= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm}")
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be > 0 or inf, got {norm_type}")
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    order = None if norm_type == 2.0 else norm_type  # None takes NumPy's dot-product path: no temporaries
    norms = np.array([np.linalg.norm(g.reshape(-1), order) for g in grads], dtype=np.float64)
    total = float(np.linalg.norm(norms, order))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, "
                           "so it cannot be clipped. To disable this error and scale the gradients by the "
                           "non-finite norm anyway, set `error_if_nonfinite=False`")
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # also scales by NaN when the norm is NaN, as PyTorch does
        for g in grads:
            g *= coef
    return total


def _number(name, value):
    """float(value) as PyTorch takes it (so norm_type='inf' works), with a TypeError naming the argument."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"clip_grad_norm_: {name} must be a number or 'inf', got {value!r}") from None
