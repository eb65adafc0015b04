"""Load ONNX files into onnx-ir, refusing malformed ones with a clear message."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from mlpc.errors import ModelLoadError

logger = logging.getLogger(__name__)


def load_onnx_file(path: str | os.PathLike) -> ir.Model:
    """Read an ONNX file (external data included) and return it as an onnx-ir Model.

    Raises ModelLoadError naming the file when it is missing, is not ONNX, is truncated, has
    external data outside its directory, or has a cycle or a dangling input.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, expected an .onnx file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read the file ({e.strerror})") from e
    proto = parse_onnx_bytes(data, source=str(path))
    _check_external_data(proto, path.parent, source=str(path))
    if _uses_external_data(proto):
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{path}: cannot read its external data: {e}") from e
    return proto_to_ir(proto, source=str(path))


def parse_onnx_bytes(data: bytes, source: str = "<bytes>") -> onnx.ModelProto:
    """Parse serialized ONNX bytes into a ModelProto, or raise ModelLoadError naming `source`."""
    if not data:
        raise ModelLoadError(f"{source}: the file is empty, not an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelLoadError(
            f"{source}: not a valid ONNX model (protobuf parse failed: the file is truncated or is not ONNX)"
        ) from e
    if not proto.HasField("graph") or (not proto.graph.node and not proto.graph.output):
        raise ModelLoadError(f"{source}: not an ONNX model (it has no graph)")
    if not proto.opset_import:
        raise ModelLoadError(f"{source}: the model declares no opset_import; re-export it with an opset")
    return proto


def proto_to_ir(proto: onnx.ModelProto, source: str = "<model>") -> ir.Model:
    """Check a ModelProto's structure and convert it to an onnx-ir Model in topological order."""
    check_graph_structure(proto.graph, source)
    check_tensor_sizes(proto.graph, source)
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as e:  # onnx-ir raises plain exceptions for malformed protos
        raise ModelLoadError(f"{source}: malformed ONNX model: {e}") from e
    model.graph.sort()
    return model


