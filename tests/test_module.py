"""Module, Parameter and the containers: registration, traversal, modes, state_dict, dtype moves, repr."""
import numpy as np
import pytest

import minigen as mg
from minigen.nn import Module, ModuleDict, ModuleList, Parameter, Sequential


class Affine(Module):
    """y = x * scale + shift, with an optional shift and a persistent and a non-persistent buffer."""

    def __init__(self, n, shift=True):
        super().__init__()
        self.scale = Parameter(np.ones(n, dtype=np.float32))
        self.register_parameter("shift", Parameter(np.zeros(n, dtype=np.float32)) if shift else None)
        self.register_buffer("counts", np.zeros(n, dtype=np.float32))
        self.register_buffer("cache", np.ones(n, dtype=np.float32), persistent=False)
        self.n = n

    def forward(self, x):
        y = x * self.scale
        return y if self.shift is None else y + self.shift

    def extra_repr(self):
        return f"n={self.n}"


class Net(Module):
    def __init__(self):
        super().__init__()
        self.first = Affine(3)
        self.body = Sequential(Affine(3), Affine(3, shift=False))
        self.head = Affine(3)

    def forward(self, x):
        return self.head(self.body(self.first(x)))


def test_parameter_is_a_leaf_tensor_that_requires_grad():
    p = Parameter(np.ones(2))
    assert isinstance(p, mg.Tensor) and p.requires_grad and p.is_leaf and p.dtype == np.float64
    assert not Parameter(mg.ones(2), requires_grad=False).requires_grad
    assert repr(p).startswith("Parameter containing:\ntensor(")


def test_registration_and_nested_names():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["first.scale", "first.shift", "body.0.scale", "body.0.shift", "body.1.scale",
                     "head.scale", "head.shift"]
    assert len(list(net.parameters())) == 7
    assert [n for n, _ in net.named_modules()] == ["", "first", "body", "body.0", "body.1", "head"]
    assert [n for n, _ in net.named_children()] == ["first", "body", "head"]
    assert len(list(net.children())) == 3 and len(list(net.modules())) == 6
    assert net.body[1].shift is None and "shift" in net.body[1]._parameters


def test_reassigning_an_attribute_updates_the_registries():
    m = Affine(2)
    m.scale = mg.tensor([1.0, 2.0])  # a plain Tensor is not a parameter
    assert [n for n, _ in m.named_parameters()] == ["shift"]
    m.extra = Affine(2)
    m.extra = None
    assert list(m.named_children()) == []


def test_setting_attributes_before_init_raises():
    class Broken(Module):
        def __init__(self):
            self.w = Parameter(np.ones(1))

    with pytest.raises(AttributeError, match="super"):
        Broken()


def test_tied_weights_are_listed_once_but_saved_under_every_name():
    net = Net()
    net.head.scale = net.first.scale
    names = [n for n, _ in net.named_parameters()]
    assert "first.scale" in names and "head.scale" not in names and len(names) == 6
    state = net.state_dict()
    assert "first.scale" in state and "head.scale" in state
    state["first.scale"] = np.full(3, 4.0, dtype=np.float32)
    state["head.scale"] = np.full(3, 4.0, dtype=np.float32)
    net.load_state_dict(state)
    assert net.head.scale is net.first.scale and net.first.scale.tolist() == [4.0] * 3


def test_shared_module_is_visited_once():
    shared = Affine(2)
    seq = Sequential(shared, shared)
    assert len(list(seq.parameters())) == 2
    assert [n for n, _ in seq.named_modules()] == ["", "0"]


def test_train_eval_propagate():
    net = Net()
    assert net.training and net.body[0].training
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_eval_mode_gives_each_module_its_own_mode_back():
    net = Net()
    net.body[0].eval()  # a submodule the caller froze inside a training model
    before = [m.training for m in net.modules()]
    with net.eval_mode():
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == before
    with pytest.raises(RuntimeError), net.eval_mode():
        raise RuntimeError("inside")
    assert [m.training for m in net.modules()] == before


def test_generate_leaves_the_modes_as_they_were():
    from minigen.models.gpt import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.1))
    model.transformer.h[0].eval()
    before = [m.training for m in model.modules()]
    model.generate(np.array([[1, 2]]), max_new_tokens=2)
    assert [m.training for m in model.modules()] == before


