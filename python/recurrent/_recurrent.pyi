"""Type stubs of the extension module ``recurrent._recurrent`` (built from
``crates/recurrent-py``). Arrays are float32 NumPy arrays; inputs must be C-contiguous
(the Python layers make them so). Every computation releases the GIL.

Shapes (``T`` steps, ``B`` batch, ``I`` input size, ``D`` directions, ``L`` layers,
``H_out`` = ``proj_size`` or ``hidden_size``): input ``(T, B, I)`` (``(B, T, I)`` with
``batch_first``) or unbatched ``(T, I)``; ``h0``/``h_n`` ``(D*L, B, H_out)``;
``c0``/``c_n`` ``(D*L, B, H)``; output ``(T, B, D*H_out)``.
"""

from os import PathLike
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

F32 = npt.NDArray[np.float32]
_Path = Union[str, PathLike]

def set_num_threads(n: int) -> None:
    """Threads the kernels use (default: one per core); ``n >= 1``."""

def get_num_threads() -> int:
    """Threads the kernels use."""

def kernel_level() -> str:
    """The kernel level chosen for this CPU at run time: ``amx``, ``avx512``, ``avx2`` or ``portable``."""

class Tape:
    """What a training forward pass keeps for ``Rnn.backward``; reusable while alive."""

class Rnn:
    """A recurrent stack (``torch.nn.RNNBase``): ``mode`` is ``LSTM``, ``GRU``,
    ``RNN_TANH`` or ``RNN_RELU``; initialised as PyTorch's, from ``seed`` (the operating
    system's entropy when ``None``)."""

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
        layer_norm: bool = False,
        seed: Optional[int] = None,
    ) -> None: ...
    @staticmethod
    def load(path: _Path) -> "Rnn":
        """Reads a model file (safetensors, configuration in the metadata)."""
    def save(self, path: _Path) -> None:
        """Writes the model file atomically."""
    @property
    def config_json(self) -> str:
        """The configuration as JSON (the model file's ``config`` entry)."""
    def parameter_shapes(self) -> List[Tuple[str, List[int]]]:
        """``(name, shape)`` in ``named_parameters()`` order."""
    def parameters(self) -> List[Tuple[str, F32]]:
        """Copies of the parameters, ``(name, array)`` in ``named_parameters()`` order."""
    def set_parameters(self, values: Sequence[F32]) -> None:
        """Replaces every parameter in order; copies only values that changed."""
    def forward(
        self,
        input: F32,
        h0: Optional[F32] = None,
        c0: Optional[F32] = None,
        lengths: Optional[Sequence[int]] = None,
    ) -> Tuple[F32, F32, Optional[F32]]:
        """Inference: ``(output, h_n, c_n)``; ``c_n`` is ``None`` except for LSTM."""
    def forward_train(
        self,
        input: F32,
        h0: Optional[F32] = None,
        c0: Optional[F32] = None,
        lengths: Optional[Sequence[int]] = None,
        dropout: bool = False,
        seed: int = 0,
    ) -> Tuple[F32, F32, Optional[F32], Tape]:
        """Training forward: ``(output, h_n, c_n, tape)``; with ``dropout``, masks between
        layers drawn from ``seed``."""
    def backward(
        self,
        tape: Tape,
        grad_output: Optional[F32] = None,
        grad_h_n: Optional[F32] = None,
        grad_c_n: Optional[F32] = None,
        input_grad: bool = True,
    ) -> Tuple[Optional[F32], F32, Optional[F32], List[F32]]:
        """``(grad_input, grad_h0, grad_c0, grads)``: ``grads`` holds every parameter's
        gradient in ``named_parameters()`` order; ``grad_input`` is ``None`` unless
        ``input_grad``."""

class CellTape:
    """What a cell's training step keeps for ``Cell.backward``."""

class Cell:
    """``torch.nn.LSTMCell``/``GRUCell``/``RNNCell``: ``kind`` is ``LSTM``, ``GRU``,
    ``RNN_TANH`` or ``RNN_RELU``. Input ``(B, I)`` or ``(I)``; state ``(B, H)`` or ``(H)``."""

    def __init__(
        self, kind: str, input_size: int, hidden_size: int, bias: bool = True, seed: Optional[int] = None
    ) -> None: ...
    def parameter_shapes(self) -> List[Tuple[str, List[int]]]: ...
    def parameters(self) -> List[Tuple[str, F32]]: ...
    def set_parameters(self, values: Sequence[F32]) -> None: ...
    def forward(
        self, input: F32, hx: Optional[F32] = None, cx: Optional[F32] = None
    ) -> Tuple[F32, Optional[F32]]:
        """``(h', c')``; ``c'`` is ``None`` except for LSTM."""
    def forward_train(
        self, input: F32, hx: Optional[F32] = None, cx: Optional[F32] = None
    ) -> Tuple[F32, Optional[F32], CellTape]: ...
    def backward(
        self, tape: CellTape, grad_h: Optional[F32] = None, grad_c: Optional[F32] = None
    ) -> Tuple[F32, F32, Optional[F32], List[F32]]:
        """``(grad_input, grad_hx, grad_cx, grads)``, ``grads`` in parameter order."""
