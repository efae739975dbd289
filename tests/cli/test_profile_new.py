"""``qrs profile new``: answers from flags, prompts, --from and defaults; safe, atomic writes."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import jinja2
import pytest
import yaml
from typer.testing import Result

from qr_sampler.envfile import read_env_file
from qr_sampler.settings import Settings, setting_specs
from qrs_cli.commands import profile as profile_cmd
from qrs_cli.profiles import find_project, writer
from qrs_cli.profiles.compose import compose_argv, find_compose
from qrs_cli.profiles.errors import ProfileError
from qrs_cli.profiles.render import _environment
from tests.cli.conftest import API_KEY, Outcome


def env_values(folder: Path) -> dict[str, str]:
    return {e.key: e.value for e in read_env_file(folder / ".env")}


def test_defaults_profile_is_written_and_validates(
    project: Path, qrs: Callable[..., Outcome]
) -> None:
    made = qrs("profile", "new", "mine", "--defaults")
    assert made.code == 0, made
    folder = project / "deployments" / "mine"
    assert made.out.split() == ["deployments/mine/.env", "deployments/mine/README.md"]
    assert env_values(folder)["QRS_PROFILE"] == "mine"
    assert env_values(folder)["QR_ENTROPY_SOURCE_TYPE"] == "system"
    checked = qrs("profile", "validate", "mine", "--strict")
    assert checked.code == 0, checked
    assert "✓ mine: valid" in checked.out


def test_every_sampler_key_is_in_env_with_its_schema_description(
    project: Path, qrs: Callable[..., Outcome]
) -> None:
    assert qrs("profile", "new", "mine", "--no-input").code == 0
    text = (project / "deployments" / "mine" / ".env").read_text()
    lines = text.splitlines()
    for spec in setting_specs():
        at = next(i for i, ln in enumerate(lines) if ln.lstrip("# ").startswith(spec.env_key + "="))
        assert lines[at - 1].startswith(f"# {spec.description}"), spec.env_key


def test_flags_answer_every_question(project: Path, qrs: Callable[..., Outcome]) -> None:
    outcome = qrs(
        "profile",
        "new",
        "lab",
        "--source",
        "quantum_grpc",
        "--address",
        "127.0.0.1:50099",
        "--mode",
        "bidi_streaming",
        "--method-path",
        "/a.B/C",
        "--stream-method-path",
        "/a.B/D",
        "--api-key-header",
        "x-key",
        "--max-bytes-per-request",
        "4096",
        "--rate-limit-per-min",
        "60",
        "--daily-byte-budget",
        "1000000",
        "--sample-count",
        "8192",
        "--model",
        "org/model",
        "--port",
        "8101",
        "--set",
        "QR_TOP_K=40",
        "--set",
        "VLLM_LOGGING_LEVEL=DEBUG",
        "--set",
        "QRS_RUNTIME=native",
    )
    assert outcome.code == 0, outcome
    values = env_values(project / "deployments" / "lab")
    expected = {
        "QR_ENTROPY_SOURCE_TYPE": "quantum_grpc",
        "QR_GRPC_SERVER_ADDRESS": "127.0.0.1:50099",
        "QR_GRPC_MODE": "bidi_streaming",
        "QR_GRPC_METHOD_PATH": "/a.B/C",
        "QR_GRPC_STREAM_METHOD_PATH": "/a.B/D",
        "QR_GRPC_API_KEY_HEADER": "x-key",
        "QR_GRPC_MAX_BYTES_PER_REQUEST": "4096",
        "QR_GRPC_RATE_LIMIT_PER_MIN": "60",
        "QR_GRPC_DAILY_BYTE_BUDGET": "1000000",
        "QR_SAMPLE_COUNT": "8192",
        "HF_MODEL": "org/model",
        "VLLM_PORT": "8101",
        "QR_TOP_K": "40",
        "VLLM_LOGGING_LEVEL": "DEBUG",
        "QRS_RUNTIME": "native",
    }
    assert {k: values[k] for k in expected} == expected


def test_entropy_server_profile_gets_the_override(
    project: Path, qrs: Callable[..., Outcome]
) -> None:
    assert qrs("profile", "new", "local", "--entropy-server", "--no-input").code == 0
    folder = project / "deployments" / "local"
    assert (folder / "compose.override.yaml").is_file()
    values = env_values(folder)
    assert values["QR_GRPC_SERVER_ADDRESS"] == "entropy-server:50051"
    assert values["QRS_ENTROPY_SERVER_PORT"] == "50051"
    assert qrs("profile", "validate", "local", "--strict").code == 0


def test_dry_run_shows_files_and_writes_nothing(
    project: Path, qrs: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QRS_TEST_KEY", API_KEY)
    outcome = qrs(
        "profile",
        "new",
        "dry",
        "--source",
        "quantum_grpc",
        "--address",
        "h:1",
        "--api-key-env",
        "QRS_TEST_KEY",
        "--dry-run",
    )
    assert outcome.code == 0, outcome
    assert not (project / "deployments" / "dry").exists()
    assert "==> deployments/dry/.env <==" in outcome.out
    assert "QR_GRPC_SERVER_ADDRESS=h:1" in outcome.out
    assert "deployments/dry/secrets.env (mode 0600; contents not shown" in outcome.out
    assert API_KEY not in outcome.text


def test_api_key_goes_only_to_a_0600_secrets_file(
    project: Path, qrs: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QRS_TEST_KEY", API_KEY)
    outcome = qrs(
        "profile",
        "new",
        "keyed",
        "--source",
        "quantum_grpc",
        "--address",
        "h:1",
        "--api-key-env",
        "QRS_TEST_KEY",
    )
    assert outcome.code == 0, outcome
    folder = project / "deployments" / "keyed"
    secrets = folder / "secrets.env"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert {e.key: e.value for e in read_env_file(secrets)} == {"QR_GRPC_API_KEY": API_KEY}
    for other in folder.iterdir():
        if other.name != "secrets.env":
            assert API_KEY not in other.read_text(), other
    assert env_values(folder)["QR_GRPC_API_KEY_HEADER"] == "api-key"
    assert qrs("profile", "validate", "keyed", "--strict").code == 0


def test_force_overwrites_but_keeps_secrets_and_drops_a_stale_override(
    project: Path, qrs: Callable[..., Outcome]
) -> None:
    folder = project / "deployments" / "urandom"
    (folder / "secrets.env").write_text("QR_GRPC_API_KEY=keepme-1234\n")
    (folder / "secrets.env").chmod(0o600)
    outcome = qrs("profile", "new", "urandom", "--no-entropy-server", "--no-input", "--force")
    assert outcome.code == 0, outcome
    assert not (folder / "compose.override.yaml").exists()
    assert (folder / "secrets.env").read_text() == "QR_GRPC_API_KEY=keepme-1234\n"
    assert env_values(folder)["QR_ENTROPY_SOURCE_TYPE"] == "system"


def test_from_copies_settings_but_not_secrets(project: Path, qrs: Callable[..., Outcome]) -> None:
    source = project / "deployments" / "firefly-1"
    (source / "secrets.env").write_text(f"QR_GRPC_API_KEY={API_KEY}\n")
    outcome = qrs("profile", "new", "firefly-2", "--from", "firefly-1", "--port", "8002")
    assert outcome.code == 0, outcome
    copied = env_values(project / "deployments" / "firefly-2")
    original = env_values(source)
    assert copied["QRS_PROFILE"] == "firefly-2" and copied["VLLM_PORT"] == "8002"
    for key in ("QR_GRPC_SERVER_ADDRESS", "QR_GRPC_METHOD_PATH", "QR_GRPC_DAILY_BYTE_BUDGET"):
        assert copied[key] == original[key]
    assert not (project / "deployments" / "firefly-2" / "secrets.env").exists()


def test_from_a_co_located_profile_keeps_its_entropy_server(
    project: Path, qrs: Callable[..., Outcome]
) -> None:
    assert qrs("profile", "new", "local2", "--from", "urandom").code == 0
    assert (project / "deployments" / "local2" / "compose.override.yaml").is_file()


def tty_cli(cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    monkeypatch.setattr(profile_cmd, "_stdin_is_tty", lambda: True)
    return cli


def test_prompts_on_a_terminal_with_hidden_api_key(
    project: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = [
        "n",  # co-located entropy server?
        "quantum_grpc",  # source
        "bad address",  # address: rejected, asked again
        "127.0.0.1:50111",  # address
        "",
        "",
        "",  # mode, method path, stream method path: defaults
        "y",  # needs an API key
        "",  # header: default api-key
        API_KEY,  # hidden API key
        "13312",
        "500",
        "0",
        "20480",
        "",
        "8111",  # limits, sample count, model, port
    ]
    result = tty_cli(cli, monkeypatch)("profile", "new", "asked", input="\n".join(answers) + "\n")
    assert result.exit_code == 0, result.output
    assert "must not contain spaces" in result.stderr
    assert API_KEY not in result.output
    folder = project / "deployments" / "asked"
    values = env_values(folder)
    assert values["QR_GRPC_SERVER_ADDRESS"] == "127.0.0.1:50111"
    assert values["QR_GRPC_MAX_BYTES_PER_REQUEST"] == "13312" and values["VLLM_PORT"] == "8111"
    assert "QR_GRPC_API_KEY" not in values
    assert read_env_file(folder / "secrets.env")[0].value == API_KEY


def test_flags_are_not_asked_again(
    project: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = ["", "", ""]  # sample count, model, port
    result = tty_cli(cli, monkeypatch)(
        "profile",
        "new",
        "half",
        "--no-entropy-server",
        "--source",
        "system",
        input="\n".join(answers) + "\n",
    )
    assert result.exit_code == 0, result.output
    assert "Entropy source" not in result.stderr and "Host port" in result.stderr


def test_defaults_flag_never_prompts(
    project: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = tty_cli(cli, monkeypatch)("profile", "new", "quiet", "--defaults", input="")
    assert result.exit_code == 0, result.output
    assert "?" not in result.stderr


def test_a_failed_write_leaves_no_partial_profile(
    project: Path, qrs: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real_replace = os.replace

    def failing_replace(src: str, dst: str) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(writer.os, "replace", failing_replace)
    outcome = qrs("profile", "new", "partial", "--no-input")
    assert outcome.code == 1 and "No space left on device" in outcome.err
    leftovers = [p.name for p in (project / "deployments").iterdir() if "partial" in p.name]
    assert leftovers == []


def test_library_refuses_to_overwrite_without_force(project: Path) -> None:
    from qrs_cli.profiles import ProfileRequest, plan_profile

    with pytest.raises(ProfileError, match="already exists"):
        plan_profile(find_project(project), ProfileRequest("urandom"))


def test_rendered_env_loads_in_the_plugin_schema(
    project: Path, qrs: Callable[..., Outcome]
) -> None:
    """What `new` writes is what the plugin reads (same strict reader, same schema)."""
    from qr_sampler.settings import load_settings

    assert qrs("profile", "new", "plugin", "--entropy-server", "--no-input").code == 0
    settings = load_settings(project / "deployments" / "plugin" / ".env", environ={})
    assert isinstance(settings, Settings)
    assert settings.entropy_source_type == "quantum_grpc"


def test_values_that_need_quotes_survive_both_readers(
    project: Path, qrs: Callable[..., Outcome]
) -> None:
    """Single quotes keep spaces, '#' and '$' literal for our reader and for Compose alike."""
    outcome = qrs(
        "profile",
        "new",
        "quoted",
        "--no-input",
        "--set",
        "QR_DIAGNOSTICS_PATH=/data/run #1 $HOME.jsonl",
    )
    assert outcome.code == 0, outcome
    folder = project / "deployments" / "quoted"
    assert env_values(folder)["QR_DIAGNOSTICS_PATH"] == "/data/run #1 $HOME.jsonl"
    tool = find_compose()
    assert tool is not None
    argv = compose_argv(tool, find_project(project), folder)
    proc = subprocess.run(argv[:-1], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    env = yaml.safe_load(proc.stdout)["services"]["vllm"]["environment"]
    assert env["QR_DIAGNOSTICS_PATH"] == "/data/run #1 $$HOME.jsonl"  # `config` keeps $$


def test_templates_render_strictly() -> None:
    env = _environment()
    assert env.undefined is jinja2.StrictUndefined
    with pytest.raises(jinja2.UndefinedError):
        env.get_template("README.md.j2").render({})
