"""Shared fixtures: small ONNX models written to disk, and the verifier on in every compile."""
from __future__ import annotations

import os

import onnx
import pytest

from tiny_models import make_tiny_cnn

# The IR verifier runs after every pass in every compile the tests make.
os.environ.setdefault("MLPC_VERIFY_PASSES", "1")


@pytest.fixture
def tiny_cnn_path(tmp_path):
    """A tiny CNN with a symbolic batch dimension 'N', saved as tiny.onnx."""
    path = tmp_path / "tiny.onnx"
    onnx.save(make_tiny_cnn(), path)
    return path


@pytest.fixture
def tiny_cnn_static_path(tmp_path):
    """The tiny CNN with batch fixed at 2."""
    path = tmp_path / "tiny_static.onnx"
    onnx.save(make_tiny_cnn(batch=2), path)
    return path
