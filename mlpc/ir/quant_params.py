"""Quantization parameters carried on onnx-ir values, and the integer arithmetic they imply.

    q  = clamp(round_half_even(x / scale) + zero_point, qmin, qmax)
    x̂  = (q − zero_point) · scale

per tensor (`axis=None`) or per channel along `axis`. This is ONNX QuantizeLinear's formula;
QONNX `Quant` adds the zero point before rounding, which differs only on exact ties with an
odd zero point (the evaluator's Quant kernel follows QONNX exactly). Ranges follow QONNX:
`narrow_range` raises qmin by one when signed and lowers qmax by one when unsigned.

    >>> qp = QuantParams(bits=4, signed=True, scale=0.5)
    >>> qp.quantize(np.array([0.3, -9.0])).tolist(), (qp.qmin, qp.qmax)
    ([1, -8], (-8, 7))
    >>> set_quant(value, qp); get_quant(value) == qp
    True
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from mlpc.errors import QuantizationError
from mlpc.ir.int_types import IntType, int_type_for

logger = logging.getLogger(__name__)

QUANT_METADATA_KEY = "mlpc.quant"
SCALE_KINDS = ("float", "po2", "dyadic")
# Largest right shift the int64 requantization arithmetic allows: |acc·m| < 2**62 for int32s.
MAX_SHIFT = 62


def _as_scale(scale: Any) -> float | np.ndarray:
    a = np.asarray(scale, dtype=np.float64)
    if a.ndim == 0:
        return float(a)
    if a.ndim != 1 or a.size == 0:
        raise QuantizationError(f"scale must be a scalar or a non-empty 1-D array, got shape {a.shape}")
    a = a.copy()
    a.flags.writeable = False
    return a


def _as_zero_point(zero_point: Any) -> int | np.ndarray:
    a = np.asarray(zero_point)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)) or a.dtype == np.bool_:
        raise QuantizationError(f"zero_point must be an integer or integer array, got {zero_point!r}")
    if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
        raise QuantizationError(f"zero_point must hold integer values, got {zero_point!r}")
    a = a.astype(np.int64)
    if a.ndim == 0:
        return int(a)
    if a.ndim != 1 or a.size == 0:
        raise QuantizationError(f"zero_point must be a scalar or a non-empty 1-D array, got shape {a.shape}")
    a.flags.writeable = False
    return a


def _along(a: float | np.ndarray, ndim: int, axis: int | None) -> Any:
    """Reshape a per-channel 1-D array so it broadcasts along `axis` of an `ndim`-D tensor."""
    if axis is None or np.ndim(a) == 0:
        return a
    shape = [1] * ndim
    shape[axis] = np.size(a)
    return np.reshape(a, shape)


@dataclass(frozen=True, eq=False)
class QuantParams:
    """How a tensor is quantized: `bits` (2–8, or 1 for BIPOLAR = signed 1-bit), `signed`,
    `scale` (float, or 1-D array for per channel), `zero_point` (int or 1-D array), `axis`
    (None = per tensor), `narrow_range`, and `scale_kind` ("float", "po2" = every scale a
    power of two, "dyadic" = every scale exactly m·2^−s with m an int32).

    Invalid parameters raise QuantizationError when constructed.

        >>> QuantParams(bits=8, signed=False, scale=np.array([0.1, 0.2]), zero_point=128, axis=0)
    """

    bits: int
    signed: bool = True
    scale: float | np.ndarray = 1.0
    zero_point: int | np.ndarray = 0
    axis: int | None = None
    narrow_range: bool = False
    scale_kind: str = "float"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)):
            raise QuantizationError(f"bits must be an integer, got {self.bits!r}")
        object.__setattr__(self, "bits", int(self.bits))
        object.__setattr__(self, "signed", bool(self.signed))
        object.__setattr__(self, "narrow_range", bool(self.narrow_range))
        if not 1 <= self.bits <= 8:
            raise QuantizationError(f"bits={self.bits} is outside the supported range 1..8")
        if self.bits == 1 and not self.signed:
            raise QuantizationError("1-bit quantization must be signed (BIPOLAR, values ±1)")
        if self.bits == 1 and self.narrow_range:
            raise QuantizationError("narrow_range has no meaning for 1-bit (BIPOLAR) quantization")
        scale = _as_scale(self.scale)
        zero_point = _as_zero_point(self.zero_point)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zero_point)
        if not np.all(np.isfinite(scale)) or not np.all(np.asarray(scale) > 0):
            raise QuantizationError(f"scale must be positive and finite, got {self._fmt(scale)}")
        self._check_axis(scale, zero_point)
        zp = np.asarray(zero_point)
        if np.any(zp < self.qmin) or np.any(zp > self.qmax):
            raise QuantizationError(
                f"zero_point {self._fmt(zero_point)} is outside [{self.qmin}, {self.qmax}] "
                f"for {self.bits}-bit {'signed' if self.signed else 'unsigned'} quantization"
            )
        if self.bits == 1 and np.any(zp != 0):
            raise QuantizationError("1-bit (BIPOLAR) quantization needs zero_point 0")
        self._check_scale_kind(scale)

    @staticmethod
    def _fmt(a: Any) -> str:
        return str(np.asarray(a).tolist())

    def _check_axis(self, scale: float | np.ndarray, zero_point: int | np.ndarray) -> None:
        per_channel = isinstance(scale, np.ndarray) or isinstance(zero_point, np.ndarray)
        if self.axis is None:
            if per_channel:
                raise QuantizationError(
                    "per-channel scale/zero_point arrays need an axis; set axis= or pass scalars"
                )
            return
        if isinstance(self.axis, bool) or not isinstance(self.axis, (int, np.integer)):
            raise QuantizationError(f"axis must be an integer or None, got {self.axis!r}")
        object.__setattr__(self, "axis", int(self.axis))
        if not isinstance(scale, np.ndarray):
            raise QuantizationError(
                f"axis={self.axis} needs a per-channel 1-D scale array; use axis=None for a scalar scale"
            )
        if isinstance(zero_point, np.ndarray) and zero_point.size != scale.size:
            raise QuantizationError(
                f"per-channel zero_point has {zero_point.size} entries but scale has {scale.size}"
            )

    def _check_scale_kind(self, scale: float | np.ndarray) -> None:
        if self.scale_kind not in SCALE_KINDS:
            raise QuantizationError(f"scale_kind must be one of {SCALE_KINDS}, got {self.scale_kind!r}")
        flat = np.atleast_1d(np.asarray(scale))
        if self.scale_kind == "po2":
            exps = np.log2(flat)
            if not np.all(exps == np.round(exps)):
                raise QuantizationError(
                    f"scale_kind='po2' but scale {self._fmt(scale)} is not a power of two"
                )
        elif self.scale_kind == "dyadic":
            for s in flat:
                m, shift = dyadic(float(s))
                if math.ldexp(m, -shift) != s:
                    raise QuantizationError(
                        f"scale_kind='dyadic' but scale {s!r} is not exactly m·2^-s with an int32 m"
                    )

    @property
    def qmin(self) -> int:
        """Smallest quantized value (QONNX convention; −1 for BIPOLAR)."""
        if self.bits == 1:
            return -1
        if not self.signed:
            return 0
        return -(1 << (self.bits - 1)) + (1 if self.narrow_range else 0)

    @property
    def qmax(self) -> int:
        """Largest quantized value (QONNX convention: narrow unsigned loses the top value)."""
        if self.bits == 1:
            return 1
        if self.signed:
            return (1 << (self.bits - 1)) - 1
        return (1 << self.bits) - 1 - (1 if self.narrow_range else 0)

    @property
    def int_type(self) -> IntType:
        """The IntType of the quantized values (INT4, UINT8, BIPOLAR…), ignoring narrow range."""
        return int_type_for(self.bits, self.signed)

    @property
    def per_channel(self) -> bool:
        """True when the parameters vary along `axis`."""
        return self.axis is not None

    @property
    def channels(self) -> int | None:
        """Number of channels for per-channel parameters, None per tensor."""
        return int(np.size(self.scale)) if self.axis is not None else None

    def _broadcast(self, x: np.ndarray) -> tuple[Any, Any]:
        if self.axis is None:
            return self.scale, self.zero_point
        if not -x.ndim <= self.axis < x.ndim:
            raise QuantizationError(
                f"quantization axis {self.axis} is out of range for a rank-{x.ndim} tensor"
            )
        axis = self.axis % x.ndim
        if x.shape[axis] != self.channels:
            raise QuantizationError(
                f"tensor has {x.shape[axis]} channels on axis {self.axis} but the quantization "
                f"parameters have {self.channels}"
            )
        return _along(self.scale, x.ndim, axis), _along(self.zero_point, x.ndim, axis)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Quantize float `x` to integers (int8 when signed, uint8 when unsigned).

        Computes in x's float precision (float32 stays float32, as ONNX QuantizeLinear does).
        BIPOLAR maps x/scale >= 0 to +1 and the rest to −1.
        """
        x = np.asarray(x)
        ftype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
        x = x.astype(ftype, copy=False)
        if np.any(np.isnan(x)):
            raise QuantizationError("cannot quantize NaN values")
        scale, zp = self._broadcast(x)
        y = x / np.asarray(scale, dtype=ftype)
        out_type = np.int8 if self.signed else np.uint8
        if self.bits == 1:
            return np.where(y >= 0, 1, -1).astype(out_type)
        q = np.clip(np.rint(y) + zp, self.qmin, self.qmax)
        return q.astype(out_type)

    def dequantize(self, q: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """Map integers `q` back to floats: (q − zero_point) · scale, in `dtype` (float32 default)."""
        q = np.asarray(q)
        scale, zp = self._broadcast(q)
        return ((q.astype(np.int64) - zp) * np.asarray(scale, dtype=np.float64)).astype(dtype)

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-compatible dict (arrays become lists)."""

        def plain(v: Any) -> Any:
            return v.tolist() if isinstance(v, np.ndarray) else v

        return {
            "bits": self.bits,
            "signed": self.signed,
            "scale": plain(self.scale),
            "zero_point": plain(self.zero_point),
            "axis": self.axis,
            "narrow_range": self.narrow_range,
            "scale_kind": self.scale_kind,
        }

    def to_json(self) -> str:
        """The parameters as a JSON string; `QuantParams.from_json` reads it back exactly."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, data: str | dict[str, Any]) -> QuantParams:
        """Build QuantParams from `to_json()` output (a string or the decoded dict).

        Raises QuantizationError on malformed JSON, unknown keys or invalid values.
        """
        try:
            d = json.loads(data) if isinstance(data, str) else dict(data)
        except (TypeError, ValueError) as e:
            raise QuantizationError(f"quantization parameters are not valid JSON: {e}") from e
        if not isinstance(d, dict):
            raise QuantizationError(f"quantization parameters must be a JSON object, got {d!r}")
        try:
            return cls(**d)
        except TypeError as e:
            raise QuantizationError(f"bad quantization parameter keys {sorted(d)}: {e}") from e

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantParams):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())


