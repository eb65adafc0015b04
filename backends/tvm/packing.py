"""Packed sub-byte integer weights: four 2-bit or two 4-bit slots per byte (3-bit values in
4-bit slots), low bits first, along the reduction axis; and their decoding inside TE computes."""
from __future__ import annotations

import math

import numpy as np
from tvm import te, tirx


def slot_bits(bits: int) -> int:
    """Bits of the slot a `bits`-bit value occupies in a packed byte (2 or 4)."""
    return 2 if bits <= 2 else 4


def pack_rows(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack int values `q` of shape (N, R) into uint8 (N, ceil(R / per)), `per` = 8 // slot
    values per byte, value r in bits [(r % per)·slot, …) of byte r // per (two's complement
    kept in the slot for signed values)."""
    slot = slot_bits(bits)
    per = 8 // slot
    n, r = q.shape
    padded = np.zeros((n, math.ceil(r / per) * per), np.uint8)
    padded[:, :r] = q.astype(np.int64) & ((1 << slot) - 1)
    lanes = padded.reshape(n, -1, per).astype(np.uint16) << (np.arange(per, dtype=np.uint16) * slot)
    return lanes.sum(axis=2).astype(np.uint8)


def decode(wp: te.Tensor, n, r, bits: int, signed: bool):
    """The int32 value at row n, reduction index r of a packed weight."""
    slot = slot_bits(bits)
    per = 8 // slot
    byte = wp[n, tirx.indexdiv(r, per)].astype("int32")
    v = tirx.bitwise_and(tirx.shift_right(byte, tirx.indexmod(r, per) * slot), (1 << slot) - 1)
    if signed:
        half = 1 << (slot - 1)
        v = tirx.bitwise_xor(v, half) - half
    return v
