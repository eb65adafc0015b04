"""Mixed precision at equal model size: HAWQ-style per-layer bits against uniform 4-, 3- and
2-bit weights, on real data.

    python benchmarks/mixed.py                      # every model (hours on a loaded 2-core machine)
    python benchmarks/mixed.py --models digits
    python benchmarks/mixed.py --models mobilenet --update   # keep the other models' results
    python benchmarks/mixed.py --models mnist1d-deep --seeds 0,1,2 --update
    HF_HUB_OFFLINE=1 python benchmarks/mixed.py --models minilm --update   # the packaged MiniLM encoder

The models: the digits CNN, the mnist1d CNN, the zoo MobileNet/ResNet on digits, the deep narrow
mnist1d CNN (one result per seed, see `SEEDED`) and MiniLM (see `MINILM_SEQ`).

For each model (trained here, `benchmarks/quant_models.py`): the data-driven sensitivity (relative
output noise of each layer alone at 2/3/4/8 bits, 64 calibration samples) and, for comparison,
the same with the quantize pass's own weights ("data, pass": GPTQ rounding and bias correction,
as the build will have them) and the Hessian-trace sensitivity (HAWQ-V2, Hutchinson); the ILP's
allocation at exactly the model size of the uniform 4-bit build and of the usual hand-made
low-bit recipe (2-bit with the first and last layer at 8 bits), midway between uniform 2- and
4-bit, and at 20 % of fp32; and at each of those sizes the ILP's 4 best allocations measured end
to end on held-out calibration samples, the best kept (`mlpc.mixed.refine`). The zoo models
(MobileNet-V2 and ResNet of `mlpc.zoo`, trained on digits upsampled to 32×32) get the reduced
set of rows described at `ZOO`. Every variant is compiled by `mlpc.compile` to the integer build
for this host (activations 8-bit, same 256 calibration samples, same quantize pass: GPTQ
rounding, bias correction) and its accuracy measured on every test sample (an allocation
already built is not built again). "size" is the ILP's model size: weights as mlpc stores them
(2-bit packed four to a byte, 3- and 4-bit two to a byte, 8-bit one) plus float32 biases and
other parameters, as a fraction of the fp32 model; uniform 3-bit is therefore the size of
uniform 4-bit. Writes benchmarks/results/mixed.json and the `mixed` section of
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import onnx

from benchmarks import common

logger = logging.getLogger("benchmarks.mixed")

MODELS = ("digits", "mnist1d", "mnist1d-deep", "mobilenet", "resnet", "minilm")
CALIBRATION_SAMPLES = 256
SENSITIVITY_SAMPLES = 64
EXTRA_FRACTIONS = (0.2,)
END_TO_END_CANDIDATES = 4
# The zoo models (about 20 layers, where one w4a8 build's sequential GPTQ stages take ~10 min on
# this shared 2-core machine): candidate widths 2/4/8 only (on this CPU target a 3-bit weight
# takes a 4-bit slot), the quick data sensitivity only (no per-layer quantize-pass runs, no
# Hessian), and only the rows that test the claim: fp32, uniform 8- and 4-bit and the ILP at the
# size of uniform 4-bit.
ZOO = ("mobilenet", "resnet")
# The deep narrow mnist1d CNN (benchmarks/quant_models.py, ~1,900 weights in 7 layers: 4-bit
# weights cost it accuracy, unlike the other small models) is trained and measured once per seed
# in --seeds, each result under "mnist1d-deep seed N", with the rows that test the claim (each
# 4-bit build's sequential GPTQ takes minutes on the shared machine): fp32, uniform 8- and 4-bit,
# the ILP at the size of uniform 4-bit ("data, pass" sensitivity) and the end-to-end check there;
# each variant is the quantize pass's fake-quant model (`_fake_quant_accuracy`: the model the
# integer build reproduces, without a TVM build per calibration stage), not a compiled build.
SEEDED = ("mnist1d-deep",)
# MiniLM (the packaged all-MiniLM-L6-v2 sentence encoder, benchmarks/minilm.py): 36 MatMul layers;
# its figure is the cosine similarity of the sentence embeddings to PyTorch fp32 on evaluation
# sentences disjoint from the calibration ones, and how well the quantized model keeps the fp32
# ranking of sentence pairs (Spearman ρ of all pairwise cosine similarities, what STS-style tasks
# score). Non-sequential GPTQ as in benchmarks/minilm.py (sequential calibration is one TVM
# build per stage, 36 stages).
MINILM_SEQ = 32
MINILM_CALIBRATION = 64
MINILM_SENSITIVITY = 16
MINILM_EVAL = 200
MINILM_CANDIDATES = 3
MINILM_OPTIONS = {"sequential": False}


def _trained(name: str, seed: int = 0):
    from benchmarks.quant_models import (
        train_digits_cnn,
        train_digits_zoo,
        train_mnist1d_cnn,
        train_mnist1d_deep_cnn,
    )

    if name == "mnist1d-deep":
        return train_mnist1d_deep_cnn(seed)
    if name in ZOO:
        return train_digits_zoo(name)
    return train_digits_cnn() if name == "digits" else train_mnist1d_cnn()


def _accuracy(art, x: np.ndarray, y: np.ndarray) -> float:
    name, out = art.inputs[0]["name"], art.outputs[0]["name"]
    hits = sum(int(np.argmax(art.run({name: x[i : i + 1]})[out]) == y[i]) for i in range(len(x)))
    return 100.0 * hits / len(x)


def _fake_quant_accuracy(
    model_path: Path, scheme: str | None, calib: Any, config: Any, x: np.ndarray, y: np.ndarray
) -> float:
    """Accuracy % of the fake-quant model `mlpc.quantize` makes (the same quantize pass as
    `mlpc.compile`, calibrated with the reference engine instead of TVM builds), run in its QDQ
    form by onnxruntime with graph optimizations off; the float model when `scheme` is None."""
    import mlpc
    from mlpc.mixed.sensitivity import unoptimized_session
    from mlpc.quant.export import to_qdq

    if scheme is None:
        session = unoptimized_session(onnx.load(model_path))
    else:
        session = unoptimized_session(
            to_qdq(mlpc.quantize(model_path, scheme, calib, config=config, engine="reference"))
        )
    name = session.get_inputs()[0].name
    hits = sum(int(np.argmax(session.run(None, {name: x[i : i + 1]})[0]) == y[i]) for i in range(len(x)))
    return 100.0 * hits / len(x)


def bench_model(name: str, work: Path, seed: int = 0) -> dict[str, Any]:
    """Every variant of one model (trained with `seed`): {"variants": {label: {...}},
    "sensitivity": {...}, ...}."""
    import mlpc
    from mlpc.mixed.api import build_problem, layer_config
    from mlpc.mixed.hessian import hessian_sensitivity
    from mlpc.mixed.ilp import pareto, solve
    from mlpc.mixed.layers import fp32_bytes
    from mlpc.mixed.refine import select_end_to_end
    from mlpc.mixed.sensitivity import data_sensitivity

    zoo = name in ZOO
    claim_only = zoo or name in SEEDED  # only the rows at the size of uniform 4-bit
    cand_bits = (2, 4, 8) if zoo else (2, 3, 4, 8)
    start = time.perf_counter()
    trained = _trained(name, seed)
    train_s = time.perf_counter() - start
    model_path = work / f"{name}.onnx"
    onnx.save(trained.model, model_path)
    input_name = trained.model.graph.input[0].name
    calib = {input_name: trained.x_train[:CALIBRATION_SAMPLES]}
    start = time.perf_counter()
    sens = data_sensitivity(model_path, calib, samples=SENSITIVITY_SAMPLES, bits=cand_bits)
    sens_s = time.perf_counter() - start
    sens_pass, pass_s, hess, hess_s = None, None, None, None
    if not zoo:
        start = time.perf_counter()
        sens_pass = data_sensitivity(
            model_path, calib, samples=SENSITIVITY_SAMPLES, rounding="pass", bits=cand_bits
        )
        pass_s = time.perf_counter() - start
        start = time.perf_counter()
        hess = hessian_sensitivity(model_path, calib, samples=SENSITIVITY_SAMPLES, iters=32)
        hess_s = time.perf_counter() - start
    fp32 = fp32_bytes(sens.layers, sens.other_params)
    problems = {"data": build_problem(sens)}
    if sens_pass is not None:
        problems["data, pass"] = build_problem(sens_pass)
    if hess is not None:
        problems["hessian"] = build_problem(hess)
    main = (
        "data" if zoo else "data, pass"
    )  # the sensitivity the Σ Ω column, the end-to-end check and the Pareto use
    names = [layer.name for layer in sens.layers]
    bits_index = {b: j for j, b in enumerate(sens.bits)}

    def size_of(bits: dict[str, int]) -> float:
        return 4.0 * sens.other_params + sum(layer.size_bytes(bits[layer.name]) for layer in sens.layers)

    def omega_of(bits: dict[str, int]) -> float | None:
        if any(b not in bits_index for b in bits.values()):
            return None
        return problems[main].totals([bits_index[bits[n]] for n in names])["omega"]

    variants: dict[str, Any] = {}
    built: dict[Any, dict[str, Any]] = {}

    def build(
        label: str,
        scheme: str | None,
        config: dict[str, Any] | None,
        bits: dict[str, int] | None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        key = tuple(bits.values()) if bits else None
        if key in built:  # the same weight bits as a row already measured: the same build
            variants[label] = {
                **built[key],
                **(extra or {}),
                "same_build_as": built[key]["label"],
                "compile_s": None,
            }
            return
        start = time.perf_counter()
        if name in SEEDED:
            accuracy = _fake_quant_accuracy(model_path, scheme, calib, config, trained.x_test, trained.y_test)
        else:
            art = mlpc.compile(
                model_path,
                target="host",
                output_dir=work / f"{name}-{len(variants)}",
                quantize=scheme,
                calibration=calib if scheme else None,
                quant_config=config,
            )
            accuracy = _accuracy(art, trained.x_test, trained.y_test)
        elapsed = time.perf_counter() - start
        row = {
            "accuracy": accuracy,
            "bits": bits,
            "size_bytes": size_of(bits) if bits else float(fp32),
            "compile_s": round(elapsed, 1),
            **(extra or {}),
        }
        row["size_fraction"] = row["size_bytes"] / fp32
        if bits and omega_of(bits) is not None:
            row["omega"] = omega_of(bits)
        variants[label] = row
        built[key] = {**row, "label": label}
        logger.info("%s %s: %s", name, label, row)

    build("fp32", None, None, None)
    for b in (8, 4) if claim_only else (8, 4, 3, 2):
        build(f"uniform {b}-bit", f"w{b}a8", None, dict.fromkeys(names, b))
    edge8 = {n: (8 if n in (names[0], names[-1]) else 2) for n in names}
    two, four = size_of(dict.fromkeys(names, 2)), size_of(dict.fromkeys(names, 4))
    budgets = {"uniform 4-bit": four}
    if not claim_only:
        build("2-bit, first/last 8-bit (hand-made)", "w8a8", layer_config(edge8), edge8)
        budgets.update(
            {
                "2-bit, first/last 8-bit": size_of(edge8),
                "midway between uniform 2- and 4-bit": (two + four) / 2,
            }
        )
        budgets.update({f"{f:.0%} of fp32": f * fp32 for f in EXTRA_FRACTIONS})
    end_to_end: dict[str, Any] = {}
    for label, budget in budgets.items():
        methods = (
            (main,)
            if name in SEEDED
            else tuple(problems)
            if label == "uniform 4-bit"
            else ("data", "data, pass")
        )
        for method in methods if "fp32" not in label else ("data, pass",):
            alloc = solve(problems[method], {"size": budget})
            tag = (
                f"mixed ({method}) at the size of {label}"
                if "fp32" not in label
                else f"mixed ({method}) at {label}"
            )
            build(
                tag, "w8a8", layer_config(alloc.bits), alloc.bits, {"budget_bytes": budget, "method": method}
            )
        if "fp32" in label or zoo:
            continue
        start = time.perf_counter()
        check = select_end_to_end(
            model_path,
            calib,
            problems[main],
            {"size": budget},
            count=END_TO_END_CANDIDATES,
        )
        end_to_end[label] = {**check.to_json(), "seconds": round(time.perf_counter() - start, 1)}
        build(
            f"mixed (data, pass, best of {END_TO_END_CANDIDATES} end to end) at the size of {label}",
            "w8a8",
            layer_config(check.allocation.bits),
            check.allocation.bits,
            {"budget_bytes": budget, "method": "data, pass, end to end"},
        )
    frontier = [
        {**a.to_json(), "size_fraction": a.costs["size"] / fp32} for a in pareto(problems[main], "size", 12)
    ]
    return {
        "fp32_bytes": fp32,
        "layers": [layer.to_json() for layer in sens.layers],
        "train_s": round(train_s, 1),
        "sensitivity": {
            "data": sens.to_json(),
            **({"data, pass": sens_pass.to_json()} if sens_pass is not None else {}),
            **({"hessian": hess.to_json()} if hess is not None else {}),
            "data_s": round(sens_s, 1),
            "data_pass_s": None if pass_s is None else round(pass_s, 1),
            "hessian_s": None if hess_s is None else round(hess_s, 1),
        },
        "end_to_end": end_to_end,
        "pareto": frontier,
        "test_samples": len(trained.x_test),
        "seed": seed,
        "variants": variants,
    }


def _embedding_metrics(embeddings: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Cosine similarity of each embedding to its fp32 one (mean, min) and the Spearman ρ between
    the pairwise cosine similarities of the sentences under the two models."""
    from scipy.stats import spearmanr

    from benchmarks.minilm import cosine

    cos = cosine(embeddings, reference)

    def pairwise(e: np.ndarray) -> np.ndarray:
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        return (e @ e.T)[np.triu_indices(len(e), 1)]

    rho = spearmanr(pairwise(np.asarray(embeddings, np.float64)), pairwise(np.asarray(reference, np.float64)))
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()), "pair_spearman": float(rho[0])}


