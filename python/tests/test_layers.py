"""The NumPy layers against the project's PyTorch fixtures, and their contract (names,
modes, files, errors). No torch needed."""

import json
import threading

import numpy as np
import pytest

import recurrent
from conftest import ATOL, RTOL, assert_close, fixture_cases, read_safetensors

def build(config):
    """The module a fixture's configuration describes, by its public constructor."""
    mode = config["mode"]
    common = dict(
        num_layers=config["num_layers"],
        bias=config["bias"],
        batch_first=config["batch_first"],
        dropout=config["dropout"],
        bidirectional=config["bidirectional"],
        seed=0,
    )
    if mode == "LSTM":
        return recurrent.LSTM(
            config["input_size"],
            config["hidden_size"],
            proj_size=config["proj_size"],
            layer_norm=config.get("layer_norm", False),
            **common,
        )
    if mode == "GRU":
        return recurrent.GRU(config["input_size"], config["hidden_size"], **common)
    nonlinearity = "relu" if mode == "RNN_RELU" else "tanh"
    return recurrent.RNN(config["input_size"], config["hidden_size"], nonlinearity=nonlinearity, **common)


@pytest.mark.parametrize("path", fixture_cases("layers"), ids=lambda p: p.stem)
def test_layer_matches_pytorch(path):
    t, meta = read_safetensors(path)
    config = json.loads(meta["config"])
    module = build(config)
    params = {k[len("param.") :]: v for k, v in t.items() if k.startswith("param.")}
    assert set(module.state_dict()) == set(params)
    module.load_state_dict(params)
    lstm = config["mode"] == "LSTM"
    hx = None
    if "h0" in t:
        hx = (t["h0"], t["c0"]) if lstm else t["h0"]
    lengths = t.get("lengths")

    module.eval()
    output, state = module(t["input"], hx, lengths)
    h_n, c_n = state if lstm else (state, None)
    assert_close(f"{path.stem}: output", output, t["output"])
    assert_close(f"{path.stem}: h_n", h_n, t["h_n"])
    if lstm:
        assert_close(f"{path.stem}: c_n", c_n, t["c_n"])

    # Gradients in eval mode (no dropout), as the fixtures were made.
    module(t["input"], hx, lengths, requires_grad=True)
    grad_hx = (t.get("grad_h_n"), t.get("grad_c_n")) if lstm else t.get("grad_h_n")
    grad_input, grad_state = module.backward(t.get("grad_output"), grad_hx)
    # Layer norm's gradient amplifies f32 rounding on both sides (see the Rust golden
    # test): its small elements are compared relative to the tensor's largest one.
    scaled = config.get("layer_norm", False)

    def check(what, actual, expected):
        atol = ATOL + RTOL * np.abs(expected).max() if scaled else ATOL
        assert_close(f"{path.stem}: {what}", actual, expected, atol=atol)

    check("grad_input", grad_input, t["grad_input"])
    if "h0" in t:
        grad_h0, grad_c0 = grad_state if lstm else (grad_state, None)
        check("grad_h0", grad_h0, t["grad_h0"])
        if lstm:
            check("grad_c0", grad_c0, t["grad_c0"])
    for name, g in module.grads.items():
        check(f"grad.{name}", g, t[f"grad.{name}"])


CELL_CLASSES = {
    "lstmcell": recurrent.LSTMCell,
    "grucell": recurrent.GRUCell,
    "rnncell": recurrent.RNNCell,
}


@pytest.mark.parametrize("path", fixture_cases("cells"), ids=lambda p: p.stem)
def test_cell_matches_pytorch(path):
    t, meta = read_safetensors(path)
    config = json.loads(meta["config"])
    cls = {"LSTMCell": recurrent.LSTMCell, "GRUCell": recurrent.GRUCell, "RNNCell": recurrent.RNNCell}
    args = dict(bias=config["bias"])
    if config["cell"] == "RNNCell":
        args["nonlinearity"] = config["nonlinearity"]
    cell = cls[config["cell"]](config["input_size"], config["hidden_size"], **args)
    cell.load_state_dict({k[len("param.") :]: v for k, v in t.items() if k.startswith("param.")})
    lstm = config["cell"] == "LSTMCell"
    hx = None
    if "hx" in t:
        hx = (t["hx"], t["cx"]) if lstm else t["hx"]
    out = cell(t["input"], hx)
    h, c = out if lstm else (out, None)
    assert_close(f"{path.stem}: h", h, t["h_out"])
    if lstm:
        assert_close(f"{path.stem}: c", c, t["c_out"])
        grad_input, (grad_hx, grad_cx) = cell.backward(t.get("grad_h_out"), t.get("grad_c_out"))
    else:
        grad_input, grad_hx = cell.backward(t.get("grad_h_out"))
    assert_close(f"{path.stem}: grad_input", grad_input, t["grad_input"])
    if "hx" in t:
        assert_close(f"{path.stem}: grad_hx", grad_hx, t["grad_hx"])
        if lstm:
            assert_close(f"{path.stem}: grad_cx", grad_cx, t["grad_cx"])
    assert set(cell.grads) == {k[len("grad.") :] for k in t if k.startswith("grad.")}
    for name, g in cell.grads.items():
        assert_close(f"{path.stem}: grad.{name}", g, t[f"grad.{name}"])


