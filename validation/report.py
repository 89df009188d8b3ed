"""Write a validation report as JSON and as one self-contained HTML page (inline SVG plots)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from validation.plan import DEFAULT_MIN_SCALING_EFFICIENCY

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
VERDICT_COLOURS = {"pass": "#d4edda", "fail": "#f8d7da", "skip": "#eeeeee", "not-run": "#fff3cd"}


def verdict_text(report: dict[str, Any]) -> str:
    """PASSED, FAILED, or what was not validated (e.g. a GPU image without a GPU)."""
    verdict = report.get("verdict") or ("passed" if report.get("passed") else "failed")
    return verdict.upper() if verdict in ("passed", "failed") else verdict


def summary_line(report: dict[str, Any]) -> str:
    """One line: the verdict and how many checks passed, failed, were skipped or not run."""
    s = report["summary"]
    return (
        f"validation {verdict_text(report)}: {s['pass']} passed, "
        f"{s['fail']} failed, {s['skip']} skipped, {s['not-run']} not run"
    )


def failure_lines(report: dict[str, Any]) -> list[str]:
    """One line per failed or not-run check: what it measured against which reference."""
    lines = []
    for c in report.get("checks", []):
        if c["verdict"] == "not-run":
            lines.append(f"  NOT RUN {c['check']} [{c['subject']}]: {c['detail']}")
            continue
        if c["verdict"] != "fail":
            continue
        line = (
            f"  FAIL {c['check']} [{c['subject']}]: measured {c['measured']} vs "
            f"{c['threshold']} {c['reference']}"
        )
        if c["check"] == "job-completed" and c["detail"]:
            line += f" ({c['detail'].splitlines()[-1]})"  # the crash's last words
        lines.append(line)
    return lines


def write_json(report: dict[str, Any], path: Path) -> Path:
    """Write the report JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))
    return path


