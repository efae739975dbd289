"""`qrs settings` and the CLI's error handling, through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qr_sampler.settings import Settings
from qrs_cli.main import main


def test_settings_lists_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    for name in Settings.model_fields:
        assert f"QR_{name.upper()}" in out


def test_settings_json_is_parseable_and_complete(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in data] == list(Settings.model_fields)
    api_key = next(d for d in data if d["name"] == "grpc_api_key")
    assert api_key["secret"] is True and api_key["per_request"] is False


def test_unknown_command_is_a_usage_error_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qrs_cli", "no-such-command"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "No such command" in proc.stderr


def test_help_is_fast_to_import() -> None:
    """`qrs --help` must not import torch, grpc, jinja2 or vllm (they cost seconds)."""
    probe = (
        "import sys\nfrom qrs_cli.main import main\n"
        "code = main(['--help'])\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'grpc', 'jinja2', 'vllm')]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
