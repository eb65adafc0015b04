"""The `quantize` pass: a float Graph → the fake-quant Graph of the quantization contract.

With a weight-only config ("w4a16") only weights are quantized: no activation observers, no
activation Quant nodes, no residual adds, and MatMuls of two activations stay float.

Steps: fold BatchNormalization into Conv; cross-layer equalization when weights are per tensor
(config `equalize`); calibrate (observe every quantized layer's data input and gather its input
statistics, on a TVM build of the float graph or the reference evaluator); quantize each weight
(observer-chosen per-channel ranges, then round-to-nearest or GPTQ, chosen per layer by output
error on the calibration data); correct biases for the weights' mean error; insert QONNX Quant
nodes (with QuantParams on their outputs) on weights and on layer data inputs.

    >>> pass_ = QuantizePass(parse_scheme("w4a8"), calibration="calib.npz")
    >>> result = pass_(graph, PassContext())
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx_ir as ir

from mlpc.errors import QuantizationError
from mlpc.pass_infra import Pass, PassContext, PassResult
from mlpc.quant.calibration import CalibrationSet, make_runner, run_calibration
from mlpc.quant.equalize import equalize, fold_batchnorm
from mlpc.quant.layers import Layer, const_array, find_layers, quantize_activation, quantize_weight, set_bias
from mlpc.quant.observers import Observer, weight_params
from mlpc.quant.rounding import GPTQ_MAX_BITS, bias_correction, round_weight
from mlpc.quant.scheme import QuantConfig, QuantSpec, resolve_config
from mlpc.quant.stats import LayerStats

logger = logging.getLogger(__name__)

OPTIONS_KEY = "quantize"
# Clipping ratios of the min-max range tried (besides the observer's range) for ≤ 4-bit weights.
CLIP_RATIOS = (1.0, 0.9, 0.8)


@dataclass
class QuantizeReport:
    """What the pass did per layer: weight bits, rounding method, bias correction, activation bits."""

    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    equalized_pairs: int = 0
    folded_batchnorms: int = 0
    samples: int = 0
    sequential_stages: int = 1

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-serialisable dict."""
        return {"layers": self.layers, "equalized_pairs": self.equalized_pairs,
                "folded_batchnorms": self.folded_batchnorms, "samples": self.samples,
                "sequential_stages": self.sequential_stages}


def is_quantized(graph: ir.Graph) -> bool:
    """True when the graph already holds QONNX Quant nodes (so the pass leaves it alone)."""
    return any(n.op_type in ("Quant", "IntQuant", "BipolarQuant") for n in graph)


