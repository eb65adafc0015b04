"""Screening for the mixed-precision claim: which small models does mlpc's own uniform 4-bit PTQ
cost accuracy, and does the ILP's allocation at the same size win it back?

    python benchmarks/mixed_screen.py                                # every candidate, seeds 0,1,2
    python benchmarks/mixed_screen.py --models vgg1d --seeds 0,1,2,3,4 --update

The quick path of `benchmarks/mixed.py`'s mnist1d-deep rows, for candidates before anything big is
built: each model is trained here (`benchmarks/quant_models.py`, packaged data only), and fp32,
uniform w8a8, uniform w4a8 and the ILP's allocation at exactly the size of uniform 4-bit are each
the quantize pass's fake-quant model (`mlpc.quantize`, reference engine, the same 256 calibration
samples, GPTQ rounding and bias correction for every row) run by onnxruntime on every test
sample. The ILP uses the fast data sensitivity (round-to-nearest weights, 64 samples, widths
2/3/4/8, sizes as mlpc stores them: 3-bit in 4-bit slots). Nothing is chosen on the test set.
Writes benchmarks/results/mixed_screen.json and the `mixed-screen` section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import onnx

from benchmarks import common

logger = logging.getLogger("benchmarks.mixed_screen")

CALIBRATION_SAMPLES = 256
SENSITIVITY_SAMPLES = 64
BITS = (2, 3, 4, 8)


def _candidates() -> dict[str, tuple[str, Callable[[int], Any]]]:
    """name → (one-line description, trainer(seed) → TrainedModel)."""
    from benchmarks import quant_models as qm

    return {
        "resnet": (
            "zoo ResNet (BN folded) on digits upsampled to 32×32",
            lambda s: qm.train_digits_zoo("resnet", s),
        ),
        "digits-narrow": (
            "digits CNN of quant.py at width 4 (convs 1→4→8)",
            lambda s: qm.train_digits_cnn(s, width=4),
        ),
        "mnist1d-narrow": (
            "mnist1d CNN of quant.py at width 4 (convs 1→4→8)",
            lambda s: qm.train_mnist1d_cnn(s, width=4),
        ),
        "mnist1d-deep": ("mixed.py's deep narrow 1-D CNN, 6 convs of 8", qm.train_mnist1d_deep_cnn),
        "transformer": (
            "transformer encoder, 10 patch tokens, d 32, 4 heads, MLP 64, 2 blocks",
            qm.train_mnist1d_transformer,
        ),
        "transformer-narrow": (
            "transformer encoder, 10 patch tokens, d 16, 2 heads, MLP 32, 3 blocks",
            lambda s: qm.train_mnist1d_transformer(s, d=16, heads=2, ff=32, depth=3),
        ),
        "dscnn": ("depthwise-separable 1-D CNN, width 32, 4 blocks, BN, dense 128", qm.train_mnist1d_dscnn),
        "vgg1d": ("convs 8/8/16/16, dense head 512/512, dropout 0.5", qm.train_mnist1d_wide_head),
        "deep-bn-head": (
            "6 convs of 8 with BN, dense head 512/512, dropout 0.2",
            lambda s: qm.train_mnist1d_wide_head(s, widths=(8,) * 6, batchnorm=True, dropout=0.2, lr=2e-3),
        ),
    }


def screen(name: str, trainer: Callable[[int], Any], seed: int, work: Path) -> dict[str, Any]:
    """One candidate at one seed: {"fp32", "uniform 8-bit", "uniform 4-bit", "mixed"} accuracies %,
    the allocation, the layers' sizes and Ω at 4 and 2 bits, and the seconds each part took."""
    from benchmarks.mixed import _fake_quant_accuracy
    from mlpc.mixed.api import build_problem, layer_config
    from mlpc.mixed.ilp import solve
    from mlpc.mixed.layers import fp32_bytes
    from mlpc.mixed.sensitivity import data_sensitivity

    start = time.perf_counter()
    trained = trainer(seed)
    train_s = time.perf_counter() - start
    path = work / f"{name}-{seed}.onnx"
    onnx.save(trained.model, path)
    calib = {trained.model.graph.input[0].name: trained.x_train[:CALIBRATION_SAMPLES]}

    def accuracy(scheme: str | None, config: Any = None) -> float:
        return _fake_quant_accuracy(path, scheme, calib, config, trained.x_test, trained.y_test)

    start = time.perf_counter()
    row: dict[str, Any] = {
        "fp32": accuracy(None),
        "uniform 8-bit": accuracy("w8a8"),
        "uniform 4-bit": accuracy("w4a8"),
    }
    uniform_s = time.perf_counter() - start
    start = time.perf_counter()
    sens = data_sensitivity(path, calib, samples=SENSITIVITY_SAMPLES, bits=BITS)
    names = [layer.name for layer in sens.layers]

    def size_of(bits: dict[str, int]) -> float:
        return 4.0 * sens.other_params + sum(layer.size_bytes(bits[layer.name]) for layer in sens.layers)

    alloc = solve(build_problem(sens), {"size": size_of(dict.fromkeys(names, 4))})
    uniform4 = all(b == 4 for b in alloc.bits.values())
    row["mixed"] = row["uniform 4-bit"] if uniform4 else accuracy("w8a8", layer_config(alloc.bits))
    fp32 = fp32_bytes(sens.layers, sens.other_params)
    row.update(
        {
            "bits": alloc.bits,
            "mixed_is_uniform_4": uniform4,
            "size_fraction": {
                "uniform 4-bit": size_of(dict.fromkeys(names, 4)) / fp32,
                "mixed": size_of(alloc.bits) / fp32,
            },
            "layers": [
                {
                    "name": layer.name,
                    "params": layer.params,
                    "omega4": sens.omega[layer.name][4],
                    "omega2": sens.omega[layer.name][2],
                }
                for layer in sens.layers
            ],
            "test_samples": len(trained.x_test),
            "seconds": {
                "train": round(train_s, 1),
                "uniform": round(uniform_s, 1),
                "mixed": round(time.perf_counter() - start, 1),
            },
        }
    )
    logger.info(
        "%s seed %d: %s", name, seed, {k: row[k] for k in ("fp32", "uniform 8-bit", "uniform 4-bit", "mixed")}
    )
    return row


