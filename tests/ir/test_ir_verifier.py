"""The verifier: a valid graph passes; each broken invariant is reported naming the culprit.
Also the networkx view and find_cycle."""

from __future__ import annotations

import networkx as nx
import numpy as np
import onnx
import onnx_ir as ir
import pytest

from mlpc.errors import IRVerificationError
from mlpc.ir import QuantParams, find_cycle, set_quant, to_networkx, verify


def _typed(name: str, dtype: ir.DataType, shape: list[int]) -> ir.Value:
    return ir.Value(name=name, type=ir.TensorType(dtype), shape=ir.Shape(shape))


def _node(
    op: str,
    inputs: list[ir.Value | None],
    name: str,
    out: str,
    domain: str = "",
    dtype: ir.DataType | None = None,
    shape: list[int] | None = None,
    **attrs: object,
) -> ir.Node:
    node = ir.node(op, inputs, attributes=attrs or None, domain=domain, name=name)
    v = node.outputs[0]
    v.name = out
    if dtype is not None:
        v.type = ir.TensorType(dtype)
    if shape is not None:
        v.shape = ir.Shape(shape)
    return node


def _int_graph() -> ir.Graph:
    """a:int8[3,6] → IntegerMatMul(b) → acc:int32[3,4] → Requantize → y:int8[3,4]."""
    a = _typed("a", ir.DataType.INT8, [3, 6])
    b = ir.Value(
        name="b",
        const_value=ir.tensor(np.ones((6, 4), np.int8), name="b"),
        type=ir.TensorType(ir.DataType.INT8),
        shape=ir.Shape([6, 4]),
    )
    consts = {
        n: ir.Value(
            name=n,
            const_value=ir.tensor(np.array(v, t), name=n),
            type=ir.TensorType(ir.DataType.from_numpy(np.dtype(t))),
            shape=ir.Shape([]),
        )
        for n, v, t in (("m", 1 << 30, np.int32), ("s", 36, np.int32), ("zp", 0, np.int8))
    }
    mm = _node("IntegerMatMul", [a, b], "mm", "acc", "mlpc", ir.DataType.INT32, [3, 4])
    rq = _node(
        "Requantize",
        [mm.outputs[0], consts["m"], consts["s"], consts["zp"]],
        "rq",
        "y",
        "mlpc",
        ir.DataType.INT8,
        [3, 4],
    )
    return ir.Graph(
        [a],
        [rq.outputs[0]],
        nodes=[mm, rq],
        initializers=[b, *consts.values()],
        opset_imports={"": 21, "mlpc": 1},
        name="int_mlp",
    )


def _expect(graph: ir.Graph | ir.Model, *fragments: str) -> None:
    with pytest.raises(IRVerificationError) as info:
        verify(graph)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_valid_graph_passes() -> None:
    g = _int_graph()
    set_quant(g.inputs[0], QuantParams(bits=8, scale=0.1))
    set_quant(g.initializers["b"], QuantParams(bits=4, scale=np.full(4, 0.5), axis=1))
    verify(g)
    verify(ir.Model(g, ir_version=10))


def test_imported_onnx_model_passes() -> None:
    w = onnx.numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    nodes = [onnx.helper.make_node("Conv", ["x", "w"], ["c"]), onnx.helper.make_node("Relu", ["c"], ["y"])]
    graph = onnx.helper.make_graph(
        nodes,
        "conv",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3, 5, 5])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 2, 3, 3])],
        [w],
    )
    verify(ir.serde.deserialize_model(onnx.helper.make_model(graph)))


def test_dangling_input() -> None:
    g = _int_graph()
    orphan = _typed("ghost", ir.DataType.INT8, [6, 4])
    g.node("mm").replace_input_with(1, orphan)
    _expect(g, "IntegerMatMul node 'mm' input 1 is dangling", "'ghost'")


def test_use_before_definition() -> None:
    g = _int_graph()
    rq = g.node("rq")
    g.remove(rq)
    g.insert_before(g.node("mm"), rq)
    _expect(g, "Requantize node 'rq' uses value 'acc'", "before IntegerMatMul node 'mm' defines it")


