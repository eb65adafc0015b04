"""Fusion and layout on vs off: kernels and latency of the zoo models, in one process.

    python benchmarks/fusion_layout.py [--rounds 60] [--models mlp,resnet]

Each model is exported once (torch dynamo exporter) and compiled by `mlpc.compile` for the host
in five configurations (`--disable-pass`): everything on; without `layout`; without `fuse` and
`fuse-attention` (TVM's FuseOps then decides the kernels, as before these passes existed); with
all three off; and "unfused": all three off and a user pass putting every node in a group of
its own (one kernel per node: what any fusion buys). Latency is the median of `artifact.run` calls at batch 1 on 2 threads;
the configurations are timed in interleaved rounds (each round runs every configuration in a
fresh order) so that load from other jobs on the machine hits them alike. Writes
results/fusion_layout.json and the README's "fusion_layout" section.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402  (before tvm loads: thread setup)
    README,
    RESULTS_DIR,
    configure_threads,
    fmt,
    machine_info,
    machine_line,
    markdown_table,
    update_readme_section,
    write_json,
)

THREADS = 2
MODELS = ("mlp", "resnet", "mobilenet", "conv1d", "transformer")
UNFUSED_PASS = "one-kernel-per-node"
CONFIGS = {
    "on": (UNFUSED_PASS,),
    "no-layout": (UNFUSED_PASS, "layout"),
    "no-fusion": (UNFUSED_PASS, "fuse", "fuse-attention"),
    "off": (UNFUSED_PASS, "fuse", "fuse-attention", "layout"),
    "unfused": ("fuse", "fuse-attention", "layout"),
}


def register_unfused_pass() -> None:
    """Register the user pass of the "unfused" configuration: every node its own fusion group,
    so the backend compiles one kernel per node and TVM's FuseOps stays out (what fusion buys)."""
    import mlpc
    from mlpc.passes.fuse import set_group

    @mlpc.register_pass(UNFUSED_PASS, after="layout")
    def one_kernel_per_node(graph, ctx):
        """Every node its own fusion group (benchmark baseline)."""
        for index, node in enumerate(graph):
            set_group([node], f"n{index}")


CALLS_PER_ROUND = 10


def kernels(onnx_path: Path, disabled: tuple[str, ...]) -> list[str]:
    """The kernels the compiled model runs (one name per call) under a configuration."""
    from mlpc.backends.tvm.grouping import kernel_calls
    from mlpc.backends.tvm.lower import lower_graph
    from mlpc.frontend import load_model
    from mlpc.pass_infra import PassContext, PassManager
    from mlpc.pipeline import default_pipeline
    from mlpc.targets import get_target

    target = get_target("host")
    loaded = load_model(str(onnx_path))
    PassManager(default_pipeline(target)).run(
        loaded.model, PassContext(target=target, disabled_passes=set(disabled))
    )
    return kernel_calls(lower_graph(loaded.model.graph, 18), target.tvm_target())


