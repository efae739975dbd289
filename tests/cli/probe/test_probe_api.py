"""The probe library's public surface is pinned, and it stays free of the CLI toolkit."""

from __future__ import annotations

import subprocess
import sys

import qrs_cli.probe


def test_public_names_are_pinned() -> None:
    assert set(qrs_cli.probe.__all__) == {
        "DAILY_BUDGET_SHARE", "EXIT_CODES", "STAGE_NAMES", "CallBudget", "ProbeError",
        "ProbeObserver", "ProbeOptions", "ProbeReport", "ProbeTarget", "RandomnessAssessment",
        "ResolvedTarget", "StageResult", "Status", "TargetOverrides", "TlsOptions", "assess",
        "resolve_target", "run_probe"}


def test_the_library_imports_neither_typer_nor_rich() -> None:
    code = ("import sys, qrs_cli.probe\nprint('LOADED', sorted({m.split('.')[0] for m in "
            "sys.modules if m.split('.')[0] in ('typer', 'rich', 'click', 'torch', 'jinja2')}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert "LOADED []" in proc.stdout, proc.stdout + proc.stderr


def test_the_target_never_shows_its_secrets() -> None:
    from pydantic import SecretStr

    target = qrs_cli.probe.ProbeTarget(address="127.0.0.1:1", api_key=SecretStr("k-123456"),
                                       extra_headers=(("x-t", SecretStr("h-654321")),))
    shown = repr(target) + str(target.public_view())
    assert "k-123456" not in shown and "h-654321" not in shown
    assert sorted(target.secret_values()) == ["h-654321", "k-123456"]
