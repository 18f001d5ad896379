"""``recurrent.torch`` against ``torch.nn.LSTM``/``GRU``/``RNN``: forward, every gradient,
optimizer steps, packed sequences, ``hx``, modes, conversions and errors."""

import copy
import io
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

import recurrent
import recurrent.torch as rt

#: Both sides compute in float32 and sum in different orders over at most a few hundred
#: terms per element: the golden tests' tolerances.
ATOL, RTOL = 2e-5, 2e-4

TORCH = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}
OURS = {"LSTM": rt.LSTM, "GRU": rt.GRU, "RNN": rt.RNN}


def pair(kind, *args, **kwargs):
    """A torch module and ours with the same parameters (same seed: same initialisation)."""
    torch.manual_seed(0)
    ref = TORCH[kind](*args, **kwargs)
    torch.manual_seed(0)
    ours = OURS[kind](*args, **kwargs)
    for (n, a), (m, b) in zip(ref.named_parameters(), ours.named_parameters()):
        assert n == m and torch.equal(a, b), "same seed, same initialisation"
    return ref, ours


def close(what, a, b):
    torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")


def random_config(r):
    kind = r.choice(["LSTM", "GRU", "RNN"])
    hidden = r.choice([1, 3, 8, 17])
    kwargs = dict(
        num_layers=r.choice([1, 2, 3]),
        bias=r.random() < 0.8,
        batch_first=r.random() < 0.5,
        bidirectional=r.random() < 0.5,
    )
    if kind == "LSTM" and r.random() < 0.4 and hidden > 1:
        kwargs["proj_size"] = r.randint(1, hidden - 1)
    if kind == "RNN":
        kwargs["nonlinearity"] = r.choice(["tanh", "relu"])
    return kind, r.choice([1, 4, 9]), hidden, kwargs


def state_shapes(module, batch):
    d = 2 if module.bidirectional else 1
    h_out = module.proj_size if getattr(module, "proj_size", 0) else module.hidden_size
    h = (d * module.num_layers,) + ((batch,) if batch else ()) + (h_out,)
    c = (d * module.num_layers,) + ((batch,) if batch else ()) + (module.hidden_size,)
    return h, c


def run(module, x, hx, lengths):
    """Forward (packing when `lengths`), a loss on every output, backward; returns what
    to compare."""
    inp = x
    if lengths is not None:
        inp = pack_padded_sequence(x, lengths, batch_first=module.batch_first, enforce_sorted=False)
    out, state = module(inp, hx)
    out_data = out.data if lengths is not None else out
    states = state if isinstance(state, tuple) else (state,)
    torch.manual_seed(1)
    # torch.randn(shape), not randn_like: torch's batch-first outputs are transposed views,
    # and randn_like follows strides.
    loss = (out_data * torch.randn(out_data.shape)).sum() + sum((s * torch.randn(s.shape)).sum() for s in states)
    loss.backward()
    return out, states