def bench_minilm(work: Path) -> dict[str, Any]:
    """MiniLM at the size of uniform 4-bit: fp32, uniform 8- and 4-bit, the ILP's allocation
    (data sensitivity, widths 2/4/8) and the best of its `MINILM_CANDIDATES` best measured end to
    end on held-out calibration sentences; see `MINILM_SEQ` for the figures."""
    import mlpc
    from benchmarks import minilm
    from mlpc.mixed.api import build_problem, layer_config
    from mlpc.mixed.ilp import pareto, solve
    from mlpc.mixed.layers import fp32_bytes
    from mlpc.mixed.refine import select_end_to_end
    from mlpc.mixed.sensitivity import data_sensitivity

    st = minilm.load_encoder()
    calib_sentences = minilm.make_sentences(MINILM_CALIBRATION, seed=1)
    eval_sentences = minilm.make_sentences(MINILM_EVAL, seed=2, exclude=set(calib_sentences))
    model_path = minilm.export_onnx(st, work / "minilm.onnx", MINILM_SEQ)
    reference = minilm.reference_embeddings(st, eval_sentences, MINILM_SEQ)
    eval_feeds = minilm.tokenize(st, eval_sentences, MINILM_SEQ)
    calib = work / "minilm-calib.npz"
    np.savez(calib, **minilm.tokenize(st, calib_sentences, MINILM_SEQ))
    start = time.perf_counter()
    sens = data_sensitivity(model_path, calib, samples=MINILM_SENSITIVITY, bits=(2, 4, 8))
    sens_s = time.perf_counter() - start
    logger.info("minilm sensitivity (%.0f s): %s", sens_s, sens.omega)
    problem = build_problem(sens)
    fp32 = fp32_bytes(sens.layers, sens.other_params)
    names = [layer.name for layer in sens.layers]
    index = {b: j for j, b in enumerate(sens.bits)}

    def size_of(bits: dict[str, int]) -> float:
        return 4.0 * sens.other_params + sum(layer.size_bytes(bits[layer.name]) for layer in sens.layers)

    variants: dict[str, Any] = {}
    built: dict[Any, str] = {}

    def build(
        label: str, scheme: str | None, config: dict[str, Any] | None, bits: dict[str, int] | None
    ) -> None:
        key = tuple(bits.values()) if bits else None
        if key in built:
            variants[label] = {**variants[built[key]], "same_build_as": built[key], "compile_s": None}
            return
        start = time.perf_counter()
        art = mlpc.compile(
            str(model_path),
            target="host",
            output_dir=str(work / f"minilm-{len(variants)}"),
            quantize=scheme,
            calibration=str(calib) if scheme else None,
            quant_config=config,
        )
        elapsed = time.perf_counter() - start
        out = art.outputs[0]["name"]
        embeddings = np.concatenate(
            [art.run({k: eval_feeds[k][i] for k in minilm.INPUTS})[out] for i in range(len(eval_sentences))]
        )
        row = {
            **_embedding_metrics(embeddings, reference),
            "bits": bits,
            "size_bytes": size_of(bits) if bits else float(fp32),
            "compile_s": round(elapsed, 1),
        }
        row["size_fraction"] = row["size_bytes"] / fp32
        if bits:
            row["omega"] = problem.totals([index[bits[n]] for n in names])["omega"]
        variants[label] = row
        built[key] = label
        logger.info("minilm %s: %s", label, row)

    build("fp32", None, None, None)
    for b in (8, 4):
        build(f"uniform {b}-bit", f"w{b}a8", dict(MINILM_OPTIONS), dict.fromkeys(names, b))
    budget = size_of(dict.fromkeys(names, 4))
    alloc = solve(problem, {"size": budget})
    build(
        "mixed (data) at the size of uniform 4-bit",
        "w8a8",
        {**layer_config(alloc.bits), **MINILM_OPTIONS},
        alloc.bits,
    )
    start = time.perf_counter()
    check = select_end_to_end(
        model_path,
        calib,
        problem,
        {"size": budget},
        count=MINILM_CANDIDATES,
        engine="tvm",
        options=MINILM_OPTIONS,
    )
    end_to_end = {"uniform 4-bit": {**check.to_json(), "seconds": round(time.perf_counter() - start, 1)}}
    build(
        f"mixed (data, best of {MINILM_CANDIDATES} end to end) at the size of uniform 4-bit",
        "w8a8",
        {**layer_config(check.allocation.bits), **MINILM_OPTIONS},
        check.allocation.bits,
    )
    frontier = [{**a.to_json(), "size_fraction": a.costs["size"] / fp32} for a in pareto(problem, "size", 12)]
    return {
        "fp32_bytes": fp32,
        "layers": [layer.to_json() for layer in sens.layers],
        "metric": "embedding",
        "sentences": {
            "calibration": len(calib_sentences),
            "evaluation": len(eval_sentences),
            "seq": MINILM_SEQ,
        },
        "sensitivity": {"data": sens.to_json(), "data_s": round(sens_s, 1)},
        "end_to_end": end_to_end,
        "pareto": frontier,
        "test_samples": len(eval_sentences),
        "variants": variants,
    }


