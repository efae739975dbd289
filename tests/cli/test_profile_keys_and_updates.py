"""``profile set-key`` stores a key and nothing else; ``profile new --force`` is an update that
keeps every value not given, shows the diff, and asks (or needs --yes) before writing."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from qrs_cli.commands import profile as profile_cmd
from qrs_cli.profiles.secrets_file import with_secret
from tests.cli.conftest import API_KEY, Outcome, assert_one_line_error
from tests.cli.fresh import assert_clean, run_fresh

Qrs = Callable[..., Outcome]
FIREFLY_LIMITS = {
    "QR_GRPC_SERVER_ADDRESS": "10.0.0.115:50051",
    "QR_GRPC_METHOD_PATH": "/qrng.QuantumRNG/GetRandomBytes",
    "QR_GRPC_MAX_BYTES_PER_REQUEST": "13312",
    "QR_GRPC_RATE_LIMIT_PER_MIN": "500",
    "QR_GRPC_DAILY_BYTE_BUDGET": "500000000",
    "QR_SAMPLE_COUNT": "20480",
}


def env_values(folder: Path) -> dict[str, str]:
    from qr_sampler.envfile import read_env_file

    return {e.key: e.value for e in read_env_file(folder / ".env")}


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.name != "secrets.env"}


# --- set-key ----------------------------------------------------------------------------------

def test_set_key_from_a_variable_touches_nothing_else(
    project: Path, qrs: Qrs, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = project / "deployments" / "firefly-1"
    before = digests(folder)
    monkeypatch.setenv("MY_QRNG_KEY", API_KEY)
    outcome = qrs("profile", "set-key", "firefly-1", "--api-key-env", "MY_QRNG_KEY")
    assert outcome.code == 0, outcome
    assert API_KEY not in outcome.text
    assert digests(folder) == before  # .env, README: untouched
    secrets = folder / "secrets.env"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert f"QR_GRPC_API_KEY={API_KEY}" in secrets.read_text().splitlines()
    valid = qrs("profile", "validate", "firefly-1", "--strict")
    assert valid.code == 0, valid  # the missing-key warning is gone


def test_set_key_from_stdin_keeps_other_lines_and_replaces_the_key(
    project: Path, qrs: Qrs, cli: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = project / "deployments" / "firefly-1"
    secrets = folder / "secrets.env"
    secrets.write_text("# mine\nHF_TOKEN=hf_abc123456\nQR_GRPC_API_KEY=old-key-123\n")
    secrets.chmod(0o644)  # a loose mode is fixed on the way
    monkeypatch.setattr(profile_cmd, "_stdin_is_tty", lambda: False)
    result = cli("profile", "set-key", "firefly-1", "--stdin", input=f"{API_KEY}\n")
    assert getattr(result, "exit_code", None) == 0, getattr(result, "output", result)
    assert secrets.read_text() == f"# mine\nHF_TOKEN=hf_abc123456\nQR_GRPC_API_KEY={API_KEY}\n"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert "replaced the key" in str(getattr(result, "output", ""))


def test_set_key_hidden_prompt_on_a_terminal(
    project: Path, cli: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(profile_cmd, "_stdin_is_tty", lambda: True)
    result = cli("profile", "set-key", "firefly-1", "--stdin", input=f"{API_KEY}\n")
    assert getattr(result, "exit_code", None) == 0
    assert API_KEY not in str(getattr(result, "output", ""))  # hidden input: not echoed
    text = (project / "deployments" / "firefly-1" / "secrets.env").read_text()
    assert f"QR_GRPC_API_KEY={API_KEY}" in text


@pytest.mark.parametrize(("args", "fragment"), [
    ([], "give the key one way"),
    (["--stdin", "--api-key-env", "X"], "give the key one way"),
    (["--api-key-env", "NOT_SET_ANYWHERE"], "not set or is empty"),
    (["--api-key-env", "k3y-with-dashes"], "takes the NAME of an environment variable"),
])
def test_set_key_usage_errors(project: Path, qrs: Qrs, args: list[str], fragment: str) -> None:
    outcome = qrs("profile", "set-key", "firefly-1", *args)
    assert_one_line_error(outcome, 2, fragment)
    assert not (project / "deployments" / "firefly-1" / "secrets.env").exists()


def test_set_key_of_an_unknown_profile_suggests_the_name(project: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    outcome = run_fresh(fresh, "profile", "set-key", "firefly1", "--stdin", "--root",
                        str(project), stdin=f"{API_KEY}\n")
    assert_one_line_error(outcome, 2, "did you mean firefly-1?")
    assert_clean(outcome)


def test_with_secret_keeps_malformed_and_comment_lines() -> None:
    text, replaced = with_secret("garbage line\n# c\nQR_GRPC_API_KEY=a\nQR_GRPC_API_KEY=b",
                                 "QR_GRPC_API_KEY", "new", profile="p")
    assert replaced and text == "garbage line\n# c\nQR_GRPC_API_KEY=new\n"
    fresh, replaced = with_secret("", "QR_GRPC_API_KEY", "a b", profile="p")
    assert not replaced and fresh.endswith("QR_GRPC_API_KEY='a b'\n")


def test_hints_point_to_set_key(project: Path, qrs: Qrs) -> None:
    outcome = qrs("profile", "validate", "firefly-1")
    assert "qrs profile set-key firefly-1 --stdin" in outcome.out
    readme = (project / "deployments" / "firefly-1" / "README.md").read_text()
    assert "qrs profile set-key firefly-1" in readme


# --- new --force: an update -------------------------------------------------------------------

def test_force_keeps_every_value_not_given_and_shows_the_diff(project: Path, qrs: Qrs) -> None:
    folder = project / "deployments" / "firefly-1"
    outcome = qrs("profile", "new", "firefly-1", "--force", "--yes", "--mode", "bidi_streaming",
                  "--stream-method-path", "/qrng.QuantumRNG/Stream")
    assert outcome.code == 0, outcome
    values = env_values(folder)
    for key, value in FIREFLY_LIMITS.items():
        assert values[key] == value, key  # no limit was reset
    assert values["QR_GRPC_MODE"] == "bidi_streaming"
    assert "-QR_GRPC_MODE=unary" in outcome.err and "+QR_GRPC_MODE=bidi_streaming" in outcome.err
    assert "QR_GRPC_RATE_LIMIT_PER_MIN" not in "\n".join(
        ln for ln in outcome.err.splitlines() if ln.startswith(("-", "+")))


def test_the_probe_hint_recipe_no_longer_resets_a_profile(
    project: Path, qrs: Qrs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old hint (`new NAME --force --api-key-env VAR`) reset firefly-1 to defaults."""
    folder = project / "deployments" / "firefly-1"
    monkeypatch.setenv("MY_QRNG_KEY", API_KEY)
    outcome = qrs("profile", "new", "firefly-1", "--force", "--yes", "--api-key-env",
                  "MY_QRNG_KEY")
    assert outcome.code == 0, outcome
    assert {k: env_values(folder)[k] for k in FIREFLY_LIMITS} == FIREFLY_LIMITS
    assert f"QR_GRPC_API_KEY={API_KEY}" in (folder / "secrets.env").read_text()
    assert API_KEY not in outcome.text


