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
    # a weight claiming ~1e300 bytes: the refusal message's GiB figure overflowed a float
    "huge_dims_message": (
    "CAo6twoKKwoBeAoBdwoBYhIBYxoEY29udiIEQ29udioRCgRwYWRzQAFAAUABQAGgAQcKEgoBYxIBchoEcmVsdSIEUmVsdQofCgFy"
    "EgFwGgRwb29sIhFHbG9iYWxBdmVyYWdlUG9vbAoYCgFwEgFmGgdmbGF0dGVuIgdGbGF0dGVuCi0KAWYKAmZjCgNmY2ISBmxvZ2l0"
    "cxoCZmMiBEdlbW0qDQoGdHJhbnNCGAGgAQISCHRpbnlfY25uKvAGCAgIAwgDCAMQAUIBdwrgBk9/Gj2ZVCK947xEPrnmAD3CjiS+"
    "/SnePV9LyD6+eJE+/i9Yvmdewr5MeD++HiBLPPiPMr/0bIa9N1+/vtrzYL5GMie+t1XCvePn/D1MIaA+gvEdvYjj0T4LWUy+wvfX"
    "PeXFij5tC+c8KmdkvriTjb4GnQy+s0mHPc4Tm755hIC93adDvdQlJj724oM9S1faPS3bSL7tRB+9WNZwPhpk5T55ZMG+6InoPvq5"
    "zj7VBHA+RnuiPcvfwL21898+QIwWP5ZdCj/9/8k+FZPbPQaZub7GJK+6S6tJPm/kxb5Uw/I93A0EPgfTVT5q4bW+aUZLvqsSBr58"
    "rrO+XZUFPwJYGL5zHso98t2evbA48z62zso+4ZBCPsQ6Kb+au388RgdSPmA1mj4w0j2+NO4rP3bRyr6vOEu+qp+PPv4ccTykyBk/"
    "A6dnPWmEQr6b+ee9nZmnvm5AxL6VqUE+vYgyPiDYxj6d0Ge+NLkBPy6SsL1B1PE+qvMEvsPwYb7Yd5k9ZG6ePj3ZRT3d3zO+6ALO"
    "vgVG176XbBo+GgWYPpziSb3ABaW+axmGPiSrxL71DVu+1sY+PpTPLL+vYu09Ga4yvmxIBj1JC7q8sVt4Peg/VT6g+Gi+SkPaPlcO"
    "Xz7rmIE+UeyyPnbycT6GpoE+ZMe5PAkn276E8SW9GGVsvnyI2r4dy549jaguvpAtnr55NKC+XOqkPTle3D0lIcs+asmIu84GoD5N"
    "Y9c+W6qwPsWnNb/Qubw+nKnQPb0uAj4HFeQ9fyrrPYQ/xD0vhNy9rAsSv53VBb0M6Ha+wemlPgxrsb0oJs083n+CvvzcHL7Ov2K7"
    "VSfkvq69uD1zVwK9ZyC2vi4vOL8QnB0+7NW2vZDRIr7qF5G9X4ELPyDIdLwi4NQ8FmrkvgMI/T4Z7Yw+luGjPi5SajxVzIw+5ejj"
    "PShfPD7FAzu9omPivjQInj7bmhS/x2qTvTdRe73uLqC+91k8Pkcqdr26NAa+BbIfPrRnEr7rWNU+G+/XPRG3Eb7PURW/877I7+3e"
    "pj6nuni8uvOtvUln/D7TA8W+Aeozvs8tEb5xHzQ+iNZLviVxPL4Ljfa+Xw5gPmGldz7LVxK+TrZIPeuMxr7m8BC+PafTPjLJJj2Z"
    "bzE/XNNxvm1DMj7RPHC9utEtPiopCAgQAUIBYkogngo9uuPdZb0bsLG9KPucPr1x/buNgU6+WtWEvc/cij0qjQEIOwgIEAFCAmZj"
    "SoABjQCAvhojLj+WTgA/qf6bvUrGcb5SnQC/AjGzvvSPPL+oKRo/FZxLPyLJIL9jQRe/mV5ivye/9r45zsa/MjYSv1MBJj/9+zC+"
    "CMbaPidaer6MXWE/zf/LPc6VQ77qWqM/LSEmvgxRHL9/wc49fRGfvFN9CD8z8Ou+7gHOPrlN2j4qGwgEEAFCA2ZjYkoQC76IvcC6"
    "hTxUI6q98zVwPlobCgF4EhYKFAgBEhAKAggBCgYIAwoCGAgKAggIYhgKBmxvZ2l0cxIOCgwIARIICgIIAQoCCARCBAoAEBE="
    ),
}


@pytest.mark.parametrize("name", sorted(FUZZ_CRASHES))
def test_fuzzer_found_inputs_are_refused_cleanly(tmp_path, name):
    import base64

    path = tmp_path / f"{name}.onnx"
    path.write_bytes(base64.b64decode(FUZZ_CRASHES[name]))
    with pytest.raises(mlpc.MlpcError):
        load_model(path, input_shapes={"x": (1, 3)})
