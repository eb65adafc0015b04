"""The model zoo: models build deterministically and export to ONNX that onnxruntime runs like PyTorch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mlpc import zoo
from mlpc.errors import ExportError, MlpcError, ModelLoadError

NAMES = sorted(zoo.MODELS)


def _torch_ref(name: str, batch: int) -> np.ndarray:
    with torch.inference_mode():
        return zoo.build(name)(*zoo.example_inputs(name, batch)).numpy()


def _run_ort(path: Path, name: str, batch: int) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {n: t.numpy() for n, t in zip(zoo.MODELS[name].input_names, zoo.example_inputs(name, batch))}
    (out,) = sess.run(None, feeds)
    return out


def _assert_close(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()))


@pytest.mark.parametrize("name", NAMES)
def test_build_is_deterministic_and_has_real_norm_stats(name: str) -> None:
    spec = zoo.MODELS[name]
    (x,) = zoo.example_inputs(name, batch=3)
    assert x.shape == spec.input_shapes(3)[0] and x.dtype == spec.input_dtype
    a, b = zoo.build(name), zoo.build(name)
    assert not a.training
    with torch.inference_mode():
        ya, yb = a(x), b(x)
    assert ya.shape[0] == 3 and ya.ndim == 2 and torch.isfinite(ya).all()
    assert torch.equal(ya, yb)
    assert float(ya.std()) > 1e-3  # not a constant output
    for m in a.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            assert float(m.running_mean.abs().max()) > 0.05
            assert float((m.running_var - 1).abs().max()) > 0.05


def test_build_does_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    zoo.build("mlp")
    assert torch.equal(torch.rand(4), expected)


def test_example_inputs_seeded() -> None:
    assert torch.equal(zoo.example_inputs("resnet", 2, seed=1)[0], zoo.example_inputs("resnet", 2, seed=1)[0])
    assert not torch.equal(zoo.example_inputs("resnet", 2, seed=1)[0], zoo.example_inputs("resnet", 2)[0])
    (ids,) = zoo.example_inputs("transformer_ids", 2)
    assert ids.dtype == torch.int64 and ids.shape == (2, 32)


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ModelLoadError, match="known models: .*resnet") as info:
        zoo.build("resnet50")
    assert isinstance(info.value, MlpcError)
    with pytest.raises(ModelLoadError):
        zoo.example_inputs("nope")


def test_bad_exporter_or_opset_raises_export_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown exporter"):
        zoo.export_onnx("mlp", tmp_path / "m.onnx", exporter="jit")  # type: ignore[arg-type]
    with pytest.raises(ExportError, match="legacy exporter at opset 3"):
        zoo.export_onnx("mlp", tmp_path / "m.onnx", opset=3, exporter="legacy")


# Every model with both exporters at opsets 17 and 18; the opset-18 exports have a dynamic batch
# and run at batch 1 and 4, so static and dynamic export are both covered without extra exports.
@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("exporter", zoo.EXPORTERS)
@pytest.mark.parametrize("name", NAMES)
def test_export_matches_torch(name: str, exporter: str, opset: int, tmp_path: Path,
                              capfd: pytest.CaptureFixture[str]) -> None:
    dynamic = opset == 18
    path = zoo.export_onnx(name, tmp_path / f"{name}.onnx", opset=opset, exporter=exporter,
                           dynamic_batch=dynamic)
    assert capfd.readouterr() == ("", "")  # the exporters' chatter is swallowed
    model = onnx.load(str(path))
    assert {o.domain: o.version for o in model.opset_import}[""] == opset
    assert not list(tmp_path.glob("*.data"))  # weights live inside the .onnx file
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    if dynamic:
        assert batch_dim.dim_param == "batch"
    else:
        assert batch_dim.dim_value == 1
    for batch in (1, 4) if dynamic else (1,):
        _assert_close(_run_ort(path, name, batch), _torch_ref(name, batch))


@pytest.mark.parametrize("opset", [20, 21])
def test_dynamo_export_newer_opsets(opset: int, tmp_path: Path) -> None:
    path = zoo.export_onnx("mlp", tmp_path / "mlp.onnx", opset=opset)
    assert {o.domain: o.version for o in onnx.load(str(path)).opset_import}[""] == opset
    _assert_close(_run_ort(path, "mlp", 1), _torch_ref("mlp", 1))


def test_legacy_dynamic_transformer_has_shape_computations(tmp_path: Path) -> None:
    path = zoo.export_onnx("transformer", tmp_path / "t.onnx", opset=17, exporter="legacy",
                           dynamic_batch=True)
    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    chains = 0
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in producer:
            continue
        concat = producer[node.input[1]]
        if concat.op_type != "Concat":
            continue
        # Concat(Unsqueeze(Gather(Shape(x), 0)), ...) -> Reshape
        ops = set()
        stack = list(concat.input)
        while stack:
            n = producer.get(stack.pop())
            if n is not None and n.op_type in ("Unsqueeze", "Gather", "Shape"):
                ops.add(n.op_type)
                stack.extend(n.input)
        chains += ops >= {"Shape", "Gather"}
    assert chains >= 4  # q, k, v splits and the merge of heads, per layer

