"""The target registry: every hardware kind mlpc compiles for, as data.

    >>> from mlpc.targets import get_target, list_targets
    >>> get_target("x86/avx2").tvm["mcpu"]
    'haswell'
"""
from __future__ import annotations

import difflib
import logging

from mlpc.errors import TargetError
from mlpc.targets.arm import ARM_TAGS
from mlpc.targets.target import Target, host_cpu_flags
from mlpc.targets.cuda import CUDA_TAGS
from mlpc.targets.fpga import FPGA_TAGS
from mlpc.targets.x86 import X86_TAGS, host_target

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, Target] = {}


def register_target(target: Target, *, replace: bool = False) -> Target:
    """Add `target` to the registry under its name and return it."""
    if target.name in _REGISTRY and not replace:
        raise TargetError(f"target {target.name!r} is already registered")
    _REGISTRY[target.name] = target
    return target


def list_targets() -> list[Target]:
    """Return every registered target, the host first."""
    return [host_target(), *_REGISTRY.values()]


def get_target(target: str | Target) -> Target:
    """Return the Target for a tag (`"x86/avx2"`, `"host"`) or pass a Target through.

    An unknown name raises TargetError that suggests the nearest registered names.
    """
    if isinstance(target, Target):
        return target
    name = target.strip()
    if name in ("host", "native", "llvm"):
        return host_target()
    if name in _REGISTRY:
        return _REGISTRY[name]
    names = ["host", *_REGISTRY]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise TargetError(
        f"unknown target {name!r}{hint} (`mlpc targets` lists them: {', '.join(names)})"
    )


for _t in [*X86_TAGS, *ARM_TAGS]:
    register_target(_t)
for _t in [*CUDA_TAGS, *FPGA_TAGS]:
    register_target(_t)

__all__ = ["Target", "get_target", "host_cpu_flags", "host_target", "list_targets", "register_target"]
