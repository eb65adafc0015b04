"""Differential fuzzing: random small graphs compiled by mlpc vs onnxruntime / the reference evaluator.

The bounded, derandomized run here is part of the normal suite; `make fuzz` runs more examples
(env MLPC_FUZZ_EXAMPLES, default 25 here) with fresh randomness (MLPC_FUZZ_RANDOM=1).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

from differential import check_against_onnxruntime, check_node_by_node  # noqa: E402
from graphs import graphs  # noqa: E402

EXAMPLES = int(os.environ.get("MLPC_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("MLPC_FUZZ_RANDOM", "") in ("", "0"),
    database=None,
    # Shrinking recompiles every candidate and can take many minutes; opt in with MLPC_FUZZ_SHRINK=1.
    phases=[p for p in Phase if p != Phase.shrink or os.environ.get("MLPC_FUZZ_SHRINK") == "1"],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@FUZZ
@given(graphs(quant=False))
def test_float_graphs_match_onnxruntime(g):
    check_against_onnxruntime(g.model, g.feeds)


@FUZZ
@given(graphs(quant=True))
def test_quant_graphs_match_reference_evaluator(g):
    check_node_by_node(g.model, g.feeds)
