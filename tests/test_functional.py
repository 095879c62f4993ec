"""minigen.nn.functional against NumPy references (and against PyTorch when it is installed)."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minigen as mg
import minigen.nn.functional as F

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed (it is not a dependency)")


def leaf(values):
    return mg.tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


def np_cross_entropy(logits, target, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Reference for logits (N, C, *d) and target (N, *d), written the way the formula reads."""
    logits = np.moveaxis(logits, 1, -1)  # classes last
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    valid = target != ignore_index
    picked = np.take_along_axis(logp, np.where(valid, target, 0)[..., None], axis=-1)[..., 0]
    loss = -(1 - label_smoothing) * picked - label_smoothing * logp.mean(axis=-1)
    loss = np.where(valid, loss, 0.0)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / valid.sum()


# ----- cross_entropy ---------------------------------------------------------------------------------
@given(n=st.integers(1, 4), c=st.integers(2, 5), extra=st.lists(st.integers(1, 3), max_size=2),
       reduction=st.sampled_from(["mean", "sum", "none"]), smoothing=st.sampled_from([0.0, 0.1, 0.5]),
       ignore=st.booleans(), seed=st.integers(0, 1000))
def test_cross_entropy_matches_numpy(n, c, extra, reduction, smoothing, ignore, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, c, *extra)) * 3
    target = rng.integers(0, c, size=(n, *extra))
    ignore_index = 1 if ignore else -100
    if reduction == "mean" and not np.any(target != ignore_index):
        target.flat[0] = 0
    got = F.cross_entropy(mg.tensor(logits), mg.tensor(target), ignore_index=ignore_index,
                          reduction=reduction, label_smoothing=smoothing)
    want = np_cross_entropy(logits, target, ignore_index, reduction, smoothing)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)


def test_cross_entropy_float32_and_gradient_of_the_mean():
    logits = mg.tensor(np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]], dtype=np.float32), requires_grad=True)
    loss = F.cross_entropy(logits, np.array([0, 2]))
    assert loss.dtype == np.float32 and loss.shape == ()
    loss.backward()
    p = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True)
    p[[0, 1], [0, 2]] -= 1
    np.testing.assert_allclose(logits.grad, p / 2, rtol=1e-6)


def test_cross_entropy_ignored_rows_get_no_gradient_and_all_ignored_mean_is_nan():
    logits = leaf(np.zeros((3, 4)))
    F.cross_entropy(logits, np.array([1, -100, 3])).backward()
    assert not logits.grad[1].any() and logits.grad[0].any()
    assert np.isnan(F.cross_entropy(mg.tensor(np.zeros((2, 3))), np.array([-100, -100])).item())


def test_cross_entropy_single_sample_without_batch_dim():
    logits = np.array([1.0, 2.0, 3.0])
    got = F.cross_entropy(mg.tensor(logits), np.array(2))
    assert got.item() == pytest.approx(np_cross_entropy(logits[None], np.array([2])))


