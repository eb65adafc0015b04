"""CUDA test fixtures: zoo models exported once, CUDA artifacts compiled once per session."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
