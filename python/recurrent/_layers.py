"""NumPy layers: PyTorch's recurrent modules on recurrent's kernels, without torch.

Shapes follow PyTorch (``T`` steps, ``B`` batch, ``I`` input size, ``D`` directions,
``L`` layers, ``H_out`` = ``proj_size`` or ``hidden_size``):

- input ``(T, B, I)``, ``(B, T, I)`` with ``batch_first``, or unbatched ``(T, I)``;
- output ``(T, B, D*H_out)`` (batch-first likewise);
- ``h0``/``h_n`` ``(D*L, B, H_out)``; ``c0``/``c_n`` ``(D*L, B, H)`` (LSTM).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _recurrent

Array = np.ndarray
#: ``h`` or, for LSTM, ``(h, c)``.
State = Union[Array, Tuple[Array, Array]]


def _f32(name: str, a) -> Array:
    """``a`` as a C-contiguous float32 array (no copy when it already is one)."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a real-valued array, found dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _lengths(lengths) -> Optional[list]:
    if lengths is None:
        return None
    values = np.asarray(lengths)
    if values.ndim != 1 or values.dtype.kind not in "iu":
        raise ValueError(
            f"lengths: expected a 1-D integer array (one length per sequence), found shape "
            f"{values.shape} and dtype {values.dtype}"
        )
    if (values < 0).any():
        raise ValueError(f"lengths: expected non-negative lengths, found {values.min()}")
    return [int(v) for v in values]


class _Module:
    """What every layer shares: parameters by PyTorch's names, gradients, modes."""

    _native: object

    def __init__(self) -> None:
        self.training = True
        self._grads: Dict[str, Array] = {}

    def train(self, mode: bool = True) -> "_Module":
        """Training mode (dropout between layers, tapes for ``backward``), as ``nn.Module``."""
        self.training = bool(mode)
        return self

    def eval(self) -> "_Module":
        """Inference mode, as ``nn.Module.eval()``."""
        return self.train(False)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def named_parameters(self) -> "list[tuple[str, Array]]":
        """``(name, copy)`` pairs in PyTorch's ``named_parameters()`` order."""
        return list(self._native.parameters())

    def parameters(self) -> "list[Array]":
        """Copies of the parameters; change them with ``load_state_dict``."""
        return [p for _, p in self.named_parameters()]

    def state_dict(self) -> "OrderedDict[str, Array]":
        """Copies of every parameter under PyTorch's names, as ``nn.Module.state_dict()``."""
        return OrderedDict(self.named_parameters())

    def load_state_dict(self, state_dict: Mapping[str, object], strict: bool = True) -> None:
        """Loads parameters by name from NumPy arrays, torch tensors or anything
        ``np.asarray`` takes. With ``strict``, the names must match exactly; otherwise
        missing names keep their values and unknown names are ignored."""
        shapes = self._native.parameter_shapes()
        names = [n for n, _ in shapes]
        if strict:
            missing = [n for n in names if n not in state_dict]
            unexpected = [k for k in state_dict if k not in names]
            if missing or unexpected:
                raise KeyError(
                    f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}"
                )
        current = dict(self.named_parameters())
        values = []
        for name, shape in shapes:
            value = state_dict.get(name, current[name])
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            arr = _f32(name, value)
            if tuple(arr.shape) != tuple(shape):
                raise ValueError(
                    f"load_state_dict: tensor `{name}`: expected shape {tuple(shape)}, found "
                    f"{tuple(arr.shape)}"
                )
            values.append(arr)
        self._native.set_parameters(values)

    @property
    def grads(self) -> Dict[str, Array]:
        """Accumulated parameter gradients by name (``param.grad`` in PyTorch): every
        ``backward`` adds to them, ``zero_grad`` clears them."""
        return dict(self._grads)

    def zero_grad(self) -> None:
        """Clears the accumulated gradients, as ``optimizer.zero_grad()``."""
        self._grads = {}

    def _accumulate(self, grads: Sequence[Array]) -> None:
        for (name, _), g in zip(self._native.parameter_shapes(), grads):
            # A new array each time: gradients handed out earlier keep their values.
            self._grads[name] = self._grads[name] + g if name in self._grads else g


