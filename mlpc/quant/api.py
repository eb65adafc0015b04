"""`mlpc.quantize`: a float model plus calibration data → the fake-quant model.

    >>> import mlpc
    >>> qmodel = mlpc.quantize("model.onnx", scheme="w4a8", calibration="calib.npz")
    >>> mlpc.quant.export_qdq(qmodel, "model_q.onnx")
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx_ir as ir

from mlpc.quant.scheme import QuantConfig, resolve_config

logger = logging.getLogger(__name__)


def quantize(
    model: Any,
    scheme: str | QuantConfig = "w8a8",
    calibration: Any = None,
    *,
    config: str | Path | Mapping[str, Any] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    example_inputs: Any = None,
    engine: str = "tvm",
    progress: bool = False,
    verify: bool = True,
) -> ir.Model:
    """Quantize `model` (an .onnx path, onnx.ModelProto, onnx_ir.Model, torch.nn.Module or a
    graph's Model) after calibrating on `calibration` (.npz path, directory of .npy, dict of
    arrays or CalibrationSet). `scheme` is "w<bits>a<bits>" or a QuantConfig; `config` a YAML/JSON
    file or dict refining it per layer. `engine` "tvm" calibrates on a compiled float build,
    "reference" with the NumPy interpreter. Returns a new onnx_ir.Model in the fake-quant form
    (QONNX Quant nodes with QuantParams), checked by mlpc.ir.verify when `verify`.

        >>> qm = quantize("m.onnx", "w8a8", {"x": samples})  # doctest: +SKIP
    """
    from mlpc.frontend import load_model
    from mlpc.ir import verify as verify_ir
    from mlpc.pass_infra import PassContext
    from mlpc.passes.canonicalize import CanonicalizePass
    from mlpc.passes.quantize import QuantizePass

    cfg = resolve_config(scheme, config)
    loaded = load_model(model, input_shapes=input_shapes, example_inputs=example_inputs)
    qmodel = loaded.model
    ctx = PassContext()
    CanonicalizePass()(qmodel.graph, ctx)
    result = QuantizePass(cfg, calibration, engine=engine, progress=progress)(qmodel.graph, ctx)
    qmodel.graph = result.graph
    if verify:
        verify_ir(qmodel)
    return qmodel


def quantize_loaded(loaded: Any, ctx: Any, scheme: Any, calibration: Any, config: Any = None) -> list[Any]:
    """Quantize a LoadedModel in place inside `mlpc.compile`: run the `quantize` pass, then the
    pass registered as "lower-quant" if there is one (without it the backend compiles the
    fake-quant graph in float). The verification reference is the graph the backend compiles:
    the integer graph, which the compiled build must reproduce bit for bit (the integer graph
    itself may differ from the fake-quant one by one quantization step, see lower-quant).
    The per-layer report (`mlpc.quant.report.layer_report`: bits, scales, SQNR against the float
    model on calibration samples) goes to ctx.options["quantization_layers"].
    Returns the pass log records."""
    from mlpc.errors import PassError
    from mlpc.pass_infra import PassManager
    from mlpc.pass_registry import get_pass
    from mlpc.passes.quantize import QuantizePass

    from mlpc.quant.calibration import CalibrationSet
    from mlpc.quant.report import layer_report

    cfg = resolve_config(scheme, config)
    float_model = ir.serde.deserialize_model(ir.serde.serialize_model(loaded.model))
    quantize_pass = QuantizePass(cfg, calibration, progress=ctx.options.get("progress", False))
    log = PassManager([quantize_pass]).run(loaded.model, ctx)
    loaded.reference_kind = "fake-quant"
    loaded.reference = ir.serde.serialize_model(loaded.model)
    engine = ctx.options.get("quantize", {}).get("engine", quantize_pass.engine)
    data = CalibrationSet.load(calibration, float_model.graph)
    ctx.options["quantization_layers"] = layer_report(float_model.graph, loaded.model.graph, data, engine)
    try:
        lower = get_pass("lower-quant")
    except PassError:
        logger.info("no 'lower-quant' pass registered: the fake-quant graph is compiled in float")
        return log
    ctx.options["fake_quant_model"] = loaded.reference  # the FPGA backend writes it as QONNX
    log += PassManager([lower.factory()]).run(loaded.model, ctx)
    loaded.reference_kind = "integer"
    loaded.reference = ir.serde.serialize_model(loaded.model)
    return log
