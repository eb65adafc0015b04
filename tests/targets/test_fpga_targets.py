"""FPGA parts as targets: resources, clock, yosys family, and how they show up."""
from __future__ import annotations

import json

import pytest

from mlpc.cli import main
from mlpc.targets import get_target, list_targets
from mlpc.targets.fpga import FpgaPart, fpga_part


@pytest.mark.parametrize("name,family,dsp,bram", [("fpga/xczu7ev", "xcup", 1728, 312),
                                                  ("fpga/xc7z020", "xc7", 220, 140),
                                                  ("fpga/xcu250", "xcup", 12288, 2688)])
def test_parts_are_data(name, family, dsp, bram):
    t = get_target(name)
    part = fpga_part(t)
    assert t.kind == "fpga" and t.backend == "fpga"
    assert (part.yosys_family, part.dsp, part.bram36) == (family, dsp, bram)
    assert part.clock_mhz > 0 and part.lut > 0 and part.ff == 2 * part.lut
    assert FpgaPart.from_json(json.loads(json.dumps(part.to_json()))) == part


def test_fpga_targets_are_listed(capsys):
    assert {"fpga/xczu7ev", "fpga/xc7z020", "fpga/xcu250"} <= {t.name for t in list_targets()}
    assert main(["targets", "--json"]) == 0
    listed = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    assert listed["fpga/xc7z020"]["capabilities"]["fpga"]["board"] == "PYNQ-Z2"


def test_an_fpga_design_does_not_run_on_the_host():
    assert "not run by mlpc" in get_target("fpga/xczu7ev").missing_on_host()[0]


def test_fpga_part_of_a_cpu_target_is_an_error():
    with pytest.raises(ValueError, match="not an FPGA target"):
        fpga_part(get_target("x86/avx2"))


def test_running_an_fpga_artifact_says_how_to_simulate_it(tmp_path, capsys):
    from mlpc.artifact import write_artifact

    manifest = {"target": get_target("fpga/xc7z020").to_json(), "inputs": [], "outputs": [], "backend": {}}
    out = write_artifact(tmp_path / "design", lambda tmp: (tmp / "report.json").write_text("{}"), manifest)
    (tmp_path / "in.npz").write_bytes(b"")
    assert main(["run", str(out), "-i", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert "not run by mlpc" in err and "rtl/tb_top.cpp" in err
