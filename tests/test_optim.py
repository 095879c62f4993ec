"""Optimizers, the adamw_update kernel, LR schedules, optimizer state checkpoints and clip_grad_norm_."""
import json
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import minigen as mg
from minigen import kernels, nn, optim
from minigen.io import safetensors
from minigen.nn import Parameter
from minigen.nn import functional as F
from minigen.nn.utils import clip_grad_norm_
from minigen.optim import lr_scheduler

STEPS = 5


# ----- hand-written references of PyTorch's formulas ---------------------------------------------
def ref_sgd(p, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """Parameter values after each step."""
    out, buf = [], None
    for g in grads:
        d = g + weight_decay * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
        out.append(p)
    return out


def ref_adam(p, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    """Parameter values after each step; decoupled=True is AdamW."""
    beta1, beta2 = betas
    m, v, v_max, out = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p), []
    for t, g in enumerate(grads, 1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = np.maximum(v_max, v)
        denom = np.sqrt(v_max if amsgrad else v) / math.sqrt(1 - beta2 ** t) + eps
        p = p - lr / (1 - beta1 ** t) * m / denom
        out.append(p)
    return out


def make_problem(shapes, steps=STEPS, dtype=np.float64, seed=0):
    """Initial values and a gradient sequence for each parameter."""
    rng = np.random.default_rng(seed)
    inits = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for _ in range(steps)] for s in shapes]
    return inits, grads


def run(make_optimizer, inits, grads, steps=STEPS):
    """Parameters, the optimizer and each parameter's values after every step."""
    params = [Parameter(x.copy()) for x in inits]
    opt = make_optimizer(params)
    history = [[] for _ in params]
    for t in range(steps):
        for p, g in zip(params, grads):
            p.grad = g[t].copy()
        opt.step()
        for h, p in zip(history, params):
            h.append(p.data.copy())
    return params, opt, history


def assert_trajectory(history, expected, rtol=1e-12):
    for got, want in zip(history, expected):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-14)


# ----- update rules ------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01),
    dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
])
def test_sgd_matches_reference(options):
    inits, grads = make_problem([(3, 4), (5,)])
    _, _, history = run(lambda ps: optim.SGD(ps, **options), inits, grads)
    for h, x, g in zip(history, inits, grads):
        assert_trajectory(h, ref_sgd(x, g, **options))


@pytest.mark.parametrize("cls, decoupled", [(optim.Adam, False), (optim.AdamW, True)])
@pytest.mark.parametrize("options", [
    dict(),
    dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    dict(lr=0.01, weight_decay=0.05, amsgrad=True),
])
def test_adam_and_adamw_match_reference(cls, decoupled, options):
    inits, grads = make_problem([(2, 3, 4), (7,)])
    _, opt, history = run(lambda ps: cls(ps, **options), inits, grads)
    expected_options = {"weight_decay": 1e-2 if cls is optim.AdamW else 0.0, **options}
    for h, x, g in zip(history, inits, grads):
        assert_trajectory(h, ref_adam(x, g, decoupled=decoupled, **expected_options))
    assert all(s["step"] == STEPS for s in opt.state.values())


def test_param_groups_use_their_own_options():
    inits, grads = make_problem([(4,), (2, 2), (3,)])

    def make(ps):
        return optim.AdamW([{"params": [ps[0]]},
                            {"params": ps[1], "lr": 0.05, "weight_decay": 0.0, "amsgrad": True},
                            {"params": [ps[2]], "betas": (0.5, 0.9), "eps": 1e-3}], lr=0.01, weight_decay=0.2)

    _, opt, history = run(make, inits, grads)
    group_options = [dict(lr=0.01, weight_decay=0.2), dict(lr=0.05, weight_decay=0.0, amsgrad=True),
                     dict(lr=0.01, weight_decay=0.2, betas=(0.5, 0.9), eps=1e-3)]
    for h, x, g, o in zip(history, inits, grads, group_options):
        assert_trajectory(h, ref_adam(x, g, decoupled=True, **o))
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.05, 0.01]
    assert opt.param_groups[1]["params"][0].shape == (2, 2)


