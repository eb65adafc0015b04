"""The CUDA integer kernels in the dp4a layout (`int_cuda`), checked without a GPU:

- the computes (weight layout, uint8 staging, Σw zero-point correction, zero-point padding) are
  bit-exact with NumPy when built for this CPU;
- the GPU schedule itself is bit-exact too: the scheduled TIR with its thread-bound loops run as
  serial loops and the four-step update written out instead of `__dp4a` (`serial_for_cpu`);
- with `__dp4a`, the same schedule's CUDA source uses it and ptxas turns it into dp4a;
- an integer graph lowered for CUDA (device="cuda") and built for this CPU equals the reference
  evaluator on every integer output.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper
from test_ops_integer import _integer_model, _tvm_vs_reference
from tvm import te

from mlpc.backends.tvm import int_cuda
from mlpc.backends.tvm.build import build, run
from mlpc.backends.tvm.lower import lower_graph
from mlpc.ir import QuantParams
from mlpc.ir.ops.integer_matmul import integer_matmul
from mlpc.targets import get_target

MATMUL_CASES = {  # name: (a shape, N, a dtype, zero point)
    "gemv-uint8-zp": ((1, 70), 96, "uint8", 3),
    "rows-int8": ((6, 64), 10, "int8", 0),
    "batched-uint8-zp128": ((2, 5, 33), 48, "uint8", 128),
    "int8-zp": ((4, 100), 64, "int8", -7),
}
CONV_CASES = {  # name: (x shape, OC, x dtype, zero point, kernel, strides, dilations, pads)
    "3x3-uint8-zp": ((1, 5, 9, 9), 16, "uint8", 93, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
    "strided-dilated-asym": ((2, 3, 11, 10), 8, "int8", -5, [3, 3], [2, 1], [1, 2], [2, 0, 1, 3]),
    "1x1-int8": ((1, 32, 6, 6), 24, "int8", 0, [1, 1], [1, 1], [1, 1], [0, 0, 0, 0]),
    "conv1d-uint8": ((2, 7, 20), 12, "uint8", 0, [3], [2], [1], [2, 1]),
}


def _conv_reference(x, w, zp, strides, dilations, pads):
    """int64 N-D convolution of (x − zp) with w, x padded with zp."""
    nsp = x.ndim - 2
    xp = np.pad(x.astype(np.int64) - zp, [(0, 0), (0, 0)] + [(pads[i], pads[i + nsp]) for i in range(nsp)])
    kernel = w.shape[2:]
    out_sp = [(xp.shape[2 + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(nsp)]
    y = np.zeros((x.shape[0], w.shape[0], *out_sp), np.int64)
    for tap in np.ndindex(*kernel):
        window = tuple(
            slice(tap[i] * dilations[i], tap[i] * dilations[i] + (out_sp[i] - 1) * strides[i] + 1, strides[i])
            for i in range(nsp)
        )
        patch = xp[(slice(None), slice(None), *window)]
        y += np.einsum("nc...,oc->no...", patch, w[(slice(None), slice(None), *tap)].astype(np.int64))
    return y


def _matmul_case(name, index_dtype="int32"):
    shape, n, dtype, zp = MATMUL_CASES[name]
    rng = np.random.default_rng(len(name))
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max + 1, shape, dtype=dtype)
    w = rng.integers(-128, 128, (n, shape[-1]), dtype=np.int8)
    extra = [int_cuda.weight_sums(w)] if int_cuda.staged_zero_point(zp, dtype) else []
    ta = te.placeholder(shape, dtype, name="a")
    tw = te.placeholder(int_cuda.quad_weight(w).shape, "int8", name="w")
    ts = [te.placeholder((n,), "int32", name="sums")] if extra else []
    acc = int_cuda.quad_matmul(ta, tw, *ts, depth=shape[-1], a_zero_point=zp)
    # an epilogue like a requantization's, fused behind the accumulator
    y = te.compute(acc.shape, lambda *i: (acc(*i).astype("int64") * 3 - 1).astype("int32"), name="epilogue")
    func = te.create_prim_func([ta, tw, *ts, y], index_dtype_override=index_dtype)
    expected = integer_matmul(a, w.T, np.array(zp)).astype(np.int64) * 3 - 1
    return func, [a, int_cuda.quad_weight(w), *extra], expected.astype(np.int32)


def _conv_case(name, index_dtype="int32"):
    shape, oc, dtype, zp, kernel, strides, dilations, pads = CONV_CASES[name]
    rng = np.random.default_rng(len(name))
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, shape, dtype=dtype)
    w = rng.integers(-128, 128, (oc, shape[1], *kernel), dtype=np.int8)
    extra = [int_cuda.weight_sums(w)] if int_cuda.staged_zero_point(zp, dtype) else []
    tx = te.placeholder(shape, dtype, name="x")
    tw = te.placeholder(int_cuda.quad_weight(w).shape, "int8", name="w")
    ts = [te.placeholder((oc,), "int32", name="sums")] if extra else []
    y = int_cuda.quad_conv(
        tx,
        tw,
        *ts,
        kernel=kernel,
        strides=strides,
        dilations=dilations,
        pads=pads,
        channels=shape[1],
        x_zero_point=zp,
    )
    func = te.create_prim_func([tx, tw, *ts, y], index_dtype_override=index_dtype)
    expected = _conv_reference(x, w, zp, strides, dilations, pads).astype(np.int32)
    return func, [x, int_cuda.quad_weight(w), *extra], expected


def _run_cpu(func, args, out_shape) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": func}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(out_shape, np.int32))
    lib["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args], out)
    return out.numpy()


CASES = [("matmul", n, "int32") for n in MATMUL_CASES] + [("conv", n, "int32") for n in CONV_CASES]
# Relax's fused PrimFuncs index in int64 (the intrinsic then has an int64 loop)
CASES += [("matmul", "batched-uint8-zp128", "int64"), ("conv", "3x3-uint8-zp", "int64")]


@pytest.mark.parametrize(("kind", "name", "index_dtype"), CASES)
def test_compute_and_schedule_bit_exact_on_cpu(kind, name, index_dtype):
    func, args, expected = (_matmul_case if kind == "matmul" else _conv_case)(name, index_dtype)
    np.testing.assert_array_equal(_run_cpu(func, args, expected.shape), expected)  # the computes
    sch = int_cuda.schedule_quad(func, intrinsic=int_cuda.PORTABLE_INTRINSIC)
    assert sch is not None
    assert 'thread="threadIdx.x"' in sch.mod.script() and 'scope="shared"' in sch.mod.script()
    serial = int_cuda.serial_for_cpu(sch)
    assert "thread_binding" not in serial.script()
    np.testing.assert_array_equal(_run_cpu(serial, args, expected.shape), expected)  # the schedule


def test_weight_layout_and_sums():
    w = np.arange(2 * 6 * 3, dtype=np.int64).reshape(2, 6, 3).astype(np.int8)  # [N=2, C=6, k=3]
    q = int_cuda.quad_weight(w)
    assert q.shape == (3, 2, 2, 4)  # [k, ceil(C/4), N, 4]
    for n, c, k in np.ndindex(*w.shape):
        assert q[k, c // 4, n, c % 4] == w[n, c, k]
    assert not q[:, 1, :, 2:].any()  # channels 6, 7 are padding
    np.testing.assert_array_equal(int_cuda.weight_sums(w), w.reshape(2, -1).astype(np.int64).sum(1))
    assert int_cuda.staged_zero_point(128, "uint8") == 0 and int_cuda.staged_zero_point(-3, "int8") == -3
    assert not int_cuda.fits(np.array([[200, 1]], np.int16), "uint8")
    assert not int_cuda.fits(np.ones((2, 2), np.int8), "int16")


def test_dp4a_reaches_cuda_source():
    func, _, _ = _matmul_case("gemv-uint8-zp")
    sch = int_cuda.schedule_quad(func)
    target = tvm.target.Target(get_target("cuda/sm_80").tvm)
    with target:
        mod = tvm.tirx.build(sch.mod.with_attr("global_symbol", "main"), target=target)
    source = mod.imports[0].inspect_source()
    assert "__dp4a(" in source


def test_integer_graph_lowered_for_cuda_equals_reference_on_cpu():
    """IntegerConv and IntegerMatMul (uint8 activations with zero points, a per-channel weight
    zero point, bias) in the dp4a layout, built for this CPU: bit-exact with the reference."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (1, 6, 8, 8), dtype=np.uint8)
    inits = {
        "w": rng.integers(-100, 100, (16, 6, 3, 3), dtype=np.int8),
        "xzp": np.array(77, np.uint8),
        "wzp": rng.integers(-3, 4, 16).astype(np.int8),
        "bias": rng.integers(-9000, 9000, 16).astype(np.int32),
        "b": rng.integers(-128, 128, (8, 24), dtype=np.int8),
        "azp": np.array(200, np.uint8),
    }
    a = rng.integers(0, 256, (3, 8), dtype=np.uint8)
    nodes = [
        helper.make_node(
            "IntegerConv", ["x", "w", "xzp", "wzp", "bias"], ["y"], domain="mlpc", pads=[1, 1, 1, 1]
        ),
        helper.make_node("IntegerMatMul", ["a", "b", "azp"], ["z"], domain="mlpc"),
    ]
    qp = QuantParams(bits=8, scale=np.ones(16), zero_point=inits["wzp"], axis=0)
    model = _integer_model(
        nodes,
        {"x": x, "a": a},
        inits,
        {"y": (TensorProto.INT32, None), "z": (TensorProto.INT32, None)},
        {"w": qp},
    )
    names = [gv.name_hint for gv in lower_graph(model.graph, 19, device="cuda").functions]
    assert any("quad_conv" in n for n in names) and any("quad_matmul" in n for n in names), names
    _tvm_vs_reference(model, {"x": x, "a": a}, device="cuda")


def test_cpu_lowering_keeps_the_pair_layout():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (2, 16), dtype=np.uint8)
    inits = {"b": rng.integers(-128, 128, (16, 8), dtype=np.int8), "azp": np.array(3, np.uint8)}
    model = _integer_model(
        [helper.make_node("IntegerMatMul", ["a", "b", "azp"], ["z"], domain="mlpc")],
        {"a": a},
        inits,
        {"z": (TensorProto.INT32, None)},
    )
    cpu = [gv.name_hint for gv in lower_graph(model.graph, 19).functions]
    assert any("pair_matmul" in n for n in cpu) and not any("quad" in n for n in cpu)
    (got,) = run(build(lower_graph(model.graph, 19, device="cuda"), get_target("host")), [a])
    np.testing.assert_array_equal(got, integer_matmul(a, inits["b"], np.array(3)))
