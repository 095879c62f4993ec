"""The Tensor API: construction, dtypes, operators, methods, indexing and the backward engine."""
import operator

import numpy as np
import pytest

import minigen as mg
import minigen.nn.functional as F
from minigen.autograd import Function


def leaf(values, dtype=np.float64):
    return mg.tensor(np.asarray(values, dtype=dtype), requires_grad=True)


# ----- construction and dtypes -------------------------------------------------------------------
@pytest.mark.parametrize("data, dtype", [
    (1.5, np.float32), ([1.0, 2.0], np.float32), ([[1, 2.5]], np.float32),
    (3, np.int64), ([1, 2], np.int64), (True, np.bool_),
    (np.zeros(2), np.float64), (np.float64(2.0), np.float64), (np.zeros(2, np.float32), np.float32),
    (np.zeros(2, np.int32), np.int32), (np.int64(4), np.int64),
])
def test_tensor_dtype_follows_pytorch(data, dtype):
    t = mg.tensor(data)
    assert t.dtype == dtype
    np.testing.assert_array_equal(t.numpy(), np.asarray(data))


def test_tensor_copies_and_converts():
    a = np.ones(3)
    t = mg.tensor(a)
    a[0] = 5
    assert t.tolist() == [1.0, 1.0, 1.0]
    assert mg.tensor([1, 2], dtype=mg.float64).dtype == np.float64
    assert mg.tensor(mg.tensor(np.ones(2))).dtype == np.float64
    with pytest.raises(TypeError, match="floating"):
        mg.tensor([1, 2], requires_grad=True)


def test_constructors():
    assert mg.zeros(2, 3).shape == (2, 3) and mg.zeros((2, 3)).dtype == np.float32
    assert mg.ones(4, dtype=mg.float64).dtype == np.float64 and mg.ones(4).tolist() == [1.0] * 4
    assert mg.zeros(2, requires_grad=True).requires_grad
    r = mg.rand(1000)
    assert r.dtype == np.float32 and 0 <= r.numpy().min() and r.numpy().max() < 1
    n = mg.randn(2000, dtype=mg.float64)
    assert n.dtype == np.float64 and abs(n.numpy().mean()) < 0.1 and abs(n.numpy().std() - 1) < 0.1
    assert mg.arange(5).dtype == np.int64 and mg.arange(5).tolist() == [0, 1, 2, 3, 4]
    assert mg.arange(1, 2, 0.5).dtype == np.float32 and mg.arange(1, 2, 0.5).tolist() == [1.0, 1.5]
    assert mg.full((2, 2), 7.0).dtype == np.float32 and mg.full((2, 2), 7.0).numpy().sum() == 28
    assert mg.full(3, 7).dtype == np.int64 and mg.full(3, True).dtype == np.bool_
    t = mg.tensor(np.ones((2, 3)))
    assert mg.zeros_like(t).dtype == np.float64 and mg.zeros_like(t).numpy().sum() == 0
    assert mg.ones_like(t, dtype=mg.float32).dtype == np.float32 and mg.ones_like(t).shape == (2, 3)
    with pytest.raises(ValueError, match="non-negative"):
        mg.zeros(-1)


def test_manual_seed_reproducibility():
    mg.manual_seed(123)
    a, b = mg.randn(5).numpy(), mg.rand(3).numpy()
    mg.manual_seed(123)
    np.testing.assert_array_equal(mg.randn(5).numpy(), a)
    np.testing.assert_array_equal(mg.rand(3).numpy(), b)
    mg.manual_seed(124)
    assert not np.array_equal(mg.randn(5).numpy(), a)
    state = mg.random.get_rng_state()
    c = mg.randn(4).numpy()
    mg.random.set_rng_state(state)
    np.testing.assert_array_equal(mg.randn(4).numpy(), c)
    with pytest.raises(TypeError, match="seed"):
        mg.manual_seed(1.5)


