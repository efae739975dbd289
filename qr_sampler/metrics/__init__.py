"""Prometheus metrics of the sampler: the ``qr_sampler_*`` series, counted in the engine process.

Why this module decides *where* the series go: our logits processor runs in vLLM's engine-core
(or worker) process, while vLLM serves ``/metrics`` from its API-server process, out of that
process's prometheus_client registry (``vllm/entrypoints/serve/instrumentator/metrics.py``,
``attach_router``). The processes share no registry; vLLM's own engine statistics travel to
the API server over ZMQ and become series there (``PrometheusStatLogger``,
``vllm/v1/metrics/loggers.py``), a channel a plugin cannot use.

The one bridge vLLM has is prometheus_client's *multiprocess mode*: when
``PROMETHEUS_MULTIPROC_DIR`` is set, every process writes its metric values to memory-mapped
files in that directory and ``get_prometheus_registry()`` (``vllm/v1/metrics/prometheus.py``)
makes ``/metrics`` read all of them. vLLM sets the variable itself only when it runs more than
one API server (``setup_multiprocess_prometheus``, called by ``run_multi_api_server``, e.g. the
data-parallel default); an operator may set it for any launch. So:

- ``PROMETHEUS_MULTIPROC_DIR`` set → our series go to those files and appear on vLLM's own
  ``/metrics``, summed over the server's engine processes (counters, histogram); the breaker
  state keeps one series per live process (label ``pid``). A background thread writes them
  every :data:`REFRESH_INTERVAL_S`, because vLLM scrapes from another process.
- ``QR_METRICS_PORT`` ≠ 0 → this process also serves its series at
  ``http://QR_METRICS_HOST:QR_METRICS_PORT/metrics`` (127.0.0.1 by default), current at each
  scrape. One port serves one process: with several engine processes (data parallel) the
  first one serves, the others log once and carry on; multiprocess mode covers them all.
- neither → metrics are off and :meth:`SamplerMetrics.on_step` returns at once.

Invariants: nothing here raises into the engine (``start_metrics``, ``on_step`` and the scrape
callbacks contain their errors and log each kind once). Every label has a bounded set of values
(:data:`FALLBACK_KINDS`, :data:`BREAKER_STATES`, at most :data:`MAX_SOURCES` source names, then
``other``). ``on_step`` touches only plain Python numbers owned by the engine thread (one
writer, no lock); exporting copies them into prometheus_client objects, under a lock, outside
the step: at scrape time, or on the refresher thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import TYPE_CHECKING

from qr_sampler.metrics._sampler import (
    MULTIPROC_ENV,
    REFRESH_INTERVAL_S,
    HealthCallback,
    SamplerMetrics,
)
from qr_sampler.metrics._series import (
    BREAKER_STATES,
    FALLBACK_KINDS,
    LATENCY_BUCKETS_S,
    MAX_SOURCES,
    PREFIX,
)

if TYPE_CHECKING:
    from qr_sampler.settings import Settings

logger = logging.getLogger("qr_sampler.metrics")


def _multiprocess_dir() -> tuple[str, str]:
    """``(directory, problem)`` of prometheus multiprocess mode in this process.

    prometheus_client picks in-process or file-backed values when it is first imported. A
    process forked from one that imported it before the variable was set (vLLM's own
    multi-API-server set-up with the fork start method, the GPU default) keeps in-process
    values, and its series would never reach the files: switch it to file-backed values, as a
    freshly started process would have done.
    """
    directory = os.environ.get(MULTIPROC_ENV, "")
    if not directory:
        return "", ""
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        return "", f"{MULTIPROC_ENV}={directory} is not a writable directory"
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return directory, ""


class _ProcessMetrics:
    """The process-wide instance behind :func:`start_metrics`."""

    active: SamplerMetrics | None = None
    lock = threading.Lock()


def start_metrics(settings: Settings, health: HealthCallback) -> SamplerMetrics:
    """The ``qr_sampler_*`` series of this process, exported as the module docstring says.

    Call once per engine process that draws entropy; a later call returns the same object
    with ``health`` replaced (the newest source is the live one), because two sets of series
    in one process would overwrite each other's multiprocess files. Never raises: a problem is
    logged once and leaves a :class:`SamplerMetrics` that counts without exporting, or is off.
    """
    with _ProcessMetrics.lock:
        active = _ProcessMetrics.active
        if active is not None:
            active.health = health
            return active
        try:
            metrics = _start(settings, health)
        except Exception as exc:
            logger.error("qr_sampler metrics: off, could not start: %r", exc)
            metrics = SamplerMetrics(health, enabled=False)
            metrics.error = f"could not start: {exc!r}"
        _ProcessMetrics.active = metrics
        return metrics


def _start(settings: Settings, health: HealthCallback) -> SamplerMetrics:
    port, host = settings.metrics_port, settings.metrics_host
    directory, problem = _multiprocess_dir()
    if problem:
        logger.warning("qr_sampler metrics: not on vLLM's /metrics: %s", problem)
    if not directory and port == 0:
        metrics = SamplerMetrics(health, enabled=False)
        metrics.error = problem
        return metrics
    sources = [settings.entropy_source_type]
    if settings.fallback_mode != "error":
        sources.append(settings.fallback_mode)
    metrics = SamplerMetrics(health, sources=tuple(sources), multiprocess_dir=directory)
    metrics.error = problem
    if directory:
        metrics.start_refresher()
        atexit.register(metrics.close)
        logger.info("qr_sampler metrics on vLLM's /metrics (%s=%s)", MULTIPROC_ENV, directory)
    metrics.serve(port, host)
    return metrics


def _reset_for_tests() -> None:
    """Close and forget the process-wide instance; tests start several in one process."""
    with _ProcessMetrics.lock:
        if _ProcessMetrics.active is not None:
            _ProcessMetrics.active.close()
        _ProcessMetrics.active = None


__all__ = [
    "BREAKER_STATES",
    "FALLBACK_KINDS",
    "LATENCY_BUCKETS_S",
    "MAX_SOURCES",
    "MULTIPROC_ENV",
    "PREFIX",
    "REFRESH_INTERVAL_S",
    "HealthCallback",
    "SamplerMetrics",
    "start_metrics",
]
