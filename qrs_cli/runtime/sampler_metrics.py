"""The sampler's key figures for ``qrs status``, read from its ``qr_sampler_*`` Prometheus series.

Where the series are (see the README's "Metrics"): on vLLM's own ``/metrics`` when the engine
runs prometheus multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), else on the plugin's own
port when the profile sets ``QR_METRICS_PORT``. :func:`sampler_figures` tries vLLM's endpoint
first, then that port, and returns the first answer that has the series. Every probe has a
short timeout and nothing here raises: a stack without metrics simply has no figures.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qrs_cli.runtime.types import StackStatus

PREFIX = "qr_sampler_"
SCRAPE_TIMEOUT_S = 2.0
#: Largest answer read from a metrics endpoint (vLLM's own /metrics is ~100-300 KB).
MAX_SCRAPE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class SamplerFigures:
    """What an operator checks first. Counts are totals since the engine started (summed over
    its processes); None = the series is not exported (e.g. no quota configured)."""

    url: str
    tokens_by_source: dict[str, int] = field(default_factory=dict)
    fallbacks_by_kind: dict[str, int] = field(default_factory=dict)  # kinds that happened
    fallback_tokens: int = 0
    left_to_vllm: int = 0
    fetched_bytes: int = 0
    fetches: int = 0
    fetch_latency_mean_ms: float | None = None
    fetch_latency_p95_le_ms: float | None = None  # the histogram bucket bound holding p95
    breaker_states: tuple[str, ...] = ()  # one per engine process that reports a breaker
    quota_remaining_calls: int | None = None
    quota_remaining_bytes: int | None = None
    health_test_failures: int | None = None

    @property
    def tokens(self) -> int:
        return sum(self.tokens_by_source.values())

    def summary(self) -> str:
        """One plain-text line for ``qrs status``."""
        sources = ", ".join(f"{k} {v:,}" for k, v in sorted(self.tokens_by_source.items()))
        parts = [f"{self.tokens:,} tokens" + (f" ({sources})" if sources else "")]
        fallbacks = sum(self.fallbacks_by_kind.values())
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(self.fallbacks_by_kind.items()))
        parts.append(f"fallbacks {fallbacks:,}" + (f" ({kinds})" if kinds else ""))
        if self.left_to_vllm:
            parts.append(f"left to vLLM {self.left_to_vllm:,}")
        if self.breaker_states:
            parts.append("breaker " + ", ".join(self.breaker_states))
        if self.fetch_latency_mean_ms is not None:
            fetch = f"fetch {self.fetch_latency_mean_ms:.2f} ms mean"
            if self.fetch_latency_p95_le_ms is not None:
                fetch += f", p95 ≤ {_ms(self.fetch_latency_p95_le_ms)}"
            parts.append(fetch)
        quota = []
        if self.quota_remaining_calls is not None:
            quota.append(f"{self.quota_remaining_calls:,} calls")
        if self.quota_remaining_bytes is not None:
            quota.append(f"{self.quota_remaining_bytes:,} bytes today")
        if quota:
            parts.append("quota left " + ", ".join(quota))
        if self.health_test_failures:
            parts.append(f"health-test failures {self.health_test_failures:,}")
        return " · ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "tokens": self.tokens,
            "tokens_by_source": dict(self.tokens_by_source),
            "fallbacks_by_kind": dict(self.fallbacks_by_kind),
            "fallback_tokens": self.fallback_tokens,
            "left_to_vllm": self.left_to_vllm,
            "fetched_bytes": self.fetched_bytes,
            "fetches": self.fetches,
            "fetch_latency_mean_ms": self.fetch_latency_mean_ms,
            "fetch_latency_p95_le_ms": self.fetch_latency_p95_le_ms,
            "breaker_states": list(self.breaker_states),
            "quota_remaining_calls": self.quota_remaining_calls,
            "quota_remaining_bytes": self.quota_remaining_bytes,
            "health_test_failures": self.health_test_failures,
        }


def parse_sampler_figures(text: str, url: str = "") -> SamplerFigures | None:
    """The figures in a Prometheus text exposition; None when it has no ``qr_sampler_`` series
    (or is not Prometheus text)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: list[tuple[str, dict[str, str], float]] = []
    try:
        for family in text_string_to_metric_families(text):
            if family.name.startswith(PREFIX):
                samples += [(s.name, s.labels, s.value) for s in family.samples]
    except (ValueError, TypeError, IndexError):
        return None
    if not samples:
        return None
    by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for name, labels, value in samples:
        by_name[name].append((labels, value))

    def total(name: str) -> int:
        return int(sum(v for _, v in by_name.get(PREFIX + name, ())))

    def by_label(name: str, label: str) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for labels, value in by_name.get(PREFIX + name, ()):
            out[labels.get(label, "")] += int(value)
        return {k: v for k, v in out.items() if v}

    def single(name: str) -> int | None:
        values = [v for _, v in by_name.get(PREFIX + name, ()) if math.isfinite(v)]
        return int(min(values)) if values else None

    fetches = total("fetch_latency_seconds_count")
    latency_sum = sum(v for _, v in by_name.get(PREFIX + "fetch_latency_seconds_sum", ()))
    buckets = by_name.get(PREFIX + "fetch_latency_seconds_bucket", [])
    breakers = sorted(
        by_name.get(PREFIX + "circuit_breaker_state", []), key=lambda pair: pair[0].get("pid", "")
    )
    failures_name = PREFIX + "health_test_failures_total"
    return SamplerFigures(
        url=url,
        tokens_by_source=by_label("tokens_total", "source"),
        fallbacks_by_kind=by_label("fallbacks_total", "kind"),
        fallback_tokens=total("fallback_tokens_total"),
        left_to_vllm=total("rows_left_to_vllm_total"),
        fetched_bytes=total("fetched_bytes_total"),
        fetches=fetches,
        fetch_latency_mean_ms=round(latency_sum / fetches * 1000, 3) if fetches else None,
        fetch_latency_p95_le_ms=_p95_bound_ms(buckets, fetches),
        breaker_states=tuple(labels.get("state", "") for labels, v in breakers if v == 1),
        quota_remaining_calls=single("quota_remaining_calls"),
        quota_remaining_bytes=single("quota_remaining_bytes"),
        health_test_failures=total("health_test_failures_total")
        if failures_name in by_name
        else None,
    )


