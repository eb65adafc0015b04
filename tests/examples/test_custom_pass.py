"""examples/custom_pass.py end to end: loaded as a plugin by `mlpc compile`, numerics kept."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mlpc.cli import main
from mlpc.pass_registry import unregister_pass

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "custom_pass.py"


@pytest.fixture
def swish_model(tmp_path):
    """Conv → x·sigmoid(x) → Conv → sigmoid(x)·x (operands commuted) → Relu."""
    rng = np.random.default_rng(0)
    w1 = onnx.numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = onnx.numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["a"], ["sa"], name="sig1"),
        helper.make_node("Mul", ["a", "sa"], ["b"], name="mul1"),
        helper.make_node("Conv", ["b", "w2"], ["c"], name="conv2"),
        helper.make_node("Sigmoid", ["c"], ["sc"], name="sig2"),
        helper.make_node("Mul", ["sc", "c"], ["d"], name="mul2"),
        helper.make_node("Relu", ["d"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(nodes, "swish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], initializer=[w1, w2])
    path = tmp_path / "swish.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


@pytest.fixture(autouse=True)
def _forget_plugin():
    yield
    unregister_pass("fuse-silu")


def test_plugin_rewrites_and_verifies(swish_model, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["compile", str(swish_model), "-o", str(out), "--pass-plugin", str(PLUGIN), "--verify",
                 "--dump-ir", str(tmp_path / "ir")])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stats"]["ops"] == {"Conv": 2, "mlpc::SiLU": 2, "Relu": 1}
    assert manifest["verification"]["passed"]
    log = [(p["name"], p["modified"]) for p in manifest["passes"]]
    assert log[:2] == [("canonicalize", True), ("fuse-silu", True)]
    dumps = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert dumps[0] == "00-input.txt" and any("fuse-silu" in d for d in dumps)
    assert "SiLU" in (tmp_path / "ir" / dumps[-1]).read_text()


def test_disable_pass_keeps_the_graph(swish_model, tmp_path):
    out = tmp_path / "out"
    assert main(["compile", str(swish_model), "-o", str(out), "--pass-plugin", str(PLUGIN),
                 "--disable-pass", "fuse-silu"]) == 0
    ops = json.loads((out / "manifest.json").read_text())["stats"]["ops"]
    assert ops["Mul"] == 2 and "mlpc::SiLU" not in ops


def test_passes_lists_the_plugin(capsys):
    assert main(["passes", "--pass-plugin", str(PLUGIN), "--json"]) == 0
    names = [p["name"] for p in json.loads(capsys.readouterr().out)]
    assert names.index("fuse-silu") == names.index("canonicalize") + 1


def test_unknown_pass_names_are_errors(swish_model, tmp_path, capsys):
    assert main(["compile", str(swish_model), "-o", str(tmp_path / "o"), "--disable-pass", "no-such"]) == 2
    assert "no pass named 'no-such'" in capsys.readouterr().err
    assert main(["compile", str(swish_model), "-o", str(tmp_path / "o"), "--passes", "canonicalize,nope"]) == 2
