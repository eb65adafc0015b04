"""CUDA test fixtures: zoo models exported once, CUDA artifacts compiled once per session."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import mlpc
from mlpc import zoo


@pytest.fixture(scope="session")
def zoo_onnx(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Return a function model → its exported ONNX path (opset 18, batch 1)."""
    root = tmp_path_factory.mktemp("zoo")

    def get(model: str) -> Path:
        path = root / f"{model}.onnx"
        return path if path.exists() else zoo.export_onnx(model, path, opset=18)

    return get


# Quantization settings for CUDA build tests: round to nearest, no layer-by-layer calibration
# (the tests check the builds; quantization quality is tested in tests/quant).
FAST_QUANT = {"rounding": "nearest", "sequential": False, "bias_correction": False}


def calibration(model: str, samples: int = 4) -> np.ndarray:
    """Calibration samples for a zoo model: its example inputs with `samples` seeds, stacked."""
    return np.concatenate([zoo.example_inputs(model, batch=1, seed=s)[0].numpy() for s in range(samples)])


@pytest.fixture(scope="session")
def quantized_cuda_artifact(tmp_path_factory: pytest.TempPathFactory, zoo_onnx: Callable[[str], Path]
                            ) -> Callable[[str, str, str, str], Path]:
    """Return a function (model, scheme, dtype, target) → a compiled, quantized CUDA artifact (cached)."""
    root = tmp_path_factory.mktemp("cuda-quant")
    cache: dict[tuple[str, str, str, str], Path] = {}

    def get(model: str, scheme: str, dtype: str, target: str) -> Path:
        key = (model, scheme, dtype, target)
        if key not in cache:
            out = root / f"{model}-{scheme}-{dtype}-{target.replace('/', '_')}"
            cache[key] = mlpc.compile(zoo_onnx(model), target=target, output_dir=out, dtype=dtype, quantize=scheme,
                                      calibration={"x": calibration(model)}, quant_config=FAST_QUANT).path
        return cache[key]

    return get


@pytest.fixture(scope="session")
def cuda_artifact(tmp_path_factory: pytest.TempPathFactory, zoo_onnx: Callable[[str], Path]
                  ) -> Callable[[str, str, str], Path]:
    """Return a function (model, dtype, target) → the path of a compiled CUDA artifact (cached)."""
    root = tmp_path_factory.mktemp("cuda")
    cache: dict[tuple[str, str, str], Path] = {}

    def get(model: str, dtype: str, target: str) -> Path:
        key = (model, dtype, target)
        if key not in cache:
            out = root / f"{model}-{dtype}-{target.replace('/', '_')}"
            cache[key] = mlpc.compile(zoo_onnx(model), target=target, output_dir=out, dtype=dtype).path
        return cache[key]

    return get