class QuantizePass(Pass):
    """Post-training quantization into the fake-quant form (see the module doc).

    `config` is a QuantConfig, a scheme string ("w4a8") or None (then ctx.options["quantize"]
    {"config", "calibration", "engine"} is read); `calibration` is a CalibrationSet, a path or a
    dict of arrays; `engine` "tvm" or "reference" runs calibration. Idempotent: a graph that
    already holds Quant nodes is returned unmodified.
    """

    name = "quantize"
    description = "post-training quantization: calibrate, quantize weights (GPTQ/bias correction), insert Quant nodes"
    opt_level = 0

    def __init__(self, config: QuantConfig | str | None = None, calibration: Any = None, engine: str = "tvm",
                 progress: bool = False) -> None:
        self.config = config
        self.calibration = calibration
        self.engine = engine
        self.progress = progress
        self.report = QuantizeReport()

    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        opts: Mapping[str, Any] = ctx.options.get(OPTIONS_KEY, {})
        config = resolve_config(self.config if self.config is not None else opts.get("config"))
        calibration = self.calibration if self.calibration is not None else opts.get("calibration")
        engine = opts.get("engine", self.engine)
        if is_quantized(graph):
            logger.info("quantize: the graph already holds Quant nodes; nothing to do")
            return PassResult(graph, False)
        if calibration is None:
            raise QuantizationError("the quantize pass needs calibration data (--calib FILE or calibration=)")
        data = CalibrationSet.load(calibration, graph)
        self.report = QuantizeReport(samples=len(data))
        self.report.folded_batchnorms = fold_batchnorm(graph)
        layers = _select_layers(graph, config)
        if not layers:
            logger.warning("quantize: no Conv/Gemm/MatMul layer to quantize")
            return PassResult(graph, self.report.folded_batchnorms > 0)
        _check_weights(layers)
        if config.equalize is True or (config.equalize == "auto" and
                                         all(w.granularity == "per_tensor" for _, (w, _a) in layers)):
            self.report.equalized_pairs = equalize(graph)
            layers = _select_layers(graph, config)
        if not config.weight_only:
            layers += _residual_adds(graph, layers)
        stages = _stages(graph, [layer for layer, _ in layers])
        sequential = config.sequential is True or (
            config.sequential == "auto" and any(w.bits <= GPTQ_MAX_BITS for _, (w, _a) in layers) and len(stages) > 1)
        float_runner = None
        for index, stage in enumerate(stages if sequential else [list(range(len(layers)))]):
            group = [layers[i] for i in stage]
            if index == 1:  # from now on layer inputs carry quantization error: also run the float graph
                float_runner = self._float_runner(float_graph, layers, data, engine)
            if index == 0:
                float_graph = _copy_graph(graph)
            observers, stats = self._calibrate(graph, group, config, data, engine, float_runner)
            for layer, (wspec, _aspec) in group:
                if layer.weight is not None:
                    self.report.layers[layer.name] = self._quantize_weight(graph, layer, wspec, config, stats[id(layer.node)])
            if not config.weight_only:
                self._quantize_activations(graph, group, observers)
        self.report.sequential_stages = len(stages) if sequential else 1
        _remove_unused_initializers(graph)
        methods = [r.get("rounding") for r in self.report.layers.values()]
        logger.info("quantized %d layers (%s) on %d calibration samples; gptq kept for %d",
                    len(layers), config.name, len(data), methods.count("gptq"))
        ctx.options.setdefault("quantize_report", self.report.to_json())
        return PassResult(graph, True)

    def _float_runner(self, float_graph: ir.Graph, layers: list[tuple[Layer, tuple[QuantSpec, QuantSpec]]],
                      data: CalibrationSet, engine: str):
        names = list(dict.fromkeys(layer.data.name for layer, _ in layers if layer.weight is not None))
        return make_runner(float_graph, names, data.samples[0], engine, dict(float_graph.opset_imports).get(""))

    def _calibrate(self, graph: ir.Graph, layers: list[tuple[Layer, tuple[QuantSpec, QuantSpec]]],
                   config: QuantConfig, data: CalibrationSet, engine: str, float_runner=None):
        """One calibration run of `graph`: activation observers and input statistics of `layers`
        (paired with the float graph's inputs when `float_runner` is given)."""
        observers: dict[str, Observer] = {}
        stats: dict[int, LayerStats] = {}
        for layer, (wspec, aspec) in layers:
            for value in _activation_inputs(layer) if not config.weight_only else []:
                observers.setdefault(value.name, Observer(value.name, aspec.observer_name))
            if layer.weight is not None:
                want_h = config.rounding != "nearest" and wspec.bits <= GPTQ_MAX_BITS or config.rounding == "gptq"
                stats[id(layer.node)] = LayerStats(layer, hessian=want_h)

        def on_sample(values: dict[str, np.ndarray], float_values: dict[str, np.ndarray] | None = None) -> None:
            for name, obs in observers.items():
                obs.update(values[name])
            for layer_stats in stats.values():
                name = layer_stats.layer.data.name
                layer_stats.update(values[name], None if float_values is None else float_values[name])

        opset = dict(graph.opset_imports).get("")
        names = list(dict.fromkeys([*observers, *(s.layer.data.name for s in stats.values())]))
        run_calibration(graph, data, names, on_sample, engine=engine, progress=self.progress, opset=opset,
                        float_runner=float_runner)
        return observers, stats

    def _quantize_weight(self, graph: ir.Graph, layer: Layer, spec: QuantSpec, config: QuantConfig,
                         stats: LayerStats) -> dict[str, Any]:
        w = const_array(layer.weight).astype(np.float64)
        label = f"{layer.name} ({layer.weight.name})"
        candidates = [weight_params(w, spec, layer.channel_axis, name=label)]
        if spec.bits <= GPTQ_MAX_BITS and config.rounding == "auto":
            # error-compensating rounding often prefers a wider grid than the observer's: let the
            # layer's output error on calibration data decide among a few clipping ratios
            minmax = replace(spec, observer="minmax")
            candidates += [weight_params(w, minmax, layer.channel_axis, label, clip) for clip in CLIP_RATIOS]
        w_hat, qp, method = round_weight(layer, w, candidates, stats, config.rounding)
        corrected = False
        if config.bias_correction and layer.kind in ("conv", "gemm"):
            bias = const_array(layer.bias)
            set_bias(graph, layer, bias_correction(layer, w, w_hat, bias, stats))
            corrected = True
        quantize_weight(graph, layer, w_hat, qp)
        return {"kind": layer.kind, "weight_bits": spec.bits, "granularity": spec.granularity,
                "rounding": method, "clipped": qp is candidates[0] and spec.observer_name != "minmax",
                "bias_correction": corrected}

    def _quantize_activations(self, graph: ir.Graph, layers: list[tuple[Layer, tuple[QuantSpec, QuantSpec]]],
                              observers: dict[str, Observer]) -> None:
        uses: dict[str, tuple[ir.Value, QuantSpec, list[tuple[ir.Node, int]]]] = {}
        kinds = {id(layer.node): layer.kind for layer, _ in layers}
        for layer, (_wspec, aspec) in layers:
            for index, value in enumerate(_activation_inputs(layer)):
                entry = uses.setdefault(value.name, (value, aspec, []))
                entry[2].append((layer.node, index))
                if aspec.bits > entry[1].bits:  # a value feeding layers of different bits gets the widest
                    uses[value.name] = (value, aspec, entry[2])
        for name, (value, spec, consumers) in uses.items():
            earlier = next((use.node for use in value.uses() if use.node.op_type == "Quant"), None)
            if earlier is not None:  # quantized in an earlier stage for another layer: share it
                for node, index in consumers:
                    node.replace_input_with(index, earlier.outputs[0])
            else:
                quantize_activation(graph, value, observers[name].params(spec), consumers)
            for node, _ in consumers:
                self.report.layers.setdefault(node.name, {"kind": kinds[id(node)]})["activation_bits"] = spec.bits


