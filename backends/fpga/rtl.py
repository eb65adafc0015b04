"""Verilog for a folded Network: one `mlpc_mvau` per layer, FIFOs sized from the schedule,
width converters where one layer's PE differs from the next one's SIMD, and a top module
with AXI-Stream-style valid/ready ports:

    in_data[SIMD0·IB0] in_valid in_ready → … → out_data[PE_last·OB_last] out_valid out_ready

An input vector of MW0 elements streams as MW0/SIMD0 beats (element s of a beat in bits
s·IB0 …); the output as MH/PE beats, neuron nf·PE + p in bits p·OB. Weights and thresholds go
to `<layer>_w.mem`/`<layer>_t.mem` ($readmemh), read by the shared modules in `hdl/`.

    >>> files = write_rtl(net, folds, out_dir)      # doctest: +SKIP
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlpc.backends.fpga.folding import Folding, ram_style
from mlpc.backends.fpga.network import MvauLayer, Network

logger = logging.getLogger(__name__)

HDL_DIR = Path(__file__).parent / "hdl"
LIBRARY = ("mlpc_mvau.v", "mlpc_fifo.v", "mlpc_dwc.v")
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


def fifo_depths(layers: list[MvauLayer], folds: list[Folding]) -> list[int]:
    """The FIFO in front of each layer holds one input vector's beats (MW/SIMD) plus two, so a
    producer never waits while its consumer reruns its buffered input for the later neuron folds."""
    return [layer.mw // fold.simd + 2 for layer, fold in zip(layers, folds)]


def ports(net: Network, folds: list[Folding]) -> StreamPorts:
    """The top module's stream widths."""
    first, last = net.layers[0], net.layers[-1]
    ib, isg = first.in_bits
    ob, osg = last.out_bits
    return StreamPorts(folds[0].simd, ib, isg, folds[-1].pe, ob, osg,
                       first.mw // folds[0].simd * first.vectors, last.mh // folds[-1].pe * last.vectors)


def write_rtl(net: Network, folds: list[Folding], out_dir: Path) -> list[Path]:
    """Write the top module, the library modules and the memory files into `out_dir`; return
    the Verilog sources (library first, top last)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = []
    for name in LIBRARY:
        shutil.copyfile(HDL_DIR / name, out_dir / name)
        sources.append(out_dir / name)
    for layer, fold in zip(net.layers, folds):
        (out_dir / f"{layer.name}_w.mem").write_text("\n".join(_weight_words(layer, fold)) + "\n")
        (out_dir / f"{layer.name}_t.mem").write_text("\n".join(_threshold_words(layer, fold)) + "\n")
    top = out_dir / f"{TOP}.v"
    top.write_text(top_module(net, folds))
    sources.append(top)
    logger.info("fpga: wrote %s and %d memory files", top.name, 2 * len(net.layers))
    return sources


def top_module(net: Network, folds: list[Folding]) -> str:
    """The top module's Verilog text."""
    p = ports(net, folds)
    depths = fifo_depths(net.layers, folds)
    lines = [
        "// Generated by mlpc: a streaming dataflow design, one MVAU per layer.",
        "// Layers: " + "; ".join(f"{la.name} {la.mw}x{la.mh} PE={f.pe} SIMD={f.simd}" for la, f in zip(net.layers, folds)),
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
    prev = ("in_data", "in_valid", "in_ready", p.in_elems, p.in_bits)
    for i, (layer, fold) in enumerate(zip(net.layers, folds)):
        ib = layer.in_bits[0]
        data, valid, ready, elems, bits = prev
        if elems != fold.simd:  # width converter
            w = fold.simd * ib
            lines += [f"    wire [{w - 1}:0] dwc{i}_data;", f"    wire dwc{i}_valid, dwc{i}_ready;",
                      f"    mlpc_dwc #(.EB({ib}), .IN_N({elems}), .OUT_N({fold.simd})) dwc{i} (",
                      f"        .clk(clk), .rst(rst), .in_data({data}), .in_valid({valid}), .in_ready({ready}),",
                      f"        .out_data(dwc{i}_data), .out_valid(dwc{i}_valid), .out_ready(dwc{i}_ready));"]
            data, valid, ready = f"dwc{i}_data", f"dwc{i}_valid", f"dwc{i}_ready"
        w = fold.simd * ib
        lines += [f"    wire [{w - 1}:0] fifo{i}_data;", f"    wire fifo{i}_valid, fifo{i}_ready;",
                  f"    mlpc_fifo #(.W({w}), .DEPTH({depths[i]})) fifo{i} (",
                  f"        .clk(clk), .rst(rst), .in_data({data}), .in_valid({valid}), .in_ready({ready}),",
                  f"        .out_data(fifo{i}_data), .out_valid(fifo{i}_valid), .out_ready(fifo{i}_ready));"]
        ob = layer.out_bits[0]
        nt, tb = threshold_layout(layer)
        last = i == len(net.layers) - 1
        odata, ovalid, oready = ("out_data", "out_valid", "out_ready") if last else \
            (f"{layer.name}_data", f"{layer.name}_valid", f"{layer.name}_ready")
        if not last:
            lines += [f"    wire [{fold.pe * ob - 1}:0] {odata};", f"    wire {ovalid}, {oready};"]
        params = {
            "MW": layer.mw, "MH": layer.mh, "PE": fold.pe, "SIMD": fold.simd,
            "IB": ib, "IN_SIGNED": int(layer.in_bits[1]), "WB": layer.w_bits[0], "W_SIGNED": int(layer.w_bits[1]),
            "AB": layer.acc_bits, "OB": ob, "HAS_ACT": int(layer.has_activation), "NT": nt, "TB": tb,
            "OUT_MIN": layer.out_range[0] if layer.has_activation else 0,
            "RAM_BLOCK": int(ram_style(layer, fold) == "block"),
        }
        plist = ", ".join(f".{k}({v})" for k, v in params.items())
        lines += [f"    mlpc_mvau #({plist},",
                  f"        .WEIGHT_FILE(\"{layer.name}_w.mem\"), .THRESH_FILE(\"{layer.name}_t.mem\")) {layer.name} (",
                  f"        .clk(clk), .rst(rst), .in_data(fifo{i}_data), .in_valid(fifo{i}_valid), "
                  f".in_ready(fifo{i}_ready),",
                  f"        .out_data({odata}), .out_valid({ovalid}), .out_ready({oready}));"]
        prev = (odata, ovalid, oready, fold.pe, ob)
    lines.append("endmodule")
    return "\n".join(lines) + "\n"
