"""The engine process's counts and their exports: :class:`SamplerMetrics`.

``on_step`` (the engine thread, once per step) adds to plain Python numbers: no lock, no
prometheus_client call, a few hundred nanoseconds. ``flush`` (a scrape of the port, or the
refresher thread in multiprocess mode) adds the difference since the last flush to the
prometheus_client series, under a lock the step never takes, and re-reads ``health()``.
The engine thread is the only writer of the plain numbers and flushes only read them, so no
count is lost without a lock.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from qr_sampler.metrics._series import (
    KIND_INDEX,
    KINDS,
    LATENCY_BUCKETS_S,
    MAX_SOURCES,
    OTHER,
    CountedSeries,
    HealthSeries,
    add_delta,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

logger = logging.getLogger("qr_sampler.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How often the multiprocess export writes the counts and re-reads ``health()``.
REFRESH_INTERVAL_S = 2.0

HealthCallback = Callable[[], Mapping[str, Any]]


class SamplerMetrics:
    """The ``qr_sampler_*`` series of one engine process, and where they are exported.

    Create it with :func:`start_metrics`. Attributes for callers and status displays:
    ``enabled`` (something exports the series), ``port`` (the port being served, 0 when none),
    ``multiprocess_dir`` (the directory vLLM's ``/metrics`` reads, '' when not in that mode),
    ``error`` (why an export could not start, '' when none).

    Assumption: ``on_step`` is called from one thread (the engine's). Guarantee: no method
    raises.
    """

    def __init__(
        self,
        health: HealthCallback | None = None,
        *,
        sources: tuple[str, ...] = (),
        multiprocess_dir: str = "",
        enabled: bool = True,
    ) -> None:
        self.health = health
        self.enabled = enabled
        self.port = 0
        self.multiprocess_dir = multiprocess_dir
        self.error = ""
        self.registry = CollectorRegistry()
        self._logged: set[str] = set()
        self._lock = threading.Lock()  # exports only; never taken by on_step
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._httpd: Any = None
        # Written by on_step only (plain numbers; read by flush()).
        self._tokens: dict[str, int] = {}
        self._overflow: set[str] = set()  # names past MAX_SOURCES, counted as OTHER
        self._fallback_steps = [0] * len(KINDS)
        self._fallback_tokens = [0] * len(KINDS)
        self._left = 0
        self._bytes = 0
        self._latency_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)  # the last one is +Inf
        self._latency_sum = 0.0
        if not enabled:
            return
        for name in (*sources, "none", "vllm"):
            self._tokens.setdefault(name, 0)
        self._series = CountedSeries()
        self._flushed = _Snapshot(len(KINDS), len(self._latency_counts))
        self._health_series = HealthSeries()
        with self._lock:
            self._flush()
        self.registry.register(_SamplerCollector(self))

    # --- the hot path -------------------------------------------------------------------------

    def on_step(
        self,
        *,
        tokens_by_source: Mapping[str, int],
        fallback_kind: str,
        fallback_tokens: int,
        left_to_vllm: int,
        bytes_fetched: int,
        fetch_latency_s: float | None,
    ) -> None:
        """Count one engine step: a few additions to plain numbers; never raises.

        ``tokens_by_source`` maps a source name (``none`` for greedy rows, ``vllm`` for rows
        left to vLLM) to its tokens this step; ``fallback_kind`` is '' when the fetch did not
        fail; ``fetch_latency_s`` is None when the step fetched nothing.
        """
        if not self.enabled:
            return
        try:
            tokens = self._tokens
            for source, count in tokens_by_source.items():
                if source in tokens:
                    tokens[source] += count
                else:
                    self._add_source(source, count)
                    tokens = self._tokens  # the copy that now holds the new name
            if fallback_kind:
                i = KIND_INDEX.get(fallback_kind, -1)  # -1: OTHER, the last slot
                self._fallback_steps[i] += 1
                self._fallback_tokens[i] += fallback_tokens
            self._left += left_to_vllm
            self._bytes += bytes_fetched
            if fetch_latency_s is not None:
                # bisect_left: the first bound ≥ the value, i.e. Prometheus' "le" bucket.
                self._latency_counts[bisect.bisect_left(LATENCY_BUCKETS_S, fetch_latency_s)] += 1
                self._latency_sum += fetch_latency_s
        except Exception as exc:  # a bad figure must not cost the engine its step
            self._log_once("on_step", f"a step could not be counted: {exc!r}")

    def _add_source(self, source: str, count: int) -> None:
        """A source name not yet counted; past MAX_SOURCES names it counts as ``other``.

        Copy-on-write when a name is added: the exporter may be copying the old dict.
        """
        if source in self._overflow:
            self._tokens[OTHER] += count
            return
        tokens = dict(self._tokens)
        if len(tokens) >= MAX_SOURCES:
            self._overflow.add(source)
            source = OTHER
        tokens[source] = tokens.get(source, 0) + count
        self._tokens = tokens

    # --- export -------------------------------------------------------------------------------

    def flush(self) -> None:
        """Copy the counts into the exported series and re-read ``health()``. Never raises."""
        if not self.enabled:
            return
        with self._lock:
            try:
                self._flush()
            except Exception as exc:
                self._log_once("flush", f"counts could not be exported: {exc!r}")
            status = self._read_health()
            if status is not None:
                try:
                    self._health_series.update(status)
                except Exception as exc:
                    self._log_once("gauges", f"health figures could not be exported: {exc!r}")

    def _flush(self) -> None:
        """Add what on_step counted since the last flush (caller holds the lock)."""
        done, export = self._flushed, self._series
        for source, count in dict(self._tokens).items():
            add_delta(export.tokens(source), count - done.tokens.get(source, 0))
            done.tokens[source] = count
        for i, kind in enumerate(KINDS):
            steps, tokens = self._fallback_steps[i], self._fallback_tokens[i]
            add_delta(export.fallbacks.labels(kind), steps - done.fallback_steps[i])
            add_delta(export.fallback_tokens.labels(kind), tokens - done.fallback_tokens[i])
            done.fallback_steps[i], done.fallback_tokens[i] = steps, tokens
        left, fetched = self._left, self._bytes
        add_delta(export.left, left - done.left)
        add_delta(export.bytes, fetched - done.bytes)
        done.left, done.bytes = left, fetched
        counts, total = list(self._latency_counts), self._latency_sum
        export.add_latency([c - d for c, d in zip(counts, done.latency, strict=True)],
                           total - done.latency_sum)  # fmt: skip
        done.latency, done.latency_sum = counts, total

    def _read_health(self) -> Mapping[str, Any] | None:
        if self.health is None:
            return None
        try:
            status = self.health()
        except Exception as exc:
            self._log_once("health", f"the entropy source's health() failed: {exc!r}")
            return None
        return status if isinstance(status, Mapping) else None

    def collect(self) -> Iterator[Metric]:
        """Every series, current as of this call (the port's scrape calls this)."""
        self.flush()
        with self._lock:
            metrics = [*self._series.metrics(), *self._health_series.metrics()]
        for metric in metrics:
            yield from metric.collect()

    def serve(self, port: int, host: str) -> None:
        """Serve this process's series on ``host:port``; on failure log once and set ``error``."""
        if not self.enabled or port == 0:
            return
        from prometheus_client import start_http_server

        try:
            self._httpd, _thread = start_http_server(port, addr=host, registry=self.registry)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            self.error = f"cannot serve metrics on {host}:{port}: {reason}"
            self._log_once(
                "serve",
                f"{self.error}; this engine process (pid {os.getpid()}) keeps counting but "
                "its series are not served there. With several engine processes on one host, "
                f"set {MULTIPROC_ENV} to get all of them on vLLM's /metrics.",
                level=logging.WARNING,
            )
            return
        self.port = int(self._httpd.server_address[1])
        logger.info("qr_sampler metrics at http://%s:%d/metrics", host, self.port)

    def start_refresher(self, interval_s: float | None = None) -> None:
        """Multiprocess mode: keep the shared files current for vLLM's scrapes."""
        interval_s = REFRESH_INTERVAL_S if interval_s is None else interval_s
        self.flush()

        def loop() -> None:
            while not self._stop.wait(interval_s):
                self.flush()

        thread = threading.Thread(target=loop, name="qr-sampler-metrics", daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        """Write the last counts, stop serving and refreshing, drop this process's live
        gauges (a dead engine's breaker state must not linger on /metrics). Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self.flush()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            try:
                httpd.shutdown()
                httpd.server_close()
            except Exception as exc:
                self._log_once("close", f"metrics server did not stop cleanly: {exc!r}")
        for thread in self._threads:
            thread.join(timeout=REFRESH_INTERVAL_S + 1)
        self._threads.clear()
        if self.multiprocess_dir:
            _mark_dead(self.multiprocess_dir)

    def _log_once(self, kind: str, message: str, level: int = logging.ERROR) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            logger.log(level, "qr_sampler metrics: %s", message)


class _SamplerCollector(Collector):
    """The registry's one entry: flushes, then yields every series (no ordering assumptions)."""

    def __init__(self, owner: SamplerMetrics) -> None:
        self._owner = owner

    def describe(self) -> list[Metric]:
        return []  # the health-fed names depend on what health() reports

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._owner.collect()
        except Exception as exc:  # a scrape must not fail on us
            self._owner._log_once("collect", f"series could not be collected: {exc!r}")


class _Snapshot:
    """What has been exported so far, so each flush adds only the difference."""

    def __init__(self, kinds: int, buckets: int) -> None:
        self.tokens: dict[str, int] = {}
        self.fallback_steps = [0] * kinds
        self.fallback_tokens = [0] * kinds
        self.left = 0
        self.bytes = 0
        self.latency = [0] * buckets
        self.latency_sum = 0.0


def _mark_dead(directory: str) -> None:
    """Remove this process's live-gauge files from the multiprocess directory."""
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]
    except Exception as exc:  # best effort at shutdown
        logger.debug("qr_sampler metrics: could not mark pid dead: %r", exc)
