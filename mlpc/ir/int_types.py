"""A qonnx-like vocabulary of small integer types: INT2…INT8, UINT2…UINT8, BIPOLAR, TERNARY.

>>> from mlpc.ir.int_types import INT4, int_type
>>> INT4.min(), INT4.max(), INT4.allowed(7), int_type("UINT3").max()
(-8, 7, True, 7)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mlpc.errors import QuantizationError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntType:
    """An integer type of `bits` bits; `kind` is "int" (two's complement or unsigned),
    "bipolar" (values −1 and +1 in one bit) or "ternary" (values −1, 0, +1 in two bits)."""

    name: str
    bits: int
    signed: bool
    kind: str = "int"

    def min(self) -> int:
        """The smallest representable value, e.g. INT4.min() == -8, UINT4.min() == 0."""
        if self.kind in ("bipolar", "ternary"):
            return -1
        return -(1 << (self.bits - 1)) if self.signed else 0

    def max(self) -> int:
        """The largest representable value, e.g. INT4.max() == 7, UINT4.max() == 15."""
        if self.kind in ("bipolar", "ternary"):
            return 1
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def allowed(self, x: object) -> bool:
        """True when every element of the scalar or array `x` is an integer value of this type
        (for BIPOLAR: only −1 and +1)."""
        a = np.asarray(x)
        if a.dtype == np.bool_ or not (
            np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
        ):
            return False
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            return False
        if self.kind == "bipolar":
            return bool(np.all((a == -1) | (a == 1)))
        return bool(np.all((a >= self.min()) & (a <= self.max())))

    def __str__(self) -> str:
        return self.name


def _int(bits: int, signed: bool) -> IntType:
    return IntType(("INT" if signed else "UINT") + str(bits), bits, signed)


INT2, INT3, INT4, INT5, INT6, INT7, INT8 = (_int(b, True) for b in range(2, 9))
UINT2, UINT3, UINT4, UINT5, UINT6, UINT7, UINT8 = (_int(b, False) for b in range(2, 9))
BIPOLAR = IntType("BIPOLAR", 1, True, "bipolar")
TERNARY = IntType("TERNARY", 2, True, "ternary")

INT_TYPES: dict[str, IntType] = {
    t.name: t
    for t in (
        INT2,
        INT3,
        INT4,
        INT5,
        INT6,
        INT7,
        INT8,
        UINT2,
        UINT3,
        UINT4,
        UINT5,
        UINT6,
        UINT7,
        UINT8,
        BIPOLAR,
        TERNARY,
    )
}


def int_type(name: str) -> IntType:
    """The IntType called `name` (case-insensitive), e.g. int_type("int4") is INT4.

    Raises QuantizationError listing the known names when `name` is unknown.
    """
    t = INT_TYPES.get(str(name).upper())
    if t is None:
        raise QuantizationError(f"unknown integer type {name!r}; use one of {', '.join(INT_TYPES)}")
    return t


def int_type_for(bits: int, signed: bool) -> IntType:
    """The IntType with `bits` bits and the given signedness (1 bit signed is BIPOLAR).

    Raises QuantizationError when no such type exists (e.g. 1-bit unsigned, 9 bits).
    """
    if bits == 1 and signed:
        return BIPOLAR
    return int_type(("INT" if signed else "UINT") + str(bits))
