"""The per-step pipeline: one fetch per step, records with provenance, bypass and fallback."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from qr_sampler.diagnostics import TokenRecorder
from qr_sampler.entropy.base import EntropySource
from qr_sampler.entropy.fallback import FallbackEntropySource
from qr_sampler.entropy.mock import MockUniformEntropySource
from qr_sampler.errors import EntropyUnavailableError
from qr_sampler.sampler import SamplingBatch, TokenSampler
from qr_sampler.types import EntropyBatch, SamplingConfig


class CountingSource(EntropySource):
    """Constant bytes, counting batch calls (a stand-in for a server's call counter)."""

    name = "counting"

    def __init__(self, byte: int = 0) -> None:
        self.byte = byte
        self.calls: list[tuple[int, ...]] = []

    def get_random_bytes(self, n: int) -> bytes:
        return bytes([self.byte]) * n

    def get_random_bytes_batch(self, counts: Sequence[int]) -> EntropyBatch:
        self.calls.append(tuple(counts))
        return EntropyBatch(
            data=self.get_random_bytes(sum(counts)),
            counts=tuple(counts),
            source=self.name,
            device_id="dev-7",
            generation_timestamp_ns=42,
        )


class BrokenSource(EntropySource):
    name = "broken"

    def get_random_bytes(self, n: int) -> bytes:
        raise EntropyUnavailableError("device unplugged")


def _logits(rows: int, vocab: int = 2000, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("rows", [1, 8, 32])
def test_one_fetch_per_step_whatever_the_batch_size(rows: int) -> None:
    source = CountingSource()
    sampler = TokenSampler(source)
    configs = [SamplingConfig(sample_count=100 + i) for i in range(rows)]
    batch = SamplingBatch.build(configs)
    for _ in range(3):
        sampler.sample(_logits(rows), batch)
    assert source.calls == [tuple(100 + i for i in range(rows))] * 3


class ThreadNotingSource(CountingSource):
    """Notes the thread each fetch runs on."""

    def __init__(self, fetch_uses_cpu: bool) -> None:
        super().__init__(byte=7)
        self.fetch_uses_cpu = fetch_uses_cpu
        self.threads: list[str] = []

    def get_random_bytes_batch(self, counts: Sequence[int]) -> EntropyBatch:
        self.threads.append(threading.current_thread().name)
        return super().get_random_bytes_batch(counts)


@pytest.mark.parametrize("uses_cpu", [True, False])
def test_a_generator_draws_inline_on_a_cpu_host_and_a_wait_overlaps_on_the_fetch_thread(
    uses_cpu: bool,
) -> None:
    """CPU work on a thread of ours would compete with torch's threads for the same cores; a
    network wait is what the fetch thread overlaps with the tensor work."""
    source = ThreadNotingSource(fetch_uses_cpu=uses_cpu)
    sampler = TokenSampler(FallbackEntropySource(source, None))  # the engine's wrapper
    batch = SamplingBatch.build([SamplingConfig(sample_count=64)] * 4)
    tokens = [sampler.sample(_logits(4), batch).token_ids.tolist() for _ in range(2)]
    sampler.close()
    caller = threading.current_thread().name
    assert source.threads == ([caller] * 2 if uses_cpu else ["qr-sampler-fetch"] * 2)
    assert tokens[0] == tokens[1]  # the same bytes choose the same tokens on either thread


def test_zero_bytes_pick_the_most_probable_and_ff_bytes_the_last_kept() -> None:
    logits = _logits(2)
    configs = [SamplingConfig(top_k=2, top_p=1.0)] * 2
    low = TokenSampler(CountingSource(0)).sample(logits.clone(), SamplingBatch.build(configs))
    high = TokenSampler(CountingSource(255)).sample(logits.clone(), SamplingBatch.build(configs))
    top2 = torch.topk(logits, 2, dim=1).indices
    assert low.token_ids.tolist() == top2[:, 0].tolist()
    assert high.token_ids.tolist() == top2[:, 1].tolist()


def test_greedy_rows_need_no_entropy_and_bypass_rows_are_untouched() -> None:
    source = CountingSource()
    sampler = TokenSampler(source)
    logits = _logits(3)
    original = logits.clone()
    configs = [
        SamplingConfig(fixed_temperature=0.0),
        SamplingConfig(bypass=True),
        SamplingConfig(sample_count=64),
    ]
    result = sampler.sample(logits, SamplingBatch.build(configs, ["a", "b", "c"]))
    assert result.rows == (0, 2)
    assert source.calls == [(64,)]  # only the sampled, non-greedy row drew bytes
    assert torch.equal(logits[1], original[1])
    assert int(logits[0].argmax()) == int(original[0].argmax())
    assert torch.isinf(logits[0]).sum() == logits.shape[1] - 1


def test_all_greedy_batch_never_calls_the_source() -> None:
    sampler = TokenSampler(BrokenSource())
    result = sampler.sample(
        _logits(4), SamplingBatch.build([SamplingConfig(fixed_temperature=0)] * 4)
    )
    assert result.entropy is None and len(result.token_ids) == 4


def test_records_carry_provenance_and_match_the_forced_tokens(tmp_path: Path) -> None:
    path = tmp_path / "diag" / "tokens.jsonl"
    recorder = TokenRecorder(log_level="none", diagnostics_path=path, manifest={"run_id": "r1"})
    sampler = TokenSampler(CountingSource(0), recorder)
    logits = _logits(2)
    cfg = SamplingConfig(top_k=5, sample_count=300)
    result = sampler.sample(logits, SamplingBatch.build([cfg, cfg], ["req-1", "req-2"]))
    assert recorder.flush()  # records are written by the recorder's thread
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["kind"] == "manifest" and lines[0]["run_id"] == "r1"
    tokens = [r for r in lines if r["kind"] == "token"]
    assert [r["request_id"] for r in tokens] == ["req-1", "req-2"]
    assert [r["token_id"] for r in tokens] == result.token_ids.tolist()
    assert [r["token_id"] for r in tokens] == logits.argmax(dim=1).tolist()
    first = tokens[0]
    assert first["source"] == "counting" and first["device_id"] == "dev-7"
    assert first["server_timestamp_ns"] == 42 and first["fallback"] is False
    assert first["u"] == 1e-10 and first["rank"] == 0 and first["sample_mean"] == 0.0
    assert first["config_hash"] == cfg.config_hash and first["num_candidates"] >= 1
    assert 0 < first["probability"] <= 1 and first["temperature"] == 0.7
    # Exactly this row's bytes (300 zero bytes), hashed; the step's nonce; the chain.
    assert first["entropy_sha256"] == hashlib.sha256(bytes(300)).hexdigest()
    assert first["nonce"] == result.nonce.hex() and len(first["nonce"]) == 64
    assert first["echo_verified"] is None  # this source cannot echo
    raw = path.read_bytes().splitlines()
    for before, line in itertools.pairwise(raw):
        assert json.loads(line)["prev_hash"] == hashlib.sha256(before).hexdigest()


def test_the_nonce_chains_the_previous_steps_tokens() -> None:
    sampler = TokenSampler(CountingSource(0), run_id="run")
    batch = SamplingBatch.build([SamplingConfig(top_k=5)] * 2)
    first = sampler.sample(_logits(2), batch)
    second = sampler.sample(_logits(2, seed=1), batch)
    previous = first.token_ids.numpy().astype("<i8").tobytes()
    expected = hashlib.sha256(b"run" + (2).to_bytes(8, "little") + previous).digest()
    assert second.nonce == expected != first.nonce


def test_fallback_is_flagged_in_every_record() -> None:
    recorder = TokenRecorder(log_level="none")
    source = FallbackEntropySource(BrokenSource(), MockUniformEntropySource(seed=1))
    sampler = TokenSampler(source, recorder)
    sampler.sample(_logits(3), SamplingBatch.build([SamplingConfig()] * 3))
    records = recorder.recent()
    assert len(records) == 3
    assert all(r.fallback and "device unplugged" in r.fallback_reason for r in records)
    assert all(r.source == "mock_uniform" for r in records)  # who really served the bytes
    assert source.health()["fallback_count"] == 1


def test_without_fallback_no_other_randomness_chooses_the_rows_stop() -> None:
    """QR_FALLBACK_MODE=error: rows that needed entropy end (their stop token is forced, or
    their argmax when none is known); a greedy row is still chosen; the records say why."""
    recorder = TokenRecorder(log_level="none")
    sampler = TokenSampler(FallbackEntropySource(BrokenSource(), None), recorder)
    logits = _logits(3)
    original = logits.clone()
    configs = [SamplingConfig(), SamplingConfig(), SamplingConfig(fixed_temperature=0.0)]
    batch = SamplingBatch.build(configs, ["a", "b", "c"])
    batch = replace(batch, stop_tokens=np.array([7, -1, 9]))
    result = sampler.sample(logits, batch)
    assert isinstance(result.error, EntropyUnavailableError)
    assert result.forced_stop.tolist() == [True, True, False]
    argmax = original.argmax(dim=1).tolist()
    assert logits.argmax(dim=1).tolist() == [7, argmax[1], argmax[2]]
    records = recorder.recent()
    assert [r.forced_stop for r in records] == [True, True, False]
    assert all("device unplugged" in r.fallback_reason for r in records[:2])
    assert [r.fallback_kind for r in records[:2]] == ["unavailable"] * 2
    assert {r.source for r in records} == {"none"}  # no bytes were used by any of them


def test_memory_stays_bounded_and_file_errors_never_raise(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    recorder = TokenRecorder(log_level="none", diagnostics_path=blocker / "x.jsonl", capacity=10)
    sampler = TokenSampler(MockUniformEntropySource(seed=3), recorder)
    batch = SamplingBatch.build([SamplingConfig(sample_count=16)] * 4)
    for _ in range(10):
        sampler.sample(_logits(4), batch)
    assert len(recorder.recent()) == 10 and recorder.total == 40
    assert recorder.health()["diagnostics_error"]  # reported, not raised


def test_summary_log_lines_are_periodic(caplog: pytest.LogCaptureFixture) -> None:
    recorder = TokenRecorder(log_level="summary", summary_every=8)
    sampler = TokenSampler(MockUniformEntropySource(seed=3), recorder)
    batch = SamplingBatch.build([SamplingConfig(sample_count=16)] * 4)
    with caplog.at_level("INFO", logger="qr_sampler.tokens"):
        for _ in range(6):
            sampler.sample(_logits(4), batch)
    assert sum("tokens" in r.getMessage() for r in caplog.records) == 3


def test_records_carry_the_output_index_when_given() -> None:
    recorder = TokenRecorder(log_level="none")
    sampler = TokenSampler(CountingSource(), recorder)
    batch = SamplingBatch.build([SamplingConfig(), SamplingConfig()], ["a", "b"])
    sampler.sample(_logits(2), batch, output_index=[0, 7])
    sampler.sample(_logits(2), batch)
    assert [r.output_index for r in recorder.recent()] == [0, 7, -1, -1]


def test_the_recorders_fast_lines_are_exactly_what_encode_body_writes(tmp_path: Path) -> None:
    """The recorder formats token lines from columns with a template; the verifier's fast path
    relies on C2's key order and json.dumps' spelling of every value. Re-encode each line's
    dict with the generic encoder: the bytes must be identical."""
    from qr_sampler.provenance.chain import encode_body

    path = tmp_path / "tokens.jsonl"
    recorder = TokenRecorder(log_level="none", diagnostics_path=path, manifest={"run_id": "r"})
    sampler = TokenSampler(FallbackEntropySource(BrokenSource(), MockUniformEntropySource(seed=5)),
                           recorder)
    configs = [SamplingConfig(top_k=3), SamplingConfig(fixed_temperature=0.0),
               SamplingConfig(bypass=True), SamplingConfig(sample_count=17)]
    sampler.sample(_logits(4), SamplingBatch.build(configs, ['quote"d', "ü-nicode", "c", "d"]))
    assert recorder.flush()
    lines = path.read_bytes().splitlines()
    tokens = [line for line in lines if b'"kind":"token"' in line]
    assert len(tokens) == 4
    for line in tokens:
        record = json.loads(line)
        link = record.pop("prev_hash")
        assert encode_body(record)[:-1] + b',"prev_hash":"' + link.encode() + b'"}' == line