# ----- grad mode -----------------------------------------------------------------------------------
def test_no_grad_context_and_decorator():
    x = leaf([1.0, 2.0])
    with mg.no_grad():
        assert not mg.is_grad_enabled()
        y = x * 2
        with mg.enable_grad():
            assert (x * 2).requires_grad
    assert not y.requires_grad and y._ctx is None and mg.is_grad_enabled()

    @mg.no_grad()
    def double(t):
        return t * 2

    assert not double(x).requires_grad and mg.is_grad_enabled()
    with pytest.raises(KeyError):
        with mg.no_grad():
            raise KeyError
    assert mg.is_grad_enabled()


def test_non_differentiable_op_output_does_not_require_grad():
    class RoundOp(Function):
        differentiable = False

        def forward(self, a):
            return np.round(a)

    try:
        out = RoundOp.apply(leaf([0.4, 1.6]))
        assert out.tolist() == [0.0, 2.0] and not out.requires_grad
    finally:
        del Function.registry["RoundOp"]


# ----- cat / stack / where ------------------------------------------------------------------------
def test_cat_stack_where_values_and_gradients():
    a, b = leaf(np.arange(6.0).reshape(2, 3)), leaf(np.ones((1, 3)))
    c = mg.cat([a, b], dim=0)
    np.testing.assert_array_equal(c.numpy(), np.concatenate([a.numpy(), b.numpy()]))
    (c * mg.tensor(np.arange(9.0).reshape(3, 3))).sum().backward()
    np.testing.assert_array_equal(a.grad, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(b.grad, [[6.0, 7.0, 8.0]])

    x, y = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    s = mg.stack([x, y], dim=1)
    assert s.shape == (2, 2) and s.tolist() == [[1.0, 3.0], [2.0, 4.0]]
    (s * mg.tensor(np.array([[1.0, 2.0], [3.0, 4.0]]))).sum().backward()
    assert x.grad.tolist() == [1.0, 3.0] and y.grad.tolist() == [2.0, 4.0]

    p, q = leaf([1.0, 2.0, 3.0]), leaf([10.0])
    w = mg.where(mg.tensor([True, False, True]), p, q)
    assert w.tolist() == [1.0, 10.0, 3.0]
    w.sum().backward()
    assert p.grad.tolist() == [1.0, 0.0, 1.0] and q.grad.tolist() == [1.0]
    assert mg.where(np.array([True, False]), p[:2], 0.0).tolist() == [1.0, 0.0]


def test_cat_and_stack_errors():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        mg.cat([mg.zeros(2, 3), mg.zeros(2, 4)], dim=0)
    with pytest.raises(ValueError, match="same shape"):
        mg.stack([mg.zeros(2), mg.zeros(3)])
    with pytest.raises(IndexError, match="dim"):
        mg.cat([mg.zeros(2)], dim=1)
    with pytest.raises(IndexError, match="dim"):
        mg.stack([mg.zeros(2)], dim=3)
    with pytest.raises(ValueError, match="non-empty"):
        mg.cat([])


# ----- operators ------------------------------------------------------------------------------------
OPERATORS = [
    (lambda t, o: t + o, np.add), (lambda t, o: o + t, lambda a, b: b + a),
    (lambda t, o: t - o, np.subtract), (lambda t, o: o - t, lambda a, b: b - a),
    (lambda t, o: t * o, np.multiply), (lambda t, o: o * t, lambda a, b: b * a),
    (lambda t, o: t / o, np.divide), (lambda t, o: o / t, lambda a, b: b / a),
    (lambda t, o: t ** o, np.power), (lambda t, o: o ** t, lambda a, b: b ** a),
]


@pytest.mark.parametrize("other", [2.0, 3, np.array([1.5, 2.0, 2.5]), np.float64(2.0)], ids=repr)
@pytest.mark.parametrize("op, ref", OPERATORS)
def test_operators_with_scalars_and_arrays_on_both_sides(op, ref, other):
    t = mg.tensor([1.0, 2.0, 4.0], requires_grad=True)
    out = op(t, other)
    assert isinstance(out, mg.Tensor) and out.dtype == np.float32 and out.requires_grad
    np.testing.assert_allclose(out.numpy(), ref(t.numpy(), np.asarray(other, np.float32)), rtol=1e-6)
    out.sum().backward()
    assert t.grad.shape == (3,) and t.grad.dtype == np.float32


def test_binary_ops_broadcast_and_name_bad_shapes():
    a, b = leaf(np.ones((2, 1, 3))), leaf(np.arange(4.0).reshape(4, 1))
    out = a * b
    assert out.shape == (2, 4, 3)
    out.sum().backward()
    assert a.grad.shape == (2, 1, 3) and b.grad.shape == (4, 1)
    np.testing.assert_array_equal(a.grad, np.full((2, 1, 3), 6.0))
    np.testing.assert_array_equal(b.grad, np.full((4, 1), 6.0))
    with pytest.raises(ValueError, match=r"Add.*\(2, 3\).*\(4,\)"):
        mg.zeros(2, 3) + mg.zeros(4)


def test_matmul_and_neg_operators_with_arrays():
    t = mg.tensor(np.arange(6.0).reshape(2, 3))
    right, left = np.ones((3, 2)), np.ones((4, 2))
    assert isinstance(t @ right, mg.Tensor) and isinstance(left @ t, mg.Tensor)
    np.testing.assert_array_equal((t @ right).numpy(), t.numpy() @ right)
    np.testing.assert_array_equal((left @ t).numpy(), left @ t.numpy())
    np.testing.assert_array_equal((-t).numpy(), -t.numpy())


@pytest.mark.parametrize("op", [operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne])
def test_comparisons(op):
    a = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    for other in (2.0, mg.tensor([3.0, 2.0, 1.0]), np.array([1.0, 1.0, 5.0])):
        got = op(a, other)
        want = op(a.numpy(), other.numpy() if isinstance(other, mg.Tensor) else other)
        assert isinstance(got, mg.Tensor) and got.dtype == np.bool_ and not got.requires_grad
        np.testing.assert_array_equal(got.numpy(), want)
    assert a.eq(2.0).tolist() == [False, True, False] and a.ne(2.0).tolist() == [True, False, True]


# ----- every method --------------------------------------------------------------------------------
X = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
METHODS = {
    "abs": (lambda t: t.abs(), np.abs(X)),
    "amax": (lambda t: t.amax(dim=1), X.max(axis=1)),
    "argmax": (lambda t: t.argmax(dim=0), X.argmax(axis=0)),
    "clone": (lambda t: t.clone(), X),
    "detach": (lambda t: t.detach(), X),
    "double": (lambda t: t.double(), X),
    "eq": (lambda t: t.eq(0.5), X == 0.5),
    "exp": (lambda t: t.exp(), np.exp(X)),
    "expand": (lambda t: t[:1].expand(3, -1), np.broadcast_to(X[:1], (3, 3))),
    "flatten": (lambda t: t.flatten(), X.reshape(-1)),
    "float": (lambda t: t.float(), X.astype(np.float32)),
    "log": (lambda t: t.abs().log(), np.log(np.abs(X))),
    "log_softmax": (lambda t: t.log_softmax(dim=1), X - np.log(np.exp(X).sum(1, keepdims=True))),
    "long": (lambda t: t.long(), X.astype(np.int64)),
    "masked_fill": (lambda t: t.masked_fill(X > 1, 9.0), np.where(X > 1, 9.0, X)),
    "matmul": (lambda t: t.matmul(X.T), X @ X.T),
    "max": (lambda t: t.max(), X.max()),
    "mean": (lambda t: t.mean(dim=0, keepdim=True), X.mean(axis=0, keepdims=True)),
    "min": (lambda t: t.min(), X.min()),
    "ne": (lambda t: t.ne(0.5), X != 0.5),
    "permute": (lambda t: t.permute(1, 0), X.T),
    "contiguous": (lambda t: t.transpose(0, 1).contiguous(), X.T),
    "relu": (lambda t: t.relu(), np.maximum(X, 0)),
    "reshape": (lambda t: t.reshape(3, 2), X.reshape(3, 2)),
    "sigmoid": (lambda t: t.sigmoid(), 1 / (1 + np.exp(-X))),
    "softmax": (lambda t: t.softmax(dim=0), np.exp(X) / np.exp(X).sum(0)),
    "sqrt": (lambda t: t.abs().sqrt(), np.sqrt(np.abs(X))),
    "squeeze": (lambda t: t.reshape(1, 6, 1).squeeze(), X.reshape(6)),
    "sum": (lambda t: t.sum(dim=(0, 1)), X.sum()),
    "tanh": (lambda t: t.tanh(), np.tanh(X)),
    "to": (lambda t: t.to(mg.float32), X.astype(np.float32)),
    "transpose": (lambda t: t.transpose(0, 1), X.T),
    "type": (lambda t: t.type(np.float32), X.astype(np.float32)),
    "unsqueeze": (lambda t: t.unsqueeze(-1), X[..., None]),
    "var": (lambda t: t.var(dim=1), X.var(axis=1, ddof=1)),
    "view": (lambda t: t.view(-1), X.reshape(-1)),
    "T": (lambda t: t.T, X.T),
    "numpy": (lambda t: t.numpy(), X),
    "tolist": (lambda t: np.array(t.tolist()), X),
    "item": (lambda t: t[1, 2].item(), X[1, 2]),
    "dim": (lambda t: t.dim(), 2),
    "ndim": (lambda t: t.ndim, 2),
    "numel": (lambda t: t.numel(), 6),
    "size": (lambda t: t.size, 6),
    "shape": (lambda t: t.shape, (2, 3)),
    "dtype": (lambda t: t.dtype, np.float64),
    "is_leaf": (lambda t: t.is_leaf, True),
}
TESTED_ELSEWHERE = {"backward": "test_backward_*", "requires_grad_": "test_detach_requires_grad_and_zero_",
                    "zero_": "test_detach_requires_grad_and_zero_"}


def test_every_public_tensor_method_is_tested():
    public = {n for n in dir(mg.Tensor) if not n.startswith("_")}
    untested = sorted(public - set(METHODS) - set(TESTED_ELSEWHERE))
    assert not untested, f"Tensor methods without a case in METHODS: {untested}"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method(name):
    fn, want = METHODS[name]
    got = fn(mg.tensor(X))
    got = got.numpy() if isinstance(got, mg.Tensor) else got
    if isinstance(want, np.ndarray) or isinstance(got, np.ndarray):
        assert np.shape(got) == np.shape(want) and np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_allclose(got, want, rtol=1e-6)
    else:
        assert got == want


def test_max_min_with_dim_return_values_and_indices():
    t = mg.tensor(X)
    values, indices = t.max(dim=1)
    np.testing.assert_array_equal(values.numpy(), X.max(1))
    np.testing.assert_array_equal(indices.numpy(), X.argmax(1))
    values, indices = t.min(dim=0, keepdim=True)
    assert values.shape == indices.shape == (1, 3)
    np.testing.assert_array_equal(indices.numpy(), X.argmin(0)[None])


def test_scalar_conversions_and_repr():
    assert float(mg.tensor(2.5)) == 2.5 and int(mg.tensor(3)) == 3
    assert not bool(mg.tensor([0.0])) and bool(mg.tensor(1.0))
    with pytest.raises(ValueError):
        bool(mg.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="one element"):
        mg.tensor([1.0, 2.0]).item()
    text = repr(leaf([1.0, 2.0]))
    assert text.startswith("tensor([1., 2.]") and "float64" in text and "requires_grad=True" in text


def test_detach_requires_grad_and_zero_():
    x = leaf([1.0, 2.0])
    d = x.detach()
    assert not d.requires_grad and d.is_leaf
    (x * 2 + d * 3).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]
    y = mg.tensor([1.0, 2.0]).requires_grad_()
    assert y.requires_grad and not y.requires_grad_(False).requires_grad
    with pytest.raises(TypeError, match="floating"):
        mg.tensor([1, 2]).requires_grad_()
    assert y.zero_().tolist() == [0.0, 0.0]


