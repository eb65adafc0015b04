"""Pattern rewriting for passes, built on onnxscript's rewriter.

A rule is a pattern and a replacement, both plain builder functions; `check` (optional) sees
the match's bound values and returns a MatchResult that can `.fail("why")`. `rewrite_pass`
registers a pass that applies a set of rules until nothing matches; the rewriter keeps use
lists right and removes the nodes a replacement leaves dead.

    from mlpc.rewrite import RewriteRule, rewrite_pass

    def silu(op, x):
        return op.Mul(x, op.Sigmoid(x))

    def to_silu(op, x):
        return op.SiLU(x, _domain="mlpc")

    rewrite_pass("fuse-silu", [RewriteRule(silu, to_silu)])   # Mul(Sigmoid(x), x) matches too
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import onnx_ir as ir
from onnxscript.rewriter.pattern import MatchResult, RewriteRule, RewriteRuleSet

from mlpc.errors import PassError
from mlpc.pass_infra import Pass, PassContext, PassResult
from mlpc.pass_registry import register_pass

logger = logging.getLogger(__name__)

MAX_ROUNDS = 100


class RewritePass(Pass):
    """Applies rewrite rules (commuted operands included) until no rule matches."""

    def __init__(self, name: str, rules: Sequence[RewriteRule], commute: bool = True, description: str = ""):
        if not rules:
            raise PassError(f"rewrite pass {name!r} has no rules")
        self.name = name  # type: ignore[misc]
        self.description = description  # type: ignore[misc]
        self.rules = RewriteRuleSet(list(rules), commute=commute)

    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        model = ir.Model(graph, ir_version=10)
        total = 0
        for _ in range(MAX_ROUNDS):
            count = self.rules.apply_to_model(model)
            total += count
            if count == 0:
                break
        else:
            raise PassError(f"rewrite pass {self.name!r} still matched after {MAX_ROUNDS} rounds; "
                            "a rule's replacement matches its own pattern")
        if total:
            logger.info("%s: %d rewrites", self.name, total)
        return PassResult(model.graph, total > 0)


def rewrite_pass(
    name: str,
    rules: Sequence[RewriteRule],
    *,
    opt_level: int = 0,
    after: str | None = None,
    before: str | None = None,
    description: str | None = None,
    commute: bool = True,
) -> type[RewritePass]:
    """Register a pass named `name` that applies `rules` until nothing matches; return its class."""
    doc = description or f"rewrite rules: {', '.join(r.name or 'rule' for r in rules)}"

    class _Rules(RewritePass):
        def __init__(self) -> None:
            super().__init__(name, rules, commute=commute, description=doc)

    _Rules.__name__ = _Rules.__qualname__ = "".join(p.title() for p in name.split("-")) + "Pass"
    _Rules.__module__ = sys._getframe(1).f_globals.get("__name__", __name__)  # where the user defined it
    register_pass(name, opt_level=opt_level, after=after, before=before, description=doc)(_Rules)
    return _Rules


__all__ = ["MatchResult", "RewritePass", "RewriteRule", "rewrite_pass"]
