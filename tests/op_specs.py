"""The gradient-check spec table: how to draw inputs for every registered op.

SPECS maps an op's class name (its key in `Function.registry`) to an OpSpec:

- `cases`: a Hypothesis strategy that draws a Case: the float64 arrays that receive gradients
  (`inputs`) and every other argument of the op (`kwargs`: dims, flags, targets, indices, seeds);
- `call(*tensors, **kwargs) -> Tensor` runs the op (default: `Op.apply(*tensors, **kwargs)`);
- `reference(*arrays, **kwargs) -> ndarray`, the forward in plain NumPy, checked when given;
- `differentiable=False` for ops without a backward: only the forward is checked.

To add an op, write a strategy that returns `Case(...)` and call `spec("OpName", strategy, ...)` below.
The layer ops (Recurrence, ScaledDotProductAttention) have their specs in op_specs_layers.py, in the
same form, run by test_layers.py; the meta-tests in test_gradcheck.py count both tables.
Inputs are drawn where the op is smooth: kinks (abs/relu at 0, amax ties, log/sqrt/div near 0) are
kept out by the value bounds or rejected with `assume`.

COMPOSITIONS maps each fused op to the same computation built from primitive ops, with `call`'s
signature; tests/test_gradcheck.py checks that values and gradients agree.
"""
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from hypothesis import assume, strategies as st
from hypothesis.extra import numpy as hnp

import minigen as mg
from minigen.autograd import Function

from gradcheck import import_all_modules

import_all_modules()


@dataclass
class Case:
    """One drawn call of an op: arrays that get gradients, and everything else."""

    inputs: tuple
    kwargs: dict = field(default_factory=dict)


@dataclass
class OpSpec:
    name: str
    cases: st.SearchStrategy
    call: Callable
    reference: Optional[Callable] = None
    differentiable: bool = True


SPECS = {}


def spec(name, cases, call=None, reference=None, differentiable=True):
    """Add the spec of the op registered as `name`; `call` defaults to applying the op directly."""
    if name in SPECS:
        raise ValueError(f"duplicate spec for {name!r}")
    if call is None:
        def call(*tensors, **kwargs):
            return Function.registry[name].apply(*tensors, **kwargs)
    SPECS[name] = OpSpec(name, cases, call, reference, differentiable)


# ----- building blocks --------------------------------------------------------------------------
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)


def values(lo=-3.0, hi=3.0):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def away_from_zero(lo, hi):
    """Values with lo <= |x| <= hi: keeps abs, relu and division off their kink or pole at 0."""
    return values(lo, hi) | values(-hi, -lo)


def array(draw, shape, elements=None, unique=False):
    return draw(hnp.arrays(np.float64, shape, elements=values() if elements is None else elements, unique=unique))


def dims(draw, ndim):
    """A reduction `dim` argument: None, one axis or a tuple of distinct axes, negative ones included."""
    n = max(ndim, 1)
    one = st.integers(-n, n - 1)
    several = st.lists(one, min_size=1, max_size=n, unique_by=lambda d: d % n).map(tuple)
    return draw(st.none() | one | several)


def axes_of(dim, ndim):
    """NumPy's `axis` for a minigen `dim` (0-d tensors accept dim 0 and -1, which reduce nothing)."""
    if dim is None or ndim == 0:
        return None
    return tuple(d % ndim for d in ((dim,) if isinstance(dim, int) else dim))


def reduction_groups(x, dim):
    """x as rows, one row per group of elements that a reduction over `dim` combines."""
    axes = axes_of(dim, x.ndim)
    axes = tuple(range(x.ndim)) if axes is None else axes
    moved = np.moveaxis(x, axes, tuple(range(x.ndim - len(axes), x.ndim)))
    return moved.reshape(-1, int(np.prod([x.shape[a] for a in axes])))


def unary(elements=None, **kwarg_strategies):
    @st.composite
    def cases(draw):
        x = array(draw, draw(SHAPES), elements)
        return Case((x,), {k: draw(s) for k, s in kwarg_strategies.items()})
    return cases()