def test_float32_stays_float32_through_ops_and_gradients():
    x = mg.randn(3, 4, requires_grad=True)
    w = mg.randn(5, 4, requires_grad=True)
    out = F.layer_norm((x @ w.T).softmax(-1).exp().tanh(), 5)
    assert out.dtype == np.float32
    out.sum().backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


def test_cast_gradient_returns_in_the_source_dtype():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = x.double()
    assert y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32 and x.grad.tolist() == [2.0, 4.0]


# ----- indexing -------------------------------------------------------------------------------------
def test_basic_indexing_values_and_gradients():
    base = np.arange(24.0).reshape(2, 3, 4)
    for index in [1, -1, (0, 2), slice(1, None), (slice(None), 1, slice(None, None, 2)), (None, 0),
                  (Ellipsis, 1), (0, None, slice(None), -1)]:
        x = leaf(base)
        out = x[index]
        np.testing.assert_array_equal(out.numpy(), base[index])
        out.sum().backward()
        expected = np.zeros_like(base)
        expected[index] = 1
        np.testing.assert_array_equal(x.grad, expected)


def test_integer_array_indexing_accumulates_repeated_indices():
    x = leaf([10.0, 20.0, 30.0])
    out = x[np.array([0, 2, 0, 0])]
    assert out.tolist() == [10.0, 30.0, 10.0, 10.0]
    out.sum().backward()
    assert x.grad.tolist() == [3.0, 0.0, 1.0]
    m = leaf(np.arange(6.0).reshape(3, 2))
    m[mg.tensor([1, 1]), mg.tensor([0, 0])].sum().backward()  # Tensors work as indices too
    assert m.grad.tolist() == [[0, 0], [2, 0], [0, 0]]
    m.grad = None
    m[[2, 2, 0]].sum().backward()
    assert m.grad.tolist() == [[1, 1], [0, 0], [2, 2]]


