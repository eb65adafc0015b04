"""NumPy kernels of the QONNX quantization ops `Quant` (alias `IntQuant`), `BipolarQuant`
and `Trunc`, following qonnx's `custom_op/general` reference implementations operation by
operation (so results are bit-identical), registered for the domains QONNX models use.

Quant:  y = x/scale + zero_point → clamp to [min_int, max_int] → round → (y − zero_point)·scale
(1-bit signed Quant maps y ≥ 0 to +1 and the rest to −1, as qonnx does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from onnx.reference.op_run import OpRun

from mlpc.errors import QuantizationError

logger = logging.getLogger(__name__)

QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general")


def _round_up(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.ceil(np.abs(x))


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _round_half_down(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.ceil(np.abs(x) - 0.5)


ROUNDING_MODES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "ROUND": np.round,  # half to even
    "HALF_EVEN": np.round,
    "CEIL": np.ceil,
    "FLOOR": np.floor,
    "UP": _round_up,  # away from zero
    "DOWN": np.fix,  # toward zero
    "ROUND_TO_ZERO": np.fix,
    "HALF_UP": _round_half_up,  # halves away from zero
    "HALF_DOWN": _round_half_down,  # halves toward zero
}


def rounding_function(mode: str) -> Callable[[np.ndarray], np.ndarray]:
    """The numpy rounding function of a QONNX rounding_mode string (case-insensitive)."""
    fn = ROUNDING_MODES.get(str(mode).upper())
    if fn is None:
        raise QuantizationError(f"unknown rounding_mode {mode!r}; use one of {', '.join(ROUNDING_MODES)}")
    return fn


def min_int(signed: Any, narrow: Any, bits: Any) -> Any:
    """Smallest integer of a `bits`-bit quantizer (QONNX convention)."""
    if signed and narrow:
        return -(2 ** (bits - 1)) + 1
    if signed:
        return -(2 ** (bits - 1))
    return 0 * bits


def max_int(signed: Any, narrow: Any, bits: Any) -> Any:
    """Largest integer of a `bits`-bit quantizer (narrow unsigned loses the top value)."""
    if not signed and not narrow:
        return 2**bits - 1
    if not signed:
        return 2**bits - 2
    return 2 ** (bits - 1) - 1


def _clamp(y: np.ndarray, lo: Any, hi: Any) -> np.ndarray:
    y = np.where(y > hi, np.asarray(hi).astype(y.dtype), y)
    return np.where(y < lo, np.asarray(lo).astype(y.dtype), y)


def quant(
    x: np.ndarray,
    scale: Any,
    zero_point: Any,
    bitwidth: Any,
    signed: int,
    narrow: int,
    rounding_mode: str = "ROUND",
) -> np.ndarray:
    """QONNX Quant on numpy arrays; returns float32."""
    y = x / scale + zero_point
    if np.all(bitwidth == 1) and signed:
        y = np.where(y >= 0.0, np.ones_like(y), -np.ones_like(y))
    else:
        y = _clamp(y, min_int(signed, narrow, bitwidth), max_int(signed, narrow, bitwidth))
        y = rounding_function(rounding_mode)(y)
    return np.asarray((y - zero_point) * scale, dtype=np.float32)


def bipolar_quant(x: np.ndarray, scale: Any) -> np.ndarray:
    """QONNX BipolarQuant: sign (with sign(0) = +1) times scale."""
    y = np.where(x >= 0.0, np.ones_like(x), -np.ones_like(x))
    return np.asarray(y * scale)


def trunc(
    x: np.ndarray, scale: Any, zero_point: Any, in_bits: Any, out_bits: Any, rounding_mode: str = "FLOOR"
) -> np.ndarray:
    """QONNX Trunc with 5 inputs: drop the low (in_bits − out_bits) bits."""
    y = np.round(x / scale + zero_point)
    y = rounding_function(rounding_mode)(y / 2.0 ** (in_bits - out_bits))
    return (y - zero_point) * scale


def trunc_v2(
    x: np.ndarray,
    scale: Any,
    zero_point: Any,
    out_scale: Any,
    out_bits: Any,
    signed: int = 1,
    narrow: int = 0,
    rounding_mode: str = "FLOOR",
) -> np.ndarray:
    """QONNX Trunc with 7 inputs: rescale by the power of two nearest out_scale/scale, clamp to
    out_bits, round, and express in out_scale."""
    y = np.round(x / scale + zero_point)
    trunc_scale = 2 ** np.round(np.log2(out_scale / scale))
    y = _clamp(y / trunc_scale, min_int(signed, narrow, out_bits), max_int(signed, narrow, out_bits))
    y = rounding_function(rounding_mode)(y)
    return (y - zero_point / trunc_scale) * out_scale


def _required(node_name: str, op: str, attrs: dict[str, Any], name: str) -> Any:
    if name not in attrs:
        raise QuantizationError(f"{op} node {node_name!r} lacks the required attribute {name!r}")
    return attrs[name]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class _QuantKernel(OpRun):
    def _run(self, x, scale, zero_point, bitwidth, **attrs):  # type: ignore[override]
        name = self.onnx_node.name
        signed = _required(name, "Quant", attrs, "signed")
        narrow = _required(name, "Quant", attrs, "narrow")
        return (
            quant(x, scale, zero_point, bitwidth, signed, narrow, _text(attrs.get("rounding_mode", "ROUND"))),
        )


class _BipolarQuantKernel(OpRun):
    def _run(self, x, scale):  # type: ignore[override]
        return (bipolar_quant(x, scale),)


class _TruncKernel(OpRun):
    def _run(self, x, scale, zero_point, in_bits, *rest, **attrs):  # type: ignore[override]
        mode = _text(_required(self.onnx_node.name, "Trunc", attrs, "rounding_mode"))
        if len(rest) == 1:
            return (trunc(x, scale, zero_point, in_bits, rest[0], mode),)
        if len(rest) == 3:
            out_scale, _out_zero_point, out_bits = rest  # qonnx ignores the output zero point
            return (
                trunc_v2(
                    x,
                    scale,
                    zero_point,
                    out_scale,
                    out_bits,
                    attrs.get("signed", 1),
                    attrs.get("narrow", 0),
                    mode,
                ),
            )
        raise QuantizationError(
            f"Trunc node {self.onnx_node.name!r} has {4 + len(rest)} inputs; expected 5 or 7"
        )


def qonnx_kernels() -> list[type[OpRun]]:
    """OpRun classes of Quant, IntQuant, BipolarQuant and Trunc for every QONNX domain."""
    out = []
    for domain in QONNX_DOMAINS:
        for name, base in (
            ("Quant", _QuantKernel),
            ("IntQuant", _QuantKernel),
            ("BipolarQuant", _BipolarQuantKernel),
            ("Trunc", _TruncKernel),
        ):
            out.append(type(name, (base,), {"op_domain": domain, "__module__": __name__}))
    return out
