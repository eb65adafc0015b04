"""Build a keyword-spotting CNN for a Raspberry Pi 4 (Cortex-A72) and check the bundle on this PC.

    python examples/edge_bundle.py                  # writes kws.tar.gz in a temporary directory
    python examples/edge_bundle.py out/ arm/neoverse-n1

The same from the command line:

    mlpc compile kws.onnx --target arm/cortex-a72 -o out/ --verify --bundle kws.tar.gz
    mlpc run kws.tar.gz --inputs in.npz -o out.npz          # under qemu-user on a PC
    scp kws.tar.gz board: ; ssh board 'tar xzf kws.tar.gz && ./kws/run --inputs in.npz -o out.npz'
"""
from __future__ import annotations

import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

import mlpc
from mlpc import zoo
from mlpc.bundle import open_bundle


def main(argv: list[str]) -> None:
    """Compile the zoo's 1-D keyword-spotting CNN for the ARM target in argv[1] into argv[0]."""
    workdir = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="mlpc-edge-"))
    target = argv[1] if len(argv) > 1 else "arm/cortex-a72"
    model = zoo.export_onnx("conv1d", workdir / "kws.onnx")
    bundle = workdir / "kws.tar.gz"
    # --verify runs the ARM build under qemu-user against onnxruntime before the bundle is written.
    artifact = mlpc.compile(model, target=target, output_dir=workdir / "kws-arm", verify=True, bundle=bundle)
    print(f"compiled for {target}; verified under qemu against onnxruntime: {artifact.verification['passed']}")
    with tarfile.open(bundle) as tar:
        print(f"bundle {bundle} ({bundle.stat().st_size / 1e6:.1f} MB):", ", ".join(sorted(tar.getnames())))

    rng = np.random.default_rng(0)
    inputs = {s["name"]: rng.standard_normal(s["shape"]).astype(s["dtype"]) for s in artifact.inputs}
    with open_bundle(bundle) as board:  # the bundle's own runner, under qemu-user here
        on_board = board.run(inputs)
    on_host = mlpc.compile(model, target="host", output_dir=workdir / "kws-host").run(inputs)
    for name, value in on_board.items():
        diff = np.abs(value - on_host[name]).max() / np.abs(on_host[name]).max()
        print(f"output {name}: shape {value.shape}, relative difference to the host build {diff:.2e}")


if __name__ == "__main__":
    main(sys.argv[1:])