def summary_rows(models: dict[str, Any]) -> list[list[str]]:
    """One table row per model: mean fp32 / w8 / w4 / mixed accuracy over its seeds, the loss of
    uniform 4-bit to fp32 and the mixed allocation's gain over uniform 4-bit per seed."""
    rows = []
    for name, result in models.items():
        seeds = result["seeds"]
        arr = {
            k: np.array([seeds[s][k] for s in seeds])
            for k in ("fp32", "uniform 8-bit", "uniform 4-bit", "mixed")
        }
        loss, gain = arr["uniform 4-bit"] - arr["fp32"], arr["mixed"] - arr["uniform 4-bit"]
        first = next(iter(seeds.values()))
        rows.append(
            [
                f"{name}: {result['description']}",
                f"{', '.join(seeds)} ({first['test_samples']})",
                *(f"{arr[k].mean():.2f}" for k in ("fp32", "uniform 8-bit", "uniform 4-bit", "mixed")),
                ", ".join(f"{d:+.2f}" for d in loss),
                ", ".join(
                    "=" if seeds[s]["mixed_is_uniform_4"] else f"{d:+.2f}" for s, d in zip(seeds, gain)
                ),
                "; ".join("/".join(str(b) for b in seeds[s]["bits"].values()) for s in seeds),
            ]
        )
    return rows


def render(data: dict[str, Any]) -> str:
    """The README section for a results dict."""
    return "\n".join(
        [
            common.machine_line(data["machine"]),
            "",
            "Accuracy % on every test sample (mean over the seeds); each row is the quantize pass's fake-quant "
            "model run by onnxruntime (activations 8-bit); the mixed column is the ILP's allocation "
            "(round-to-nearest data sensitivity, widths 2/3/4/8) at exactly the size of uniform 4-bit, "
            '"=" where the ILP chose uniform 4-bit itself.',
            "",
            common.markdown_table(
                [
                    "model",
                    "seeds (test samples)",
                    "fp32",
                    "uniform 8-bit",
                    "uniform 4-bit",
                    "mixed at uniform-4 size",
                    "uniform 4-bit − fp32 per seed",
                    "mixed − uniform 4-bit per seed",
                    "mixed bits per layer per seed",
                ],
                summary_rows(data["models"]),
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    candidates = _candidates()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(candidates))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=common.RESULTS_DIR / "mixed_screen.json")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument(
        "--update", action="store_true", help="keep the other models' results already in --output"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    common.configure_threads(args.threads)
    import torch

    torch.set_num_threads(1)
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(candidates))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(candidates)}")
    data: dict[str, Any] = {"machine": common.machine_info(), "models": {}}
    if args.update and args.output.exists():
        data["models"] = {
            m: r for m, r in json.loads(args.output.read_text())["models"].items() if m not in models
        }
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            description, trainer = candidates[name]
            result = {"description": description, "seeds": {}, "ran": common.machine_info()["date"]}
            for seed in (int(s) for s in args.seeds.split(",")):
                result["seeds"][str(seed)] = screen(name, trainer, seed, Path(tmp))
                data["models"][name] = result
                common.write_json(args.output, data)  # what is measured survives an interrupted run
    data["models"] = {m: data["models"][m] for m in candidates if m in data["models"]}
    common.publish(args.output, data, "mixed-screen", render(data), readme=not args.no_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
