"""The pass infrastructure: Pass, PassResult, PassContext and PassManager.

A pass takes an onnx-ir Graph and a PassContext and returns `PassResult(graph, modified)`;
`modified` is exact and passes are idempotent. The manager runs a list of passes, times each,
skips disabled ones, runs the IR verifier after each when asked, and raises PassError naming
the failing pass and those that ran before it.

    >>> import mlpc
    >>> class CountNodes(mlpc.Pass):
    ...     name = "count-nodes"
    ...     def run(self, graph, ctx):
    ...         ctx.options["nodes"] = len(graph)
    ...         return mlpc.PassResult(graph, modified=False)
"""
from __future__ import annotations

import abc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import onnx_ir as ir

from mlpc.errors import IRVerificationError, MlpcError, PassError

logger = logging.getLogger(__name__)


@dataclass
class PassResult:
    """What a pass returns: the (possibly new) graph and whether it changed anything."""

    graph: ir.Graph
    modified: bool


@dataclass
class PassRecord:
    """One line of the pass log kept in the artifact's manifest."""

    name: str
    modified: bool
    seconds: float
    skipped: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON-serialisable dict."""
        return {"name": self.name, "modified": self.modified, "seconds": round(self.seconds, 4),
                "skipped": self.skipped}


class PassInstrument:
    """Hooks around every pass; subclass and override what you need."""

    def before_pass(self, pass_: Pass, graph: ir.Graph, ctx: PassContext) -> None:
        """Called before `pass_` runs on `graph`."""

    def after_pass(self, pass_: Pass, result: PassResult, ctx: PassContext) -> None:
        """Called after `pass_` returned `result`."""


@dataclass
class PassContext:
    """Everything a pass may consult: the target, options, opt level and instruments.

    `verify_each` runs the IR verifier after every pass (always on in tests).
    """

    target: Any = None
    opt_level: int = 2
    options: dict[str, Any] = field(default_factory=dict)
    disabled_passes: set[str] = field(default_factory=set)
    instruments: list[PassInstrument] = field(default_factory=list)
    verify_each: bool = False


class Pass(abc.ABC):
    """Base class of every graph pass. Subclasses set `name` (kebab-case) and implement `run`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    opt_level: ClassVar[int] = 0

    @abc.abstractmethod
    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        """Transform `graph` and return PassResult(graph, modified)."""

    def __call__(self, graph: ir.Graph, ctx: PassContext | None = None) -> PassResult:
        result = self.run(graph, ctx or PassContext())
        if not isinstance(result, PassResult) or not isinstance(result.graph, ir.Graph):
            raise PassError(
                f"pass {self.name!r} returned {type(result).__name__}, expected PassResult with an onnx-ir Graph"
            )
        return result

    def __repr__(self) -> str:
        return f"<pass {self.name}>"


class PassManager:
    """Runs passes in order on a Model's graph and keeps the pass log.

        >>> pm = PassManager([CanonicalizePass()])  # doctest: +SKIP
        >>> log = pm.run(model, PassContext(verify_each=True))  # doctest: +SKIP
    """

    def __init__(self, passes: Sequence[Pass]):
        self.passes = list(passes)

    def run(self, model: ir.Model, ctx: PassContext) -> list[PassRecord]:
        """Run every enabled pass on `model.graph` (replacing it if a pass returns a new graph)."""
        log: list[PassRecord] = []
        for pass_ in self.passes:
            if pass_.name in ctx.disabled_passes or pass_.opt_level > ctx.opt_level:
                log.append(PassRecord(pass_.name, False, 0.0, skipped=True))
                continue
            for inst in ctx.instruments:
                inst.before_pass(pass_, model.graph, ctx)
            start = time.perf_counter()
            output_names = [v.name for v in model.graph.outputs]
            try:
                result = pass_(model.graph, ctx)
            except MlpcError as e:
                if isinstance(e, PassError):
                    raise
                raise type(e)(f"{e} (in pass {pass_.name!r}{self._after(log)})") from e
            except Exception as e:
                raise PassError(f"pass {pass_.name!r} failed{self._after(log)}: {type(e).__name__}: {e}") from e
            seconds = time.perf_counter() - start
            model.graph = result.graph
            self._check_outputs_kept(pass_, output_names, model.graph, log)
            if ctx.verify_each and result.modified:
                self._verify(pass_, model, log)
            for inst in ctx.instruments:
                inst.after_pass(pass_, result, ctx)
            log.append(PassRecord(pass_.name, result.modified, seconds))
            logger.debug("pass %s: modified=%s in %.3fs", pass_.name, result.modified, seconds)
        return log

    @staticmethod
    def _after(log: list[PassRecord]) -> str:
        ran = [r.name for r in log if not r.skipped]
        return f", after {', '.join(ran)}" if ran else ""

    def _check_outputs_kept(self, pass_: Pass, before: list[str | None], graph: ir.Graph,
                            log: list[PassRecord]) -> None:
        """Raise PassError when `pass_` renamed, dropped or merged graph outputs: the outputs are
        the model's interface, and the compiled artifact is looked up by their names."""
        after = [v.name for v in graph.outputs]
        if after != before:
            raise PassError(
                f"pass {pass_.name!r} changed the graph outputs from {before} to {after}{self._after(log)}; "
                "a pass must keep every output and its name (insert an Identity to keep a name)"
            )

    def _verify(self, pass_: Pass, model: ir.Model, log: list[PassRecord]) -> None:
        from mlpc.ir.verifier import verify

        try:
            verify(model)
        except IRVerificationError as e:
            raise PassError(f"pass {pass_.name!r} left an invalid graph{self._after(log)}: {e}") from e