def test_boolean_mask_indexing():
    x = leaf([1.0, -2.0, 3.0, -4.0])
    out = x[x > 0]
    assert out.tolist() == [1.0, 3.0]
    (out * mg.tensor(np.array([5.0, 7.0]))).sum().backward()
    assert x.grad.tolist() == [5.0, 0.0, 7.0, 0.0]
    m = leaf(np.arange(6.0).reshape(2, 3))
    assert m[np.array([True, False])].shape == (1, 3)


def test_index_out_of_range_raises_index_error():
    with pytest.raises(IndexError, match=r"\(2, 3\)"):
        mg.zeros(2, 3)[5]
    with pytest.raises(IndexError):
        mg.zeros(2, 3)[np.array([0, 7])]


def test_iteration_yields_rows():
    rows = list(mg.tensor(np.arange(6.0).reshape(3, 2)))
    assert len(rows) == 3 and rows[2].tolist() == [4.0, 5.0]


# ----- backward engine --------------------------------------------------------------------------------
def test_backward_on_non_scalar_needs_a_gradient():
    x = leaf([1.0, 2.0])
    y = x * 3
    with pytest.raises(RuntimeError, match="scalar"):
        y.backward()
    y.backward(np.array([1.0, 10.0]))
    assert x.grad.tolist() == [3.0, 30.0]
    with pytest.raises(ValueError, match="shape"):
        (x * 3).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        mg.tensor([1.0]).sum().backward()


