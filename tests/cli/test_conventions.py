"""Conventions every ``qrs`` command keeps: ``-h``, shell completion, consistent metavars,
choices listed, numeric options typed, ``--json`` on every reporting command, one error path."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from qr_sampler.errors import (
    EntropyBudgetExhaustedError,
    EntropyUnavailableError,
    QRSamplerError,
    SettingProblem,
    SettingsError,
)
from qr_sampler.server.config import EntropyServerError
from qrs_cli.errors import EXIT_FAILED, EXIT_USAGE, CLIError, report_for
from tests.cli.conftest import Outcome, assert_one_line_error
from tests.cli.fresh import assert_clean, run_fresh

Qrs = Callable[..., Outcome]
MINE = [
    [], ["init"], ["demo"], ["settings"], ["model"], ["model", "fetch"], ["profile"],
    ["profile", "new"], ["profile", "set-key"], ["profile", "list"], ["profile", "show"],
    ["profile", "validate"], ["probe"], ["serve-entropy"], ["up"], ["down"], ["status"],
    ["logs"], ["doctor"],
]
#: Typer's fallbacks when a metavar was forgotten: never shown.
_RAW_METAVARS = re.compile(r"<(str|int|float|int range|float range|path)>|\bTEXT RANGE\b")


@pytest.mark.parametrize("command", MINE, ids=lambda c: " ".join(c) or "qrs")
def test_dash_h_works_and_metavars_are_named(qrs: Qrs, command: list[str]) -> None:
    short, long = qrs(*command, "-h"), qrs(*command, "--help")
    assert short.code == 0 and short.out == long.out, short
    assert "Usage: qrs" in short.out
    assert "[[" not in short.out.splitlines()[0]  # optional arguments: one pair of brackets
    options = short.out.partition("Options:")[2]  # (Typer labels arguments "<str>" itself)
    assert not _RAW_METAVARS.search(options), options
    assert all(ord(ch) < 128 for ch in short.out), "help text must print on an ASCII terminal"


def test_choices_are_listed_and_numbers_typed(qrs: Qrs) -> None:
    helps = {" ".join(c): qrs(*c, "-h").out for c in MINE}
    assert "--mode [unary|server_streaming|bidi_streaming]" in helps["probe"]
    assert "--mode [unary|server_streaming|bidi_streaming]" in helps["profile new"]
    assert "--source [grpc|system]" in helps["demo"]
    assert "--engine [auto|torch|numpy]" in helps["demo"]
    assert "--log-level [debug|info|warning|error]" in helps["serve-entropy"]
    assert "--service [vllm|entropy-server]" in helps["logs"]
    for flag in ("--calls", "--total", "--concurrency", "--max-bytes-per-request",
                 "--sample-count"):
        assert re.search(rf"{flag} INTEGER", helps["probe"]), flag
    for flag in ("--port PORT", "--sample-count INTEGER", "--rate-limit-per-min INTEGER"):
        assert flag in helps["profile new"], flag
    assert "--workers INTEGER" in helps["serve-entropy"]
    typed = qrs("probe", "--calls", "many")
    assert typed.code == 2 and "valid integer" in typed.err and "--calls" in typed.err


def test_shell_completion_scripts_and_profile_names(project: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    script = run_fresh(fresh, "--show-completion", "bash")
    assert script.code == 0 and "_QRS_COMPLETE" in script.out
    done = run_fresh(project / "deployments", env={
        "COMP_WORDS": "qrs up ur", "COMP_CWORD": "2", "_QRS_COMPLETE": "complete_bash"})
    assert done.out.split() == ["urandom"]
    names = run_fresh(project, env={
        "COMP_WORDS": "qrs profile show ", "COMP_CWORD": "3", "_QRS_COMPLETE": "complete_bash"})
    assert set(names.out.split()) == {"firefly-1", "urandom"}
    nowhere = run_fresh(fresh, env={
        "COMP_WORDS": "qrs status ", "COMP_CWORD": "2", "_QRS_COMPLETE": "complete_bash"})
    assert nowhere.code == 0 and not nowhere.out.strip()
    assert_clean(nowhere)


@pytest.mark.parametrize("args", [
    ["settings"], ["profile", "list"], ["profile", "show", "urandom"],
    ["profile", "validate", "urandom"], ["up", "urandom", "--dry-run"], ["status"],
    ["down", "urandom"], ["doctor"], ["demo", "--tokens", "2", "--source", "system"],
    ["profile", "new", "extra", "--defaults", "--dry-run"],
])
def test_every_reporting_command_speaks_json(project: Path, qrs: Qrs, args: list[str],
                                             monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("QRS_STATE_DIR", str(tmp_path / "state"))
    outcome = qrs(*args, "--json")
    assert outcome.code in (0, 1), outcome
    json.loads(outcome.out)  # stdout is only the JSON; progress went to stderr


# --- one error path ---------------------------------------------------------------------------

def test_library_errors_carry_their_hint_on_the_root() -> None:
    assert QRSamplerError("x").hint == ""
    assert QRSamplerError("x", hint="do y").hint == "do y"
    assert SettingsError([SettingProblem("QR_X", "1", "bad")], hint="h").hint == "h"
    assert EntropyServerError("cannot listen", hint="pick another port").hint
    assert EntropyUnavailableError("down").kind == "unavailable"  # constructors unchanged


@pytest.mark.parametrize(("error", "code", "hint"), [
    (CLIError("m", "h", 7), 7, "h"),
    (SettingsError([SettingProblem("QR_TOP_K", "x", "bad")]), EXIT_USAGE, "qrs settings"),
    (EntropyServerError("cannot listen on 127.0.0.1:1", hint="pick another port"), EXIT_USAGE,
     "pick another port"),
    (EntropyBudgetExhaustedError("daily budget spent"), EXIT_FAILED, "QR_GRPC_DAILY_BYTE_BUDGET"),
    (EntropyUnavailableError("server down"), EXIT_FAILED, "qrs probe"),
    (QRSamplerError("odd", hint="its own hint"), EXIT_FAILED, "its own hint"),
    (PermissionError(13, "Permission denied", "/x/y"), EXIT_FAILED, "permissions"),
])
def test_one_table_maps_errors_to_messages_and_exit_codes(error: BaseException, code: int,
                                                          hint: str) -> None:
    report = report_for(error)
    assert report is not None and report.exit_code == code and hint in report.hint
    assert "\n" not in report.message


def test_unknown_errors_are_still_reported_as_bugs() -> None:
    assert report_for(RuntimeError("boom")) is None


def test_serve_entropy_errors_keep_their_hint_without_rewrapping(qrs: Qrs) -> None:
    outcome = qrs("serve-entropy", "--address", "nohost")
    assert_one_line_error(outcome, 2, "address 'nohost'")
    assert "qr_sampler.server --help" in outcome.err
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = qrs("serve-entropy", "--address", f"127.0.0.1:{port}")
    assert_one_line_error(busy, 2, f"cannot listen on 127.0.0.1:{port}")
    assert "another server" in busy.err
