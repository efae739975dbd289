"""Plain-text rendering of ``qrs audit verify`` and ``qrs audit report`` results."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qrs_cli import output

if TYPE_CHECKING:
    from qr_sampler.provenance.verifier import LogResult, VerifyReport

MARK_OK, MARK_WARN, MARK_FAIL = "✓", "!", "✗"
#: Problems listed before "… and N more".
SHOWN = 10


def verify_lines(report: VerifyReport) -> list[str]:
    """One block per log, then the problems (first first), the warnings and a verdict."""
    lines: list[str] = []
    for log in report.logs:
        lines += _log_lines(log, archive=bool(report.archive))
    for problem in report.problems[:SHOWN]:
        lines.append(f"{MARK_FAIL} {problem}")
    if report.problem_count > SHOWN:
        lines.append(f"  … and {report.problem_count - SHOWN} more problems")
    for warning in report.warnings[:SHOWN]:
        where = f"{warning.file}:{warning.line}: " if warning.line else f"{warning.file}: "
        lines.append(f"{MARK_WARN} {where}{warning.message}")
    rate = report.records / report.seconds if report.seconds > 0 else 0.0
    verdict = "verified" if report.ok else f"FAILED ({report.problem_count} problems)"
    lines.append(
        f"{verdict}: {report.records:,} token records in {report.seconds:.2f} s "
        f"({rate:,.0f} records/s)"
    )
    return lines


def _log_lines(log: LogResult, *, archive: bool) -> list[str]:
    first = os.path.basename(log.files[-1]) if log.files else "?"
    more = f" (+{len(log.files) - 1} rotated)" if len(log.files) > 1 else ""
    out = [
        f"{first}{more}: {log.lines:,} lines — {log.tokens:,} token records, "
        f"{log.manifests} manifests, {log.events} events; runs: {', '.join(log.run_ids) or '—'}",
        f"  chain: every link checked; head {log.head_hash} (publish it to anchor the end)",
    ]
    if log.tokens:
        out.append(
            f"  u = clamp(Φ(z)) and z from sample_mean: {log.u_checked:,} records re-derived; "
            f"{log.without_bytes:,} without entropy bytes (greedy, left to vLLM, forced stop)"
        )
    if archive and log.tokens:
        out.append(
            f"  archive: {log.archive_checked:,} records' bytes re-hashed and re-amplified; "
            f"{log.archive_dropped:,} dropped by the size bound; {log.archive_absent:,} not "
            "archived"
        )
    return out


def report_lines(summary: Mapping[str, Any]) -> list[str]:
    """The report as readable text (the same data as ``--json``)."""
    s = summary
    u, z = s["u"], s["z"]
    lines = [
        f"report: {len(s['files'])} files, {s['records']:,} token records",
    ]
    for run in s["runs"]:
        source = run.get("source") or {}
        lines.append(
            f"  run {run.get('run_id', '')}: model {run.get('model') or '?'}, source "
            f"{source.get('type', '?')} {source.get('address', '')}".rstrip()
            + f", plugin {run.get('plugin_version', '?')}, vLLM {run.get('vllm_version') or '?'}"
        )
    lines.append(f"tokens by source: {_pairs(s['tokens_by_source'])}")
    lines.append(f"u: {u['n']:,} records with entropy bytes")
    lines.append(
        f"  KS against U(0,1): D = {_fmt(u['ks']['statistic'])}, p = {_fmt(u['ks']['p_value'])}"
    )
    chi = u["chi2_deciles"]
    lines.append(
        f"  χ² on deciles: {_fmt(chi['statistic'])} (df 9), p = {_fmt(chi['p_value'])}; "
        f"counts {chi['counts']}"
    )
    if len(u["by_source"]) > 1:
        for name, row in u["by_source"].items():
            lines.append(
                f"  {name}: n = {row['n']:,}, KS p = {_fmt(row['ks_p_value'])}, "
                f"χ² p = {_fmt(row['chi2_p_value'])}"
            )
    lines.append(
        f"z: mean {_fmt(z['mean'])} [{_fmt(z['mean_ci95'][0])}, {_fmt(z['mean_ci95'][1])}] "
        f"(expected 0), SD {_fmt(z['sd'])} [{_fmt(z['sd_ci95'][0])}, {_fmt(z['sd_ci95'][1])}] "
        "(expected 1), 95 % intervals"
    )
    fallbacks = s["fallbacks"]
    lines.append(f"fallbacks: {fallbacks['total']:,} ({_pairs(fallbacks['by_kind'])})")
    lines.append(f"left to vLLM: {s['left_to_vllm']:,}; forced stops: {s['forced_stops']:,}")
    health = s["health_tests"]
    lines.append(
        f"health tests: {health['records']:,} records served by the fallback in "
        f"{health['episodes']} episodes"
        + (f" ({health['first']} … {health['last']})" if health["records"] else "")
    )
    echo = s["echo"]
    lines.append(
        f"nonce echo: {echo['verified']:,} verified, {echo['mismatch']:,} mismatched, "
        f"{echo['not_echoed']:,} not echoed (server without echo), {echo['no_nonce']:,} without "
        "nonce"
    )
    if s["events"]:
        lines.append(f"events: {_pairs(s['events'])}")
    lines += [f"note: {n}" for n in s["notes"]]
    timeline = s["timeline"]
    if timeline["buckets"]:
        lines.append(f"over time ({timeline['bucket_s']} s buckets, UTC):")
        rows = [
            [
                b["start"],
                f"{b['tokens']:,}",
                f"{b['quantum']:,}",
                _pairs(b["fallback"]) if b["fallback"] else "0",
                f"{b['left_to_vllm']:,}",
                f"{b['forced_stop']:,}",
            ]
            for b in timeline["buckets"]
        ]
        table = output.table(
            ["START", "TOKENS", "QUANTUM", "FALLBACK", "LEFT TO VLLM", "FORCED STOP"], rows
        )
        lines += ["  " + row for row in table.splitlines()]
    return lines


def _pairs(mapping: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in mapping.items()) or "none"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"
