"""Per-layer sensitivity to weight quantization: how much the model's output moves when one
layer's weights are quantized to b bits and everything else stays float.

Two estimators, one result type (`Sensitivity`: Ω_i(b) per layer i and candidate width b):

- "data" (`data_sensitivity`, any ONNX model, no gradients): quantize layer i's weight alone
  to b bits (`fake_quant_weight`), run the model on calibration samples, and take the output
  perturbation against the float model — "mse": Σ‖y_q − y‖² / Σ‖y‖² (relative noise power,
  1/SQNR), or "kl": the mean KL(softmax(y) ‖ softmax(y_q)) over the last axis (classifiers).
  onnxruntime runs the samples (the layer weights are fed as overridable initializers, so one
  session serves every (layer, bits) pair); mlpc's reference evaluator is used when onnxruntime
  cannot load the graph.
- "hessian" (`mlpc.mixed.hessian`, torch modules and ONNX models through `mlpc.ir.to_torch`):
  HAWQ-V2's average Hessian trace with HAWQ-V3's perturbation Ω_i(b) = Tr(H_i)/n_i · ‖Q_b(W_i) − W_i‖².

    >>> sens = data_sensitivity("model.onnx", "calib.npz", bits=(2, 4, 8))  # doctest: +SKIP
    >>> sens.ranking(4)[0]   # the most sensitive layer at 4 bits  # doctest: +SKIP
    'conv1'
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlpc.errors import InputError, QuantizationError
from mlpc.mixed.layers import DEFAULT_BITS, LayerInfo, check_bits, fake_quant_weight, onnx_layers

logger = logging.getLogger(__name__)

METRICS = ("mse", "kl")
ROUNDINGS = ("nearest", "pass")
DEFAULT_SAMPLES = 64


@dataclass
class Sensitivity:
    """Ω_i(b) for every layer and candidate width, with what the cost model needs about the layers.

    `method` "data" or "hessian"; `metric` what Ω measures; `omega[name][bits]`; `trace[name]`
    the average Hessian trace (hessian method only); `other_params` float parameters outside the
    layers (kept float32, counted in the model size).
    """

    method: str
    metric: str
    bits: tuple[int, ...]
    layers: list[LayerInfo]
    omega: dict[str, dict[int, float]]
    other_params: int = 0
    samples: int = 0
    trace: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def ranking(self, bits: int) -> list[str]:
        """Layer names from most to least sensitive at `bits`."""
        return sorted(self.omega, key=lambda name: -self.omega[name][bits])

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what `mlpc sensitivity -o sens.json` writes)."""
        return {
            "method": self.method,
            "metric": self.metric,
            "bits": list(self.bits),
            "samples": self.samples,
            "other_params": self.other_params,
            "layers": [
                {
                    **layer.to_json(),
                    "omega": {str(b): self.omega[layer.name][b] for b in self.bits},
                    **({"trace": self.trace[layer.name]} if self.trace else {}),
                }
                for layer in self.layers
            ],
            **self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "sensitivity") -> Sensitivity:
        """Inverse of `to_json`; InputError naming `source` for a malformed file."""
        try:
            bits = check_bits(data["bits"])
            layers, omega, trace = [], {}, {}
            for row in data["layers"]:
                row = dict(row)
                om = row.pop("omega")
                if "trace" in row:
                    trace[row["name"]] = float(row.pop("trace"))
                layers.append(LayerInfo.from_json(row))
                omega[row["name"]] = {b: float(om[str(b)]) for b in bits}
            return cls(
                data["method"],
                data["metric"],
                bits,
                layers,
                omega,
                int(data.get("other_params", 0)),
                int(data.get("samples", 0)),
                trace or None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{source}: not a sensitivity file written by `mlpc sensitivity` ({e!r})") from e

    def save(self, path: str | Path) -> None:
        """Write the JSON form to `path`."""
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Sensitivity:
        """Read a file written by `save` / `mlpc sensitivity`."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot read a sensitivity JSON file ({e})") from e
        return cls.from_json(data, str(path))


def prepare_graph(model: Any, input_shapes: Any = None, example_inputs: Any = None) -> Any:
    """Load `model` and bring it to the form the quantize pass sees: canonicalized (shapes
    inferred, constants folded) with BatchNorms folded into the convolutions before them."""
    from mlpc.frontend import load_model
    from mlpc.pass_infra import PassContext
    from mlpc.passes.canonicalize import CanonicalizePass
    from mlpc.quant.equalize import fold_batchnorm

    loaded = load_model(model, input_shapes=input_shapes, example_inputs=example_inputs)
    CanonicalizePass()(loaded.model.graph, PassContext())
    fold_batchnorm(loaded.model.graph)
    return loaded.model


def output_error(metric: str, ref: list[np.ndarray], out: list[np.ndarray]) -> tuple[float, float]:
    """(error, normaliser) of one sample's outputs: "mse" Σ(y−y_q)², Σy²; "kl" Σ KL over the last
    axis, number of distributions."""
    err = norm = 0.0
    for y, yq in zip(ref, out):
        y = np.asarray(y, np.float64)
        yq = np.asarray(yq, np.float64)
        if metric == "mse":
            err += float(np.sum((y - yq) ** 2))
            norm += float(np.sum(y**2))
        else:
            lp = y - np.max(y, axis=-1, keepdims=True)
            lp -= np.log(np.sum(np.exp(lp), axis=-1, keepdims=True))
            lq = yq - np.max(yq, axis=-1, keepdims=True)
            lq -= np.log(np.sum(np.exp(lq), axis=-1, keepdims=True))
            err += float(np.sum(np.exp(lp) * (lp - lq)))
            norm += float(np.prod(y.shape[:-1]))
    return err, norm


def unoptimized_session(proto: Any) -> Any:
    """An onnxruntime CPU session over the ModelProto `proto` on one thread with graph
    optimizations off: weights stay what the graph says, a QDQ model runs as float arithmetic on
    the dequantized values."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


class _OrtRunner:
    """onnxruntime over the model with the layer weights declared as graph inputs too (ONNX's
    overridable initializers): `run(sample, {weight name: array})`."""

    def __init__(self, model: Any, weight_names: list[str]) -> None:
        import onnx
        import onnx_ir as ir

        proto = ir.serde.serialize_model(model)
        if proto.ir_version < 4:
            proto.ir_version = 4
        inits = {t.name: t for t in proto.graph.initializer}
        for name in dict.fromkeys(weight_names):  # a weight shared by two layers is one input
            t = inits[name]
            proto.graph.input.append(onnx.helper.make_tensor_value_info(name, t.data_type, list(t.dims)))
        # graph optimizations would fold the (now overridable) weights into constants of fused nodes
        self.session = unoptimized_session(proto)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, sample: dict[str, np.ndarray], overrides: dict[str, np.ndarray]) -> list[np.ndarray]:
        feeds = {k: np.asarray(v) for k, v in sample.items()}
        feeds.update({k: v.astype(np.float32) for k, v in overrides.items()})
        return self.session.run(self.outputs, feeds)


