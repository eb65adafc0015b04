"""Fixtures for the quantization tests: a small CNN trained on scikit-learn's digits (8×8)."""
from __future__ import annotations

import onnx
import pytest

from benchmarks.quant_models import Digits, train_digits_cnn


def batched(model) -> onnx.ModelProto:
    """A copy of a batch-1 model (ModelProto or onnx_ir.Model) whose batch dimension is symbolic,
    so the reference evaluator runs a whole test set at once."""
    import onnx_ir as ir

    proto = ir.serde.serialize_model(model) if isinstance(model, ir.Model) else onnx.ModelProto.FromString(model.SerializeToString())
    del proto.graph.value_info[:]
    for vi in (*proto.graph.input, *proto.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    return proto


@pytest.fixture(scope="session")
def digits() -> Digits:
    """The trained digits CNN (session-wide: trained once)."""
    return train_digits_cnn()
