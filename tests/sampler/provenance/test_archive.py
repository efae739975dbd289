"""EntropyArchive on real files: exact rows back, the size bound and how it is said, errors."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from qr_sampler.provenance import ArchiveError, EntropyArchive, read_archived
from qr_sampler.provenance.archive import DROP_EVENT, EVENTS_FILE, SEGMENT_RE, dropped_segments
from qr_sampler.provenance.verifier import verify
from tests.sampler.provenance.logs import flip_byte


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_every_row_reads_back_exactly(tmp_path: Path, codec: str) -> None:
    archive = EntropyArchive(tmp_path / "a", max_bytes=0, run_id="run-a", codec=codec)
    fetches = [(os.urandom(sum(c)), c) for c in ([100, 0, 37, 2048], [1], [512] * 8)]
    refs = [archive.append(data, counts) for data, counts in fetches]
    archive.close()
    assert archive.error == ""
    for (data, counts), row_refs in zip(fetches, refs, strict=True):
        assert len(row_refs) == len(counts)
        start = 0
        for n, ref in zip(counts, row_refs, strict=True):
            if n == 0:
                assert ref == ""  # a row without bytes has nothing to point to
            else:
                assert read_archived(tmp_path / "a", ref) == data[start : start + n]
            start += n
    suffix = ".zst" if codec == "zstd" else ".gz"
    assert all(p.suffix == suffix for p in (tmp_path / "a").iterdir() if SEGMENT_RE.match(p.name))


def test_low_entropy_bytes_are_compressed(tmp_path: Path) -> None:
    archive = EntropyArchive(tmp_path / "a", max_bytes=0, run_id="run-a")
    data = bytes(20_480)  # a stuck source: all zeros
    archive.append(data, [20_480])
    archive.close()
    assert archive.bytes_stored < archive.bytes_in / 20


def test_the_size_bound_drops_the_oldest_segments_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "a"
    events: list[dict[str, Any]] = []
    archive = EntropyArchive(folder, max_bytes=40_000, run_id="run-a", segment_bytes=10_000,
                             on_event=events.append)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="qr_sampler.provenance"):
        refs = [archive.append(os.urandom(4096), [4096])[0] for _ in range(40)]
    archive.close()
    segments = sorted(p for p in folder.iterdir() if SEGMENT_RE.match(p.name))
    assert sum(p.stat().st_size for p in segments) <= 40_000
    assert archive.segments_dropped == len(events) > 0
    dropped = dropped_segments(folder)
    assert set(dropped) == {e["segment"] for e in events}
    assert all(e["event"] == DROP_EVENT and e["bytes"] > 0 for e in events)
    assert not any((folder / name).exists() for name in dropped)
    with pytest.raises(ArchiveError) as missing:
        read_archived(folder, refs[0])
    assert missing.value.reason == "missing" and missing.value.segment in dropped
    assert read_archived(folder, refs[-1])  # the newest rows are still there
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dropped the oldest segment" in warnings[0].getMessage()
    # events.jsonl is itself a chained log the verifier can check.
    lines = (folder / EVENTS_FILE).read_bytes().splitlines()
    assert json.loads(lines[0])["kind"] == "manifest"
    assert verify(folder / EVENTS_FILE).ok


def test_reading_errors_say_why(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    archive = EntropyArchive(folder, max_bytes=0, run_id="run-a")
    ref = archive.append(os.urandom(3000), [1000, 2000])[1]
    archive.close()
    for bad in ("", "../../etc/passwd:0:1:0:1", "x.zst:0:1:0:1", ref.replace(":", ";")):
        with pytest.raises(ArchiveError) as error:
            read_archived(folder, bad)
        assert error.value.reason == "bad_ref"
    segment = ref.split(":")[0]
    flip_byte(folder / segment, 20)
    with pytest.raises(ArchiveError) as corrupt:
        read_archived(folder, ref)
    assert corrupt.value.reason == "corrupt"
    (folder / segment).unlink()
    with pytest.raises(ArchiveError) as gone:
        read_archived(folder, ref)
    assert gone.value.reason == "missing"


def test_an_io_error_switches_the_archive_off_without_raising(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    archive = EntropyArchive(blocker / "a", max_bytes=0, run_id="run-a")
    assert archive.append(b"\x01" * 10, [4, 6]) == ["", ""]
    assert archive.append(b"\x01" * 10, [10]) == [""]
    archive.close()
    assert archive.error


def test_counts_that_do_not_add_up_are_not_archived(tmp_path: Path) -> None:
    archive = EntropyArchive(tmp_path / "a", max_bytes=0, run_id="run-a")
    assert archive.append(b"\x01" * 10, [4, 4]) == ["", ""]
    assert archive.append(b"\x01" * 8, [4, 4])[1]  # the archive stays on
    archive.close()
    assert archive.error == ""
