"""``torch.nn.LSTM``, ``GRU`` and ``RNN`` whose forward and backward run on recurrent's
kernels.

The classes here subclass torch's own, so they take the same arguments, hold the same
``torch.nn.Parameter``s under the same names (``load_state_dict`` works both ways) and can
replace them in an existing CPU training loop::

    import recurrent.torch as rt
    lstm = rt.LSTM(64, 256, num_layers=2, batch_first=True)   # was torch.nn.LSTM(...)

Forward and backward go through a ``torch.autograd.Function``: contiguous float32 CPU
tensors are handed to the kernels without copying, outputs come back as tensors that own
the kernels' buffers, and gradients flow to the input, ``hx`` and every parameter.
``PackedSequence`` input gives ``PackedSequence`` output with the input's batch order,
dropout between layers follows ``train()``/``eval()`` (masks drawn from torch's generator,
so ``torch.manual_seed`` makes runs repeatable), and under ``torch.no_grad()`` (or when
nothing requires a gradient) the call takes the inference path with the weights packed
once. What the kernels do not cover raises an error naming it: tensors on another device
than the CPU, dtypes other than float32, and double backward (``create_graph=True``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import _recurrent


class _Runner:
    """The native model behind one module: rebuilt when the module's configuration
    changes, given the module's weights before every call (the native side copies them
    only when their values changed). Copies and pickles of the module get a fresh one."""

    def __init__(self) -> None:
        self.native = None
        self.config = None
        self.synced = None

    def __deepcopy__(self, memo) -> "_Runner":
        return _Runner()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def get(self, module: nn.RNNBase, weights) -> "_recurrent.Rnn":
        config = (
            module.mode,
            module.input_size,
            module.hidden_size,
            module.num_layers,
            module.bias,
            module.batch_first,
            float(module.dropout),
            module.bidirectional,
            module.proj_size,
        )
        if config != self.config:
            native = _recurrent.Rnn(*config, False, 0)
            names = [n for n, _ in native.parameter_shapes()]
            if names != list(module._flat_weights_names):
                raise RuntimeError(
                    f"{type(module).__name__}: parameter names {module._flat_weights_names} "
                    f"do not match the kernels' {names}"
                )
            self.native, self.config = native, config
        self.native.set_parameters([w.detach().numpy() for w in weights])
        self.synced = _identity(weights)
        return self.native

    def holds(self, weights) -> bool:
        """Whether the native model was last given exactly these tensors, unmodified
        since (by torch's version counters)."""
        return self.native is not None and self.synced == _identity(weights)


def _identity(weights) -> tuple:
    return tuple((id(w), w.data_ptr(), w._version) for w in weights)


def _np(t: Optional[torch.Tensor]):
    """A tensor's memory as a NumPy array (a copy only when it is not contiguous)."""
    return None if t is None else t.detach().contiguous().numpy()


class _Kernels(torch.autograd.Function):
    """Training forward and backward of a whole stack on the kernels."""

    @staticmethod
    def forward(ctx, module, lengths, seed, x, h0, c0, *weights):
        native = module._runner.get(module, weights)
        output, h_n, c_n, tape = native.forward_train(
            _np(x), _np(h0), _np(c0), lengths, seed is not None, seed or 0
        )
        ctx.module, ctx.tape = module, tape
        ctx.save_for_backward(*weights)
        ctx.set_materialize_grads(False)
        outs = (torch.from_numpy(output), torch.from_numpy(h_n))
        return outs if c_n is None else outs + (torch.from_numpy(c_n),)

    @staticmethod
    def backward(ctx, grad_output, grad_h_n, grad_c_n=None):
        if torch.is_grad_enabled():
            raise RuntimeError(
                f"recurrent.torch.{type(ctx.module).__name__}: double backward "
                "(create_graph=True through the recurrent layer) is not supported; use "
                f"torch.nn.{type(ctx.module).__name__} for higher-order gradients"
            )
        with torch.no_grad():
            return _Kernels._backward(ctx, grad_output, grad_h_n, grad_c_n)

    @staticmethod
    def _backward(ctx, grad_output, grad_h_n, grad_c_n):
        # The tape stays with the graph until torch releases it, so a graph kept with
        # `retain_graph=True` can be gone through again.
        weights = ctx.saved_tensors
        # The weights of the forward pass: the native model still holds them unless the
        # module ran on others since.
        runner = ctx.module._runner
        native = runner.native if runner.holds(weights) else runner.get(ctx.module, weights)
        need = ctx.needs_input_grad
        grad_input, grad_h0, grad_c0, param_grads = native.backward(
            ctx.tape, _np(grad_output), _np(grad_h_n), _np(grad_c_n), need[3]
        )
        # Each gradient owns its buffer, so autograd can take it as `.grad` as it is.
        grads = [torch.from_numpy(g) if wanted else None for g, wanted in zip(param_grads, need[6:])]
        as_tensor = lambda a, wanted: torch.from_numpy(a) if wanted and a is not None else None
        return (
            None,
            None,
            None,
            as_tensor(grad_input, need[3]),
            as_tensor(grad_h0, need[4]),
            as_tensor(grad_c0, need[5]),
            *grads,
        )


class _KernelModule:
    """The forward shared by the three classes (mixed in before torch's class)."""

    def _check_supported(self, input: torch.Tensor, hx) -> None:
        name = type(self).__name__
        tensors = [("input", input)] + [(n, w) for n, w in zip(self._flat_weights_names, self._flat_weights)]
        if hx is not None:
            tensors += [("hx", t) for t in (hx if isinstance(hx, tuple) else (hx,))]
        for what, t in tensors:
            if t.device.type != "cpu":
                raise RuntimeError(
                    f"recurrent.torch.{name} runs on the CPU only: `{what}` is on {t.device} "
                    f"(use torch.nn.{name} there, or move the module and data with .cpu())"
                )
            if t.dtype != torch.float32:
                raise TypeError(
                    f"recurrent.torch.{name} computes in float32 only: `{what}` is {t.dtype} "
                    f"(convert with .float(), or use torch.nn.{name} for {t.dtype})"
                )

    def forward(self, input, hx=None):
        if hasattr(self, "_update_flat_weights"):
            # As torch's forward: picks up parametrized or reassigned weights.
            self._update_flat_weights()
        packed = isinstance(input, PackedSequence)
        lengths = None
        if packed:
            sequence = input
            input, lengths_t = pad_packed_sequence(sequence, batch_first=self.batch_first)
            lengths = lengths_t.tolist()
        elif input.dim() not in (2, 3):
            raise ValueError(
                f"{type(self).__name__}: Expected input to be 2D or 3D, got {input.dim()}D instead"
            )
        self._check_supported(input, hx)
        lstm = self.mode == "LSTM"
        batched = packed or input.dim() == 3
        if not batched:
            input = input.unsqueeze(0 if self.batch_first else 1)
            if hx is not None:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1)) if lstm else hx.unsqueeze(1)
        if hx is not None:
            self.check_forward_args(input, hx, None)
        h0, c0 = (hx if lstm else (hx, None)) if hx is not None else (None, None)
        output, h_n, c_n = self._run(input, h0, c0, lengths)
        if packed:
            output = _repack(output, sequence, self.batch_first)
        elif not batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n = h_n.squeeze(1)
            c_n = None if c_n is None else c_n.squeeze(1)
        return output, ((h_n, c_n) if lstm else h_n)

    def _run(self, x, h0, c0, lengths):
        weights = self._flat_weights
        dropout = self.training and self.dropout > 0 and self.num_layers > 1
        # Masks from torch's generator, so `torch.manual_seed` repeats them.
        seed = int(torch.randint(0, 2**62, ()).item()) if dropout else None
        tensors = [x, h0, c0, *weights]
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
            outs = _Kernels.apply(self, lengths, seed, x, h0, c0, *weights)
            return outs if len(outs) == 3 else (*outs, None)
        native = self._runner.get(self, weights)
        if dropout:
            output, h_n, c_n, _ = native.forward_train(_np(x), _np(h0), _np(c0), lengths, True, seed)
        else:
            output, h_n, c_n = native.forward(_np(x), _np(h0), _np(c0), lengths)
        as_tensor = lambda a: None if a is None else torch.from_numpy(a)
        return as_tensor(output), as_tensor(h_n), as_tensor(c_n)

    @property
    def _runner(self) -> _Runner:
        runner = self.__dict__.get("_recurrent_runner")
        if runner is None:
            runner = self.__dict__["_recurrent_runner"] = _Runner()
        return runner

    def to_torch(self) -> nn.RNNBase:
        """A ``torch.nn`` module of the same class with a copy of the parameters."""
        base = next(c for c in type(self).__mro__ if c.__module__.startswith("torch.nn"))
        module = base(**_arguments(self))
        module.load_state_dict(self.state_dict())
        return module.train(self.training)


