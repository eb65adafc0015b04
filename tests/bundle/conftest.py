"""Fixtures for bundle tests: zoo models built for the host and for aarch64, bundled once per session.

A test that needs a cross toolchain, qemu-user or the aarch64 TVM runtime is skipped with the
Debian package (or command) that provides it; `make setup` installs all of them.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import mlpc
from mlpc import zoo
from mlpc.backends.tvm.cross import toolchain
from mlpc.errors import TargetError

ARM_TARGET = "arm/cortex-a72"


def require_arm(arch: str = "aarch64") -> None:
    """Skip the calling test unless the toolchain, emulator and device runtime for `arch` exist."""
    chain = toolchain(arch)
    for tool in (chain.cxx, chain.qemu):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing: install the Debian package {chain.package_of(tool)} (make setup)")
    from mlpc.bundle.device_runtime import runtime_for

    try:
        runtime_for(arch)
    except TargetError as e:
        pytest.skip(str(e))


class Built:
    """One zoo model compiled for the host and for aarch64 (with its bundle), plus test inputs."""

    def __init__(self, root: Path, name: str):
        self.name = name
        onnx_path = zoo.export_onnx(name, root / f"{name}.onnx", exporter="legacy")
        self.host = mlpc.compile(onnx_path, target="host", output_dir=root / f"{name}-host")
        self.bundle = root / f"{name}.tar.gz"
        self.arm = mlpc.compile(onnx_path, target=ARM_TARGET, output_dir=root / f"{name}-arm", bundle=self.bundle)
        rng = np.random.default_rng(7)
        self.inputs = {s["name"]: rng.standard_normal(s["shape"]).astype(s["dtype"]) for s in self.host.inputs}


@pytest.fixture(scope="session")
def built_models(tmp_path_factory) -> dict[str, Built]:
    """resnet and transformer, each built for host and arm/cortex-a72 with a bundle (built lazily)."""
    require_arm()
    root = tmp_path_factory.mktemp("bundles")
    cache: dict[str, Built] = {}

    class Lazy(dict):
        def __missing__(self, name: str) -> Built:
            cache[name] = Built(root, name)
            self[name] = cache[name]
            return cache[name]

    return Lazy()


@pytest.fixture
def resnet(built_models) -> Built:
    """The zoo resnet, built for host and aarch64."""
    return built_models["resnet"]


DOT_TARGET = "arm/neoverse-n1"  # SDOT/UDOT: the integer kernels' dot-product path


class QuantBuilt:
    """One zoo model quantized once (fake-quant QONNX file), then compiled for the host and as an
    aarch64 bundle for `target`: both builds lower the same graph to the same integer graph."""

    def __init__(self, root: Path, name: str, scheme: str, target: str):
        import onnx_ir as ir

        self.name, self.scheme, self.target = name, scheme, target
        tag = f"{name}-{scheme}-{target.replace('/', '_')}"
        onnx_path = zoo.export_onnx(name, root / f"{tag}.onnx", exporter="legacy")
        self.input = mlpc.load_model(onnx_path).model.graph.inputs[0].name
        calib = np.concatenate([zoo.example_inputs(name, batch=1, seed=s)[0].numpy() for s in range(8)])
        # The NumPy engine and round-to-nearest keep quantization fast; what is tested is the
        # code generated for the integer graph, not the quantizer.
        qmodel = mlpc.quantize(onnx_path, scheme, {self.input: calib}, config={"rounding": "nearest"},
                               engine="reference")
        self.quantized = root / f"{tag}-q.onnx"
        ir.save(qmodel, self.quantized)
        self.host = mlpc.compile(self.quantized, target="host", output_dir=root / f"{tag}-host")
        self.bundle = root / f"{tag}.tar.gz"
        self.arm = mlpc.compile(self.quantized, target=target, output_dir=root / f"{tag}-arm", bundle=self.bundle)
        self.inputs = {self.input: zoo.example_inputs(name, batch=1, seed=100)[0].numpy()}


@pytest.fixture(scope="session")
def quant_built(tmp_path_factory):
    """Build (lazily, once per session) QuantBuilt(name, scheme, target) keyed by that triple."""
    require_arm()
    root = tmp_path_factory.mktemp("quant-bundles")
    cache: dict[tuple[str, str, str], QuantBuilt] = {}

    def get(name: str, scheme: str, target: str = DOT_TARGET) -> QuantBuilt:
        key = (name, scheme, target)
        if key not in cache:
            cache[key] = QuantBuilt(root, *key)
        return cache[key]

    return get
