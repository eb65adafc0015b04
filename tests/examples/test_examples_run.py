"""The examples a user copies run as shipped."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(script: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_compile_onnx_example():
    out = _run("compile_onnx.py")
    assert "verified against onnxruntime: True" in out and "output logits: shape (1, 10)" in out


def test_custom_pass_example():
    out = _run("custom_pass.py")
    assert "'mlpc::SiLU': 1" in out and "verified against PyTorch: True" in out


@pytest.mark.slow  # trains a CNN, measures sensitivity, runs QAT and compiles: about a minute
def test_mixed_qat_example():
    out = _run("mixed_qat.py", "--epochs", "1")
    assert "mixed precision bits:" in out and "compiled integer build (mlpc::IntegerConv" in out