def _repack(output: torch.Tensor, sequence: PackedSequence, batch_first: bool) -> PackedSequence:
    """The padded output as a ``PackedSequence`` with the input's structure."""
    steps = output.transpose(0, 1) if batch_first else output
    batch_sizes = sequence.batch_sizes
    step_of_row = torch.repeat_interleave(torch.arange(len(batch_sizes)), batch_sizes)
    starts = torch.cumsum(batch_sizes, 0) - batch_sizes
    rank = torch.arange(int(batch_sizes.sum())) - starts[step_of_row]
    sorted_indices = sequence.sorted_indices
    column = rank if sorted_indices is None else sorted_indices.cpu()[rank]
    return PackedSequence(
        steps[step_of_row, column],
        batch_sizes,
        sequence.sorted_indices,
        sequence.unsorted_indices,
    )


def _arguments(module: nn.RNNBase) -> dict:
    args = dict(
        input_size=module.input_size,
        hidden_size=module.hidden_size,
        num_layers=module.num_layers,
        bias=module.bias,
        batch_first=module.batch_first,
        dropout=float(module.dropout),
        bidirectional=module.bidirectional,
    )
    if module.mode == "LSTM":
        args["proj_size"] = module.proj_size
    if module.mode.startswith("RNN_"):
        args["nonlinearity"] = module.nonlinearity
    return args


