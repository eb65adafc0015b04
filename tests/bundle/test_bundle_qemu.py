"""aarch64 bundles run under qemu-user: results match the host build; damaged, foreign and
malformed inputs are refused with one clear message."""
from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import mlpc
from mlpc.artifact import sha256_file
from mlpc.backends.tvm.cross import toolchain
from mlpc.bundle import open_bundle
from mlpc.cli import main

from .conftest import ARM_TARGET, require_arm

REL_TOL = 1e-4


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


@pytest.mark.parametrize("name", ["resnet", "transformer"])
def test_bundle_under_qemu_matches_host_build(built_models, tmp_path, capsys, name):
    model = built_models[name]
    feeds = tmp_path / "in.npz"
    np.savez(feeds, **model.inputs)
    out = tmp_path / "out.npz"
    assert main(["run", str(model.bundle), "--inputs", str(feeds), "-o", str(out)]) == 0, capsys.readouterr().err
    expected = model.host.run(model.inputs)
    with np.load(out) as got:
        assert sorted(got.files) == sorted(expected)
        for key, ref in expected.items():
            assert got[key].shape == ref.shape and got[key].dtype == ref.dtype
            assert _rel_err(got[key], ref) <= REL_TOL, key


def test_arm_artifact_directory_runs_under_qemu_and_load_refuses(resnet, tmp_path, capsys):
    feeds = tmp_path / "x.npy"
    np.save(feeds, resnet.inputs["x"].astype(np.float64))  # cast like the host path does
    out = tmp_path / "out.npz"
    assert main(["run", str(resnet.arm.path), "--inputs", str(feeds), "-o", str(out)]) == 0, capsys.readouterr().err
    with np.load(out) as got:
        assert _rel_err(got["logits"], resnet.host.run(resnet.inputs)["logits"]) <= REL_TOL
    with pytest.raises(mlpc.TargetError, match="mlpc run"):
        mlpc.load(resnet.arm.path)
    with pytest.raises(mlpc.TargetError, match="mlpc run"):
        resnet.arm.run(resnet.inputs)


def _extracted(bundle: Path, dest: Path) -> Path:
    with tarfile.open(bundle) as tar:
        tar.extractall(dest, filter="data")
    return dest / bundle.name.removesuffix(".tar.gz")


def _runner(root: Path, *args: str) -> subprocess.CompletedProcess:
    chain = toolchain("aarch64")
    return subprocess.run([chain.qemu, "-L", str(chain.sysroot), str(root / "bin" / "mlpc-run"),
                           "--bundle", str(root), *args], capture_output=True, text=True)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _retar(root: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=root.name)
    return archive


@pytest.mark.parametrize("victim", ["model.so", "lib/libtvm_runtime.so"])
def test_tampered_bundle_refused(resnet, tmp_path, victim):
    root = _extracted(resnet.bundle, tmp_path)
    assert _runner(root, "--check").returncode == 0
    _flip_byte(root / victim)
    done = _runner(root, "--check")
    assert done.returncode == 2 and f"checksum of '{victim}' does not match" in done.stderr, done.stderr
    with pytest.raises(mlpc.ArtifactError, match=f"checksum of '{victim}'"):
        with open_bundle(_retar(root, tmp_path / "tampered.tar.gz")):
            pass


def test_bundle_with_library_for_wrong_architecture_refused(resnet, tmp_path):
    root = _extracted(resnet.bundle, tmp_path)
    (root / "model.so").write_bytes((resnet.host.path / "model.so").read_bytes())  # an x86-64 library
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"]["model.so"] = sha256_file(root / "model.so")  # consistent checksums: only the arch is wrong
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(mlpc.ArtifactError, match="model.so is built for x86_64, but the bundle is for aarch64"):
        with open_bundle(root):
            pass
    done = _runner(root, "--check")
    assert done.returncode == 2 and "not a shared library for aarch64" in done.stderr, done.stderr