def test_cycle_names_the_nodes() -> None:
    x = _typed("x", ir.DataType.FLOAT, [2])
    n1 = _node("Relu", [x], "first", "t1")
    n2 = _node("Neg", [n1.outputs[0]], "second", "t2", dtype=ir.DataType.FLOAT, shape=[2])
    n1.replace_input_with(0, n2.outputs[0])
    g = ir.Graph([x], [n2.outputs[0]], nodes=[n1, n2], opset_imports={"": 21}, name="loop")
    cycle = find_cycle(g)
    assert cycle is not None and {n.name for n in cycle} == {"first", "second"}
    _expect(g, "cycle", "Relu node 'first'", "Neg node 'second'")
    assert find_cycle(_int_graph()) is None


def test_value_produced_twice() -> None:
    x = _typed("x", ir.DataType.FLOAT, [2])
    n1 = _node("Relu", [x], "r1", "t")
    n2 = _node("Neg", [x], "r2", "t")
    n3 = _node("Add", [n1.outputs[0], n2.outputs[0]], "add", "y", dtype=ir.DataType.FLOAT, shape=[2])
    g = ir.Graph([x], [n3.outputs[0]], nodes=[n1, n2, n3], opset_imports={"": 21})
    _expect(g, "value 't' is defined twice: by Relu node 'r1' and by Neg node 'r2'")


def test_missing_output_and_missing_types() -> None:
    g = _int_graph()
    stray = _typed("lost", ir.DataType.INT8, [3, 4])
    g.outputs.append(stray)
    _expect(g, "graph output value 'lost' is not produced by any node")
    g = _int_graph()
    g.inputs[0].type = None
    _expect(g, "graph input value 'a' has no type")


def test_mlpc_op_shape_mismatch() -> None:
    g = _int_graph()
    g.node("mm").outputs[0].shape = ir.Shape([3, 5])
    _expect(g, "IntegerMatMul node 'mm': output value 'acc' dim 1 is declared 5, the op gives 4")
    g = _int_graph()
    g.node("rq").outputs[0].type = ir.TensorType(ir.DataType.UINT8)
    _expect(g, "Requantize node 'rq': output value 'y' is declared UINT8, the op gives INT8")
    g = _int_graph()
    g.node("rq").attributes["qmin"] = ir.AttrInt64("qmin", 100)
    g.node("rq").attributes["qmax"] = ir.AttrInt64("qmax", 50)
    _expect(g, "Requantize node 'rq': qmin=100 is greater than qmax=50")


@pytest.mark.parametrize(
    ("value", "qp_json", "fragment"),
    [
        ("a", '{"bits": 12, "scale": 0.1}', "value 'a' has invalid quantization parameters"),
        ("a", '{"bits": 8, "scale": -0.1}', "positive and finite"),
        (
            "b",
            '{"bits": 4, "scale": [0.5, 0.5, 0.5], "axis": 1}',
            "value 'b': per-channel scale has 3 entries but axis 1 has size 4",
        ),
        (
            "b",
            '{"bits": 4, "scale": [0.5], "axis": 2}',
            "value 'b': quantization axis 2 is out of range for rank 2",
        ),
        (
            "a",
            '{"bits": 8, "signed": false, "scale": 0.1}',
            "value 'a' has type INT8 but its quantization range [0, 255]",
        ),
        ("b", '{"bits": 2, "scale": 0.1}', "value 'b' holds values outside its quantization range [-2, 1]"),
    ],
)
def test_bad_quant_params(value: str, qp_json: str, fragment: str) -> None:
    g = _int_graph()
    v = g.inputs[0] if value == "a" else g.initializers[value]
    v.metadata_props["mlpc.quant"] = qp_json
    if value == "b" and 'bits": 2' in qp_json:
        v.const_value = ir.tensor(np.full((6, 4), 3, np.int8), name="b")
    _expect(g, fragment)


def test_networkx_view() -> None:
    g = _int_graph()
    view = to_networkx(g)
    assert isinstance(view, nx.MultiDiGraph)
    assert [view.nodes[k]["op_type"] for k in nx.topological_sort(view)] == ["IntegerMatMul", "Requantize"]
    assert view.nodes[0]["node"] is g.node("mm") and view.nodes[1]["name"] == "rq"
    assert [(u, v, d["value"]) for u, v, d in view.edges(data=True)] == [(0, 1, "acc")]
    full = to_networkx(g, sources=True)
    assert full.nodes["input:a"]["kind"] == "input" and full.has_edge("initializer:b", 0)
    assert {u for u, _ in full.in_edges(1)} == {0, "initializer:m", "initializer:s", "initializer:zp"}
