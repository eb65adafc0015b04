"""The layers mixed precision allocates bits to, and what each costs at a given bit width.

A `LayerInfo` is one Conv/Gemm/MatMul with a constant weight (an ONNX node, or a torch
Conv/Linear module): its weight elements, bias elements, multiply-accumulates per inference and
the shapes a single-layer latency measurement needs. Sizes and BOPs follow HAWQ-V3, with the
weights counted as mlpc stores them: size_i(b) = ⌈n_i·s(b)/8⌉ + 4·bias_i bytes, s(b) the storage
slot of a b-bit weight (2 → 2, 3 and 4 → 4, 5–8 → 8: four 2-bit or two 4-bit values per byte, as
backends/tvm/packing.py packs them; `slots=None` gives HAWQ's ideal s(b) = b), and
BOPs_i(b) = MACs_i · b · a (a = activation bits).

    >>> info = LayerInfo("fc1", "gemm", params=4096, bias=64, macs=4096)
    >>> info.size_bytes(4), info.size_bytes(3), info.size_bytes(3, slots=None), info.bops(4, 8)
    (2304, 2304, 1792, 131072)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mlpc.errors import QuantizationError

logger = logging.getLogger(__name__)

DEFAULT_BITS = (2, 3, 4, 8)
# The slot widths mlpc's integer kernels store weights in (backends/tvm/packing.py, ops_integer.py).
STORAGE_SLOTS = (2, 4, 8)


def target_bits(kind: str) -> tuple[int, ...]:
    """The candidate weight widths worth choosing on a target kind: on CPUs and GPUs a weight runs
    in a storage slot (`STORAGE_SLOTS`), so a 3-bit one costs what a 4-bit one costs and only
    loses accuracy; other targets (FPGA dataflow) pay per bit.

    >>> target_bits("x86"), target_bits("fpga")
    ((2, 4, 8), (2, 3, 4, 8))
    """
    return STORAGE_SLOTS if kind in ("x86", "arm", "cuda") else DEFAULT_BITS


def storage_bits(bits: int, slots: tuple[int, ...] | None = STORAGE_SLOTS) -> int:
    """Bits a `bits`-bit weight occupies when stored: the smallest slot that holds it (`bits`
    itself when `slots` is None).

    >>> storage_bits(3), storage_bits(5), storage_bits(3, None)
    (4, 8, 3)
    """
    if slots is None:
        return bits
    return min(s for s in slots if s >= bits)


@dataclass(frozen=True)
class LayerInfo:
    """One quantizable layer: `name` (ONNX node name or torch module path), `kind` ("conv",
    "gemm", "matmul", "linear"), weight elements `params`, bias elements `bias`, `macs` per
    inference, and for latency measurement the `op` description (`signature`: a JSON-ready dict
    of op type, attributes, input and weight shapes)."""

    name: str
    kind: str
    params: int
    bias: int = 0
    macs: int = 0
    signature: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def size_bytes(self, bits: int, slots: tuple[int, ...] | None = STORAGE_SLOTS) -> int:
        """Bytes of this layer's weights at `bits` as stored (see `storage_bits`) plus its float32 bias."""
        return -(-self.params * storage_bits(bits, slots) // 8) + 4 * self.bias

    def bops(self, bits: int, act_bits: int = 8) -> int:
        """Bit operations per inference: MACs × weight bits × activation bits."""
        return self.macs * bits * act_bits

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LayerInfo:
        """Inverse of `to_json`."""
        return cls(**data)


def check_bits(bits: Any) -> tuple[int, ...]:
    """Candidate bit widths as a sorted tuple of distinct ints in 2..8; QuantizationError otherwise.

    >>> check_bits([8, 4, 2])
    (2, 4, 8)
    """
    try:
        values = tuple(sorted({int(b) for b in bits}))
    except (TypeError, ValueError) as e:
        raise QuantizationError(f"candidate bits {bits!r} must be integers in 2..8, e.g. 2,3,4,8") from e
    if not values or any(not 2 <= b <= 8 for b in values):
        raise QuantizationError(f"candidate bits {list(values)} must be integers in 2..8, e.g. 2,3,4,8")
    return values


def fake_quant_weight(w: np.ndarray, bits: int, channel_axis: int = 0) -> np.ndarray:
    """Q_b(W): the weight quantized and dequantized as mlpc's quantize pass does by default
    (symmetric, per output channel, narrow range; the MSE-optimal clip below 8 bits, min-max at 8),
    with round-to-nearest (the pass may round better: GPTQ, bias correction).

        >>> w = np.array([[0.5, -1.0, 0.25]])
        >>> fake_quant_weight(w, 8).round(3).tolist()
        [[0.504, -1.0, 0.252]]
    """
    from dataclasses import replace

    from mlpc.quant.observers import weight_params
    from mlpc.quant.scheme import DEFAULT_WEIGHT

    qp = weight_params(np.asarray(w, np.float64), replace(DEFAULT_WEIGHT, bits=bits), channel_axis)
    return qp.dequantize(qp.quantize(np.asarray(w, np.float64)), np.float64)


def onnx_layers(graph: Any) -> tuple[list[LayerInfo], int]:
    """The weight layers of an onnx-ir Graph (after shape inference) as LayerInfo, in graph order,
    and the number of other float parameters (initializers no layer quantizes), which stay float32.

    Layers are those `mlpc.quant.layers.find_layers` lists with a weight (what the quantize pass
    quantizes); MatMuls of two activations carry no weight and are left out.
    """
    from mlpc.analysis import node_macs
    from mlpc.quant.layers import const_array, find_layers

    layers = []
    used: set[str] = set()
    for layer in find_layers(graph):
        if layer.weight is None:
            continue
        w = const_array(layer.weight)
        b = const_array(layer.bias)
        node = layer.node
        x_shape = list(layer.data.shape.dims) if layer.data.shape is not None else None
        attrs = {}
        for name, attr in node.attributes.items():
            value = attr.value
            attrs[name] = list(value) if isinstance(value, (list, tuple)) else value
        signature = {
            "op": node.op_type,
            "attributes": attrs,
            "input_shape": x_shape,
            "weight_shape": list(w.shape),
            "bias": b is not None,
        }
        layers.append(
            LayerInfo(
                layer.name,
                layer.kind,
                int(w.size),
                0 if b is None else int(b.size),
                node_macs(node),
                signature,
            )
        )
        used.add(layer.weight.name)
        if layer.bias is not None:
            used.add(layer.bias.name)
    other = 0
    for name, value in graph.initializers.items():
        if (
            name not in used
            and value.const_value is not None
            and value.dtype is not None
            and value.dtype.is_floating_point()
        ):
            other += int(np.prod(value.const_value.shape.numpy()))
    return layers, other


def fp32_bytes(layers: list[LayerInfo], other_params: int) -> int:
    """Bytes of the float32 model: every weight, bias and other parameter at 4 bytes."""
    return 4 * (sum(layer.params + layer.bias for layer in layers) + other_params)
