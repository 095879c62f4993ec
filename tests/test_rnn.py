"""RNNCell, GRUCell, RNN and GRU: PyTorch's names and equations, variable lengths, gradients, errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigen as mg
from minigen import nn

from gradcheck import check_gradients
from op_specs_layers import flat, module_call, np_cell_step, np_recurrence

F64 = np.float64
SEEDS = st.integers(0, 2 ** 32 - 1)
MODES = {"GRU": "gru", "RNN": "tanh"}


def random_state(module, rng):
    """Random weights for every parameter of `module`, by name, as a PyTorch state_dict converted to NumPy."""
    return {k: rng.uniform(-0.8, 0.8, v.shape) for k, v in module.state_dict().items()}


def np_layers(state, x, h0, num_layers, bidirectional, mode, lengths=None):
    """The documented multi-layer (bidirectional) recurrence in NumPy: (output (T, B, D*H), h_n (L*D, B, H))."""
    T = x.shape[0]
    D = 2 if bidirectional else 1
    mask = None if lengths is None else np.arange(T)[:, None] < np.asarray(lengths)[None, :]
    finals = []
    for layer in range(num_layers):
        outputs = []
        for d in range(D):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            x_proj = x @ state["weight_ih" + suffix].T + state.get("bias_ih" + suffix, 0.0)
            hs = np_recurrence(x_proj, h0[layer * D + d], state["weight_hh" + suffix], state.get("bias_hh" + suffix),
                               mask, d == 1, mode)
            finals.append(hs[0] if d else hs[-1])
            outputs.append(hs if mask is None else hs * mask[:, :, None])
        x = np.concatenate(outputs, axis=-1)
    return x, np.stack(finals)


# ----- parameters -------------------------------------------------------------------------------
def test_gru_parameter_names_and_shapes_are_pytorchs():
    gru = nn.GRU(3, 4, num_layers=2, bidirectional=True)
    shapes = {k: v.shape for k, v in gru.state_dict().items()}
    assert list(shapes)[:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert shapes["weight_ih_l0"] == (12, 3) and shapes["weight_ih_l0_reverse"] == (12, 3)
    assert shapes["weight_ih_l1"] == (12, 8) and shapes["weight_hh_l1_reverse"] == (12, 4)
    assert shapes["bias_hh_l1_reverse"] == (12,) and len(shapes) == 16
    assert list(nn.GRU(3, 4, bias=False).state_dict()) == ["weight_ih_l0", "weight_hh_l0"]
    assert {k: v.shape for k, v in nn.GRUCell(3, 4).state_dict().items()} == {
        "weight_ih": (12, 3), "weight_hh": (12, 4), "bias_ih": (12,), "bias_hh": (12,)}
    assert nn.RNN(3, 4).weight_ih_l0.shape == (4, 3)


def test_recurrent_initialisation_is_uniform_in_one_over_sqrt_hidden():
    mg.manual_seed(0)
    bound = 1 / np.sqrt(50)
    for module in (nn.GRU(20, 50, num_layers=2), nn.RNNCell(20, 50), nn.GRUCell(20, 50)):
        for p in module.parameters():
            assert p.dtype == np.float32 and np.abs(p.data).max() <= bound
            assert abs(p.data.std() - bound / np.sqrt(3)) < 0.15 * bound


# ----- values against the NumPy equations -------------------------------------------------------
@pytest.mark.parametrize("kind", ["GRU", "RNN"])
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, True)])
def test_layers_match_the_equations_with_weights_loaded_by_name(kind, num_layers, bidirectional):
    rng = np.random.default_rng(0)
    module = getattr(nn, kind)(3, 4, num_layers=num_layers, bidirectional=bidirectional, dtype=F64)
    state = random_state(module, rng)
    module.load_state_dict(state)
    D = 2 if bidirectional else 1
    x, h0 = rng.standard_normal((5, 2, 3)), rng.standard_normal((num_layers * D, 2, 4))
    out, h_n = module(mg.tensor(x), mg.tensor(h0))
    want_out, want_h = np_layers(state, x, h0, num_layers, bidirectional, MODES[kind])
    np.testing.assert_allclose(out.data, want_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n.data, want_h, rtol=1e-10, atol=1e-12)
    zero_out, _ = module(mg.tensor(x))  # h_0 defaults to zeros
    want_zero, _ = np_layers(state, x, np.zeros_like(h0), num_layers, bidirectional, MODES[kind])
    np.testing.assert_allclose(zero_out.data, want_zero, rtol=1e-10, atol=1e-12)


def test_relu_rnn_matches_the_equations():
    rng = np.random.default_rng(1)
    rnn = nn.RNN(3, 4, nonlinearity="relu", dtype=F64)
    state = random_state(rnn, rng)
    rnn.load_state_dict(state)
    x = rng.standard_normal((4, 2, 3))
    out, h_n = rnn(mg.tensor(x))
    want, want_h = np_layers(state, x, np.zeros((1, 2, 4)), 1, False, "relu")
    np.testing.assert_allclose(out.data, want, rtol=1e-10)
    np.testing.assert_allclose(h_n.data, want_h, rtol=1e-10)


def test_gru_gate_equations_written_out():
    """One GRU step spelled out gate by gate, independently of the shared reference."""
    rng = np.random.default_rng(2)
    cell = nn.GRUCell(3, 2, dtype=F64)
    s = random_state(cell, rng)
    cell.load_state_dict(s)
    x, h = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    W_ir, W_iz, W_in = np.split(s["weight_ih"], 3)
    W_hr, W_hz, W_hn = np.split(s["weight_hh"], 3)
    b_ir, b_iz, b_in = np.split(s["bias_ih"], 3)
    b_hr, b_hz, b_hn = np.split(s["bias_hh"], 3)
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    r = sig(x @ W_ir.T + b_ir + h @ W_hr.T + b_hr)
    z = sig(x @ W_iz.T + b_iz + h @ W_hz.T + b_hz)
    n = np.tanh(x @ W_in.T + b_in + r * (h @ W_hn.T + b_hn))
    np.testing.assert_allclose(cell(mg.tensor(x), mg.tensor(h)).data, (1 - z) * n + z * h, rtol=1e-12)


@pytest.mark.parametrize("kind, nonlinearity", [("GRU", "tanh"), ("RNN", "tanh"), ("RNN", "relu")])
def test_cells_match_the_equations_batched_and_unbatched(kind, nonlinearity):
    rng = np.random.default_rng(3)
    kwargs = {} if kind == "GRU" else {"nonlinearity": nonlinearity}
    cell = getattr(nn, kind + "Cell")(3, 4, dtype=F64, **kwargs)
    state = random_state(cell, rng)
    cell.load_state_dict(state)
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    want, _ = np_cell_step(x @ state["weight_ih"].T + state["bias_ih"], h, state["weight_hh"], state["bias_hh"],
                           "gru" if kind == "GRU" else nonlinearity)
    np.testing.assert_allclose(cell(mg.tensor(x), mg.tensor(h)).data, want, rtol=1e-12)
    np.testing.assert_allclose(cell(mg.tensor(x[1]), mg.tensor(h[1])).data, want[1], rtol=1e-12)
    assert cell(mg.tensor(x)).shape == (2, 4)


def test_batch_first_and_unbatched_inputs():
    rng = np.random.default_rng(4)
    gru = nn.GRU(3, 4, num_layers=2, dtype=F64)
    gru_bf = nn.GRU(3, 4, num_layers=2, batch_first=True, dtype=F64)
    gru_bf.load_state_dict(gru.state_dict())
    x = rng.standard_normal((5, 2, 3))
    out, h_n = gru(mg.tensor(x))
    out_bf, h_bf = gru_bf(mg.tensor(x.transpose(1, 0, 2)))
    np.testing.assert_allclose(out_bf.data, out.data.transpose(1, 0, 2), rtol=1e-12)
    np.testing.assert_allclose(h_bf.data, h_n.data, rtol=1e-12)  # h_n is never batch-first, as in PyTorch
    out1, h1 = gru(mg.tensor(x[:, 1]), mg.tensor(np.zeros((2, 4))))
    np.testing.assert_allclose(out1.data, out.data[:, 1], rtol=1e-12)
    np.testing.assert_allclose(h1.data, h_n.data[:, 1], rtol=1e-12)


def test_dropout_between_layers_only_in_training():
    gru = nn.GRU(3, 4, num_layers=2, dropout=0.5, dtype=F64)
    plain = nn.GRU(3, 4, num_layers=2, dtype=F64)
    plain.load_state_dict(gru.state_dict())
    x = mg.tensor(np.random.default_rng(5).standard_normal((4, 2, 3)))
    mg.manual_seed(0)
    assert not np.allclose(gru(x)[0].data, plain(x)[0].data)
    gru.eval()
    np.testing.assert_allclose(gru(x)[0].data, plain(x)[0].data, rtol=1e-12)


# ----- variable lengths -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["GRU", "RNN"])
def test_padded_rows_equal_rows_run_alone(kind):
    rng = np.random.default_rng(6)
    module = getattr(nn, kind)(3, 4, num_layers=2, bidirectional=True, dtype=F64)
    lengths = np.array([5, 2, 1, 4])
    x = rng.standard_normal((5, 4, 3))
    x[np.arange(5)[:, None] >= lengths[None, :]] = 9.0  # padding values must not matter
    h0 = rng.standard_normal((4, 4, 4))
    out, h_n = module(mg.tensor(x), mg.tensor(h0), lengths=lengths)
    for b, n in enumerate(lengths):
        alone, h_alone = module(mg.tensor(x[:n, b:b + 1]), mg.tensor(h0[:, b:b + 1]))
        np.testing.assert_allclose(out.data[:n, b:b + 1], alone.data, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(h_n.data[:, b:b + 1], h_alone.data, rtol=1e-12, atol=1e-14)
        assert not out.data[n:, b].any()  # zeros at padded steps, as pad_packed_sequence gives


def test_padding_gets_no_gradient():
    gru = nn.GRU(2, 3, bidirectional=True, batch_first=True, dtype=F64)
    x = mg.tensor(np.random.default_rng(7).standard_normal((2, 4, 2)), requires_grad=True)
    out, h_n = gru(x, lengths=[4, 2])
    (out.sum() + h_n.sum()).backward()
    assert not x.grad[1, 2:].any() and x.grad[1, :2].any() and x.grad[0].all()


def test_full_lengths_change_nothing():
    gru = nn.GRU(2, 3, num_layers=2, bidirectional=True, dtype=F64)
    x = mg.tensor(np.random.default_rng(8).standard_normal((4, 3, 2)))
    out, h_n = gru(x)
    out_l, h_l = gru(x, lengths=mg.tensor(np.array([4, 4, 4])))
    np.testing.assert_array_equal(out.data, out_l.data)
    np.testing.assert_array_equal(h_n.data, h_l.data)


# ----- gradient checks --------------------------------------------------------------------------
@st.composite
def sequences(draw):
    T, B = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    lengths = draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B).map(np.array))
    return T, B, lengths


@settings(max_examples=12)
@given(seq=sequences(), kind=st.sampled_from(["GRU", "RNN"]), num_layers=st.integers(1, 2),
       bidirectional=st.booleans(), batch_first=st.booleans(), bias=st.booleans(), seed=SEEDS)
def test_layer_gradients(seq, kind, num_layers, bidirectional, batch_first, bias, seed):
    T, B, lengths = seq
    rng = np.random.default_rng(seed)
    module = getattr(nn, kind)(2, 3, num_layers=num_layers, bias=bias, batch_first=batch_first,
                               bidirectional=bidirectional, dtype=F64)
    module.load_state_dict(random_state(module, rng))
    x = rng.standard_normal((B, T, 2) if batch_first else (T, B, 2))
    h0 = rng.standard_normal((num_layers * (2 if bidirectional else 1), B, 3))
    call, params = module_call(module, lambda x, h0: flat(*module(x, h0, lengths=lengths)))
    check_gradients(call, [x, h0] + params, {}, rng, directions=2)


@settings(max_examples=12)
@given(B=st.integers(1, 3), kind=st.sampled_from(["GRU", "RNN"]), seed=SEEDS)
def test_cell_gradients(B, kind, seed):
    rng = np.random.default_rng(seed)
    cell = getattr(nn, kind + "Cell")(3, 2, dtype=F64)
    cell.load_state_dict(random_state(cell, rng))
    call, params = module_call(cell, cell)
    check_gradients(call, [rng.standard_normal((B, 3)), rng.standard_normal((B, 2))] + params, {}, rng)


# ----- bad input ----------------------------------------------------------------------------------
def test_bad_lengths_raise_value_errors_naming_lengths_and_the_sequence_length():
    gru = nn.GRU(2, 3)
    x = mg.zeros(4, 2, 2)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\] \(the sequence length is 4\)"):
        gru(x, lengths=[5, 2])
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\]"):
        gru(x, lengths=[0, 2])
    with pytest.raises(ValueError, match=r"lengths must be an integer array of shape \(2,\)"):
        gru(x, lengths=[3, 2, 1])
    with pytest.raises(ValueError, match="lengths must be an integer array"):
        gru(x, lengths=[3.0, 2.0])


def test_bad_shapes_raise_value_errors():
    gru = nn.GRU(2, 3, num_layers=2)
    with pytest.raises(ValueError, match=r"GRU: input of shape \(4, 2, 5\) must have 2 features"):
        gru(mg.zeros(4, 2, 5))
    with pytest.raises(ValueError, match=r"hx \(h_0\) has shape \(1, 2, 3\), expected \(2, 2, 3\)"):
        gru(mg.zeros(4, 2, 2), mg.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="3-D"):
        gru(mg.zeros(4, 2, 2, 1))
    with pytest.raises(ValueError, match=r"GRUCell: hx has shape \(3, 3\), expected \(2, 3\)"):
        nn.GRUCell(2, 3)(mg.zeros(2, 2), mg.zeros(3, 3))
    with pytest.raises(ValueError, match="RNNCell: input of shape"):
        nn.RNNCell(2, 3)(mg.zeros(2, 4))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(2, 3, nonlinearity="gelu")
    with pytest.raises(ValueError, match="num_layers"):
        nn.GRU(2, 3, num_layers=0)


# ----- PyTorch, when it is installed ------------------------------------------------------------
def _torch_pair(kind, **kwargs):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = getattr(torch.nn, kind)(3, 4, **kwargs).double()
    ours = getattr(nn, kind)(3, 4, dtype=F64, **kwargs)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return torch, theirs, ours


def test_bidirectional_two_layer_gru_matches_torch_values_and_gradients():
    torch, theirs, ours = _torch_pair("GRU", num_layers=2, bidirectional=True)
    rng = np.random.default_rng(9)
    x, h0 = rng.standard_normal((5, 3, 3)), rng.standard_normal((4, 3, 4))
    up_out, up_h = rng.standard_normal((5, 3, 8)), rng.standard_normal((4, 3, 4))
    tx, th0 = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    t_out, t_h = theirs(tx, th0)
    ((t_out * torch.tensor(up_out)).sum() + (t_h * torch.tensor(up_h)).sum()).backward()
    mx, mh0 = mg.tensor(x, requires_grad=True), mg.tensor(h0, requires_grad=True)
    m_out, m_h = ours(mx, mh0)
    ((m_out * up_out).sum() + (m_h * up_h).sum()).backward()
    np.testing.assert_allclose(m_out.data, t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m_h.data, t_h.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mx.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mh0.grad, th0.grad.numpy(), rtol=1e-9, atol=1e-12)
    ours_params = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(ours_params[name].grad, p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", ["GRU", "RNN"])
def test_lengths_match_torch_packed_sequences(kind):
    torch, theirs, ours = _torch_pair(kind, num_layers=2, bidirectional=True, batch_first=True)
    rng = np.random.default_rng(10)
    lengths = np.array([2, 5, 1])
    x = rng.standard_normal((3, 5, 3))
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x), torch.tensor(lengths), batch_first=True,
                                                     enforce_sorted=False)
    t_packed, t_h = theirs(packed)
    t_out, _ = torch.nn.utils.rnn.pad_packed_sequence(t_packed, batch_first=True, total_length=5)
    m_out, m_h = ours(mg.tensor(x), lengths=lengths)
    np.testing.assert_allclose(m_out.data, t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m_h.data, t_h.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("rows", [3, 40])
def test_gru_without_gradients_takes_the_sequence_kernel_with_the_same_result(bidirectional, rows):
    """Without gradients a GRU runs as one kernel call over the sequence (its product a loop for a few rows,
    BLAS for more); with gradients the step-by-step op runs. Both give the same states (padding included)."""
    from minigen.kernels.numba.gru import LOOP_MAX_ROWS
    assert 3 <= LOOP_MAX_ROWS < 40  # both paths
    mg.manual_seed(0)
    gru = nn.GRU(5, 7, batch_first=True, bidirectional=bidirectional).to(np.float64)
    rng = np.random.default_rng(0)
    x = mg.tensor(rng.standard_normal((rows, 6, 5)))
    lengths = rng.integers(1, 7, rows)
    stepwise = gru(x, lengths=lengths)
    with mg.no_grad():
        kernel = gru(x, lengths=lengths)
    for a, b in zip(kernel, stepwise):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["gru", "tanh"])
def test_recurrence_without_gradients_keeps_nothing_for_backward(mode):
    """Without gradients the op keeps no states for a backward that cannot come (a batch-250 encoder spent 6% of
    its time copying them), and computes the same."""
    from minigen.ops.rnn import Recurrence
    rng = np.random.default_rng(0)
    B, G = 20, 12 if mode == "gru" else 4
    x_proj, h0, weight = rng.standard_normal((5, B, G)), rng.standard_normal((B, 4)), rng.standard_normal((G, 4))
    mask = rng.random((5, B)) < 0.8
    with_grad, without = Recurrence(), Recurrence()
    want = with_grad.forward(x_proj, h0, weight, None, mask, True, mode)
    with mg.no_grad():
        got = without.forward(x_proj, h0, weight, None, mask, True, mode)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert hasattr(with_grad, "saved") and not hasattr(without, "saved") and not hasattr(without, "h_prev")


def test_first_projections_replace_the_first_layers_product_and_are_checked():
    """Given the first layer's input projections (one per direction), a GRU uses them: the same output as
    computing them; a wrong count or shape is refused by name."""
    mg.manual_seed(0)
    gru = nn.GRU(5, 7, num_layers=2, batch_first=True, bidirectional=True).to(np.float64)
    x = mg.tensor(np.random.default_rng(0).standard_normal((3, 6, 5)))
    lengths = np.array([6, 2, 4])
    time_major = x.data.transpose(1, 0, 2)
    projections = [mg.tensor(time_major @ getattr(gru, "weight_ih_l0" + s).data.T + getattr(gru, "bias_ih_l0" + s).data)
                   for s in ("", "_reverse")]
    want = gru(x, lengths=lengths)
    got = gru(x, lengths=lengths, first_projections=projections)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="first_projections must be 2"):
        gru(x, lengths=lengths, first_projections=projections[:1])
    with pytest.raises(ValueError, match=r"first_projections.*\(6, 3, 21\)"):
        gru(x, lengths=lengths, first_projections=[p[:, :2] for p in projections])
