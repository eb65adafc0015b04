"""Synthesis with yosys (`synth_xilinx -family xcup|xc7`) and its measured resources.

Yosys maps the design onto the family's primitives and `stat` counts them; this module turns
the cell counts into LUT / FF / BRAM36 / DSP as the report shows them:

- LUT: LUT1…LUT6, plus the LUT sites of LUT-RAMs and shift registers (RAM32M/RAM64M/RAM128X1D
  use 4, RAM32X1D/RAM64X1D 2, RAM32X1S/RAM64X1S/SRL16E/SRLC32E 1 — UG474/UG574);
- FF: FDRE/FDSE/FDCE/FDPE; BRAM36: RAMB36 + ½·RAMB18; DSP: DSP48E1/DSP48E2.

Yosys gives no timing: nothing here is an Fmax, power or a bitstream.

    >>> parse_stat("  Number of cells: 3\\n     LUT6  2\\n     FDRE  1\\n")["LUT"]
    2
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from mlpc.backends.fpga.rtl import TOP
from mlpc.errors import LoweringError

logger = logging.getLogger(__name__)

_LUT_SITES = {"RAM32M": 4, "RAM32M16": 8, "RAM64M": 4, "RAM64M8": 8, "RAM128X1D": 4, "RAM256X1D": 8,
              "RAM32X1D": 2, "RAM64X1D": 2, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4,
              "SRL16E": 1, "SRLC32E": 1, "SRLC16E": 1}
_FF = {"FDRE", "FDSE", "FDCE", "FDPE"}
_CELL = re.compile(r"^\s+(\S+)\s+(\d+)\s*$")


def yosys_available() -> bool:
    """True when `yosys` is on PATH."""
    return shutil.which("yosys") is not None


def parse_stat(text: str) -> dict[str, Any]:
    """LUT/FF/BRAM36/DSP (and the raw cell counts) from the last `stat` block of a yosys log."""
    block = text[text.rfind("Number of cells:"):] if "Number of cells:" in text else text
    cells: dict[str, int] = {}
    for line in block.splitlines()[1:]:
        m = _CELL.match(line)
        if m:
            cells[m.group(1)] = cells.get(m.group(1), 0) + int(m.group(2))
        elif line.strip() and not line.startswith(" "):
            break
    lut = sum(n for c, n in cells.items() if re.fullmatch(r"LUT[1-6]", c))
    lut += sum(n * _LUT_SITES[c] for c, n in cells.items() if c in _LUT_SITES)
    ff = sum(n for c, n in cells.items() if c in _FF)
    bram = sum(n for c, n in cells.items() if c.startswith("RAMB36")) + \
        sum(n for c, n in cells.items() if c.startswith("RAMB18")) / 2
    dsp = sum(n for c, n in cells.items() if c.startswith("DSP48"))
    return {"LUT": lut, "FF": ff, "BRAM36": bram, "DSP": dsp, "cells": cells}


def synthesize(design_dir: Path, sources: list[str], family: str, timeout_s: float | None = None) -> dict[str, Any]:
    """Run `yosys synth_xilinx -family FAMILY` on the design; return the measured resources,
    the yosys version and the seconds it took. The log goes to `yosys.log`. Raises LoweringError
    if yosys is missing or fails."""
    if not yosys_available():
        raise LoweringError("yosys is not installed (apt-get install yosys; `make setup` does it); "
                            "it synthesizes the generated design for its resource counts")
    script = "; ".join([*(f"read_verilog -defer {s}" for s in sources),
                        f"synth_xilinx -family {family} -top {TOP} -flatten", "stat"])
    (design_dir / "synth.ys").write_text(script.replace("; ", "\n") + "\n")
    start = time.perf_counter()
    try:
        proc = subprocess.run(["yosys", "-q", "-l", "yosys.log", "-s", "synth.ys"], cwd=design_dir,
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise LoweringError(f"yosys did not finish within {timeout_s:g} s") from e
    seconds = time.perf_counter() - start
    log = (design_dir / "yosys.log").read_text(errors="replace") if (design_dir / "yosys.log").exists() else ""
    if proc.returncode != 0:
        tail = (proc.stderr or log).strip().splitlines()[-8:]
        raise LoweringError("yosys failed to synthesize the design:\n" + "\n".join(tail))
    result = parse_stat(log)
    version = subprocess.run(["yosys", "-V"], capture_output=True, text=True).stdout.strip()
    result.update({"tool": version, "family": family, "seconds": round(seconds, 1)})
    logger.info("fpga: yosys %s: %s LUT, %s FF, %s BRAM36, %s DSP in %.1f s", family, result["LUT"], result["FF"],
                result["BRAM36"], result["DSP"], seconds)
    return result
