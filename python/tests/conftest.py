"""Shared helpers: the project's PyTorch-generated fixtures (``fixtures/``, from
``fixtures/generate.py``) and the tolerances they are compared with."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

#: Element-wise ``|actual - expected| <= ATOL + RTOL * |expected|``: the Rust golden tests'
#: tolerances (float32 sums taken in another order than PyTorch's, over at most a few
#: hundred terms).
ATOL = 2e-5
RTOL = 2e-4

_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """``(tensors, metadata)`` of a safetensors file (the format is a JSON header and raw
    little-endian data; read here without any package)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    metadata = header.pop("__metadata__", {})
    data = raw[8 + n :]
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        a = np.frombuffer(data[start:end], dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])
        tensors[name] = a.copy()
    return tensors, metadata


def fixture_cases(group):
    files = sorted((FIXTURES / group).glob("*.safetensors"))
    assert files, f"no fixtures in {FIXTURES / group}"
    return files


def assert_close(what, actual, expected, atol=ATOL, rtol=RTOL):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol, err_msg=what)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