def test_cross_entropy_bad_targets():
    logits = mg.zeros(2, 3)
    with pytest.raises(ValueError, match="target 3 is out of range for 3 classes"):
        F.cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(ValueError, match="target -1"):
        F.cross_entropy(logits, np.array([-1, 0]))
    with pytest.raises(TypeError, match="integer class indices.*float"):
        F.cross_entropy(logits, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"target shape \(3,\).*\(2, 3\)"):
        F.cross_entropy(logits, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"target shape \(4, 2\).*\(2, 3, 4\)"):
        F.cross_entropy(mg.zeros(2, 3, 4), np.zeros((4, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(logits, np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(logits, np.array([0, 1]), label_smoothing=1.5)
    F.cross_entropy(logits, np.array([0, 7]), ignore_index=7)  # an ignored target may be any value


# ----- softmax, layer_norm, gelu -------------------------------------------------------------------------
def test_softmax_and_log_softmax_match_numpy_on_any_dim():
    x = np.random.default_rng(0).standard_normal((2, 3, 4)) * 10
    for dim in (0, 1, -1):
        shifted = x - x.max(axis=dim, keepdims=True)
        log_sum = np.log(np.exp(shifted).sum(axis=dim, keepdims=True))
        np.testing.assert_allclose(F.softmax(mg.tensor(x), dim=dim).numpy(), np.exp(shifted - log_sum), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(F.log_softmax(mg.tensor(x), dim=dim).numpy(), shifted - log_sum, rtol=1e-12, atol=1e-14)
    with pytest.raises(IndexError, match="dim 3"):
        F.softmax(mg.tensor(x), dim=3)
    big = F.softmax(mg.tensor(np.array([1000.0, 0.0], dtype=np.float32)))
    assert big.tolist() == [1.0, 0.0]  # no overflow


def np_layer_norm(x, shape, weight=None, bias=None, eps=1e-5):
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return y * (1 if weight is None else weight) + (0 if bias is None else bias)


@pytest.mark.parametrize("shape", [(5,), (3, 5)])
def test_layer_norm_matches_numpy(shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 5)) * 4 + 2
    w, b = rng.standard_normal(shape), rng.standard_normal(shape)
    got = F.layer_norm(mg.tensor(x), shape, mg.tensor(w), mg.tensor(b), eps=1e-3)
    np.testing.assert_allclose(got.numpy(), np_layer_norm(x, shape, w, b, eps=1e-3), rtol=1e-10)
    np.testing.assert_allclose(F.layer_norm(mg.tensor(x), shape).numpy(), np_layer_norm(x, shape), rtol=1e-10)
    with pytest.raises(ValueError, match=r"\(2, 3, 5\).*\(4,\)"):
        F.layer_norm(mg.tensor(x), 4)


def np_gelu(x, approximate):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.ravel()]).reshape(x.shape)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_reference(approximate):
    x = np.linspace(-6, 6, 49)
    np.testing.assert_allclose(F.gelu(mg.tensor(x), approximate=approximate).numpy(),
                               np_gelu(x, approximate), rtol=1e-12, atol=1e-15)
    x32 = F.gelu(mg.tensor(x.astype(np.float32)), approximate=approximate)
    assert x32.dtype == np.float32


def test_gelu_forms_differ_slightly_and_bad_form_raises():
    x = mg.tensor(np.linspace(-3, 3, 13))
    diff = np.abs(F.gelu(x).numpy() - F.gelu(x, approximate="tanh").numpy())
    assert 0 < diff.max() < 1e-3
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(x, approximate="fast")


def test_activations_and_linear():
    x = np.array([-2.0, 0.5, 3.0])
    assert F.relu(mg.tensor(x)).tolist() == [0.0, 0.5, 3.0]
    np.testing.assert_allclose(F.tanh(mg.tensor(x)).numpy(), np.tanh(x))
    np.testing.assert_allclose(F.sigmoid(mg.tensor(x)).numpy(), 1 / (1 + np.exp(-x)))
    w, b = np.arange(6.0).reshape(2, 3), np.array([1.0, -1.0])
    np.testing.assert_allclose(F.linear(mg.tensor(x), mg.tensor(w), mg.tensor(b)).numpy(), w @ x + b)
    with pytest.raises(ValueError, match=r"3 features.*weight expects 2"):
        F.linear(mg.tensor(x), mg.tensor(w.T))


def test_embedding_lookup_and_errors():
    weight = leaf(np.arange(8.0).reshape(4, 2))
    out = F.embedding(np.array([[1, 1], [3, 0]]), weight, padding_idx=0)
    assert out.shape == (2, 2, 2) and out.numpy()[1, 0].tolist() == [6.0, 7.0]
    out.sum().backward()
    assert weight.grad.tolist() == [[0, 0], [2, 2], [0, 0], [1, 1]]
    with pytest.raises(ValueError, match="id 4 is outside the vocabulary"):
        F.embedding(np.array([4]), weight)
    with pytest.raises(TypeError, match="integers"):
        F.embedding(np.array([1.0]), weight)


# ----- dropout ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics(p):
    mg.manual_seed(0)
    x = mg.ones(200_000, dtype=mg.float64, requires_grad=True)
    y = F.dropout(x, p=p)
    kept = y.numpy() != 0
    assert abs(1 - kept.mean() - p) < 0.01
    np.testing.assert_allclose(y.numpy()[kept], 1 / (1 - p))
    assert abs(y.numpy().mean() - 1) < 0.02  # inverted dropout keeps the expectation
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, y.numpy())  # the gradient goes through the same mask


def test_dropout_eval_passthrough_and_edge_cases():
    x = mg.randn(10)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    assert not F.dropout(x, 1.0).numpy().any()
    mg.manual_seed(5)
    a = F.dropout(mg.ones(50), 0.5).numpy()
    mg.manual_seed(5)
    np.testing.assert_array_equal(F.dropout(mg.ones(50), 0.5).numpy(), a)
    with pytest.raises(ValueError, match="p must be in"):
        F.dropout(x, 1.5)


# ----- against PyTorch -------------------------------------------------------------------------------
def torch_leaf(x):
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


def compare_with_torch(mg_fn, torch_fn, *arrays, rtol=1e-10, atol=1e-12):
    """Run both on float64 copies of `arrays`; compare outputs and the gradients of a random projection."""
    ours = [leaf(a) for a in arrays]
    theirs = [torch_leaf(a) for a in arrays]
    out, ref = mg_fn(*ours), torch_fn(*theirs)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=rtol, atol=atol)
    upstream = np.random.default_rng(0).standard_normal(out.shape)
    out.backward(upstream)
    ref.backward(torch.tensor(upstream))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=rtol, atol=atol)


@needs_torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(6, 5), (3, 5, 4)])
def test_cross_entropy_matches_torch(reduction, shape):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal(shape) * 2
    target = rng.integers(0, shape[1], size=shape[:1] + shape[2:])
    target.flat[::3] = 2  # the ignored class
    target.flat[1] = 0
    kwargs = dict(ignore_index=2, reduction=reduction, label_smoothing=0.2)
    compare_with_torch(lambda x: F.cross_entropy(x, target, **kwargs),
                       lambda x: torch.nn.functional.cross_entropy(x, torch.tensor(target), **kwargs), logits)


@needs_torch
def test_layer_norm_matches_torch():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 3, 6)), rng.standard_normal((3, 6)), rng.standard_normal((3, 6))
    compare_with_torch(lambda *a: F.layer_norm(a[0], (3, 6), a[1], a[2]),
                       lambda *a: torch.nn.functional.layer_norm(a[0], (3, 6), a[1], a[2]), x, w, b)
    compare_with_torch(lambda a: F.layer_norm(a, 6), lambda a: torch.nn.functional.layer_norm(a, (6,)), x)


@needs_torch
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(approximate):
    x = np.linspace(-5, 5, 41).reshape(1, 41)
    compare_with_torch(lambda a: F.gelu(a, approximate=approximate),
                       lambda a: torch.nn.functional.gelu(a, approximate=approximate), x)


@needs_torch
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_and_log_softmax_match_torch(dim):
    x = np.random.default_rng(4).standard_normal((3, 4, 5)) * 5
    compare_with_torch(lambda a: F.softmax(a, dim=dim), lambda a: torch.softmax(a, dim=dim), x)
    compare_with_torch(lambda a: F.log_softmax(a, dim=dim), lambda a: torch.log_softmax(a, dim=dim), x)
