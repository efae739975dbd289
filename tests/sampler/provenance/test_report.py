"""build_report on a real log mixing every kind of row, against independent computations."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from qr_sampler.provenance import RecordJournal, build_report
from tests.sampler.provenance.logs import ROW, manifest, token

SECOND = 1_000_000_000


def _mixed_log(path: Path) -> list[dict]:
    """60 steps of 4 rows: quantum, fallbacks (timeout; health_test in steps 20-24 and
    40-41), greedy rows, rows left to vLLM, one forced stop; nonces echoed or not."""
    rng = random.Random(11)
    journal = RecordJournal(path, max_bytes=0, manifest=manifest())
    written = []
    for step in range(60):
        batch = []
        for row in range(4):
            data = rng.randbytes(ROW)
            stamp = 1_767_225_600 * SECOND + step * SECOND
            extra = {"timestamp_ns": stamp, "nonce": "ab" * 32, "echo_verified": True}
            if row == 3 and step % 10 == 0:
                record = token("run-a", step, row, b"", **extra)  # greedy
            elif row == 3 and step % 10 == 1:
                record = token("run-a", step, row, b"", source="vllm", token_id=-1,
                               fallback=True, fallback_kind="error", **extra)  # fmt: skip
            elif row == 2 and (20 <= step < 25 or 40 <= step < 42):
                record = token("run-a", step, row, data, source="system", fallback=True,
                               fallback_kind="health_test", nonce="ab" * 32,
                               echo_verified=None, timestamp_ns=stamp)  # fmt: skip
            elif row == 1 and step % 15 == 0:
                record = token("run-a", step, row, data, source="system", fallback=True,
                               fallback_kind="timeout", nonce="", echo_verified=None,
                               timestamp_ns=stamp)  # fmt: skip
            elif row == 0 and step == 59:
                record = token("run-a", step, row, b"", forced_stop=True, **extra)
            else:
                record = token("run-a", step, row, data, source="quantum_grpc", **extra)
            batch.append(record)
        journal.append(batch)
        written += batch
    journal.append([{"kind": "event", "event": "health_test_failed", "run_id": "run-a"}])
    journal.close()
    return written


def test_report_numbers_match_the_records(tmp_path: Path) -> None:
    log = tmp_path / "diag.jsonl"
    records = _mixed_log(log)
    report = build_report(log)
    s = report.to_dict()
    with_bytes = [r for r in records if r["entropy_sha256"] and not r["forced_stop"]]
    u = np.array([r["u"] for r in with_bytes])
    assert s["records"] == 240 and s["u"]["n"] == len(with_bytes)
    expected_ks = scipy_stats.kstest(u, "uniform")
    assert s["u"]["ks"]["statistic"] == pytest.approx(expected_ks.statistic)
    assert s["u"]["ks"]["p_value"] == pytest.approx(expected_ks.pvalue, rel=1e-3)
    assert s["u"]["chi2_deciles"]["df"] == 9 and 0 <= s["u"]["chi2_deciles"]["p_value"] <= 1
    assert np.array_equal(report.u, u)
    assert s["u"]["excluded"] == {"forced stops": 1, "greedy rows": 6, "left to vLLM": 6}
    assert any("greedy rows" in note for note in s["notes"])  # excluded, and said
    assert s["z"]["mean"] == pytest.approx(float(np.mean([r["z"] for r in with_bytes])))
    lo, hi = s["z"]["mean_ci95"]
    assert lo < s["z"]["mean"] < hi
    assert s["tokens_by_source"] == {"quantum_grpc": 216, "system": 11, "none": 7, "vllm": 6}
    assert s["fallbacks"] == {"total": 11, "by_kind": {"health_test": 7, "timeout": 4}}
    assert s["left_to_vllm"] == 6 and s["forced_stops"] == 1
    assert s["health_tests"]["records"] == 7 and s["health_tests"]["episodes"] == 2
    assert s["health_tests"]["events"][0]["event"] == "health_test_failed"
    assert s["echo"]["not_echoed"] == 7 and s["echo"]["no_nonce"] == 4
    assert s["echo"]["verified"] == 240 - 11
    timeline = s["timeline"]
    assert timeline["bucket_s"] == 1 and len(timeline["buckets"]) == 60
    assert sum(b["tokens"] for b in timeline["buckets"]) == 240
    assert sum(b["left_to_vllm"] for b in timeline["buckets"]) == 6
    assert timeline["buckets"][20]["fallback"] == {"health_test": 1}
    assert s["runs"][0]["run_id"] == "run-a" and s["runs"][0]["model"] == "tiny"


def test_a_biased_source_shows_in_the_report(tmp_path: Path) -> None:
    log = tmp_path / "diag.jsonl"
    journal = RecordJournal(log, max_bytes=0, manifest=manifest())
    rng = np.random.default_rng(9)
    for step in range(100):
        rows = [bytes(np.minimum(rng.integers(0, 256, ROW) + 3, 255).astype(np.uint8))
                for _ in range(4)]  # fmt: skip
        journal.append([token("run-a", step, r, rows[r]) for r in range(4)])
    journal.close()
    s = build_report(log).to_dict()
    assert s["u"]["ks"]["p_value"] < 1e-6
    assert s["z"]["mean_ci95"][0] > 0  # the whole interval above 0
