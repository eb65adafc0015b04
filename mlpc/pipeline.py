"""The default pass pipeline, and how user passes and `--passes`/`--disable-pass` edit it."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mlpc.errors import PassError
from mlpc.pass_infra import Pass
from mlpc.pass_registry import PassInfo, get_pass, list_passes, register_pass
from mlpc.passes.canonicalize import CanonicalizePass
from mlpc.passes.fold_batchnorm import FoldBatchNormPass
from mlpc.passes.fuse import FusePass
from mlpc.passes.fuse_attention import FuseAttentionPass
from mlpc.passes.layout import LayoutPass
from mlpc.passes.lower_quant import LowerQuantPass
from mlpc.passes.simplify import SimplifyPass

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mlpc.passes"

# The built-in passes in pipeline order.
BUILTIN_PASSES = [CanonicalizePass, SimplifyPass, FoldBatchNormPass, LowerQuantPass, FuseAttentionPass, LayoutPass,
                  FusePass]
BUILTIN_ORDER = [p.name for p in BUILTIN_PASSES]
# With `mlpc.compile(quantize=...)`, the pipeline from the first of these on runs after
# quantization and lower-quant: the quantizer sees plain ONNX convs and matmuls, and the fusion
# groups cover the requantization nodes it inserted.
POST_QUANT_PASSES = ("fuse-attention", "layout", "fuse")

for _pass in BUILTIN_PASSES:
    register_pass(_pass.name, opt_level=_pass.opt_level, builtin=True)(_pass)


def default_pipeline(target: object = None, passes: Sequence[str] | None = None) -> list[Pass]:
    """Return the passes `mlpc compile` runs, in order.

    With `passes`, exactly those run, in that order. Otherwise the built-ins run in order and
    every registered user pass joins right after canonicalize, or where its after=/before= says.
    """
    if passes is not None:
        return [get_pass(name).factory() for name in passes]
    order = list(BUILTIN_ORDER)
    for info in list_passes():
        if info.builtin:
            continue
        order.insert(_position(info, order), info.name)
    return [get_pass(name).factory() for name in order]


def _position(info: PassInfo, order: list[str]) -> int:
    anchor = info.before or info.after or "canonicalize"
    if anchor not in order:
        raise PassError(
            f"pass {info.name!r} wants to run {'before' if info.before else 'after'} {anchor!r}, "
            f"which is not in the pipeline ({', '.join(order)})"
        )
    index = order.index(anchor)
    return index if info.before else index + 1


def load_plugin(path: str | Path) -> list[str]:
    """Import a Python file of user passes (they register themselves); return the new pass names.

    Raises PassError naming the file for a missing file or any error while importing it.
    """
    path = Path(path)
    if not path.is_file():
        raise PassError(f"--pass-plugin {path}: no such file")
    before = {p.name for p in list_passes()}
    module_name = f"mlpc_plugin_{path.stem}_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PassError(f"--pass-plugin {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        del sys.modules[module_name]
        raise PassError(f"--pass-plugin {path}: syntax error at line {e.lineno}: {e.msg}") from e
    except Exception as e:
        del sys.modules[module_name]
        raise PassError(f"--pass-plugin {path}: importing it failed: {type(e).__name__}: {e}") from e
    added = sorted({p.name for p in list_passes()} - before)
    logger.info("plugin %s registered passes: %s", path, ", ".join(added) or "none")
    return added


def load_entry_point_passes() -> list[str]:
    """Load every installed package's passes advertised in the `mlpc.passes` entry point group."""
    added = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        before = {p.name for p in list_passes()}
        try:
            ep.load()
        except Exception as e:
            raise PassError(f"entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP!r} failed to load: {e}") from e
        added += sorted({p.name for p in list_passes()} - before)
    return added
