"""The ``qr_sampler_*`` series on a port of their own: real prometheus_client, scraped over HTTP.

Every test scrapes ``http://127.0.0.1:<free port>/metrics`` and parses the exposition text with
prometheus_client's own parser, so what is checked is what Prometheus would read. The
multiprocess path (vLLM's ``/metrics``) is in ``test_metrics_multiprocess.py``.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from qr_sampler import metrics as metrics_module
from qr_sampler.metrics import (
    BREAKER_STATES,
    FALLBACK_KINDS,
    MAX_SOURCES,
    SamplerMetrics,
    start_metrics,
)
from qr_sampler.settings import Settings, SettingsError, settings_from_mapping
from tests.sampler.metrics_scrape import free_port, sample, scrape, series_named


@pytest.fixture(autouse=True)
def _fresh_process_metrics(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No multiprocess directory from the caller's shell; no instance left between tests."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics_module._reset_for_tests()
    yield
    metrics_module._reset_for_tests()


def settings(**values: Any) -> Settings:
    return settings_from_mapping({f"QR_{k.upper()}": v for k, v in values.items()})


def step(m: SamplerMetrics, **fields: Any) -> None:
    args: dict[str, Any] = {
        "tokens_by_source": {},
        "fallback_kind": "",
        "fallback_tokens": 0,
        "left_to_vllm": 0,
        "bytes_fetched": 0,
        "fetch_latency_s": None,
    }
    args.update(fields)
    m.on_step(**args)


def test_each_step_figure_reaches_its_series() -> None:
    port = free_port()
    m = start_metrics(settings(metrics_port=port, entropy_source_type="system"), dict)
    assert (m.enabled, m.port, m.error) == (True, port, "")
    step(
        m,
        tokens_by_source={"system": 30, "none": 2},
        bytes_fetched=30 * 20480,
        fetch_latency_s=0.0004,
    )
    step(
        m,
        tokens_by_source={"system": 4},
        fallback_kind="timeout",
        fallback_tokens=4,
        bytes_fetched=4 * 20480,
        fetch_latency_s=0.25,
    )
    step(m, tokens_by_source={"vllm": 3}, left_to_vllm=3)

    got = scrape(port)
    assert sample(got, "qr_sampler_tokens_total", source="system") == 34
    assert sample(got, "qr_sampler_tokens_total", source="none") == 2
    assert sample(got, "qr_sampler_tokens_total", source="vllm") == 3
    assert sample(got, "qr_sampler_fallbacks_total", kind="timeout") == 1
    assert sample(got, "qr_sampler_fallback_tokens_total", kind="timeout") == 4
    for kind in FALLBACK_KINDS:  # every kind is a series from the start (rate() needs zeros)
        if kind != "timeout":
            assert sample(got, "qr_sampler_fallbacks_total", kind=kind) == 0
    assert sample(got, "qr_sampler_rows_left_to_vllm_total") == 3
    assert sample(got, "qr_sampler_fetched_bytes_total") == 34 * 20480
    # Histogram: 0.4 ms falls in le=0.0005, 250 ms in le=0.25 (le is inclusive).
    assert sample(got, "qr_sampler_fetch_latency_seconds_count") == 2
    assert sample(got, "qr_sampler_fetch_latency_seconds_sum") == pytest.approx(0.2504)
    assert sample(got, "qr_sampler_fetch_latency_seconds_bucket", le="0.00025") == 0
    assert sample(got, "qr_sampler_fetch_latency_seconds_bucket", le="0.0005") == 1
    assert sample(got, "qr_sampler_fetch_latency_seconds_bucket", le="0.1") == 1
    assert sample(got, "qr_sampler_fetch_latency_seconds_bucket", le="0.25") == 2
    assert sample(got, "qr_sampler_fetch_latency_seconds_bucket", le="+Inf") == 2


def test_counts_accumulate_across_scrapes_without_double_counting() -> None:
    port = free_port()
    m = start_metrics(settings(metrics_port=port), dict)
    step(m, tokens_by_source={"system": 5}, fetch_latency_s=0.001)
    assert sample(scrape(port), "qr_sampler_tokens_total", source="system") == 5
    assert sample(scrape(port), "qr_sampler_tokens_total", source="system") == 5
    step(m, tokens_by_source={"system": 7}, fetch_latency_s=20.0)  # beyond the last bound
    got = scrape(port)
    assert sample(got, "qr_sampler_tokens_total", source="system") == 12
    assert sample(got, "qr_sampler_fetch_latency_seconds_bucket", le="10.0") == 1
    assert sample(got, "qr_sampler_fetch_latency_seconds_bucket", le="+Inf") == 2


def test_health_is_read_at_scrape_time() -> None:
    status: dict[str, Any] = {
        "circuit": "closed",
        "quota_calls_left": 50,
        "quota_bytes_left_today": 10_000,
        "health_test_failures": 0,
        "times_opened": 0,
    }
    port = free_port()
    start_metrics(settings(metrics_port=port), lambda: status)
    got = scrape(port)
    assert {
        s: sample(got, "qr_sampler_circuit_breaker_state", state=s) for s in BREAKER_STATES
    } == {"closed": 1, "open": 0, "half_open": 0, "disabled": 0}
    assert sample(got, "qr_sampler_quota_remaining_calls") == 50
    assert sample(got, "qr_sampler_quota_remaining_bytes") == 10_000
    assert sample(got, "qr_sampler_health_test_failures_total") == 0

    status.update(circuit="open", quota_calls_left=0, health_test_failures=3, times_opened=1)
    got = scrape(port)
    assert sample(got, "qr_sampler_circuit_breaker_state", state="open") == 1
    assert sample(got, "qr_sampler_circuit_breaker_state", state="closed") == 0
    assert sample(got, "qr_sampler_quota_remaining_calls") == 0
    assert sample(got, "qr_sampler_health_test_failures_total") == 3
    assert sample(got, "qr_sampler_circuit_breaker_opens_total") == 1

    status["health_test_failures"] = 1  # a new source counts from zero: the counter never drops
    assert sample(scrape(port), "qr_sampler_health_test_failures_total") == 4


@pytest.mark.parametrize(
    "status",
    [
        {},  # a third-party source's base health()
        {"source": "x", "healthy": True, "experimental": False},
        {
            "circuit": "sideways",
            "quota_calls_left": None,
            "quota_bytes_left_today": "12",
            "health_test_failures": True,
        },
    ],
)
def test_missing_or_unusable_health_keys_are_left_out(status: Mapping[str, Any]) -> None:
    port = free_port()
    m = start_metrics(settings(metrics_port=port), lambda: status)
    step(m, tokens_by_source={"system": 1})
    got = scrape(port)
    assert sample(got, "qr_sampler_tokens_total", source="system") == 1
    for name in (
        "qr_sampler_circuit_breaker_state",
        "qr_sampler_quota_remaining_calls",
        "qr_sampler_quota_remaining_bytes",
        "qr_sampler_health_test_failures_total",
    ):
        assert not series_named(got, name), name


def test_a_failing_health_callback_is_logged_once_and_the_scrape_still_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> Mapping[str, Any]:
        raise RuntimeError("source gone")

    port = free_port()
    m = start_metrics(settings(metrics_port=port), broken)
    step(m, tokens_by_source={"system": 2})
    with caplog.at_level(logging.ERROR, logger="qr_sampler.metrics"):
        for _ in range(3):
            assert sample(scrape(port), "qr_sampler_tokens_total", source="system") == 2
    assert [r.getMessage() for r in caplog.records if "health()" in r.getMessage()] == [
        "qr_sampler metrics: the entropy source's health() failed: RuntimeError('source gone')"
    ]


def test_a_taken_port_is_logged_once_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="qr_sampler.metrics"):
            m = start_metrics(settings(metrics_port=port), dict)
        assert m.port == 0
        assert f"cannot serve metrics on 127.0.0.1:{port}" in m.error
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "PROMETHEUS_MULTIPROC_DIR" in warnings[0].getMessage()
        step(m, tokens_by_source={"system": 1}, fetch_latency_s=0.01)  # still counts, no raise
        m.flush()


def test_off_by_default_and_on_step_does_nothing() -> None:
    m = start_metrics(Settings(), dict)
    assert not m.enabled and m.port == 0
    step(m, tokens_by_source={"system": 3}, fetch_latency_s=0.1)
    assert list(m.registry.collect()) == []


def test_start_metrics_is_once_per_process_and_keeps_the_newest_health() -> None:
    port = free_port()
    first = start_metrics(settings(metrics_port=port), lambda: {"circuit": "closed"})
    second = start_metrics(settings(metrics_port=free_port()), lambda: {"circuit": "open"})
    assert second is first and first.port == port
    assert sample(scrape(port), "qr_sampler_circuit_breaker_state", state="open") == 1


def test_source_labels_are_bounded_and_no_token_is_lost() -> None:
    port = free_port()
    m = start_metrics(settings(metrics_port=port), dict)
    for i in range(3 * MAX_SOURCES):
        step(m, tokens_by_source={f"plugin-{i}": 1, "system": 1})
    step(m, tokens_by_source={f"plugin-{3 * MAX_SOURCES - 1}": 10})  # an overflowed name again
    tokens = series_named(scrape(port), "qr_sampler_tokens_total")
    assert len(tokens) <= MAX_SOURCES + 1
    assert sum(tokens.values()) == 3 * MAX_SOURCES * 2 + 10
    assert tokens[(("source", "system"),)] == 3 * MAX_SOURCES


def test_unknown_fallback_kinds_are_counted_as_other() -> None:
    port = free_port()
    m = start_metrics(settings(metrics_port=port), dict)
    step(m, fallback_kind="cosmic_ray", fallback_tokens=2)
    got = scrape(port)
    assert sample(got, "qr_sampler_fallbacks_total", kind="other") == 1
    assert sample(got, "qr_sampler_fallback_tokens_total", kind="other") == 2
    assert len(series_named(got, "qr_sampler_fallbacks_total")) == len(FALLBACK_KINDS) + 1


def test_bad_figures_do_not_raise_into_the_engine(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    m = start_metrics(settings(metrics_port=port), dict)
    with caplog.at_level(logging.ERROR, logger="qr_sampler.metrics"):
        m.on_step(
            tokens_by_source={"system": "many"},
            fallback_kind="",
            fallback_tokens=0,  # type: ignore[dict-item]
            left_to_vllm=0,
            bytes_fetched=0,
            fetch_latency_s=None,
        )
        m.on_step(
            tokens_by_source={},
            fallback_kind="",
            fallback_tokens=0,
            left_to_vllm=0,
            bytes_fetched=0,
            fetch_latency_s="slow",
        )  # type: ignore[arg-type]
        step(m, tokens_by_source={"system": -5})  # a counter never goes down
    step(m, tokens_by_source={"system": 6})  # the failed steps counted nothing; -5 + 6 = 1
    assert sample(scrape(port), "qr_sampler_tokens_total", source="system") == 1
    assert len([r for r in caplog.records if "could not be counted" in r.getMessage()]) == 1


def test_the_fallback_kinds_are_the_entropy_error_kinds() -> None:
    from qr_sampler import errors

    kinds = getattr(errors, "ENTROPY_ERROR_KINDS", None)
    if kinds is None:
        pytest.skip("qr_sampler.errors has no ENTROPY_ERROR_KINDS yet")
    assert set(FALLBACK_KINDS) == set(kinds)


def test_the_metrics_port_setting_is_validated() -> None:
    with pytest.raises(SettingsError, match="QR_METRICS_PORT"):
        settings(metrics_port=70000)
    assert Settings().metrics_port == 0 and Settings().metrics_host == "127.0.0.1"


def test_importing_the_metrics_module_stays_light() -> None:
    code = (
        "import sys, qr_sampler.metrics; "
        "print(sorted(m for m in ('torch', 'vllm', 'grpc', 'jinja2', 'typer', 'rich') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
