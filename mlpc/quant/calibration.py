"""Calibration data and the runs that observe a model's tensors on it.

Data comes from an `.npz` keyed by input name (first axis = samples), a directory of `.npy`
files (`<input name>.npy` each with a sample axis, or — for a one-input model — one file per
sample), or a dict of arrays. `CalibrationSet` checks it against the model's inputs before
anything runs. `run_calibration` runs the float model sample by sample — compiled with TVM (the
tensors to observe added as extra graph outputs) or with mlpc's reference evaluator — and hands
every observed tensor to a callback, under a rich progress bar.

    >>> data = CalibrationSet.load("calib.npz", graph)
    >>> run_calibration(graph, data, ["conv1_in"], on_sample=lambda vals: ...)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from mlpc.errors import InputError, QuantizationError

logger = logging.getLogger(__name__)

ENGINES = ("tvm", "reference")


def _read_arrays(path: Path) -> dict[str, np.ndarray] | list[tuple[str, np.ndarray]]:
    try:
        if path.is_dir():
            files = sorted(path.glob("*.npy"))
            if not files:
                raise QuantizationError(f"calibration directory {path} holds no .npy files")
            return [(f.stem, np.load(f, allow_pickle=False)) for f in files]
        if path.suffix == ".npy":
            return [(path.stem, np.load(path, allow_pickle=False))]
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise QuantizationError(f"calibration data {path}: not a readable .npz/.npy ({e})") from e


def _dims(value: ir.Value) -> list[int | str]:
    if value.shape is None:
        return []
    return [d if isinstance(d, int) else str(d) for d in value.shape.dims]


@dataclass
class CalibrationSet:
    """Calibration samples: `samples[i]` maps every graph input name to one array of its shape."""

    samples: list[dict[str, np.ndarray]]
    source: str = "<arrays>"

    def __len__(self) -> int:
        return len(self.samples)

    @classmethod
    def load(cls, data: Any, graph: ir.Graph, limit: int | None = None) -> CalibrationSet:
        """Read and check calibration data for `graph`'s inputs.

        `data`: a path (.npz, .npy, directory of .npy), a dict {input name: array with a sample
        axis}, or a CalibrationSet. `limit` keeps the first samples only. Raises QuantizationError
        for an empty set, unknown or missing inputs, wrong dtypes or shapes (naming the input, the
        expected and the actual shape) and NaN/Inf.
        """
        if isinstance(data, CalibrationSet):
            return data if limit is None else cls(data.samples[:limit], data.source)
        inputs = [v for v in graph.inputs if v.const_value is None]
        if isinstance(data, (str, os.PathLike)):
            path = Path(data)
            if not path.exists():
                raise QuantizationError(f"calibration data {path}: no such file or directory")
            source = str(path)
            arrays = _read_arrays(path)
            if isinstance(arrays, list):
                arrays = _keyed(arrays, inputs, source)
        elif isinstance(data, Mapping):
            source, arrays = "<dict>", {k: np.asarray(v) for k, v in data.items()}
        else:
            raise QuantizationError(
                f"calibration data must be a path (.npz, .npy or a directory) or a dict of arrays, got {type(data).__name__}"
            )
        return cls(_split_samples(arrays, inputs, source, limit), source)


def _keyed(files: list[tuple[str, np.ndarray]], inputs: list[ir.Value], source: str) -> dict[str, np.ndarray]:
    names = {v.name for v in inputs}
    if all(stem in names for stem, _ in files):
        return dict(files)
    if len(inputs) != 1:
        raise QuantizationError(
            f"calibration data {source}: the .npy files must be named after the model's inputs "
            f"({', '.join(sorted(names))}); found {', '.join(stem + '.npy' for stem, _ in files[:5])}"
        )
    expected = _dims(inputs[0])
    stacked = []
    for stem, arr in files:  # one sample per file (or a batch of samples with a leading axis)
        stacked.append(arr[None] if arr.ndim <= len(expected) else arr)
    ranks = {a.ndim for a in stacked}
    if len(ranks) != 1:
        raise QuantizationError(f"calibration data {source}: the .npy files have different ranks")
    try:
        return {inputs[0].name: np.concatenate(stacked)}
    except ValueError as e:
        raise QuantizationError(f"calibration data {source}: the .npy files have different shapes ({e})") from e


def _sample_view(name: str, arr: np.ndarray, expected: list[int | str], source: str) -> Callable[[int], np.ndarray]:
    """How to take sample i of `arr` for an input of shape `expected`."""
    def matches(shape: tuple[int, ...]) -> bool:
        return len(shape) == len(expected) and all(not isinstance(e, int) or e == s for e, s in zip(expected, shape))

    if matches(arr.shape[1:]):
        return lambda i: arr[i]
    batch_of_one = bool(expected) and (expected[0] == 1 or not isinstance(expected[0], int))
    if batch_of_one and matches((1, *arr.shape[1:])):
        return lambda i: arr[i : i + 1]
    raise QuantizationError(
        f"calibration data {source}: input {name!r} expects samples of shape {expected} "
        f"(stacked along a first sample axis), got an array of shape {list(arr.shape)}"
    )


def _split_samples(
    arrays: dict[str, np.ndarray], inputs: list[ir.Value], source: str, limit: int | None
) -> list[dict[str, np.ndarray]]:
    names = [v.name for v in inputs]
    unknown = sorted(set(arrays) - set(names))
    missing = [n for n in names if n not in arrays]
    if unknown or missing:
        parts = ([f"no data for inputs {missing}"] if missing else []) + ([f"unknown inputs {unknown}"] if unknown else [])
        raise QuantizationError(f"calibration data {source}: {'; '.join(parts)}; the model takes {names}")
    counts = {n: len(arrays[n]) if arrays[n].ndim else 0 for n in names}
    if not names or any(c == 0 for c in counts.values()):
        raise QuantizationError(f"calibration data {source} is empty: give at least one sample per input")
    if len(set(counts.values())) > 1:
        raise QuantizationError(f"calibration data {source}: inputs have different sample counts {counts}")
    views = {}
    for value in inputs:
        arr = arrays[value.name]
        expected_dtype = value.dtype.numpy() if value.dtype is not None else None
        if expected_dtype is not None and arr.dtype != expected_dtype:
            raise QuantizationError(
                f"calibration data {source}: input {value.name!r} has dtype {arr.dtype}, the model expects {np.dtype(expected_dtype)}"
            )
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = int(np.argmax(~np.isfinite(arr).reshape(len(arr), -1).all(axis=1)))
            raise QuantizationError(f"calibration data {source}: input {value.name!r} holds NaN or Inf (sample {bad})")
        views[value.name] = _sample_view(value.name, arr, _dims(value), source)
    count = next(iter(counts.values()))
    if limit is not None:
        count = min(count, limit)
    return [{n: views[n](i) for n in names} for i in range(count)]


Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def make_runner(graph: ir.Graph, observe: Sequence[str], first: dict[str, np.ndarray], engine: str = "tvm",
                opset: int | None = None) -> Runner:
    """A function running the float `graph` on one sample ({input: array}) and returning the
    values named in `observe`. `engine` "tvm" builds the graph once for the host with those
    values as extra outputs (input shapes fixed from the sample `first`); "reference" uses
    mlpc's NumPy reference evaluator."""
    if engine not in ENGINES:
        raise QuantizationError(f"calibration engine {engine!r} is not one of {', '.join(ENGINES)}")
    if engine == "tvm":
        return _tvm_runner(graph, observe, first, opset)
    return _reference_runner(graph, observe)