def binary(a_elements=None, b_elements=None):
    @st.composite
    def cases(draw):
        sa, sb = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3)).input_shapes
        return Case((array(draw, sa, a_elements), array(draw, sb, b_elements)))
    return cases()


def reduction(unique=False):
    @st.composite
    def cases(draw):
        x = array(draw, draw(SHAPES), unique=unique)
        return Case((x,), {"dim": dims(draw, x.ndim), "keepdim": draw(st.booleans())})
    return cases()


def reduced(fn):
    """A NumPy reference for a reduction taking minigen's (dim, keepdim)."""
    return lambda x, dim=None, keepdim=False, **kw: fn(x, axis=axes_of(dim, x.ndim), keepdims=keepdim, **kw)


# ----- elementwise ------------------------------------------------------------------------------
def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def np_gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


spec("Add", binary(), reference=np.add)
spec("Sub", binary(), reference=np.subtract)
spec("Mul", binary(), reference=np.multiply)
spec("Div", binary(b_elements=away_from_zero(0.2, 3.0)), reference=np.divide)
spec("Pow", binary(a_elements=values(0.2, 3.0), b_elements=values(-2.0, 2.0)), reference=np.power)
spec("Neg", unary(), reference=np.negative)
spec("Exp", unary(), reference=np.exp)
spec("Log", unary(values(0.1, 3.0)), reference=np.log)
spec("Sqrt", unary(values(0.1, 3.0)), reference=np.sqrt)
spec("Abs", unary(away_from_zero(0.05, 3.0)), reference=np.abs)
spec("Relu", unary(away_from_zero(0.05, 3.0)), reference=lambda x: np.maximum(x, 0))
spec("Tanh", unary(), reference=np.tanh)
spec("Sigmoid", unary(values(-8.0, 8.0)), reference=lambda x: 1 / (1 + np.exp(-x)))
spec("Gelu", unary(approximate=st.sampled_from(["none", "tanh"])), reference=np_gelu)
spec("Cast", unary(dtype=st.just(np.float64)), reference=lambda x, dtype: x.astype(dtype))


@st.composite
def where_cases(draw):
    sc, sa, sb = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3)).input_shapes
    return Case((array(draw, sa), array(draw, sb)), {"condition": draw(hnp.arrays(np.bool_, sc))})


spec("Where", where_cases(), call=lambda a, b, condition: Function.registry["Where"].apply(condition, a, b),
     reference=lambda a, b, condition: np.where(condition, a, b))


@st.composite
def shape_broadcasting_into(draw, shape):
    """A shape that broadcasts to `shape` without growing it: leading dims dropped, some sides set to 1."""
    kept = shape[draw(st.integers(0, len(shape))):]
    return tuple(1 if draw(st.booleans()) else s for s in kept)


@st.composite
def masked_fill_cases(draw):
    x = array(draw, draw(SHAPES))
    mask = draw(hnp.arrays(np.bool_, draw(shape_broadcasting_into(x.shape))))
    return Case((x,), {"mask": mask, "value": draw(values())})


spec("MaskedFill", masked_fill_cases(),
     call=lambda x, mask, value: Function.registry["MaskedFill"].apply(x, mask, value),
     reference=lambda x, mask, value: np.where(mask, value, x))


def _dropout(x, p, seed):
    # a fresh Generator per call: the same mask in every forward of one check
    return Function.registry["Dropout"].apply(x, p, np.random.default_rng(seed))


def np_dropout(x, p, seed):
    keep = np.random.default_rng(seed).random(x.shape) >= p
    return x * keep / (1 - p)


spec("Dropout", unary(p=st.just(0.0) | values(0.0, 0.9), seed=st.integers(0, 2 ** 32 - 1)),
     call=_dropout, reference=np_dropout)

# ----- reductions -------------------------------------------------------------------------------
spec("Sum", reduction(), reference=reduced(np.sum))
spec("Mean", reduction(), reference=reduced(np.mean))


