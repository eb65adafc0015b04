"""Bit allocation as HAWQ-V3's integer linear program, solved with scipy's `milp` (HiGHS).

One binary x_{i,b} per layer i and candidate width b, Σ_b x_{i,b} = 1 per layer, and

    minimise  Σ Ω_i(b)·x_{i,b}
    s.t.      Σ size_i(b)·x_{i,b} + fixed_size ≤ size budget       (bytes)
              Σ BOPs_i(b)·x_{i,b}              ≤ BOPs budget
              Σ latency_i(b)·x_{i,b}           ≤ latency budget    (seconds)
              Σ LUT_i(b)·x_{i,b}, Σ BRAM_i(b)·x_{i,b} ≤ the FPGA part's (or the given) LUTs, BRAM36

(each constraint only when its budget is given). Among allocations with the optimal Ω the
smallest model is returned (a second solve minimising size with Ω fixed), so a tighter budget
never yields a larger model. An infeasible budget raises QuantizationError naming the budget and
the smallest value that is feasible given the other budgets.

    >>> problem = Problem(["a", "b"], (2, 8), omega=[[1.0, 0.0], [5.0, 0.0]],
    ...                   costs={"size": [[2, 8], [2, 8]]}, fixed={"size": 0})
    >>> solve(problem, {"size": 10}).bits
    {'a': 2, 'b': 8}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlpc.errors import QuantizationError

logger = logging.getLogger(__name__)

COST_NAMES = ("size", "bops", "latency", "lut", "bram")
UNITS = {"size": "bytes", "bops": "BOPs", "latency": "s", "lut": "LUTs", "bram": "BRAM36"}
# Ω ties: the second solve allows this relative slack on the optimal Ω.
_OMEGA_SLACK = 1e-9


@dataclass
class Problem:
    """An allocation problem: `layers` names, candidate `bits`, `omega[i][j]` (layer i at bits[j]),
    `costs[kind][i][j]` for kind in size/bops/latency, and `fixed[kind]` the part of the cost no
    layer choice changes (float parameters, non-layer latency)."""

    layers: list[str]
    bits: tuple[int, ...]
    omega: Any
    costs: dict[str, Any]
    fixed: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.omega = np.asarray(self.omega, np.float64)
        self.costs = {k: np.asarray(v, np.float64) for k, v in self.costs.items()}
        if not np.all(np.isfinite(self.omega)):
            raise QuantizationError("sensitivity holds NaN/Inf values: re-run `mlpc sensitivity`")

    def totals(self, choice: list[int]) -> dict[str, float]:
        """Every cost (with its fixed part) and Ω of the allocation `choice` (one bits index per layer)."""
        rows = np.arange(len(self.layers))
        out = {k: float(c[rows, choice].sum() + self.fixed.get(k, 0.0)) for k, c in self.costs.items()}
        out["omega"] = float(self.omega[rows, choice].sum())
        return out


@dataclass
class Allocation:
    """The ILP's answer: `bits` per layer, Ω and every cost of the allocation."""

    bits: dict[str, int]
    omega: float
    costs: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"bits": dict(self.bits), "omega": self.omega, **self.costs}


def _milp(
    c: np.ndarray, problem: Problem, upper: dict[str, float], extra: list[tuple[np.ndarray, float]] = ()
):
    from scipy.optimize import Bounds, LinearConstraint, milp

    n_layers, n_bits = problem.omega.shape
    n = n_layers * n_bits
    one_hot = np.zeros((n_layers, n))
    for i in range(n_layers):
        one_hot[i, i * n_bits : (i + 1) * n_bits] = 1.0
    constraints = [LinearConstraint(one_hot, 1.0, 1.0)]
    for kind, budget in upper.items():
        row = problem.costs[kind].reshape(1, n)
        constraints.append(LinearConstraint(row, -np.inf, budget - problem.fixed.get(kind, 0.0)))
    for row, bound in extra:
        constraints.append(LinearConstraint(row.reshape(1, n), -np.inf, bound))
    result = milp(c.reshape(n), constraints=constraints, integrality=np.ones(n), bounds=Bounds(0, 1))
    if result.status != 0 or result.x is None:
        return None
    return [int(np.argmax(result.x[i * n_bits : (i + 1) * n_bits])) for i in range(n_layers)]


def minimum(problem: Problem, kind: str, budgets: dict[str, float]) -> float | None:
    """The smallest total `kind` cost achievable under the other `budgets` (None when those alone
    are infeasible)."""
    others = {k: v for k, v in budgets.items() if k != kind}
    choice = _milp(problem.costs[kind], problem, others)
    return None if choice is None else problem.totals(choice)[kind]


