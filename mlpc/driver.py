"""The compile driver: load → passes → backend → artifact (→ verification).

    >>> import mlpc
    >>> art = mlpc.compile("model.onnx", target="host", output_dir="out/", verify=True)  # doctest: +SKIP
    >>> art.verification["passed"]  # doctest: +SKIP
    True
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlpc
from mlpc.analysis import model_stats, value_info
import onnx_ir as ir

from mlpc.artifact import MANIFEST, Artifact, check_output_dir, load, write_artifact
from mlpc.backends import get_backend
from mlpc.errors import InputError
from mlpc.frontend import load_model
from mlpc.instruments import DumpIRInstrument
from mlpc.pass_infra import PassContext, PassManager
from mlpc.pass_registry import get_pass
from mlpc.pipeline import POST_QUANT_PASSES, default_pipeline, load_entry_point_passes, load_plugin
from mlpc.targets import get_target
from mlpc.verify import DEFAULT_TOLERANCE
from mlpc.verify import verify as run_verification

logger = logging.getLogger(__name__)


def compile(  # noqa: A001 - the public name users expect
    model: Any,
    target: Any = "host",
    output_dir: str | Path | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    example_inputs: Any = None,
    verify: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    opt_level: int = 2,
    passes: Sequence[str] | None = None,
    disabled_passes: Sequence[str] = (),
    pass_plugins: Sequence[str | Path] = (),
    dump_ir: str | Path | None = None,
    verify_each_pass: bool | None = None,
    schedules: bool = True,
    bundle: str | Path | None = None,
    dtype: str = "fp32",
    tuning_db: str | Path | None = None,
    quantize: Any = None,
    calibration: Any = None,
    quant_config: Any = None,
    size_budget: Any = None,
    latency_budget: Any = None,
    bops_budget: Any = None,
    mixed_bits: Any = None,
    sensitivity: Any = None,
    mixed_report: str | Path | None = None,
    mixed_candidates: int = 1,
    lut_budget: Any = None,
    bram_budget: Any = None,
    fps: float | None = None,
    folding: Any = None,
    fpga_options: Mapping[str, Any] | None = None,
) -> Artifact:
    """Compile a model for a target and return the Artifact written to `output_dir`.

    `model` is an .onnx path, an onnx.ModelProto, an onnx_ir.Model or a torch.nn.Module (with
    `example_inputs` or `input_shapes`). `target` is a tag (`mlpc targets`) or a Target. Without
    `output_dir` the artifact goes to a temporary directory removed at exit. With `verify`, the
    artifact is run against onnxruntime/PyTorch and the report stored in its manifest; a failed
    verification raises VerificationError after the artifact is written (so it can be inspected).
    `passes` replaces the pipeline by the named passes; `disabled_passes` drops some;
    `pass_plugins` are Python files whose passes register themselves; `dump_ir` is a directory
    receiving the IR as text before the first pass and after each pass that changed it.
    `verify_each_pass` runs the IR verifier after every pass (default: env MLPC_VERIFY_PASSES).
    `schedules=False` builds without mlpc's default CPU schedules (TVM's naive loops; for comparison).
    `bundle` is a .tar.gz path receiving a deployment bundle for the target's board (`mlpc.bundle`).
    A target of another architecture (e.g. arm/cortex-a72 on x86) is verified under qemu-user.
    `dtype` is the compute precision: "fp32", or "fp16"/"bf16" on CUDA targets (inputs and
    outputs stay float32).
    `tuning_db` is a database written by `mlpc tune`; its tuned kernels (and those in the user's
    tuning cache for this target) replace the default schedules; the manifest lists them.
    `quantize` (a scheme such as "w8a8"/"w4a8" or a QuantConfig) with `calibration` data and an
    optional `quant_config` file runs post-training quantization after the pipeline (see
    `mlpc.quantize`); `verify` then compares against the fake-quant model.
    `quantize="mixed"` chooses weight bits per layer first (`mlpc.mixed_precision`: sensitivity on
    `calibration`, or a precomputed `sensitivity` file, and HAWQ-V3's ILP under `size_budget`
    (fraction of fp32 or bytes), `latency_budget` ("2ms", measured on this host for x86, analytic
    for ARM/CUDA) and `bops_budget`; candidate `mixed_bits`, default 2/3/4/8), then quantizes with
    that per-layer config (activations 8-bit); `mixed_report` writes the HTML report;
    `mixed_candidates` > 1 measures the ILP's that many best allocations end to end on held-out
    calibration samples and keeps the best (`mlpc.mixed.refine`). On `fpga/*` targets the bits must
    also fit the part (LUT/BRAM36 from the FPGA backend's resource model at the folding `fps`
    implies), or `lut_budget`/`bram_budget` (a fraction of the part or a count).
    For `fpga/*` targets, `fps` is the throughput the folding must meet (default: the fastest that
    fits), `folding` a FINN-style JSON file/dict of PE/SIMD per layer, `fpga_options` passes
    `simulate_design`/`synthesize_design`/`synth_timeout_s`/`samples` (float inputs for the testbench,
    default: up to 32 calibration samples) to the FPGA backend; the design is
    checked by simulating it against the reference interpreter (`verify` adds nothing).
    """
    start = time.perf_counter()
    if verify_each_pass is None:
        verify_each_pass = os.environ.get("MLPC_VERIFY_PASSES", "") not in ("", "0")
    tgt = get_target(target)
    if output_dir is not None:
        check_output_dir(Path(output_dir))
    if tgt.kind != "fpga" and (fps is not None or folding is not None or fpga_options):
        raise InputError(f"--fps/--folding apply to FPGA targets (fpga/xczu7ev, ...), not {tgt.name!r}")
    if bundle is not None:
        from mlpc.bundle.writer import bundle_name

        bundle_name(Path(bundle))  # a wrong name fails now, not after the build
    loaded = load_model(model, input_shapes=input_shapes, example_inputs=example_inputs)
    load_entry_point_passes()
    for plugin in pass_plugins:
        load_plugin(plugin)
    pipeline = default_pipeline(tgt, passes)
    for name in disabled_passes:
        get_pass(name)  # an unknown name is an error, not a silent no-op
    instruments = [DumpIRInstrument(dump_ir)] if dump_ir is not None else []
    ctx = PassContext(target=tgt, opt_level=opt_level, disabled_passes=set(disabled_passes),
                      instruments=instruments, verify_each=verify_each_pass)
    # With quantization, the passes from the first of POST_QUANT_PASSES on run after it (the
    # quantizer knows the ONNX convs and matmuls, not their channels-last / fused forms).
    split = next((i for i, p in enumerate(pipeline) if p.name in POST_QUANT_PASSES), len(pipeline))
    after_quant = pipeline[split:] if quantize is not None else []
    fake_quant = None
    if tgt.kind == "fpga" and any(n.op_type in ("Quant", "BipolarQuant") for n in loaded.model.graph):
        fake_quant = ir.serde.serialize_model(loaded.model)  # QONNX input: exported next to the design
    pass_log = PassManager(pipeline[: len(pipeline) - len(after_quant)]).run(loaded.model, ctx)
    mixed = None
    if quantize == "mixed":
        mixed = _mixed_config(loaded, tgt, calibration, quant_config, size_budget, latency_budget, bops_budget,
                              mixed_bits, sensitivity, mixed_report, mixed_candidates,
                              {"lut_budget": lut_budget, "bram_budget": bram_budget, "fps": fps})
        quantize, quant_config = "w8a8", mixed.config()
    elif any(v is not None for v in (size_budget, latency_budget, bops_budget, sensitivity, mixed_report,
                                     lut_budget, bram_budget)) or mixed_candidates != 1:
        raise InputError("--size-budget/--latency-budget/--bops-budget/--lut-budget/--bram-budget/--sensitivity/"
                         "--mixed-candidates apply to --quantize mixed")
    if quantize is not None:
        from mlpc.quant.api import quantize_loaded

        pass_log += quantize_loaded(loaded, ctx, quantize, calibration, quant_config)
        pass_log += PassManager(after_quant).run(loaded.model, ctx)
    graph = loaded.model.graph
    backend = get_backend(tgt.backend)
    inputs = [value_info(v) for v in graph.inputs]
    outputs = [value_info(v) for v in graph.outputs]
    manifest: dict[str, Any] = {
        "mlpc_version": mlpc.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {"name": loaded.source, "sha256": loaded.source_sha256, "kind": loaded.reference_kind},
        "target": tgt.to_json(),
        "inputs": inputs,
        "outputs": outputs,
        "passes": [r.to_json() for r in pass_log],
        "stats": model_stats(graph),
    }
    if "quantization_layers" in ctx.options:
        scheme = "mixed" if mixed is not None else _scheme_name(quantize)
        manifest["quantization"] = {"scheme": scheme, **ctx.options["quantization_layers"]}
    if mixed is not None:
        manifest["mixed_precision"] = mixed.to_json()

    def write_files(tmp: Path) -> None:
        options: dict[str, Any] = {} if dtype in ("fp32", "float32") else {"dtype": dtype}
        if tuning_db is not None:
            options["tuning_db"] = tuning_db
        if tgt.kind == "fpga":
            options = {"fps": fps, "folding": folding,
                       "fake_quant_model": ctx.options.get("fake_quant_model", fake_quant),
                       "samples": _fpga_samples(calibration, loaded.model.graph), **(fpga_options or {})}
            if mixed is not None and (lut_budget is not None or bram_budget is not None):
                # the automatic folding unfolds no further than the budget the bits were chosen for
                options["resource_limits"] = {key: mixed.budgets[kind] for kind, key in (("lut", "LUT"), ("bram", "BRAM36"))}
        manifest["backend"] = backend.compile_graph(loaded.model, tgt, tmp, schedules=schedules, **options)

    report = None

    def finalize(tmp: Path, manifest: dict[str, Any]) -> None:
        nonlocal report
        if verify and tgt.kind == "fpga":
            logger.info("fpga: the design was checked by simulation against the reference interpreter")
        elif verify:
            with _runner(tmp, manifest) as run:
                report = run_verification(loaded, run, inputs, [o["name"] for o in outputs], tolerance=tolerance)
            manifest["verification"] = report.to_json()
        manifest["compile_seconds"] = round(time.perf_counter() - start, 3)

    out = Path(output_dir) if output_dir is not None else _scratch_dir()
    path = write_artifact(out, write_files, manifest, finalize)
    if report is not None:
        report.raise_if_failed()
    if bundle is not None:
        from mlpc.bundle import write_bundle

        write_bundle(path, bundle)
    return load(path, check_target=False)  # compiling for another machine (a GPU, a board) is fine


@contextlib.contextmanager
def _runner(tmp: Path, manifest: dict[str, Any]) -> Iterator[Callable[[Any], dict[str, Any]]]:
    """Yield the function running the artifact being written in `tmp`: in process, or through the
    bundle runner (under qemu-user) when its target is another architecture."""
    from mlpc.backends.tvm.cross import host_arch

    if manifest["target"]["arch"] == host_arch():
        yield Artifact(tmp, manifest).run
        return
    from mlpc.bundle import open_bundle

    (tmp / MANIFEST).write_text(json.dumps(manifest))  # rewritten, with the verification, afterwards
    with open_bundle(tmp) as runner:
        yield runner.run


def _mixed_config(loaded: Any, tgt: Any, calibration: Any, quant_config: Any, size_budget: Any,
                  latency_budget: Any, bops_budget: Any, bits: Any, sensitivity: Any, report: Any,
                  candidates: int = 1, fpga: dict[str, Any] | None = None) -> Any:
    """Run `mlpc.mixed_precision` on a copy of the loaded (canonicalized) model."""
    import onnx_ir as ir

    from mlpc.mixed.api import mixed_precision

    if quant_config is not None:
        raise InputError("--quantize mixed writes its own per-layer config: drop --quant-config")
    fpga = {k: v for k, v in (fpga or {}).items() if v is not None}
    if all(v is None for v in (size_budget, latency_budget, bops_budget)) and tgt.kind != "fpga":
        raise InputError("--quantize mixed needs a budget: --size-budget (e.g. 0.15), --latency-budget "
                         "(e.g. 2ms) or --bops-budget")
    if calibration is None:
        raise InputError("--quantize mixed needs calibration data: --calib FILE.npz")
    copy = ir.serde.deserialize_model(ir.serde.serialize_model(loaded.model))
    return mixed_precision(copy, calibration, target=tgt, bits=bits, size_budget=size_budget,
                           latency_budget=latency_budget, bops_budget=bops_budget, sensitivity=sensitivity,
                           report=report, end_to_end=candidates, **fpga)


def _fpga_samples(calibration: Any, graph: Any) -> Any:
    """Up to 32 calibration inputs for the FPGA testbench (None: the backend makes its own)."""
    if calibration is None:
        return None
    from mlpc.quant.calibration import CalibrationSet

    data = CalibrationSet.load(calibration, graph, limit=32)
    name = graph.inputs[0].name
    return [sample[name] for sample in data.samples]


def _scheme_name(quantize: Any) -> str:
    return quantize if isinstance(quantize, str) else getattr(quantize, "name", str(quantize))


def _scratch_dir() -> Path:
    root = Path(tempfile.mkdtemp(prefix="mlpc-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root / "artifact"
