"""fp16/bf16 conversion: the converted Relax module, built for this CPU, stays close to onnxruntime
(and measurably differs from float32, so the conversion really happened)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mlpc import zoo
from mlpc.backends.tvm.backend import default_opset
from mlpc.backends.tvm.build import build, run
from mlpc.backends.tvm.cuda import convert_precision, normalize_dtype
from mlpc.backends.tvm.lower import lower_graph
from mlpc.frontend import load_model
from mlpc.pass_infra import PassContext, PassManager
from mlpc.pipeline import default_pipeline
from mlpc.targets import get_target


@pytest.mark.parametrize(("model", "dtype", "tolerance"), [("transformer", "fp16", 5e-3), ("transformer", "bf16", 3e-2),
                                                          ("resnet", "bf16", 3e-2)])
def test_reduced_precision_matches_onnxruntime(model: str, dtype: str, tolerance: float,
                                                zoo_onnx: Callable[[str], Path]) -> None:
    loaded = load_model(zoo_onnx(model))
    host, cuda = get_target("host"), get_target("cuda/sm_80")
    # the pipeline and lowering of a CUDA compile (no CPU layout/attention kernels, TVM's fusion)
    PassManager(default_pipeline(cuda, None)).run(loaded.model, PassContext(target=cuda))
    mod = lower_graph(loaded.model.graph, default_opset(loaded.model), groups=False)
    (x,) = (t.numpy() for t in zoo.example_inputs(model))
    ref = ort.InferenceSession(str(zoo_onnx(model))).run(None, {"x": x})[0]
    converted = convert_precision(mod, normalize_dtype(dtype))
    assert normalize_dtype(dtype) in converted.script()
    (got,) = run(build(converted, host), [x])
    assert got.dtype == np.float32 and got.shape == ref.shape
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert 1e-6 < rel <= tolerance
