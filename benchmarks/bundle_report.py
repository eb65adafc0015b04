"""ARM builds: bundle sizes and the kernels' instruction mix, from the cross-compiled libraries.

    python benchmarks/bundle_report.py                         # zoo CNNs, transformer, an int8 GEMM
    python benchmarks/bundle_report.py --models resnet --schemes w8a8 --targets arm/cortex-a72

For every model, scheme (fp32, or quantized w8a8/w4a8: post-training quantization with
`mlpc.quantize` once per model and scheme, calibrated on 8 zoo samples with the NumPy engine and
round-to-nearest weights, then compiled per target) and ARM target: the model library's size
and, for aarch64 targets, the size of
the deployment bundle (`mlpc compile --bundle`: library + native runner + TVM runtime, gzipped);
and from `objdump -d` of the library: instructions, the share that are NEON/SIMD (an operand is a
vector register) and the count of SDOT/UDOT (int8 dot products). Nothing is timed: times under
qemu-user say nothing about a board. Writes benchmarks/results/arm.json and the `arm` section of
benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import onnx
from onnx import TensorProto, helper

from benchmarks.common import README, RESULTS_DIR, machine_info, machine_line, markdown_table, \
    update_readme_section, write_json

logger = logging.getLogger("bundle_report")

MODELS = ("resnet", "mobilenet", "transformer", "int8-gemm")
SCHEMES = ("fp32", "w8a8", "w4a8")
TARGETS = ("arm/cortex-a53", "arm/cortex-a72", "arm/neoverse-n1", "arm/armv7-neon")
# An operand that is a NEON/ASIMD register: v3.4s, v3.16b, q3 (both ISAs); on armv7 also d-registers
# used with an integer or f32 element type (VFP scalar double math uses d-registers with .f64).
_A64_SIMD = re.compile(r"\bv\d+\.\d*[bhsd]\b|\bq\d+\b")
_A32_SIMD = re.compile(r"\bq\d+\b")
_A32_D_VECTOR = re.compile(r"\.(i|s|u|f32|8|16|32|64)")


def int8_gemm(path: Path) -> Path:
    """An int8 GEMM probe: MatMulInteger of int8 [16, 256] by a constant int8 [256, 256] → int32."""
    w = np.random.default_rng(0).integers(-128, 128, (256, 256), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "int8_gemm",
        [helper.make_tensor_value_info("a", TensorProto.INT8, [16, 256])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [16, 256])],
        initializer=[onnx.numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


def is_kernel(function: str) -> bool:
    """True for TVM's kernel bodies (`<name>_compute_`, parallel lambdas); not the `__tvm_ffi_*`
    wrappers that check arguments, nor libgcc helpers and ELF glue."""
    return "_compute_" in function or "parallel_lambda" in function


def instruction_mix(objdump: str, library: Path, arch: str) -> dict[str, Any]:
    """Count the kernels' instructions in `library`: total, NEON/SIMD share, SDOT/UDOT, top mnemonics
    (and the whole library's instruction count, wrappers included)."""
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True,
                          check=True).stdout
    library_total, total, simd, dots, mnemonics = 0, 0, 0, 0, Counter()
    function = ""
    for line in text.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if header:
            function = header.group(1)
            continue
        match = re.match(r"^\s*[0-9a-f]+:\s+([a-z][\w.]*)\s*(.*)$", line)
        if not match:
            continue
        library_total += 1
        if not is_kernel(function):
            continue
        mnemonic, operands = match.groups()
        total += 1
        mnemonics[mnemonic] += 1
        if arch == "aarch64":
            is_simd = bool(_A64_SIMD.search(operands))
        else:
            is_simd = bool(_A32_SIMD.search(operands)) or (
                re.search(r"\bd\d+\b", operands) is not None and mnemonic.startswith("v")
                and _A32_D_VECTOR.search(mnemonic) is not None and not mnemonic.endswith(".f64"))
        simd += is_simd
        dots += mnemonic in ("sdot", "udot", "usdot", "sudot")
    return {"library_instructions": library_total, "instructions": total, "simd": simd,
            "simd_share": simd / total if total else 0.0, "dot_products": dots, "top": mnemonics.most_common(8)}


def quantized(model: str, scheme: str, onnx_path: Path, work: Path) -> Path:
    """The fake-quant QONNX model of `onnx_path` for `scheme` (compiling it lowers it to integers)."""
    import onnx_ir as ir

    import mlpc
    from mlpc import zoo

    name = onnx.load(onnx_path).graph.input[0].name
    calib = np.concatenate([zoo.example_inputs(model, batch=1, seed=s)[0].numpy() for s in range(8)])
    qmodel = mlpc.quantize(onnx_path, scheme, {name: calib}, config={"rounding": "nearest"}, engine="reference")
    path = work / f"{model}-{scheme}.onnx"
    ir.save(qmodel, path)
    return path