@st.composite
def var_cases(draw):
    case = draw(reduction())
    x, dim = case.inputs[0], case.kwargs["dim"]
    count = reduction_groups(x, dim).shape[1]
    case.kwargs["correction"] = draw(st.sampled_from([0, 1] if count > 1 else [0]))
    return case


spec("Var", var_cases(), reference=lambda x, dim=None, keepdim=False, correction=1: np.var(
    x, axis=axes_of(dim, x.ndim), keepdims=keepdim, ddof=correction))


@st.composite
def amax_cases(draw):
    case = draw(reduction(unique=True))
    groups = np.sort(reduction_groups(case.inputs[0], case.kwargs["dim"]), axis=1)
    # near-ties make the max non-differentiable: keep the top two of every group apart
    assume(groups.shape[1] < 2 or np.all(groups[:, -1] - groups[:, -2] > 1e-3))
    return case


spec("Amax", amax_cases(), reference=reduced(np.amax))

# ----- shape and indexing -----------------------------------------------------------------------


@st.composite
def reshape_cases(draw):
    x = array(draw, draw(SHAPES))
    shape = list(draw(st.permutations(x.shape)))
    if draw(st.booleans()):
        shape.insert(draw(st.integers(0, len(shape))), 1)
    if shape and draw(st.booleans()):
        shape[draw(st.integers(0, len(shape) - 1))] = -1
    return Case((x,), {"shape": tuple(shape)})


spec("Reshape", reshape_cases(), reference=lambda x, shape: x.reshape(shape))
spec("Contiguous", unary(),  # on a transposed view, the case the op is for
     call=lambda x: Function.registry["Contiguous"].apply(x.transpose(0, -1) if x.ndim > 1 else x),
     reference=lambda x: np.ascontiguousarray(np.swapaxes(x, 0, -1) if x.ndim > 1 else x))


@st.composite
def permute_cases(draw):
    x = array(draw, draw(SHAPES))
    perm = draw(st.permutations(range(x.ndim)))
    return Case((x,), {"dims": tuple(d - x.ndim if draw(st.booleans()) else d for d in perm)})


spec("Permute", permute_cases(), reference=lambda x, dims: np.transpose(x, [d % x.ndim for d in dims]))


@st.composite
def expand_cases(draw):
    x = array(draw, draw(SHAPES))
    lead = draw(st.lists(st.integers(1, 3), max_size=2))
    tail = [draw(st.sampled_from([-1, 1, 2, 3] if s == 1 else [-1, s])) for s in x.shape]
    return Case((x,), {"shape": tuple(lead + tail)})


def np_expand(x, shape):
    lead = len(shape) - x.ndim
    return np.broadcast_to(x, tuple(x.shape[i - lead] if s == -1 else s for i, s in enumerate(shape)))


spec("Expand", expand_cases(), reference=np_expand)


@st.composite
def getitem_cases(draw):
    x = array(draw, draw(SHAPES))
    kinds = ["basic"] + (["integer arrays", "rows", "mask"] if x.ndim else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "basic":  # ints, slices, None, Ellipsis
        index = draw(hnp.basic_indices(x.shape, allow_newaxis=True))
    elif kind == "integer arrays":  # one array per axis, repeats included
        index = draw(hnp.integer_array_indices(x.shape, result_shape=hnp.array_shapes(max_dims=2, max_side=4)))
    elif kind == "rows":  # repeated rows, then a slice
        rows = draw(st.lists(st.integers(-x.shape[0], x.shape[0] - 1), min_size=1, max_size=5))
        index = (np.array(rows), Ellipsis)
    else:
        index = draw(hnp.arrays(np.bool_, x.shape))
    return Case((x,), {"index": index})


spec("GetItem", getitem_cases(), reference=lambda x, index: x[index])


@st.composite
def cat_cases(draw):
    shape = list(draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=3)))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        shape[dim] = draw(st.integers(1, 3))
        parts.append(array(draw, tuple(shape)))
    return Case(tuple(parts), {"dim": dim})


spec("Cat", cat_cases(), reference=lambda *xs, dim: np.concatenate(xs, axis=dim))