def run_calibration(
    graph: ir.Graph,
    data: CalibrationSet,
    observe: Sequence[str],
    on_sample: Callable[..., None],
    engine: str = "tvm",
    progress: bool = False,
    opset: int | None = None,
    float_runner: Runner | None = None,
) -> None:
    """Run `graph` on every calibration sample and call `on_sample(values)` with the values
    named in `observe` (graph inputs and intermediates alike); with `float_runner` (see
    `make_runner`), call `on_sample(values, float_values)` with its results on the same sample.
    """
    if len(data) == 0:
        raise QuantizationError(f"calibration data {data.source} is empty")
    run = make_runner(graph, observe, data.samples[0], engine, opset)
    with _progress(progress, len(data), f"calibrating on {len(data)} samples ({engine})") as advance:
        for sample in data.samples:
            if float_runner is None:
                on_sample(run(sample))
            else:
                on_sample(run(sample), float_runner(sample))
            advance()


def _observed_model(graph: ir.Graph, observe: Sequence[str], first: dict[str, np.ndarray], opset: int | None) -> ir.Model:
    """A copy of `graph` whose outputs are the observed values, its inputs fixed to the sample shapes."""
    opsets = dict(graph.opset_imports)
    model = ir.Model(graph, ir_version=10)
    proto = ir.serde.serialize_model(model)
    copy = ir.serde.deserialize_model(proto)
    values = {v.name: v for v in copy.graph.inputs}
    for node in copy.graph:
        values.update({v.name: v for v in node.outputs})
    copy.graph.outputs.clear()
    for name in observe:
        if name not in values:
            raise QuantizationError(f"cannot observe {name!r}: no such value in the graph")
        copy.graph.outputs.append(values[name])
    for value in copy.graph.inputs:
        if value.name in first:
            value.shape = ir.Shape(first[value.name].shape)
    if opset is not None:
        opsets[""] = opset
    copy.graph.opset_imports.update(opsets)
    return copy


