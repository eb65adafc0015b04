"""The ILP (scipy milp): optimal against brute force, every budget respected, monotone in the
size budget, infeasible budgets named with the smallest feasible value."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mlpc.errors import QuantizationError
from mlpc.mixed.ilp import Problem, pareto, ranked, solve

BITS = (2, 3, 4, 8)


def random_problem(seed: int, layers: int = 5) -> Problem:
    rng = np.random.default_rng(seed)
    params = rng.integers(100, 5000, layers)
    macs = params * rng.integers(1, 50, layers)
    # sensitivity falls about 4x per extra bit, with a layer-specific scale
    omega = rng.uniform(0.1, 10, (layers, 1)) * np.array([4.0**-b for b in BITS])[None]
    size = np.array([[-(-p * b // 8) for b in BITS] for p in params], float)
    bops = np.array([[m * b * 8 for b in BITS] for m in macs], float)
    latency = np.array([[1e-6 * (m / 1e4) * (0.5 + b / 8) for b in BITS] for m in macs])
    return Problem(
        [f"l{i}" for i in range(layers)],
        BITS,
        omega,
        {"size": size, "bops": bops, "latency": latency},
        {"size": 400.0},
    )


def brute_force(problem: Problem, budgets: dict[str, float]) -> float:
    best = np.inf
    for choice in itertools.product(range(len(BITS)), repeat=len(problem.layers)):
        totals = problem.totals(list(choice))
        if all(totals[k] <= v + 1e-9 for k, v in budgets.items()):
            best = min(best, totals["omega"])
    return best


@pytest.mark.parametrize("seed", range(4))
def test_optimal_and_within_every_budget(seed):
    problem = random_problem(seed)
    uniform4 = problem.totals([BITS.index(4)] * 5)
    budgets = {
        "size": uniform4["size"],
        "bops": 0.9 * uniform4["bops"] * 2,
        "latency": 1.05 * uniform4["latency"],
    }
    alloc = solve(problem, budgets)
    for kind, budget in budgets.items():
        assert alloc.costs[kind] <= budget * (1 + 1e-9)
    assert alloc.omega == pytest.approx(brute_force(problem, budgets), rel=1e-9)
    assert alloc.omega <= uniform4["omega"] * (1 + 1e-9)  # uniform 4-bit is feasible: never worse


def test_tighter_size_budget_never_gives_a_larger_model():
    problem = random_problem(7)
    lo = problem.totals([0] * 5)["size"]
    hi = problem.totals([3] * 5)["size"]
    sizes, omegas = [], []
    for budget in np.linspace(hi, lo, 25):
        alloc = solve(problem, {"size": budget})
        assert alloc.costs["size"] <= budget + 1e-6
        sizes.append(alloc.costs["size"])
        omegas.append(alloc.omega)
    assert all(a >= b for a, b in zip(sizes, sizes[1:]))
    assert all(a <= b * (1 + 1e-9) for a, b in zip(omegas, omegas[1:]))


def test_infeasible_budget_names_it_and_the_smallest_feasible_value():
    problem = random_problem(3)
    smallest = problem.totals([0] * 5)["size"]
    with pytest.raises(QuantizationError, match="--size-budget") as info:
        solve(problem, {"size": smallest - 1})
    assert f"{smallest:,.0f} bytes" in str(info.value)
    # jointly infeasible: the latency floor under the size budget is reported
    with pytest.raises(QuantizationError, match="--latency-budget"):
        solve(problem, {"size": smallest, "latency": 1e-12})


def test_pareto_frontier_is_monotone():
    frontier = pareto(random_problem(5), "size", points=12)
    assert len(frontier) >= 3
    sizes = [a.costs["size"] for a in frontier]
    omegas = [a.omega for a in frontier]
    assert sizes == sorted(sizes)
    assert all(a >= b * (1 - 1e-9) for a, b in zip(omegas, omegas[1:]))


def test_storage_slots_match_the_backend_packing():
    from mlpc.backends.tvm.packing import slot_bits
    from mlpc.mixed.layers import storage_bits

    for bits in (2, 3, 4):
        assert storage_bits(bits) == slot_bits(bits)
    assert [storage_bits(b) for b in (5, 8)] == [8, 8]


@pytest.mark.parametrize("seed", range(3))
def test_ranked_allocations_are_the_k_best_by_enumeration(seed):
    problem = random_problem(seed)
    uniform4 = problem.totals([BITS.index(4)] * 5)
    budgets = {"size": uniform4["size"], "latency": 1.05 * uniform4["latency"]}
    feasible = []
    for choice in itertools.product(range(len(BITS)), repeat=len(problem.layers)):
        totals = problem.totals(list(choice))
        if all(totals[k] <= v + 1e-9 for k, v in budgets.items()):
            feasible.append(totals["omega"])
    feasible.sort()
    found = ranked(problem, budgets, 6)
    assert len({tuple(a.bits.values()) for a in found}) == 6  # distinct allocations
    assert [a.omega for a in found] == pytest.approx(feasible[:6], rel=1e-9)
    assert found[0].bits == solve(problem, budgets).bits
    for alloc in found:
        for kind, budget in budgets.items():
            assert alloc.costs[kind] <= budget * (1 + 1e-9)


def test_ranked_stops_when_no_allocation_is_left():
    problem = Problem(["a", "b"], (2, 8), [[1.0, 0.0], [5.0, 0.0]], {"size": [[2, 8], [2, 8]]}, {"size": 0})
    # feasible at size ≤ 10: (2, 8) Ω=1, (8, 2) Ω=5, (2, 2) Ω=6; (8, 8) is too large
    found = ranked(problem, {"size": 10}, 5)
    assert [a.bits for a in found] == [{"a": 2, "b": 8}, {"a": 8, "b": 2}, {"a": 2, "b": 2}]
    assert [a.omega for a in found] == [1.0, 5.0, 6.0]
