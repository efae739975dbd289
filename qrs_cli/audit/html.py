"""``qrs audit report --html``: one self-contained page (figures embedded as base64 PNG).

People would rather look than read: the u histogram against the flat line it should follow, a
QQ plot of u against U(0, 1) with the KS 95 % band, and the z histogram against N(0, 1). Every
text value from the log is HTML-escaped; the page loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from qrs_cli.errors import EXIT_USAGE, CLIError

#: Points drawn in the QQ plot: evenly spaced order statistics (the shape, not every point).
QQ_POINTS = 2000


def render_html(summary: Mapping[str, Any], u: np.ndarray, z: np.ndarray) -> str:
    """The page for one report."""
    figures = _figures(u, z)
    s = summary
    u_sec, z_sec = s["u"], s["z"]
    rows = [
        ("Files", ", ".join(s["files"])),
        ("Token records", f"{s['records']:,}"),
        ("Runs", "; ".join(_run_text(r) for r in s["runs"]) or "—"),
        ("Tokens by source", _pairs(s["tokens_by_source"])),
        ("Fallbacks", f"{s['fallbacks']['total']:,} ({_pairs(s['fallbacks']['by_kind'])})"),
        ("Left to vLLM", f"{s['left_to_vllm']:,}"),
        ("Forced stops", f"{s['forced_stops']:,}"),
        ("Health tests", _health_text(s["health_tests"])),
        ("Echo", _pairs(s["echo"])),
        ("Events", _pairs(s["events"])),
    ]
    stats = [
        ("u: records", f"{u_sec['n']:,}"),
        ("u: KS vs U(0,1)", _test_text(u_sec["ks"])),
        ("u: χ² on deciles (df 9)", _test_text(u_sec["chi2_deciles"])),
        ("z: mean (95 % CI)", _ci_text(z_sec["mean"], z_sec["mean_ci95"], 0.0)),
        ("z: SD (95 % CI)", _ci_text(z_sec["sd"], z_sec["sd_ci95"], 1.0)),
    ]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in s["notes"])
    images = "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, data in figures
    )
    timeline = _timeline_table(s["timeline"])
    by_source = _source_table(u_sec["by_source"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>qr-sampler audit report</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.25rem 0.75rem; text-align: left;
  vertical-align: top; }}
th {{ background: #f4f4f4; }}
figure {{ display: inline-block; margin: 0 1rem 1rem 0; }}
figure img {{ width: 520px; }}
figcaption {{ color: #555; font-size: 13px; }}
.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
</style></head><body>
<h1>qr-sampler audit report</h1>
<p>{html.escape(str(s["path"]))} — computed from the files alone; the chain and the archive are
checked by <code>qrs audit verify</code>.</p>
<h2>Summary</h2>{_table(rows)}
<h2>Uniformity of u and the distribution of z</h2>{_table(stats)}{by_source}
<ul>{notes}</ul>
{images}
<h2>Over time ({s["timeline"]["bucket_s"]} s buckets)</h2>{timeline}
</body></html>
"""


