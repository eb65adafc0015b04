"""Verilog for a folded Network: one `mlpc_mvau` per layer (a convolution's behind an
`mlpc_swg` sliding-window generator), `mlpc_pool` max pools, a FIFO in front of each MVAU, width
converters where one unit's PE differs from the next one's SIMD, and a top module with
AXI-Stream-style valid/ready ports:

    in_data[SIMD0·IB0] in_valid in_ready → … → out_data[PE_last·OB_last] out_valid out_ready

The input streams in the design's order (`Network.in_order`: channels-last for a feature map),
SIMD0 elements per beat (element s of a beat in bits s·IB0 …); the output likewise, PE elements
per beat — an MVAU's neuron nf·PE + p in bits p·OB. Weights and thresholds go to
`<layer>_w.mem`/`<layer>_t.mem` ($readmemh), read by the shared modules in `hdl/`.

    >>> files = write_rtl(net, folds, out_dir)      # doctest: +SKIP
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlpc.backends.fpga.fifos import fifo_name, rule_depths
from mlpc.backends.fpga.folding import BRAM_BITS_THRESHOLD, Folding, ram_style, window_buffer_bits, window_rows
from mlpc.backends.fpga.network import MvauLayer, Network, PoolLayer, Unit

logger = logging.getLogger(__name__)

HDL_DIR = Path(__file__).parent / "hdl"
LIBRARY = ("mlpc_mvau.v", "mlpc_fifo.v", "mlpc_dwc.v", "mlpc_swg.v", "mlpc_pool.v")
TOP = "mlpc_top"


@dataclass(frozen=True)
class StreamPorts:
    """The top module's stream widths: elements per beat and bits per element, in and out."""

    in_elems: int
    in_bits: int
    in_signed: bool
    out_elems: int
    out_bits: int
    out_signed: bool
    in_beats: int  # per inference
    out_beats: int