def test_launcher_refuses_another_machine(resnet, tmp_path):
    root = _extracted(resnet.bundle, tmp_path)
    done = subprocess.run([str(root / "run"), "--check"], capture_output=True, text=True)  # on this x86 host
    assert done.returncode == 2
    assert "built for aarch64; this machine is x86_64" in done.stderr and "mlpc run" in done.stderr


def _write_bad(kind: str, path: Path, x: np.ndarray) -> str:
    """Write a malformed input file of `kind`; return what the runner's message must say."""
    if kind == "compressed":
        np.savez_compressed(path, x=x)
        return "is compressed"
    if kind == "truncated":
        np.savez(path, x=x)
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        return "not an .npz file"
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
        return "not an .npz file"
    if kind == "corrupt-data":
        np.savez(path, x=x)
        data = bytearray(path.read_bytes())
        data[200] ^= 0xFF  # inside the array's bytes
        path.write_bytes(bytes(data))
        return "CRC mismatch"
    if kind == "wrong-dtype":
        np.savez(path, x=x.astype(np.float64))
        return "input 'x' is float64, the model expects float32"
    if kind == "wrong-shape":
        np.savez(path, x=x[..., :16])
        return "has shape (1, 3, 32, 16), the model expects (1, 3, 32, 32)"
    if kind == "missing":
        np.savez(path, y=x)
        return "unknown input 'y'"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["compressed", "truncated", "garbage", "corrupt-data", "wrong-dtype",
                                  "wrong-shape", "missing"])
def test_runner_rejects_malformed_npz(resnet, tmp_path, kind):
    root = _extracted(resnet.bundle, tmp_path)
    bad = tmp_path / "bad.npz"
    needle = _write_bad(kind, bad, resnet.inputs["x"])
    done = _runner(root, "--inputs", str(bad), "-o", str(tmp_path / "out.npz"))
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.startswith("error: ") and needle in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.npz").exists()


def _integer_model(path: Path) -> Path:
    """y = int32(a) * b + 3 (int32), z = a (uint8 passthrough via Cast): no float anywhere."""
    nodes = [
        helper.make_node("Cast", ["a"], ["a32"], to=TensorProto.INT32),
        helper.make_node("Mul", ["a32", "b"], ["m"]),
        helper.make_node("Add", ["m", "three"], ["y"]),
        helper.make_node("Cast", ["a"], ["z"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes, "ints",
        [helper.make_tensor_value_info("a", TensorProto.INT8, [2, 5]),
         helper.make_tensor_value_info("b", TensorProto.INT32, [2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [2, 5]),
         helper.make_tensor_value_info("z", TensorProto.UINT8, [2, 5])],
        initializer=[onnx.numpy_helper.from_array(np.array(3, dtype=np.int32), "three")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


def test_integer_bundle_is_exact(tmp_path):
    require_arm()
    model = _integer_model(tmp_path / "ints.onnx")
    bundle = tmp_path / "ints.tar.gz"
    mlpc.compile(model, target=ARM_TARGET, output_dir=tmp_path / "ints", bundle=bundle)
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, (2, 5), dtype=np.int8)
    b = rng.integers(-1000, 1000, (2, 5), dtype=np.int32)
    with open_bundle(bundle) as runner:
        got = runner.run({"a": a, "b": b})
    np.testing.assert_array_equal(got["y"], a.astype(np.int32) * b + 3)
    assert got["z"].dtype == np.uint8
    np.testing.assert_array_equal(got["z"], a.astype(np.uint8))


def test_bundle_name_checked_before_compiling(tmp_path, tiny_cnn_static_path, capsys):
    code = main(["compile", str(tiny_cnn_static_path), "--target", ARM_TARGET, "-o", str(tmp_path / "out"),
                 "--bundle", str(tmp_path / "kws.zip")])
    assert code == 2 and "a bundle is a .tar.gz archive" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