def bench_model(name: str, workdir: Path, rounds: int) -> dict:
    """Compile `name` in every configuration, check outputs agree, time them interleaved."""
    import numpy as np

    import mlpc
    from mlpc import zoo

    path = zoo.export_onnx(name, workdir / f"{name}.onnx")
    feeds = {n: t.numpy() for n, t in zip(zoo.get_spec(name).input_names, zoo.example_inputs(name))}
    arts, result = {}, {"configs": {}}
    for config, disabled in CONFIGS.items():
        start = time.perf_counter()
        arts[config] = mlpc.compile(
            str(path), target="host", output_dir=workdir / f"{name}-{config}", disabled_passes=list(disabled)
        )
        result["configs"][config] = {
            "disabled": list(disabled),
            "compile_s": round(time.perf_counter() - start, 2),
            "kernels": len(kernels(path, disabled)),
        }
    outs = {c: list(a.run(feeds).values())[0] for c, a in arts.items()}
    ref = outs["off"]
    for config, out in outs.items():
        err = float(np.max(np.abs(out - ref)) / max(float(np.max(np.abs(ref))), 1e-12))
        result["configs"][config]["max_rel_diff_vs_off"] = err
        if err > 1e-4:
            raise RuntimeError(f"{name} {config}: output differs from the 'off' build by {err:.2e}")
    times: dict[str, list[float]] = {c: [] for c in CONFIGS}
    round_medians: dict[str, list[float]] = {c: [] for c in CONFIGS}
    for art in arts.values():
        for _ in range(5):
            art.run(feeds)
    order = list(CONFIGS)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for config in order:
            run = arts[config].run
            batch = []
            for _ in range(CALLS_PER_ROUND):
                start = time.perf_counter()
                run(feeds)
                batch.append(time.perf_counter() - start)
            times[config] += batch
            round_medians[config].append(float(np.median(batch)))
    for config, ts in times.items():
        result["configs"][config]["median_ms"] = float(np.median(ts) * 1e3)
        result["configs"][config]["p90_ms"] = float(np.percentile(ts, 90) * 1e3)
        result["configs"][config]["runs"] = len(ts)
        # The ratio within each round (configurations timed seconds apart), then its median over
        # rounds: load bursts from other jobs cancel better than in a ratio of overall medians.
        ratios = np.array(round_medians["off"]) / np.array(round_medians[config])
        result["configs"][config]["speedup_vs_off"] = float(np.median(ratios))
        result["configs"][config]["speedup_vs_off_iqr"] = [
            float(np.percentile(ratios, 25)),
            float(np.percentile(ratios, 75)),
        ]
    return result


def report(results: dict) -> str:
    """The README section: kernels and median latency per configuration, and ratios to 'off'."""
    rows = []
    for name, res in results["models"].items():
        c = res["configs"]
        rows.append(
            [
                name,
                " / ".join(str(c[k]["kernels"]) for k in CONFIGS),
                " / ".join(fmt(c[k]["median_ms"]) for k in CONFIGS),
                " / ".join(f"{c[k]['speedup_vs_off']:.2f}×" for k in CONFIGS if k != "off"),
            ]
        )
    table = markdown_table(
        [
            "model",
            "kernels " + " / ".join(CONFIGS),
            "median ms " + " / ".join(CONFIGS),
            "speedup vs off: " + " / ".join(k for k in CONFIGS if k != "off"),
        ],
        rows,
    )
    return "\n".join(
        [
            "### Fusion and layout passes on vs off",
            "",
            f"`python benchmarks/fusion_layout.py` — batch 1, {THREADS} threads, one process, "
            f"{results['rounds']} interleaved rounds × {CALLS_PER_ROUND} calls per configuration. "
            "`no-layout` disables `layout`; `no-fusion` disables `fuse` and `fuse-attention` (TVM's FuseOps "
            "then groups the kernels, as before); `off` disables all three; `unfused` is `off` plus a user "
            "pass giving every node its own group (one kernel per node). Kernels = kernel launches per "
            "inference. The machine's 2 cores are shared with other jobs, so absolute times are noisy; "
            "the ratios are the figures to read: each is the median over rounds of the per-round ratio "
            "of median latencies (configurations timed seconds apart), with its interquartile range "
            "in results/fusion_layout.json.",
            "",
            table,
            "",
            machine_line(results["machine"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the JSON results and the README section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--no-write", action="store_true", help="print only; leave results/ and README alone")
    args = parser.parse_args(argv)
    configure_threads(THREADS)
    register_unfused_pass()
    results = {"machine": machine_info(), "threads": THREADS, "rounds": args.rounds, "models": {}}
    with tempfile.TemporaryDirectory(prefix="mlpc-fusion-bench-") as tmp:
        for name in args.models.split(","):
            results["models"][name] = bench_model(name, Path(tmp), args.rounds)
            c = results["models"][name]["configs"]
            print(
                name,
                {
                    k: (v["kernels"], round(v["median_ms"], 4), round(v["speedup_vs_off"], 2))
                    for k, v in c.items()
                },
                flush=True,
            )
    markdown = report(results)
    print(markdown)
    if not args.no_write:
        write_json(RESULTS_DIR / "fusion_layout.json", results)
        update_readme_section(README, "fusion_layout", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
