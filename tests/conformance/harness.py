"""Run the ONNX backend node test cases through mlpc and classify each one.

onnx 1.23 no longer ships the node test data on disk; `collect_cases` builds the ~1,900 cases in
memory from `onnx.backend.test.case.node` (each a one-node model, or its function expansion,
plus inputs and expected outputs). `run_case` sends one case through the three stages of mlpc:

1. import into the IR and canonicalize (shape inference + constant folding) with the default
   pipeline, as `mlpc.compile` does;
2. the reference interpreter (`mlpc.ir.ReferenceEvaluator`) on the canonicalized model;
3. lowering to Relax, a TVM build for the host and a run in the Relax VM.

A case is `pass` when stages 2 and 3 both reproduce the expected outputs, `unsupported` when mlpc
refuses it clearly (UnsupportedOpError, or a LoweringError because a shape-defining input is only
known at run time — TVM needs static shapes), and `fail` otherwise (wrong numbers or a crash).

    >>> cases = collect_cases()
    >>> result = run_case(cases[0])
    >>> result.status, result.stage, result.message
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

logger = logging.getLogger(__name__)

PASS, FAIL, UNSUPPORTED = "pass", "fail", "unsupported"
STATUSES = (PASS, FAIL, UNSUPPORTED)

# LoweringError messages that mean "a shape-defining value is only known at run time".
_DYNAMIC_MARKERS = ("must be a constant", "shapes must be static", "no static shape")


@dataclass(frozen=True)
class Case:
    """One node test case: the model (serialized), inputs, expected outputs, tolerances."""

    name: str
    op: str
    model: bytes
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]
    rtol: float
    atol: float


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one case: status, the stage that decided it, and a one-line message."""

    name: str
    op: str
    status: str
    stage: str = ""
    message: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict."""
        return asdict(self)


def _as_array(x: Any) -> Any:
    if isinstance(x, onnx.TensorProto):
        return numpy_helper.to_array(x)
    if isinstance(x, np.generic):  # some cases give 0-d tensors as NumPy scalars
        return np.asarray(x)
    return x


def collect_cases(op_type: str | None = None) -> list[Case]:
    """Return every ONNX backend node test case (optionally only those of `op_type`), sorted by name.

    The op of an expanded-function case (`<name>_expanded…`) is the op of the case it expands.
    """
    os.environ.setdefault("ONNX_HOME", tempfile.mkdtemp(prefix="mlpc-onnx-home-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case import node as node_cases

    with warnings.catch_warnings():  # the case generators overflow casts on purpose
        warnings.simplefilter("ignore")
        raw = node_cases.collect_testcases(op_type)
    ops: dict[str, str] = {}
    for tc in raw:
        if "_expanded" not in tc.name and len(tc.model.graph.node) == 1:
            ops[tc.name] = tc.model.graph.node[0].op_type
    cases = []
    for tc in raw:
        base = tc.name.split("_expanded")[0]
        op = ops.get(tc.name) or ops.get(base) or tc.model.graph.node[0].op_type
        inputs, outputs = tc.data_sets[0]
        cases.append(
            Case(
                tc.name, op, tc.model.SerializeToString(),
                tuple(_as_array(x) for x in inputs), tuple(_as_array(y) for y in outputs),
                tc.rtol, tc.atol,
            )
        )
    return sorted(cases, key=lambda c: c.name)


def compare(expected: Sequence[Any], actual: Sequence[Any], rtol: float, atol: float) -> str | None:
    """Return why `actual` differs from `expected` (None when they agree).

    Floats are compared with rtol/atol (NaN equals NaN); integers, bools and strings exactly.
    """
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, expected {len(expected)}"
    for i, (e, a) in enumerate(zip(expected, actual)):
        if isinstance(e, np.generic):  # a few cases store a 0-d expected output as a NumPy scalar
            e = np.asarray(e)
        if not isinstance(e, np.ndarray):
            return f"output {i}: expected a {type(e).__name__}, which mlpc cannot produce"
        a = np.asarray(a)
        if a.shape != e.shape:
            return f"output {i}: shape {a.shape}, expected {e.shape}"
        if e.dtype.kind in "fc" or _is_ml_float(e.dtype):
            if a.dtype != e.dtype:
                return f"output {i}: dtype {a.dtype}, expected {e.dtype}"
            if _is_ml_float(e.dtype):  # bfloat16, float8, float4: NumPy compares them only as float32
                a, e = a.astype(np.float32), e.astype(np.float32)
            try:
                np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)
            except AssertionError as err:
                lines = [ln for ln in str(err).splitlines() if ln.strip().startswith("Max")]
                return f"output {i}: " + ("; ".join(lines) or "values differ")
        else:
            if e.dtype.kind != "O" and a.dtype != e.dtype:
                return f"output {i}: dtype {a.dtype}, expected {e.dtype}"
            if not np.array_equal(a, e):
                bad = int(np.sum(a != e))
                return f"output {i}: {bad} of {e.size} elements differ"
    return None


def _is_ml_float(dtype: np.dtype) -> bool:
    """True for the ml_dtypes floats (bfloat16, float8_*, float4_*), which NumPy sees as kind 'V'."""
    return dtype.kind == "V" and dtype.name.startswith(("bfloat", "float"))


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:400]}"


def _classify_error(e: BaseException, stage: str) -> tuple[str, str]:
    from mlpc.errors import LoweringError, UnsupportedOpError

    if isinstance(e, UnsupportedOpError):
        return UNSUPPORTED, _short(e)
    if isinstance(e, LoweringError) and any(m in str(e) for m in _DYNAMIC_MARKERS):
        return UNSUPPORTED, "dynamic shape: " + _short(e)
    return FAIL, _short(e)


def run_case(case: Case) -> CaseResult:
    """Run `case` through canonicalize, the reference interpreter and TVM; return its CaseResult."""
    import time

    start = time.perf_counter()
    status, stage, message = _run_stages(case)
    return CaseResult(case.name, case.op, status, stage, message, round(time.perf_counter() - start, 3))


_VALUE_NAME = re.compile(r"value '([^']+)'\) must be a constant")


def _run_stages(case: Case) -> tuple[str, str, str]:
    """Run the case; when it is refused only because shape-defining inputs are fed at run time,
    probe it again with those inputs frozen as constants (their test values). The case stays
    `unsupported` (the suite feeds them at run time), but wrong numbers in the probe make it a
    `fail`, and a passing probe is noted in the message ("[passes with ... frozen]")."""
    status, stage, message = _run_once(case, frozenset())
    frozen: set[str] = set()
    probe = (status, stage, message)
    while probe[0] == UNSUPPORTED and probe[2].startswith("dynamic shape"):
        found = _VALUE_NAME.search(probe[2])
        names = [i.name for i in onnx.ModelProto.FromString(case.model).graph.input]
        if found is None or found.group(1) not in names or found.group(1) in frozen:
            break
        frozen.add(found.group(1))
        probe = _run_once(case, frozenset(frozen))
    if not frozen:
        return status, stage, message
    listed = ", ".join(sorted(frozen))
    if probe[0] == FAIL:
        return FAIL, probe[1], f"with run-time input(s) {listed} frozen as constants: {probe[2]}"
    if probe[0] == PASS:
        return status, stage, f"{message} [{FROZEN_PASS} {listed} frozen]"
    return status, stage, message


FROZEN_PASS = "passes with"


def _freeze(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], names: frozenset[str]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    kept = [i for i in copy.graph.input if i.name not in names]
    del copy.graph.input[:]
    copy.graph.input.extend(kept)
    copy.graph.initializer.extend(numpy_helper.from_array(feeds[n], n) for n in sorted(names))
    return copy


def _run_once(case: Case, frozen: frozenset[str]) -> tuple[str, str, str]:
    from mlpc.backends.tvm.backend import check_static_shapes, default_opset
    from mlpc.backends.tvm.build import build, run
    from mlpc.backends.tvm.lower import lower_graph, unsupported_nodes
    from mlpc.frontend import load_model
    from mlpc.ir import ReferenceEvaluator
    from mlpc.pass_infra import PassContext, PassManager
    from mlpc.pipeline import default_pipeline
    from mlpc.targets import get_target

    proto = onnx.ModelProto.FromString(case.model)
    names = [i.name for i in proto.graph.input]
    if any(not isinstance(x, np.ndarray) for x in case.inputs):
        return UNSUPPORTED, "import", "sequence/optional inputs: mlpc compiles tensors only"
    feeds = dict(zip(names, case.inputs))
    if frozen:
        proto = _freeze(proto, feeds, frozen)
        feeds = {n: v for n, v in feeds.items() if n not in frozen}
    stage = "import"
    try:
        target = get_target("host")
        model = load_model(proto).model
        stage = "canonicalize"
        PassManager(default_pipeline(target)).run(model, PassContext(target=target, verify_each=True))
        stage = "reference"
        ref = ReferenceEvaluator(model).run(feeds)
        why = compare(case.outputs, [ref[o.name] for o in model.graph.outputs], case.rtol, case.atol)
        if why is not None:
            return FAIL, stage, why
        stage = "lower"
        graph = model.graph
        opset = default_opset(model)
        if not unsupported_nodes(graph, opset):  # else lower_graph lists them with reasons
            check_static_shapes(graph)
        module = lower_graph(graph, opset)
        stage = "build"
        executable = build(module, target)
        stage = "run"
        order = [feeds[v.name] for v in graph.inputs]
        got = run(executable, order)
    except Exception as e:  # every failure is recorded, none escapes the sweep
        status, message = _classify_error(e, stage)
        return status, stage, message
    why = compare(case.outputs, got, case.rtol, case.atol)
    if why is not None:
        return FAIL, "tvm", why
    return PASS, "", ""


def stable_subset(names: Sequence[str], fraction: float) -> list[str]:
    """Return a deterministic subset (about `fraction` of `names`, by CRC32 of each name), sorted."""
    limit = int(fraction * 1000)
    return sorted(n for n in names if zlib.crc32(n.encode()) % 1000 < limit)
