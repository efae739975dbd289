"""``qrs profile validate | show | list``: findings, origins, summaries, exit codes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from qrs_cli.profiles import compose as compose_mod
from qrs_cli.profiles import find_project, validate_profile
from tests.cli.conftest import Outcome, write_profile

GRPC = "QR_ENTROPY_SOURCE_TYPE=quantum_grpc\nQR_GRPC_SERVER_ADDRESS=qrng.lab:50051\n"


def test_warnings_pass_unless_strict(project: Path, qrs: Callable[..., Outcome]) -> None:
    assert qrs("profile", "validate", "firefly-1").code == 0
    strict = qrs("profile", "validate", "firefly-1", "--strict")
    assert strict.code == 1
    assert "errors or warnings (--strict)" in strict.err


def test_json_report(project: Path, qrs: Callable[..., Outcome]) -> None:
    write_profile(project, "bad", "QR_TOP_K=-1\n")
    outcome = qrs("profile", "validate", "--all", "--json")
    assert outcome.code == 1
    data = json.loads(outcome.out)
    by_name = {p["profile"]: p for p in data["profiles"]}
    assert set(by_name) == {"bad", "firefly-1", "urandom"}  # _template is not a profile
    assert by_name["urandom"]["valid"] is True
    (finding,) = by_name["bad"]["findings"]
    assert finding == {
        "severity": "error",
        "check": "schema",
        "key": "QR_TOP_K",
        "message": finding["message"],
        "hint": finding["hint"],
        "file": "deployments/bad/.env",
        "line": 2,
    }
    assert "QR_TOP_K=-1" in finding["message"]
    assert by_name["firefly-1"]["findings"][0]["severity"] == "warning"


def test_templates_can_be_validated_by_name(project: Path, qrs: Callable[..., Outcome]) -> None:
    assert qrs("profile", "validate", "_template", "--strict").code == 0


def test_loopback_address_under_compose_is_a_warning(project: Path) -> None:
    write_profile(project, "loop", "QR_ENTROPY_SOURCE_TYPE=quantum_grpc\n")
    report = validate_profile(find_project(project), "loop", environ={})
    assert [f.check for f in report.warnings] == ["address"]
    assert "the vLLM container itself" in report.warnings[0].message


def test_unused_co_located_server_is_a_warning(project: Path) -> None:
    folder = project / "deployments" / "urandom"
    text = (
        (folder / ".env")
        .read_text()
        .replace("QR_ENTROPY_SOURCE_TYPE=quantum_grpc", "QR_ENTROPY_SOURCE_TYPE=system")
    )
    (folder / ".env").write_text(text)
    report = validate_profile(find_project(project), "urandom", environ={})
    assert any("started but not used" in f.message for f in report.warnings)


def test_rate_limit_below_calls_per_token_is_a_warning(project: Path) -> None:
    env = GRPC + "QR_GRPC_MAX_BYTES_PER_REQUEST=1000\nQR_GRPC_RATE_LIMIT_PER_MIN=5\n"
    write_profile(project, "slow", env)
    report = validate_profile(find_project(project), "slow", environ={})
    assert any("one token needs 21 calls" in f.message for f in report.warnings)


def test_process_environment_takes_part(
    project: Path, qrs: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QR_TOP_P", "7")
    outcome = qrs("profile", "validate", "urandom")
    assert outcome.code == 1
    assert "environment: QR_TOP_P=7" in outcome.out


def test_duplicate_keys_and_dollar_values_warn(project: Path) -> None:
    write_profile(project, "dup", "QR_TOP_K=5\nQR_TOP_K=6\nHF_MODEL=org/$NAME\n")
    report = validate_profile(find_project(project), "dup", environ={})
    messages = [f.message for f in report.findings]
    assert any("QR_TOP_K is set again (first on line 2)" in m for m in messages)
    assert any("Compose would expand the '$'" in m for m in messages)


def test_structural_fallback_without_compose(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compose_mod, "find_compose", lambda: None)
    layout = find_project(project)
    report = validate_profile(layout, "urandom", environ={})
    assert report.compose_checker == "compose-spec schema (structural only)"
    assert [f.message for f in report.errors] == []
    assert any("Docker Compose v2 not found" in f.message for f in report.warnings)
    write_profile(project, "shape", "", override="services:\n  x:\n    image: y\n    ports: 5\n")
    report = validate_profile(layout, "shape", environ={})
    assert any("ports" in f.message for f in report.errors)


def test_compose_binary_from_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    real = compose_mod.find_compose()
    assert real is not None
    monkeypatch.setenv(compose_mod.COMPOSE_BIN_VAR, real.argv[0])
    assert compose_mod.find_compose() == compose_mod.ComposeTool((real.argv[0],), real.version)
    monkeypatch.setenv(compose_mod.COMPOSE_BIN_VAR, "/nonexistent/compose")
    assert compose_mod.find_compose() is not None  # falls through to the next candidate


def test_show_lists_every_key_with_its_origin(
    project: Path, qrs: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = project / "deployments" / "firefly-1"
    (folder / "secrets.env").write_text("QR_GRPC_API_KEY=hidden-value-123\nQR_TOP_K=33\n")
    monkeypatch.setenv("QR_TOP_P", "0.5")
    outcome = qrs("profile", "show", "firefly-1", "--json")
    assert outcome.code == 0, outcome
    rows = {r["key"]: r for r in json.loads(outcome.out)["settings"]}
    assert rows["QR_GRPC_SERVER_ADDRESS"]["origin"] == "profile .env"
    assert rows["QR_TOP_K"] == {**rows["QR_TOP_K"], "value": "33", "origin": "secrets file"}
    assert rows["QR_TOP_P"] == {**rows["QR_TOP_P"], "value": "0.5", "origin": "process env"}
    assert rows["QR_MIN_P"]["origin"] == "default"
    assert rows["QR_GRPC_API_KEY"]["value"] == "****" and rows["QR_GRPC_API_KEY"]["secret"]
    assert rows["VLLM_PORT"] == {**rows["VLLM_PORT"], "value": "8000", "kind": "stack"}
    text = qrs("profile", "show", "firefly-1")
    assert text.code == 0
    assert any(ln.split()[:3] == ["QR_TOP_K", "33", "secrets"] for ln in text.out.splitlines())


def test_list_table_and_json(project: Path, qrs: Callable[..., Outcome]) -> None:
    write_profile(project, "bad", "QR_TOP_K=x\n")
    table = qrs("profile", "list")
    assert table.code == 0
    lines = table.out.splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "ADDRESS", "MODE", "VALID"]
    assert lines[1].split() == ["bad", "system", "-", "-", "no", "(1", "error)"]
    assert lines[2].split()[:4] == ["firefly-1", "quantum_grpc", "10.0.0.115:50051", "unary"]
    data = json.loads(qrs("profile", "list", "--json").out)
    assert [d["name"] for d in data] == ["bad", "firefly-1", "urandom"]
    assert data[2] == {
        "name": "urandom",
        "source": "quantum_grpc",
        "address": "entropy-server:50051",
        "mode": "unary",
        "errors": 0,
        "warnings": 0,
        "valid": True,
    }


def test_list_without_profiles(tmp_path: Path, qrs: Callable[..., Outcome]) -> None:
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "compose.yaml").write_text("services: {}\n")
    outcome = qrs("profile", "list", "--root", str(tmp_path))
    assert outcome.code == 0 and "No profiles yet" in outcome.err
    assert json.loads(qrs("profile", "list", "--json", "--root", str(tmp_path)).out) == []


def test_project_is_found_from_a_subfolder(
    project: Path, qrs: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QRS_ROOT")
    sub = project / "deployments" / "urandom"
    monkeypatch.chdir(sub)
    outcome = qrs("profile", "list", "--json")
    assert outcome.code == 0 and len(json.loads(outcome.out)) == 2
    outcome = qrs("profile", "list", "--json", "--root", str(project / "deployments"))
    assert outcome.code == 0 and len(json.loads(outcome.out)) == 2
    assert os.getcwd() == str(sub)