def check_graph_structure(graph: onnx.GraphProto, source: str) -> None:
    """Raise ModelLoadError for dangling inputs, values produced twice, cycles or missing outputs."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    available |= {t.values.name for t in graph.sparse_initializer}
    producer: dict[str, str] = {}
    for index, node in enumerate(graph.node):
        label = _node_label(node, index)
        for out in node.output:
            if not out:
                continue
            if out in producer or out in available:
                raise ModelLoadError(f"{source}: value {out!r} is produced twice (again by {label})")
            producer[out] = label
    dangling = []
    deps = nx.DiGraph()
    for index, node in enumerate(graph.node):
        label = _node_label(node, index)
        deps.add_node(label)
        for name in node.input:
            if not name or name in available:
                continue
            if name not in producer:
                dangling.append(f"{name!r} (input of {label})")
            else:
                deps.add_edge(producer[name], label)
    if dangling:
        raise ModelLoadError(
            f"{source}: the graph uses values nothing defines: {', '.join(dangling)}; "
            "the model is incomplete or was cut badly"
        )
    try:
        cycle = nx.find_cycle(deps)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        names = " -> ".join([edge[0] for edge in cycle] + [cycle[0][0]])
        raise ModelLoadError(f"{source}: the graph has a cycle: {names}")
    missing = [o.name for o in graph.output if o.name not in producer and o.name not in available]
    if missing:
        raise ModelLoadError(f"{source}: graph outputs {missing} are produced by no node")
    initialized = {t.name for t in graph.initializer}
    untyped = [i.name for i in graph.input if i.name not in initialized and i.type.HasField("tensor_type")
               and i.type.tensor_type.elem_type == onnx.TensorProto.UNDEFINED]
    if untyped:
        raise ModelLoadError(
            f"{source}: graph inputs {untyped} have no element type (UNDEFINED); re-export the model "
            "with typed inputs"
        )


# No tensor of a model compiled on these machines can be larger than this; bigger claims are
# corrupt or hostile files, refused before anything is allocated.
MAX_TENSOR_BYTES = 1 << 34


def tensor_bytes(dims: Sequence[int], elem_type: int) -> int:
    """Return the bytes a tensor of `dims` and ONNX `elem_type` needs (Python ints: never allocates).

    Element types without a fixed size (strings) or unknown to onnx (0 = UNDEFINED, out-of-range
    numbers from a corrupt file) count as 0 bytes: their size is checked elsewhere or not at all.
    """
    count = 1
    for d in dims:
        count *= max(int(d), 0)
    try:
        bits = 8 * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except (KeyError, TypeError, ValueError):  # found by tests/fuzz/fuzz_onnx_frontend.py
        return 0
    if elem_type == onnx.TensorProto.STRING:
        return 0
    if elem_type in _SUB_BYTE_TYPES:
        bits = _SUB_BYTE_TYPES[elem_type]
    return (count * bits + 7) // 8


_SUB_BYTE_TYPES = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}
if hasattr(onnx.TensorProto, "INT2"):
    _SUB_BYTE_TYPES.update({onnx.TensorProto.INT2: 2, onnx.TensorProto.UINT2: 2})


def check_tensor_sizes(graph: onnx.GraphProto, source: str) -> None:
    """Raise ModelLoadError for tensors whose declared size is absurd or disagrees with their data."""
    for tensor in _all_tensors(graph):
        if any(d < 0 for d in tensor.dims):
            raise ModelLoadError(f"{source}: tensor {tensor.name!r} has a negative dimension {list(tensor.dims)}")
        try:
            need = tensor_bytes(tensor.dims, tensor.data_type)
        except (TypeError, KeyError, ValueError):
            continue  # strings and unknown types carry no fixed size
        if need > MAX_TENSOR_BYTES:
            raise ModelLoadError(
                f"{source}: tensor {tensor.name!r} claims shape {list(tensor.dims)} ({need >> 30} GiB); "
                "refusing a corrupt or hostile file"
            )
        if tensor.data_location != onnx.TensorProto.EXTERNAL and tensor.HasField("raw_data"):
            if len(tensor.raw_data) != need:
                raise ModelLoadError(
                    f"{source}: tensor {tensor.name!r} has {len(tensor.raw_data)} bytes of data but shape "
                    f"{list(tensor.dims)} needs {need}; the file is corrupt"
                )
    for value in [*graph.input, *graph.output, *graph.value_info]:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim if d.HasField("dim_value")]
        try:
            need = tensor_bytes(dims, value.type.tensor_type.elem_type)
        except (TypeError, KeyError, ValueError):
            continue
        if need > MAX_TENSOR_BYTES:
            raise ModelLoadError(
                f"{source}: value {value.name!r} declares shape {dims} ({need >> 30} GiB); "
                "refusing a corrupt or hostile file"
            )


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return f"node {node.name!r} ({node.op_type})" if node.name else f"node #{index} ({node.op_type})"


def _uses_external_data(proto: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in _all_tensors(proto.graph))


def _all_tensors(graph: onnx.GraphProto):
    """Yield every TensorProto in a graph: initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def _check_external_data(proto: onnx.ModelProto, base_dir: Path, source: str) -> None:
    """Refuse external-data locations that are absolute or escape the model's directory."""
    base = base_dir.resolve()
    for tensor in _all_tensors(proto.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        # protobuf hands back bytes for a string field that is not UTF-8, and a path with a NUL
        # byte cannot be resolved: both are corrupt (found by tests/fuzz/fuzz_onnx_frontend.py).
        if not isinstance(location, str) or "\0" in location:
            raise ModelLoadError(
                f"{source}: tensor {tensor.name!r} has an external-data location that is not a valid "
                "path (not UTF-8 or containing NUL); the file is corrupt"
            )
        target = (base / location).resolve()
        if not location or os.path.isabs(location) or not target.is_relative_to(base):
            raise ModelLoadError(
                f"{source}: tensor {tensor.name!r} points its external data at {location!r}, "
                "outside the model's directory; refusing to read it"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"{source}: external data file {location!r} of tensor {tensor.name!r} is missing; "
                "copy it next to the model"
            )
