"""Basic layers and nn.init: NumPy references, gradient checks, PyTorch's initialisation and errors.

Also runs the gradient-check specs of the layer ops (tests/op_specs_layers.py)."""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import minigen as mg
from minigen import nn
from minigen.nn import init

from gradcheck import check_gradients, forward_and_grads
from op_specs_layers import LAYER_COMPOSITIONS, LAYER_OP_SPECS, module_call

F64 = np.float64
SEEDS = st.integers(0, 2 ** 32 - 1)


def erf(x):
    return np.vectorize(math.erf, otypes=[F64])(x)


# ----- the layer ops' specs ---------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LAYER_OP_SPECS))
@settings(max_examples=20)
@given(data=st.data())
def test_layer_op(name, data):
    spec = LAYER_OP_SPECS[name]
    case = data.draw(spec.cases, label="case")
    with mg.no_grad():
        got = spec.call(*[mg.tensor(x) for x in case.inputs], **case.kwargs)
    np.testing.assert_allclose(got.data, spec.reference(*case.inputs, **case.kwargs), rtol=1e-10, atol=1e-12)
    check_gradients(spec.call, case.inputs, case.kwargs, np.random.default_rng(data.draw(SEEDS)))


@pytest.mark.parametrize("name", sorted(LAYER_COMPOSITIONS))
@settings(max_examples=20)
@given(data=st.data())
def test_layer_op_equals_its_composition(name, data):
    spec, composition = LAYER_OP_SPECS[name], LAYER_COMPOSITIONS[name]
    case = data.draw(composition.cases or spec.cases, label="case")
    with mg.no_grad():
        shape = spec.call(*[mg.tensor(x) for x in case.inputs], **case.kwargs).shape
    upstream = np.random.default_rng(data.draw(SEEDS)).standard_normal(shape)
    fused, fused_grads = forward_and_grads(spec.call, case.inputs, case.kwargs, upstream)
    composed, composed_grads = forward_and_grads(composition.fn, case.inputs, case.kwargs, upstream)
    np.testing.assert_allclose(fused, composed, rtol=1e-9, atol=1e-12)
    for f, c in zip(fused_grads, composed_grads):
        np.testing.assert_allclose(f, c, rtol=1e-9, atol=1e-12)


# ----- layers against NumPy, weights loaded by PyTorch's names ----------------------------------
def test_linear_loads_by_name_and_matches_numpy():
    rng = np.random.default_rng(0)
    state = {"weight": rng.standard_normal((3, 4)), "bias": rng.standard_normal(3)}
    layer = nn.Linear(4, 3, dtype=F64)
    layer.load_state_dict(state)
    x = rng.standard_normal((2, 5, 4))
    np.testing.assert_allclose(layer(mg.tensor(x)).data, x @ state["weight"].T + state["bias"], rtol=1e-12)
    no_bias = nn.Linear(4, 3, bias=False)
    assert list(no_bias.state_dict()) == ["weight"] and no_bias.bias is None


def test_layer_norm_loads_by_name_and_matches_numpy():
    rng = np.random.default_rng(1)
    state = {"weight": rng.standard_normal((2, 3)), "bias": rng.standard_normal((2, 3))}
    layer = nn.LayerNorm((2, 3), eps=1e-3, dtype=F64)
    layer.load_state_dict(state)
    x = rng.standard_normal((4, 2, 3))
    flat = x.reshape(4, 6)
    want = ((flat - flat.mean(1, keepdims=True)) / np.sqrt(flat.var(1, keepdims=True) + 1e-3)).reshape(x.shape)
    np.testing.assert_allclose(layer(mg.tensor(x)).data, want * state["weight"] + state["bias"], rtol=1e-10)
    assert list(nn.LayerNorm(3, bias=False).state_dict()) == ["weight"]
    assert nn.LayerNorm(3, elementwise_affine=False).state_dict() == {}


def test_embedding_loads_by_name_and_looks_up_rows():
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((5, 3))
    layer = nn.Embedding(5, 3, dtype=F64)
    layer.load_state_dict({"weight": weight})
    ids = np.array([[0, 4, 4], [2, 1, 0]])
    np.testing.assert_array_equal(layer(ids).data, weight[ids])


def test_embedding_padding_row_starts_at_zero_and_gets_no_gradient():
    layer = nn.Embedding(6, 4, padding_idx=-1)
    assert layer.padding_idx == 5 and not layer.weight.data[5].any()
    ids = np.array([5, 1, 5, 1])
    layer(ids).sum().backward()
    assert not layer.weight.grad[5].any()
    np.testing.assert_array_equal(layer.weight.grad[1], 2.0)


def test_embedding_from_pretrained_is_frozen_by_default():
    weight = np.arange(6.0).reshape(3, 2)
    layer = nn.Embedding.from_pretrained(weight)
    assert not layer.weight.requires_grad and layer.weight.dtype == F64
    np.testing.assert_array_equal(layer(np.array([2])).data, [[4.0, 5.0]])
    assert nn.Embedding.from_pretrained(weight, freeze=False).weight.requires_grad


