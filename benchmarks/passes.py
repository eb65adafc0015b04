"""Pass infrastructure speed: the pattern rewriter and the built-in passes on a 10⁴-node graph.

    python benchmarks/passes.py        # writes results/passes.json and the README's "passes" section
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnx_ir as ir
from onnx import TensorProto, helper

from benchmarks.common import (
    README, RESULTS_DIR, fmt, machine_info, machine_line, markdown_table, update_readme_section, write_json,
)

REPEATS = 5


def chain_graph(blocks: int) -> ir.Model:
    """A chain of `blocks` x·sigmoid(x) → Abs triples (3 nodes each)."""
    nodes, cur = [], "x"
    for i in range(blocks):
        nodes += [helper.make_node("Sigmoid", [cur], [f"s{i}"]), helper.make_node("Mul", [cur, f"s{i}"], [f"m{i}"]),
                  helper.make_node("Abs", [f"m{i}"], [f"a{i}"])]
        cur = f"a{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [4])])
    return ir.serde.deserialize_model(helper.make_model(graph, ir_version=10,
                                                        opset_imports=[helper.make_opsetid("", 17)]))


def best_seconds(make_pass, blocks: int) -> tuple[float, int, int]:
    """Fastest of REPEATS runs of a fresh pass on a fresh graph; also the node counts before/after."""
    best, before, after = float("inf"), 0, 0
    for _ in range(REPEATS):
        model = chain_graph(blocks)
        before = len(model.graph)
        start = time.perf_counter()
        result = make_pass()(model.graph)
        best = min(best, time.perf_counter() - start)
        after = len(result.graph)
    return best, before, after


def main() -> int:
    """Time the rewriter (first run: every block matches; second run: nothing matches) and the built-ins."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    import custom_pass  # noqa: F401  (registers fuse-silu)

    from mlpc.pass_registry import get_pass

    blocks = 3334  # 10,002 nodes
    rows, results = [], {"machine": machine_info(), "nodes": 3 * blocks, "passes": {}}
    for name in ("fuse-silu", "canonicalize", "simplify", "fold-batchnorm"):
        seconds, before, after = best_seconds(get_pass(name).factory, blocks)
        results["passes"][name] = {"seconds": seconds, "nodes_before": before, "nodes_after": after}
        rows.append([name, str(before), str(after), fmt(seconds * 1e3)])
    write_json(RESULTS_DIR / "passes.json", results)
    update_readme_section(README, "passes", "\n".join([
        machine_line(results["machine"]), "",
        f"Best of {REPEATS} runs on a 10,002-node chain of x·sigmoid(x) → Abs blocks (every block matches fuse-silu).",
        "", markdown_table(["pass", "nodes before", "nodes after", "ms"], rows)]))
    print(markdown_table(["pass", "nodes before", "nodes after", "ms"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
