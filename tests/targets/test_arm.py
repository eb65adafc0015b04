"""ARM targets: tags, TVM code generation for the exact core, cross-linked libraries checked by
their ELF headers and disassembly, and the armv7 runtime gap reported clearly."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

import mlpc
from mlpc.backends.tvm.cross import elf_arch, export_options, toolchain
from mlpc.bundle import write_bundle
from mlpc.targets import get_target

ARM_TAGS = ["arm/cortex-a53", "arm/cortex-a72", "arm/neoverse-n1", "arm/armv7-neon"]


def _require(arch: str) -> None:
    chain = toolchain(arch)
    for tool in (chain.cxx, chain.objdump):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing: install the Debian package {chain.package_of(tool)} (make setup)")


@pytest.mark.parametrize("tag", ARM_TAGS)
def test_tag_builds_tvm_target_for_the_core(tag):
    target = get_target(tag)
    tvm_target = target.tvm_target()
    assert target.kind == "arm" and tvm_target.mcpu == target.tvm["mcpu"]
    features = tvm_target.features
    assert bool(features.is_aarch64) == (target.arch == "aarch64")
    assert bool(features.has_asimd)
    # SDOT/UDOT: Neoverse N1 has them, Cortex-A53/A72 and ARMv7 do not.
    assert bool(features.has_dotprod) == (tag == "arm/neoverse-n1")
    assert (target.capabilities["int8_dot"] == "sdot") == (tag == "arm/neoverse-n1")
    assert target.missing_on_host()  # this x86 machine cannot run it in process


def _disassemble(arch: str, library) -> str:
    chain = toolchain(arch)
    return subprocess.run([chain.objdump, "-d", str(library)], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("tag,arch,vector_fma", [
    ("arm/cortex-a72", "aarch64", r"\bfmla\s+v\d+\.4s"),
    ("arm/armv7-neon", "armv7l", r"\bv(fma|mla)\.f32\s+q\d+"),
])
def test_cross_compiled_library_is_for_the_board_and_uses_neon(tmp_path, tiny_cnn_static_path, tag, arch, vector_fma):
    _require(arch)
    art = mlpc.compile(tiny_cnn_static_path, target=tag, output_dir=tmp_path / "out")
    library = art.path / "model.so"
    assert elf_arch(library) == arch
    assert re.search(vector_fma, _disassemble(arch, library)), "no NEON multiply-accumulate in the kernels"
    if arch == "armv7l":
        attributes = subprocess.run([f"{toolchain(arch).triple}-readelf", "-A", str(library)],
                                    capture_output=True, text=True, check=True).stdout
        assert "Tag_ABI_VFP_args: VFP registers" in attributes  # hard float
    with pytest.raises(mlpc.TargetError, match="mlpc run"):
        mlpc.load(art.path)


def test_armv7_has_no_device_runtime(tmp_path, tiny_cnn_static_path):
    _require("armv7l")
    art = mlpc.compile(tiny_cnn_static_path, target="arm/armv7-neon", output_dir=tmp_path / "out")
    with pytest.raises(mlpc.TargetError, match="no TVM runtime for armv7l.*no armv7l wheel"):
        write_bundle(art.path, tmp_path / "v7.tar.gz")
    assert not (tmp_path / "v7.tar.gz").exists()


def test_missing_cross_compiler_names_the_package(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(mlpc.ExportError, match="install the Debian package g\\+\\+-aarch64-linux-gnu"):
        export_options(get_target("arm/cortex-a72"))
    assert export_options(get_target("x86")) == {}  # the host architecture links with the default compiler
