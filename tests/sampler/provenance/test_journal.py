"""RecordJournal on real files: line format, chain, manifests, rotation, torn lines, failures,
and several writer processes appending at once."""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from pathlib import Path

import pytest

from qr_sampler.provenance import RecordJournal
from qr_sampler.provenance.naming import chain_files, rotated_path
from qr_sampler.provenance.verifier import verify
from tests.sampler.provenance.logs import ROW, lines_of, manifest, token, worker

ZERO = "0" * 64
MANIFEST_KEYS = [
    "kind", "schema", "run_id", "file_index", "started_at", "written_at", "plugin_version",
    "vllm_version", "model", "parallel", "config_hash", "settings", "source", "pid", "host",
    "prev_hash",
]  # fmt: skip


def _check_chain(files: list[Path]) -> list[dict]:
    """Independent check: every line parses, kind first, prev_hash last and equal to the
    SHA-256 of the line before (across files); returns the parsed lines."""
    prev = ZERO
    parsed = []
    for path in files:
        raw = path.read_bytes()
        assert raw.endswith(b"\n")
        for line in raw[:-1].split(b"\n"):
            record = json.loads(line)
            keys = list(record)
            assert keys[0] == "kind" and keys[-1] == "prev_hash"
            assert record["prev_hash"] == prev
            prev = hashlib.sha256(line).hexdigest()
            parsed.append(record)
    return parsed


def test_lines_are_compact_json_with_a_manifest_first_and_a_chain(tmp_path: Path) -> None:
    path = tmp_path / "diag.jsonl"
    journal = RecordJournal(path, max_bytes=0, manifest=manifest())
    journal.append([token("run-a", 0, r, bytes([r]) * ROW) for r in range(3)])
    journal.append([token("run-a", 1, 0, b"")])
    journal.close()
    records = _check_chain([path])
    assert [r["kind"] for r in records] == ["manifest", "token", "token", "token", "token", "event"]
    assert list(records[0]) == MANIFEST_KEYS
    assert records[0]["prev_hash"] == ZERO and records[0]["file_index"] == 0
    assert records[0]["settings"]["population_mean"] == 127.5
    assert records[-1]["event"] == "journal_closed"  # the last record has a successor
    assert b" " not in lines_of(path)[1]  # separators=(",", ":")
    assert journal.error == "" and journal.lines_written == 6


def test_values_json_cannot_hold_are_written_safely(tmp_path: Path) -> None:
    path = tmp_path / "diag.jsonl"
    journal = RecordJournal(path, max_bytes=0, manifest=manifest())
    journal.append([{"run_id": "run-a", "u": float("nan"), "prev_hash": "bogus", "x": Path("p")}])
    journal.close()
    record = _check_chain([path])[1]
    assert record["kind"] == "token"  # no kind: a token record, kind moved first
    assert record["u"] is None and record["x"] == "p"
    assert record["prev_hash"] != "bogus"


def test_rotation_names_files_in_order_and_carries_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "diag.jsonl"
    journal = RecordJournal(path, max_bytes=6_000, manifest=manifest())
    for step in range(30):
        journal.append([token("run-a", step, r, bytes([step]) * ROW) for r in range(2)])
    journal.close()
    files = chain_files(path)
    assert journal.rotations >= 3 and len(files) == journal.rotations + 1
    assert files[:-1] == [rotated_path(path, i) for i in range(journal.rotations)]
    assert files[0].name == "diag.000000.jsonl" and files[-1] == path
    records = _check_chain(files)  # the chain runs through every file
    for index, file in enumerate(files):
        first = json.loads(lines_of(file)[0])
        assert first["kind"] == "manifest" and first["file_index"] == index
        assert file.stat().st_size <= 6_000 or len(lines_of(file)) <= 3
    tokens = [r for r in records if r["kind"] == "token"]
    assert [(r["step"], r["request_id"]) for r in tokens] == [
        (s, f"req-{r}") for s in range(30) for r in range(2)
    ]


