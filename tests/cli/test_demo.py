"""`qrs demo`: the embedded default really samples every word from the gRPC server's bytes."""

from __future__ import annotations

import json
import math

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