def set_quant(value: ir.Value, qp: QuantParams | None) -> None:
    """Attach `qp` to `value` (as JSON in `value.metadata_props["mlpc.quant"]`, which survives
    serialization to ONNX); `qp=None` removes it."""
    if qp is None:
        value.metadata_props.pop(QUANT_METADATA_KEY, None)
    else:
        value.metadata_props[QUANT_METADATA_KEY] = qp.to_json()


def get_quant(value: ir.Value) -> QuantParams | None:
    """The QuantParams attached to `value`, or None. Raises QuantizationError naming the
    value when the stored parameters are malformed."""
    raw = value.metadata_props.get(QUANT_METADATA_KEY)
    if raw is None:
        return None
    try:
        return QuantParams.from_json(raw)
    except QuantizationError as e:
        raise QuantizationError(f"value {value.name!r}: {e}") from e


def dyadic(multiplier: float) -> tuple[int, int]:
    """Approximate a positive real `multiplier` as m·2^−shift with 0 < m < 2^31, shift in
    [0, 62], keeping 31 significant bits (HAWQ-V3's dyadic requantization).

        >>> dyadic(0.25)
        (1073741824, 32)

    Raises QuantizationError for non-positive, non-finite or too large (≥ 2^31) multipliers.
    Multipliers below 2^−31 lose precision (m shrinks; a tiny multiplier can give m = 0).
    """
    if not math.isfinite(multiplier) or multiplier <= 0:
        raise QuantizationError(f"requantization multiplier must be positive and finite, got {multiplier!r}")
    frac, exp = math.frexp(multiplier)  # multiplier = frac·2^exp, frac in [0.5, 1)
    m = round(frac * (1 << 31))
    shift = 31 - exp
    if m == 1 << 31:
        m //= 2
        shift -= 1
    if shift < 0:
        raise QuantizationError(
            f"requantization multiplier {multiplier!r} is too large for an int32 fixed-point form (max 2^31)"
        )
    if shift > MAX_SHIFT:
        m = round(math.ldexp(multiplier, MAX_SHIFT))
        shift = MAX_SHIFT
        logger.debug("multiplier %r below 2^-31: dyadic form keeps only %d", multiplier, m)
    return int(m), int(shift)


