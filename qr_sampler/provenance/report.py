"""``qrs audit report``: what researchers compute from a diagnostics log, as data.

Every line is parsed; nothing is verified here (that is ``qrs audit verify``). Sections:

- **u uniformity** — over the records that carry entropy bytes: Kolmogorov–Smirnov against
  U(0, 1) and χ² on the ten deciles, each with its p-value, overall and per source. Records
  without bytes are excluded and counted by why: greedy rows, rows left to vLLM, forced stops.
- **z** — mean and standard deviation with 95 % intervals (under the null: 0 and 1).
- **Tokens by source**, **fallbacks by kind**, **rows left to vLLM** and **forced stops**, in
  total and over time (up to 60 equal buckets of wall-clock time).
- **Health tests** — records served by the fallback because the bytes failed the online health
  tests (``fallback_kind == "health_test"``), their episodes, and any health event lines.
- **Echo** — how many records' nonces the server echoed (true), did not echo (null), or carry
  no nonce.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qr_sampler.provenance.inputs import check_is_jsonl, find_logs, read_blocks
from qr_sampler.provenance.stats import decile_chi2, ks_uniform, mean_ci, sd_ci

_NICE_BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
MAX_BUCKETS = 60


@dataclass
class _Columns:
    """What the report keeps of each token record (memory: a few numbers per record)."""

    u: list[float] = field(default_factory=list)
    z: list[float] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    timestamp_ns: list[int] = field(default_factory=list)
    #: quantum, fallback:<kind>, left (to vLLM), stop (forced), greedy.
    category: list[str] = field(default_factory=list)
    run: list[str] = field(default_factory=list)
    step: list[int] = field(default_factory=list)
    #: The record carries bytes and numeric u, z: it counts in the u and z statistics.
    usable: list[bool] = field(default_factory=list)


@dataclass(frozen=True)
class AuditReport:
    """The report: ``summary`` is JSON-ready (``--json``); ``u`` and ``z`` (float64 [n]) are
    the values behind the u and z statistics, in log order, for plots."""

    summary: dict[str, Any]
    u: np.ndarray
    z: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return self.summary


def build_report(
    path: str | Path, *, progress: Callable[[int, int], None] | None = None
) -> AuditReport:
    """The report of every log under ``path`` (see the module docstring).

    Raises :class:`~qr_sampler.provenance.errors.AuditInputError` for input that is not
    diagnostics; lines that do not parse are counted, not fatal.
    """
    started = time.perf_counter()
    logs = find_logs(path)
    for files in logs:
        check_is_jsonl(files)
    files = [f for log in logs for f in log]
    total = sum(f.stat().st_size for f in files)
    done = 0
    cols = _Columns()
    runs: dict[str, dict[str, Any]] = {}
    events: Counter[str] = Counter()
    health_events: list[dict[str, Any]] = []
    echo: Counter[str] = Counter()
    excluded: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()
    unreadable = 0
    lines = 0
    for file in files:
        for block in read_blocks(file):
            for line in block.lines:
                lines += 1
                try:
                    value = json.loads(line)
                except (ValueError, UnicodeDecodeError):
                    unreadable += 1
                    continue
                if not isinstance(value, dict):
                    unreadable += 1
                    continue
                kind = value.get("kind", "token")
                if kind == "manifest":
                    runs.setdefault(str(value.get("run_id", "")), _run_summary(value))
                elif kind == "event":
                    name = str(value.get("event", ""))
                    events[name] += 1
                    if "health" in name:
                        health_events.append(value)
                elif kind == "token":
                    _token(value, cols, echo, excluded, by_source, fallbacks)
            done += block.size
            if progress is not None:
                progress(done, total)
    usable = np.array(cols.usable, dtype=bool)
    u = np.array(cols.u, dtype=np.float64)[usable]
    z = np.array(cols.z, dtype=np.float64)[usable]
    with_bytes = [s for s, ok in zip(cols.source, cols.usable, strict=True) if ok]
    records = len(cols.category)
    notes = []
    if excluded:
        parts = ", ".join(f"{n} {why}" for why, n in sorted(excluded.items()))
        notes.append(f"excluded from the u and z statistics (no entropy bytes): {parts}")
    if unreadable:
        notes.append(f"{unreadable} lines did not parse as JSON objects and were skipped")
    summary = {
        "path": str(path),
        "files": [str(f) for f in files],
        "lines": lines,
        "records": records,
        "runs": list(runs.values()),
        "tokens_by_source": dict(by_source.most_common()),
        "u": _u_section(u, with_bytes, excluded),
        "z": _z_section(z),
        "fallbacks": {"total": sum(fallbacks.values()), "by_kind": dict(fallbacks.most_common())},
        "left_to_vllm": excluded.get("left to vLLM", 0),
        "forced_stops": excluded.get("forced stops", 0),
        "timeline": _timeline(cols),
        "health_tests": _health(cols, health_events),
        "echo": {
            "verified": echo.get("true", 0),
            "mismatch": echo.get("false", 0),
            "not_echoed": echo.get("null", 0),
            "no_nonce": echo.get("no nonce", 0),
        },
        "events": dict(events.most_common()),
        "notes": notes,
        "seconds": time.perf_counter() - started,
    }
    return AuditReport(summary=summary, u=u, z=z)


def _run_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    keys = ("run_id", "started_at", "plugin_version", "vllm_version", "model", "parallel",
            "config_hash", "source", "host", "pid")  # fmt: skip
    return {k: manifest.get(k) for k in keys if k in manifest}


def _token(
    value: dict[str, Any],
    cols: _Columns,
    echo: Counter[str],
    excluded: Counter[str],
    by_source: Counter[str],
    fallbacks: Counter[str],
) -> None:
    source = str(value.get("source", ""))
    by_source[source] += 1
    fallback = value.get("fallback") is True
    kind = str(value.get("fallback_kind") or "unspecified")
    if value.get("forced_stop") is True:
        category, why = "stop", "forced stops"
    elif source == "vllm":
        category, why = "left", "left to vLLM"
    elif value.get("greedy") is True or source == "none":
        category, why = "greedy", "greedy rows"
    else:
        category = f"fallback:{kind}" if fallback else "quantum"
        why = "rows without bytes" if value.get("entropy_sha256") == "" else ""
    u, z = value.get("u"), value.get("z")
    if not why and not (_is_number(u) and _is_number(z)):
        why = "rows whose u or z is not a number"
    if why:
        excluded[why] += 1
    if fallback and source != "vllm":
        fallbacks[kind] += 1
    if not value.get("nonce"):
        echo["no nonce"] += 1
    else:
        echo[json.dumps(value.get("echo_verified"))] += 1
    cols.u.append(math.nan if why else float(u))  # type: ignore[arg-type]
    cols.z.append(math.nan if why else float(z))  # type: ignore[arg-type]
    cols.usable.append(not why)
    cols.source.append(source)
    ts = value.get("timestamp_ns")
    cols.timestamp_ns.append(ts if isinstance(ts, int) and not isinstance(ts, bool) else 0)
    cols.category.append(category)
    cols.run.append(str(value.get("run_id", "")))
    step = value.get("step")
    cols.step.append(step if isinstance(step, int) and not isinstance(step, bool) else -1)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _u_section(u: np.ndarray, sources: list[str], excluded: Counter[str]) -> dict[str, Any]:
    ks_d, ks_p = ks_uniform(u) if len(u) else (math.nan, math.nan)
    chi, chi_p, counts = decile_chi2(u)
    per_source = {}
    for source in sorted(set(sources)):
        picked = u[np.array([s == source for s in sources], dtype=bool)]
        d, p = ks_uniform(picked)
        c, cp, _ = decile_chi2(picked)
        per_source[source] = {
            "n": len(picked),
            "ks_statistic": _num(d),
            "ks_p_value": _num(p),
            "chi2_statistic": _num(c),
            "chi2_p_value": _num(cp),
        }
    return {
        "n": len(u),
        "mean": _num(float(u.mean())) if len(u) else None,
        "excluded": dict(sorted(excluded.items())),
        "ks": {"statistic": _num(ks_d), "p_value": _num(ks_p), "against": "U(0,1)"},
        "chi2_deciles": {
            "statistic": _num(chi),
            "df": 9,
            "p_value": _num(chi_p),
            "counts": counts,
        },
        "by_source": per_source,
    }


def _z_section(z: np.ndarray) -> dict[str, Any]:
    mean, mean_lo, mean_hi = mean_ci(z)
    sd, sd_lo, sd_hi = sd_ci(z)
    return {
        "n": len(z),
        "mean": _num(mean),
        "mean_ci95": [_num(mean_lo), _num(mean_hi)],
        "sd": _num(sd),
        "sd_ci95": [_num(sd_lo), _num(sd_hi)],
        "expected": {"mean": 0.0, "sd": 1.0},
    }


def _timeline(cols: _Columns) -> dict[str, Any]:
    stamps = [t for t in cols.timestamp_ns if t > 0]
    if not stamps:
        return {"bucket_s": 0, "buckets": []}
    first, last = min(stamps), max(stamps)
    span_s = (last - first) / 1e9
    width = next((w for w in _NICE_BUCKETS_S if span_s / w < MAX_BUCKETS), None)
    if width is None:
        width = math.ceil(span_s / MAX_BUCKETS)
    start = first - first % (width * 10**9)
    buckets: dict[int, Counter[str]] = {}
    for ts, category in zip(cols.timestamp_ns, cols.category, strict=True):
        if ts <= 0:
            continue
        slot = (ts - start) // (width * 10**9)
        buckets.setdefault(slot, Counter())[category] += 1
    rows = []
    for slot in range(max(buckets) + 1):
        counts = buckets.get(slot, Counter())
        fallback = {k.split(":", 1)[1]: n for k, n in counts.items() if k.startswith("fallback:")}
        rows.append({
            "start": _iso(start + slot * width * 10**9),
            "tokens": sum(counts.values()),
            "quantum": counts.get("quantum", 0),
            "fallback": dict(sorted(fallback.items())),
            "left_to_vllm": counts.get("left", 0),
            "forced_stop": counts.get("stop", 0),
            "greedy": counts.get("greedy", 0),
        })  # fmt: skip
    return {"bucket_s": width, "buckets": rows}


def _health(cols: _Columns, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Records served because the bytes failed a health test, and their episodes: runs of
    steps with such records, ended by a step whose bytes came from the source again."""
    flagged = [c == "fallback:health_test" for c in cols.category]
    episodes = 0
    inside: dict[str, bool] = {}
    for run, healthy in _steps(cols, flagged).values():
        if not healthy and not inside.get(run, False):
            episodes += 1
        inside[run] = not healthy
    stamps = [t for t, f in zip(cols.timestamp_ns, flagged, strict=True) if f and t > 0]
    return {
        "records": sum(flagged),
        "episodes": episodes,
        "first": _iso(min(stamps)) if stamps else "",
        "last": _iso(max(stamps)) if stamps else "",
        "events": events[:100],
    }


def _steps(cols: _Columns, flagged: list[bool]) -> dict[tuple[str, int], tuple[str, bool]]:
    """Per (run, step) in log order: (run, True when no row failed a health test), for the
    steps that drew bytes or failed a health test."""
    out: dict[tuple[str, int], tuple[str, bool]] = {}
    for run, step, category, bad in zip(cols.run, cols.step, cols.category, flagged, strict=True):
        if category == "quantum" or bad:
            key = (run, step)
            _, healthy = out.get(key, (run, True))
            out[key] = (run, healthy and not bad)
    return out


def _iso(ns: int) -> str:
    seconds = ns / 1e9
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _num(value: float) -> float | None:
    """JSON has no NaN: a statistic that cannot be computed is null."""
    return None if value is None or not math.isfinite(value) else float(value)