def _tvm_runner(graph: ir.Graph, observe: Sequence[str], first: dict[str, np.ndarray], opset: int | None):
    from mlpc.backends.tvm.backend import default_opset
    from mlpc.backends.tvm.build import build
    from mlpc.backends.tvm.lower import lower_graph
    from mlpc.passes.canonicalize import CanonicalizePass
    from mlpc.pass_infra import PassContext
    from mlpc.targets import get_target

    model = _observed_model(graph, observe, first, opset)
    if any(not isinstance(d, int) for v in model.graph.inputs for d in (v.shape.dims if v.shape else ())):
        raise QuantizationError("calibration needs static input shapes; give --input-shape NAME=DIMS")
    CanonicalizePass()(model.graph, PassContext())
    names = [v.name for v in model.graph.inputs]
    outputs = [v.name for v in model.graph.outputs]
    executable = build(lower_graph(model.graph, default_opset(model)), get_target("host"))
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, tvm.cpu())
    main = vm["main"]

    def run(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            result = main(*[tvm.runtime.tensor(np.asarray(sample[n], order="C")) for n in names])
        except Exception as e:
            raise InputError(f"calibration run failed: {e}") from e
        return {name: item.numpy() for name, item in zip(outputs, result)}

    return run


def _reference_runner(graph: ir.Graph, observe: Sequence[str]):
    from mlpc.ir import ReferenceEvaluator

    evaluator = ReferenceEvaluator(ir.Model(graph, ir_version=10))
    graph_inputs = {v.name for v in graph.inputs}

    def run(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        wanted = [n for n in observe if n not in graph_inputs]
        out = evaluator.run(sample, wanted) if wanted else {}
        out.update({n: sample[n] for n in observe if n in graph_inputs})
        return out

    return run


class _progress:
    """A rich progress bar on stderr (or nothing): `with _progress(on, total, text) as advance`."""

    def __init__(self, enabled: bool, total: int, text: str) -> None:
        self.enabled, self.total, self.text = enabled, total, text
        self._bar: Any = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self._bar.__enter__()
        task = self._bar.add_task(self.text, total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
