"""The converter registry: which (domain, op_type) lowers to Relax, and how.

A converter is a function `(ctx, node, inputs) -> list[relax.Expr]` registered with

    @converter("Relu")
    def _relu(ctx, node, inputs):
        return [relax.op.nn.relu(inputs[0])]

`inputs` holds one Relax expression per ONNX input (None for an omitted optional input).
A converter may also register `check(node, opset) -> str | None` that returns why a node's
attributes or inputs are unsupported; `unsupported_nodes` reports those before lowering.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx_ir as ir

logger = logging.getLogger(__name__)

ConvertFn = Callable[..., list[Any]]
CheckFn = Callable[["ir.Node", int], "str | None"]

# The QONNX custom-op domains that carry the same `Quant`/`BipolarQuant`/`Trunc` ops.
QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general")


@dataclass(frozen=True)
class Converter:
    """One registered converter: the lowering function and an optional support check."""

    op_type: str
    domain: str
    fn: ConvertFn
    check: CheckFn | None = None


_REGISTRY: dict[tuple[str, str], Converter] = {}


def _normalize_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def converter(
    op_type: str, domain: str | Sequence[str] = "", *, check: CheckFn | None = None
) -> Callable[[ConvertFn], ConvertFn]:
    """Register the decorated function as the converter of `op_type` in `domain` (or each of several domains)."""
    domains = [domain] if isinstance(domain, str) else list(domain)

    def register(fn: ConvertFn) -> ConvertFn:
        for d in domains:
            key = (_normalize_domain(d), op_type)
            if key in _REGISTRY:
                raise ValueError(f"converter for {key} registered twice")
            _REGISTRY[key] = Converter(op_type, _normalize_domain(d), fn, check)
        return fn

    return register


def lookup(domain: str, op_type: str) -> Converter | None:
    """Return the converter for (domain, op_type), or None when there is none."""
    return _REGISTRY.get((_normalize_domain(domain), op_type))


def registered_ops() -> list[tuple[str, str]]:
    """Return every registered (domain, op_type), sorted."""
    return sorted(_REGISTRY)
