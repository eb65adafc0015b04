"""ONNX files: external data read safely, structure checked before anything runs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import mlpc
from tiny_models import make_tiny_cnn
from mlpc.frontend import load_model


def _save_external(tmp_path, location="weights.bin"):
    model = make_tiny_cnn(batch=1)
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    if location != "weights.bin":
        proto = onnx.load(path, load_external_data=False)
        for tensor in proto.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(proto, path)
    return path


def test_external_data_compiles_and_verifies(tmp_path):
    path = _save_external(tmp_path)
    assert (tmp_path / "weights.bin").stat().st_size > 0
    artifact = mlpc.compile(path, output_dir=tmp_path / "out", verify=True)
    assert artifact.verification["passed"]


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../weights.bin"])
def test_external_data_outside_model_dir_refused(tmp_path, location):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    path = _save_external(model_dir, location)
    with pytest.raises(mlpc.ModelLoadError, match="outside the model's directory"):
        load_model(path)


def test_external_data_symlink_escaping_refused(tmp_path):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    path = _save_external(model_dir)
    secret = tmp_path / "secret.bin"
    (model_dir / "weights.bin").rename(secret)
    (model_dir / "weights.bin").symlink_to(secret)
    with pytest.raises(mlpc.ModelLoadError, match="outside the model's directory"):
        load_model(path)


def test_missing_external_data_file(tmp_path):
    path = _save_external(tmp_path)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(mlpc.ModelLoadError, match="weights.bin.*missing"):
        load_model(path)


def test_value_produced_twice(tmp_path):
    model = make_tiny_cnn(batch=1)
    model.graph.node[1].output[0] = "c"
    path = tmp_path / "twice.onnx"
    onnx.save(model, path)
    with pytest.raises(mlpc.ModelLoadError, match="'c' is produced twice"):
        load_model(path)


def test_nodes_out_of_order_are_sorted(tmp_path):
    model = make_tiny_cnn(batch=1)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    path = tmp_path / "reversed.onnx"
    onnx.save(model, path)
    loaded = load_model(path)
    assert [n.op_type for n in loaded.model.graph] == ["Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"]
    x = np.zeros((1, 3, 8, 8), np.float32)
    assert mlpc.compile(path).run({"x": x})["logits"].shape == (1, 4)


# Inputs found by tests/fuzz/fuzz_onnx_frontend.py (atheris); each crashed the loader with a
# Python exception instead of a ModelLoadError / InputError.
FUZZ_CRASHES = {
    # a graph input of element type 0 (UNDEFINED): KeyError in tensor_bytes via resolve_input_shapes
    "undefined_input_type": "CAo6jwEKEQoBeAoBdxIBaCIGTWF0TXVsCgwKAWgSAXkiBFJlbHUSA21scCo7CAMIBBABQgF3SjAAAAAAAACAPwAAAED"
    "+/7+/AACAQAAAoEAAAMq///8fxQAAAEEAABBBAAAgQQAAMEFaFAoBeBIPCg0IADIJCgMSAbj1/ff8nev1EgF5Cg8NCAESCQoDEgFOCgIIBEIECgAQEQ==",
    # an external-data location that is not UTF-8: protobuf returns bytes, Path / bytes raised TypeError
    "non_utf8_external_location": "CAo6kwEKEQoBeAoBdxIBaCIGTWF0TXVsCgwKAWgSAXkiBFJlbHUSA21scCo/CAMIBBABQgF3ahcKCGxvY2F0aW"
    "9uEgt3ZY6Yl4uM0Z2WbmoLCgZvZmZzZXQSATBqDAoGbGVuZ3RoEgI0OHABWhQKAXgSDwoNCAESCQoDEgFOCgIIA2IUCgF5Eg8KDQgBEgkKAxIBTgoCCARCBAoAEBE=",
}


@pytest.mark.parametrize("name", sorted(FUZZ_CRASHES))
def test_fuzzer_found_inputs_are_refused_cleanly(tmp_path, name):
    import base64

    path = tmp_path / f"{name}.onnx"
    path.write_bytes(base64.b64decode(FUZZ_CRASHES[name]))
    with pytest.raises(mlpc.MlpcError):
        load_model(path, input_shapes={"x": (1, 3)})