def _figure(row: dict[str, Any]) -> float:
    """A row's headline figure: accuracy % (classifiers) or mean cosine to fp32 (MiniLM)."""
    return row["accuracy"] if "accuracy" in row else row["cosine_mean"]


def claim_table(data: dict[str, Any]) -> str:
    """The claim at a glance: per model (and seed), fp32, uniform 4-bit and the mixed rows at the
    size of uniform 4-bit, with the mean over the seeds of a seeded model."""
    rows, seeded = [], {}
    for model, result in data["models"].items():
        v = result["variants"]
        if "uniform 4-bit" not in v:
            continue
        mixed = {
            k: r for k, r in v.items() if k.startswith("mixed") and k.endswith("the size of uniform 4-bit")
        }
        ilp = next(
            (r for k, r in mixed.items() if "end to end" not in k and r.get("method") == "data, pass"), None
        )
        ilp = ilp or next((r for k, r in mixed.items() if "end to end" not in k), None)
        e2e = next((r for k, r in mixed.items() if "end to end" in k), None)
        figures = [
            _figure(v["fp32"]),
            _figure(v["uniform 4-bit"]),
            ilp and _figure(ilp),
            e2e and _figure(e2e),
        ]
        fmt = "{:.4f}" if result.get("metric") == "embedding" else "{:.2f}"
        rows.append(
            [model, "cosine to fp32" if result.get("metric") == "embedding" else "accuracy %"]
            + ["—" if f is None else fmt.format(f) for f in figures]
            + [
                f"{100 * v['uniform 4-bit']['size_fraction']:.2f}",
                f"{100 * ilp['size_fraction']:.2f}" if ilp else "—",
            ]
        )
        if " seed " in model:
            seeded.setdefault(model.split(" seed ")[0], []).append(figures)
    for name, figs in seeded.items():
        if len(figs) > 1:
            arr = np.array([[np.nan if f is None else f for f in row] for row in figs], float)

            def gains(col: int, arr: np.ndarray = arr) -> str:
                return ", ".join("—" if np.isnan(d) else f"{d:+.2f}" for d in arr[:, col] - arr[:, 1])

            means = [np.nan if np.all(np.isnan(c)) else float(np.nanmean(c)) for c in arr.T]
            rows.append(
                [f"{name}, mean of {len(figs)} seeds", "accuracy %"]
                + ["—" if np.isnan(m) else f"{m:.2f}" for m in means]
                + [f"per seed vs uniform 4-bit: ILP {gains(2)}", f"end to end {gains(3)}"]
            )
    return common.markdown_table(
        [
            "model",
            "figure",
            "fp32",
            "uniform 4-bit",
            "mixed (ILP) at its size",
            "mixed (best end to end) at its size",
            "size % fp32 (uniform 4)",
            "size % fp32 (mixed ILP)",
        ],
        rows,
    )


