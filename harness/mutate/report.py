"""``mutation.json`` and a self-contained ``mutation.html``: kill matrix per model, survivors first."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from harness.io import atomic_write_text
from harness.mutate.runner import ModelMutation

SCHEMA_VERSION = 1  # bump when the layout of mutation.json changes


def report_dict(mutations: list[ModelMutation], *, min_kill_rate: float) -> dict[str, Any]:
    """The JSON report: one entry per model plus the threshold and whether every model meets it."""
    return {
        "schema_version": SCHEMA_VERSION,
        "min_kill_rate": min_kill_rate,
        "passed": all(m.kill_rate >= min_kill_rate for m in mutations),
        "models": [m.to_dict() for m in mutations],
    }


def write_mutation_report(mutations: list[ModelMutation], folder: str | Path, *, min_kill_rate: float = 0.9) -> Path:
    """Write ``mutation.json`` and ``mutation.html`` into ``folder`` (each atomically: a reader never sees half a
    file, a failed write leaves the previous one); returns the JSON path."""
    target = Path(folder)
    report = report_dict(mutations, min_kill_rate=min_kill_rate)
    path = atomic_write_text(target / "mutation.json", json.dumps(report, indent=2, allow_nan=False))
    atomic_write_text(target / "mutation.html", render_html(report))
    return path


_STYLE = """
body { font-family: sans-serif; margin: 2em; }
table { border-collapse: collapse; margin-bottom: 2em; }
td, th { border: 1px solid #ccc; padding: 2px 6px; font-size: 13px; }
.failed { background: #f4a6a6; } .passed { background: #c8eac8; } .kill { background: #d33; color: white; }
.survivor { background: #ffe08a; font-weight: bold; } .other { background: #eee; }
"""


def render_html(report: dict[str, Any]) -> str:
    """The HTML page of a mutation report (no external resources)."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>harness mutate</title><style>{_STYLE}</style>"]
    parts.append(f"<h1>Mutation testing (kill rate threshold {report['min_kill_rate']:.0%})</h1>")
    parts.append("<table><tr><th>model</th><th>mutants</th><th>killed</th><th>kill rate</th><th>survivors</th>")
    parts.append("<th>false alarms</th></tr>")
    for model in report["models"]:
        parts.append(
            f"<tr><td>{_e(model['model'])}</td><td>{model['mutants']}</td><td>{model['killed']}</td>"
            f"<td>{model['kill_rate']:.0%}</td><td class='{'survivor' if model['survivors'] else ''}'>"
            f"{_e(', '.join(model['survivors']) or '-')}</td><td>{_e(', '.join(model['false_alarms']) or '-')}</td></tr>"
        )
    parts.append("</table>")
    for model in report["models"]:
        parts.append(_model_section(model))
    return "".join(parts)


def _model_section(model: dict[str, Any]) -> str:
    checks = list(model["clean"])
    parts = [f"<h2>{_e(model['model'])}: {model['killed']}/{model['mutants']} killed ({model['kill_rate']:.0%})</h2>"]
    if model["survivors"]:
        parts.append(
            f"<p class='survivor'>Survivors (holes in the validation): {_e(', '.join(model['survivors']))}</p>"
        )
    if model["false_alarms"]:
        parts.append(f"<p>False alarms (fail the clean model): {_e(', '.join(model['false_alarms']))}</p>")
    header = "".join(f"<th>{_e(name)}</th>" for name in checks)
    parts.append(f"<table><tr><th>mutant</th><th>bug</th>{header}</tr>")
    parts.append("<tr><td>(clean)</td><td></td>")
    parts.extend(
        f"<td class='{_e(model['clean'][name]['status'])}'>{_e(model['clean'][name]['status'])}</td>" for name in checks
    )
    parts.append("</tr>")
    for detail in model["details"]:  # survivors first, as the runner sorted them
        row_class = "" if detail["killed"] else "survivor"
        parts.append(f"<tr><td class='{row_class}'>{_e(detail['mutant'])}</td><td>{_e(detail['description'])}</td>")
        for name in checks:
            result = detail["results"].get(name)
            if result is None:
                parts.append("<td class='other'>not run</td>")
                continue
            kill = name in detail["killed_by"]
            css = "kill" if kill else result["status"] if result["status"] in ("passed", "failed") else "other"
            parts.append(
                f"<td class='{css}' title='{_e(result['message'])}'>{'KILL' if kill else _e(result['status'])}</td>"
            )
        parts.append("</tr>")
    parts.append("</table>")
    if model["not_applicable"]:
        items = "".join(f"<li>{_e(name)}: {_e(why)}</li>" for name, why in model["not_applicable"].items())
        parts.append(f"<p>Injectors not applied:</p><ul>{items}</ul>")
    return "".join(parts)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)
