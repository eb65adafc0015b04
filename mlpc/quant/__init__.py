"""Post-training quantization: schemes, observers, calibration, the algorithms that make low
bits work (bias correction, cross-layer equalization, GPTQ rounding), and QDQ/QONNX import and
export. The `quantize` pass itself lives in `mlpc.passes.quantize`.

    >>> import mlpc
    >>> qmodel = mlpc.quantize("model.onnx", scheme="w4a8", calibration="calib.npz")
    >>> mlpc.quant.export_qdq(qmodel, "model_q.onnx")
"""

from __future__ import annotations

from mlpc.quant.api import quantize
from mlpc.quant.calibration import CalibrationSet, run_calibration
from mlpc.quant.export import export_qdq, export_qonnx, to_qdq, to_qonnx
from mlpc.quant.importer import import_quantized
from mlpc.quant.observers import Observer, make_observer, range_to_params, weight_params
from mlpc.quant.scheme import LayerRule, QuantConfig, QuantSpec, config_from_dict, load_config, parse_scheme, resolve_config

__all__ = [
    "CalibrationSet",
    "LayerRule",
    "Observer",
    "QuantConfig",
    "QuantSpec",
    "config_from_dict",
    "export_qdq",
    "export_qonnx",
    "import_quantized",
    "load_config",
    "make_observer",
    "parse_scheme",
    "quantize",
    "range_to_params",
    "resolve_config",
    "run_calibration",
    "to_qdq",
    "to_qonnx",
    "weight_params",
]
