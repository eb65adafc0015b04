"""Pass instruments: per-pass timing, and IR dumps a person can read and diff."""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import onnx_ir as ir

from mlpc.pass_infra import Pass, PassContext, PassInstrument, PassResult

logger = logging.getLogger(__name__)


class TimingInstrument(PassInstrument):
    """Records wall time per pass in `self.seconds` (name → seconds, summed over repeats)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = 0.0

    def before_pass(self, pass_: Pass, graph: ir.Graph, ctx: PassContext) -> None:
        self._start = time.perf_counter()

    def after_pass(self, pass_: Pass, result: PassResult, ctx: PassContext) -> None:
        self.seconds[pass_.name] = self.seconds.get(pass_.name, 0.0) + time.perf_counter() - self._start


def node_annotations(graph: ir.Graph) -> str:
    """The `mlpc.*` node metadata (fusion groups, chosen layouts) as text, one node a line, since
    onnx-ir's printout omits metadata; empty when no node carries any."""
    lines = []
    for index, node in enumerate(graph):
        props = {k: v for k, v in node.metadata_props.items() if k.startswith("mlpc.")}
        if props:
            shown = " ".join(f"{k.removeprefix('mlpc.')}={v}" for k, v in sorted(props.items()))
            lines.append(f"{index:4d} | {node.name or '<unnamed>'} ({node.op_type}): {shown}")
    return "# mlpc node annotations\n" + "\n".join(lines) + "\n" if lines else ""


class DumpIRInstrument(PassInstrument):
    """Writes the graph as text to `directory`: `00-input.txt` before the first pass, then
    `NN-<pass>.txt` after every pass that changed it (so consecutive files diff cleanly), each
    followed by the nodes' mlpc annotations (fusion group, layout)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._count = 0

    def before_pass(self, pass_: Pass, graph: ir.Graph, ctx: PassContext) -> None:
        if self._count == 0:
            self._write("input", graph)

    def after_pass(self, pass_: Pass, result: PassResult, ctx: PassContext) -> None:
        if result.modified:
            self._write(pass_.name, result.graph)

    def _write(self, label: str, graph: ir.Graph) -> None:
        path = self.directory / f"{self._count:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}.txt"
        path.write_text(str(graph) + "\n" + node_annotations(graph))
        self._count += 1
        logger.debug("dumped IR to %s", path)