@st.composite
def stack_cases(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
    parts = tuple(array(draw, shape) for _ in range(draw(st.integers(1, 3))))
    return Case(parts, {"dim": draw(st.integers(-len(shape) - 1, len(shape)))})


spec("Stack", stack_cases(), reference=lambda *xs, dim: np.stack(xs, axis=dim))

# ----- matrix products --------------------------------------------------------------------------


@st.composite
def matmul_cases(draw):
    n, k, m = (draw(st.integers(1, 3)) for _ in range(3))
    batch_a, batch_b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3)).input_shapes
    a_shape = (k,) if draw(st.booleans()) else batch_a + (n, k)
    b_shape = (k,) if draw(st.booleans()) else batch_b + (k, m)
    return Case((array(draw, a_shape), array(draw, b_shape)))


spec("MatMul", matmul_cases(), reference=np.matmul)


@st.composite
def linear_cases(draw):
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
    fan_in, fan_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    params = (array(draw, (fan_out, fan_in)),) + ((array(draw, (fan_out,)),) if draw(st.booleans()) else ())
    return Case((array(draw, lead + (fan_in,)),) + params)


spec("Linear", linear_cases(), reference=lambda x, w, b=0.0: x @ w.T + b)


@st.composite
def linear_gelu_cases(draw):
    case = draw(linear_cases())
    return Case(case.inputs, {"approximate": draw(st.sampled_from(["none", "tanh"]))})


spec("LinearGelu", linear_gelu_cases(),
     reference=lambda x, w, b=0.0, approximate="none": np_gelu(x @ w.T + b, approximate))

# ----- fused ------------------------------------------------------------------------------------


def np_log_softmax(x, dim=-1):
    if x.ndim == 0:
        return np.zeros_like(x)
    shifted = x - x.max(axis=dim, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))


@st.composite
def softmax_cases(draw):
    x = array(draw, draw(SHAPES), values(-5.0, 5.0))
    return Case((x,), {"dim": draw(st.integers(-max(x.ndim, 1), max(x.ndim, 1) - 1))})


spec("Softmax", softmax_cases(), reference=lambda x, dim: np.exp(np_log_softmax(x, dim)))
spec("LogSoftmax", softmax_cases(), reference=np_log_softmax)


@st.composite
def cross_entropy_cases(draw):
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    target = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    ignore_index = draw(st.just(-100) | st.integers(0, c - 1))
    target[draw(hnp.arrays(np.bool_, (n,)))] = ignore_index
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    assume(reduction != "mean" or np.any(target != ignore_index))  # a mean over no targets is NaN
    kwargs = {"target": target, "ignore_index": ignore_index, "reduction": reduction,
              "label_smoothing": draw(st.just(0.0) | values(0.0, 1.0))}
    return Case((array(draw, (n, c), values(-4.0, 4.0)),), kwargs)


def np_cross_entropy(logits, target, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    logp = np_log_softmax(logits, 1)
    valid = target != ignore_index
    nll = -logp[np.arange(len(target)), np.where(valid, target, 0)]
    loss = np.where(valid, (1 - label_smoothing) * nll - label_smoothing * logp.mean(axis=1), 0.0)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / valid.sum()


spec("CrossEntropy", cross_entropy_cases(),
     call=lambda logits, target, **kw: Function.registry["CrossEntropy"].apply(logits, target, **kw),
     reference=np_cross_entropy)


@st.composite
def layer_norm_cases(draw):
    n = draw(st.integers(1, 2))
    normalized = draw(hnp.array_shapes(min_dims=n, max_dims=n, max_side=4))
    x = array(draw, draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)) + normalized, unique=True)
    rows = x.reshape(-1, int(np.prod(normalized)))
    # a row of (nearly) equal values sits where the normalisation's curvature explodes
    assume(rows.shape[1] == 1 or np.all(rows.var(axis=1) > 1e-2))
    has_weight, has_bias = draw(st.booleans()), draw(st.booleans())
    params = tuple(array(draw, normalized, values(-2.0, 2.0)) for flag in (has_weight, has_bias) if flag)
    kwargs = {"has_weight": has_weight, "has_bias": has_bias, "eps": draw(st.sampled_from([1e-5, 1e-2])), "n": n}
    return Case((x,) + params, kwargs)


