"""The per-layer quantization report that `mlpc inspect` shows: for every Conv/Gemm/MatMul of a
fake-quant Graph, its weight and activation bits, weight granularity, the range of its weight
scales, and the error of its output against the float model as SQNR in dB.

SQNR = 10·log10(Σ y_f² / Σ (y_f − y_q)²), summed over every element of the layer's output on
every sample, where y_f is the layer's output in the float model and y_q in the fake-quant model
(both run on the same inputs, by the engine named in the report: mlpc's NumPy reference
evaluator or a TVM build for this host). The error is end to end: it includes what the layers
before it contributed. Layers are matched by output value name (the quantize pass and QDQ
exporters keep them), a layer with no float counterpart gets no SQNR.

`mlpc compile --quantize` stores the report in the artifact's manifest ("quantization"), so
inspecting an artifact needs no data; `mlpc inspect model_q.onnx --float-model model.onnx
--calib data.npz` measures it for a quantized ONNX model (QDQ, QCDQ or QONNX).

    >>> report = layer_report(float_graph, fq_graph, CalibrationSet.load("calib.npz", fq_graph))
    >>> report["layers"][0]["sqnr_db"]
    38.2
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import onnx_ir as ir

from mlpc.quant.calibration import CalibrationSet, make_runner
from mlpc.quant.layers import const_array

logger = logging.getLogger(__name__)

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
QUANT_OPS = ("Quant", "IntQuant", "BipolarQuant")
ENGINE_NAMES = {"reference": "mlpc reference evaluator (NumPy)", "tvm": "TVM build for the host (float32)"}
# Samples used to measure SQNR when compiling (the whole calibration set is rarely needed).
DEFAULT_SAMPLES = 32


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """10·log10(Σ reference² / Σ (reference − approx)²) in dB: +inf when the two are equal,
    -inf when the reference is all zeros and the approximation is not.

        >>> round(sqnr_db(np.array([1.0, 2.0]), np.array([1.0, 2.1])), 2)
        26.99
    """
    ref = np.asarray(reference, np.float64)
    noise = float(np.sum((ref - np.asarray(approx, np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _quant_node(value: ir.Value | None) -> ir.Node | None:
    node = value.producer() if value is not None else None
    return node if node is not None and node.op_type in QUANT_OPS else None


def _params(node: ir.Node) -> Any:
    from mlpc.ir import get_quant
    from mlpc.quant.importer import quant_params_of

    qp = get_quant(node.outputs[0])
    return qp if qp is not None else quant_params_of(node)


def _scales(qp: Any) -> np.ndarray:
    return np.atleast_1d(np.asarray(qp.scale, np.float64))


def quant_layers(graph: ir.Graph) -> list[dict[str, Any]]:
    """Static facts of every Conv/ConvTranspose/Gemm/MatMul of a fake-quant `graph`, in graph
    order: name, op, output (value name), weight_bits, activation_bits, granularity,
    weight_scale_min/max, activation_scale. Unquantized operands give None (a float layer
    has weight_bits and activation_bits None)."""
    rows = []
    for node in graph:
        if node.op_type not in LAYER_OPS or node.domain not in ("", "ai.onnx"):
            continue
        row: dict[str, Any] = {
            "name": node.name or node.outputs[0].name,
            "op": node.op_type,
            "output": node.outputs[0].name,
            "weight_bits": None,
            "activation_bits": None,
            "granularity": None,
            "weight_scale_min": None,
            "weight_scale_max": None,
            "activation_scale": None,
        }
        act_bits, act_scales = [], []
        for value in node.inputs[:2]:
            quant = _quant_node(value)
            if quant is None:
                continue
            qp = _params(quant)
            if const_array(quant.inputs[0]) is not None:  # a quantized constant: the weight
                scales = _scales(qp)
                row.update(
                    weight_bits=int(qp.bits),
                    granularity="per_channel" if qp.per_channel else "per_tensor",
                    weight_scale_min=float(scales.min()),
                    weight_scale_max=float(scales.max()),
                )
            else:
                act_bits.append(int(qp.bits))
                act_scales.append(float(_scales(qp).max()))
        if act_bits:
            row["activation_bits"] = max(act_bits)
            row["activation_scale"] = max(act_scales)
        if row["weight_bits"] is None and len(act_bits) == 2:
            row["op"] = f"{node.op_type} (activations)"
        rows.append(row)
    return rows


def layer_report(
    float_graph: ir.Graph,
    quant_graph: ir.Graph,
    data: CalibrationSet,
    engine: str = "reference",
    samples: int | None = DEFAULT_SAMPLES,
) -> dict[str, Any]:
    """The per-layer table of `quant_graph` (see `quant_layers`) with each layer's output SQNR
    against `float_graph`, measured on the first `samples` samples of `data` (all when None) by
    `engine` ("reference" or "tvm"). Returns {"measured", "engine", "samples", "layers"}, JSON
    ready: an SQNR of +inf (no error at all) is stored as None with "exact": True.

        >>> layer_report(g_float, g_fq, data, engine="tvm")["layers"][0]["sqnr_db"]  # doctest: +SKIP
    """
    rows = quant_layers(quant_graph)
    float_names = {v.name for v in float_graph.inputs} | {v.name for n in float_graph for v in n.outputs}
    measured = [r for r in rows if r["output"] in float_names and (r["weight_bits"] or r["activation_bits"])]
    subset = data.samples if samples is None else data.samples[:samples]
    names = [r["output"] for r in measured]
    noise = dict.fromkeys(names, 0.0)
    signal = dict.fromkeys(names, 0.0)
    if names and subset:
        opset = dict(quant_graph.opset_imports).get("")
        run_f = make_runner(float_graph, names, subset[0], engine, opset)
        run_q = make_runner(quant_graph, names, subset[0], engine, opset)
        for sample in subset:
            yf, yq = run_f(sample), run_q(sample)
            for name in names:
                ref = np.asarray(yf[name], np.float64)
                signal[name] += float(np.sum(ref**2))
                noise[name] += float(np.sum((ref - np.asarray(yq[name], np.float64)) ** 2))
    for row in rows:
        name = row["output"]
        row["sqnr_db"], row["exact"] = None, False
        if name not in noise:
            continue
        if noise[name] == 0.0:
            row["exact"] = True
        elif signal[name] > 0.0:  # (a float output of all zeros with a nonzero error gets None)
            row["sqnr_db"] = round(10.0 * math.log10(signal[name] / noise[name]), 3)
    missing = [
        r["name"]
        for r in rows
        if (r["weight_bits"] or r["activation_bits"]) and r["output"] not in float_names
    ]
    if missing:
        logger.warning(
            "quantization report: no float counterpart (by output name) for layers %s", ", ".join(missing)
        )
    logger.info("quantization report: SQNR of %d layers on %d samples (%s)", len(names), len(subset), engine)
    return {
        "measured": f"float model vs fake-quant model, layer outputs matched by name, {ENGINE_NAMES[engine]}",
        "engine": engine,
        "samples": len(subset) if names else 0,
        "layers": rows,
    }


_QUANTIZED_OPS = ("Quant", "IntQuant", "BipolarQuant", "QuantizeLinear", "DequantizeLinear")


def model_report(
    path: Any,
    float_model: Any = None,
    calibration: Any = None,
    *,
    engine: str = "reference",
    samples: int | None = DEFAULT_SAMPLES,
    input_shapes: Any = None,
) -> dict[str, Any] | None:
    """The per-layer report of a quantized ONNX model (QDQ, QCDQ or QONNX; see `import_quantized`),
    or None when the model holds no quantization. With `float_model` (the float ONNX model it was
    made from) and `calibration` (inputs: .npz, directory of .npy, or dict) each layer gets its
    SQNR against the float model; without them only bits, granularity and scales.

        >>> model_report("model_qdq.onnx", "model.onnx", "calib.npz")["layers"][0]["sqnr_db"]  # doctest: +SKIP
    """
    from mlpc.errors import InputError
    from mlpc.frontend import load_model
    from mlpc.quant.importer import import_quantized

    if (float_model is None) != (calibration is None):
        raise InputError(
            "the SQNR of a quantized model needs both --float-model MODEL.onnx and --calib DATA "
            "(inputs to run both on); give both or neither"
        )
    loaded = load_model(path, input_shapes=input_shapes)
    if not any(n.op_type in _QUANTIZED_OPS for n in loaded.model.graph):
        return None
    quant = import_quantized(loaded.model)
    if float_model is None:
        rows = quant_layers(quant.graph)
        for row in rows:
            row["sqnr_db"], row["exact"] = None, False
        return {"measured": None, "engine": None, "samples": 0, "layers": rows}
    reference = load_model(float_model, input_shapes=input_shapes).model
    data = CalibrationSet.load(calibration, reference.graph)
    return layer_report(reference.graph, quant.graph, data, engine, samples)
