"""The depthwise integer conv kernel (`int_depthwise`): chosen for depthwise IntegerConv on CPUs,
bit-exact with the reference evaluator (strides, dilations, asymmetric pads, 1-D and 2-D, int8
and uint8 inputs, weight zero points, bias), scheduled with the output row vectorized and the
kernel taps unrolled, and multiplying with 256-bit vectors on AVX2."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper
from test_int_pairs import _assembly
from test_ops_integer import _integer_model, _tvm_vs_reference
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from mlpc.backends.tvm.cpu_schedule import default_schedule_pass
from mlpc.backends.tvm.int_depthwise import CONV_BLOCK
from mlpc.backends.tvm.lower import lower_graph
from mlpc.ir import QuantParams
from mlpc.targets import get_target

CASES = {  # name: (x shape, x dtype, kernel, strides, dilations, pads, weight zero point)
    "3x3-uint8": ((2, 8, 9, 11), np.uint8, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], False),
    "3x3-stride2-int8-wzp": ((1, 16, 16, 16), np.int8, (3, 3), (2, 2), (1, 1), [1, 1, 1, 1], True),
    "5x3-strided-dilated-asym": ((3, 5, 10, 13), np.uint8, (5, 3), (2, 3), (1, 2), [2, 0, 1, 2], True),
    "conv1d-stride2": ((2, 6, 17), np.int8, (5,), (2,), (1,), [2, 1], False),
    "wide-row": ((1, 4, 3, 37), np.uint8, (3, 3), (1, 1), (1, 1), [1, 1, 1, 1], False),
}


def _depthwise_model(x_shape, dtype, kernel, strides, dilations, pads, wzp, rng, x=None, w=None, xzp=None):
    channels, nsp = x_shape[1], len(kernel)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, x_shape, dtype=dtype) if x is None else x
    w = rng.integers(-128, 128, (channels, 1, *kernel), dtype=np.int8) if w is None else w
    inits = {
        "w": w,
        "xzp": np.array((77 if dtype == np.uint8 else -5) if xzp is None else xzp, dtype),
        "bias": rng.integers(-5000, 5000, channels).astype(np.int32),
    }
    if wzp:
        inits["wzp"] = rng.integers(-2, 3, channels).astype(np.int8)
    node = helper.make_node(
        "IntegerConv",
        ["x", "w", "xzp", "wzp" if wzp else "", "bias"],
        ["y"],
        domain="mlpc",
        group=channels,
        pads=pads,
        strides=list(strides),
        dilations=list(dilations),
    )
    out = [
        (x_shape[2 + i] + pads[i] + pads[i + nsp] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1
        for i in range(nsp)
    ]
    qp = QuantParams(
        bits=8, scale=np.ones(channels), zero_point=inits.get("wzp", np.zeros(channels, np.int8)), axis=0
    )
    model = _integer_model(
        [node], {"x": x}, inits, {"y": (TensorProto.INT32, [x_shape[0], channels, *out])}, {"w": qp}
    )
    return model, {"x": x}


@pytest.mark.parametrize("name", list(CASES))
def test_depthwise_conv_bit_exact(name):
    model, feeds = _depthwise_model(*CASES[name], np.random.default_rng(len(name)))
    assert CONV_BLOCK in str(lower_graph(model.graph, 19))
    _tvm_vs_reference(model, feeds)


def test_extreme_values_do_not_saturate():
    """Centered activations of −255 (uint8 0, zero point 255) times weights of −128: nine products
    of 32640 per output, beyond any int16 sum, exact in int32."""
    shape = CASES["3x3-uint8"][0]
    model, feeds = _depthwise_model(
        *CASES["3x3-uint8"],
        np.random.default_rng(0),
        x=np.zeros(shape, np.uint8),
        w=np.full((shape[1], 1, 3, 3), -128, np.int8),
        xzp=255,
    )
    _tvm_vs_reference(model, feeds)


def _scheduled_kernel(model) -> str:
    target = get_target("host").tvm_target()
    with target:
        fused = tvm.transform.Sequential(cpu_generic.legalize_passes(target))(lower_graph(model.graph, 19))
        scheduled = default_schedule_pass(8)(fused)
    assert not list(scheduled.attrs["mlpc.unscheduled"])
    texts = [
        f.script()
        for f in scheduled.functions.values()
        if isinstance(f, tvm.tirx.PrimFunc) and CONV_BLOCK in f.script()
    ]
    assert len(texts) == 1
    return texts[0]


def test_depthwise_schedule_vectorizes_the_row_and_unrolls_the_taps():
    model, _ = _depthwise_model(*CASES["3x3-stride2-int8-wzp"], np.random.default_rng(0))
    text = _scheduled_kernel(model)
    update = text.index(f'T.sblock("{CONV_BLOCK}_update")')
    loops = re.findall(r"for (\w+) in (T\.\w+|range)\(", text[:update])
    # the innermost loops over the update: two unrolled kernel taps around the vectorized output row
    assert [kind for _, kind in loops[-3:]] == ["T.unroll", "T.unroll", "T.vectorized"]
    # the plane's padded input is computed inside the plane's loop, not as a pass of its own
    assert text.index('T.sblock("mlpc_dw_input")') > text.index("for n_c_fused")


def test_avx2_build_multiplies_with_256_bit_vectors():
    model, _ = _depthwise_model(*CASES["3x3-uint8"], np.random.default_rng(0))
    assert re.search(r"vpmulld\s+(\d*\(%\w+[^)]*\)|%ymm\d+), %ymm\d+, %ymm\d+", _assembly(model, "x86/avx2"))