def test_sgd_param_groups_with_nesterov_in_one_group():
    inits, grads = make_problem([(3,), (3,)])
    options = [dict(lr=0.1), dict(lr=0.02, momentum=0.9, nesterov=True)]
    _, _, history = run(lambda ps: optim.SGD([{"params": [p], **o} for p, o in zip(ps, options)], lr=0.5),
                        inits, grads)
    for h, x, g, o in zip(history, inits, grads, options):
        assert_trajectory(h, ref_sgd(x, g, **o))


def test_params_without_grad_are_skipped():
    a, b = Parameter(np.ones(3)), Parameter(np.ones(2))
    opt = optim.AdamW([a, b], lr=0.1)
    a.grad = np.ones(3)
    opt.step()
    assert np.array_equal(b.data, np.ones(2)) and b not in opt.state
    assert opt.state[a]["step"] == 1 and not np.array_equal(a.data, np.ones(3))


def test_float32_parameters_stay_float32_and_in_place():
    p = Parameter(np.ones((2, 3), dtype=np.float32))
    array = p.data
    opt = optim.AdamW([p], lr=0.1, amsgrad=True)
    p.grad = np.full((2, 3), 0.5, dtype=np.float32)
    opt.step()
    assert p.data is array and p.dtype == np.float32
    assert all(v.dtype == np.float32 for k, v in opt.state[p].items() if k != "step")


def test_non_contiguous_and_read_only_parameters_are_updated():
    inits, grads = make_problem([(3, 4), (5,)])
    params = [Parameter(np.ascontiguousarray(inits[0].T).T), Parameter(inits[1].copy())]
    params[1].data.flags.writeable = False
    opt = optim.AdamW(params, lr=0.1)
    for p, g in zip(params, grads):
        p.grad = g[0]
    opt.step()
    for p, x, g in zip(params, inits, grads):
        assert p.data.flags.c_contiguous and p.data.flags.writeable
        assert_trajectory([p.data], ref_adam(x, g[:1], lr=0.1, weight_decay=1e-2, decoupled=True))


def test_zero_grad():
    p = Parameter(np.ones(3))
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.ones(3)
    kept = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is kept and np.array_equal(kept, np.zeros(3))
    opt.zero_grad()
    assert p.grad is None


def test_step_calls_the_closure_and_returns_its_loss():
    w = Parameter(np.array([3.0]))
    opt = optim.SGD([w], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 9.0 and w.data[0] == pytest.approx(3.0 - 0.25 * 6.0)


# ----- the adamw_update kernel -------------------------------------------------------------------
@settings(max_examples=20)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=9), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2 ** 32 - 1), step=st.integers(1, 50), weight_decay=st.sampled_from([0.0, 0.1]),
       amsgrad=st.booleans())
def test_adamw_kernel_matches_reference(shape, dtype, seed, step, weight_decay, amsgrad):
    rng = np.random.default_rng(seed)
    param, grad, exp_avg = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    exp_avg_sq, max_sq = (rng.random(shape).astype(dtype) for _ in range(2))
    lr, beta1, beta2, eps = 0.01, 0.9, 0.95, 1e-8
    p64, g64, m64, v64, vmax64 = (a.astype(np.float64) for a in (param, grad, exp_avg, exp_avg_sq, max_sq))
    p64 = p64 * (1 - lr * weight_decay)
    m64 = beta1 * m64 + (1 - beta1) * g64
    v64 = beta2 * v64 + (1 - beta2) * g64 * g64
    vmax64 = np.maximum(vmax64, v64)
    denom = np.sqrt(vmax64 if amsgrad else v64) / math.sqrt(1 - beta2 ** step) + eps
    p64 = p64 - lr / (1 - beta1 ** step) * m64 / denom
    arrays = [param, exp_avg, exp_avg_sq, max_sq]
    if amsgrad:
        result = kernels.adamw_amsgrad_update(param, grad, exp_avg, exp_avg_sq, max_sq, lr, beta1, beta2, eps,
                                              weight_decay, step)
    else:
        result = kernels.adamw_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step)
    assert result is None
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for got, want in zip(arrays, [p64, m64, v64, vmax64 if amsgrad else max_sq]):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


