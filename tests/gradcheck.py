"""Gradient checking in float64 by random-direction vector-Jacobian products.

For an op y = f(x_1, ..., x_k), a random upstream gradient u and a random direction v_i per input,
the analytic side is <J_i^T u, v_i> (what backward() puts in x_i.grad, dotted with v_i) and the
numeric side is the central difference (<u, f(x_i + eps v_i)> - <u, f(x_i - eps v_i)>) / (2 eps).
A few directions per input test the whole Jacobian at the cost of a few forward calls.
"""
import copy
import importlib
import pkgutil

import numpy as np

import minigen as mg


def import_all_modules():
    """Import every minigen module (not the kernels, nor __main__) so that every op is registered.

    Returns {module name: error message} for modules that failed to import, so that one broken module
    fails the test that reports it instead of the collection of every gradient check."""
    failures = {}
    for info in pkgutil.walk_packages(mg.__path__, "minigen.", onerror=lambda name: None):
        if info.name.endswith("__main__") or info.name.startswith("minigen.kernels"):
            continue
        try:
            importlib.import_module(info.name)
        except Exception as e:  # reported by test_every_module_imports
            failures[info.name] = f"{type(e).__name__}: {e}"
    return failures


def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return True  # scalars and strings: nothing an op could write into


def evaluate(call, arrays, kwargs):
    """The op's forward value on plain arrays, without recording a graph."""
    with mg.no_grad():
        return call(*[mg.tensor(a) for a in arrays], **kwargs).data


def check_gradients(call, inputs, kwargs, rng, directions=3, eps=1e-6, rtol=1e-5):
    """Assert that backward() of `call(*tensors, **kwargs)` agrees with central differences.

    `inputs` are float64 arrays that receive gradients; `kwargs` holds everything else. Also asserts
    that the output and the gradients are float64 with the inputs' shapes, and that neither forward nor
    backward writes into the inputs, the kwargs' arrays or the upstream gradient."""
    tensors = [mg.tensor(x, requires_grad=True) for x in inputs]
    before = [t.data.copy() for t in tensors]
    kwargs_before = copy.deepcopy(kwargs)
    out = call(*tensors, **kwargs)
    assert out.dtype == np.float64, f"output dtype {out.dtype} from float64 inputs"
    assert out.requires_grad, "output of a differentiable op on inputs that require grad does not require grad"
    upstream = rng.standard_normal(out.shape)
    upstream_before = upstream.copy()
    out.backward(upstream)
    assert np.array_equal(upstream, upstream_before), "backward wrote into the upstream gradient"
    for i, (t, b) in enumerate(zip(tensors, before)):
        assert np.array_equal(t.data, b, equal_nan=True), f"forward or backward wrote into input {i}"
    for k, v in kwargs_before.items():
        assert _same(kwargs[k], v), f"forward or backward wrote into argument {k!r}"

    base = [t.data for t in tensors]
    scale = np.abs(upstream).sum() * max(1.0, float(np.abs(out.data).max(initial=0.0)))
    for i, t in enumerate(tensors):
        grad = np.zeros_like(t.data) if t.grad is None else t.grad
        assert grad.shape == t.shape, f"gradient of input {i} has shape {grad.shape}, input has {t.shape}"
        assert grad.dtype == np.float64, f"gradient of input {i} has dtype {grad.dtype}"
        for _ in range(directions):
            v = rng.standard_normal(t.shape)
            plus, minus = list(base), list(base)
            plus[i], minus[i] = base[i] + eps * v, base[i] - eps * v
            numeric = (np.sum(upstream * evaluate(call, plus, kwargs))
                       - np.sum(upstream * evaluate(call, minus, kwargs))) / (2 * eps)
            analytic = np.sum(grad * v)
            tol = rtol * max(abs(numeric), abs(analytic)) + 1e-8 * scale + 1e-10
            assert abs(numeric - analytic) <= tol, (
                f"input {i} (shape {t.shape}): analytic <grad, v> = {analytic!r}, "
                f"numeric = {numeric!r}, difference {abs(numeric - analytic):.3g} > tolerance {tol:.3g}")


def forward_and_grads(call, inputs, kwargs, upstream):
    """(output, [gradient per input]) of `call` with the given upstream gradient; None grads become zeros."""
    tensors = [mg.tensor(x, requires_grad=True) for x in inputs]
    out = call(*tensors, **kwargs)
    out.backward(upstream)
    return out.data, [np.zeros_like(t.data) if t.grad is None else t.grad for t in tensors]
