"""Hostile files and interrupted or racing compiles never leave a partial artifact."""
from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper

import mlpc
from tiny_models import make_tiny_cnn
from mlpc.frontend import load_model


def _model_with_initializer(tensor: onnx.TensorProto, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", tensor.name], ["y"], name="add")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        initializer=[tensor],
    )
    path = tmp_path / "hostile.onnx"
    onnx.save(helper.make_model(graph, ir_version=10), path)
    return path


def test_absurd_initializer_dims_refused_without_allocating(tmp_path):
    tensor = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[10**9, 10**9], raw_data=b"\0" * 8)
    with pytest.raises(mlpc.ModelLoadError, match="'w' claims shape"):
        load_model(_model_with_initializer(tensor, tmp_path))


def test_initializer_data_shorter_than_shape(tmp_path):
    tensor = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2, 3], raw_data=b"\0" * 8)
    with pytest.raises(mlpc.ModelLoadError, match="8 bytes of data but shape \\[2, 3\\] needs 24"):
        load_model(_model_with_initializer(tensor, tmp_path))


def test_absurd_input_shape_refused(tmp_path, tiny_cnn_path):
    with pytest.raises(mlpc.InputError, match="GiB"):
        mlpc.compile(tiny_cnn_path, input_shapes={"x": (10**9, 3, 8, 8)})


def test_absurd_intermediate_refused_before_lowering(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], ["y"], name="blowup")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[onnx.numpy_helper.from_array(__import__("numpy").array([10**6, 10**6], "int64"), "shape")],
    )
    path = tmp_path / "blowup.onnx"
    onnx.save(helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(mlpc.LoweringError, match="'blowup'.*GiB"):
        mlpc.compile(path)


def test_random_bytes_refused(tmp_path):
    import numpy as np

    for seed in range(20):
        path = tmp_path / f"noise{seed}.onnx"
        path.write_bytes(np.random.default_rng(seed).bytes(64 + 97 * seed))
        with pytest.raises(mlpc.ModelLoadError):
            load_model(path)


def _compile_into(model_path, out, barrier):
    barrier.wait()
    mlpc.compile(model_path, output_dir=out)


def test_concurrent_compiles_leave_one_complete_artifact(tmp_path):
    model_path = tmp_path / "m.onnx"
    onnx.save(make_tiny_cnn(batch=1), model_path)
    out = tmp_path / "out"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_compile_into, args=(model_path, out, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    artifact = mlpc.load(out)  # checksums of every file agree with the one manifest
    assert artifact.run({"x": __import__("numpy").zeros((1, 3, 8, 8), "float32")})["logits"].shape == (1, 4)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.") and p.name != ".out.lock") == []


def test_killed_compile_leaves_no_partial_artifact(tmp_path):
    model_path = tmp_path / "m.onnx"
    onnx.save(make_tiny_cnn(batch=1), model_path)
    out = tmp_path / "out"
    script = (
        "import sys, mlpc.artifact as a\n"
        "orig = a.sha256_file\n"
        "def slow(p):\n"
        "    print('WRITING', flush=True); import time; time.sleep(60)\n"
        "a.sha256_file = slow\n"
        "import mlpc; mlpc.compile(sys.argv[1], output_dir=sys.argv[2])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(model_path), str(out)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITING"  # the library is on disk, the manifest is not
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
    assert leftovers, "the killed compile's temporary directory should still be there before the next run"
    mlpc.compile(model_path, output_dir=out)  # the next compile cleans up after the killed one
    assert mlpc.load(out) is not None
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")] == []
