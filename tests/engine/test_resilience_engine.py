"""Resilience in vLLM's real server: an entropy outage mid-generation, and hostile requests.

The entropy server is the reference server in its own process (``python -m qr_sampler.server``)
on a fixed 127.0.0.1 port, so the test can kill it (SIGKILL, no goodbye) and start a new one on
the same port, as an operator restarting a QRNG would. Requests run back to back from a client
thread the whole time; the records' wall-clock timestamps tell which tokens were chosen during
the outage and when quantum bytes came back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.engine.servers import VllmServer, free_port, read_records
from tests.sampler.metrics_scrape import parse, series_named

pytestmark = pytest.mark.slow

OUTAGE_S = 4.0
#: The issue's bar (its target is 5 s).
RECOVERY_BOUND_S = 10.0
MAX_WARNING_LINES = 50


class EntropyProcess:
    """The reference server as a child process on a fixed port; killable and restartable."""

    def __init__(self, port: int, log: Path) -> None:
        self.address = f"127.0.0.1:{port}"
        self._log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait until it serves; return the wall time it became ready."""
        with self._log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "qr_sampler.server", "--address", self.address],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with grpc.insecure_channel(self.address) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=0.5)
                    return time.time()
                except grpc.FutureTimeoutError:
                    pass
            assert self.proc.poll() is None, self._log.read_text(errors="replace")
        raise TimeoutError("the entropy server did not start")

    def kill(self) -> float:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        return time.time()


@pytest.fixture(scope="module")
def resilient(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[VllmServer, EntropyProcess, Path]]:
    work = tmp_path_factory.mktemp("resilience")
    entropy = EntropyProcess(free_port(), work / "entropy.log")
    entropy.start()
    diagnostics = work / "tokens.jsonl"
    (work / "prom").mkdir()
    env = {
        "QR_ENTROPY_SOURCE_TYPE": "quantum_grpc",
        "QR_GRPC_SERVER_ADDRESS": entropy.address,
        "QR_FALLBACK_MODE": "system",
        "QR_SAMPLE_COUNT": "1024",
        "QR_DIAGNOSTICS_PATH": str(diagnostics),
        # Prometheus multiprocess mode (test_the_plugins_series_are_on_vllms_own_metrics).
        "PROMETHEUS_MULTIPROC_DIR": str(work / "prom"),
    }
    try:
        with VllmServer(tiny_model, "tiny", env, work / "vllm.log") as vllm:
            yield vllm, entropy, diagnostics
    finally:
        if entropy.proc is not None and entropy.proc.poll() is None:
            entropy.kill()


def _wait_for_records(diagnostics: Path, at_least: int, within_s: float = 10.0) -> None:
    """The recorder writes shortly after each step: wait (bounded) for the last ones."""
    deadline = time.monotonic() + within_s
    while len(read_records(diagnostics)) < at_least and time.monotonic() < deadline:
        time.sleep(0.1)