class RNNBase(_Module):
    """A multi-layer recurrent stack, as ``torch.nn.RNNBase``.

    ``mode`` is ``"LSTM"``, ``"GRU"``, ``"RNN_TANH"`` or ``"RNN_RELU"``. Parameters are
    drawn as PyTorch's (uniform in ``±1/sqrt(hidden_size)``) from ``seed`` (from the
    operating system when ``None``). ``layer_norm`` (LSTM only, not a PyTorch option)
    normalises the gates and the cell state (see the library's documentation).
    """

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        layer_norm: bool = False,
        seed: Optional[int] = None,
    ) -> None:
        native = _recurrent.Rnn(
            mode,
            int(input_size),
            int(hidden_size),
            int(num_layers),
            bool(bias),
            bool(batch_first),
            float(dropout),
            bool(bidirectional),
            int(proj_size),
            bool(layer_norm),
            seed,
        )
        self._attach(native, seed)

    def _attach(self, native, seed: Optional[int]) -> None:
        _Module.__init__(self)
        self._native = native
        self._config = json.loads(native.config_json)
        self._rng = np.random.default_rng(seed)
        self._tape = None

    @classmethod
    def _from_native(cls, native) -> "RNNBase":
        module = cls.__new__(cls)
        module._attach(native, None)
        return module

    @property
    def config(self) -> dict:
        """The configuration (the model file's ``config`` entry)."""
        return dict(self._config)

    def __getattr__(self, name: str):
        # PyTorch's attributes: mode, input_size, hidden_size, num_layers, bias, ...
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._config:
            return self._config[name]
        if name == "layer_norm":
            return False
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        c = self._config
        extra = [
            f"{k}={c[k]}"
            for k, default in (
                ("num_layers", 1),
                ("bias", True),
                ("batch_first", False),
                ("dropout", 0.0),
                ("bidirectional", False),
                ("proj_size", 0),
                ("layer_norm", False),
            )
            if c.get(k, default) != default
        ]
        return f"{type(self).__name__}({', '.join([str(c['input_size']), str(c['hidden_size'])] + extra)})"

    def forward(
        self, input, hx: Optional[State] = None, lengths=None, *, requires_grad: Optional[bool] = None
    ):
        """``module(input, hx)``: returns ``(output, h_n)``, for LSTM ``(output, (h_n,
        c_n))``. ``lengths`` (batched input) gives each sequence's length, as
        ``pack_padded_sequence(.., enforce_sorted=False)``: outputs past a sequence's end
        are zero and ``h_n`` is its state at its own last step.

        The call keeps what ``backward`` needs when ``requires_grad`` (default: in training
        mode); otherwise it is inference on weights packed once. Dropout between layers
        applies in training mode only."""
        lstm = self._config["mode"] == "LSTM"
        h0, c0 = self._split_state(hx, lstm)
        x = _f32("input", input)
        lens = _lengths(lengths)
        if self.training if requires_grad is None else requires_grad:
            seed = int(self._rng.integers(0, 2**63 - 1))
            output, h_n, c_n, self._tape = self._native.forward_train(
                x, h0, c0, lens, self.training, seed
            )
        else:
            self._tape = None
            output, h_n, c_n = self._native.forward(x, h0, c0, lens)
        return (output, (h_n, c_n)) if lstm else (output, h_n)

    def backward(self, grad_output=None, grad_hx: Optional[State] = None):
        """Backward through the last training-mode ``forward``: ``grad_output`` is the
        gradient of the loss with respect to ``output`` and ``grad_hx`` with respect to
        ``h_n`` (or ``(h_n, c_n)``); missing ones are zeros. Parameter gradients are added
        to ``grads``. Returns ``(grad_input, grad_h0)``, for LSTM ``(grad_input,
        (grad_h0, grad_c0))``."""
        if self._tape is None:
            raise RuntimeError(
                "backward: no training-mode forward to go back through (call forward in "
                "train() mode first; each forward's tape serves one backward)"
            )
        lstm = self._config["mode"] == "LSTM"
        g_h, g_c = self._split_state(grad_hx, lstm)
        g_out = None if grad_output is None else _f32("grad_output", grad_output)
        grad_input, grad_h0, grad_c0, grads = self._native.backward(
            self._tape, g_out, g_h, g_c, True
        )
        self._tape = None
        self._accumulate(grads)
        return (grad_input, (grad_h0, grad_c0)) if lstm else (grad_input, grad_h0)

    @staticmethod
    def _split_state(hx, lstm: bool):
        if hx is None:
            return None, None
        if lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("LSTM expects hx as a tuple (h, c)")
            h, c = hx
            return (None if h is None else _f32("h0", h)), (None if c is None else _f32("c0", c))
        if isinstance(hx, (tuple, list)):
            raise TypeError("only LSTM takes hx as a tuple (h, c); pass h alone")
        return _f32("h0", hx), None

    def save(self, path) -> None:
        """Writes the project's model file (safetensors, PyTorch's names, the
        configuration in the metadata), atomically; ``recurrent forward --model`` and
        ``recurrent.load`` read it."""
        self._native.save(str(path))


class LSTM(RNNBase):
    """``torch.nn.LSTM(input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, proj_size=0)``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        layer_norm: bool = False,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__(
            "LSTM",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            layer_norm=layer_norm,
            seed=seed,
        )


class GRU(RNNBase):
    """``torch.nn.GRU(input_size, hidden_size, num_layers=1, bias=True,
    batch_first=False, dropout=0.0, bidirectional=False)``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__(
            "GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, seed=seed
        )


