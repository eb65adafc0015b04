"""The pass registry: built-in and user passes by name, and where they join the pipeline.

    import mlpc

    @mlpc.register_pass("drop-identity", after="canonicalize")
    def drop_identity(graph, ctx):
        for node in [n for n in graph if n.op_type == "Identity"]:
            ...  # change the graph in place and return None, or return the graph / a PassResult

A registered pass joins the default pipeline right after `canonicalize` unless `after=` or
`before=` names another pass; `mlpc passes` lists them all.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnx_ir as ir

from mlpc.errors import PassError
from mlpc.pass_infra import Pass, PassContext, PassResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassInfo:
    """A registry entry: how to make the pass and where it goes in the default pipeline."""

    name: str
    factory: Callable[[], Pass]
    description: str
    opt_level: int = 0
    after: str | None = None
    before: str | None = None
    builtin: bool = False
    origin: str = ""


_REGISTRY: dict[str, PassInfo] = {}


class FunctionPass(Pass):
    """Wraps a function `(graph, ctx) -> Graph | None | PassResult` as a Pass.

    When the function returns a Graph or None, `modified` is decided by comparing a structural
    fingerprint of the graph before and after the call.
    """

    def __init__(self, name: str, fn: Callable[..., Any], description: str = "", opt_level: int = 0):
        self.name = name  # type: ignore[misc]
        self.description = description  # type: ignore[misc]
        self.opt_level = opt_level  # type: ignore[misc]
        self.fn = fn

    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        before = graph_fingerprint(graph)
        result = self.fn(graph, ctx)
        if isinstance(result, PassResult):
            return result
        if result is None:
            result = graph
        if not isinstance(result, ir.Graph):
            raise PassError(
                f"pass {self.name!r} returned {type(result).__name__}; a pass function must return "
                "the onnx-ir Graph, None (changed in place) or a PassResult"
            )
        return PassResult(result, graph_fingerprint(result) != before or result is not graph)


def graph_fingerprint(graph: ir.Graph) -> str:
    """Return a digest of a graph's structure: nodes, attributes, wiring, inputs, outputs, initializers."""
    h = hashlib.sha1()
    for value in (*graph.inputs, *graph.outputs):
        h.update(f"io:{value.name}:{value.shape}:{value.dtype};".encode())
    for name, value in graph.initializers.items():
        h.update(f"init:{name}:{id(value.const_value)}:{value.shape};".encode())
    for node in graph:
        ins = ",".join("" if v is None else v.name or str(id(v)) for v in node.inputs)
        outs = ",".join(v.name or str(id(v)) for v in node.outputs)
        attrs = ",".join(f"{k}={a.value!r}" for k, a in sorted(node.attributes.items()))
        h.update(f"node:{node.domain}:{node.op_type}:{ins}->{outs}[{attrs}];".encode())
    return h.hexdigest()


def register_pass(
    name: str,
    *,
    opt_level: int = 0,
    after: str | None = None,
    before: str | None = None,
    description: str | None = None,
    builtin: bool = False,
) -> Callable[[Any], Any]:
    """Decorator registering a pass function `(graph, ctx)` or a Pass subclass under `name`.

    `after`/`before` place it in the default pipeline (default: right after canonicalize).
    Returns the decorated object unchanged.
    """
    if not name or name != name.strip() or " " in name:
        raise PassError(f"pass name {name!r} is not valid: use kebab-case, e.g. 'fold-my-ops'")
    if after and before:
        raise PassError(f"pass {name!r}: give after= or before=, not both")

    def decorate(obj: Any) -> Any:
        if isinstance(obj, type) and issubclass(obj, Pass):
            doc = description or obj.description or _first_line(obj.__doc__)

            def factory() -> Pass:
                instance = obj()
                instance.name = name  # type: ignore[misc]
                return instance
        elif callable(obj):
            doc = description or _first_line(obj.__doc__)

            def factory() -> Pass:
                return FunctionPass(name, obj, doc, opt_level)
        else:
            raise PassError(f"register_pass({name!r}) decorates a function or a Pass subclass, not {obj!r}")
        if name in _REGISTRY and _REGISTRY[name].builtin:
            raise PassError(f"pass name {name!r} is taken by a built-in pass; choose another name")
        _REGISTRY[name] = PassInfo(name, factory, doc, opt_level, after, before, builtin,
                                   getattr(obj, "__module__", ""))
        return obj

    return decorate


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""


def get_pass(name: str) -> PassInfo:
    """Return the registry entry for `name`, or raise PassError listing the known names."""
    _load_builtins()
    if name not in _REGISTRY:
        raise PassError(f"no pass named {name!r}; `mlpc passes` lists them: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_passes() -> list[PassInfo]:
    """Return every registered pass, built-ins first."""
    _load_builtins()
    return sorted(_REGISTRY.values(), key=lambda p: (not p.builtin, p.name))


def unregister_pass(name: str) -> None:
    """Remove a user pass from the registry (built-ins stay)."""
    info = _REGISTRY.get(name)
    if info is not None and not info.builtin:
        del _REGISTRY[name]


def _load_builtins() -> None:
    import mlpc.pipeline  # noqa: F401  (registers the built-in passes)
