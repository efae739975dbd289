"""Before a launch: a remote entropy server gets a quick probe (connect, tls, shape).

The "remote" server here is the reference server on loopback, started by the test, not by
``qrs up``: the launch must probe it (one entropy call), refuse to start when it is down, and
pass its address to vLLM unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qrs_cli.runtime.state import read_state
from tests.cli.conftest import Outcome, assert_one_line_error, write_profile
from tests.cli.runtime.conftest import Ports, free_port


@pytest.fixture
def entropy_server() -> Iterator[object]:
    from qr_sampler.server import EntropyServer, ServerConfig

    with EntropyServer(ServerConfig(address="127.0.0.1:0")) as server:
        yield server


def _remote_profile(project: Path, address: str) -> None:
    write_profile(project, "remote", "QR_ENTROPY_SOURCE_TYPE=quantum_grpc\n"
                  f"QR_GRPC_SERVER_ADDRESS={address}\nQRS_RUNTIME=native\n")


def test_a_reachable_remote_server_is_probed_then_used(
    project: Path, qrs: Callable[..., Outcome], ports: Ports, fake_engine: Path,
    entropy_server: object
) -> None:
    address = entropy_server.address  # type: ignore[attr-defined]
    _remote_profile(project, address)
    outcome = qrs("up", "remote", "--model", str(fake_engine), "--timeout", "60")
    assert outcome.code == 0, outcome.text
    assert f"entropy: quick probe of {address}" in outcome.err
    assert "asked 20,480 bytes, got 20,480" in outcome.err
    assert entropy_server.stats.summary()["requests_served"] == 1  # type: ignore[attr-defined]
    state = read_state("remote")
    assert state is not None and [p.service for p in state.processes] == ["vllm"]
    logs = qrs("logs", "remote")
    assert f"QR_GRPC_SERVER_ADDRESS={address}" in logs.out
    assert qrs("down", "remote").code == 0


def test_an_unreachable_remote_server_stops_the_launch(
    project: Path, qrs: Callable[..., Outcome], ports: Ports, fake_engine: Path
) -> None:
    _remote_profile(project, f"127.0.0.1:{free_port()}")
    outcome = qrs("up", "remote", "--model", str(fake_engine))
    assert_one_line_error(outcome, 1, "failed the quick probe (connect)")
    assert "--skip-probe launches anyway" in outcome.err
    assert read_state("remote") is None


def test_skip_probe_launches_without_asking_the_server(
    project: Path, qrs: Callable[..., Outcome], ports: Ports, fake_engine: Path
) -> None:
    _remote_profile(project, f"127.0.0.1:{free_port()}")
    outcome = qrs("up", "remote", "--model", str(fake_engine), "--skip-probe")
    assert outcome.code == 0, outcome.text
    assert "quick probe" not in outcome.err
    assert qrs("down", "remote").code == 0