def test_zero_grad_and_requires_grad_():
    net = Net()
    net(mg.ones(3)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.requires_grad_(False)
    assert not net(mg.ones(3)).requires_grad


def test_state_dict_round_trip_with_buffers():
    net = Net()
    state = net.state_dict()
    assert "first.counts" in state and "first.cache" not in state  # non-persistent buffers are not saved
    assert all(isinstance(v, np.ndarray) for v in state.values())
    state["first.scale"][:] = 5  # a copy: the model is untouched
    assert net.first.scale.tolist() == [1.0] * 3
    other = Net()
    state["body.0.counts"] = np.full(3, 2.0, dtype=np.float32)
    assert other.load_state_dict(state) == ([], [])
    assert other.first.scale.tolist() == [5.0] * 3 and other.body[0].counts.tolist() == [2.0] * 3
    other.load_state_dict({k: mg.tensor(v) for k, v in state.items()})  # Tensors load too


def test_load_state_dict_strict_lists_missing_and_unexpected_keys():
    net = Net()
    state = net.state_dict()
    del state["head.shift"]
    state["head.bogus"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"missing keys \['head.shift'\].*unexpected keys \['head.bogus'\]"):
        net.load_state_dict(state)
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert missing == ["head.shift"] and unexpected == ["head.bogus"]


def test_load_state_dict_wrong_shape_names_the_key():
    net = Net()
    state = net.state_dict()
    state["body.1.scale"] = np.ones(4, dtype=np.float32)
    with pytest.raises(ValueError, match=r"body\.1\.scale.*\(4,\).*\(3,\)"):
        net.load_state_dict(state, strict=False)
    assert net.body[1].scale.shape == (3,)  # nothing was loaded


def test_load_state_dict_keeps_the_models_dtype():
    net = Net()
    state = {k: v.astype(np.float64) for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    assert all(p.dtype == np.float32 for p in net.parameters())


def test_to_double_float_convert_parameters_and_float_buffers():
    net = Net()
    net(mg.ones(3)).sum().backward()
    assert net.double() is net
    assert all(p.dtype == np.float64 and p.grad is None for p in net.parameters())
    assert net.first.counts.dtype == np.float64 and net.first.cache.dtype == np.float64
    assert "first.cache" not in net.state_dict()  # still non-persistent after the move
    out = net(mg.tensor(np.ones(3)))
    assert out.dtype == np.float64
    net.float()
    assert all(p.dtype == np.float32 for p in net.parameters())
    net.to(mg.float64)
    assert net.head.scale.dtype == np.float64


def test_apply_visits_every_module():
    net = Net()
    seen = []
    assert net.apply(lambda m: seen.append(type(m).__name__)) is net
    assert sorted(seen) == sorted(["Net", "Affine", "Sequential", "Affine", "Affine", "Affine"])
    net.apply(lambda m: m.scale.zero_() if isinstance(m, Affine) else None)
    assert all(not m.scale.numpy().any() for m in net.modules() if isinstance(m, Affine))


def test_repr_is_readable():
    text = repr(Net())
    assert text.splitlines() == [
        "Net(",
        "  (first): Affine(n=3)",
        "  (body): Sequential(",
        "    (0): Affine(n=3)",
        "    (1): Affine(n=3)",
        "  )",
        "  (head): Affine(n=3)",
        ")",
    ]


def test_forward_is_required():
    with pytest.raises(NotImplementedError, match="Module"):
        Module()(1)


def test_sequential():
    seq = Sequential(Affine(2), Affine(2))
    seq[0].scale.data[:] = 3
    assert len(seq) == 2 and list(seq)[1] is seq[1] and seq[-1] is seq[1]
    assert seq(mg.ones(2)).tolist() == [3.0, 3.0]


def test_module_list():
    layers = ModuleList([Affine(2), Affine(2)])
    layers.append(Affine(2))
    assert len(layers) == 3 and [n for n, _ in layers.named_parameters()][-1] == "2.shift"
    assert isinstance(layers[1:], ModuleList) and len(layers[1:]) == 2 and layers[-1] is list(layers)[2]


def test_module_dict():
    d = ModuleDict({"a": Affine(2)})
    d["b"] = Affine(3)
    assert "b" in d and len(d) == 2 and list(d) == ["a", "b"] and list(d.keys()) == ["a", "b"]
    assert d["b"].n == 3 and [k for k, _ in d.items()] == ["a", "b"] and len(list(d.values())) == 2
    assert sorted(d.state_dict()) == ["a.counts", "a.scale", "a.shift", "b.counts", "b.scale", "b.shift"]
