"""Secrets: the API key never appears in any command's output, and misplaced secrets warn."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from qrs_cli.profiles import find_project, validate_profile
from qrs_cli.profiles.compose import redact
from tests.cli.conftest import API_KEY, Outcome, write_profile

GRPC = "QR_ENTROPY_SOURCE_TYPE=quantum_grpc\nQR_GRPC_SERVER_ADDRESS=qrng.lab:50051\n"


@pytest.fixture
def keyed(project: Path, qrs: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A profile whose API key came in through --api-key-env."""
    monkeypatch.setenv("QRS_TEST_KEY", API_KEY)
    outcome = qrs(
        "profile",
        "new",
        "keyed",
        "--source",
        "quantum_grpc",
        "--address",
        "qrng.lab:50051",
        "--api-key-env",
        "QRS_TEST_KEY",
    )
    assert outcome.code == 0 and API_KEY not in outcome.text
    return project


COMMANDS = [
    ["profile", "list"],
    ["profile", "list", "--json"],
    ["profile", "show", "keyed"],
    ["profile", "show", "keyed", "--json"],
    ["profile", "validate", "keyed"],
    ["profile", "validate", "--all", "--json", "--strict"],
    ["profile", "new", "copy", "--from", "keyed", "--dry-run"],
    [
        "profile",
        "new",
        "keyed",
        "--from",
        "keyed",
        "--force",
        "--api-key-env",
        "QRS_TEST_KEY",
        "--dry-run",
    ],
    ["profile", "new", "keyed"],
    ["profile", "new", "bad", "--api-key-env", "QRS_TEST_KEY"],
    ["profile", "new", "bad2", "--api-key-env", API_KEY],
    ["profile", "new", "bad3", "--source", "quantum_grpc", "--api-key-env", "K3Y_LIKE_NAME"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[1:4]))
def test_no_command_prints_the_api_key(
    keyed: Path, qrs: Callable[..., Outcome], args: list[str]
) -> None:
    outcome = qrs(*args)
    assert "Traceback" not in outcome.text
    assert API_KEY not in outcome.text


def test_key_inlined_in_env_is_masked_everywhere(
    project: Path, qrs: Callable[..., Outcome]
) -> None:
    write_profile(project, "inline", GRPC + f"QR_GRPC_API_KEY={API_KEY}\nQR_TOP_K=nope\n")
    for args in (
        ["validate", "inline"],
        ["validate", "inline", "--json"],
        ["show", "inline"],
        ["show", "inline", "--json"],
        ["list"],
    ):
        outcome = qrs("profile", *args)
        assert API_KEY not in outcome.text, args
    report = validate_profile(find_project(project), "inline", environ={})
    assert any("holds a secret in .env" in f.message for f in report.warnings)


def test_invalid_key_value_is_masked(project: Path, qrs: Callable[..., Outcome]) -> None:
    write_profile(project, "weird", GRPC, secrets=f"QR_GRPC_API_KEY='{API_KEY}'\nQR_TOP_K=x\n")
    outcome = qrs("profile", "validate", "weird")
    assert outcome.code == 1 and API_KEY not in outcome.text


def test_compose_messages_are_redacted(project: Path, qrs: Callable[..., Outcome]) -> None:
    """Compose echoes bad values; one that is the configured key must not reach the output."""
    override = f"services:\n  vllm:\n    ports: ['{API_KEY}']\n"
    write_profile(project, "leaky", GRPC, secrets=f"QR_GRPC_API_KEY={API_KEY}\n", override=override)
    outcome = qrs("profile", "validate", "leaky")
    assert outcome.code == 1, outcome
    assert API_KEY not in outcome.text
    assert redact(f"x {API_KEY} y", [API_KEY]) == "x **** y"


def test_secrets_file_mode_is_checked(project: Path) -> None:
    folder = write_profile(project, "open", GRPC, secrets=f"QR_GRPC_API_KEY={API_KEY}\n")
    (folder / "secrets.env").chmod(0o644)
    report = validate_profile(find_project(project), "open", environ={})
    assert any("readable by others (mode 0644)" in f.message for f in report.warnings)
    assert stat.S_IMODE((folder / "secrets.env").stat().st_mode) == 0o644


def test_git_tracked_secrets_are_errors(git_project: Path) -> None:
    """A key in a file git tracks is published with the next push: validation fails."""
    import subprocess

    folder = write_profile(git_project, "tracked", GRPC, secrets=f"QR_GRPC_API_KEY={API_KEY}\n")
    (folder / "notes.md").write_text(f"the key is {API_KEY}\n")
    git = ["git", "-C", str(git_project), "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    subprocess.run([*git, "add", "-f", "deployments/tracked"], check=True, capture_output=True)
    report = validate_profile(find_project(git_project), "tracked", environ={})
    messages = [f.message for f in report.errors]
    assert "secrets.env is tracked by git" in messages
    assert "a configured secret value appears in a file tracked by git" in messages
    assert all(API_KEY not in m for m in messages)
    assert not report.passed()


def test_key_in_a_tracked_env_is_a_validate_error(
    git_project: Path, qrs: Callable[..., Outcome]
) -> None:
    import subprocess

    write_profile(git_project, "inline", GRPC + f"QR_GRPC_API_KEY={API_KEY}\n")
    git = ["git", "-C", str(git_project), "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    subprocess.run([*git, "add", "-f", "deployments/inline"], check=True, capture_output=True)
    outcome = qrs("profile", "validate", "inline")
    assert outcome.code == 1, outcome
    assert "QR_GRPC_API_KEY holds a secret in .env (tracked by git)" in outcome.out
    assert "qrs profile set-key inline --stdin" in outcome.out
    assert API_KEY not in outcome.text and "Traceback" not in outcome.text


def test_secrets_file_not_ignored_warns(git_project: Path) -> None:
    (git_project / "deployments" / ".gitignore").unlink()
    write_profile(git_project, "exposed", GRPC, secrets=f"QR_GRPC_API_KEY={API_KEY}\n")
    report = validate_profile(find_project(git_project), "exposed", environ={})
    assert "secrets.env is not ignored by git" in [f.message for f in report.warnings]


def test_ignored_secrets_file_is_quiet(git_project: Path) -> None:
    write_profile(git_project, "fine", GRPC, secrets=f"QR_GRPC_API_KEY={API_KEY}\n")
    report = validate_profile(find_project(git_project), "fine", environ={})
    assert [f for f in report.findings if f.check == "secrets"] == []