def test_constructor_arguments_and_names_are_pytorchs():
    m = recurrent.LSTM(10, 20, 2, bidirectional=True, proj_size=5, seed=1)
    assert (m.input_size, m.hidden_size, m.num_layers, m.proj_size, m.bidirectional) == (10, 20, 2, 5, True)
    names = list(m.state_dict())
    assert names[:5] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_hr_l0"]
    assert "weight_hr_l1_reverse" in names
    shapes = {k: v.shape for k, v in m.state_dict().items()}
    assert shapes["weight_ih_l1"] == (80, 10)  # input of layer 1: 2 directions x proj 5
    assert shapes["weight_hh_l0"] == (80, 5)
    r = recurrent.RNN(3, 4, 1, "relu")
    assert r.nonlinearity == "relu" and r.mode == "RNN_RELU"
    assert repr(m) == "LSTM(10, 20, num_layers=2, bidirectional=True, proj_size=5)"
    with pytest.raises(ValueError, match="nonlinearity"):
        recurrent.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="proj_size"):
        recurrent.LSTM(3, 4, proj_size=4)


def test_initialisation_is_uniform_in_pytorchs_bound_and_seeded():
    a = recurrent.GRU(8, 64, seed=3).state_dict()
    b = recurrent.GRU(8, 64, seed=3).state_dict()
    c = recurrent.GRU(8, 64, seed=4).state_dict()
    bound = 1 / np.sqrt(64)
    for k in a:
        assert np.array_equal(a[k], b[k])
        assert np.abs(a[k]).max() <= bound
        assert not np.array_equal(a[k], c[k])


def test_shapes_unbatched_batch_first_and_lengths(rng):
    m = recurrent.LSTM(4, 6, 2, batch_first=True, bidirectional=True, seed=0).eval()
    x = rng.standard_normal((3, 7, 4)).astype(np.float32)
    out, (h, c) = m(x)
    assert out.shape == (3, 7, 12) and h.shape == (4, 3, 6) and c.shape == (4, 3, 6)
    # Unbatched input: (T, I).
    out1, (h1, _) = m(x[1])
    assert out1.shape == (7, 12) and h1.shape == (4, 6)
    assert_close("unbatched = row of batch", out1, out[1], atol=1e-6)
    # Lengths: padding never reaches the result.
    lengths = np.array([7, 3, 5])
    padded = x.copy()
    padded[1, 3:] = 1e3
    outl, (hl, _) = m(padded, lengths=lengths)
    alone, (ha, _) = m(x[1:2, :3])
    assert_close("short sequence alone", outl[1, :3], alone[0], atol=1e-5)
    assert np.all(outl[1, 3:] == 0)
    assert_close("its final state", hl[:, 1], ha[:, 0], atol=1e-5)


def test_gradients_match_finite_differences(rng):
    """Directional derivatives of a scalar loss against central differences in f64 of
    the f32 network: the gradient through the fast kernels is the true one."""
    m = recurrent.GRU(3, 5, 2, seed=2)
    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    w = rng.standard_normal((6, 2, 5)).astype(np.float32)

    def loss(inp):
        out, _ = m.eval()(inp)
        return float(np.sum(out.astype(np.float64) * w))

    m.train()
    m(x)
    grad_input, _ = m.backward(w)
    direction = rng.standard_normal(x.shape).astype(np.float32)
    eps = 1e-2
    numeric = (loss(x + eps * direction) - loss(x - eps * direction)) / (2 * eps)
    analytic = float(np.sum(grad_input.astype(np.float64) * direction))
    # Central differences of an f32 network: truncation O(eps^2) plus f32 rounding of the
    # loss (~1e-6 relative) divided by eps.
    assert abs(numeric - analytic) <= 1e-3 * max(1.0, abs(analytic)), (numeric, analytic)


def test_backward_accumulates_until_zero_grad(rng):
    m = recurrent.RNN(3, 4, seed=0)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    g = rng.standard_normal((5, 2, 4)).astype(np.float32)
    m(x)
    m.backward(g)
    once = m.grads
    m(x)
    m.backward(g)
    for k, v in m.grads.items():
        assert_close(f"twice {k}", v, 2 * once[k], atol=1e-6)
    m.zero_grad()
    assert m.grads == {}
    with pytest.raises(RuntimeError, match="no training-mode forward"):
        m.backward(g)


