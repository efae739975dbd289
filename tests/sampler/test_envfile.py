"""The strict .env reader: what it accepts, and a clear error for everything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from qr_sampler.envfile import parse_env_text, read_env_file
from qr_sampler.errors import SettingsError


def test_accepts_comments_export_quotes_and_inline_comments() -> None:
    text = """
# a comment
QR_TOP_K=5
export QR_TOP_P = 0.5
QR_GRPC_METHOD_PATH="/a.B/C"   # trailing comment
QR_DIAGNOSTICS_PATH='/tmp/with space.jsonl'
QR_EMPTY=
QR_HASH=abc#not-a-comment
"""
    entries = {e.key: (e.value, e.line) for e in parse_env_text(text, "x.env")}
    assert entries == {
        "QR_TOP_K": ("5", 3),
        "QR_TOP_P": ("0.5", 4),
        "QR_GRPC_METHOD_PATH": ("/a.B/C", 5),
        "QR_DIAGNOSTICS_PATH": ("/tmp/with space.jsonl", 6),
        "QR_EMPTY": ("", 7),
        "QR_HASH": ("abc#not-a-comment", 8),
    }


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("JUSTTEXT", "expected KEY=value"),
        ("1BAD=x", "not a valid variable name"),
        ("BAD-NAME=x", "not a valid variable name"),
        ('QR_X="unterminated', 'missing closing " quote'),
        ("QR_X='a' trailing", "unexpected text after the closing quote"),
    ],
)
def test_malformed_lines_are_reported_with_file_and_line(line: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_env_text(f"QR_OK=1\n{line}\n", "p.env")
    assert "p.env:2" in str(info.value)
    assert fragment in str(info.value)


def test_malformed_line_content_is_not_echoed() -> None:
    # A line without '=' may be a pasted secret: the error must not repeat it.
    with pytest.raises(SettingsError) as info:
        parse_env_text("sk-live-very-secret-value\n", "p.env")
    assert "sk-live-very-secret-value" not in str(info.value)


def test_missing_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read file"):
        read_env_file(tmp_path / "nope.env")