def _ms(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:g} ms"


def _p95_bound_ms(buckets: Iterable[tuple[dict[str, str], float]], count: int) -> float | None:
    """The smallest bucket bound with ≥ 95 % of the fetches (cumulative buckets)."""
    if not count:
        return None
    cumulative: dict[float, float] = defaultdict(float)
    for labels, value in buckets:
        try:
            cumulative[float(labels.get("le", "nan"))] += value
        except ValueError:
            continue
    for bound in sorted(b for b in cumulative if not math.isnan(b)):
        if cumulative[bound] >= 0.95 * count:
            return bound * 1000 if math.isfinite(bound) else math.inf
    return None


def scrape_sampler_figures(
    urls: Sequence[str], timeout_s: float = SCRAPE_TIMEOUT_S
) -> SamplerFigures | None:
    """The figures from the first of ``urls`` that answers with ``qr_sampler_`` series."""
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as reply:
                if reply.status != 200:
                    continue
                text = reply.read(MAX_SCRAPE_BYTES).decode("utf-8", errors="replace")
        except (OSError, ValueError, urllib.error.URLError):
            continue
        figures = parse_sampler_figures(text, url)
        if figures is not None:
            return figures
    return None


def metrics_urls(stack: StackStatus) -> list[str]:
    """Where a stack's series may be: vLLM's /metrics, then the profile's QR_METRICS_PORT."""
    urls = [stack.endpoint.rstrip("/") + "/metrics"] if stack.endpoint else []
    port, host = _profile_metrics_port(stack.profile)
    if port:
        from qrs_cli.runtime.native import client_host

        urls.append(f"http://{client_host(host)}:{port}/metrics")
    return urls


def sampler_figures(
    stack: StackStatus, timeout_s: float = SCRAPE_TIMEOUT_S
) -> SamplerFigures | None:
    """The running stack's figures, or None (not running, no series exported, unreachable)."""
    if not stack.running:
        return None
    try:
        return scrape_sampler_figures(metrics_urls(stack), timeout_s)
    except Exception:  # status must render whatever a profile or endpoint looks like
        return None


def _profile_metrics_port(profile: str) -> tuple[int, str]:
    """``(QR_METRICS_PORT, QR_METRICS_HOST)`` of the profile the stack was started from."""
    try:
        import os

        from qrs_cli.profiles.discovery import find_project
        from qrs_cli.profiles.sources import load_sources
        from qrs_cli.runtime.state import read_state

        state = read_state(profile)
        if state is None:
            return 0, ""
        values = load_sources(find_project(state.project_root), profile, dict(os.environ)).merged()
        return int(values.get("QR_METRICS_PORT") or 0), values.get("QR_METRICS_HOST") or "127.0.0.1"
    except Exception:
        return 0, ""
