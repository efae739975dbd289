"""``qrs status`` shows the sampler's key figures, read from real ``qr_sampler_*`` series.

The series come from :mod:`qr_sampler.metrics` itself, served on 127.0.0.1 by real
prometheus_client, so a renamed series or label breaks these tests, not just the parser's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qr_sampler import metrics as metrics_module
from qr_sampler.metrics import SamplerMetrics, start_metrics
from qr_sampler.settings import Settings
from qrs_cli.runtime.sampler_metrics import (
    SamplerFigures,
    metrics_urls,
    parse_sampler_figures,
    sampler_figures,
    scrape_sampler_figures,
)
from qrs_cli.runtime.state import StackState, write_state
from qrs_cli.runtime.types import ServiceStatus, StackStatus
from tests.cli.conftest import Outcome, write_profile
from tests.cli.runtime.conftest import free_port

STATUS = {
    "circuit": "open",
    "quota_calls_left": 58,
    "quota_bytes_left_today": 1_000_000,
    "health_test_failures": 2,
}


@pytest.fixture(autouse=True)
def _fresh_process_metrics(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics_module._reset_for_tests()
    yield
    metrics_module._reset_for_tests()


@pytest.fixture
def served() -> tuple[SamplerMetrics, int]:
    """An engine's metrics on a free loopback port, after a few steps."""
    port = free_port()
    m = start_metrics(Settings(metrics_port=port, entropy_source_type="system"), lambda: STATUS)
    common: dict[str, Any] = {"left_to_vllm": 0, "bytes_fetched": 0}
    for _ in range(19):
        m.on_step(
            tokens_by_source={"system": 10},
            fallback_kind="",
            fallback_tokens=0,
            fetch_latency_s=0.0004,
            **common,
        )
    m.on_step(
        tokens_by_source={"mock_uniform": 10, "none": 2},
        fallback_kind="timeout",
        fallback_tokens=10,
        fetch_latency_s=0.2,
        **common,
    )
    m.on_step(
        tokens_by_source={"vllm": 3},
        fallback_kind="",
        fallback_tokens=0,
        fetch_latency_s=None,
        left_to_vllm=3,
        bytes_fetched=0,
    )
    return m, port


def running(profile: str, endpoint: str) -> StackStatus:
    service = ServiceStatus("vllm", "running", "healthy", pid=1, ports=(8000,))
    return StackStatus(profile, "native", time.time(), endpoint, "tiny", (service,), "/tmp/x")


def test_the_figures_of_a_served_engine(served: tuple[SamplerMetrics, int]) -> None:
    _m, port = served
    url = f"http://127.0.0.1:{port}/metrics"
    figures = scrape_sampler_figures(["http://127.0.0.1:1/metrics", url])  # first one refuses
    assert figures == SamplerFigures(
        url=url,
        tokens_by_source={"system": 190, "mock_uniform": 10, "none": 2, "vllm": 3},
        fallbacks_by_kind={"timeout": 1},
        fallback_tokens=10,
        left_to_vllm=3,
        fetched_bytes=0,
        fetches=20,
        fetch_latency_mean_ms=pytest.approx((19 * 0.4 + 200) / 20, abs=1e-3),
        fetch_latency_p95_le_ms=0.5,  # 19 of 20 fetches (95 %) are within 0.5 ms
        breaker_states=("open",),
        quota_remaining_calls=58,
        quota_remaining_bytes=1_000_000,
        health_test_failures=2,
    )
    line = figures.summary()
    assert line.startswith("205 tokens (mock_uniform 10, none 2, system 190, vllm 3)")
    for part in (
        "fallbacks 1 (timeout 1)",
        "left to vLLM 3",
        "breaker open",
        "p95 ≤ 0.5 ms",
        "quota left 58 calls, 1,000,000 bytes today",
        "health-test failures 2",
    ):
        assert part in line


def test_per_process_breakers_and_text_without_the_series() -> None:
    text = (
        "# TYPE qr_sampler_circuit_breaker_state gauge\n"
        'qr_sampler_circuit_breaker_state{pid="20",state="open"} 1.0\n'
        'qr_sampler_circuit_breaker_state{pid="10",state="closed"} 1.0\n'
        'qr_sampler_circuit_breaker_state{pid="10",state="open"} 0.0\n'
    )
    figures = parse_sampler_figures(text, "u")
    assert figures is not None and figures.breaker_states == ("closed", "open")
    assert figures.tokens == 0 and figures.fetch_latency_mean_ms is None
    assert (
        parse_sampler_figures(
            "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0.0\n"
        )
        is None
    )
    assert parse_sampler_figures("<html>not prometheus</html>{") is None


def test_a_stack_that_is_down_or_silent_has_no_figures() -> None:
    assert sampler_figures(running("nothing", f"http://127.0.0.1:{free_port()}")) is None
    stopped = StackStatus(
        "p",
        "native",
        time.time(),
        "http://127.0.0.1:1",
        "m",
        (ServiceStatus("vllm", "exited", "stopped"),),
        "/tmp/x",
    )
    assert sampler_figures(stopped) is None


def test_the_profiles_own_metrics_port_is_tried_after_vllms_endpoint(
    tmp_path: Path, served: tuple[SamplerMetrics, int]
) -> None:
    _m, port = served
    root = tmp_path / "project"
    (root / "deployments").mkdir(parents=True)
    (root / "deployments" / "compose.yaml").write_text("services: {}\n", encoding="utf-8")
    write_profile(root, "lab", f"QR_METRICS_PORT={port}\n")
    write_state(
        StackState(profile="lab", runtime="native", started_at=time.time(), project_root=str(root))
    )
    silent_vllm = f"http://127.0.0.1:{free_port()}"
    stack = running("lab", silent_vllm)
    assert metrics_urls(stack) == [f"{silent_vllm}/metrics", f"http://127.0.0.1:{port}/metrics"]
    found = sampler_figures(stack)
    assert found is not None and found.tokens == 205


def test_status_prints_and_reports_the_figures(
    served: tuple[SamplerMetrics, int],
    monkeypatch: pytest.MonkeyPatch,
    qrs: Callable[..., Outcome],
) -> None:
    """vLLM's endpoint serves the series (multiprocess mode): its /metrics is our port here."""
    _m, port = served
    import qrs_cli.runtime

    stack = running("lab", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(qrs_cli.runtime, "stack_status", lambda profile=None: [stack])
    text = qrs("status")
    assert text.code == 0, text
    (line,) = [ln for ln in text.out.splitlines() if "sampler:" in ln]
    assert "205 tokens" in line and "breaker open" in line and f":{port}/metrics" in line
    data = json.loads(qrs("status", "--json").out)
    sampler = data["stacks"][0]["sampler"]
    assert sampler["tokens"] == 205 and sampler["fallbacks_by_kind"] == {"timeout": 1}
    assert sampler["quota_remaining_calls"] == 58
