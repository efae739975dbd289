"""`qrs demo`: the embedded default really samples every word from the gRPC server's bytes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from qrs_cli.demo import DEMO_TEXT, BigramModel, run_demo
from qrs_cli.main import main


def test_every_word_comes_from_one_server_call_with_provenance(tmp_path: object) -> None:
    report = run_demo(num_tokens=12, source="grpc")
    assert len(report.words) == len(report.records) == 12
    assert report.server_calls == 12  # one fetch per token, nothing cached or pre-fetched
    assert report.server_address.startswith("unix://")
    for record in report.records:
        assert record.source == "quantum_grpc" and record.device_id == "urandom-demo"
        assert not record.fallback and record.sample_count == 20480
        assert record.server_timestamp_ns > 0 and 0 < record.u < 1
        assert record.rank < 20  # the demo's top-k


def test_chosen_words_follow_the_model_and_the_records() -> None:
    model = BigramModel.from_text(DEMO_TEXT)
    report = run_demo(num_tokens=30, source="system", temperature=0.0)
    # Greedy: each word is the most frequent successor of the previous one.
    previous = "the"
    for word, record in zip(report.words, report.records, strict=True):
        row = model.log_counts[model.index(previous)]
        assert math.isclose(row[model.index(word)], max(row))
        assert record.token_id == model.index(word) and record.greedy
        previous = word


def test_json_output_is_parseable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--tokens", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["records"]) == 3 and data["server_calls"] == 3


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--first-word", "zebra"], "not in the demo vocabulary"),
        (["--source", "quantum"], "is not one of: grpc, system"),
    ],
)
def test_bad_input_is_a_one_line_error_with_a_hint(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", *args]) == 2
    err = capsys.readouterr().err
    assert "Error: " in err and fragment in err and "Hint: " in err
    assert "Traceback" not in err


# --- without torch ------------------------------------------------------------------------------

def test_demo_runs_without_torch_from_a_fresh_folder(tmp_path: Path) -> None:
    """`pip install qr-sampler` brings no torch: the demo must still work (numpy engine)."""
    from tests.cli.fresh import assert_clean, run_fresh

    blocker = tmp_path / "no-torch"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text(
        'raise ImportError("torch is made unimportable for this test")\n')
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    diagnostics = fresh / "tokens.jsonl"
    outcome = run_fresh(fresh, "demo", "--tokens", "6", "--json", "--diagnostics",
                        str(diagnostics), env={"PYTHONPATH": str(blocker)})
    assert_clean(outcome)
    assert outcome.code == 0, outcome
    data = json.loads(outcome.out)
    assert data["engine"] == "numpy" and len(data["records"]) == 6
    assert data["server_calls"] == 6  # one fetch per word, from the reference server
    for record in data["records"]:
        assert record["source"] == "quantum_grpc" and not record["fallback"]
        assert 0 < record["u"] < 1 and record["sample_count"] == 20480
    assert len(diagnostics.read_text().splitlines()) == 6
    forced = run_fresh(fresh, "demo", "--engine", "torch", env={"PYTHONPATH": str(blocker)})
    assert_clean(forced)
    assert forced.code == 2 and "pip install 'qr-sampler[torch]'" in forced.err


def test_numpy_engine_is_the_same_math_as_the_sampler_core() -> None:
    """Same logits, same bytes (a seeded mock source): identical choices and records."""
    import random

    from qr_sampler.entropy.registry import build_entropy_source
    from qr_sampler.settings import settings_from_mapping
    from qr_sampler.types import SamplingConfig
    from qrs_cli.demo import NumpySampler, _TorchChooser

    values = {"QR_ENTROPY_SOURCE_TYPE": "mock_uniform", "QR_MOCK_SEED": "11",
              "QR_LOG_LEVEL": "none", "QR_TOP_K": "20", "QR_TOP_P": "0.9",
              "QR_FIXED_TEMPERATURE": "0.8", "QR_SAMPLE_COUNT": "4096"}
    settings = settings_from_mapping(values)
    config = SamplingConfig.from_settings(settings)
    rng = random.Random(5)
    rows = [[rng.gauss(0.0, 2.0) for _ in range(97)] for _ in range(40)]  # distinct values
    reference = _TorchChooser(settings, config, "r")
    candidate = NumpySampler(build_entropy_source(settings), config, "r")
    try:
        for row in rows:
            a, b = reference.choose(row), candidate.choose(row)
            assert (a.token_id, a.rank, a.num_candidates) == (b.token_id, b.rank,
                                                              b.num_candidates)
            for name in ("u", "z", "sample_mean", "probability", "entropy_nats"):
                assert math.isclose(getattr(a, name), getattr(b, name), rel_tol=1e-6,
                                    abs_tol=1e-9), name
    finally:
        reference.close()
        candidate.close()


def test_numpy_engine_greedy_needs_no_entropy() -> None:
    report = run_demo(num_tokens=5, source="system", temperature=0.0, engine="numpy")
    assert report.engine == "numpy"
    assert all(r.greedy and r.source == "none" and r.sample_count == 0 for r in report.records)