def _hex_word(values: np.ndarray, bits: int) -> str:
    """Pack values (element 0 in the low bits, two's complement) into one hex word."""
    word = 0
    mask = (1 << bits) - 1
    for i, v in enumerate(values.tolist()):
        word |= (int(v) & mask) << (i * bits)
    digits = max(1, -(-(len(values) * bits) // 4))
    return f"{word:0{digits}x}"


def pack_beats(array: np.ndarray, elems: int, bits: int) -> list[str]:
    """A (vectors, length) integer array as hex beats of `elems` elements each."""
    flat = np.asarray(array, np.int64).reshape(-1)
    return [_hex_word(flat[i:i + elems], bits) for i in range(0, flat.size, elems)]


def unpack_beats(words: list[int], elems: int, bits: int, signed: bool) -> np.ndarray:
    """Hex beats (as ints) back to a flat int64 array."""
    out = []
    mask = (1 << bits) - 1
    for word in words:
        for i in range(elems):
            v = (word >> (i * bits)) & mask
            if signed and v >> (bits - 1):
                v -= 1 << bits
            out.append(v)
    return np.array(out, np.int64)


def _weight_words(layer: MvauLayer, fold: Folding) -> list[str]:
    pe, simd, wb = fold.pe, fold.simd, layer.w_bits[0]
    sf, nf = layer.mw // simd, layer.mh // pe
    words = []
    for n in range(nf):
        for s in range(sf):
            block = layer.weights[n * pe:(n + 1) * pe, s * simd:(s + 1) * simd]  # PE × SIMD
            words.append(_hex_word(block.reshape(-1), wb))
    return words


def threshold_layout(layer: MvauLayer) -> tuple[int, int]:
    """(NT, TB): threshold (or offset) entries per PE and their width."""
    if layer.has_activation:
        return layer.thresholds.shape[1], layer.acc_bits
    return 1, max(layer.acc_bits, layer.out_bits[0]) + 1


def _threshold_words(layer: MvauLayer, fold: Folding) -> list[str]:
    nt, tb = threshold_layout(layer)
    table = layer.thresholds if layer.has_activation else layer.offset.reshape(-1, 1)
    return [_hex_word(table[n * fold.pe:(n + 1) * fold.pe].reshape(-1), tb) for n in range(layer.mh // fold.pe)]


def beat_elems(unit: Unit, fold: Folding) -> tuple[int, int]:
    """(elements per input beat, elements per output beat) of a unit."""
    if isinstance(unit, PoolLayer):
        return fold.pe, fold.pe
    return fold.simd, fold.pe


def ports(net: Network, folds: list[Folding]) -> StreamPorts:
    """The top module's stream widths."""
    first, last = net.layers[0], net.layers[-1]
    ib, isg = first.in_bits
    ob, osg = last.out_bits
    in_n, out_n = beat_elems(first, folds[0])[0], beat_elems(last, folds[-1])[1]
    return StreamPorts(in_n, ib, isg, out_n, ob, osg, first.in_elems // in_n, last.out_elems // out_n)


def write_rtl(net: Network, folds: list[Folding], out_dir: Path, depths: list[int] | None = None) -> list[Path]:
    """Write the top module, the library modules and the memory files into `out_dir`; return
    the Verilog sources (library first, top last). `depths`: the FIFO in front of each unit
    (fifos.py; default: the fixed rule)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = []
    for name in LIBRARY:
        shutil.copyfile(HDL_DIR / name, out_dir / name)
        sources.append(out_dir / name)
    for layer, fold in zip(net.mvaus, [f for la, f in zip(net.layers, folds) if isinstance(la, MvauLayer)]):
        (out_dir / f"{layer.name}_w.mem").write_text("\n".join(_weight_words(layer, fold)) + "\n")
        (out_dir / f"{layer.name}_t.mem").write_text("\n".join(_threshold_words(layer, fold)) + "\n")
    top = out_dir / f"{TOP}.v"
    top.write_text(top_module(net, folds, depths))
    sources.append(top)
    logger.info("fpga: wrote %s and %d memory files", top.name, 2 * len(net.mvaus))
    return sources


def _describe(unit: Unit, fold: Folding) -> str:
    if isinstance(unit, PoolLayer):
        return f"{unit.name} maxpool {unit.k_h}x{unit.k_w} on {unit.channels}x{unit.in_h}x{unit.in_w} PE={fold.pe}"
    conv = "" if unit.window is None else f" conv{unit.window.k_h}x{unit.window.k_w}"
    return f"{unit.name}{conv} {unit.mw}x{unit.mh} PE={fold.pe} SIMD={fold.simd}"


def _swg_params(layer: MvauLayer, fold: Folding) -> dict[str, int]:
    w = layer.window
    bits = window_buffer_bits(w, fold.simd, layer.in_bits[0])
    return {"C": w.channels, "SIMD": fold.simd, "IB": layer.in_bits[0], "H": w.in_h, "W": w.in_w, "KH": w.k_h,
            "KW": w.k_w, "SH": w.stride_h, "SW": w.stride_w, "PT": w.pads[0], "PL": w.pads[1], "OH": w.out_h,
            "OW": w.out_w, "PAD_VALUE": w.pad_value & ((1 << layer.in_bits[0]) - 1), "ROWS": window_rows(w),
            "RAM_BLOCK": int(bits >= BRAM_BITS_THRESHOLD)}


def _stream(lines: list[str], kind: str, name: str, params: dict[str, int | str], src: tuple[str, str, str],
            width: int, out: tuple[str, str, str] | None = None) -> tuple[str, str, str]:
    """Instantiate one streaming module from `src` (data, valid, ready); declare and return its output."""
    data, valid, ready = out or (f"{name}_data", f"{name}_valid", f"{name}_ready")
    if out is None:
        lines += [f"    wire [{width - 1}:0] {data};", f"    wire {valid}, {ready};"]
    plist = ", ".join(f".{k}({v})" for k, v in params.items())
    lines += [f"    {kind} #({plist}) {name} (",
              f"        .clk(clk), .rst(rst), .in_data({src[0]}), .in_valid({src[1]}), .in_ready({src[2]}),",
              f"        .out_data({data}), .out_valid({valid}), .out_ready({ready}));"]
    return data, valid, ready


def top_module(net: Network, folds: list[Folding], depths: list[int] | None = None) -> str:
    """The top module's Verilog text, with the FIFO depths `depths` (default: the fixed rule)."""
    p = ports(net, folds)
    depths = rule_depths(net.layers, folds) if depths is None else depths
    lines = [
        "// Generated by mlpc: a streaming dataflow design, one unit per layer.",
        "// Units: " + "; ".join(_describe(la, f) for la, f in zip(net.layers, folds)),
        f"module {TOP} (",
        "    input wire clk,",
        "    input wire rst,",
        f"    input wire [{p.in_elems * p.in_bits - 1}:0] in_data,",
        "    input wire in_valid,",
        "    output wire in_ready,",
        f"    output wire [{p.out_elems * p.out_bits - 1}:0] out_data,",
        "    output wire out_valid,",
        "    input wire out_ready",
        ");",
    ]
    src = ("in_data", "in_valid", "in_ready")
    elems = p.in_elems
    for i, (layer, fold) in enumerate(zip(net.layers, folds)):
        ib = layer.in_bits[0]
        need, give = beat_elems(layer, fold)
        if elems != need:  # width converter
            src = _stream(lines, "mlpc_dwc", f"dwc{i}", {"EB": ib, "IN_N": elems, "OUT_N": need}, src, need * ib)
        last = i == len(net.layers) - 1
        out = ("out_data", "out_valid", "out_ready") if last else None
        ob = layer.out_bits[0]
        if isinstance(layer, PoolLayer):
            params = {"C": layer.channels, "PE": fold.pe, "B": ib, "SIGNED": int(layer.in_bits[1]), "H": layer.in_h,
                      "W": layer.in_w, "KH": layer.k_h, "KW": layer.k_w, "OH": layer.out_h, "OW": layer.out_w}
            src = _stream(lines, "mlpc_pool", layer.name, params, src, fold.pe * ob, out)
            elems = give
            continue
        if layer.window is not None:
            src = _stream(lines, "mlpc_swg", f"swg{i}", _swg_params(layer, fold), src, fold.simd * ib)
        src = _stream(lines, "mlpc_fifo", fifo_name(i), {"W": fold.simd * ib, "DEPTH": depths[i]}, src, fold.simd * ib)
        nt, tb = threshold_layout(layer)
        params = {
            "MW": layer.mw, "MH": layer.mh, "PE": fold.pe, "SIMD": fold.simd,
            "IB": ib, "IN_SIGNED": int(layer.in_bits[1]), "WB": layer.w_bits[0], "W_SIGNED": int(layer.w_bits[1]),
            "AB": layer.acc_bits, "OB": ob, "HAS_ACT": int(layer.has_activation), "NT": nt, "TB": tb,
            "OUT_MIN": layer.out_range[0] if layer.has_activation else 0,
            "RAM_BLOCK": int(ram_style(layer, fold) == "block"),
            "WEIGHT_FILE": f'"{layer.name}_w.mem"', "THRESH_FILE": f'"{layer.name}_t.mem"',
        }
        src = _stream(lines, "mlpc_mvau", layer.name, params, src, fold.pe * ob, out)
        elems = give
    lines.append("endmodule")
    return "\n".join(lines) + "\n"
