"""The reference evaluator: onnx.reference.ReferenceEvaluator with the mlpc ops and the
QONNX quantization ops registered. It runs float, fake-quant and integer graphs and is the
oracle for verification, calibration and bit-exactness checks.

    >>> ev = ReferenceEvaluator(model)            # onnx_ir.Model or onnx.ModelProto
    >>> ev.run({"x": np.ones((1, 3), np.float32)})
    {'y': array(...)}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_25
from onnx.reference.ops.op_loop import Loop as Loop_
import onnx.reference
import onnx_ir as ir

from mlpc.errors import InputError, IRVerificationError, MlpcError, UnsupportedOpError
from mlpc.ir.ops import MLPC_DOMAIN, MLPC_OPSET_VERSION, kernels
from mlpc.ir.qonnx_ops import QONNX_DOMAINS, qonnx_kernels


class DequantizeLinear(DequantizeLinear_25):
    """onnx.reference has DequantizeLinear only from opset 19; opsets 13–18 mean the same for the
    int8/uint8/int32 tensors mlpc emits, so serve every opset with the newest semantics."""

    op_domain = ""

class Loop(Loop_):
    """onnx.reference's Loop joins scan outputs with np.vstack, which turns 0-d per-iteration
    values into shape (n, 1) and concatenates rank ≥ 2 values; ONNX stacks them on a new first
    axis. This kernel reshapes each scan output to (iterations, *per-iteration shape)."""

    op_domain = ""

    def __init__(self, onnx_node: Any, run_params: Any) -> None:
        super().__init__(onnx_node, run_params)
        run_body = self._run_body  # an instance attribute OpRun makes for the `body` graph

        def counted(*args: Any, **kwargs: Any) -> Any:
            outputs = run_body(*args, **kwargs)
            self._scan_shapes = [np.shape(o) for o in outputs[len(outputs) - self.K:]] if self.K else []
            self._iterations += 1
            return outputs

        self._run_body = counted

    def _run(self, M, cond, *args, context=None, body=None, attributes=None, bindings=None):  # noqa: N803
        self._iterations, self._scan_shapes = 0, []
        results = super()._run(M, cond, *args, context=context, body=body, attributes=attributes,
                               bindings=bindings)
        if not self.K or not self._iterations:
            return results
        results = list(results)
        for k, shape in enumerate(self._scan_shapes):
            results[self.N + k] = np.asarray(results[self.N + k]).reshape(self._iterations, *shape)
        return tuple(results)


logger = logging.getLogger(__name__)


def _with_custom_opsets(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Add opset imports for the mlpc/QONNX domains the graph uses but does not declare."""
    declared = {o.domain for o in proto.opset_import}
    used = {n.domain for n in proto.graph.node} & {MLPC_DOMAIN, *QONNX_DOMAINS}
    missing = used - declared
    if not missing:
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for domain in sorted(missing):
        copy.opset_import.append(onnx.helper.make_opsetid(domain, MLPC_OPSET_VERSION))
    return copy


class ReferenceEvaluator:
    """Run a model with NumPy reference kernels (onnx's for the standard ops, mlpc's for the
    `mlpc` domain, qonnx-exact ones for Quant/BipolarQuant/Trunc).

    `model` is an onnx_ir.Model or an onnx.ModelProto. Inputs are checked against the graph's
    declared inputs (names, element types, ranks, static dims, consistent symbolic dims).
    """

    def __init__(self, model: ir.Model | onnx.ModelProto, verbose: int = 0) -> None:
        if isinstance(model, ir.Model):
            proto = ir.serde.serialize_model(model)
        elif isinstance(model, onnx.ModelProto):
            proto = model
        else:
            raise TypeError(
                f"ReferenceEvaluator takes an onnx_ir.Model or onnx.ModelProto, got {type(model).__name__}"
            )
        self.proto = _with_custom_opsets(proto)
        initializers = {t.name for t in self.proto.graph.initializer}
        self.inputs: dict[str, onnx.TypeProto] = {
            i.name: i.type for i in self.proto.graph.input if i.name not in initializers
        }
        self.optional_inputs = {i.name for i in self.proto.graph.input if i.name in initializers}
        self.output_names = [o.name for o in self.proto.graph.output]
        try:
            self._ref = onnx.reference.ReferenceEvaluator(
                self.proto, verbose=verbose, new_ops=[*kernels(), *qonnx_kernels(), DequantizeLinear, Loop]
            )
        except NotImplementedError as e:
            raise UnsupportedOpError(f"the reference evaluator has no kernel: {e}") from e
        except MlpcError:
            raise
        except Exception as e:  # onnx raises bare RuntimeError/ValueError for malformed graphs
            raise IRVerificationError(
                f"the reference evaluator cannot load graph {self.proto.graph.name!r}: {e}"
            ) from e

    def _check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        missing = [n for n in self.inputs if n not in inputs]
        extra = [n for n in inputs if n not in self.inputs and n not in self.optional_inputs]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing inputs {missing}")
            if extra:
                parts.append(f"unknown inputs {extra}")
            raise InputError(f"{'; '.join(parts)}; the model takes {list(self.inputs)}")
        feeds: dict[str, np.ndarray] = {}
        symbols: dict[str, tuple[int, str]] = {}
        for name, value in inputs.items():
            arr = np.asarray(value)
            feeds[name] = arr
            t = self.inputs.get(name)
            if t is None or not t.HasField("tensor_type"):
                continue
            tt = t.tensor_type
            if tt.elem_type:
                expected = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
                if arr.dtype != expected:
                    raise InputError(
                        f"input {name!r} has dtype {arr.dtype}, the model expects {np.dtype(expected)}"
                    )
            if not tt.HasField("shape"):
                continue
            dims = tt.shape.dim
            if arr.ndim != len(dims):
                raise InputError(
                    f"input {name!r} has rank {arr.ndim} (shape {list(arr.shape)}), the model expects rank {len(dims)}"
                )
            for i, (d, size) in enumerate(zip(dims, arr.shape)):
                if d.HasField("dim_value") and d.dim_value != size:
                    raise InputError(
                        f"input {name!r} has shape {list(arr.shape)}; dim {i} must be {d.dim_value}"
                    )
                if d.HasField("dim_param") and d.dim_param:
                    seen = symbols.setdefault(d.dim_param, (size, name))
                    if seen[0] != size:
                        raise InputError(
                            f"dim {d.dim_param!r} is {seen[0]} in input {seen[1]!r} but {size} in input {name!r}"
                        )
        return feeds

    def run(self, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Evaluate the graph on `inputs` ({input name: array}); returns {name: array} for the
        graph outputs, or for the value names in `outputs` (intermediates allowed).

        Raises InputError for missing, unknown, mistyped or misshaped inputs.
        """
        feeds = self._check_inputs(inputs)
        names = list(outputs) if outputs is not None else self.output_names
        try:
            results = self._ref.run(names, feeds)
        except MlpcError:
            raise
        except Exception as e:
            raise IRVerificationError(
                f"reference evaluation of graph {self.proto.graph.name!r} failed: {e}"
            ) from e
        return dict(zip(names, results))