# ----- state_dict and checkpoints ----------------------------------------------------------------
FACTORIES = {
    "sgd_momentum": lambda ps, lr=0.05: optim.SGD([{"params": ps[:1]}, {"params": ps[1:], "nesterov": True}],
                                                  lr=lr, momentum=0.9, weight_decay=0.01),
    "adam_amsgrad": lambda ps, lr=0.01: optim.Adam(ps, lr=lr, weight_decay=0.1, amsgrad=True),
    "adamw_groups": lambda ps, lr=0.01: optim.AdamW([{"params": ps[:1], "weight_decay": 0.0},
                                                     {"params": ps[1:], "betas": (0.8, 0.9)}], lr=lr),
}


def continue_after(factory, restore):
    """Train 3 steps, restore the state into a fresh optimizer (built with another lr), and run both
    3 more steps on the same gradients: the two must agree bit for bit."""
    inits, grads = make_problem([(3, 4), (6,)], steps=6, dtype=np.float32)
    params, opt, _ = run(factory, inits, grads, steps=3)
    twins = [Parameter(p.data.copy()) for p in params]
    twin_opt = factory(twins, lr=123.0)
    restore(opt, twin_opt)
    for t in range(3, 6):
        for ps, o in ((params, opt), (twins, twin_opt)):
            for p, g in zip(ps, grads):
                p.grad = g[t].copy()
            o.step()
    for p, q in zip(params, twins):
        assert np.array_equal(p.data, q.data)
    for a, b in zip(opt.state_dict()["state"].values(), twin_opt.state_dict()["state"].values()):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert opt.state_dict()["param_groups"] == twin_opt.state_dict()["param_groups"]


@pytest.mark.parametrize("name", FACTORIES)
def test_state_dict_round_trip_continues_identically(name):
    continue_after(FACTORIES[name], lambda src, dst: dst.load_state_dict(src.state_dict()))


@pytest.mark.parametrize("name", FACTORIES)
def test_arrays_and_json_meta_round_trip_continues_identically(name):
    def restore(src, dst):
        arrays, meta = optim.optimizer_state_to_arrays(src)
        assert all(isinstance(a, np.ndarray) for a in arrays.values())
        optim.optimizer_state_from_arrays(dst, {k: v.copy() for k, v in arrays.items()},
                                          json.loads(json.dumps(meta)))
    continue_after(FACTORIES[name], restore)


def test_optimizer_state_through_a_safetensors_file(tmp_path):
    def restore(src, dst):
        arrays, meta = optim.optimizer_state_to_arrays(src)
        path = tmp_path / "optimizer.safetensors"
        safetensors.save_file(arrays, path, metadata={"optimizer": json.dumps(meta)})
        meta = json.loads(safetensors.load_metadata(path)["optimizer"])
        optim.optimizer_state_from_arrays(dst, safetensors.load_file(path), meta)
    continue_after(FACTORIES["adamw_groups"], restore)


def test_state_dict_layout_and_snapshot():
    a, b, c = Parameter(np.ones(2)), Parameter(np.ones(3)), Parameter(np.ones(4))
    opt = optim.AdamW([{"params": [a, b]}, {"params": [c], "lr": 0.5}])
    for p in (a, c):
        p.grad = np.ones_like(p.data)
    opt.step()
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sorted(sd["state"]) == [0, 2]
    assert set(sd["state"][2]) == {"step", "exp_avg", "exp_avg_sq"} and sd["state"][2]["step"] == 1
    assert sd["param_groups"][1]["lr"] == 0.5 and sd["param_groups"][0]["betas"] == (0.9, 0.999)
    saved = sd["state"][0]["exp_avg"].copy()
    opt.step()
    assert np.array_equal(sd["state"][0]["exp_avg"], saved)


