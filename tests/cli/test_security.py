"""Security rules of issue 13: vLLM's unauthenticated API beyond loopback is a warning with the
way to protect it, and under Compose the API key travels as a Compose secret."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from qrs_cli.profiles import find_project, validate_profile
from tests.cli.conftest import API_KEY, Outcome, write_profile

Qrs = Callable[..., Outcome]


@pytest.mark.parametrize(("address", "warned"), [
    ("0.0.0.0", True), ("192.168.1.20", True), ("::", True),
    ("127.0.0.1", False), ("127.0.0.2", False), ("::1", False),
])
def test_bind_address_beyond_loopback_is_a_warning(project: Path, address: str,
                                                   warned: bool) -> None:
    write_profile(project, "exposed", f"QRS_BIND_ADDRESS={address}\n")
    report = validate_profile(find_project(project), "exposed", environ={})
    found = [f for f in report.findings if f.check == "exposure"]
    assert bool(found) == warned
    if warned:
        (finding,) = found
        assert finding.severity == "warning" and finding.key == "QRS_BIND_ADDRESS"
        assert "no authentication" in finding.message
        assert "reverse proxy" in finding.hint and "firewall" in finding.hint
        assert finding.location == "deployments/exposed/.env:2"
    assert report.passed()  # a warning: --strict makes it fail


def test_bind_warning_from_the_process_environment(project: Path, qrs: Qrs,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QRS_BIND_ADDRESS", "0.0.0.0")
    outcome = qrs("profile", "validate", "urandom", "--strict")
    assert outcome.code == 1
    assert "environment: QRS_BIND_ADDRESS=0.0.0.0 publishes vLLM's API" in outcome.out


def test_compose_launch_adds_the_key_file_only_when_there_is_a_key(
    project: Path, qrs: Qrs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QRS_STATE_DIR", str(tmp_path / "state"))
    key_file = str(project / "deployments" / "compose.api-key.yaml")

    def argv() -> list[str]:
        outcome = qrs("up", "firefly-1", "--dry-run", "--skip-probe", "--json")
        assert outcome.code == 0, outcome
        assert API_KEY not in outcome.text
        return list(json.loads(outcome.out)["steps"][0]["argv"])

    assert key_file not in argv()
    secrets = project / "deployments" / "firefly-1" / "secrets.env"
    secrets.write_text(f"QR_GRPC_API_KEY={API_KEY}\n")
    secrets.chmod(0o600)
    with_key = argv()
    assert with_key[with_key.index(key_file) - 1] == "-f"
    assert with_key.index(key_file) > with_key.index(str(project / "deployments" /
                                                         "compose.yaml"))
    valid = qrs("profile", "validate", "firefly-1", "--strict")
    assert valid.code == 0, valid  # Compose accepted the secret (real `compose config`)
