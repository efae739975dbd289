"""The ``qr_sampler_*`` series as prometheus_client objects: names, help, labels, buckets.

Two groups. :class:`CountedSeries` holds what the engine step counts (tokens, fallbacks, bytes,
fetch latency); :class:`HealthSeries` holds what the entropy source's ``health()`` reports
(breaker state, quota left, health-test failures), created when a key first appears. Every
object lives outside any registry: one process may hold several sets (tests), the owner's
collector decides when they are read, and in prometheus multiprocess mode their values land in
the shared files regardless.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

PREFIX = "qr_sampler_"
#: The machine-readable fallback categories of ``EntropyBatch.fallback_kind`` (contract C1);
#: anything else is counted as ``other``.
FALLBACK_KINDS = (
    "unavailable",
    "timeout",
    "circuit_open",
    "rate_limit",
    "budget",
    "health_test",
    "echo_mismatch",
    "error",
)
#: States of the gRPC source's circuit breaker (``health()["circuit"]``).
BREAKER_STATES = ("closed", "open", "half_open", "disabled")
#: Most distinct ``source`` label values (``none`` and ``vllm`` included); names seen after that
#: are counted as ``other`` (one more value).
MAX_SOURCES = 16
OTHER = "other"
#: Fetch latency buckets (seconds): a loopback fetch takes ~0.1–1 ms, a remote QRNG 10–500 ms,
#: and the gRPC timeout caps a call at seconds.
LATENCY_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
KINDS = (*FALLBACK_KINDS, OTHER)
KIND_INDEX = {kind: i for i, kind in enumerate(KINDS)}


class CountedSeries:
    """What the engine step counts. Every fallback kind exists from the start at zero, so
    ``rate()`` and alerts see a series before the first failure."""

    def __init__(self) -> None:
        self.token_family = Counter(
            PREFIX + "tokens", "Tokens by where their entropy came from (none: greedy, "
            "vllm: left to vLLM's sampler).", ["source"], registry=None,
        )  # fmt: skip
        self.fallbacks = Counter(
            PREFIX + "fallbacks", "Steps whose entropy fetch failed, by kind of failure.",
            ["kind"], registry=None,
        )  # fmt: skip
        self.fallback_tokens = Counter(
            PREFIX + "fallback_tokens",
            "Tokens whose step's fetch failed (served by the fallback source, or stopped), "
            "by kind of failure.", ["kind"], registry=None,
        )  # fmt: skip
        self.left = Counter(
            PREFIX + "rows_left_to_vllm",
            "Rows left to vLLM's own sampling because a step failed.", registry=None,
        )  # fmt: skip
        self.bytes = Counter(PREFIX + "fetched_bytes", "Entropy bytes fetched.", registry=None)
        self.latency = Histogram(
            PREFIX + "fetch_latency_seconds", "Duration of one step's entropy fetch.",
            buckets=LATENCY_BUCKETS_S, registry=None,
        )  # fmt: skip
        # A histogram has no public "add n observations"; its per-bucket values and sum are
        # stable attributes since prometheus_client 0.1 (a test pins them).
        buckets = getattr(self.latency, "_buckets", None)
        self._latency_ok = (
            isinstance(buckets, list)
            and len(buckets) == len(LATENCY_BUCKETS_S) + 1
            and hasattr(self.latency, "_sum")
        )
        self._token_children: dict[str, Counter] = {}
        for kind in KINDS:
            self.fallbacks.labels(kind)
            self.fallback_tokens.labels(kind)

    def tokens(self, source: str) -> Counter:
        child = self._token_children.get(source)
        if child is None:
            child = self._token_children[source] = self.token_family.labels(source)
        return child

    def add_latency(self, bucket_deltas: list[int], sum_delta: float) -> None:
        if not self._latency_ok:
            return
        if any(bucket_deltas):
            for value, delta in zip(self.latency._buckets, bucket_deltas, strict=True):
                if delta > 0:
                    value.inc(delta)
            self.latency._sum.inc(sum_delta)

    def metrics(self) -> list[Counter | Histogram]:
        return [self.token_family, self.fallbacks, self.fallback_tokens, self.left, self.bytes,
                self.latency]  # fmt: skip


class HealthSeries:
    """Series fed from the source's ``health()`` dict, created when their key first appears.

    Keys that are missing, None or not numbers are skipped (third-party sources report less).
    Counters read from ``health()`` (cumulative per source) advance by the difference to the
    previous reading, and restart from the new reading when it goes down (a new source).
    """

    def __init__(self) -> None:
        self._breaker: Gauge | None = None
        self._gauges: dict[str, Gauge] = {}
        self._counters: dict[str, Counter] = {}
        self._last: dict[str, int] = {}

    def metrics(self) -> list[Gauge | Counter]:
        out: list[Gauge | Counter] = [self._breaker] if self._breaker is not None else []
        return out + list(self._gauges.values()) + list(self._counters.values())

    def update(self, status: Mapping[str, Any]) -> None:
        state = status.get("circuit")
        if isinstance(state, str) and state in BREAKER_STATES:
            if self._breaker is None:
                self._breaker = Gauge(
                    PREFIX + "circuit_breaker_state",
                    "1 for the entropy source's current circuit-breaker state, 0 for the others.",
                    ["state"], registry=None, multiprocess_mode="liveall",
                )  # fmt: skip
            for name in BREAKER_STATES:
                self._breaker.labels(name).set(1.0 if name == state else 0.0)
        for key, name, text in _HEALTH_GAUGES:
            value = _number(status.get(key))
            if value is None:
                continue
            gauge = self._gauges.get(key)
            if gauge is None:
                # Quotas are shared by every process on the host: the newest reading wins.
                gauge = self._gauges[key] = Gauge(
                    PREFIX + name, text, registry=None, multiprocess_mode="livemostrecent"
                )
            gauge.set(value)
        for key, name, text in _HEALTH_COUNTERS:
            number = _number(status.get(key))
            if number is None:
                continue
            current = int(number)
            counter = self._counters.get(key)
            if counter is None:
                counter = self._counters[key] = Counter(PREFIX + name, text, registry=None)
            last = self._last.get(key, 0)
            delta = current - last if current >= last else current
            if delta > 0:
                counter.inc(delta)
            self._last[key] = current


#: (health() key, series name, help) of the gauges fed from health().
_HEALTH_GAUGES = (
    ("quota_calls_left", "quota_remaining_calls",
     "Calls left in the current rate-limit window (shared by the host's processes)."),
    ("quota_bytes_left_today", "quota_remaining_bytes",
     "Bytes left in today's entropy budget (UTC day, shared by the host's processes)."),
)  # fmt: skip
#: (health() key, series name without _total, help) of the counters fed from health().
_HEALTH_COUNTERS = (
    ("health_test_failures", "health_test_failures",
     "Online health tests the entropy source's bytes failed."),
    ("times_opened", "circuit_breaker_opens", "Times the circuit breaker opened."),
)  # fmt: skip


def add_delta(counter: Counter, delta: float) -> None:
    """Advance ``counter``; a negative difference (a caller's bad figure) is dropped, since a
    Prometheus counter only goes up."""
    if delta > 0:
        counter.inc(delta)


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (bools and None are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
