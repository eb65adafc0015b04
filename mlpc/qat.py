"""Quantization-aware training with Brevitas: prepare a model, train it briefly, export QONNX.

    >>> import mlpc
    >>> qnet = mlpc.qat.prepare(net, bits=2, calibration=x_train[:256])   # or {"conv1": 8, "*": 2}
    >>> mlpc.qat.train(qnet, x_train, y_train, epochs=5)          # a short fine-tuning loop
    >>> mlpc.qat.export(qnet, "net_qonnx.onnx", example_input=x_train[:1])
    >>> mlpc.compile("net_qonnx.onnx", target="x86")               # the integer build  # doctest: +SKIP

`prepare` takes a torch.nn.Module, or an ONNX model (path, ModelProto, onnx_ir.Model) which it
converts with `mlpc.ir.to_torch` first. It swaps every nn.Conv1d/Conv2d and nn.Linear for
Brevitas' QuantConv1d/QuantConv2d/QuantLinear (weights symmetric, per output channel, narrow
range, at the layer's bits; the float weights copied over) and every nn.ReLU module for
QuantReLU (unsigned activations at `act_bits`), and quantizes the model input with a
QuantIdentity, so the exported graph is integer end to end. ReLUs written as functions
(`torch.relu(x)` inside a forward) cannot be swapped: use nn.ReLU modules.

`bits` is an int (every layer), a dict of layer name or glob → bits (names are module paths, or
ONNX node names for a converted ONNX model; layers no key matches keep 8 bits), or a
`MixedPrecisionResult` from `mlpc.mixed_precision`.
"""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path
from typing import Any

import numpy as np

from mlpc.errors import ExportError, InputError, QuantizationError

logger = logging.getLogger(__name__)

DEFAULT_BITS = 8


def _bits_for(bits: Any, names: list[str]) -> dict[str, int]:
    if isinstance(bits, int) and not isinstance(bits, bool):
        table = {name: bits for name in names}
    else:
        rules = dict(getattr(bits, "bits", bits))
        if not isinstance(rules, dict):
            raise InputError(
                f"qat.prepare: bits must be an int, a dict or a mixed-precision result, got {bits!r}"
            )
        table = {}
        for name in names:
            matched = [v for k, v in rules.items() if k == name or fnmatch.fnmatchcase(name, k)]
            table[name] = (
                int(rules[name]) if name in rules else (int(matched[-1]) if matched else DEFAULT_BITS)
            )
        unknown = [k for k in rules if not any(k == n or fnmatch.fnmatchcase(n, k) for n in names)]
        if unknown:
            raise InputError(f"qat.prepare: {unknown} match no Conv/Linear layer; layers: {names}")
    for name, b in table.items():
        if not 2 <= b <= 8:
            raise QuantizationError(f"qat.prepare: layer {name!r}: bits {b} outside 2..8")
    return table


def _swap(parent: Any, attr: str, new: Any) -> None:
    if isinstance(parent, dict):
        parent[attr] = new
    else:
        setattr(parent, attr, new)


def _quant_layer(layer: Any, bits: int) -> Any:
    import brevitas.nn as qnn
    import torch
    from brevitas.quant import Int8WeightPerChannelFloat

    common = {
        "weight_bit_width": bits,
        "weight_quant": Int8WeightPerChannelFloat,
        "weight_narrow_range": True,
        "bias": layer.bias is not None,
    }
    if isinstance(layer, torch.nn.Linear):
        new = qnn.QuantLinear(layer.in_features, layer.out_features, **common)
    else:
        cls = {torch.nn.Conv1d: qnn.QuantConv1d, torch.nn.Conv2d: qnn.QuantConv2d}.get(type(layer))
        if cls is None:
            raise QuantizationError(f"qat.prepare: {type(layer).__name__} has no Brevitas counterpart here")
        if isinstance(layer.padding, str):
            raise QuantizationError(
                f"qat.prepare: {type(layer).__name__} with padding={layer.padding!r} is not supported"
            )
        new = cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            **common,
        )
    with torch.no_grad():
        new.weight.copy_(layer.weight)
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    return new


class QatModel:  # documented stand-in; the real class is built lazily so torch loads on demand
    """A prepared model: `input_quant` (Brevitas QuantIdentity) then `net` (the swapped module)."""


def _wrapper_class() -> Any:
    import torch

    class QuantizedModel(torch.nn.Module):
        """Input quantizer + the module with Brevitas layers (what `prepare` returns)."""

        def __init__(self, net: Any, act_bits: int, layer_bits: dict[str, int]) -> None:
            super().__init__()
            import brevitas.nn as qnn

            self.input_quant = qnn.QuantIdentity(bit_width=act_bits, return_quant_tensor=False)
            self.net = net
            self.layer_bits = dict(layer_bits)

        def forward(self, x: Any) -> Any:
            return self.net(self.input_quant(x))

    return QuantizedModel