@pytest.mark.parametrize("case", range(40))
def test_random_configuration_matches_torch(case):
    r = random.Random(case)
    kind, inputs, hidden, kwargs = random_config(r)
    ref, ours = pair(kind, inputs, hidden, **kwargs)
    steps, batch = r.choice([1, 2, 7]), r.choice([0, 1, 3, 5])  # batch 0: unbatched input
    packed = batch > 1 and r.random() < 0.5
    shape = (steps, inputs) if not batch else ((batch, steps, inputs) if ref.batch_first else (steps, batch, inputs))
    torch.manual_seed(2)
    x0 = torch.randn(shape)
    with_hx = r.random() < 0.6
    h_shape, c_shape = state_shapes(ref, batch)
    h0, c0 = torch.randn(h_shape), torch.randn(c_shape)
    lengths = torch.tensor([r.randint(1, steps) for _ in range(batch)]) if packed else None
    if packed:
        lengths[r.randrange(batch)] = steps
    results = []
    for module in (ref, ours):
        x = x0.clone().requires_grad_()
        hx = None
        if with_hx:
            hx = (h0.clone().requires_grad_(), c0.clone().requires_grad_()) if kind == "LSTM" else h0.clone().requires_grad_()
        out, states = run(module, x, hx, lengths)
        hx_grads = [] if hx is None else [t.grad for t in (hx if isinstance(hx, tuple) else (hx,))]
        results.append((out, states, x.grad, hx_grads, {n: p.grad for n, p in module.named_parameters()}))
    (o1, s1, gx1, gh1, gp1), (o2, s2, gx2, gh2, gp2) = results
    what = f"case {case}: {kind}({inputs}, {hidden}, {kwargs}) T={steps} B={batch} packed={packed} hx={with_hx}"
    if packed:
        assert type(o2) is type(o1)
        assert torch.equal(o1.batch_sizes, o2.batch_sizes)
        assert torch.equal(o1.sorted_indices, o2.sorted_indices)
        close(what + " packed output", o2.data, o1.data)
    else:
        close(what + " output", o2, o1)
    for a, b in zip(s2, s1):
        close(what + " state", a, b)
    close(what + " grad input", gx2, gx1)
    for a, b in zip(gh2, gh1):
        close(what + " grad hx", a, b)
    assert gp1.keys() == gp2.keys()
    for name in gp1:
        close(f"{what} grad {name}", gp2[name], gp1[name])


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_optimizer_steps_follow_torch(kind):
    """The seeds' regressor (recurrent layer, last step, linear head, MSE, Adam): the same
    loss curve and weights after a few steps."""
    torch.manual_seed(3)
    x, y = torch.randn(8, 12, 5), torch.randn(8, 1)
    curves, finals = [], []
    for layer in (TORCH[kind], OURS[kind]):
        torch.manual_seed(4)
        rnn = layer(5, 16, 2, batch_first=True)
        head = nn.Linear(16, 1)
        params = list(rnn.parameters()) + list(head.parameters())
        opt = torch.optim.Adam(params, lr=1e-2)
        curve = []
        for _ in range(10):
            opt.zero_grad()
            out, _ = rnn(x)
            loss = nn.functional.mse_loss(head(out[:, -1]), y)
            loss.backward()
            opt.step()
            curve.append(loss.item())
        curves.append(curve)
        finals.append([p.detach().clone() for p in params])
    np.testing.assert_allclose(curves[1], curves[0], rtol=1e-4, atol=1e-6)
    assert curves[1][-1] < curves[1][0]
    # Ten Adam steps amplify f32 rounding differences a little (each step moves a weight
    # by about lr whatever the gradient's size).
    for a, b in zip(finals[1], finals[0]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_gradients_flow_into_layers_around():
    torch.manual_seed(5)
    embed_t, embed_o = nn.Embedding(20, 6), None
    embed_o = copy.deepcopy(embed_t)
    ref, ours = pair("GRU", 6, 8, bidirectional=True)
    head_t = nn.Linear(16, 3)
    head_o = copy.deepcopy(head_t)
    tokens = torch.randint(0, 20, (7, 4))
    grads = []
    for embed, rnn, head in ((embed_t, ref, head_t), (embed_o, ours, head_o)):
        out, h = rnn(embed(tokens))
        loss = nn.functional.cross_entropy(head(out[-1]), torch.tensor([0, 1, 2, 0])) + h.pow(2).mean()
        loss.backward()
        grads.append((embed.weight.grad, head.weight.grad))
    for a, b in zip(grads[1], grads[0]):
        close("gradient of a layer around", a, b)
    assert grads[1][0].abs().sum() > 0


def test_no_grad_and_eval_take_the_inference_path():
    ref, ours = pair("LSTM", 4, 8, 2, dropout=0.3)
    x = torch.randn(5, 3, 4)
    ref.eval(), ours.eval()
    with torch.no_grad():
        a, (h, c) = ours(x)
        b, (hr, cr) = ref(x)
    assert not a.requires_grad
    close("no_grad output", a, b)
    close("no_grad c_n", c, cr)
    # The same numbers with gradients on.
    a2, _ = ours(x)
    assert a2.requires_grad
    close("grad-mode output", a2, a)
    # Parameters changed in place (as an optimizer does) are picked up at the next call.
    with torch.no_grad():
        for p in ours.parameters():
            p.mul_(0.5)
        for p in ref.parameters():
            p.mul_(0.5)
        close("after an in-place update", ours(x)[0], ref(x)[0])
        # Also through `.data`, which bypasses torch's version counters.
        ours.weight_hh_l0.data.add_(0.1)
        ref.weight_hh_l0.data.add_(0.1)
        close("after a .data update", ours(x)[0], ref(x)[0])


def test_dropout_follows_train_and_eval_and_torch_seed():
    _, ours = pair("LSTM", 4, 32, 3, dropout=0.5)
    x = torch.randn(6, 2, 4)
    torch.manual_seed(7)
    a, _ = ours(x)
    torch.manual_seed(7)
    b, _ = ours(x)
    c, _ = ours(x)
    assert torch.equal(a, b), "masks drawn from torch's generator"
    assert not torch.allclose(a, c)
    ours.eval()
    assert torch.equal(ours(x)[0], ours(x)[0])
    # Under dropout the gradient is that of the function with the mask drawn: check it
    # against a central difference with the same seed.
    ours.train()
    d = torch.randn_like(x)

    def f(inp):
        torch.manual_seed(11)
        return ours(inp)[0].double().sum()

    xg = x.clone().requires_grad_()
    f(xg).backward()
    eps = 1e-2
    with torch.no_grad():
        numeric = (f(x + eps * d) - f(x - eps * d)) / (2 * eps)
    analytic = (xg.grad.double() * d).sum()
    assert abs(numeric - analytic) <= 2e-3 * max(1.0, abs(analytic)), (numeric, analytic)


def test_retain_graph_and_shared_module():
    ref, ours = pair("RNN", 3, 5)
    x = torch.randn(4, 2, 3)
    for m in (ref, ours):
        out, _ = m(x)
        loss = out.sum()
        loss.backward(retain_graph=True)
        loss.backward()
        # One module applied to two inputs in one graph.
        out1, _ = m(x)
        out2, _ = m(x * 2)
        (out1.sum() + out2.pow(2).sum()).backward()
    for (n, a), b in zip(ref.named_parameters(), ours.parameters()):
        close(n, b.grad, a.grad)


def test_state_dicts_and_conversions_work_both_ways(tmp_path):
    torch.manual_seed(8)
    ref = nn.LSTM(3, 6, 2, bidirectional=True, proj_size=2)
    ours = rt.from_torch(ref)
    assert isinstance(ours, nn.LSTM) and isinstance(ours, rt.LSTM)
    back = ours.to_torch()
    assert type(back) is nn.LSTM
    for sd in (ours.state_dict(), back.state_dict()):
        assert sd.keys() == ref.state_dict().keys()
        for k in sd:
            assert torch.equal(sd[k], ref.state_dict()[k])
    fresh = rt.LSTM(3, 6, 2, bidirectional=True, proj_size=2)
    fresh.load_state_dict(ref.state_dict())
    ref.load_state_dict(fresh.state_dict())
    x = torch.randn(5, 2, 3)
    close("loaded state", fresh(x)[0], ref(x)[0])
    # Copies and pickles of a module keep working.
    twin = copy.deepcopy(fresh)
    buf = io.BytesIO()
    torch.save(fresh, buf)
    buf.seek(0)
    unpickled = torch.load(buf, weights_only=False)
    for m in (twin, unpickled):
        close("copy", m(x)[0], ref(x)[0])
    # The project's model files.
    path = tmp_path / "gru.safetensors"
    numpy_model = recurrent.GRU(3, 4, 2, seed=0)
    numpy_model.save(path)
    loaded = rt.load(path)
    assert isinstance(loaded, nn.GRU) and not loaded.training
    with torch.no_grad():
        close("model file", loaded(x)[0], torch.from_numpy(numpy_model.eval()(x.numpy())[0]))
    with pytest.raises(TypeError, match="from_torch"):
        rt.from_torch(nn.Linear(2, 2))


def test_outputs_share_the_kernels_buffers_and_inputs_are_not_copied():
    _, ours = pair("GRU", 4, 8)
    x = torch.randn(5, 3, 4)
    out, h = ours(x)
    assert out.is_contiguous() and out.dtype == torch.float32
    # The input's memory is handed over as is: a NumPy view of the same buffer.
    assert x.numpy().ctypes.data == x.data_ptr()


def test_unsupported_cases_raise_clear_errors():
    _, ours = pair("LSTM", 4, 8)
    with pytest.raises(TypeError, match="float64"):
        ours(torch.randn(3, 2, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="float64"):
        copy.deepcopy(ours).double()(torch.randn(3, 2, 4))
    with pytest.raises(RuntimeError, match="CPU only.*meta"):
        ours(torch.empty(3, 2, 4, device="meta"))
    with pytest.raises(ValueError, match="2D or 3D"):
        ours(torch.randn(3, 2, 4, 1))
    with pytest.raises(RuntimeError, match="hidden"):
        ours(torch.randn(3, 2, 4), (torch.zeros(1, 5, 8), torch.zeros(1, 5, 8)))
    x = torch.randn(3, 2, 4, requires_grad=True)
    out, _ = ours(x)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(out.sum(), x, create_graph=True)
    # Weights changed in place between forward and backward: torch's own error.
    out, _ = ours(x)
    with torch.no_grad():
        ours.weight_hh_l0.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_packed_sequences_of_a_padded_batch():
    ref, ours = pair("LSTM", 3, 5, 2, batch_first=True)
    seqs = [torch.randn(n, 3) for n in (4, 1, 6, 6)]
    padded = pad_sequence(seqs, batch_first=True)
    lengths = torch.tensor([4, 1, 6, 6])
    for sorted_ in (False, True):
        order = torch.argsort(lengths, descending=True) if sorted_ else torch.arange(4)
        packed = pack_padded_sequence(padded[order], lengths[order], batch_first=True, enforce_sorted=sorted_)
        (a, (h1, c1)), (b, (h2, c2)) = ref(packed), ours(packed)
        assert torch.equal(a.batch_sizes, b.batch_sizes)
        close("packed data", b.data, a.data)
        close("packed h_n", h2, h1)
        close("packed c_n", c2, c1)


def test_reassigned_and_parametrized_weights_are_used():
    ref, ours = pair("GRU", 3, 4)
    x = torch.randn(5, 2, 3)
    new = torch.randn(12, 4)
    for m in (ref, ours):
        m.weight_hh_l0 = nn.Parameter(new.clone())
    close("reassigned weight", ours(x)[0], ref(x)[0])
    for m in (ref, ours):
        nn.utils.parametrize.register_parametrization(m, "weight_ih_l0", _Double())
    close("parametrized weight", ours(x)[0], ref(x)[0])
    out_r, _ = ref(x)
    out_o, _ = ours(x)
    out_r.sum().backward()
    out_o.sum().backward()
    close(
        "gradient through the parametrization",
        ours.parametrizations.weight_ih_l0.original.grad,
        ref.parametrizations.weight_ih_l0.original.grad,
    )


class _Double(nn.Module):
    def forward(self, w):
        return 2 * w
