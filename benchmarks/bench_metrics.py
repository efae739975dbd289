"""Cost of the metrics on the engine's step: ``SamplerMetrics.on_step``, next to a baseline.

Contract C3 asks for under 5 µs per call. What is timed is the call the engine makes once per
step, with the figures of a typical step (32 rows from one source, 655,360 bytes, one fetch
latency) and of a failed step (fallback source, greedy rows, a fallback kind). Baseline: a
no-op method with the same keyword arguments, i.e. the cost of the call itself. Also shown:
the export side that runs off the step (one flush: what a scrape or the multiprocess refresher
does), in-process and with prometheus multiprocess files.

Run: ``python benchmarks/bench_metrics.py [--calls N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from qr_sampler.metrics import SamplerMetrics

TYPICAL: dict[str, Any] = {
    "tokens_by_source": {"quantum_grpc": 32},
    "fallback_kind": "",
    "fallback_tokens": 0,
    "left_to_vllm": 0,
    "bytes_fetched": 32 * 20_480,
    "fetch_latency_s": 0.00042,
}
FALLBACK: dict[str, Any] = {
    "tokens_by_source": {"system": 30, "none": 2},
    "fallback_kind": "timeout",
    "fallback_tokens": 30,
    "left_to_vllm": 0,
    "bytes_fetched": 30 * 20_480,
    "fetch_latency_s": 0.25,
}
HEALTH = {
    "circuit": "closed",
    "quota_calls_left": 55,
    "quota_bytes_left_today": 10**9,
    "health_test_failures": 0,
}


class _NoOp:
    def on_step(self, **_fields: Any) -> None:
        return None


def _per_call_us(call: Callable[..., None], fields: dict[str, Any], calls: int) -> float:
    """Best of 5 runs of ``calls`` calls, in µs per call (the least disturbed run)."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(calls):
            call(**fields)
        best = min(best, (time.perf_counter_ns() - start) / calls / 1000)
    return best


def _flush_us(metrics: SamplerMetrics, runs: int = 200) -> float:
    best = float("inf")
    for _ in range(runs):
        metrics.on_step(**TYPICAL)
        start = time.perf_counter_ns()
        metrics.flush()
        best = min(best, (time.perf_counter_ns() - start) / 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    metrics = SamplerMetrics(lambda: HEALTH, sources=("quantum_grpc", "system"))
    off = SamplerMetrics(enabled=False)
    baseline = _per_call_us(_NoOp().on_step, TYPICAL, args.calls)
    figures = {
        "baseline_noop_call_us": round(baseline, 3),
        "on_step_typical_us": round(_per_call_us(metrics.on_step, TYPICAL, args.calls), 3),
        "on_step_fallback_us": round(_per_call_us(metrics.on_step, FALLBACK, args.calls), 3),
        "on_step_metrics_off_us": round(_per_call_us(off.on_step, TYPICAL, args.calls), 3),
        "flush_in_process_us": round(_flush_us(metrics), 1),
    }
    with tempfile.TemporaryDirectory() as directory:
        # A fresh interpreter would pick file-backed values from the variable; switch here.
        from prometheus_client import values

        saved = values.ValueClass
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        try:
            shared = SamplerMetrics(
                lambda: HEALTH, sources=("quantum_grpc",), multiprocess_dir=directory
            )
            figures["on_step_multiprocess_us"] = round(
                _per_call_us(shared.on_step, TYPICAL, args.calls), 3
            )
            figures["flush_multiprocess_us"] = round(_flush_us(shared), 1)
        finally:
            values.ValueClass = saved
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    figures["ratio_typical_to_baseline"] = round(figures["on_step_typical_us"] / baseline, 2)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for name, value in figures.items():
        print(f"{name:28} {value}")


if __name__ == "__main__":
    main()