def measure(model: str, scheme: str, tag: str, onnx_path: Path, work: Path) -> dict[str, Any]:
    """Compile `onnx_path` for `tag` (with a bundle where a device runtime exists); return the figures."""
    import mlpc
    from mlpc.backends.tvm.cross import toolchain
    from mlpc.bundle.device_runtime import WHEELS
    from mlpc.targets import get_target

    target = get_target(tag)
    out = work / f"{model}-{scheme}-{tag.replace('/', '_')}"
    bundle = out.with_suffix(".tar.gz") if target.arch in WHEELS else None
    artifact = mlpc.compile(onnx_path, target=tag, output_dir=out, bundle=bundle)
    library = artifact.path / artifact.manifest["backend"]["library"]
    row = {"model": model, "scheme": scheme, "target": tag, "arch": target.arch, "library_bytes": library.stat().st_size,
           "bundle_bytes": bundle.stat().st_size if bundle else None,
           **instruction_mix(toolchain(target.arch).objdump, library, target.arch)}
    logger.info("%s %s on %s: %s", model, scheme, tag, {k: v for k, v in row.items() if k != "top"})
    return row


def report(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    """Render the README section from the result rows."""
    table = markdown_table(
        ["model", "scheme", "target", "library KB", "bundle MB", "kernel instructions", "NEON/SIMD", "sdot/udot",
         "library instructions"],
        [[r["model"], r["scheme"], r["target"], f"{r['library_bytes'] / 1024:.0f}",
          "—" if r["bundle_bytes"] is None else f"{r['bundle_bytes'] / 1e6:.2f}",
          f"{r['instructions']:,}", f"{100 * r['simd_share']:.1f} %", str(r["dot_products"]),
          f"{r['library_instructions']:,}"] for r in rows])
    return f"""### ARM builds: bundle size and instruction mix

{machine_line(machine)}

{table}

`python benchmarks/bundle_report.py`. **scheme**: fp32, or post-training quantization (`mlpc.quantize`,
8 calibration samples, NumPy engine, round-to-nearest weights) compiled to integer kernels; the
int8 GEMM is an ONNX `MatMulInteger` model, integer as given. **library**: the cross-compiled
`model.so` (unstripped); **bundle**: `mlpc compile --bundle` (library, native runner and the
aarch64 TVM runtime, libtvm_runtime.so + libtvm_ffi.so ≈ 5.2 MB uncompressed, as .tar.gz: the
runtime dominates, so quantizing these small zoo models saves little of the bundle); **kernel
instructions**: instructions of the kernel bodies (`*_compute_` functions) in the library's
`objdump -d`, **NEON/SIMD** the share of those with a vector-register operand, **sdot/udot** the
int8 dot-product instructions among them: on Neoverse N1 (the only core here with them) the
integer convolutions and weight matmuls run in the int8-quad layout whose 8 × 4 update is
tensorized with `sdot` (`backends/tvm/int_pairs.py`); the transformer's attention matmuls
(activation × activation), depthwise convolutions and ONNX `MatMulInteger` do not take that
layout and use none. Cores without the dot product run the same kernels in the int16-pair
layout, vectorized by LLVM (`smlal`/`mla` on NEON). **library instructions** counts the whole
library, with TVM's argument-checking wrappers. Quantized aarch64 bundles of the CNN and the
transformer run under qemu bit-exact with the host's integer build (tests/bundle).

armv7 has no bundle: there is no armv7l wheel of apache-tvm or apache-tvm-ffi, and neither
apache-tvm nor apache-tvm-tirx publishes an sdist. The apache-tvm wheel ships the runtime's
sources: libtvm_ffi.so builds for armv7 from them with arm-linux-gnueabihf-g++ (a few minutes of
CPU), but libtvm_runtime.so needs seven TVM headers the wheels omit (include/tvm/support/io.h,
serializer.h, cuda/nvtx.h; src/support/bytes_io.h, utils.h, base64.h; compiler-rt's
builtin_fp16.h). Checked again: the apache-tvm-tirx 0.1.0a4 wheel (a separate, pre-release TVM
package) carries three of them (io.h, serializer.h, bytes_io.h), from another code base than 0.27
and still not the other four (the mlc-ai* names on PyPI list only a version 0.1; not pursued). The Relax VM
that runs model.so lives in libtvm_runtime.so, and TVM 0.27 has no executor without it (no AOT or
standalone system-lib path for Relax), so mlpc cannot skip it. `mlpc compile --bundle` therefore
refuses armv7 with that reason; armv7 builds are checked by code generation, the hard-float ABI
and disassembly, and running one needs a TVM runtime built for the board. No times: qemu-user
emulates the board, its speed says nothing about the board's.
"""


def main(argv: list[str] | None = None) -> int:
    """Measure, write results/arm.json and the README section; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--schemes", default=",".join(SCHEMES), help="fp32 and/or quantization schemes")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "arm.json")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from mlpc import zoo

    rows = []
    with tempfile.TemporaryDirectory(prefix="mlpc-arm-bench-") as tmp:
        work = Path(tmp)
        for model in args.models.split(","):
            onnx_path = (int8_gemm(work / f"{model}.onnx") if model == "int8-gemm"
                         else zoo.export_onnx(model, work / f"{model}.onnx", exporter="legacy"))
            # the int8 GEMM is integer already: one build, listed as scheme "int8"
            for scheme in ["int8"] if model == "int8-gemm" else args.schemes.split(","):
                path = onnx_path if scheme in ("fp32", "int8") else quantized(model, scheme, onnx_path, work)
                for tag in args.targets.split(","):
                    rows.append(measure(model, scheme, tag, path, work))
    machine = machine_info()
    write_json(args.output, {"machine": machine, "results": rows})
    if not args.no_readme:
        update_readme_section(README, "arm", report(rows, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