def test_activations_match_numpy():
    x = np.linspace(-4, 4, 17)
    t = mg.tensor(x)
    np.testing.assert_allclose(nn.ReLU()(t).data, np.maximum(x, 0))
    np.testing.assert_allclose(nn.Tanh()(t).data, np.tanh(x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(nn.Sigmoid()(t).data, 1 / (1 + np.exp(-x)), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(nn.GELU()(t).data, 0.5 * x * (1 + erf(x / math.sqrt(2))), rtol=1e-12, atol=1e-14)
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(nn.GELU("tanh")(t).data, tanh_form, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu"])
def test_mlp_has_gpt2_names_and_matches_numpy(activation):
    rng = np.random.default_rng(3)
    mlp = nn.MLP(4, 8, 3, activation=activation, dtype=F64)
    state = {"c_fc.weight": rng.standard_normal((8, 4)), "c_fc.bias": rng.standard_normal(8),
             "c_proj.weight": rng.standard_normal((3, 8)), "c_proj.bias": rng.standard_normal(3)}
    assert {k: v.shape for k, v in mlp.state_dict().items()} == {k: v.shape for k, v in state.items()}
    mlp.load_state_dict(state)
    x = rng.standard_normal((2, 4))
    h = x @ state["c_fc.weight"].T + state["c_fc.bias"]
    act = {"gelu": lambda h: 0.5 * h * (1 + erf(h / math.sqrt(2))),
           "gelu_tanh": lambda h: 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3))),
           "relu": lambda h: np.maximum(h, 0)}[activation]
    want = act(h) @ state["c_proj.weight"].T + state["c_proj.bias"]
    np.testing.assert_allclose(mlp(mg.tensor(x)).data, want, rtol=1e-10)
    assert nn.MLP(4, 8).c_proj.out_features == 4


def test_dropout_scales_kept_values_in_training_and_is_identity_in_eval():
    mg.manual_seed(0)
    layer = nn.Dropout(0.25)
    x = mg.ones(200, 50, dtype=F64)
    y = layer(x).data
    assert set(np.unique(y)) <= {0.0, 1 / 0.75}
    assert abs((y == 0).mean() - 0.25) < 0.02
    layer.eval()
    assert layer(x) is x
    assert not nn.Dropout(1.0)(x).data.any()


# ----- gradient checks of the layers ------------------------------------------------------------
LEAD = hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=3)


def elements(lo=-2.0, hi=2.0):
    return st.floats(lo, hi, allow_nan=False, allow_subnormal=False)


@settings(max_examples=15)
@given(lead=LEAD, fan_in=st.integers(1, 4), fan_out=st.integers(1, 4), bias=st.booleans(), seed=SEEDS)
def test_linear_gradients(lead, fan_in, fan_out, bias, seed):
    rng = np.random.default_rng(seed)
    layer = nn.Linear(fan_in, fan_out, bias=bias, dtype=F64)
    call, params = module_call(layer, layer)
    check_gradients(call, [rng.standard_normal(lead + (fan_in,))] + params, {}, rng)


@settings(max_examples=15)
@given(lead=LEAD, n=st.integers(2, 5), bias=st.booleans(), seed=SEEDS)
def test_layer_norm_gradients(lead, n, bias, seed):
    rng = np.random.default_rng(seed)
    layer = nn.LayerNorm(n, bias=bias, dtype=F64)
    layer.load_state_dict({k: rng.standard_normal(v.shape) for k, v in layer.state_dict().items()})
    call, params = module_call(layer, layer)
    check_gradients(call, [rng.standard_normal(lead + (n,))] + params, {}, rng)


@settings(max_examples=10)
@given(lead=LEAD, seed=SEEDS)
def test_embedding_gradients(lead, seed):
    rng = np.random.default_rng(seed)
    layer = nn.Embedding(4, 3, dtype=F64)
    ids = rng.integers(0, 4, lead)
    call, params = module_call(layer, lambda ids: layer(ids))
    check_gradients(lambda w, ids: call(w, ids=ids), params, {"ids": ids}, rng)


@settings(max_examples=15)
@given(lead=LEAD, activation=st.sampled_from(["gelu", "gelu_tanh", "relu"]), seed=SEEDS)
def test_mlp_gradients(lead, activation, seed):
    rng = np.random.default_rng(seed)
    mlp = nn.MLP(3, 5, 2, activation=activation, dtype=F64)
    x = rng.standard_normal(lead + (3,))
    with mg.no_grad():  # relu's kink: keep every hidden pre-activation away from 0
        hidden = mlp.c_fc(mg.tensor(x)).data
    assume(activation != "relu" or np.abs(hidden).min() > 1e-3)
    call, params = module_call(mlp, mlp)
    check_gradients(call, [x] + params, {}, rng)


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.Tanh(), nn.Sigmoid(), nn.GELU(), nn.GELU("tanh")])
def test_activation_gradients(layer):
    x = np.array([-2.5, -1.0, -0.3, 0.2, 0.7, 3.0])
    check_gradients(layer, [x], {}, np.random.default_rng(0))