def test_dropout_only_in_training_mode(rng):
    m = recurrent.LSTM(4, 32, 3, dropout=0.5, seed=0)
    x = rng.standard_normal((5, 2, 4)).astype(np.float32)
    a, _ = m.train()(x)
    b, _ = m.train()(x)
    assert not np.allclose(a, b), "fresh masks every training call"
    c, _ = m.eval()(x)
    d, _ = m.eval()(x)
    assert np.array_equal(c, d)
    assert not np.allclose(a, c)


def test_save_and_load_round_trip(tmp_path, rng):
    m = recurrent.LSTM(5, 7, 2, bidirectional=True, proj_size=3, seed=0)
    path = tmp_path / "lstm.safetensors"
    m.save(path)
    loaded = recurrent.load(path)
    assert isinstance(loaded, recurrent.LSTM) and not loaded.training
    assert loaded.config == m.config
    for k, v in m.state_dict().items():
        assert np.array_equal(v, loaded.state_dict()[k])
    x = rng.standard_normal((4, 2, 5)).astype(np.float32)
    assert np.array_equal(m.eval()(x)[0], loaded(x)[0])
    # The file is the safetensors format with PyTorch's names.
    tensors, meta = read_safetensors(path)
    assert set(tensors) == set(m.state_dict())
    assert json.loads(meta["config"])["mode"] == "LSTM"


def test_a_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.safetensors"
    recurrent.GRU(2, 3, seed=0).save(path)
    before = path.read_bytes()
    with pytest.raises(OSError):
        recurrent.GRU(2, 3, seed=1).save(tmp_path / "missing-dir" / "model.safetensors")
    assert path.read_bytes() == before


def test_bad_input_is_a_clear_error(tmp_path, rng):
    m = recurrent.LSTM(4, 6, seed=0)
    with pytest.raises(ValueError, match="input"):
        m(np.zeros((5, 2, 3), np.float32))
    with pytest.raises(ValueError, match="h0"):
        m(np.zeros((5, 2, 4), np.float32), (np.zeros((1, 3, 6), np.float32), np.zeros((1, 3, 6), np.float32)))
    with pytest.raises(TypeError, match="tuple"):
        m(np.zeros((5, 2, 4), np.float32), np.zeros((1, 2, 6), np.float32))
    with pytest.raises(ValueError, match="lengths"):
        m(np.zeros((5, 2, 4), np.float32), lengths=[6, 2])
    with pytest.raises(ValueError, match="weight_ih_l0"):
        m.load_state_dict({**m.state_dict(), "weight_ih_l0": np.zeros((24, 5), np.float32)})
    with pytest.raises(KeyError, match="unexpected"):
        m.load_state_dict({**m.state_dict(), "extra": np.zeros(1, np.float32)})
    bad = m.state_dict()
    bad["bias_hh_l0"][3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        m.load_state_dict(bad)
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError):
        recurrent.load(tmp_path / "junk.safetensors")
    with pytest.raises(OSError):
        recurrent.load(tmp_path / "absent.safetensors")


def test_threads_give_the_same_numbers_and_release_the_gil(rng):
    x = rng.standard_normal((20, 8, 16)).astype(np.float32)
    m = recurrent.LSTM(16, 64, 2, seed=0).eval()
    ref, _ = m(x)
    before = recurrent.get_num_threads()
    try:
        recurrent.set_num_threads(1)
        assert recurrent.get_num_threads() == 1
        one, _ = m(x)
    finally:
        recurrent.set_num_threads(before)
    assert_close("1 thread", one, ref, atol=1e-6)
    with pytest.raises(ValueError):
        recurrent.set_num_threads(0)
    # Several Python threads, each with its own module, at once.
    models = [recurrent.LSTM(16, 64, 2, seed=s).eval() for s in range(4)]
    expected = [mm(x)[0] for mm in models]
    results = [None] * 4

    def work(k):
        results[k] = models[k](x)[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert np.array_equal(results[k], expected[k])


def test_the_gil_is_released_during_computation(rng):
    """While one thread is inside a long forward pass, another runs Python code."""
    m = recurrent.LSTM(64, 256, 2, seed=0).eval()
    x = rng.standard_normal((400, 16, 64)).astype(np.float32)
    inside = threading.Event()
    done = threading.Event()

    def work():
        inside.set()
        m(x)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    inside.wait()
    ticks = 0
    while not done.is_set():
        ticks += 1
        done.wait(0.001)
    worker.join()
    # With the GIL held for the whole call this thread could only run before and after
    # it (at most a tick or two); released, it runs all along (the call takes far
    # longer than a millisecond: 400 steps of a 2-layer 256-unit LSTM at batch 16).
    assert ticks >= 5, ticks
