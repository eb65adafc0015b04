"""FPGA targets: Xilinx parts as data (resources, default clock, yosys family).

    >>> from mlpc.targets import get_target
    >>> fpga_part(get_target("fpga/xczu7ev")).dsp
    1728

The resource counts are the vendors' product-table figures for the device (AMD/Xilinx
DS891 Zynq UltraScale+ MPSoC overview, DS190 Zynq-7000 overview, DS962 Alveo U250 data sheet;
`bram36` counts 36-Kb block RAMs, UltraRAM is not used). `clock_mhz` is the clock mlpc's
throughput and latency figures assume: FINN's default for each board family (10 ns on ZCU104
and PYNQ-Z2; 300 MHz kernels on the Alveo U250's shell), never a timing result — yosys
reports no timing. `yosys_family` is the `synth_xilinx -family` value.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mlpc.targets.target import Target


@dataclass(frozen=True)
class FpgaPart:
    """One FPGA device: what folding and the resource report need.

        >>> XCZU7EV.yosys_family
        'xcup'
    """

    part: str  # the full part number
    board: str
    lut: int
    ff: int
    bram36: int
    dsp: int
    clock_mhz: float
    yosys_family: str

    def resources(self) -> dict[str, int]:
        """The part's resources keyed as in mlpc's reports: LUT, FF, BRAM36, DSP."""
        return {"LUT": self.lut, "FF": self.ff, "BRAM36": self.bram36, "DSP": self.dsp}

    def to_json(self) -> dict[str, Any]:
        """Return the part as a JSON-serialisable dict (Target.capabilities["fpga"])."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FpgaPart:
        """Rebuild a part from `to_json()` output (e.g. an artifact's manifest)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# DS891: XCZU7EV — 230,400 LUTs, 460,800 FFs, 312 BRAM36 (11 Mb), 1,728 DSP48E2.
XCZU7EV = FpgaPart(part="xczu7ev-ffvc1156-2-e", board="ZCU104", lut=230_400, ff=460_800, bram36=312,
                   dsp=1_728, clock_mhz=100.0, yosys_family="xcup")
# DS190: XC7Z020 — 53,200 LUTs, 106,400 FFs, 140 BRAM36 (4.9 Mb), 220 DSP48E1.
XC7Z020 = FpgaPart(part="xc7z020clg400-1", board="PYNQ-Z2", lut=53_200, ff=106_400, bram36=140,
                   dsp=220, clock_mhz=100.0, yosys_family="xc7")
# DS962 (Alveo U250, XCU250): 1,728k LUTs, 3,456k registers, 2,688 BRAM36 (94.5 Mb), 12,288 DSP slices.
XCU250 = FpgaPart(part="xcu250-figd2104-2L-e", board="Alveo U250", lut=1_728_000, ff=3_456_000,
                  bram36=2_688, dsp=12_288, clock_mhz=300.0, yosys_family="xcup")

PARTS = (XCZU7EV, XC7Z020, XCU250)


def _fpga_target(name: str, part: FpgaPart) -> Target:
    return Target(
        name=name,
        kind="fpga",
        description=f"{part.board} ({part.part}): streaming dataflow Verilog at {part.clock_mhz:g} MHz",
        tvm={},
        backend="fpga",
        arch="fpga",
        capabilities={"fpga": part.to_json(), "fast_bits": [1, 2, 3, 4, 5, 6, 7, 8]},
    )


FPGA_TAGS = [
    _fpga_target("fpga/xczu7ev", XCZU7EV),
    _fpga_target("fpga/xc7z020", XC7Z020),
    _fpga_target("fpga/xcu250", XCU250),
]


def fpga_part(target: Target) -> FpgaPart:
    """Return the FpgaPart of an FPGA target (raise ValueError for other kinds)."""
    if target.kind != "fpga" or "fpga" not in target.capabilities:
        raise ValueError(f"target {target.name!r} is not an FPGA target")
    return FpgaPart.from_json(target.capabilities["fpga"])