# ----- initialisation ---------------------------------------------------------------------------
def test_linear_initialisation_follows_pytorch():
    mg.manual_seed(0)
    layer = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)
    for p in (layer.weight, layer.bias):
        assert p.dtype == np.float32 and np.abs(p.data).max() <= bound
        assert abs(p.data.std() - bound / math.sqrt(3)) < 0.1 * bound  # the std of U(-b, b)


def test_layers_draw_from_the_global_generator():
    mg.manual_seed(7)
    a = nn.Linear(5, 4).state_dict()
    mg.manual_seed(7)
    b = nn.Linear(5, 4).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = nn.Linear(5, 4).state_dict()
    assert not np.array_equal(a["weight"], c["weight"])


def test_embedding_and_layer_norm_initialisation():
    mg.manual_seed(0)
    weight = nn.Embedding(1000, 64).weight.data
    assert abs(weight.mean()) < 0.01 and abs(weight.std() - 1) < 0.01
    ln = nn.LayerNorm(5)
    np.testing.assert_array_equal(ln.weight.data, 1.0)
    np.testing.assert_array_equal(ln.bias.data, 0.0)


def test_init_fans_and_gains():
    t = mg.zeros(6, 4, 3)  # fan_in = 4 * 3, fan_out = 6 * 3
    assert init._calculate_fan_in_and_fan_out(t) == (12, 18)
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    assert init.calculate_gain("sigmoid") == 1.0
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.xavier_uniform_(mg.zeros(3))
    with pytest.raises(ValueError, match="nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform_(mg.zeros(3, 3), mode="fan_avg")


@pytest.mark.parametrize("fill, spread", [
    (lambda t: init.xavier_uniform_(t, gain=2.0), 2.0 * math.sqrt(6 / 500) / math.sqrt(3)),
    (lambda t: init.xavier_normal_(t), math.sqrt(2 / 500)),
    (lambda t: init.kaiming_uniform_(t, nonlinearity="relu"), math.sqrt(2) * math.sqrt(3 / 200) / math.sqrt(3)),
    (lambda t: init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"), math.sqrt(2) / math.sqrt(300)),
    (lambda t: init.normal_(t, 1.0, 0.5), 0.5),
    (lambda t: init.uniform_(t, -3.0, 3.0), 3.0 / math.sqrt(3)),
])
def test_random_init_in_place_with_the_expected_spread(fill, spread):
    mg.manual_seed(0)
    t = mg.zeros(300, 200, dtype=F64)
    data = t.data
    assert fill(t) is t and t.data is data  # filled in place
    assert abs(t.data.std() - spread) < 0.03 * spread


def test_constant_inits():
    t = mg.zeros(2, 3)
    init.constant_(t, 2.5)
    np.testing.assert_array_equal(t.data, 2.5)
    init.ones_(t)
    np.testing.assert_array_equal(t.data, 1.0)
    init.zeros_(t)
    np.testing.assert_array_equal(t.data, 0.0)
    with pytest.raises(TypeError, match="Tensor"):
        init.zeros_(np.zeros(3))


# ----- bad input ----------------------------------------------------------------------------------
def test_bad_input_raises_errors_naming_the_argument():
    with pytest.raises(ValueError, match=r"Linear: input of shape \(2, 5\) must have 4 features"):
        nn.Linear(4, 3)(mg.zeros(2, 5))
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.LayerNorm(4)(mg.zeros(2, 5))
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(4, 2, padding_idx=4)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        nn.Embedding(4, 2)(np.array([4]))
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")
    with pytest.raises(ValueError, match="activation"):
        nn.MLP(3, 4, activation="swish")


# ----- PyTorch, when it is installed ------------------------------------------------------------
def test_linear_and_layer_norm_match_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rng = np.random.default_rng(4)
    for ours, theirs in ((nn.Linear(5, 3, dtype=F64), torch.nn.Linear(5, 3).double()),
                         (nn.LayerNorm(5, dtype=F64), torch.nn.LayerNorm(5).double())):
        if isinstance(theirs, torch.nn.LayerNorm):  # move weight and bias off their initial ones and zeros
            with torch.no_grad():
                for p in theirs.parameters():
                    p.copy_(torch.randn_like(p))
        ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
        x = rng.standard_normal((2, 4, 5))
        tx = torch.tensor(x, requires_grad=True)
        ty = theirs(tx)
        upstream = rng.standard_normal(tuple(ty.shape))
        ty.backward(torch.tensor(upstream))
        mx = mg.tensor(x, requires_grad=True)
        my = ours(mx)
        my.backward(upstream)
        np.testing.assert_allclose(my.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(mx.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
        for name, p in theirs.named_parameters():
            np.testing.assert_allclose(dict(ours.named_parameters())[name].grad, p.grad.numpy(),
                                       rtol=1e-10, atol=1e-12)