def test_force_without_a_terminal_or_yes_refuses_and_writes_nothing(
    project: Path, tmp_path: Path
) -> None:
    folder = project / "deployments" / "firefly-1"
    before = digests(folder)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    outcome = run_fresh(fresh, "profile", "new", "firefly-1", "--force", "--rate-limit-per-min",
                        "400", "--root", str(project), stdin="")
    assert_one_line_error(outcome, 2, "stdin is not a terminal")
    assert "--yes" in outcome.err and "+QR_GRPC_RATE_LIMIT_PER_MIN=400" in outcome.err
    assert_clean(outcome)
    assert digests(folder) == before


@pytest.mark.parametrize("apply", [False, True])
def test_force_on_a_terminal_asks_before_writing(
    project: Path, qrs: Qrs, monkeypatch: pytest.MonkeyPatch, apply: bool
) -> None:
    """On a terminal the interview offers the current values, then the diff is confirmed."""
    folder = project / "deployments" / "firefly-1"
    before = digests(folder)
    asked: list[str] = []

    class ScriptedTerminal(profile_cmd._TerminalAsker):
        def text(self, prompt: str, default: str) -> str:
            return default  # Enter: keep the current value

        def confirm(self, prompt: str, default: bool) -> bool:
            asked.append(prompt)
            return apply if prompt.startswith("Apply these changes") else default

        def secret(self, prompt: str) -> str:
            return ""

    monkeypatch.setattr(profile_cmd, "_stdin_is_tty", lambda: True)
    monkeypatch.setattr(profile_cmd, "_TerminalAsker", ScriptedTerminal)
    outcome = qrs("profile", "new", "firefly-1", "--force", "--rate-limit-per-min", "400")
    assert outcome.code == 0, outcome
    assert asked[-1] == "Apply these changes to deployments/firefly-1/?"
    assert "+QR_GRPC_RATE_LIMIT_PER_MIN=400" in outcome.err
    if apply:
        values = env_values(folder)
        assert values["QR_GRPC_RATE_LIMIT_PER_MIN"] == "400"
        assert values["QR_GRPC_DAILY_BYTE_BUDGET"] == "500000000"
    else:
        assert digests(folder) == before and "Nothing changed." in outcome.err


def test_force_dry_run_prints_the_diff_as_json(project: Path, qrs: Qrs) -> None:
    folder = project / "deployments" / "firefly-1"
    before = digests(folder)
    outcome = qrs("profile", "new", "firefly-1", "--force", "--dry-run", "--json",
                  "--sample-count", "13312")
    assert outcome.code == 0, outcome
    data = json.loads(outcome.out)
    assert data["dry_run"] and {c["file"] for c in data["changes"]} == {
        "deployments/firefly-1/.env", "deployments/firefly-1/README.md"}
    assert "+QR_SAMPLE_COUNT=13312" in data["changes"][0]["diff"]
    assert digests(folder) == before


def test_force_with_nothing_to_change_writes_nothing(project: Path, qrs: Qrs) -> None:
    outcome = qrs("profile", "new", "firefly-1", "--force")
    assert outcome.code == 0 and "nothing to change" in outcome.err


def test_tracked_file_check_sees_the_update_command_in_git(git_project: Path, qrs: Qrs) -> None:
    """After an update the committed profile shows exactly the one changed key in git."""
    outcome = qrs("profile", "new", "firefly-1", "--force", "--yes", "--daily-byte-budget",
                  "400000000")
    assert outcome.code == 0, outcome
    diff = subprocess.run(["git", "-C", str(git_project), "diff", "-U0", "--",
                           "deployments/firefly-1/.env"], capture_output=True, text=True,
                          check=True).stdout
    changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++",
                                                                                      "---"))]
    assert changed == ["-QR_GRPC_DAILY_BYTE_BUDGET=500000000",
                       "+QR_GRPC_DAILY_BYTE_BUDGET=400000000"]
