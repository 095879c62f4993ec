"""Every registered op, gradient-checked in float64 on Hypothesis-drawn inputs (specs in op_specs.py)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minigen as mg
from minigen.autograd import Function

from gradcheck import check_gradients, forward_and_grads, import_all_modules
from op_specs import COMPOSITIONS, SPECS

SEEDS = st.integers(0, 2 ** 32 - 1)


def minigen_ops():
    """Names of the ops that minigen itself registers (tests may define ops of their own)."""
    import_all_modules()
    return {name for name, cls in Function.registry.items() if cls.__module__.startswith("minigen.")}


def all_specs():
    """This file's SPECS and the layer ops' specs, which test_layers.py checks the same way."""
    from op_specs_layers import LAYER_OP_SPECS  # imported here: a broken layer spec fails only the meta-tests
    return {**SPECS, **LAYER_OP_SPECS}


def test_every_module_imports():
    failures = import_all_modules()
    assert not failures, f"modules that fail to import (their ops cannot be checked): {failures}"


def test_every_registered_op_has_a_spec():
    missing = sorted(minigen_ops() - set(all_specs()))
    assert not missing, f"ops without a gradient-check spec in tests/op_specs.py: {missing}"


def test_every_spec_names_a_registered_op():
    stale = sorted(set(all_specs()) - minigen_ops())
    assert not stale, f"gradient-check specs for ops that are not registered: {stale}"


def test_specs_agree_with_the_ops_differentiable_flag():
    wrong = sorted(n for n, s in all_specs().items() if n in Function.registry
                   and s.differentiable != Function.registry[n].differentiable)
    assert not wrong, f"specs whose `differentiable` differs from the op's: {wrong}"


@pytest.mark.parametrize("name", sorted(SPECS))
@given(data=st.data())
def test_op(name, data):
    spec = SPECS[name]
    case = data.draw(spec.cases, label="case")
    rng = np.random.default_rng(data.draw(SEEDS, label="seed"))
    if spec.reference is not None:
        with mg.no_grad():
            got = spec.call(*[mg.tensor(x) for x in case.inputs], **case.kwargs)
        want = np.asarray(spec.reference(*case.inputs, **case.kwargs))
        assert got.shape == want.shape, f"{name}: forward shape {got.shape}, reference {want.shape}"
        np.testing.assert_allclose(got.data, want, rtol=1e-10, atol=1e-12, err_msg=f"{name} forward")
    if spec.differentiable:
        check_gradients(spec.call, case.inputs, case.kwargs, rng)
    else:
        out = spec.call(*[mg.tensor(x, requires_grad=True) for x in case.inputs], **case.kwargs)
        assert not out.requires_grad, f"{name} is not differentiable but its output requires grad"


@pytest.mark.parametrize("name", sorted(COMPOSITIONS))
@given(data=st.data())
def test_fused_op_equals_its_composition(name, data):
    spec, composition = SPECS[name], COMPOSITIONS[name]
    case = data.draw(spec.cases if composition.cases is None else composition.cases, label="case")
    rng = np.random.default_rng(data.draw(SEEDS, label="seed"))
    with mg.no_grad():
        shape = spec.call(*[mg.tensor(x) for x in case.inputs], **case.kwargs).shape
    upstream = rng.standard_normal(shape)
    fused, fused_grads = forward_and_grads(spec.call, case.inputs, case.kwargs, upstream)
    composed, composed_grads = forward_and_grads(composition.fn, case.inputs, case.kwargs, upstream)
    np.testing.assert_allclose(fused, composed, rtol=1e-9, atol=1e-12, err_msg=f"{name} forward")
    for i, (f, c) in enumerate(zip(fused_grads, composed_grads)):
        np.testing.assert_allclose(f, c, rtol=1e-9, atol=1e-12, err_msg=f"{name} gradient of input {i}")


def test_a_wrong_backward_is_caught():
    """The checker itself: an op whose backward is off by a factor fails it."""
    class HalfGradExp(mg.ops.Exp):
        def backward(self, grad):
            return (0.5 * grad * self.out,)

    try:
        with pytest.raises(AssertionError, match="analytic"):
            check_gradients(lambda x: HalfGradExp.apply(x), [np.linspace(-1, 1, 5)], {}, np.random.default_rng(0))
    finally:
        del Function.registry["HalfGradExp"]


def test_a_backward_that_writes_into_its_input_is_caught():
    class InPlaceNeg(mg.ops.Neg):
        def forward(self, a):
            self.a = a
            return -a

        def backward(self, grad):
            self.a *= 0  # the bug being detected
            return (-grad,)

    try:
        with pytest.raises(AssertionError, match="wrote into input 0"):
            check_gradients(lambda x: InPlaceNeg.apply(x), [np.ones(3)], {}, np.random.default_rng(0))
    finally:
        del Function.registry["InPlaceNeg"]