class LSTM(_KernelModule, nn.LSTM):
    """``torch.nn.LSTM`` on recurrent's kernels (same arguments, parameters, shapes)."""


class GRU(_KernelModule, nn.GRU):
    """``torch.nn.GRU`` on recurrent's kernels (same arguments, parameters, shapes)."""


class RNN(_KernelModule, nn.RNN):
    """``torch.nn.RNN`` on recurrent's kernels (same arguments, parameters, shapes)."""


def from_torch(module: nn.RNNBase) -> nn.RNNBase:
    """The kernels' version of a ``torch.nn.LSTM``, ``GRU`` or ``RNN``, with a copy of its
    parameters and its training mode."""
    classes = {"LSTM": LSTM, "GRU": GRU, "RNN_TANH": RNN, "RNN_RELU": RNN}
    if not isinstance(module, nn.RNNBase) or module.mode not in classes:
        raise TypeError(f"from_torch: expected a torch.nn.LSTM, GRU or RNN, found {type(module).__name__}")
    ours = classes[module.mode](**_arguments(module))
    ours.load_state_dict(module.state_dict())
    return ours.train(module.training)


def load(path) -> nn.RNNBase:
    """A model file of the project (see ``recurrent.load``) as a ``recurrent.torch``
    module in eval mode."""
    from ._layers import load as load_numpy

    model = load_numpy(path)
    if model.config.get("layer_norm"):
        raise ValueError(f"{path}: a layer-norm LSTM has no torch.nn counterpart; use recurrent.load")
    classes = {"LSTM": LSTM, "GRU": GRU, "RNN_TANH": RNN, "RNN_RELU": RNN}
    module = classes[model.mode](**_arguments(model))
    module.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return module.eval()


__all__ = ["LSTM", "GRU", "RNN", "from_torch", "load"]