def svg_line_chart(
    series: dict[str, list[float]],
    title: str,
    width: int = 420,
    height: int = 240,
    log_y: bool = False,
) -> str:
    """A small inline SVG line chart of named series against their index."""
    pad = 40
    points = {
        k: [
            (i, v)
            for i, v in enumerate(vs)
            if v is not None and math.isfinite(v) and (v > 0 or not log_y)
        ]
        for k, vs in series.items()
    }
    ys = [(math.log10(v) if log_y else v) for pts in points.values() for _, v in pts]
    xs = [i for pts in points.values() for i, _ in pts]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img"><title>{html.escape(title)}</title>'
        f'<rect width="100%" height="100%" fill="white" stroke="#ccc"/>'
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="12">'
        f"{html.escape(title)}</text>"
    ]
    if ys and xs:
        y0, y1 = min(ys), max(ys)
        y1 = y1 if y1 > y0 else y0 + 1
        x1 = max(max(xs), 1)

        def sx(i: float) -> float:
            return pad + (width - 2 * pad) * i / x1

        def sy(v: float) -> float:
            v = math.log10(v) if log_y else v
            return height - pad + (2 * pad - height) * (v - y0) / (y1 - y0)

        parts.append(
            f'<text x="4" y="{pad}" font-size="10">{_fmt(y1, log_y)}</text>'
            f'<text x="4" y="{height - pad}" font-size="10">{_fmt(y0, log_y)}</text>'
        )
        for n, (name, pts) in enumerate(points.items()):
            colour = COLOURS[n % len(COLOURS)]
            coords = " ".join(f"{sx(i):.1f},{sy(v):.1f}" for i, v in pts)
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>'
            )
            parts.append(
                f'<text x="{pad + 4}" y="{height - 8 - 12 * n}" font-size="10" '
                f'fill="{colour}">{html.escape(name)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _fmt(v: float, log_y: bool) -> str:
    return f"{10**v:.3g}" if log_y else f"{v:.3g}"


def svg_bar_chart(
    values: dict[str, float],
    title: str,
    reference: float | None = None,
    width: int = 420,
    height: int = 240,
) -> str:
    """A small inline SVG bar chart (e.g. weak-scaling efficiency per run)."""
    pad = 40
    top = max([*values.values(), reference or 0, 1e-9]) * 1.1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img"><title>{html.escape(title)}</title>'
        f'<rect width="100%" height="100%" fill="white" stroke="#ccc"/>'
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="12">'
        f"{html.escape(title)}</text>"
    ]
    n = max(1, len(values))
    bar = (width - 2 * pad) / n
    for i, (name, v) in enumerate(values.items()):
        h = (height - 2 * pad) * v / top
        x = pad + i * bar
        parts.append(
            f'<rect x="{x + 4:.1f}" y="{height - pad - h:.1f}" width="{bar - 8:.1f}" '
            f'height="{h:.1f}" fill="{COLOURS[i % len(COLOURS)]}"/>'
            f'<text x="{x + bar / 2:.1f}" y="{height - pad + 12}" font-size="9" '
            f'text-anchor="middle">{html.escape(name)}</text>'
            f'<text x="{x + bar / 2:.1f}" y="{height - pad - h - 3:.1f}" font-size="9" '
            f'text-anchor="middle">{v:.2f}</text>'
        )
    if reference is not None:
        y = height - pad - (height - 2 * pad) * reference / top
        parts.append(
            f'<line x1="{pad}" x2="{width - pad}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="black" stroke-dasharray="4"/>'
            f'<text x="{width - pad}" y="{y - 3:.1f}" font-size="9" text-anchor="end">'
            f"threshold {reference:g}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _check_rows(checks: list[dict[str, Any]]) -> str:
    rows = []
    for c in checks:
        cells = [
            c["verdict"].upper(),
            c["check"],
            c["category"],
            c["subject"],
            c["measured"],
            f"{c['threshold']} {c['reference'] if c['reference'] is not None else ''}",
            c["source"],
            c["detail"],
        ]
        tds = "".join(f"<td>{html.escape(_cell(v))}</td>" for v in cells)
        rows.append(
            f'<tr style="background:{VERDICT_COLOURS.get(c["verdict"], "white")}">{tds}</tr>'
        )
    return "\n".join(rows)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def render_html(report: dict[str, Any]) -> str:
    """The whole report as one HTML document with no external resources."""
    runs = report.get("runs", {})
    losses = "".join(
        svg_line_chart(
            {
                "loss": run["step_loss"].get("loss", []),
                **({"g_loss": run["step_loss"]["g_loss"]} if "g_loss" in run["step_loss"] else {}),
            },
            f"{tag}: training loss per step",
        )
        for tag, run in runs.items()
    )
    efficiency = {
        c["subject"]: c["measured"]
        for c in report.get("checks", [])
        if c["check"] == "weak-scaling" and isinstance(c["measured"], (int, float))
    }
    scaling = (
        svg_bar_chart(
            efficiency,
            "weak-scaling efficiency (per-rank samples/s vs 1 rank)",
            reference=report.get("request", {}).get(
                "min_scaling_efficiency", DEFAULT_MIN_SCALING_EFFICIENCY
            ),
        )
        if efficiency
        else "<p>no multi-rank runs</p>"
    )
    throughput = {
        # Which device ran is part of the label: a GPU image's CPU fallback reads as such.
        f"{tag} on {run['device']}" if run.get("device") else tag: sum(
            v for v in run["samples_per_s_per_rank"] if v
        )
        for tag, run in runs.items()
        if any(run["samples_per_s_per_rank"])
    }
    summary = report.get("summary", {})
    verdict = html.escape(verdict_text(report))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Validation: {html.escape(report["target"])}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #bbb;padding:3px 6px;vertical-align:top}} svg{{margin:4px}}</style></head>
<body><h1>Validation of {html.escape(report["target"])}: {verdict}</h1>
<p>{html.escape(report.get("created", ""))}; {report.get("wall_s", 0):.0f} s;
checks: {html.escape(json.dumps(summary))}</p>
<h2>Checks</h2>
<table><tr><th>verdict</th><th>check</th><th>category</th><th>subject</th><th>measured</th>
<th>reference</th><th>source</th><th>detail</th></tr>
{_check_rows(report.get("checks", []))}</table>
<h2>Scaling</h2>{scaling}
{svg_bar_chart(throughput, "total samples/s per run") if throughput else ""}
<h2>Loss curves</h2><div>{losses}</div>
</body></html>
"""


def write_html(report: dict[str, Any], path: Path) -> Path:
    """Write the self-contained HTML report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report))
    return path
