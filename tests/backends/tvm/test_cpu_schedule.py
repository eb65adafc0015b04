"""Default CPU schedules: every conv/matmul kernel of the zoo models gets one, numerics unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from mlpc import zoo
from mlpc.backends.tvm.build import build, run
from mlpc.backends.tvm.cpu_schedule import default_schedule_pass
from mlpc.backends.tvm.lower import lower_graph
from mlpc.frontend import load_model
from mlpc.pass_infra import PassContext, PassManager
from mlpc.pipeline import default_pipeline
from mlpc.targets import get_target


@pytest.fixture(scope="module", params=["resnet", "mobilenet", "conv1d", "transformer", "mlp"])
def lowered(request, tmp_path_factory):
    name = request.param
    path = zoo.export_onnx(name, tmp_path_factory.mktemp(name) / f"{name}.onnx")
    loaded = load_model(path)
    PassManager(default_pipeline()).run(loaded.model, PassContext())
    inputs = [t.numpy() for t in zoo.example_inputs(name)]
    return name, lower_graph(loaded.model.graph, 18), inputs


def test_every_conv_and_matmul_kernel_is_scheduled(lowered):
    name, mod, _ = lowered
    target = get_target("host").tvm_target()
    with target:
        fused = tvm.transform.Sequential(cpu_generic.legalize_passes(target))(mod)
        scheduled = default_schedule_pass(8)(fused)
    kernels = [gv.name_hint for gv, f in scheduled.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    heavy = [k for k in kernels if any(op in k for op in ("conv", "matmul", "gemm"))]
    assert heavy, f"{name}: no conv/matmul kernels found in {kernels}"
    unscheduled = [str(k) for k in scheduled.attrs["mlpc.unscheduled"]]
    assert not [k for k in heavy if k in unscheduled], f"{name}: unscheduled {unscheduled}"
    rescheduled = [k for k in heavy if scheduled[k].script() != fused[k].script()]
    assert rescheduled, f"{name}: the rule changed none of {heavy}"
    assert any("T.parallel" in scheduled[k].script() for k in heavy), f"{name}: nothing runs in parallel"


def test_scheduled_build_matches_naive_build(lowered):
    name, mod, inputs = lowered
    host = get_target("host")
    scheduled = run(build(mod, host), inputs)
    naive = run(build(mod, host, schedules=False), inputs)
    for got, ref in zip(scheduled, naive):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(ref))))


@pytest.mark.parametrize("channels, inner_kind", [(3, "unrolled"), (16, "vectorized")])
def test_injective_blocks_keep_their_innermost_axis(channels, inner_kind):
    """An NCHW→NHWC transpose is not flattened into one loop (whose every element would recompute
    its indices with divisions): the outer axes are fused, the channel axis is unrolled when shorter
    than a vector, else split into vectors; the result equals NumPy's."""
    from tvm import s_tir, te

    from mlpc.backends.tvm.cpu_schedule import schedule_primfunc

    x = te.placeholder((1, channels, 32, 32), "float32", name="x")
    y = te.compute((1, 32, 32, channels), lambda n, h, w, c: x[n, c, h, w], name="y")
    func = schedule_primfunc(te.create_prim_func([x, y]), lanes=8)
    sch = s_tir.Schedule(func)
    loops = [sch.get(loop) for loop in sch.get_loops(sch.get_sblock("y"))]
    assert int(loops[0].extent) == 32 * 32
    assert loops[-1].kind == getattr(tvm.tirx.ForKind, inner_kind.upper())
    assert int(loops[-1].extent) == min(channels, 8)
    lib = tvm.compile(tvm.IRModule({"main": func}), target=get_target("host").tvm_target())
    data = np.random.default_rng(0).standard_normal((1, channels, 32, 32)).astype("float32")
    out = tvm.runtime.tensor(np.zeros((1, 32, 32, channels), "float32"))
    lib["main"](tvm.runtime.tensor(data), out)
    np.testing.assert_array_equal(out.numpy(), data.transpose(0, 2, 3, 1))


def test_softmax_with_quantize_epilogue_keeps_only_the_buffers_its_reductions_need():
    """A fused Softmax + QuantizeLinear kernel: its elementwise stages are inlined, so besides its
    output only the row maximum, the exponentials (read by the row sum and the normalization) and
    the row sum are stored; the build matches NumPy's softmax, quantized, within one step."""
    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper

    from mlpc.backends.tvm.cpu_schedule import fusion_passes, schedule_primfunc

    nodes = [helper.make_node("Softmax", ["x"], ["s"], axis=-1),
             helper.make_node("QuantizeLinear", ["s", "sc", "zp"], ["q"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32, 32])],
        [helper.make_tensor_value_info("q", TensorProto.UINT8, [4, 32, 32])],
        initializer=[numpy_helper.from_array(np.array(1 / 255, np.float32), "sc"),
                     numpy_helper.from_array(np.array(0, np.uint8), "zp")])
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]))
    target = get_target("host").tvm_target()
    with target:
        fused = tvm.transform.Sequential(fusion_passes(target))(lower_graph(model.graph, 19))
    (kernel,) = [f for f in fused.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    script = schedule_primfunc(kernel, 8, True).script()
    assert script.count("T.sblock_alloc_buffer") == 3, script
    x = np.random.default_rng(0).normal(0, 4, (4, 32, 32)).astype(np.float32)
    (got,) = run(build(lower_graph(model.graph, 19), get_target("host")), [x])
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    want = np.clip(np.round(e / e.sum(axis=-1, keepdims=True) * 255), 0, 255)
    assert np.abs(got.astype(int) - want).max() <= 1
