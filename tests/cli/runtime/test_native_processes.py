"""The native runtime with real processes: the reference entropy server, and a fake vLLM.

The fake (``fake_vllm.py``) is started exactly as vLLM would be, serves ``/health`` and forks a
grandchild, so these tests cover the whole launch — ports, environment, readiness, state file,
``status``, ``logs``, ``down`` leaving no process behind, and failures (a crash, a deadline,
a taken port) — in seconds. The real vLLM is in ``test_native_vllm.py`` (slow).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from qrs_cli.runtime.processes import session_members
from qrs_cli.runtime.state import read_state
from tests.cli.conftest import Outcome, assert_one_line_error
from tests.cli.runtime.conftest import Ports


def _pids(profile: str = "urandom") -> list[int]:
    state = read_state(profile)
    assert state is not None
    return [p.pid for p in state.processes]


def _live(pids: list[int]) -> list[int]:
    return [member for pid in pids for member in session_members(pid)]


def test_up_status_logs_down_leave_no_process(
    project: Path, qrs: Callable[..., Outcome], ports: Ports, fake_engine: Path
) -> None:
    up = qrs("up", "urandom", "--native", "--model", str(fake_engine), "--timeout", "60")
    assert up.code == 0, up.text
    assert f"http://127.0.0.1:{ports.vllm}/v1" in up.out
    assert '"vllm_xargs": {"qr_top_k": 20}' in up.out and "curl -s" in up.out
    assert "qrs logs urandom --follow" in up.out and "qrs down urandom" in up.out
    pids = _pids()
    # vLLM, its grandchild and the entropy server all live in the recorded sessions.
    assert len(_live(pids)) >= 3

    status = qrs("status", "urandom", "--json")
    assert status.code == 0, status.text
    (stack,) = json.loads(status.out)["stacks"]
    assert stack["healthy"] and stack["runtime"] == "native" and stack["started_at"]
    assert {s["name"]: s["ports"] for s in stack["services"]} == {
        "entropy-server": [ports.entropy], "vllm": [ports.vllm]}
    assert all(s["health"] == "healthy" and s["pid"] for s in stack["services"])

    logs = qrs("logs", "urandom", "--service", "vllm")
    assert "fake vllm: serving /health" in logs.out
    # The profile's Compose address became the local server; VLLM_PORT was kept from vLLM.
    assert f"QR_GRPC_SERVER_ADDRESS=127.0.0.1:{ports.entropy}" in logs.out
    assert "VLLM_PORT=<unset>" in logs.out
    both = qrs("logs", "urandom", "--tail", "200")
    assert "entropy-server | " in both.out and "vllm | " in both.out

    again = qrs("up", "urandom", "--native", "--model", str(fake_engine))
    assert again.code == 0 and "already running" in again.out

    down = qrs("down", "urandom")
    assert down.code == 0 and "stopped urandom (native)" in down.out
    assert _live(pids) == []
    assert read_state("urandom") is None
    assert qrs("status", "urandom").code == 1
    assert "not running" in qrs("down", "urandom").out


def test_a_crashing_vllm_fails_the_launch_and_stops_the_entropy_server(
    project: Path, qrs: Callable[..., Outcome], ports: Ports, fake_engine: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "crash")
    outcome = qrs("up", "urandom", "--native", "--model", str(fake_engine), "--timeout", "60")
    assert_one_line_error(outcome, 1, "vllm exited with code 3 before it was ready")
    assert "simulated engine failure" in outcome.err  # the log's last lines are shown
    assert read_state("urandom") is None
    with socket.socket() as s:  # the entropy server's port is free again
        s.bind(("127.0.0.1", ports.entropy))


def test_the_deadline_stops_a_launch_that_never_gets_ready(
    project: Path, qrs: Callable[..., Outcome], ports: Ports, fake_engine: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_MODE", "hang")
    outcome = qrs("up", "urandom", "--native", "--model", str(fake_engine), "--timeout", "3")
    assert_one_line_error(outcome, 1, "vllm was not ready")
    assert "--timeout" in outcome.err
    assert read_state("urandom") is None


def test_a_taken_port_is_refused_before_anything_starts(
    project: Path, qrs: Callable[..., Outcome], ports: Ports, fake_engine: Path
) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", ports.vllm))
        blocker.listen()
        outcome = qrs("up", "urandom", "--native", "--model", str(fake_engine))
    assert_one_line_error(outcome, 1, f"port {ports.vllm} on 127.0.0.1 for vllm is in use")
    assert "VLLM_PORT=<port>" in outcome.err
    assert read_state("urandom") is None


def test_follow_ends_when_the_stack_stops(
    project: Path, qrs: Callable[..., Outcome], ports: Ports, fake_engine: Path
) -> None:
    import threading

    from qrs_cli.runtime import bring_down

    assert qrs("up", "urandom", "--native", "--model", str(fake_engine)).code == 0
    stopper = threading.Timer(1.5, bring_down, args=("urandom",))
    stopper.start()
    try:
        outcome = qrs("logs", "urandom", "--follow", "--service", "entropy-server")
    finally:
        stopper.join(30)
    assert outcome.code == 0
    assert "listening on 127.0.0.1" in outcome.out