def solve(problem: Problem, budgets: dict[str, float]) -> Allocation:
    """The allocation minimising Σ Ω under `budgets` ({"size": bytes, "bops": n, "latency": s};
    missing or None = unconstrained); the smallest model among equally good ones."""
    budgets = {k: float(v) for k, v in budgets.items() if v is not None}
    unknown = sorted(set(budgets) - set(problem.costs))
    if unknown:
        raise QuantizationError(f"no cost model for budget(s) {unknown}; known: {sorted(problem.costs)}")
    choice = _milp(problem.omega, problem, budgets)
    if choice is None:
        raise QuantizationError(_infeasible_message(problem, budgets))
    best = problem.totals(choice)["omega"]
    if "size" in problem.costs:  # among the optimal allocations, the smallest model
        bound = best + max(abs(best) * _OMEGA_SLACK, 1e-15)
        tied = _milp(problem.costs["size"], problem, budgets, [(problem.omega, bound)])
        if tied is not None:
            choice = tied
    totals = problem.totals(choice)
    omega = totals.pop("omega")
    return Allocation({name: problem.bits[j] for name, j in zip(problem.layers, choice)}, omega, totals)


def ranked(problem: Problem, budgets: dict[str, float], count: int) -> list[Allocation]:
    """The `count` allocations with the smallest Σ Ω under `budgets`, best first: `solve`'s answer,
    then the ILP re-solved with a no-good cut per allocation already found (Σ_i x_{i,c_i} ≤ n − 1
    excludes exactly the choice c). Fewer when fewer allocations are feasible.

        >>> problem = Problem(["a", "b"], (2, 8), omega=[[1.0, 0.0], [5.0, 0.0]],
        ...                   costs={"size": [[2, 8], [2, 8]]}, fixed={"size": 0})
        >>> [a.bits for a in ranked(problem, {"size": 10}, 5)]   # (8, 8) does not fit
        [{'a': 2, 'b': 8}, {'a': 8, 'b': 2}, {'a': 2, 'b': 2}]
    """
    first = solve(problem, budgets)
    budgets = {k: float(v) for k, v in budgets.items() if v is not None}
    n_layers, n_bits = problem.omega.shape
    index = {b: j for j, b in enumerate(problem.bits)}
    found = [first]
    cuts: list[tuple[np.ndarray, float]] = []
    while len(found) < count:
        cut = np.zeros((n_layers, n_bits))
        for i, name in enumerate(problem.layers):
            cut[i, index[found[-1].bits[name]]] = 1.0
        cuts.append((cut, n_layers - 1.0))
        choice = _milp(problem.omega, problem, budgets, cuts)
        if choice is None:
            break
        totals = problem.totals(choice)
        omega = totals.pop("omega")
        found.append(
            Allocation({name: problem.bits[j] for name, j in zip(problem.layers, choice)}, omega, totals)
        )
    return found


def _fmt(kind: str, value: float) -> str:
    if kind == "size":
        return f"{value:,.0f} bytes"
    if kind == "latency":
        return f"{value * 1e3:.4g} ms"
    if kind in ("lut", "bram"):
        return f"{value:,.0f} {UNITS[kind]}"
    return f"{value:,.0f} BOPs"


def _infeasible_message(problem: Problem, budgets: dict[str, float]) -> str:
    parts = []
    for kind, budget in budgets.items():
        smallest = minimum(problem, kind, budgets)
        alone = float(problem.costs[kind].min(axis=1).sum() + problem.fixed.get(kind, 0.0))
        if smallest is None and alone <= budget:
            continue  # met on its own: the other budgets are the infeasible ones
        if smallest is None or smallest > budget:
            floor = alone if smallest is None else smallest
            parts.append(
                f"--{kind}-budget {_fmt(kind, budget)} cannot be met: the smallest feasible value is "
                f"{_fmt(kind, floor)}"
                + ("" if smallest is not None else " (with the other budgets dropped)")
                + f" (every layer at {min(problem.bits)} bits gives {_fmt(kind, alone)})"
            )
    if not parts:
        parts.append(
            "the budgets "
            + ", ".join(f"{k}={_fmt(k, v)}" for k, v in budgets.items())
            + " cannot be met together; relax one"
        )
    return "mixed precision: " + "; ".join(parts)


def pareto(
    problem: Problem, kind: str = "size", points: int = 16, budgets: dict[str, float] | None = None
) -> list[Allocation]:
    """The Pareto frontier of Ω against `kind`: the ILP solved for `points` budgets of `kind`
    evenly spaced from the smallest to the largest achievable (other `budgets` held), duplicates
    dropped, sorted by cost."""
    budgets = {k: v for k, v in (budgets or {}).items() if v is not None and k != kind}
    lo = minimum(problem, kind, budgets)
    if lo is None:
        return []
    hi = float(problem.costs[kind].max(axis=1).sum() + problem.fixed.get(kind, 0.0))
    seen, frontier = set(), []
    for budget in np.linspace(lo, max(lo, hi), points):
        try:
            alloc = solve(problem, {**budgets, kind: float(budget) * (1 + 1e-12)})
        except QuantizationError:
            continue
        key = tuple(sorted(alloc.bits.items()))
        if key not in seen:
            seen.add(key)
            frontier.append(alloc)
    return sorted(frontier, key=lambda a: a.costs[kind])
