"""The FPGA build report: folding, cycles, II, latency and throughput at the target clock,
estimated vs yosys-measured resources and the part's utilization — as JSON and an HTML page.

    >>> html = report_html(report)      # doctest: +SKIP
"""
from __future__ import annotations

import html
import logging
from typing import Any

logger = logging.getLogger(__name__)

RESOURCES = ("LUT", "FF", "BRAM36", "DSP")


def resource_comparison(estimate: dict[str, float], measured: dict[str, float] | None) -> dict[str, Any]:
    """Per resource: the estimate, the yosys count and the estimate's error relative to yosys
    (estimate / measured − 1; None where yosys counts 0)."""
    rows = {}
    for k in RESOURCES:
        est = estimate.get(k, 0)
        meas = None if measured is None else measured.get(k)
        err = None if not meas else round(est / meas - 1, 4)
        rows[k] = {"estimate": est, "measured": meas, "error": err}
    return rows


def utilization(counts: dict[str, float], part: dict[str, Any]) -> dict[str, float]:
    """Each resource as a fraction of the part's."""
    caps = {"LUT": part["lut"], "FF": part["ff"], "BRAM36": part["bram36"], "DSP": part["dsp"]}
    return {k: round(counts.get(k, 0) / caps[k], 6) for k in RESOURCES}


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.4g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _measured(perf: dict[str, Any]) -> str:
    us = perf.get("latency_us_measured")
    return "" if us is None else f", {us:.3f} µs measured"


def _pct(error: float | None) -> str:
    return "–" if error is None else f"{100 * error:+.1f} %"


def _shape(layer: dict[str, Any]) -> str:
    """A unit's shape: MW×MH, with a convolution's window, or a pool's kernel and map."""
    if layer.get("kind") == "maxpool":
        h, w = layer["in_hw"]
        return f"maxpool {layer['kernel'][0]}×{layer['kernel'][1]} on {layer['channels']}×{h}×{w}"
    if "window" in layer:
        win = layer["window"]
        return (f"conv {win['kernel'][0]}×{win['kernel'][1]} s{win['stride'][0]} → {win['out_hw'][0]}×"
                f"{win['out_hw'][1]} px: {layer['mw']}×{layer['mh']}")
    return f"{layer['mw']}×{layer['mh']}"


def report_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page of the report."""
    e = html.escape
    perf = report["performance"]
    rows = "".join(
        f"<tr><td>{e(layer['name'])}</td><td>{e(_shape(layer))}</td><td>{layer['pe']}</td>"
        f"<td>{layer['simd']}</td><td>{e(layer['bits'])}</td><td>{layer['cycles']:,}</td>"
        f"<td>{e(layer.get('ram_style', '–'))}</td><td>{layer['estimate']['LUT']:,}</td>"
        f"<td>{layer['estimate']['BRAM36']}</td></tr>" for layer in report["layers"])
    res = report["resources"]
    res_rows = "".join(
        f"<tr><td>{k}</td><td>{_fmt(v['estimate'])}</td><td>{_fmt(v['measured'])}</td>"
        f"<td>{_pct(v['error'])}</td>"
        f"<td>{_fmt(report['part']['resources'][k])}</td>"
        f"<td>{100 * report['utilization'].get(k, 0):.3f} %</td></tr>"
        for k, v in res["comparison"].items())
    fs = report.get("fifo_sizing")
    fifo_html = "" if not fs else (
        "<h2>FIFOs</h2><p>" + e(fs["method"]) + "</p><table><tr><th>FIFO</th><th>in front of</th><th>width (bits)</th>"
        "<th>needed</th><th>depth</th><th>old rule's depth</th></tr>"
        + "".join(f"<tr><td>{e(f['name'])}</td><td>{e(f['feeds'])}</td><td>{f['width_bits']}</td>"
                  f"<td>{_fmt(f['needed'])}</td><td>{f['depth']}</td><td>{f['rule_depth']}</td></tr>" for f in fs["fifos"])
        + f"</table><p>{fs['bits']:,} FIFO bits ({fs['rule_bits']:,} by the old rule).</p>")
    sim = report.get("simulation")
    sim_html = "<p>not simulated</p>" if not sim else (
        f"<p>Verilator, {sim['inferences']} inferences from the reference interpreter: "
        f"{sim['outputs_checked']} output beats checked, <b>{sim['mismatches']} mismatches</b> "
        f"(full rate), {sim['stalled']['mismatches']} with random stalls. Measured II "
        f"{_fmt(sim['ii_cycles'])} cycles (model {perf['ii_cycles']:,}), latency {_fmt(sim['latency_cycles'])} "
        f"cycles.</p>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>mlpc FPGA report — {e(report['part']['part'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}</style>
</head><body>
<h1>Streaming dataflow design for {e(report['part']['part'])} ({e(report['part']['board'])})</h1>
<p>Clock {report['clock_mhz']:g} MHz (the target's stated clock; yosys reports no timing, so this is
not an Fmax). II {perf['ii_cycles']:,} cycles → {perf['throughput_fps']:,.0f} inferences/s;
latency {perf['latency_cycles_model']:,} cycles ({perf['latency_us_model']:.3f} µs) by the model
{_measured(perf)}.
Requested: {_fmt(report.get('fps_requested'))} FPS.</p>
<h2>Layers</h2>
<table><tr><th>layer</th><th>shape (MW×MH)</th><th>PE</th><th>SIMD</th><th>bits (w/in/out)</th><th>cycles</th>
<th>weights</th><th>LUT est.</th><th>BRAM36 est.</th></tr>{rows}</table>
<h2>Resources</h2>
<table><tr><th>resource</th><th>estimate</th><th>yosys</th><th>estimate error</th><th>part</th>
<th>utilization (yosys, else estimate)</th></tr>{res_rows}</table>
<p>{e(res.get('note', ''))}</p>
{fifo_html}
<h2>Simulation</h2>{sim_html}
<p>Rounding: {e(report['rounding'])}</p>
</body></html>
"""