def test_arrays_meta_layout():
    p = Parameter(np.ones((2, 2), dtype=np.float32))
    opt = optim.AdamW([p])
    p.grad = np.ones((2, 2), dtype=np.float32)
    opt.step()
    arrays, meta = optim.optimizer_state_to_arrays(opt)
    assert sorted(arrays) == ["state.0.exp_avg", "state.0.exp_avg_sq"]
    assert arrays["state.0.exp_avg"].dtype == np.float32
    assert meta["optimizer"] == "AdamW" and meta["state"] == {"0": {"step": 1}}
    assert meta["param_groups"][0]["betas"] == [0.9, 0.999] and meta["param_groups"][0]["params"] == [0]


def _adamw_after_one_step(shapes):
    params = [Parameter(np.ones(s)) for s in shapes]
    opt = optim.AdamW([{"params": [p]} for p in params])
    for p in params:
        p.grad = np.ones(p.shape)
    opt.step()
    return opt


def test_load_state_dict_rejects_mismatches():
    sd = _adamw_after_one_step([(2,), (3, 4)]).state_dict()
    with pytest.raises(ValueError, match=re.escape("param group 1, parameter 0 (index 1): state 'exp_avg' has "
                                                   "shape (3, 4), the parameter has shape (4, 3)")):
        _adamw_after_one_step([(2,), (4, 3)]).load_state_dict(sd)
    with pytest.raises(ValueError, match="saved state has 2 parameter groups, the optimizer has 1"):
        optim.AdamW([Parameter(np.ones(2))]).load_state_dict(sd)
    target = optim.AdamW([{"params": [Parameter(np.ones(2))]}, {"params": [Parameter(np.ones(3)) for _ in "ab"]}])
    with pytest.raises(ValueError, match="param group 1 has 1 parameters in the saved state and 2 in the optimizer"):
        target.load_state_dict(sd)
    del sd["state"][0]["exp_avg_sq"]
    with pytest.raises(ValueError, match=r"param group 0, parameter 0 \(index 0\): state has keys"):
        _adamw_after_one_step([(2,), (3, 4)]).load_state_dict(sd)


def test_load_state_dict_failure_leaves_the_optimizer_unchanged():
    good = _adamw_after_one_step([(2,), (3,)])
    before = good.state_dict()
    bad = _adamw_after_one_step([(2,), (5,)]).state_dict()
    bad["param_groups"][0]["lr"] = 0.5
    with pytest.raises(ValueError):
        good.load_state_dict(bad)
    assert good.param_groups[0]["lr"] == before["param_groups"][0]["lr"]
    assert np.array_equal(good.state_dict()["state"][1]["exp_avg"], before["state"][1]["exp_avg"])


def test_state_from_arrays_rejects_mismatches():
    opt = _adamw_after_one_step([(2,), (3,)])
    arrays, meta = optim.optimizer_state_to_arrays(opt)
    with pytest.raises(ValueError, match="saved from AdamW, cannot load it into Adam"):
        optim.optimizer_state_from_arrays(optim.Adam([Parameter(np.ones(2))]), arrays, meta)
    with pytest.raises(ValueError, match="array name 'exp_avg' is not of the form"):
        optim.optimizer_state_from_arrays(opt, {"exp_avg": np.ones(2)}, meta)
    wrong = dict(arrays, **{"state.1.exp_avg": np.ones((3, 1))})
    with pytest.raises(ValueError, match=re.escape("param group 1, parameter 0 (index 1): state 'exp_avg' "
                                                   "has shape (3, 1), the parameter has shape (3,)")):
        optim.optimizer_state_from_arrays(opt, wrong, meta)
    with pytest.raises(ValueError, match="meta must be a dict"):
        optim.optimizer_state_from_arrays(opt, arrays, {"state": {}})


# ----- argument validation -----------------------------------------------------------------------
def _p():
    return [Parameter(np.ones(2))]