def _split_params(params, has_weight, has_bias):
    it = iter(params)
    return (next(it) if has_weight else None), (next(it) if has_bias else None)


def _layer_norm(x, *params, has_weight, has_bias, eps, n):
    weight, bias = _split_params(params, has_weight, has_bias)
    return Function.registry["LayerNorm"].apply(x, weight, bias, eps=eps, n=n)


def np_layer_norm(x, *params, has_weight, has_bias, eps, n):
    weight, bias = _split_params(params, has_weight, has_bias)
    axes = tuple(range(x.ndim - n, x.ndim))
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return y * (1.0 if weight is None else weight) + (0.0 if bias is None else bias)


spec("LayerNorm", layer_norm_cases(), call=_layer_norm, reference=np_layer_norm)


@st.composite
def embedding_cases(draw, padding=False):
    """padding=True also draws padding_idx, whose row is read but deliberately gets no gradient, so
    only the comparison with the composition (which detaches that row) can check it."""
    num, dim = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    ids = draw(hnp.arrays(np.int64, draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=4)),
                          elements=st.integers(0, num - 1)))
    padding_idx = draw(st.none() | st.integers(0, num - 1)) if padding else None
    return Case((array(draw, (num, dim)),), {"ids": ids, "padding_idx": padding_idx})


spec("Embedding", embedding_cases(),
     call=lambda weight, ids, padding_idx: Function.registry["Embedding"].apply(weight, ids, padding_idx=padding_idx),
     reference=lambda weight, ids, padding_idx: weight[ids])


# ----- fused ops rebuilt from primitives --------------------------------------------------------
def softmax_composed(x, dim):
    e = (x - x.amax(dim=dim, keepdim=True)).exp()
    return e / e.sum(dim=dim, keepdim=True)


def log_softmax_composed(x, dim):
    shifted = x - x.amax(dim=dim, keepdim=True)
    return shifted - shifted.exp().sum(dim=dim, keepdim=True).log()


def cross_entropy_composed(logits, target, ignore_index, reduction, label_smoothing):
    logp = log_softmax_composed(logits, 1)
    valid = target != ignore_index
    nll = -logp[np.arange(len(target)), np.where(valid, target, 0)]
    loss = ((1 - label_smoothing) * nll - label_smoothing * logp.mean(dim=1)) * valid.astype(np.float64)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / float(valid.sum())


def layer_norm_composed(x, *params, has_weight, has_bias, eps, n):
    weight, bias = _split_params(params, has_weight, has_bias)
    axes = tuple(range(-n, 0))
    centered = x - x.mean(dim=axes, keepdim=True)
    y = centered / (x.var(dim=axes, keepdim=True, correction=0) + eps).sqrt()
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


def linear_composed(x, weight, bias=None):
    y = x @ weight.transpose(0, 1)
    return y if bias is None else y + bias


def linear_gelu_composed(x, weight, bias=None, approximate="none"):
    return mg.nn.functional.gelu(linear_composed(x, weight, bias), approximate=approximate)


def embedding_composed(weight, ids, padding_idx):
    rows = weight[ids]
    if padding_idx is None:
        return rows
    # the padding row is looked up as usual but receives no gradient
    return mg.where((ids == padding_idx)[..., None], weight.detach()[ids], rows)


@dataclass
class Composition:
    """A fused op rebuilt from primitives; `cases` overrides the spec's strategy when given."""

    fn: Callable
    cases: Optional[st.SearchStrategy] = None


COMPOSITIONS = {
    "Softmax": Composition(softmax_composed),
    "LogSoftmax": Composition(log_softmax_composed),
    "CrossEntropy": Composition(cross_entropy_composed),
    "LayerNorm": Composition(layer_norm_composed),
    "Linear": Composition(linear_composed),
    "LinearGelu": Composition(linear_gelu_composed),
    "Embedding": Composition(embedding_composed, embedding_cases(padding=True)),
}