def _stages(graph: ir.Graph, layers: list[Layer]) -> list[list[int]]:
    """Group layer indices into stages: a layer's stage is the number of quantized layers on
    the longest path from the graph inputs to its data input."""
    index = {id(layer.node): i for i, layer in enumerate(layers)}
    depth: dict[int, int] = {}
    stage_of: dict[int, int] = {}
    for node in graph:
        d = max((depth.get(id(v), 0) for v in node.inputs if v is not None), default=0)
        if id(node) in index:
            stage_of[index[id(node)]] = d
            d += 1
        for out in node.outputs:
            depth[id(out)] = d
    stages: dict[int, list[int]] = {}
    for i in range(len(layers)):
        stages.setdefault(stage_of[i], []).append(i)
    return [stages[k] for k in sorted(stages)]


def _residual_adds(graph: ir.Graph, layers: list[tuple[Layer, tuple[QuantSpec, QuantSpec]]]
                   ) -> list[tuple[Layer, tuple[QuantSpec, QuantSpec]]]:
    """Adds of two float activations of one shape (residual connections) whose result, directly
    or through a Relu/Clip, is a quantized layer's input, as layers of kind "add" with that
    layer's specs: quantizing both operands lets lower-quant run the add (IntegerAdd) and the
    layers that feed it in integers."""
    specs_by_input = {}
    for layer, specs in layers:
        for value in _activation_inputs(layer):
            specs_by_input.setdefault(id(value), specs)
    found = []
    for node in graph:
        if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
            continue
        a, b = node.inputs
        if any(v is None or v.const_value is not None or v.dtype != ir.DataType.FLOAT or v.shape is None
               for v in (a, b)) or list(a.shape) != list(b.shape):
            continue
        out = node.outputs[0]
        users = [use.node for use in out.uses()]
        if len(users) == 1 and users[0].op_type in ("Relu", "Clip") and users[0].domain in ("", "ai.onnx"):
            out = users[0].outputs[0]
        specs = specs_by_input.get(id(out))
        if specs is not None:
            found.append((Layer(node, "add", a, None, None, -1), specs))
    return found


def _activation_inputs(layer: Layer) -> list[ir.Value]:
    if layer.kind in ("matmul_act", "add"):
        return [layer.node.inputs[0], layer.node.inputs[1]]
    return [layer.data]


def _select_layers(graph: ir.Graph, config: QuantConfig) -> list[tuple[Layer, tuple[QuantSpec, QuantSpec]]]:
    found = find_layers(graph)
    unmatched = config.unmatched_rules([layer.name for layer in found])
    if unmatched:
        logger.warning("quantization config: these layer patterns match no layer: %s (layers: %s)",
                       ", ".join(unmatched), ", ".join(layer.name for layer in found))
    selected = []
    for layer in found:
        specs = config.specs_for(layer.name)
        if specs is not None and not (config.weight_only and layer.weight is None):
            selected.append((layer, specs))
    return selected


def _check_weights(layers: list[tuple[Layer, tuple[QuantSpec, QuantSpec]]]) -> None:
    for layer, (wspec, _) in layers:
        if layer.weight is None:
            continue
        w = const_array(layer.weight)
        if not np.all(np.isfinite(w)):
            raise QuantizationError(f"layer {layer.name!r}: weight {layer.weight.name!r} holds NaN or Inf")
        if wspec.granularity == "per_channel" and wspec.axis is not None and not -w.ndim <= wspec.axis < w.ndim:
            raise QuantizationError(
                f"layer {layer.name!r}: per-channel axis {wspec.axis} does not exist for its weight of shape {list(w.shape)}"
            )
        bias = const_array(layer.bias)
        if bias is not None and not np.all(np.isfinite(bias)):
            raise QuantizationError(f"layer {layer.name!r}: bias {layer.bias.name!r} holds NaN or Inf")


def _copy_graph(graph: ir.Graph) -> ir.Graph:
    model = ir.Model(graph, ir_version=10)
    return ir.serde.deserialize_model(ir.serde.serialize_model(model)).graph


def _remove_unused_initializers(graph: ir.Graph) -> None:
    outputs = {id(v) for v in graph.outputs}
    inputs = {id(v) for v in graph.inputs}
    for name, value in list(graph.initializers.items()):
        if not value.uses() and id(value) not in outputs and id(value) not in inputs:
            del graph.initializers[name]