@pytest.mark.parametrize("make, message", [
    (lambda: optim.SGD([], lr=0.1), "SGD: params is an empty parameter list"),
    (lambda: optim.AdamW(iter([])), "AdamW: params is an empty parameter list"),
    (lambda: optim.SGD(_p(), lr=-0.1), "SGD: lr must be >= 0.0, got -0.1"),
    (lambda: optim.SGD(_p(), lr=0.1, momentum=-1), "SGD: momentum must be >= 0.0, got -1"),
    (lambda: optim.SGD(_p(), lr=0.1, weight_decay=-1e-3), "SGD: weight_decay must be >= 0.0, got -0.001"),
    (lambda: optim.SGD(_p(), lr=0.1, nesterov=True), "SGD: nesterov=True needs momentum > 0 and dampening = 0"),
    (lambda: optim.SGD(_p(), lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "got momentum=0.9, dampening=0.1"),
    (lambda: optim.Adam(_p(), lr=-1e-3), "Adam: lr must be >= 0.0, got -0.001"),
    (lambda: optim.Adam(_p(), betas=(1.0, 0.999)), "Adam: betas[0] must be in [0.0, 1.0), got 1.0"),
    (lambda: optim.AdamW(_p(), betas=(0.9, -0.5)), "AdamW: betas[1] must be in [0.0, 1.0), got -0.5"),
    (lambda: optim.AdamW(_p(), betas=(0.9,)), "AdamW: betas must be a pair (beta1, beta2), got (0.9,)"),
    (lambda: optim.AdamW(_p(), eps=-1e-8), "AdamW: eps must be >= 0.0, got -1e-08"),
    (lambda: optim.AdamW(_p(), weight_decay=-0.1), "AdamW: weight_decay must be >= 0.0, got -0.1"),
    (lambda: optim.AdamW(_p(), lr=float("nan")), "AdamW: lr must be >= 0.0, got nan"),
    (lambda: optim.AdamW([{"params": _p(), "lr": -2.0}]), "AdamW: param group 0: lr must be >= 0.0, got -2.0"),
    (lambda: optim.AdamW([{"lr": 0.1}]), "AdamW: param group 0 has no 'params' entry"),
])
def test_bad_arguments_raise_value_error(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_bad_params_raise():
    p = Parameter(np.ones(2))
    with pytest.raises(TypeError, match="got a single Parameter; wrap it in a list"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="parameter 1 is a ndarray; expected a Parameter"):
        optim.SGD([p, np.ones(2)], lr=0.1)
    with pytest.raises(ValueError, match="appears more than once"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="parameter 0 is not a leaf tensor"):
        optim.SGD([p * 2], lr=0.1)
    with pytest.raises(TypeError, match="lr must be a real number, got '0.1'"):
        optim.AdamW([p], lr="0.1")
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.ones(3)
    with pytest.raises(ValueError, match=re.escape("gradient of shape (3,) was set on a parameter of shape (2,)")):
        opt.step()


# ----- learning-rate schedules -------------------------------------------------------------------
def lrs_over(make_scheduler, steps, lrs=(0.1,)):
    opt = optim.SGD([{"params": [Parameter(np.ones(1))], "lr": lr} for lr in lrs], lr=0.1)
    sched = make_scheduler(opt)
    values = []
    for _ in range(steps):
        values.append(sched.get_last_lr())
        assert values[-1] == [g["lr"] for g in opt.param_groups]
        opt.step()
        sched.step()
    return values


def test_get_lr_warmup_cosine_hand_values():
    def lr(step):
        return lr_scheduler.get_lr_warmup_cosine(step, 1e-3, 10, 110, 1e-4)

    assert lr(0) == pytest.approx(1e-3 / 11)
    assert lr(9) == pytest.approx(1e-3 * 10 / 11)
    assert lr(10) == pytest.approx(1e-3)                      # end of warm-up: the peak
    assert lr(60) == pytest.approx(1e-4 + 0.5 * 9e-4)         # halfway through the decay
    assert lr(35) == pytest.approx(1e-4 + 9e-4 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr(110) == pytest.approx(1e-4) and lr(5000) == 1e-4
    assert lr_scheduler.get_lr_warmup_cosine(0, 1e-3, 0, 100, 1e-4) == pytest.approx(1e-3)


def test_lr_schedules_hand_values():
    def close(got, want):
        np.testing.assert_allclose(np.array(got).ravel(), want, rtol=1e-12)

    close(lrs_over(lambda o: lr_scheduler.LambdaLR(o, lambda e: 0.5 ** e), 3, lrs=(1.0,)), [1.0, 0.5, 0.25])
    close(lrs_over(lambda o: lr_scheduler.LinearLR(o, start_factor=0.5, total_iters=4), 6),
          [0.05, 0.0625, 0.075, 0.0875, 0.1, 0.1])
    close(lrs_over(lambda o: lr_scheduler.ConstantLR(o, factor=0.5, total_iters=2), 4), [0.05, 0.05, 0.1, 0.1])
    close(lrs_over(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=4, eta_min=0.01), 5),
          [0.1, 0.01 + 0.09 * (1 + math.cos(math.pi / 4)) / 2, 0.055, 0.01 + 0.09 * (1 - math.cos(math.pi / 4)) / 2,
           0.01])
    two = lrs_over(lambda o: lr_scheduler.WarmupCosineLR(o, warmup_iters=2, lr_decay_iters=6, min_lr=1e-4), 8,
                   lrs=(1e-3, 2e-3))
    for step, (a, b) in enumerate(two):
        assert a == lr_scheduler.get_lr_warmup_cosine(step, 1e-3, 2, 6, 1e-4)
        assert b == lr_scheduler.get_lr_warmup_cosine(step, 2e-3, 2, 6, 1e-4)


def test_lambda_lr_per_group():
    values = lrs_over(lambda o: lr_scheduler.LambdaLR(o, [lambda e: 1.0, lambda e: e + 1.0]), 3, lrs=(0.1, 0.2))
    np.testing.assert_allclose(values, [[0.1, 0.2], [0.1, 0.4], [0.1, 0.6]])


def test_scheduler_state_dict_round_trip_and_resume():
    def make(opt):
        return lr_scheduler.WarmupCosineLR(opt, warmup_iters=3, lr_decay_iters=10, min_lr=1e-4)

    opt = optim.AdamW([Parameter(np.ones(2))], lr=1e-3)
    sched = make(opt)
    for _ in range(5):
        sched.step()
    saved_opt, saved = opt.state_dict(), json.loads(json.dumps(sched.state_dict()))
    opt2 = optim.AdamW([Parameter(np.ones(2))], lr=5.0)
    opt2.load_state_dict(saved_opt)
    sched2 = make(opt2)
    sched2.load_state_dict(saved)
    for _ in range(4):
        sched.step()
        sched2.step()
        assert sched.get_last_lr() == sched2.get_last_lr()
    # resuming by last_epoch: the groups already hold 'initial_lr'
    resumed = lr_scheduler.WarmupCosineLR(opt2, 3, 10, 1e-4, last_epoch=4)
    assert resumed.get_last_lr() == [lr_scheduler.get_lr_warmup_cosine(5, 1e-3, 3, 10, 1e-4)]


def test_scheduler_bad_arguments():
    opt = optim.SGD([Parameter(np.ones(1))], lr=0.1)
    with pytest.raises(ValueError, match=re.escape("lr_decay_iters must be >= warmup_iters (10), got 5")):
        lr_scheduler.WarmupCosineLR(opt, 10, 5, 1e-4)
    with pytest.raises(ValueError, match="min_lr must be >= 0, got -1"):
        lr_scheduler.get_lr_warmup_cosine(0, 1e-3, 1, 2, -1)
    with pytest.raises(TypeError, match="step must be an integer, got 1.5"):
        lr_scheduler.get_lr_warmup_cosine(1.5, 1e-3, 1, 2, 0.0)
    with pytest.raises(ValueError, match="LinearLR: start_factor must be in"):
        lr_scheduler.LinearLR(opt, start_factor=0.0)
    with pytest.raises(ValueError, match="CosineAnnealingLR: T_max must be >= 1, got 0"):
        lr_scheduler.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="expected 1 lr_lambdas"):
        lr_scheduler.LambdaLR(opt, [lambda e: 1.0] * 2)
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.ConstantLR(optim.SGD([Parameter(np.ones(1))], lr=0.1), last_epoch=3)
    with pytest.raises(ValueError, match="expected keys"):
        lr_scheduler.ConstantLR(opt).load_state_dict({"last_epoch": 3})


# ----- clip_grad_norm_ ---------------------------------------------------------------------------
def _with_grads(*grads):
    params = []
    for g in grads:
        p = Parameter(np.zeros(np.shape(g), dtype=np.float32))
        p.grad = None if g is None else np.array(g, dtype=np.float32)
        params.append(p)
    return params


def test_clip_grad_norm_scales_to_max_norm():
    params = _with_grads([3.0, 4.0], [[12.0]], None)
    total = clip_grad_norm_(params, 6.5)
    assert isinstance(total, float) and total == pytest.approx(13.0)
    scale = 6.5 / (13.0 + 1e-6)
    np.testing.assert_allclose(params[0].grad, [3 * scale, 4 * scale], rtol=1e-6)
    np.testing.assert_allclose(params[1].grad, [[12 * scale]], rtol=1e-6)
    assert params[2].grad is None and params[0].grad.dtype == np.float32


def test_clip_grad_norm_leaves_small_gradients_and_other_norms():
    params = _with_grads([3.0, -4.0])
    assert clip_grad_norm_(params, 10.0) == pytest.approx(5.0)
    assert params[0].grad.tolist() == [3.0, -4.0]
    params = _with_grads([3.0, -4.0], [1.0])
    assert clip_grad_norm_(params, 2.0, norm_type=float("inf")) == 4.0
    np.testing.assert_allclose(params[0].grad, [1.5, -2.0], rtol=1e-6)
    assert clip_grad_norm_(_with_grads([3.0, -4.0], [1.0]), 100.0, norm_type=1) == pytest.approx(8.0)
    assert clip_grad_norm_(_with_grads(None), 1.0) == 0.0
    single = _with_grads([6.0, 8.0])[0]
    assert clip_grad_norm_(single, 5.0) == pytest.approx(10.0)
    np.testing.assert_allclose(single.grad, [3.0, 4.0], rtol=1e-6)


def test_clip_grad_norm_nonfinite_and_bad_arguments():
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(_with_grads([np.inf, 1.0]), 1.0, error_if_nonfinite=True)
    params = _with_grads([np.nan, 1.0])
    assert math.isnan(clip_grad_norm_(params, 1.0))
    assert np.isnan(params[0].grad).all()
    with pytest.raises(ValueError, match="max_norm must be >= 0, got -1.0"):
        clip_grad_norm_(_with_grads([1.0]), -1.0)
    with pytest.raises(ValueError, match="norm_type must be > 0 or inf, got 0.0"):
        clip_grad_norm_(_with_grads([1.0]), 1.0, norm_type=0)


# ----- a small MLP learns two moons ------------------------------------------------------------
def two_moons(n, rng, noise=0.1):
    t = rng.uniform(0.0, math.pi, n)
    labels = rng.integers(0, 2, n)
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    x = np.where(labels[:, None] == 0, upper, lower) + noise * rng.standard_normal((n, 2))
    return x.astype(np.float32), labels


def test_mlp_learns_two_moons_with_adamw_warmup_cosine_and_clipping():
    rng = np.random.default_rng(0)
    x_train, y_train = two_moons(256, rng)
    x_test, y_test = two_moons(256, rng)
    mg.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
    opt = optim.AdamW([{"params": weights}, {"params": biases, "weight_decay": 0.0}], lr=0.02, weight_decay=1e-3)
    sched = lr_scheduler.WarmupCosineLR(opt, warmup_iters=20, lr_decay_iters=300, min_lr=1e-3)
    for _ in range(300):
        loss = F.cross_entropy(model(mg.tensor(x_train)), y_train)
        opt.zero_grad()
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    accuracy = (model(mg.tensor(x_test)).data.argmax(axis=1) == y_test).mean()
    assert accuracy >= 0.95, f"two-moons test accuracy {accuracy:.3f}"


# ----- agreement with PyTorch, when it is installed -----------------------------------------------
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def torch_history(torch, cls_name, group_options, defaults, inits, grads, steps=STEPS):
    params = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in inits]
    groups = [{"params": [p], **o} for p, o in zip(params, group_options)]
    opt = getattr(torch.optim, cls_name)(groups, **defaults)
    history = [[] for _ in params]
    for t in range(steps):
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(g[t].copy())
        opt.step()
        for h, p in zip(history, params):
            h.append(p.detach().numpy().copy())
    return opt, history