def test_backward_grads_accumulate_until_zeroed():
    x = leaf([1.0, 2.0])
    (x * x).sum().backward()
    (x * x).sum().backward()
    assert x.grad.tolist() == [4.0, 8.0]
    x.grad = None
    (x * 5).sum().backward()
    assert x.grad.tolist() == [5.0, 5.0]


def test_backward_uses_a_tensor_twice():
    x = leaf([3.0])
    y = x * x + x  # x reaches the output by three paths
    y.backward(np.ones(1))
    assert x.grad.tolist() == [7.0]


def test_backward_sums_in_place_without_sharing_arrays():
    """The engine adds the 3rd and later contributions into the sum it allocated; no two leaves (and no op)
    end up holding the same gradient array."""
    x, y = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    h = x + y  # Add's backward hands one array to both parents
    (h * 1 + h * 2 + h * 3 + h * 4).sum().backward()  # h's gradient: a sum of four
    assert x.grad.tolist() == y.grad.tolist() == [10.0, 10.0]
    assert not np.shares_memory(x.grad, y.grad)
    x.grad *= 0  # changing one leaf's gradient leaves the other's alone
    assert y.grad.tolist() == [10.0, 10.0]
    w = leaf([2.0])
    (w * 1 + w * 2 + w * 3).sum().backward()  # a leaf keeps the sum the engine allocated
    (w * 1 + w * 2 + w * 3).sum().backward()
    assert w.grad.tolist() == [12.0]


