"""recurrent: PyTorch's recurrent layers (RNN, LSTM, GRU and their cells) on fast Rust
CPU kernels.

- ``recurrent.LSTM``, ``GRU``, ``RNN``, ``LSTMCell``, ``GRUCell``, ``RNNCell``: NumPy
  layers with PyTorch's arguments, shapes, parameter names and numbers, forward and
  backward (no torch needed).
- ``recurrent.torch``: ``LSTM``, ``GRU``, ``RNN`` as ``torch.nn`` modules on these kernels,
  to swap into an existing CPU training loop (imported on demand; needs torch).
- ``recurrent.load(path)`` / ``module.save(path)``: the project's safetensors model files.
- ``recurrent.set_num_threads(n)``: threads the kernels use (default: one per core).
"""

from ._layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, load
from ._recurrent import __version__, get_num_threads, kernel_level, set_num_threads

__all__ = [
    "RNNBase",
    "LSTM",
    "GRU",
    "RNN",
    "LSTMCell",
    "GRUCell",
    "RNNCell",
    "load",
    "set_num_threads",
    "get_num_threads",
    "kernel_level",
    "__version__",
]
