"""Artifacts: round trip through disk, checksums, target checks, `mlpc run`."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

import mlpc
from mlpc.cli import main


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from tiny_models import make_tiny_cnn
    import onnx

    root = tmp_path_factory.mktemp("artifact")
    model_path = root / "tiny.onnx"
    onnx.save(make_tiny_cnn(batch=2), model_path)
    artifact = mlpc.compile(model_path, target="host", output_dir=root / "out")
    return model_path, artifact


def _ort(model_path, x):
    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _unaligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of `a` whose data starts 4 bytes past a 64-byte boundary."""
    raw = np.empty(a.nbytes + 128, np.uint8)
    start = -raw.ctypes.data % 64 + 4
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def test_unaligned_inputs_are_staged_and_outputs_never_change_afterwards(built):
    model_path, artifact = built
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((2, 3, 8, 8)).astype(np.float32) for _ in range(2)]
    first = artifact.run({"x": _unaligned(xs[0])})["logits"]
    kept = first.copy()
    second = artifact.run({"x": _unaligned(xs[1])})["logits"]  # reuses the staging buffer
    np.testing.assert_array_equal(first, kept)
    for x, got in zip(xs, (first, second)):
        ref = _ort(model_path, x)
        assert np.max(np.abs(got - ref)) <= 1e-4 * np.max(np.abs(ref))


def test_round_trip_matches_onnxruntime(built):
    model_path, artifact = built
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    reloaded = mlpc.load(artifact.path)
    got = reloaded.run({"x": x})["logits"]
    ref = _ort(model_path, x)
    assert np.max(np.abs(got - ref)) <= 1e-4 * np.max(np.abs(ref))
    manifest = json.loads((artifact.path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.so"}
    assert manifest["inputs"] == [{"name": "x", "shape": [2, 3, 8, 8], "dtype": "float32"}]
    assert manifest["stats"]["macs"] == 2 * 8 * 8 * 8 * 27 + 2 * 4 * 8
    assert sum(manifest["backend"]["kernel_macs"].values()) == manifest["stats"]["macs"]


def test_run_accepts_list_and_array_and_casts_float64(built):
    _, artifact = built
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8))
    a = artifact.run(x)["logits"]
    b = artifact.run([x.astype(np.float32)])["logits"]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "inputs, needle",
    [
        ({"y": np.zeros((2, 3, 8, 8), np.float32)}, "missing 'x'"),
        ({"x": np.zeros((1, 3, 8, 8), np.float32)}, "expected shape (2, 3, 8, 8)"),
        ({"x": np.zeros((2, 3, 8, 8), np.complex64)}, "expected float32"),
    ],
)
def test_bad_run_inputs(built, inputs, needle):
    with pytest.raises(mlpc.InputError, match=None) as info:
        built[1].run(inputs)
    assert needle in str(info.value)


def test_tampered_artifact_refused(built, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built[1].path, copy)
    lib = copy / "model.so"
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lib.write_bytes(bytes(data))
    with pytest.raises(mlpc.ArtifactError, match="checksum of 'model.so'"):
        mlpc.load(copy)


def test_foreign_target_refused_at_load(built, tmp_path):
    import shutil

    copy = tmp_path / "foreign"
    shutil.copytree(built[1].path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["target"]["arch"] = "aarch64"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(mlpc.TargetError, match="built for aarch64"):
        mlpc.load(copy)


def test_recompile_replaces_artifact(built, tmp_path):
    model_path, _ = built
    out = tmp_path / "again"
    first = mlpc.compile(model_path, output_dir=out)
    second = mlpc.compile(model_path, output_dir=out)
    assert first.path == second.path and (out / "manifest.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".again.")] in ([], [".again.lock"])


def test_cli_run_npz_and_npy(built, tmp_path, capsys):
    model_path, artifact = built
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    np.save(tmp_path / "in.npy", x)
    assert main(["run", str(artifact.path), "--inputs", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o1.npz")]) == 0
    assert main(["run", str(artifact.path), "--inputs", str(tmp_path / "in.npy"), "-o", str(tmp_path / "o2.npz")]) == 0
    o1 = np.load(tmp_path / "o1.npz")["logits"]
    o2 = np.load(tmp_path / "o2.npz")["logits"]
    np.testing.assert_array_equal(o1, o2)
    ref = _ort(model_path, x)
    assert np.max(np.abs(o1 - ref)) <= 1e-4 * np.max(np.abs(ref))
    np.savez(tmp_path / "bad.npz", image=x)
    capsys.readouterr()
    assert main(["run", str(artifact.path), "--inputs", str(tmp_path / "bad.npz"), "-o", str(tmp_path / "o3.npz")]) == 2
    assert "missing 'x'" in capsys.readouterr().err
    assert not (tmp_path / "o3.npz").exists()


def test_cli_compile_verify_and_inspect(tiny_cnn_path, tmp_path, capsys):
    out = tmp_path / "art"
    code = main(["compile", str(tiny_cnn_path), "-o", str(out), "--input-shape", "x=3x3x8x8", "--verify"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "passed" in text and "onnxruntime" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["verification"]["passed"] and manifest["verification"]["outputs"][0]["rel_err"] <= 1e-4
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    # the layout pass may have made the conv channels-last (mlpc::ConvNHWC)
    assert info["kind"] == "artifact" and info["ops"].get("Conv", 0) + info["ops"].get("mlpc::ConvNHWC", 0) == 1
    assert main(["inspect", str(tiny_cnn_path), "--json", "--input-shape", "x=1x3x8x8"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 8 * 27 + 8 + 32 + 4
    assert info["macs"] == 8 * 8 * 8 * 27 + 4 * 8


def test_cli_targets_json(capsys):
    assert main(["targets", "--json"]) == 0
    names = [t["name"] for t in json.loads(capsys.readouterr().out)]
    assert names[0] == "host" and "x86/avx2" in names


def test_scalar_input_runs():
    # Found by the ONNX node conformance sweep (test_gemm_default_scalar_bias): a 0-d input was
    # passed through np.ascontiguousarray, which makes it 1-D, and the VM refused it.
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Add", ["a", "c"], ["y"])], "scalar_in", [a, c], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    art = mlpc.compile(model, target="host")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = art.run({"a": x, "c": np.array(3.14, np.float32)})["y"]
    np.testing.assert_allclose(got, x + np.float32(3.14))


def test_large_inputs_aligned_unaligned_or_strided_give_the_same_result(tmp_path):
    """Inputs above the staging size go to TVM without a copy when aligned; unaligned or
    non-contiguous ones are copied; all must compute the same."""
    import onnx
    from onnx import TensorProto, helper

    from mlpc.runtime import aligned_empty

    shape = [1, 32, 32, 32]  # 128 KiB of float32
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "x"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "big.onnx")
    artifact = mlpc.compile(tmp_path / "big.onnx", target="host", output_dir=tmp_path / "out")
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    aligned = aligned_empty(x.shape, x.dtype)
    aligned[...] = x
    strided = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # same values, F-order
    assert not strided.flags.c_contiguous
    expected = np.maximum(x, 0) * x
    for variant in (aligned, _unaligned(x), strided):
        np.testing.assert_array_equal(artifact.run({"x": variant})["y"], expected)
    aligned[...] = -x  # a later call sees the new values of the same array
    np.testing.assert_array_equal(artifact.run({"x": aligned})["y"], np.maximum(-x, 0) * -x)