class RNN(RNNBase):
    """``torch.nn.RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh',
    bias=True, batch_first=False, dropout=0.0, bidirectional=False)``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__(
            _rnn_mode(nonlinearity),
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            seed=seed,
        )

    @property
    def nonlinearity(self) -> str:
        """``"tanh"`` or ``"relu"``."""
        return "relu" if self._config["mode"] == "RNN_RELU" else "tanh"


def _rnn_mode(nonlinearity: str) -> str:
    modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
    if nonlinearity not in modes:
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    return modes[nonlinearity]


class _CellBase(_Module):
    """One step of a recurrent cell: input ``(B, I)`` or unbatched ``(I)``, state
    ``(B, H)`` or ``(H)``."""

    _kind: str

    def __init__(self, kind: str, input_size: int, hidden_size: int, bias: bool, seed) -> None:
        super().__init__()
        self._kind = kind
        self.input_size, self.hidden_size, self.bias = int(input_size), int(hidden_size), bool(bias)
        self._native = _recurrent.Cell(kind, self.input_size, self.hidden_size, self.bias, seed)
        self._tape = None

    def __repr__(self) -> str:
        extra = "" if self.bias else ", bias=False"
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra})"

    def _step(self, input, hx, cx):
        x = _f32("input", input)
        hx = None if hx is None else _f32("hx", hx)
        cx = None if cx is None else _f32("cx", cx)
        if self.training:
            h, c, self._tape = self._native.forward_train(x, hx, cx)
        else:
            self._tape = None
            h, c = self._native.forward(x, hx, cx)
        return h, c

    def _back(self, grad_h, grad_c):
        if self._tape is None:
            raise RuntimeError(
                "backward: no training-mode forward to go back through (call forward in "
                "train() mode first; each forward's tape serves one backward)"
            )
        gh = None if grad_h is None else _f32("grad_h", grad_h)
        gc = None if grad_c is None else _f32("grad_c", grad_c)
        grad_input, grad_hx, grad_cx, grads = self._native.backward(self._tape, gh, gc)
        self._tape = None
        self._accumulate(grads)
        return grad_input, grad_hx, grad_cx


class LSTMCell(_CellBase):
    """``torch.nn.LSTMCell(input_size, hidden_size, bias=True)``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, seed=None) -> None:
        super().__init__("LSTM", input_size, hidden_size, bias, seed)

    def forward(self, input, hx: Optional[Tuple[Array, Array]] = None) -> Tuple[Array, Array]:
        """``(h', c')`` from the input and ``hx = (h, c)`` (zeros when ``None``)."""
        h, c = (None, None) if hx is None else hx
        return self._step(input, h, c)

    def backward(self, grad_h=None, grad_c=None):
        """Gradients through the last training step: ``(grad_input, (grad_hx, grad_cx))``;
        parameter gradients are added to ``grads``."""
        grad_input, grad_hx, grad_cx = self._back(grad_h, grad_c)
        return grad_input, (grad_hx, grad_cx)


class GRUCell(_CellBase):
    """``torch.nn.GRUCell(input_size, hidden_size, bias=True)``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, seed=None) -> None:
        super().__init__("GRU", input_size, hidden_size, bias, seed)

    def forward(self, input, hx=None) -> Array:
        """``h'`` from the input and ``hx`` (zeros when ``None``)."""
        return self._step(input, hx, None)[0]

    def backward(self, grad_h=None):
        """Gradients through the last training step: ``(grad_input, grad_hx)``."""
        grad_input, grad_hx, _ = self._back(grad_h, None)
        return grad_input, grad_hx


class RNNCell(_CellBase):
    """``torch.nn.RNNCell(input_size, hidden_size, bias=True, nonlinearity='tanh')``."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", *, seed=None
    ) -> None:
        super().__init__(_rnn_mode(nonlinearity), input_size, hidden_size, bias, seed)
        self.nonlinearity = nonlinearity

    def __repr__(self) -> str:
        extra = "" if self.nonlinearity == "tanh" else f", nonlinearity={self.nonlinearity}"
        return super().__repr__()[:-1] + extra + ")"

    forward = GRUCell.forward
    backward = GRUCell.backward


def load(path) -> RNNBase:
    """Reads a model file written by ``save`` or the command-line tool (``recurrent
    forward --model``): an ``LSTM``, ``GRU`` or ``RNN`` in eval mode."""
    native = _recurrent.Rnn.load(str(path))
    mode = json.loads(native.config_json)["mode"]
    cls = {"LSTM": LSTM, "GRU": GRU, "RNN_TANH": RNN, "RNN_RELU": RNN}[mode]
    return cls._from_native(native).eval()

