"""Bad input to `mlpc compile`: one clear line, exit code 2, nothing left on disk."""
from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from mlpc.cli import main


def _compile(capsys, *args):
    code = main(["compile", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def _assert_clean_failure(code, message, out_dir, *needles):
    assert code == 2, message
    assert "Traceback" not in message
    assert message.startswith("error:"), message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert not out_dir.exists()
    leftovers = [p.name for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}.tmp")]
    assert leftovers == []


def test_missing_file(tmp_path, capsys):
    out = tmp_path / "out"
    code, msg = _compile(capsys, tmp_path / "nope.onnx", "-o", out)
    _assert_clean_failure(code, msg, out, "nope.onnx", "no such file")


def test_not_onnx(tmp_path, capsys):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is not a model\n" * 20)
    out = tmp_path / "out"
    code, msg = _compile(capsys, bad, "-o", out)
    _assert_clean_failure(code, msg, out, "notes.onnx", "not")


def test_truncated(tmp_path, capsys, tiny_cnn_path):
    data = tiny_cnn_path.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code, msg = _compile(capsys, cut, "-o", out)
    _assert_clean_failure(code, msg, out, "cut.onnx")


def _save(tmp_path, nodes, name="m.onnx", inputs=("x",), domains=()):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(i, TensorProto.FLOAT, [2, 3]) for i in inputs],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, [2, 3])],
    )
    path = tmp_path / name
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domains]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=10), path)
    return path


def test_cycle(tmp_path, capsys):
    path = _save(tmp_path, [
        helper.make_node("Add", ["x", "b"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["b"], name="second"),
    ])
    out = tmp_path / "out"
    code, msg = _compile(capsys, path, "-o", out)
    _assert_clean_failure(code, msg, out, "cycle", "first", "second")


def test_dangling_input(tmp_path, capsys):
    path = _save(tmp_path, [helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")])
    out = tmp_path / "out"
    code, msg = _compile(capsys, path, "-o", out)
    _assert_clean_failure(code, msg, out, "ghost", "adder")


def test_unsupported_ops_listed_together(tmp_path, capsys):
    path = _save(tmp_path, [
        helper.make_node("Relu", ["x"], ["a"], name="ok"),
        helper.make_node("Frobnicate", ["a"], ["b"], name="frob1", domain="acme"),
        helper.make_node("Frobnicate", ["b"], ["c"], name="frob2", domain="acme"),
        helper.make_node("Relu", ["c"], ["y"], name="ok2"),
    ], domains=("acme",))
    out = tmp_path / "out"
    code, msg = _compile(capsys, path, "-o", out)
    _assert_clean_failure(code, msg, out, "frob1", "frob2", "Frobnicate")


def test_symbolic_dim_without_input_shape(tiny_cnn_path, tmp_path, capsys):
    out = tmp_path / "out"
    code, msg = _compile(capsys, tiny_cnn_path, "-o", out)
    _assert_clean_failure(code, msg, out, "'x'", "'N'", "--input-shape")


def test_input_shape_for_unknown_name(tiny_cnn_path, tmp_path, capsys):
    out = tmp_path / "out"
    code, msg = _compile(capsys, tiny_cnn_path, "-o", out, "--input-shape", "image=1x3x8x8")
    _assert_clean_failure(code, msg, out, "'image'", "'x'")


@pytest.mark.parametrize("spec", ["x=1x3x8", "x=1xAx8x8", "x1x3x8x8", "x=1x3x9x8"])
def test_bad_input_shape_values(tiny_cnn_path, tmp_path, capsys, spec):
    out = tmp_path / "out"
    code, msg = _compile(capsys, tiny_cnn_path, "-o", out, "--input-shape", spec)
    _assert_clean_failure(code, msg, out, "--input-shape")


def test_unknown_target_suggests(tiny_cnn_static_path, tmp_path, capsys):
    out = tmp_path / "out"
    code, msg = _compile(capsys, tiny_cnn_static_path, "-o", out, "--target", "x86/avx")
    _assert_clean_failure(code, msg, out, "'x86/avx'", "did you mean", "'x86/avx2'")


def test_output_dir_not_an_artifact(tiny_cnn_static_path, tmp_path, capsys):
    out = tmp_path / "mydata"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, msg = _compile(capsys, tiny_cnn_static_path, "-o", out)
    assert code == 2 and "not an mlpc artifact" in msg and "Traceback" not in msg
    assert (out / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".mydata.tmp")) == []


def test_missing_option_is_usage_error(tiny_cnn_static_path, capsys):
    assert main(["compile", str(tiny_cnn_static_path)]) == 2