def prepare(
    module: Any, bits: Any = 8, act_bits: int = 8, *, calibration: Any = None, inplace: bool = False
) -> Any:
    """A copy of `module` (or the module itself with `inplace`) with Brevitas quant layers at
    `bits` (see the module doc). The returned module's `layer_bits` maps layer names to bits.
    With `calibration` (input samples) the activation ranges are calibrated on them first
    (`calibrate`); without it they start from Brevitas' defaults, which training then learns.

        >>> qnet = prepare(net, {"0": 8, "*": 2}, calibration=x_train[:256])  # doctest: +SKIP
    """
    import copy

    import torch

    if not 2 <= int(act_bits) <= 8:
        raise QuantizationError(f"qat.prepare: act_bits {act_bits} outside 2..8")
    names_map: dict[str, str] = {}
    if not isinstance(module, torch.nn.Module):
        from mlpc.ir.to_torch import to_torch
        from mlpc.mixed.sensitivity import prepare_graph

        module = to_torch(prepare_graph(module))
        names_map = dict(module.onnx_names)
        inplace = True
    elif hasattr(module, "onnx_names"):
        names_map = dict(module.onnx_names)
    net = module if inplace else copy.deepcopy(module)
    layers = {
        name: m
        for name, m in net.named_modules()
        if type(m) in (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)
    }
    if not layers:
        raise QuantizationError("qat.prepare: the module has no Conv1d/Conv2d/Linear layer")
    public = {name: names_map.get(name, name) for name in layers}
    table = _bits_for(bits, list(public.values()))
    import brevitas.nn as qnn

    for path, layer in list(net.named_modules()):
        if path == "":
            continue
        parent_path, _, attr = path.rpartition(".")
        parent = net.get_submodule(parent_path) if parent_path else net
        if path in layers:
            setattr(parent, attr, _quant_layer(layer, table[public[path]]))
        elif type(layer) is torch.nn.ReLU:
            setattr(parent, attr, qnn.QuantReLU(bit_width=act_bits, return_quant_tensor=False))
    if isinstance(net, torch.fx.GraphModule):
        net.recompile()
    wrapped = _wrapper_class()(net, act_bits, table)
    if calibration is not None:
        calibrate(wrapped, calibration)
    logger.info(
        "qat.prepare: %d layers at bits %s, activations %d-bit",
        len(table),
        sorted(set(table.values())),
        act_bits,
    )
    return wrapped


def calibrate(module: Any, x: Any, batch: int = 64) -> None:
    """Set the activation quantizers' ranges of a prepared model from the samples `x` (Brevitas'
    calibration mode: statistics collected with quantization off, then fixed). On a digits MLP,
    8-bit before any training: 69 % uncalibrated, 96.2 % calibrated (fp32 96.2 %)."""
    import torch
    from brevitas.graph.calibrate import calibration_mode

    xt = torch.as_tensor(np.asarray(x, np.float32))
    if len(xt) == 0:
        raise InputError("qat.calibrate: no calibration samples")
    module.eval()
    with torch.no_grad(), calibration_mode(module):
        for chunk in xt.split(batch):
            module(chunk)


def train(
    module: Any,
    x: Any,
    y: Any,
    *,
    epochs: int = 5,
    lr: float = 1e-3,
    batch: int = 64,
    seed: int = 0,
    weight_decay: float = 0.0,
    x_val: Any = None,
    y_val: Any = None,
) -> list[dict[str, float]]:
    """Fine-tune `module` (a prepared model) in place: Adam, cross-entropy, shuffled mini-batches
    (seeded), a cosine learning-rate decay over `epochs`. Returns per epoch the mean training
    loss and, with `x_val`/`y_val`, the validation accuracy (%).

        >>> history = train(qnet, x_train, y_train, epochs=5, x_val=x_test, y_val=y_test)  # doctest: +SKIP
    """
    import torch

    xt = torch.as_tensor(np.asarray(x, np.float32))
    yt = torch.as_tensor(np.asarray(y)).long()
    if len(xt) != len(yt) or len(xt) == 0:
        raise InputError(f"qat.train: {len(xt)} samples and {len(yt)} labels")
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs))
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        module.train()
        total, count = 0.0, 0
        for idx in torch.randperm(len(xt), generator=gen).split(batch):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        sched.step()
        row = {"epoch": epoch + 1, "loss": total / count}
        if x_val is not None:
            row["val_accuracy"] = accuracy(module, x_val, y_val)
        logger.info("qat epoch %d: %s", epoch + 1, row)
        history.append(row)
    module.eval()
    return history


def accuracy(module: Any, x: Any, y: Any, batch: int = 256) -> float:
    """Top-1 accuracy (%) of `module` on samples `x` with labels `y`, in eval mode."""
    import torch

    module.eval()
    xt = torch.as_tensor(np.asarray(x, np.float32))
    with torch.no_grad():
        pred = torch.cat([module(c).argmax(dim=1) for c in xt.split(batch)])
    return 100.0 * float((pred.numpy() == np.asarray(y)).mean())


def export(module: Any, path: str | Path, example_input: Any) -> Path:
    """Export a prepared model to QONNX (Brevitas' exporter, the legacy TorchScript tracer:
    torch ≥ 2.9 defaults to dynamo, which Brevitas' export handlers do not support) at batch 1
    of `example_input`'s shape; `mlpc compile` takes the file. Returns the path.

        >>> export(qnet, "q.onnx", x_train[:1])  # doctest: +SKIP
    """
    import torch

    try:
        from brevitas.export import export_qonnx
    except ImportError as e:
        raise ExportError(
            f"QONNX export needs brevitas and onnxoptimizer (pip install -r requirements.txt): {e}"
        ) from e
    x = torch.as_tensor(np.asarray(example_input, np.float32))[:1]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    try:
        export_qonnx(
            module,
            args=x,
            export_path=str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            opset_version=13,
        )
    except Exception as e:
        raise ExportError(f"QONNX export of the QAT model to {path} failed: {e}") from e
    logger.info("exported the QAT model to %s (QONNX)", path)
    return path