def render(data: dict[str, Any]) -> str:
    """The README section for a results dict."""
    lines = [
        common.machine_line(data["machine"]),
        "",
        f"{data['calibration_samples']} calibration samples, sensitivity on {data['sensitivity_samples']}; "
        "activations 8-bit everywhere; accuracy of the compiled integer build on every test sample; "
        "size = weights as stored + fp32 biases as a fraction of the fp32 model; Σ Ω = the ILP's objective "
        'with the sensitivity measured on the quantize pass\'s own weights ("data, pass"; plain "data" on '
        "the zoo models), lower is better; "
        '"best of 4 end to end" = the ILP\'s 4 best allocations at that size, each quantized whole and '
        "measured on held-out calibration samples (never the test set), the best kept; sensitivity took "
        + ", ".join(
            f"{m}: data {r['sensitivity']['data_s']} s"
            + (
                f", data+pass {r['sensitivity']['data_pass_s']} s"
                if r["sensitivity"].get("data_pass_s")
                else ""
            )
            + (f", hessian {r['sensitivity']['hessian_s']} s" if r["sensitivity"].get("hessian_s") else "")
            for m, r in data["models"].items()
        )
        + ".",
        "",
        "At the size of uniform 4-bit (the claim):",
        "",
        claim_table(data),
        "",
    ]
    for model, result in data["models"].items():
        lines += [
            f"**{model}** (run {result.get('ran', data['machine']['date'])[:16]}; "
            + (
                f"{result['test_samples']} evaluation sentences, {result['sentences']['calibration']} "
                f"calibration sentences (sensitivity on {result['sensitivity']['data']['samples']}), "
                f"{result['sentences']['seq']} tokens; layers "
                if result.get("metric") == "embedding"
                else f"{result['test_samples']} test samples; layers "
            )
            + (
                ", ".join(f"{layer['name']} {layer['params']}" for layer in result["layers"]) + " weights)"
                if len(result["layers"]) <= 6
                else f"{len(result['layers'])} weight layers, "
                f"{sum(layer['params'] for layer in result['layers']):,} weights)"
            ),
            "",
        ]
        embedding = result.get("metric") == "embedding"
        rows = []
        for label, r in result["variants"].items():
            bits = "—" if not r["bits"] else "/".join(str(b) for b in r["bits"].values())
            omega = "—" if "omega" not in r else f"{r['omega']:.3g}"
            figures = (
                [f"{r['cosine_mean']:.4f}", f"{r['cosine_min']:.4f}", f"{r['pair_spearman']:.4f}"]
                if embedding
                else [f"{r['accuracy']:.2f}"]
            )
            rows.append(
                [
                    label,
                    bits,
                    f"{100 * r['size_fraction']:.2f}",
                    f"{r['size_bytes'] / 1024:.1f}",
                    omega,
                    *figures,
                ]
            )
        figure_headers = (
            ["cosine to fp32 (mean)", "cosine (min)", "pairwise-similarity Spearman ρ to fp32"]
            if embedding
            else ["accuracy %"]
        )
        lines.append(
            common.markdown_table(
                ["variant", "weight bits per layer", "size % fp32", "size KiB", "Σ Ω", *figure_headers], rows
            )
        )
        lines.append("")
        for label, check in result.get("end_to_end", {}).items():
            lines.append(
                f"End to end at the size of {label} ({check['fit_samples']} fit / {check['held_out_samples']} "
                f"held-out calibration samples, {check['seconds']} s): "
                + "; ".join(
                    f"#{c['ilp_rank']} {'/'.join(str(b) for b in c['bits'].values())} Σ Ω {c['omega']:.3g} → "
                    f"held-out {c['held_out']:.3g}"
                    for c in check["candidates"]
                )
                + "."
            )
        if result.get("pareto"):
            lines.append("")
            lines.append(
                "ILP Pareto points (size % fp32 → Σ Ω): "
                + ", ".join(f"{100 * p['size_fraction']:.1f} → {p['omega']:.3g}" for p in result["pareto"])
                + "."
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", default="0,1,2", help=f"training seeds of {', '.join(SEEDED)}")
    parser.add_argument("--output", type=Path, default=common.RESULTS_DIR / "mixed.json")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep the other models' results already in --output (each model records when it ran)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    common.configure_threads(args.threads)
    import torch

    torch.set_num_threads(1)  # the tiny models train 20-30x faster with one thread on a loaded machine
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    data: dict[str, Any] = {
        "machine": common.machine_info(),
        "calibration_samples": CALIBRATION_SAMPLES,
        "sensitivity_samples": SENSITIVITY_SAMPLES,
        "models": {},
    }
    if args.update and args.output.exists():
        previous = json.loads(args.output.read_text()).get("models", {})
        data["models"] = {m: r for m, r in previous.items() if m.split(" seed ")[0] not in models}
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            if name == "minilm":
                runs = {name: bench_minilm}
            elif name in SEEDED:
                runs = {
                    f"{name} seed {s}": lambda work, name=name, s=int(s): bench_model(name, work, s)
                    for s in args.seeds.split(",")
                }
            else:
                runs = {name: lambda work, name=name: bench_model(name, work)}
            for key, bench in runs.items():
                data["models"][key] = {**bench(Path(tmp)), "ran": common.machine_info()["date"]}
                common.write_json(args.output, data)  # what is measured survives an interrupted run
    data["models"] = {
        m: data["models"][m]
        for name in MODELS
        for m in sorted(data["models"], key=lambda k: (k.split(" seed ")[0], int(k.split(" seed ")[1]) if " seed " in k else -1))
        if m.split(" seed ")[0] == name
    }
    common.publish(args.output, data, "mixed", render(data), readme=not args.no_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