def test_a_second_writer_joins_with_its_own_manifest(tmp_path: Path) -> None:
    path = tmp_path / "diag.jsonl"
    first = RecordJournal(path, max_bytes=0, manifest=manifest("run-a"))
    first.append([token("run-a", 0, 0, b"\x01" * ROW)])
    second = RecordJournal(path, max_bytes=0, manifest=manifest("run-b"))
    second.append([token("run-b", 0, 0, b"\x02" * ROW)])
    first.append([token("run-a", 1, 0, b"\x03" * ROW)])  # its cached hash is stale now
    first.close()
    second.close()
    records = _check_chain([path])
    assert [(r["kind"], r["run_id"]) for r in records[:4]] == [
        ("manifest", "run-a"), ("token", "run-a"), ("manifest", "run-b"), ("token", "run-b")
    ]  # fmt: skip
    assert records[4]["run_id"] == "run-a" and records[4]["kind"] == "token"
    assert verify(path).ok


def test_a_torn_last_line_is_kept_and_marked_by_the_next_writer(tmp_path: Path) -> None:
    path = tmp_path / "diag.jsonl"
    journal = RecordJournal(path, max_bytes=0, manifest=manifest())
    journal.append([token("run-a", 0, 0, b"\x05" * ROW)])
    complete = lines_of(path)[-1]
    fragment = b'{"kind":"token","run_id":"run-a","step":1,"u":0.3'  # a write cut short
    with path.open("ab") as handle:
        handle.write(fragment)
    later = RecordJournal(path, max_bytes=0, manifest=manifest("run-b"))
    later.append([token("run-b", 0, 0, b"\x06" * ROW)])
    later.close()
    lines = lines_of(path)
    assert lines[2] == fragment  # kept as evidence, ended with a newline
    event = json.loads(lines[3])
    assert event["event"] == "torn_line" and event["torn_bytes"] == len(fragment)
    assert event["torn_sha256"] == hashlib.sha256(fragment).hexdigest()
    assert event["prev_hash"] == hashlib.sha256(complete).hexdigest()  # skips the fragment
    report = verify(path)
    assert report.ok, report.problems
    assert any("torn line" in w.message and w.line == 3 for w in report.warnings)


def test_an_io_error_switches_the_journal_off_once_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    journal = RecordJournal(blocker / "diag.jsonl", max_bytes=0, manifest=manifest())
    with caplog.at_level(logging.ERROR, logger="qr_sampler.provenance"):
        for step in range(3):
            journal.append([token("run-a", step, 0, b"\x01" * ROW)])
        journal.close()
    assert journal.error.startswith(("NotADirectoryError", "FileExistsError"))
    assert len([r for r in caplog.records if "disabled" in r.getMessage()]) == 1


def test_writer_processes_interleave_whole_lines_and_one_chain(tmp_path: Path) -> None:
    """Four processes append at once into a log that rotates: every line parses, the chain
    verifies end to end, every record is there once, every file names its writers first."""
    path = tmp_path / "diag.jsonl"
    context = multiprocessing.get_context("fork")
    writers, batches, rows = 4, 40, 3
    barrier = context.Barrier(writers)
    processes = [
        context.Process(
            target=worker, args=(str(path), f"proc-{i}", batches, rows, 40_000, barrier)
        )
        for i in range(writers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    files = chain_files(path)
    assert len(files) > 2  # rotated while all four were writing
    records = _check_chain(files)
    seen = sorted(
        (r["run_id"], r["step"], r["request_id"]) for r in records if r["kind"] == "token"
    )
    expected = sorted(
        (f"proc-{i}", s, f"req-{r}") for i in range(writers) for s in range(batches)
        for r in range(rows)
    )  # fmt: skip
    assert seen == expected
    for file in files:  # each record's manifest is earlier in the same file
        announced: set[str] = set()
        for number, line in enumerate(lines_of(file)):
            record = json.loads(line)
            if number == 0:
                assert record["kind"] == "manifest"
            if record["kind"] == "manifest":
                announced.add(record["run_id"])
            elif record["kind"] == "token":
                assert record["run_id"] in announced
    report = verify(path)
    assert report.ok, report.problems
    assert report.records == writers * batches * rows