class _ReferenceRunner:
    """mlpc's reference evaluator; weights are overridden by editing the initializers."""

    def __init__(self, model: Any, weight_names: list[str]) -> None:
        self.model = model
        self.originals = {n: model.graph.initializers[n].const_value for n in weight_names}

    def run(self, sample: dict[str, np.ndarray], overrides: dict[str, np.ndarray]) -> list[np.ndarray]:
        import onnx_ir as ir

        from mlpc.ir import ReferenceEvaluator

        graph = self.model.graph
        try:
            for name, array in overrides.items():
                graph.initializers[name].const_value = ir.tensor(array.astype(np.float32), name=name)
            evaluator = ReferenceEvaluator(self.model)
            names = [v.name for v in graph.outputs]
            out = evaluator.run(sample, names)
            return [out[n] for n in names]
        finally:
            for name, tensor in self.originals.items():
                graph.initializers[name].const_value = tensor


def data_sensitivity(
    model: Any,
    calibration: Any,
    *,
    bits: Any = DEFAULT_BITS,
    metric: str = "mse",
    samples: int | None = DEFAULT_SAMPLES,
    input_shapes: Any = None,
    example_inputs: Any = None,
    rounding: str = "nearest",
) -> Sensitivity:
    """Data-driven sensitivity of every weight layer of `model` (an .onnx path, ModelProto,
    onnx_ir.Model or torch module with `example_inputs`) on the first `samples` samples of
    `calibration` (.npz, directory of .npy, dict of arrays): Ω_i(b) is the output perturbation
    (`metric` "mse" or "kl", see the module doc) with layer i alone quantized to b bits.
    `rounding` "nearest" quantizes the weight with round-to-nearest (`fake_quant_weight`, fast);
    "pass" runs mlpc's quantize pass on that layer alone (its GPTQ rounding, clipping search and
    bias correction, calibrated on the calibration samples after those `samples` when there are
    at least as many more — a rounding fitted to the samples it is judged on would look better
    than it is — else on all of them) and takes the weight and bias it chose: the error the
    compiled model will actually have, at one calibration run per (layer, bits).

        >>> sens = data_sensitivity("m.onnx", {"x": x_calib}, bits=(2, 4, 8), metric="kl")  # doctest: +SKIP
    """
    from mlpc.quant.calibration import CalibrationSet
    from mlpc.quant.layers import const_array, find_layers

    if metric not in METRICS:
        raise QuantizationError(f"sensitivity metric {metric!r} is not one of {', '.join(METRICS)}")
    if rounding not in ROUNDINGS:
        raise QuantizationError(f"sensitivity rounding {rounding!r} is not one of {', '.join(ROUNDINGS)}")
    candidates = check_bits(bits)
    ir_model = prepare_graph(model, input_shapes, example_inputs)
    graph = ir_model.graph
    infos, other = onnx_layers(graph)
    if not infos:
        raise QuantizationError(
            "the model has no Conv/Gemm/MatMul layer with a constant weight: nothing to allocate bits to"
        )
    everything = CalibrationSet.load(calibration, graph)
    data = CalibrationSet(everything.samples[:samples], everything.source) if samples else everything
    rest = everything.samples[len(data):]
    fit = CalibrationSet(rest, everything.source) if len(rest) >= len(data) else everything
    weights = {layer.name: layer for layer in find_layers(graph) if layer.weight is not None}
    names = [weights[i.name].weight.name for i in infos]
    names += [weights[i.name].bias.name for i in infos if weights[i.name].bias is not None]
    try:
        runner: Any = _OrtRunner(ir_model, names)
        engine = "onnxruntime"
    except Exception as e:  # a graph onnxruntime cannot load (mlpc-domain ops): the reference evaluator
        logger.info("sensitivity: onnxruntime cannot run the model (%s); using the reference evaluator", e)
        runner, engine = _ReferenceRunner(ir_model, names), "reference"
    reference = [runner.run(sample, {}) for sample in data.samples]
    omega: dict[str, dict[int, float]] = {}
    for info in infos:
        layer = weights[info.name]
        w = const_array(layer.weight).astype(np.float64)
        omega[info.name] = {}
        for b in candidates:
            if rounding == "pass":
                overrides = _pass_weights(ir_model, layer, b, fit)
            else:
                overrides = {layer.weight.name: fake_quant_weight(w, b, layer.channel_axis)}
            err = norm = 0.0
            for sample, ref in zip(data.samples, reference):
                e, n = output_error(metric, ref, runner.run(sample, overrides))
                err, norm = err + e, norm + n
            omega[info.name][b] = err / norm if norm > 0 else (0.0 if err == 0 else math.inf)
        logger.debug("sensitivity %s: %s", info.name, omega[info.name])
    logger.info(
        "data sensitivity (%s, %s) of %d layers at bits %s on %d samples",
        metric,
        engine,
        len(infos),
        list(candidates),
        len(data),
    )
    return Sensitivity(
        "data",
        metric,
        candidates,
        infos,
        omega,
        other,
        len(data),
        extra={"engine": engine, "rounding": rounding},
    )