def _figures(u: np.ndarray, z: np.ndarray) -> list[tuple[str, str]]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CLIError(
            "--html needs matplotlib",
            "pip install 'qr-sampler[audit]'",
            EXIT_USAGE,
        ) from None
    out = []
    if len(u):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.hist(u, bins=20, range=(0, 1), color="#4c72b0", edgecolor="white")
        ax.axhline(len(u) / 20, color="#c44e52", linestyle="--", label="expected (uniform)")
        ax.set_xlabel("u")
        ax.set_ylabel("records")
        ax.legend(loc="lower right")
        out.append((f"Histogram of u ({len(u):,} records, 20 bins)", _png(fig, plt)))
        fig, ax = plt.subplots(figsize=(6.5, 4))
        ordered = np.sort(u)
        n = len(ordered)
        picks = np.unique(np.linspace(0, n - 1, min(n, QQ_POINTS)).astype(np.int64))
        theory = (picks + 0.5) / n
        band = 1.358 / math.sqrt(n)  # KS 95 % critical value, large-n
        ax.fill_between([0, 1], [-band, 1 - band], [band, 1 + band], color="#dddddd",
                        label="KS 95 % band")  # fmt: skip
        ax.plot([0, 1], [0, 1], color="#c44e52", linewidth=1)
        ax.plot(theory, ordered[picks], ".", markersize=2, color="#4c72b0", label="u")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("U(0,1) quantile")
        ax.set_ylabel("u quantile")
        ax.legend(loc="lower right")
        out.append(("QQ plot of u against U(0,1)", _png(fig, plt)))
    if len(z):
        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.hist(z, bins=40, density=True, color="#55a868", edgecolor="white")
        grid = np.linspace(min(-4.0, float(z.min())), max(4.0, float(z.max())), 200)
        ax.plot(grid, np.exp(-grid * grid / 2) / math.sqrt(2 * math.pi), color="#c44e52",
                label="N(0,1)")  # fmt: skip
        ax.set_xlabel("z")
        ax.set_ylabel("density")
        ax.legend(loc="upper right")
        out.append((f"Histogram of z ({len(z):,} records)", _png(fig, plt)))
    return out


def _png(fig: Any, plt: Any) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _source_table(by_source: Mapping[str, Mapping[str, Any]]) -> str:
    if not by_source:
        return ""
    head = "<tr><th>source</th><th>n</th><th>KS D</th><th>KS p</th><th>χ²</th><th>χ² p</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(name)}</td><td class=num>{row['n']:,}</td>"
        f"<td class=num>{_fmt(row['ks_statistic'])}</td><td class=num>{_fmt(row['ks_p_value'])}"
        f"</td><td class=num>{_fmt(row['chi2_statistic'])}</td>"
        f"<td class=num>{_fmt(row['chi2_p_value'])}</td></tr>"
        for name, row in by_source.items()
    )
    return f"<table>{head}{body}</table>"


def _timeline_table(timeline: Mapping[str, Any]) -> str:
    buckets = timeline["buckets"]
    if not buckets:
        return "<p>No timestamps.</p>"
    head = (
        "<tr><th>start (UTC)</th><th>tokens</th><th>quantum</th><th>fallback</th>"
        "<th>left to vLLM</th><th>forced stop</th><th>greedy</th></tr>"
    )
    body = "".join(
        f"<tr><td>{html.escape(b['start'])}</td><td class=num>{b['tokens']:,}</td>"
        f"<td class=num>{b['quantum']:,}</td><td>{html.escape(_pairs(b['fallback']))}</td>"
        f"<td class=num>{b['left_to_vllm']:,}</td><td class=num>{b['forced_stop']:,}</td>"
        f"<td class=num>{b['greedy']:,}</td></tr>"
        for b in buckets
    )
    return f"<table>{head}{body}</table>"


def _pairs(mapping: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in
                     mapping.items()) or "none"  # fmt: skip


def _run_text(run: Mapping[str, Any]) -> str:
    source = run.get("source") or {}
    where = source.get("address") or ""
    return (
        f"{run.get('run_id', '')}: {run.get('model') or 'model ?'}, source "
        f"{source.get('type', '?')}{' @ ' + where if where else ''}, plugin "
        f"{run.get('plugin_version', '?')}, vLLM {run.get('vllm_version') or '?'}"
    )


def _health_text(health: Mapping[str, Any]) -> str:
    if not health["records"]:
        return "no record served because of a failed health test"
    return (
        f"{health['records']:,} records in {health['episodes']} episodes "
        f"({health['first']} … {health['last']})"
    )


def _test_text(test: Mapping[str, Any]) -> str:
    return f"statistic {_fmt(test['statistic'])}, p = {_fmt(test['p_value'])}"


def _ci_text(value: float | None, ci: list[float | None], expected: float) -> str:
    return f"{_fmt(value)} [{_fmt(ci[0])}, {_fmt(ci[1])}] (expected {expected:g})"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"