def requantize(
    acc: np.ndarray,
    m: int | np.ndarray,
    shift: int | np.ndarray,
    zero_point: int | np.ndarray,
    qmin: int,
    qmax: int,
    axis: int | None = None,
) -> np.ndarray:
    """Fixed-point requantization of int32 accumulators, in int64 arithmetic:

        q = clamp(((acc · m + 2^(shift−1)) >> shift) + zero_point, qmin, qmax)

    `>>` is an arithmetic shift, so adding 2^(shift−1) first rounds halves toward +∞
    (floor(acc·m·2^−shift + ½)); shift 0 adds nothing. `m`, `shift`, `zero_point` are scalars
    or 1-D per-channel arrays applied along `axis` (when None they broadcast as numpy does).
    Returns an int64 array of acc's shape.

        >>> requantize(np.array([100, -100]), *dyadic(0.05), 0, -128, 127).tolist()
        [5, -5]
    """
    acc = np.asarray(acc)
    if not np.issubdtype(acc.dtype, np.integer):
        raise QuantizationError(f"requantize needs integer accumulators, got {acc.dtype}")
    m = np.asarray(m, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    zp = np.asarray(zero_point, dtype=np.int64)
    if np.any(shift < 0) or np.any(shift > MAX_SHIFT):
        raise QuantizationError(f"requantize shift must be in [0, {MAX_SHIFT}], got {shift.tolist()}")
    if np.any(np.abs(m) >= 1 << 31):
        raise QuantizationError(f"requantize multiplier must fit in int32, got {m.tolist()}")
    if axis is not None:
        axis = axis % acc.ndim
        m, shift, zp = (_along(a, acc.ndim, axis) for a in (m, shift, zp))
    rounding = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    prod = acc.astype(np.int64) * m + rounding
    return np.clip(np.right_shift(prod, shift) + zp, qmin, qmax).astype(np.int64)
