"""Coverage-guided fuzzing of mlpc's ONNX frontend with atheris (libFuzzer for Python).

    .venv/bin/python tests/fuzz/fuzz_onnx_frontend.py [-max_total_time=60] [-runs=N] [CORPUS_DIR]

Every input is a byte string taken as an .onnx file: parsed, checked (structure, tensor sizes,
external-data paths), converted to onnx-ir, given static shapes and checked by the IR verifier.
The contract under test: any input either loads or is refused with an MlpcError; any other
exception, a hang or a crash is a bug, which libFuzzer reports with the input that caused it
(saved as crash-<sha1>; rerun it by passing that file as the only argument).

The seed corpus (small valid models: a CNN, an MLP with an initializer, a graph with a
Constant and external-data references) is written to a temporary directory unless a corpus
directory is given. `make fuzz` runs this for MLPC_ATHERIS_SECONDS seconds (default 120; 60 when
run directly), crash inputs going to fuzz-crashes/;
tests/fuzz/test_fuzz_frontend_seeds.py runs the same target on deterministic mutations of the
seeds in `make test`.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# External-data references are resolved against this empty directory: nothing outside it may load.
_BASE_DIR = Path(tempfile.mkdtemp(prefix="mlpc-fuzz-frontend-"))


def seed_models() -> list[bytes]:
    """Return the serialized seed models."""
    from tiny_models import make_tiny_cnn

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "w")
    mlp = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=[w],
    )
    const = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones(4, np.float32))),
         helper.make_node("Add", ["x", "c"], ["y"])],
        "const", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    external = onnx.ModelProto()
    external.CopyFrom(helper.make_model(mlp, opset_imports=[helper.make_opsetid("", 17)], ir_version=10))
    tensor = external.graph.initializer[0]
    tensor.ClearField("float_data")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", "48")):
        tensor.external_data.add(key=key, value=value)
    models = [
        make_tiny_cnn(batch=1),
        helper.make_model(mlp, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
        helper.make_model(const, opset_imports=[helper.make_opsetid("", 13)], ir_version=8),
        external,
    ]
    return [m.SerializeToString() for m in models]


def load_bytes(data: bytes, refusal_ok: bool = True) -> None:
    """The fuzz target: load `data` as an .onnx file. Returns normally when it loads or (with
    `refusal_ok`) is refused with an MlpcError; any other exception propagates."""
    from mlpc.errors import MlpcError
    from mlpc.frontend import resolve_input_shapes
    from mlpc.frontend.onnx_loader import _check_external_data, parse_onnx_bytes, proto_to_ir
    from mlpc.ir import verify

    try:
        proto = parse_onnx_bytes(data, source="<fuzz>")
        _check_external_data(proto, _BASE_DIR, source="<fuzz>")
        model = proto_to_ir(proto, source="<fuzz>")
        dims = {v.name: [d if isinstance(d, int) else 1 for d in (v.shape.dims if v.shape else [])]
                for v in model.graph.inputs}
        resolve_input_shapes(model, dims, source="<fuzz>")
        verify(model)
    except MlpcError:
        if not refusal_ok:
            raise


def main() -> None:
    """Run atheris on load_bytes with the seed corpus (or the given corpus directory)."""
    import atheris

    with atheris.instrument_imports(include=["mlpc"]):
        import mlpc.frontend  # noqa: F401
        import mlpc.frontend.onnx_loader  # noqa: F401
        import mlpc.ir.verifier  # noqa: F401

    logging.disable(logging.WARNING)
    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="mlpc-fuzz-corpus-"))
        for i, seed in enumerate(seed_models()):
            (corpus / f"seed{i}.onnx").write_bytes(seed)
        args.append(str(corpus))
    if not any(a.startswith("-max_total_time") or a.startswith("-runs") for a in args[1:]):
        args.append(f"-max_total_time={os.environ.get('MLPC_ATHERIS_SECONDS', '60')}")
    args.append("-rss_limit_mb=4096")
    atheris.Setup(args, load_bytes)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
