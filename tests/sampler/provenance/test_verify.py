"""verify() on real logs: passes what is untouched, names the first bad line of what is not."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from qr_sampler.provenance import AuditInputError
from qr_sampler.provenance.archive import SEGMENT_RE
from qr_sampler.provenance.naming import chain_files
from qr_sampler.provenance.verifier import verify
from tests.sampler.provenance.logs import (
    ROW,
    edit_value,
    flip_byte,
    hand_line,
    lines_of,
    manifest,
    rewrite,
    token,
    write_hand_made,
    write_log,
)


@pytest.fixture
def archived(tmp_path: Path) -> tuple[Path, Path]:
    log, folder = tmp_path / "diag.jsonl", tmp_path / "archive"
    write_log(log, steps=30, rows=4, archive=folder)
    return log, folder


def _first(report: object) -> tuple[str, int, str]:
    problem = report.problems[0]  # type: ignore[attr-defined]
    return Path(problem.file).name, problem.line, problem.message


def test_an_untouched_log_verifies_with_its_archive(archived: tuple[Path, Path]) -> None:
    log, folder = archived
    report = verify(log, archive=folder)
    assert report.ok, report.problems
    (result,) = report.logs
    assert result.tokens == 120 and result.u_checked == 120
    assert result.archive_checked == 120 and result.archive_dropped == 0
    assert result.head_hash == hashlib.sha256(lines_of(log)[-1]).hexdigest()
    assert report.warnings == []


def test_an_edited_u_is_named_by_line(archived: tuple[Path, Path]) -> None:
    log, _ = archived
    lines = lines_of(log)
    lines[10] = edit_value(lines[10], "u", 0.5)
    rewrite(log, lines)
    report = verify(log)
    assert not report.ok
    name, line, message = _first(report)
    assert (name, line) == ("diag.jsonl", 11) and "u = 0.5 but clamp(Φ(z))" in message
    assert any(p.line == 12 and "prev_hash" in p.message for p in report.problems)


def test_an_edited_u_on_the_last_line_is_caught_without_a_successor(tmp_path: Path) -> None:
    log = tmp_path / "diag.jsonl"
    write_log(log, steps=5, rows=2, close=False)  # a crashed writer: no closing event
    lines = lines_of(log)
    assert json.loads(lines[-1])["kind"] == "token"
    record = json.loads(lines[-1])
    lines[-1] = edit_value(lines[-1], "u", min(record["u"] + 0.01, 0.99))
    rewrite(log, lines)
    report = verify(log)
    assert _first(report)[:2] == ("diag.jsonl", len(lines))
    assert "clamp(Φ(z))" in _first(report)[2]


def test_a_deleted_line_breaks_the_chain_there(archived: tuple[Path, Path]) -> None:
    log, _ = archived
    lines = lines_of(log)
    del lines[20]
    rewrite(log, lines)
    name, line, message = _first(verify(log))
    assert (name, line) == ("diag.jsonl", 21)
    assert "changed, or lines between them were removed" in message


def test_reordered_lines_are_called_out_of_order(archived: tuple[Path, Path]) -> None:
    log, _ = archived
    lines = lines_of(log)
    lines[7], lines[8] = lines[8], lines[7]
    rewrite(log, lines)
    name, line, message = _first(verify(log))
    assert (name, line) == ("diag.jsonl", 8) and "out of order" in message


def test_a_flipped_archived_byte_fails(archived: tuple[Path, Path]) -> None:
    log, folder = archived
    segment = sorted(p for p in folder.iterdir() if SEGMENT_RE.match(p.name))[0]
    flip_byte(segment, segment.stat().st_size // 2)
    assert verify(log).ok  # the log itself is untouched
    report = verify(log, archive=folder)
    assert not report.ok
    assert "archived bytes unreadable" in _first(report)[2] or "entropy_sha256" in _first(report)[2]


def test_a_flipped_byte_in_a_gzip_archive_fails_too(tmp_path: Path) -> None:
    from qr_sampler.provenance import EntropyArchive, RecordJournal

    log, folder = tmp_path / "diag.jsonl", tmp_path / "archive"
    journal = RecordJournal(log, max_bytes=0, manifest=manifest())
    archive = EntropyArchive(folder, max_bytes=0, run_id="run-a", codec="gzip")
    data = bytes(range(256)) * 4
    refs = archive.append(data, [ROW, ROW])
    journal.append([token("run-a", 0, r, data[r * ROW : (r + 1) * ROW], refs[r]) for r in (0, 1)])
    journal.close()
    archive.close()
    assert verify(log, archive=folder).ok
    flip_byte(folder / refs[1].split(":")[0], 30)
    assert not verify(log, archive=folder).ok


def test_a_segment_dropped_by_policy_is_reported_distinctly(tmp_path: Path) -> None:
    log, folder = tmp_path / "diag.jsonl", tmp_path / "archive"
    _, archive = write_log(log, steps=40, rows=4, archive=folder, archive_max_bytes=24_000,
                           segment_bytes=6_000)  # fmt: skip
    assert archive is not None and archive.segments_dropped > 0
    report = verify(log, archive=folder)
    assert report.ok, report.problems
    result = report.logs[-1]
    assert result.archive_dropped > 0 and result.archive_checked > 0
    assert result.archive_dropped + result.archive_checked == 160
    assert any("dropped from the archive by its size bound" in w.message for w in report.warnings)
    # The same absence without a drop event is a failure.
    survivor = sorted(p for p in folder.iterdir() if SEGMENT_RE.match(p.name))[-1]
    survivor.unlink()
    report = verify(log, archive=folder)
    assert not report.ok
    assert f"segment {survivor.name} is not in the archive" in report.problems[0].message


def test_rotated_files_verify_and_a_missing_one_is_named(tmp_path: Path) -> None:
    log = tmp_path / "diag.jsonl"
    write_log(log, steps=40, rows=2, max_bytes=8_000)
    files = chain_files(log)
    assert len(files) >= 4
    report = verify(files[1])  # any member names the whole log
    assert report.ok, report.problems
    assert report.logs[0].files == [str(f) for f in files]
    files[2].unlink()
    name, line, message = _first(verify(log))
    assert (name, line) == (files[3].name, 1) and "a file is missing between them" in message


def test_a_log_whose_oldest_files_were_removed_verifies_with_a_warning(tmp_path: Path) -> None:
    log = tmp_path / "diag.jsonl"
    write_log(log, steps=40, rows=2, max_bytes=8_000)
    files = chain_files(log)
    files[0].unlink()
    files[1].unlink()
    report = verify(log)
    assert report.ok, report.problems
    assert "the files before it are absent" in report.warnings[0].message


def test_a_hand_made_log_verifies_and_the_tolerance_is_1e9(tmp_path: Path) -> None:
    log = tmp_path / "hand.jsonl"
    head = {"kind": "manifest", "schema": 1, **manifest()}
    rows = [token("run-a", 0, r, bytes([r * 40]) * 300 + bytes(212)) for r in range(3)]
    rows.append(token("run-a", 1, 0, b""))  # a greedy row: nothing to re-derive
    write_hand_made(log, [head, *rows])
    report = verify(log)
    assert report.ok, report.problems
    assert report.logs[0].u_checked == 3 and report.logs[0].without_bytes == 1
    near = dict(rows[1], u=rows[1]["u"] + 1e-12)
    write_hand_made(log, [head, rows[0], near])
    assert verify(log).ok
    off = dict(rows[1], u=rows[1]["u"] + 1e-8)
    write_hand_made(log, [head, rows[0], off])
    assert _first(verify(log))[:2] == ("hand.jsonl", 3)


def test_any_key_order_is_read(tmp_path: Path) -> None:
    log = tmp_path / "hand.jsonl"
    head = {"kind": "manifest", **manifest()}
    record = token("run-a", 0, 0, bytes(range(200)) * 2)
    reordered = {"kind": "token", **dict(reversed(list(record.items())[1:]))}
    write_hand_made(log, [head, reordered])
    assert verify(log).ok
    bad = dict(reordered, z=reordered["z"] + 0.5)
    write_hand_made(log, [head, bad])
    assert "z = " in _first(verify(log))[2]


def test_records_need_their_manifest_first(tmp_path: Path) -> None:
    log = tmp_path / "hand.jsonl"
    head = {"kind": "manifest", **manifest("run-a")}
    write_hand_made(log, [head, token("run-b", 0, 0, b"\x01" * ROW)])
    _, line, message = _first(verify(log))
    assert line == 2 and "no manifest for run_id 'run-b'" in message
    write_hand_made(log, [token("run-a", 0, 0, b"\x01" * ROW), head])
    assert _first(verify(log))[1:] == (1, "the first line of a file is not a manifest")


def test_the_first_link_must_be_zeros(tmp_path: Path) -> None:
    log = tmp_path / "hand.jsonl"
    write_hand_made(log, [{"kind": "manifest", **manifest()}], prev="ab" * 32)
    assert "not 64 zeros" in _first(verify(log))[2]


def test_an_unmarked_garbage_line_fails_and_a_crash_tail_warns(tmp_path: Path) -> None:
    log = tmp_path / "diag.jsonl"
    write_log(log, steps=3, rows=2, close=False)
    lines = lines_of(log)
    line, _ = hand_line(token("run-a", 9, 0, b"\x01" * ROW), "0" * 64)
    rewrite(log, [*lines[:3], b"garbage", *lines[3:]])
    assert _first(verify(log))[1:] == (4, "not a JSON line")
    rewrite(log, lines)
    with log.open("ab") as handle:
        handle.write(line[:40])  # the writer died mid-line; nobody wrote after it
    report = verify(log)
    assert report.ok and "incomplete line" in report.warnings[0].message


def test_input_that_is_not_diagnostics_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(AuditInputError, match="no such file"):
        verify(tmp_path / "missing.jsonl")
    text = tmp_path / "notes.jsonl"
    text.write_text("hello\n")
    with pytest.raises(AuditInputError, match="not a JSONL diagnostics file"):
        verify(text)
    with pytest.raises(AuditInputError, match=r"holds no \.jsonl"):
        verify(_empty(tmp_path))
    log = tmp_path / "diag.jsonl"
    write_log(log, steps=1, rows=1)
    with pytest.raises(AuditInputError, match="no such archive directory"):
        verify(log, archive=tmp_path / "nowhere")


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_a_directory_verifies_each_log_in_it(tmp_path: Path) -> None:
    write_log(tmp_path / "a.jsonl", steps=4, rows=2, run_id="run-a")
    write_log(tmp_path / "b.jsonl", steps=40, rows=2, max_bytes=8_000, run_id="run-b")
    report = verify(tmp_path)
    assert report.ok and len(report.logs) == 2
    assert [log.run_ids for log in report.logs] == [["run-a"], ["run-b"]]
