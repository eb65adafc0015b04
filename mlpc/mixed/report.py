"""The mixed-precision HTML report: the chosen allocation per layer, each layer's sensitivity,
and the Pareto frontier of the accuracy proxy (Σ Ω, lower is better) against model size and,
when a latency model was used, latency — matplotlib plots embedded as PNG, with the uniform
2/3/4/8-bit models marked for comparison.

    >>> write_report(result, "mixed.html")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _plot(result: Any, kind: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frontier = result.pareto_size if kind == "size" else result.pareto_latency
    scale, unit = (1 / 1024, "KiB") if kind == "size" else (1e3, "ms")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    floor = 1e-12
    ax.step(
        [a.costs[kind] * scale for a in frontier],
        [max(a.omega, floor) for a in frontier],
        where="post",
        marker="o",
        label="mixed precision (ILP)",
    )
    for bits, totals in result.uniform.items():
        if kind in totals:
            ax.scatter(
                [totals[kind] * scale], [max(totals["omega"], floor)], marker="s", label=f"uniform {bits}-bit"
            )
    chosen = result.allocation
    ax.scatter(
        [chosen.costs[kind] * scale],
        [max(chosen.omega, floor)],
        marker="*",
        s=200,
        color="red",
        label="chosen",
        zorder=5,
    )
    if kind in result.budgets:
        ax.axvline(result.budgets[kind] * scale, color="gray", linestyle="--", label="budget")
    ax.set_yscale("log")
    ax.set_xlabel(f"{'weights size' if kind == 'size' else 'latency'} ({unit})")
    ax.set_ylabel(f"Σ Ω ({result.sensitivity.metric}, lower is better)")
    ax.set_title(f"Pareto frontier: accuracy proxy vs {kind} ({result.target})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_html(result: Any) -> str:
    """The report as one self-contained HTML page."""
    esc = html.escape
    sens = result.sensitivity
    alloc = result.allocation
    rows = []
    for layer in sens.layers:
        cells = "".join(f"<td>{sens.omega[layer.name][b]:.3g}</td>" for b in sens.bits)
        rows.append(
            f"<tr><td>{esc(layer.name)}</td><td>{layer.kind}</td><td>{layer.params}</td><td>{layer.macs}</td>"
            f"{cells}<td><b>{alloc.bits[layer.name]}</b></td></tr>"
        )
    head = "".join(f"<th>Ω at {b} bits</th>" for b in sens.bits)
    budgets = ", ".join(f"{k}: {v:.4g}" for k, v in result.budgets.items()) or "none"
    costs = ", ".join(f"{k}: {v:.4g}" for k, v in alloc.costs.items())
    plots = [f'<img alt="Pareto frontier vs size" src="data:image/png;base64,{_plot(result, "size")}">']
    if result.pareto_latency:
        plots.append(
            f'<img alt="Pareto frontier vs latency" src="data:image/png;base64,{_plot(result, "latency")}">'
        )
    frontier = "".join(
        f"<tr><td>{a.costs['size'] / 1024:.2f}</td><td>{a.omega:.4g}</td>"
        f"<td>{esc(', '.join(f'{k}={v}' for k, v in a.bits.items()))}</td></tr>"
        for a in result.pareto_size
    )
    checked = ""
    if result.end_to_end is not None:
        e2e = result.end_to_end
        cand = "".join(
            f"<tr><td>{c.rank}</td><td>{c.allocation.omega:.4g}</td><td>{c.held_out:.4g}</td>"
            f"<td>{esc(', '.join(f'{k}={v}' for k, v in c.allocation.bits.items()))}</td></tr>"
            for c in e2e.candidates
        )
        checked = (
            f"<h2>End-to-end check</h2><p>The ILP's {len(e2e.candidates)} best allocations, each quantized whole "
            f"on {e2e.fit_samples} calibration samples and measured ({esc(e2e.metric)}) against the float model "
            f"on {e2e.held_out_samples} held-out ones; the lowest is kept.</p>"
            f"<table><tr><th>ILP rank</th><th>Σ Ω</th><th>held-out error</th><th>bits</th></tr>{cand}</table>"
        )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>mlpc mixed precision: {esc(result.target)}</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{border:1px solid #ccc;padding:2px 6px}}
table{{border-collapse:collapse}}</style></head><body>
<h1>Mixed precision for {esc(result.target)}</h1>
<p>Sensitivity: {esc(sens.method)} ({esc(sens.metric)}, {sens.samples} samples). Budgets: {esc(budgets)}.
Chosen: Σ Ω = {alloc.omega:.4g}; {esc(costs)}; weights at {100 * alloc.costs["size"] / result.fp32_bytes:.1f} % of
the fp32 model ({result.fp32_bytes} bytes).</p>
<h2>Layers</h2>
<table><tr><th>layer</th><th>kind</th><th>params</th><th>MACs</th>{head}<th>chosen bits</th></tr>
{"".join(rows)}</table>
<h2>Pareto frontier</h2>
{"".join(plots)}
<table><tr><th>size KiB</th><th>Σ Ω</th><th>bits</th></tr>{frontier}</table>
{checked}
</body></html>
"""


def write_report(result: Any, path: str | Path) -> Path:
    """Write the HTML report of a MixedPrecisionResult to `path`; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result))
    logger.info("wrote the mixed-precision report %s", path)
    return path