def test_backward_frees_the_graph_unless_retained():
    x = leaf([1.0, 2.0])
    loss = (x.exp() * 2).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()
    assert x.grad.tolist() == pytest.approx((2 * np.exp([1.0, 2.0])).tolist())

    x.grad = None
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    assert x.grad.tolist() == [4.0, 8.0]
    assert not loss.is_leaf and loss.grad is None  # a non-leaf keeps no .grad


def test_backward_through_a_100000_node_chain():
    x = leaf([1.0])
    y = x
    for _ in range(100_000):
        y = y + 1.0
    y.sum().backward()
    assert x.grad.tolist() == [1.0] and y.item() == 100_001.0


def test_detect_anomaly_names_the_op():
    x = leaf([0.0, 1.0])
    with np.errstate(divide="ignore"):
        x.sqrt().sum().backward()  # without the mode, the infinite gradient goes through
        assert np.isinf(x.grad[0])
        with mg.detect_anomaly():
            with pytest.raises(FloatingPointError, match="Sqrt"):
                leaf([0.0, 1.0]).sqrt().sum().backward()
        leaf([0.0]).sqrt().sum().backward()  # the mode ends with the context


# ----- matmul ------------------------------------------------------------------------------------------
def test_matmul_mismatched_shapes_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        mg.zeros(2, 3) @ mg.zeros(4, 5)
    with pytest.raises(ValueError, match=r"\(2, 2, 3\).*\(3, 3, 1\)"):
        mg.zeros(2, 2, 3) @ mg.zeros(3, 3, 1)
    with pytest.raises(ValueError, match="at least 1 dimension"):
        mg.tensor(2.0) @ mg.zeros(2)


@pytest.mark.parametrize("a_shape, b_shape", [
    ((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((4, 2, 3), (3,)), ((3,), (4, 3, 2)),
    ((2, 3), (3, 4)), ((5, 2, 3), (3, 4)), ((2, 3), (5, 3, 4)), ((5, 1, 2, 3), (4, 3, 2)), ((1, 2, 3), (6, 3, 1)),
])
def test_matmul_matches_numpy_including_1d_and_broadcast_batches(a_shape, b_shape):
    rng = np.random.default_rng(0)
    a_np, b_np = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    a, b = leaf(a_np), leaf(b_np)
    out = a @ b
    want = np.matmul(a_np, b_np)
    assert out.shape == want.shape
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12)
    g = rng.standard_normal(want.shape)
    out.backward(g)
    # d<g, a@b>/da by finite differences along one random direction per operand
    for t, arr, other in ((a, a_np, b_np), (b, b_np, a_np)):
        v = rng.standard_normal(arr.shape)
        plus = np.matmul(arr + 1e-6 * v, other) if t is a else np.matmul(other, arr + 1e-6 * v)
        minus = np.matmul(arr - 1e-6 * v, other) if t is a else np.matmul(other, arr - 1e-6 * v)
        numeric = np.sum(g * (plus - minus)) / 2e-6
        assert np.sum(t.grad * v) == pytest.approx(numeric, rel=1e-6, abs=1e-8)
