"""The default pass pipeline for a target."""
from __future__ import annotations

from mlpc.pass_infra import Pass
from mlpc.passes.canonicalize import CanonicalizePass


def default_pipeline(target: object = None) -> list[Pass]:
    """Return the passes `mlpc compile` runs, in order, for `target`."""
    return [CanonicalizePass()]