@pytest.mark.parametrize("cls_name, defaults, group_options", [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01), [{}, dict(nesterov=True), dict(dampening=0.5)]),
    ("Adam", dict(lr=0.01, weight_decay=0.1), [{}, dict(amsgrad=True), dict(betas=(0.5, 0.8), eps=1e-4)]),
    ("AdamW", dict(lr=0.01, weight_decay=0.1), [{}, dict(amsgrad=True), dict(lr=0.1, weight_decay=0.0)]),
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_trajectories_match_torch(torch, cls_name, defaults, group_options, dtype):
    inits, grads = make_problem([(3, 4), (5,), (2, 2, 2)], steps=8, dtype=dtype)
    theirs_opt, theirs = torch_history(torch, cls_name, group_options, defaults, inits, grads, steps=8)
    cls = getattr(optim, cls_name)
    ours_opt = None

    def make(ps):
        nonlocal ours_opt
        ours_opt = cls([{"params": [p], **o} for p, o in zip(ps, group_options)], **defaults)
        return ours_opt

    _, _, ours = run(make, inits, grads, steps=8)
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    ours_sd, theirs_sd = ours_opt.state_dict(), theirs_opt.state_dict()
    assert ours_sd["state"].keys() == theirs_sd["state"].keys()
    for index, entry in ours_sd["state"].items():
        assert entry.keys() == theirs_sd["state"][index].keys()
    for mine, theirs_group in zip(ours_sd["param_groups"], theirs_sd["param_groups"]):
        assert {k: mine[k] for k in mine} == {k: theirs_group[k] for k in mine}


@pytest.mark.parametrize("make", [
    lambda m, o: m.LambdaLR(o, lambda e: 0.9 ** e),
    lambda m, o: m.LinearLR(o, start_factor=0.25, end_factor=0.75, total_iters=6),
    lambda m, o: m.ConstantLR(o, factor=0.2, total_iters=3),
    lambda m, o: m.CosineAnnealingLR(o, T_max=7, eta_min=0.001),
])
def test_schedules_match_torch(torch, make):
    theirs_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    theirs = make(torch.optim.lr_scheduler, theirs_opt)
    ours = make(lr_scheduler, optim.SGD([Parameter(np.zeros(1))], lr=0.1))
    for _ in range(12):
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-12)
        theirs_opt.step()
        theirs.step()
        ours.step()


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
def test_clip_grad_norm_matches_torch(torch, norm_type):
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(s) for s in [(3, 4), (7,)]]
    ours = _with_grads(*grads)
    theirs = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
    for p, g in zip(theirs, grads):
        p.grad = torch.from_numpy(g.astype(np.float32))
    total = clip_grad_norm_(ours, 0.5, norm_type=norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 0.5, norm_type=norm_type)
    assert total == pytest.approx(expected.item(), rel=1e-6)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-5)
