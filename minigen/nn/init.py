"""Parameter initialisation in place, with torch.nn.init's names, gains and fan rules.

Random draws come from minigen's global generator (see `minigen.manual_seed`) unless a NumPy
Generator is passed as `generator`."""
import contextlib
import math

from ..autograd import Tensor
from .. import random

_skipping = False  # inside skip_init(): fills leave tensors as they are

_LINEAR_LIKE = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                "conv_transpose3d", "sigmoid")


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity, as torch.nn.init.calculate_gain."""
    if nonlinearity in _LINEAR_LIKE:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"calculate_gain: negative_slope {slope!r} is not a number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _check(tensor, name):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name}: expected a Tensor or Parameter, got {type(tensor).__name__}")
    return tensor


def _fill(tensor, values):
    tensor.data[...] = values
    return tensor


@contextlib.contextmanager
def skip_init():
    """Inside this block every init function leaves its tensor as it is (uninitialised): for building a model
    whose weights are about to be loaded, without drawing them first. A model's parameters come from np.empty,
    so memory that is never filled is never touched either (GPT-2 small: 124M draws and 0.5 GB saved)."""
    global _skipping
    outer, _skipping = _skipping, True
    try:
        yield
    finally:
        _skipping = outer


def skipping():
    """Whether init functions are switched off by `skip_init`."""
    return _skipping


def _rng(generator):
    return random.generator() if generator is None else generator


def _calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out): dim 1 and dim 0 times the receptive field (the product of dims 2 and up)."""
    if tensor.ndim < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dimensions, got shape {tensor.shape}")
    receptive = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fill with U(a, b)."""
    _check(tensor, "uniform_")
    if _skipping:
        return tensor
    return _fill(tensor, _rng(generator).uniform(a, b, tensor.shape))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fill with N(mean, std^2)."""
    _check(tensor, "normal_")
    if _skipping:
        return tensor
    return _fill(tensor, _rng(generator).normal(mean, std, tensor.shape))


def constant_(tensor, val):
    """Fill with the value val."""
    _check(tensor, "constant_")
    return tensor if _skipping else _fill(tensor, val)


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot uniform: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(_check(tensor, "xavier_uniform_"))
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot normal: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(_check(tensor, "xavier_normal_"))
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He uniform: U(-bound, bound) with bound = gain * sqrt(3 / fan); gain from `nonlinearity` and slope `a`.

    Linear layers use a=sqrt(5), which gives bound = 1/sqrt(fan_in)."""
    fan = _fan(_check(tensor, "kaiming_uniform_"), mode)
    if fan == 0:
        return tensor  # an empty tensor has nothing to fill
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He normal: N(0, std^2) with std = gain / sqrt(fan)."""
    fan = _fan(_check(tensor, "kaiming_normal_"), mode)
    if fan == 0:
        return tensor
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan), generator)