def test_an_outage_mid_generation_is_flagged_and_quantum_returns_within_seconds(
    resilient: tuple[VllmServer, EntropyProcess, Path],
) -> None:
    vllm, entropy, diagnostics = resilient
    before = len(read_records(diagnostics))
    log_start = len(vllm.log_path.read_text(errors="replace").splitlines())
    results: list[dict[str, Any]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            status, body = vllm.post("/v1/completions", {
                "model": "tiny", "prompt": "Entropy is fetched", "max_tokens": 32,
                "ignore_eos": True, "return_token_ids": True, "temperature": 1.0,
            })  # fmt: skip
            results.append({"status": status, "body": body})

    thread = threading.Thread(target=client)
    thread.start()
    try:
        time.sleep(2.0)  # quantum tokens flow
        killed_at = entropy.kill()
        time.sleep(OUTAGE_S)
        restarting_at = time.time()  # no server can answer before this
        back_at = entropy.start()  # it answers by this (the check polls, so a little later)
        time.sleep(RECOVERY_BOUND_S + 2.0)  # long enough to see the recovery, whenever it is
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not thread.is_alive(), "a request hung"
    assert vllm.alive()

    # Every request completed, with every token it asked for.
    assert results and all(r["status"] == 200 for r in results), results[-1]
    assert all(len(r["body"]["choices"][0]["token_ids"]) == 32 for r in results)
    _wait_for_records(diagnostics, before + 32 * len(results))
    records = read_records(diagnostics)[before:]
    assert len(records) == 32 * len(results)

    seconds = [(r["timestamp_ns"] / 1e9, r) for r in records]
    # Tokens chosen while the server was down are all flagged (none claims to be quantum).
    during = [r for t, r in seconds if killed_at + 0.5 < t < restarting_at]
    assert during, "no tokens were generated during the outage"
    assert all(r["fallback"] and r["source"] == "system" for r in during)
    # Quantum tokens come back within the bound after the server's return.
    quantum_after = [t for t, r in seconds if t > back_at and r["source"] == "quantum_grpc"]
    assert quantum_after, "quantum tokens never came back"
    assert quantum_after[0] - back_at < RECOVERY_BOUND_S
    # And stay back.
    last_second = [r for t, r in seconds if t > seconds[-1][0] - 1.0]
    assert all(r["source"] == "quantum_grpc" for r in last_second)

    # Quiet: a handful of warning lines for the whole episode, not one per token.
    lines = vllm.log_path.read_text(errors="replace").splitlines()[log_start:]
    warnings = [line for line in lines if "WARNING" in line or "ERROR" in line]
    assert len(warnings) <= MAX_WARNING_LINES, "\n".join(warnings[:60])
    print(f"quantum back {quantum_after[0] - back_at:.2f} s after the server; "
          f"{len(during)} flagged tokens during the outage; {len(warnings)} warning lines")


def test_hostile_request_values_are_refused_or_harmless_to_the_batch(
    resilient: tuple[VllmServer, EntropyProcess, Path],
) -> None:
    vllm, _, diagnostics = resilient
    for xargs in ({"qr_top_k": 2**63}, {"qr_sample_count": 10**7}, {"qr_top_k": -1},
                  {"qr_edt_min_temp": 1e-320}):
        status, body = vllm.post("/v1/completions", {
            "model": "tiny", "prompt": "Hello", "max_tokens": 2, "vllm_xargs": xargs,
        })  # fmt: skip
        assert status == 400, (xargs, body)
        key = next(iter(xargs))
        assert key in body.get("error", {}).get("message", str(body)), body

    # A temperature too small to divide by is greedy (as vLLM treats it), and a neighbour in
    # the same batch is unaffected: its tokens still come from the server's bytes.
    before = len(read_records(diagnostics))
    with ThreadPoolExecutor(max_workers=2) as pool:
        tiny_t = pool.submit(vllm.complete, "The capital", max_tokens=8, ignore_eos=True,
                             return_token_ids=True, vllm_xargs={"qr_fixed_temperature": 1e-320})
        normal = pool.submit(vllm.complete, "Quantum", max_tokens=8, ignore_eos=True,
                             return_token_ids=True, temperature=1.0)
        greedy_body, normal_body = tiny_t.result(), normal.result()
    _wait_for_records(diagnostics, before + 16)
    records = read_records(diagnostics)[before:]
    greedy = [r for r in records if r["request_id"] == greedy_body["id"] + "-0"]
    other = [r for r in records if r["request_id"] == normal_body["id"] + "-0"]
    assert len(greedy) == 8 and all(r["greedy"] and r["rank"] == 0 for r in greedy)
    assert len(other) == 8 and all(r["source"] == "quantum_grpc" for r in other)
    assert [r["token_id"] for r in other] == normal_body["choices"][0]["token_ids"]


def test_the_plugins_series_are_on_vllms_own_metrics_in_multiprocess_mode(
    resilient: tuple[VllmServer, EntropyProcess, Path],
) -> None:
    """vLLM serves /metrics from its API server; the plugin counts in the engine core. With
    PROMETHEUS_MULTIPROC_DIR both write to files there, and vLLM's endpoint reads them all.
    (Without it the series are on QR_METRICS_PORT: tests/engine/test_provenance_engine.py.)"""
    vllm, _, diagnostics = resilient
    body = vllm.complete("Metrics", max_tokens=4, temperature=1.0, ignore_eos=True)
    assert body["usage"]["completion_tokens"] == 4

    def quantum_tokens() -> float:
        with urllib.request.urlopen(vllm.base + "/metrics", timeout=10) as reply:
            got = parse(reply.read().decode("utf-8"))
        return series_named(got, "qr_sampler_tokens_total").get((("source", "quantum_grpc"),), 0)

    deadline = time.monotonic() + 30  # multiprocess files are written every 2 s
    while quantum_tokens() < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert quantum_tokens() >= 4, vllm.log_tail()
    # Written by the engine core, not by the API server that answers /metrics.
    writers = {p.stem.rsplit("_", 1)[-1] for p in (diagnostics.parent / "prom").glob("*.db")}
    assert writers - {str(vllm.proc.pid)}, writers