def _pass_weights(model: Any, layer: Any, bits: int, data: Any) -> dict[str, np.ndarray]:
    """{weight name: dequantized weight, bias name: bias} that mlpc's quantize pass gives `layer`
    at w<bits>a8 when it quantizes that layer alone (calibrated on `data`, reference engine)."""
    import glob

    import onnx_ir as ir

    from mlpc.ir import get_quant
    from mlpc.pass_infra import PassContext
    from mlpc.passes.quantize import QuantizePass
    from mlpc.quant.layers import const_array, find_layers
    from mlpc.quant.scheme import config_from_dict

    copy = ir.serde.deserialize_model(ir.serde.serialize_model(model))
    others = [other.name for other in find_layers(copy.graph) if other.name != layer.name]
    config = config_from_dict({"scheme": f"w{bits}a8", "skip": [glob.escape(n) for n in others]})
    QuantizePass(config, data, engine="reference")(copy.graph, PassContext())
    node = next(n for n in copy.graph if n.name == layer.name)
    quant = node.inputs[1].producer()
    qp = get_quant(node.inputs[1])
    w_hat = const_array(quant.inputs[0]).astype(np.float64)
    out = {layer.weight.name: qp.dequantize(qp.quantize(w_hat), np.float64)}
    if layer.bias is not None and len(node.inputs) > 2 and node.inputs[2] is not None:
        out[layer.bias.name] = const_array(node.inputs[2]).astype(np.float64)
    return out
