"""``qrs audit verify | report`` through the real entry point (and once as a real process)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from qr_sampler.provenance.naming import chain_files
from tests.cli.conftest import Outcome, assert_one_line_error, installed_qrs
from tests.sampler.provenance.logs import edit_value, lines_of, rewrite, write_log


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "diag.jsonl"
    write_log(path, steps=25, rows=4, archive=tmp_path / "archive", max_bytes=20_000)
    return path


def test_verify_passes_an_untouched_log(qrs: Callable[..., Outcome], log: Path) -> None:
    outcome = qrs("audit", "verify", str(log), "--archive", str(log.parent / "archive"))
    assert outcome.code == 0, outcome
    assert "verified: 100 token records" in outcome.out
    assert "100 records' bytes re-hashed" in outcome.out
    assert outcome.err == ""


def test_verify_names_the_first_bad_line(qrs: Callable[..., Outcome], log: Path) -> None:
    second = chain_files(log)[1]  # a rotated file in the middle of the chain
    lines = lines_of(second)
    assert json.loads(lines[5])["kind"] == "token"
    lines[5] = edit_value(lines[5], "u", 0.25)
    rewrite(second, lines)
    outcome = qrs("audit", "verify", str(log))
    assert_one_line_error(outcome, 1, f"{second}:6: u = 0.25 but clamp(Φ(z))")
    assert f"✗ {second}:6:" in outcome.out
    as_json = qrs("audit", "verify", str(log), "--json")
    data = json.loads(as_json.out)
    assert as_json.code == 1 and data["ok"] is False
    assert data["first_problem"].startswith(f"{second}:6:")
    assert data["problems"][0]["line"] == 6


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "no such file or directory"), ("plain text\n", "not a JSONL diagnostics file")],
)
def test_verify_input_errors_exit_2(
    qrs: Callable[..., Outcome], tmp_path: Path, content: str | None, fragment: str
) -> None:
    path = tmp_path / "input.jsonl"
    if content is not None:
        path.write_text(content)
    for command in ("verify", "report"):
        assert_one_line_error(qrs("audit", command, str(path)), 2, fragment)


def test_verify_needs_an_existing_archive(qrs: Callable[..., Outcome], log: Path) -> None:
    outcome = qrs("audit", "verify", str(log), "--archive", str(log.parent / "nowhere"))
    assert_one_line_error(outcome, 2, "no such archive directory")


def test_report_json_has_the_ks_test(qrs: Callable[..., Outcome], log: Path) -> None:
    outcome = qrs("audit", "report", str(log), "--json")
    assert outcome.code == 0, outcome
    data = json.loads(outcome.out)
    assert data["u"]["n"] == 100
    assert 0 < data["u"]["ks"]["statistic"] < 1 and 0 <= data["u"]["ks"]["p_value"] <= 1
    assert data["u"]["chi2_deciles"]["df"] == 9
    text = qrs("audit", "report", str(log))
    assert "KS against U(0,1): D = " in text.out and "χ² on deciles" in text.out


def test_report_html_is_one_self_contained_page(
    qrs: Callable[..., Outcome], log: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    outcome = qrs("audit", "report", str(log), "--html", str(out))
    assert outcome.code == 0, outcome
    page = out.read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 3  # u histogram, QQ plot, z histogram
    assert "http://" not in page and "https://" not in page  # loads nothing
    assert "QQ plot of u" in page and "KS vs U(0,1)" in page
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")] == []
    again = qrs("audit", "report", str(log), "--html", str(out))
    assert_one_line_error(again, 2, "already exists")
    out.write_text("mine")
    assert qrs("audit", "report", str(log), "--html", str(out)).code == 2
    assert out.read_text() == "mine"  # never overwritten without --force
    forced = qrs("audit", "report", str(log), "--html", str(out), "--force")
    assert forced.code == 0 and out.read_text(encoding="utf-8").startswith("<!doctype html>")


def test_the_installed_command_exits_1_on_a_deleted_line(log: Path) -> None:
    first = chain_files(log)[0]
    lines = lines_of(first)
    del lines[3]
    rewrite(first, lines)
    done = subprocess.run(
        [installed_qrs(), "audit", "verify", str(log)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"Error: verification failed at {first}:4:" in done.stderr


def test_progress_goes_to_stderr_on_a_terminal_only(
    qrs: Callable[..., Outcome], log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from qrs_cli.commands import audit

    monkeypatch.setattr(audit, "PROGRESS_MIN_BYTES", 0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    outcome = qrs("audit", "verify", str(log))
    assert outcome.code == 0, outcome
    assert re.match(r"verify: \d+% \([\d.]+ of [\d.]+ MB\)", outcome.err)
    assert "verify:" not in outcome.out  # stdout keeps only the result
