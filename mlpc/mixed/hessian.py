"""HAWQ-V2's Hessian-aware sensitivity: the average Hessian trace of each layer's weights
(Hutchinson's estimator, Tr(H) ≈ E[vᵀHv] over Rademacher vectors v, with Hessian-vector products
by double backpropagation) and HAWQ-V3's perturbation Ω_i(b) = Tr(H_i)/n_i · ‖Q_b(W_i) − W_i‖².

Works on torch modules (Conv1d/2d/3d and Linear layers, named by module path) and on ONNX models
through `mlpc.ir.to_torch` (layers named by ONNX node, as the quantize pass names them). The
loss is cross-entropy against `labels`, or against the float model's own predictions when no
labels are given (for classifiers; other models use the squared distance to the float outputs,
whose Hessian at the float weights is the Gauss–Newton matrix).

    >>> sens = hessian_sensitivity(net, x_calib, labels=y_calib, bits=(2, 4, 8))  # doctest: +SKIP
    >>> sens.trace["conv1"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mlpc.errors import InputError, QuantizationError
from mlpc.mixed.layers import DEFAULT_BITS, LayerInfo, check_bits, fake_quant_weight
from mlpc.mixed.sensitivity import Sensitivity

logger = logging.getLogger(__name__)

DEFAULT_ITERS = 64
BATCH = 64


def torch_layers(module: Any) -> dict[str, Any]:
    """The Conv1d/2d/3d and Linear submodules of `module` by module path (Brevitas' quant layers
    subclass these and are included)."""
    import torch

    kinds = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)
    return {name: m for name, m in module.named_modules() if isinstance(m, kinds)}


def _macs(module: Any, layers: dict[str, Any], x: Any) -> dict[str, int]:
    """MACs per sample of each layer, from one forward pass of the first sample."""
    import torch

    macs: dict[str, int] = {}
    hooks = []
    for name, layer in layers.items():

        def hook(mod: Any, args: Any, out: Any, name: str = name) -> None:
            macs[name] = int(out[0].numel() * mod.weight[0].numel())  # outputs × MACs per output

        hooks.append(layer.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return macs


def hutchinson_traces(
    module: Any,
    layers: dict[str, Any],
    x: Any,
    targets: Any,
    loss: str,
    iters: int = DEFAULT_ITERS,
    seed: int = 0,
    batch: int = BATCH,
) -> dict[str, float]:
    """Tr(H_i) / n_i for each layer's weight: the mean of vᵀHv over `iters` Rademacher vectors,
    H the Hessian of the mean `loss` ("ce" against integer `targets`, "mse" against float
    `targets`) over the samples `x`, accumulated in mini-batches of `batch`."""
    import torch

    params = [layers[name].weight for name in layers]
    gen = torch.Generator().manual_seed(seed)
    sums = np.zeros(len(params))
    chunks = list(zip(x.split(batch), targets.split(batch)))
    was_training = module.training
    module.eval()
    try:
        for _ in range(iters):
            vs = [torch.randint(0, 2, p.shape, generator=gen).to(p.dtype) * 2 - 1 for p in params]
            hv_total = [torch.zeros_like(p) for p in params]
            for xb, tb in chunks:
                out = module(xb)
                if loss == "ce":
                    value = torch.nn.functional.cross_entropy(out, tb, reduction="sum") / len(x)
                else:
                    value = torch.nn.functional.mse_loss(out, tb, reduction="sum") / len(x)
                grads = torch.autograd.grad(value, params, create_graph=True)
                hv = torch.autograd.grad(grads, params, grad_outputs=vs)
                for acc, h in zip(hv_total, hv):
                    acc += h.detach()
            for i, (v, hv) in enumerate(zip(vs, hv_total)):
                sums[i] += float((v * hv).sum())
    finally:
        module.train(was_training)
    return {name: sums[i] / iters / params[i].numel() for i, name in enumerate(layers)}


def _as_tensor(data: Any, what: str) -> Any:
    import torch

    if isinstance(data, torch.Tensor):
        return data.detach().float()
    if isinstance(data, dict):
        if len(data) != 1:
            raise InputError(f"{what}: a torch module takes one input; give one array, not {sorted(data)}")
        data = next(iter(data.values()))
    try:
        return torch.from_numpy(np.ascontiguousarray(np.asarray(data, np.float32)))
    except (TypeError, ValueError) as e:
        raise InputError(f"{what}: expected an array of input samples ({e})") from e


def hessian_sensitivity(
    model: Any,
    calibration: Any,
    *,
    labels: Any = None,
    bits: Any = DEFAULT_BITS,
    samples: int | None = 64,
    iters: int = DEFAULT_ITERS,
    seed: int = 0,
    input_shapes: Any = None,
    example_inputs: Any = None,
) -> Sensitivity:
    """Hessian-aware sensitivity (see the module doc) of a torch.nn.Module (calibration: an array
    or tensor of input samples, first axis = samples) or an ONNX model (.onnx, ModelProto,
    onnx_ir.Model; calibration as for `mlpc.quantize`), on the first `samples` samples.

        >>> sens = hessian_sensitivity("m.onnx", "calib.npz", bits=(2, 4, 8))  # doctest: +SKIP
    """
    import torch

    candidates = check_bits(bits)
    if isinstance(model, torch.nn.Module):
        module = model
        x = _as_tensor(calibration, "calibration")
        if samples is not None:
            x = x[:samples]
        layers = torch_layers(module)
        names = {name: name for name in layers}
        in_layers = {id(p) for m in layers.values() for p in m.parameters(recurse=False)}
        other = sum(p.numel() for p in module.parameters() if id(p) not in in_layers)
        other += sum(
            b.numel() for n, b in module.named_buffers() if b.is_floating_point() and "running" not in n
        )
    else:
        from mlpc.ir.to_torch import to_torch
        from mlpc.mixed.layers import onnx_layers
        from mlpc.mixed.sensitivity import prepare_graph
        from mlpc.quant.calibration import CalibrationSet

        ir_model = prepare_graph(model, input_shapes, example_inputs)
        infos, other = onnx_layers(ir_model.graph)
        module = to_torch(ir_model)
        data = CalibrationSet.load(calibration, ir_model.graph, limit=samples)
        if len(module.input_names) != 1:
            raise QuantizationError(
                "Hessian sensitivity of an ONNX model supports one input; use --method data"
            )
        x = torch.from_numpy(
            np.concatenate([s[module.input_names[0]] for s in data.samples]).astype(np.float32)
        )
        by_node = {v: k for k, v in module.onnx_names.items()}
        layers = {i.name: module.get_submodule(by_node[i.name]) for i in infos}
        names = {i.name: i.name for i in infos}
    if not layers:
        raise QuantizationError("the model has no Conv/Linear layer: nothing to allocate bits to")
    with torch.no_grad():
        out = module(x)
    if isinstance(out, (tuple, list)):
        raise QuantizationError("Hessian sensitivity needs a model with one output; use --method data")
    if labels is not None:
        targets, loss = torch.as_tensor(np.asarray(labels)[: len(x)]).long(), "ce"
        if len(targets) != len(x):
            raise InputError(f"--labels: {len(targets)} labels for {len(x)} samples")
    elif out.dim() == 2:
        targets, loss = out.argmax(dim=1), "ce"
    else:
        targets, loss = out.detach(), "mse"
    traces = hutchinson_traces(module, layers, x, targets, loss, iters, seed)
    if isinstance(model, torch.nn.Module):
        macs = _macs(module, layers, x)
        infos = []
        for name, layer in layers.items():
            kind = "linear" if isinstance(layer, torch.nn.Linear) else "conv"
            sig = {"op": type(layer).__name__, "input_shape": None, "weight_shape": list(layer.weight.shape)}
            infos.append(
                LayerInfo(
                    name,
                    kind,
                    layer.weight.numel(),
                    0 if layer.bias is None else layer.bias.numel(),
                    macs.get(name, 0),
                    sig,
                )
            )
    omega: dict[str, dict[int, float]] = {}
    for info in infos:
        w = layers[names[info.name]].weight.detach().double().numpy()
        omega[info.name] = {
            b: max(traces[info.name], 0.0) * float(np.sum((fake_quant_weight(w, b, 0) - w) ** 2))
            for b in candidates
        }
    logger.info(
        "Hessian sensitivity of %d layers (%d Hutchinson iterations, %d samples, %s loss)",
        len(infos),
        iters,
        len(x),
        loss,
    )
    return Sensitivity(
        "hessian",
        f"trace/n·‖ΔW‖² ({loss})",
        candidates,
        infos,
        omega,
        int(other),
        len(x),
        trace={i.name: traces[i.name] for i in infos},
        extra={"iterations": iters},
    )
