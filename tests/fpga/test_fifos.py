"""FIFO sizing from the schedule (backends/fpga/fifos.py): the depths it derives from a sizing run,
how it deepens FIFOs that were still full, and the report's bit totals. The Verilator runs that
feed it are checked end to end in test_fpga_build.py and test_fpga_cnn.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlpc.backends.fpga.fifos import (
    MIN_DEPTH,
    deep_depths,
    rule_depths,
    size_fifos,
    sized_depths,
    sizing_report,
)
from mlpc.backends.fpga.folding import Folding
from mlpc.backends.fpga.network import MvauLayer, Network, PoolLayer
from mlpc.errors import LoweringError


def _mvau(name, mw, mh, vectors=1, bits=2):
    w = np.ones((mh, mw), np.int64)
    return MvauLayer(
        name=name,
        source=name,
        weights=w,
        in_range=(0, 2**bits - 1),
        w_range=(-1, 1),
        out_range=(0, 3),
        acc_range=(-mw * 3, mw * 3),
        vectors=vectors,
        thresholds=np.zeros((mh, 3), np.int64),
    )


def _net():
    pool = PoolLayer(name="pool1", source="p", channels=4, in_h=4, in_w=4, k_h=2, k_w=2, in_range=(0, 3))
    layers = [_mvau("mvau0", 16, 64, vectors=16), pool, _mvau("mvau2", 16, 10)]
    return Network(layers, "x", "y"), [Folding(4, 4), Folding(4, 4), Folding(1, 2)]


def test_rule_deep_and_sized_depths():
    net, folds = _net()
    assert rule_depths(net.layers, folds) == [16 // 4 + 2, 0, 16 // 2 + 2]
    # two inferences of each FIFO's stream: (MW/SIMD)·vectors beats, + the minimum
    assert deep_depths(net.layers, folds) == [2 * 4 * 16 + 2, 0, 2 * 8 + 2]
    # the depth the run needed, never below FINN's minimum of 2; no FIFO in front of a pool
    assert sized_depths(net.layers, {"fifo0": 1, "fifo2": 7}) == [MIN_DEPTH, 0, 7]
    with pytest.raises(LoweringError, match="no occupancy for fifo2 .*mvau2"):
        sized_depths(net.layers, {"fifo0": 3})


def _fake_run(blocked_rounds, need, period_seen, deep_seen, mismatches=0):
    """A stand-in for the Verilator run: fifo0 refuses beats until its depth reaches blocked_rounds' end."""
    state = {"round": 0}

    def write_design(depths, where: Path):
        deep_seen.append(list(depths))
        return ["mlpc_top.v"]

    def run(where, sources, period):
        period_seen.append(period)
        r = state["round"]
        state["round"] += 1
        blocked = 5 if r < blocked_rounds else 0
        return {
            "passed": mismatches == 0,
            "mismatches": mismatches,
            "fifo_blocked": {"fifo0": blocked, "fifo2": 0},
            "fifo_need": dict(need),
            "fifo_peak": {k: [v, 0] for k, v in need.items()},
            "done": [10, 20],
            "ii_cycles": 10.0,
        }

    return write_design, run


def test_size_fifos_deepens_a_fifo_that_was_still_full(tmp_path):
    net, folds = _net()
    periods, deeps = [], []
    write_design, run = _fake_run(1, {"fifo0": 9, "fifo2": 1}, periods, deeps)
    depths, deep_run = size_fifos(net, folds, 64, tmp_path, write_design, run)
    assert periods == [64, 64]  # throttled to the II both times
    first = deep_depths(net.layers, folds)
    assert deeps == [first, [2 * first[0], 0, first[2]]]  # only the FIFO that refused beats was deepened
    assert depths == [9, 0, MIN_DEPTH]
    assert deep_run["deep_depths"] == deeps[-1]


def test_size_fifos_gives_up_naming_the_fifo(tmp_path):
    net, folds = _net()
    write_design, run = _fake_run(99, {"fifo0": 9, "fifo2": 1}, [], [])
    with pytest.raises(
        LoweringError, match=r"fifo0 \(in front of mvau0, depth \d+\) still refused beats .* 64 cycles"
    ):
        size_fifos(net, folds, 64, tmp_path, write_design, run)


def test_size_fifos_refuses_a_mismatching_sizing_run(tmp_path):
    net, folds = _net()
    write_design, run = _fake_run(0, {"fifo0": 9, "fifo2": 1}, [], [], mismatches=3)
    with pytest.raises(LoweringError, match="deep FIFOs disagrees with the reference interpreter"):
        size_fifos(net, folds, 64, tmp_path, write_design, run)


def test_sizing_report_counts_bits_against_the_rule():
    net, folds = _net()
    deep_run = {
        "fifo_need": {"fifo0": 3, "fifo2": 1},
        "fifo_peak": {"fifo0": [3, 130], "fifo2": [1, 18]},
        "done": [5, 15, 25],
        "ii_cycles": 10.0,
        "deep_depths": [130, 0, 18],
    }
    depths = [3, 0, 2]
    rep = sizing_report(net.layers, folds, depths, "simulated", deep_run, 10)
    w0, w2 = 4 * 2, 2 * 2  # SIMD · input bits
    assert [(f["name"], f["feeds"], f["width_bits"], f["rule_depth"], f["depth"]) for f in rep["fifos"]] == [
        ("fifo0", "mvau0", w0, 6, 3),
        ("fifo2", "mvau2", w2, 10, 2),
    ]
    assert rep["bits"] == 3 * w0 + 2 * w2 and rep["rule_bits"] == 6 * w0 + 10 * w2
    assert rep["bits_saved"] == rep["rule_bits"] - rep["bits"]
    assert rep["sizing_run"]["deep_depths"] == [130, 18] and rep["sizing_run"]["throttle_period_cycles"] == 10
    rule = sizing_report(net.layers, folds, rule_depths(net.layers, folds), "rule")
    assert rule["bits_saved"] == 0 and "sizing_run" not in rule and rule["fifos"][0]["needed"] is None
