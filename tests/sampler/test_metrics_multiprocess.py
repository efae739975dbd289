"""The multiprocess path: series from several engine processes in one PROMETHEUS_MULTIPROC_DIR.

This is how the series reach vLLM's own ``/metrics``: vLLM's API server reads that directory
with prometheus_client's ``MultiProcessCollector`` (``vllm/v1/metrics/prometheus.py``). Here
the test process plays the API server: it serves a registry with that collector on 127.0.0.1
and scrapes it over HTTP, while real child processes play the engines.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from qr_sampler import metrics as metrics_module
from qr_sampler.metrics import start_metrics
from qr_sampler.settings import Settings
from tests.conftest import REPO_ROOT
from tests.sampler.metrics_scrape import Samples, free_port, sample, scrape, series_named

WAIT_S = 60.0


@pytest.fixture(autouse=True)
def _fresh_process_metrics(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics_module._reset_for_tests()
    yield
    metrics_module._reset_for_tests()


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A directory and a port serving what prometheus_client's multiprocess collector reads."""
    directory = tmp_path / "prom"
    directory.mkdir()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    port = free_port()
    httpd, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield directory, port
    finally:
        httpd.shutdown()
        httpd.server_close()


class Engine:
    """One ``tests.sampler.metrics_child`` process."""

    def __init__(self, directory: Path, *args: str, late_env: bool = False) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        if late_env:
            args = (*args, "--late-env", str(directory))
        else:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.sampler.metrics_child", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        line = _read_line(self.proc, WAIT_S)
        assert line.startswith("ready "), f"child said {line!r}; stderr: {self.stderr()}"
        _, pid, exported_to = line.split()
        self.pid = int(pid)
        assert exported_to == str(directory)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=WAIT_S)
        assert self.proc.returncode == 0, self.stderr()

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_S)


def _read_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The child's first stdout line, or '' after ``timeout_s`` (the test then fails)."""
    got: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return got[0].strip() if got else ""


def scrape_until(port: int, done: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``done`` holds (the children's refresher writes every 50 ms), bounded."""
    deadline = time.monotonic() + WAIT_S
    while True:
        got = scrape(port)
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def tokens(got: Samples, source: str) -> float:
    return series_named(got, "qr_sampler_tokens_total").get((("source", source),), 0.0)


def test_two_engine_processes_add_up_on_one_metrics_endpoint(
    api_server: tuple[Path, int],
) -> None:
    directory, port = api_server
    engines = [
        Engine(directory, "quantum_grpc", "10", "closed", "100"),
        Engine(directory, "quantum_grpc", "20", "open", "90"),
    ]
    try:
        got = scrape_until(port, lambda g: tokens(g, "quantum_grpc") == 30)
        # Counters and the histogram are summed over the processes.
        assert tokens(got, "quantum_grpc") == 30
        assert sample(got, "qr_sampler_fetched_bytes_total") == 3000
        assert sample(got, "qr_sampler_fetch_latency_seconds_count") == 2
        assert sample(got, "qr_sampler_fetch_latency_seconds_bucket", le="0.0025") == 2
        # The breaker state stays per process: one series per live pid.
        breaker = series_named(got, "qr_sampler_circuit_breaker_state")
        a, b = (str(e.pid) for e in engines)
        assert breaker[(("pid", a), ("state", "closed"))] == 1
        assert breaker[(("pid", b), ("state", "open"))] == 1
        assert breaker[(("pid", b), ("state", "closed"))] == 0
        # The quota is the host's: one value, the newest either process wrote.
        assert sample(got, "qr_sampler_quota_remaining_calls") in (90, 100)

        engines[0].stop()  # a stopped engine's state leaves; its counts stay in the totals
        got = scrape_until(
            port,
            lambda g: (
                not any(
                    ("pid", a) in k for k in series_named(g, "qr_sampler_circuit_breaker_state")
                )
            ),
        )
        states = series_named(got, "qr_sampler_circuit_breaker_state")
        assert {dict(k)["pid"] for k in states} == {b}
        assert tokens(got, "quantum_grpc") == 30
    finally:
        for engine in engines:
            engine.kill()


def test_a_process_that_imported_prometheus_client_before_the_variable_still_exports(
    api_server: tuple[Path, int],
) -> None:
    """vLLM sets PROMETHEUS_MULTIPROC_DIR after importing prometheus_client when it starts
    several API servers; engines forked from it would keep in-process values."""
    directory, port = api_server
    engine = Engine(directory, "system", "7", "closed", "5", late_env=True)
    try:
        engine.stop()  # close() writes the last counts
        assert tokens(scrape(port), "system") == 7
    finally:
        engine.kill()


def test_an_unusable_directory_is_logged_and_the_port_still_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    port = free_port()
    with caplog.at_level(logging.WARNING, logger="qr_sampler.metrics"):
        m = start_metrics(Settings(metrics_port=port), dict)
    assert m.multiprocess_dir == "" and "is not a writable directory" in m.error
    assert any("not on vLLM's /metrics" in r.getMessage() for r in caplog.records)
    m.on_step(
        tokens_by_source={"system": 1},
        fallback_kind="",
        fallback_tokens=0,
        left_to_vllm=0,
        bytes_fetched=0,
        fetch_latency_s=None,
    )
    assert sample(scrape(port), "qr_sampler_tokens_total", source="system") == 1


def test_an_unusable_directory_without_a_port_turns_metrics_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    m = start_metrics(Settings(), dict)
    assert not m.enabled
    kwargs: dict[str, Any] = {
        "tokens_by_source": {"system": 1},
        "fallback_kind": "",
        "fallback_tokens": 0,
        "left_to_vllm": 0,
        "bytes_fetched": 0,
        "fetch_latency_s": None,
    }
    m.on_step(**kwargs)
