"""The HTML page people read, rendered from ``report.json``: one file, plots embedded, opens offline.

Sections: the run and its environment; a summary per tier and model; every failure with its message;
the ten slowest checks (setup + call seconds, and whether their expensive artefacts came from the cache);
plots (parity error histograms per export format, latency ratios, training loss curves, reference vs
current distributions of drift features, attention maps); and every row with its measured value.

Plots are drawn from rows' ``details`` when present, by these conventions (any check may use them):

- ``details["shapes"]``: a list of ``{"max_abs": float, ...}`` per fuzzed shape, with ``details["format"]``;
- ``details["p50_ratio"]``: ``{backend: ratio}``;
- ``details["history"]``: ``{"step": [...], "<metric>": [...]}`` (training curves);
- ``details["distributions"]``: ``{feature: {"reference": [...], "current": [...]}}`` (drift);
- ``details["attention_map"]``: a 2-D list (query x key weights of one head for a sample input).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from harness.io import atomic_write_text
from harness.report import row_seconds

STATUS_ORDER = ("passed", "failed", "error", "warned", "inconclusive", "skipped")
SLOWEST = 10  # rows in the "slowest checks" table
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1b1f24; }
h1 { margin-bottom: 0.2rem; } .meta { color: #57606a; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
td, th { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
.passed { color: #1a7f37; } .failed, .error { color: #cf222e; font-weight: bold; }
.warned { color: #9a6700; } .inconclusive, .skipped { color: #57606a; }
.failure { border-left: 4px solid #cf222e; padding: 0.4rem 0.8rem; margin: 0.6rem 0; background: #fff5f5; }
figure { display: inline-block; margin: 0.5rem; } figure img { max-width: 560px; border: 1px solid #d0d7de; }
figcaption { font-size: 0.85rem; color: #57606a; }
"""
# Reports load problems back to the page itself: a browser test reads these attributes from the DOM.
SCRIPT = """
window.addEventListener("error", function (event) {
  document.body.dataset.errors = (document.body.dataset.errors || "") + event.message + ";";
});
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.querySelectorAll("figure img"));
  var visible = images.filter(function (img) {
    return img.complete && img.naturalWidth > 0 && img.getBoundingClientRect().width > 0;
  });
  document.body.dataset.plots = String(images.length);
  document.body.dataset.plotsVisible = String(visible.length);
  document.body.dataset.loaded = "yes";
});
"""


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _figure(title: str, draw: Any) -> tuple[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.4))
    draw(axis)
    axis.set_title(title, fontsize=10)
    return title, _png(figure)


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def plots(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(caption, base64 PNG) for every plot the rows' details support."""
    figures: list[tuple[str, str]] = []
    errors: dict[str, list[float]] = defaultdict(list)
    ratios: dict[str, dict[str, float]] = {}
    for row in rows:
        details = row.get("details") or {}
        for shape in details.get("shapes") or []:
            value = _number(shape.get("max_abs"))
            if value is not None:
                errors[str(details.get("format", row["check"]))].append(max(value, 1e-12))
        if isinstance(details.get("p50_ratio"), dict):
            ratios[row["model"]] = {k: v for k, v in details["p50_ratio"].items() if _number(v) is not None}
    for fmt, values in sorted(errors.items()):

        def draw(axis: Any, values: list[float] = values) -> None:
            axis.hist([math.log10(v) for v in values], bins=20, color="#0969da")
            axis.set_xlabel("log10 max |exported - eager| per fuzzed shape")
            axis.set_ylabel("shapes")

        figures.append(_figure(f"parity error, {fmt} ({len(values)} shapes)", draw))
    if ratios:

        def draw_ratios(axis: Any) -> None:
            models = sorted(ratios)
            backends = sorted({b for r in ratios.values() for b in r})
            width = 0.8 / max(len(backends), 1)
            for index, backend in enumerate(backends):
                axis.bar([i + index * width for i in range(len(models))], [ratios[m].get(backend, 0) for m in models],
                         width=width, label=backend)  # fmt: skip
            axis.axhline(1.0, color="black", linewidth=0.8)
            axis.set_xticks(
                [i + 0.4 - width / 2 for i in range(len(models))], models, rotation=30, ha="right", fontsize=7
            )
            axis.set_ylabel("p50 latency / eager")
            axis.legend(fontsize=7)

        figures.append(_figure("latency ratios to eager (p50, interleaved)", draw_ratios))
    for row in rows:
        details = row.get("details") or {}
        label = f"{row['model']} {row['check']}"
        history = details.get("history")
        if isinstance(history, dict) and isinstance(history.get("step"), list):

            def draw_history(axis: Any, history: dict = history) -> None:
                for name, values in history.items():
                    if name != "step" and isinstance(values, list) and len(values) == len(history["step"]):
                        axis.plot(history["step"], values, label=name)
                axis.set_xlabel("step")
                axis.legend(fontsize=7)

            figures.append(_figure(f"training curves, {label}", draw_history))
        distributions = details.get("distributions")
        if isinstance(distributions, dict):
            for feature, pair in list(distributions.items())[:6]:
                if not isinstance(pair, dict):
                    continue

                def draw_distribution(axis: Any, pair: dict = pair) -> None:
                    for side in ("reference", "current"):
                        values = [v for v in pair.get(side) or [] if _number(v) is not None]
                        if values:
                            axis.hist(values, bins=30, alpha=0.5, density=True, label=side)
                    axis.legend(fontsize=7)

                figures.append(_figure(f"drift, {label}: {feature}", draw_distribution))
        attention = details.get("attention_map")
        if isinstance(attention, list) and attention and isinstance(attention[0], list):

            def draw_attention(axis: Any, attention: list = attention) -> None:
                image = axis.imshow(attention, cmap="viridis", vmin=0.0)
                axis.set_xlabel("key position")
                axis.set_ylabel("query position")
                axis.figure.colorbar(image, ax=axis)

            figures.append(_figure(f"attention map, {label}", draw_attention))
    return figures


def render_html(report: dict[str, Any]) -> str:
    rows = report.get("rows", [])
    escape = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>harness report {escape(report.get('run_id', ''))}</title><style>{STYLE}</style></head><body>",
        f"<h1>harness report</h1><p class='meta'>run {escape(str(report.get('run_id')))}, written "
        f"{escape(str(report.get('created')))}; {len(rows)} checks</p>",
    ]
    env = report.get("environment", {})
    packages = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v)
    parts.append(f"<p class='meta'>Python {escape(str(env.get('python')))} on {escape(str(env.get('platform')))}; "
                 f"{escape(packages)}; Hypothesis profile {escape(str(env.get('hypothesis_profile')))}</p>")  # fmt: skip
    counts: dict[tuple[int, str], Counter] = defaultdict(Counter)
    for row in rows:
        counts[(row["tier"], row["model"])][row["status"]] += 1
    parts.append("<h2 id='summary'>Summary</h2><table><tr><th>tier</th><th>model</th>")
    parts += [f"<th class='{s}'>{s}</th>" for s in STATUS_ORDER]
    parts.append("</tr>")
    for (tier, model), counter in sorted(counts.items()):
        cells = "".join(f"<td class='{s}'>{counter.get(s, 0) or ''}</td>" for s in STATUS_ORDER)
        parts.append(f"<tr><td>{tier}</td><td>{escape(model)}</td>{cells}</tr>")
    parts.append("</table>")
    failures = [row for row in rows if row["status"] in ("failed", "error")]
    parts.append(f"<h2 id='failures'>Failures ({len(failures)})</h2>")
    parts += [
        f"<div class='failure'><b>{escape(row['test_id'])}</b><br>{escape(row['message'])}</div>" for row in failures
    ]
    parts += slowest_table(rows)
    figures = plots(rows)
    parts.append(f"<h2 id='plots'>Plots ({len(figures)})</h2>")
    parts += [
        f"<figure><img alt='{escape(caption)}' src='data:image/png;base64,{data}'><figcaption>{escape(caption)}</figcaption></figure>"
        for caption, data in figures
    ]
    parts.append("<h2 id='checks'>All checks</h2><table><tr><th>tier</th><th>model</th><th>check</th><th>status</th>"
                 "<th>measured</th><th>threshold</th><th>n</th><th>got</th></tr>")  # fmt: skip
    for row in sorted(rows, key=lambda r: (r["tier"], r["model"], r["check"])):
        parts.append(
            f"<tr><td>{row['tier']}</td><td>{escape(row['model'])}</td><td>{escape(row['check'])}</td>"
            f"<td class='{row['status']}'>{row['status']}</td><td>{_cell(row.get('measured'))}</td>"
            f"<td>{_cell(row.get('threshold'))}</td><td>{row.get('sample_size', '')}</td><td>{escape(str(row.get('got', '')))}</td></tr>"
        )
    parts.append(f"</table><script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)


def _cache_cell(cache: dict[str, Any] | None) -> str:
    if not cache:
        return "no cached artefact"
    built = sum(not use["hit"] for use in cache["uses"])
    return "hit" if cache["hit"] else f"built {built} of {len(cache['uses'])}"


def slowest_table(rows: list[dict[str, Any]]) -> list[str]:
    """The table of the :data:`SLOWEST` checks by seconds spent (setup + call; ties by test id)."""
    slowest = sorted(rows, key=lambda row: (-row_seconds(row), row["test_id"]))[:SLOWEST]
    parts = [
        "<h2 id='slowest'>Ten slowest checks</h2><table id='slowest-checks'><tr><th>test</th><th>model</th>"
        "<th>check</th><th>seconds (setup + call)</th><th>setup</th><th>call</th><th>cache</th></tr>"
    ]
    for row in slowest:
        parts.append(
            f"<tr><td>{html.escape(row['test_id'])}</td><td>{html.escape(row['model'])}</td>"
            f"<td>{html.escape(row['check'])}</td><td>{row_seconds(row):.2f}</td><td>{row.get('setup_s') or 0.0:.2f}</td>"
            f"<td>{row['duration_s']:.2f}</td><td>{_cache_cell(row.get('cache'))}</td></tr>"
        )
    return [*parts, "</table>"]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def write_html(report_path: Path, out: Path | None = None) -> Path:
    """Render ``report.json`` to ``report.html`` beside it (or ``out``), atomically."""
    report_path = Path(report_path)
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{report_path} is not a readable report.json: {error}") from error
    out = Path(out) if out else report_path.with_name("report.html")
    return atomic_write_text(out, render_html(report))
