"""The runtime's small parts on their own: state file, process identity, logs, health, output."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qrs_cli import output
from qrs_cli.runtime import health, processes
from qrs_cli.runtime.errors import LaunchError
from qrs_cli.runtime.logs import last_line, tail_lines
from qrs_cli.runtime.state import (
    STATE_FILE,
    ProcessRecord,
    StackState,
    known_profiles,
    read_state,
    write_state,
)
from qrs_cli.runtime.types import ReadinessCheck, Step
from tests.cli.runtime.conftest import free_port


def test_state_round_trips_privately(state_dir: Path) -> None:
    state = StackState("demo", "native", 1700000000.5, "/p", endpoint="http://127.0.0.1:1",
                       processes=(ProcessRecord("vllm", 42, 7, 1, "/l", ("a", "b")),),
                       ports=(("vllm", 1),), checks=(ReadinessCheck("vllm", "http", "u"),))
    path = write_state(state)
    assert path == state_dir / "demo" / STATE_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_state("demo") == state
    assert known_profiles() == ["demo"]
    path.write_text("{not json")
    with pytest.raises(LaunchError, match="unreadable"):
        read_state("demo")


def test_a_reused_pid_is_not_our_process(tmp_path: Path) -> None:
    step = Step("sleeper", (sys.executable, "-c", "import time; time.sleep(60)"),
                log=str(tmp_path / "s.log"))
    record = processes.spawn(step, os.environ, 0)
    try:
        assert processes.is_running(record)
        impostor = ProcessRecord("sleeper", record.pid, record.start_ticks + 1, 0, record.log)
        assert not processes.is_running(impostor)
    finally:
        assert processes.stop(record, grace_s=5) == []
    assert not processes.is_running(record)


def test_stop_reaches_children_that_left_the_process_group(tmp_path: Path) -> None:
    code = ("import os, subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import os, time; os.setpgid(0, 0); "
            "time.sleep(60)'])\n"
            "time.sleep(60)\n")
    record = processes.spawn(Step("parent", (sys.executable, "-c", code),
                                  log=str(tmp_path / "p.log")), os.environ, 0)
    deadline = time.monotonic() + 10
    while len(processes.session_members(record.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(processes.session_members(record.pid)) == 2
    assert processes.stop(record, grace_s=5) == []
    assert processes.session_members(record.pid) == []


def test_tail_reads_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert tail_lines(log, 3) == ["line 99997", "line 99998", "line 99999"]
    assert tail_lines(tmp_path / "missing.log", 3) == []
    assert last_line(log, 8) == "line 99…"


def test_health_checks_say_why_without_raising() -> None:
    port = free_port()
    ok, detail = health.http_health(f"http://127.0.0.1:{port}/health", 0.5)
    assert not ok and "refused" in detail.lower()
    ok, detail = health.grpc_health(f"127.0.0.1:{port}", 0.5)
    assert not ok and detail in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    from qr_sampler.server import EntropyServer, ServerConfig

    with EntropyServer(ServerConfig(address="127.0.0.1:0")) as server:
        assert health.grpc_health(server.address) == (True, "SERVING")


def test_wait_gives_up_at_the_deadline_and_on_a_dead_process() -> None:
    check = ReadinessCheck("vllm", "http", f"http://127.0.0.1:{free_port()}/health")
    start = time.monotonic()
    outcome = health.wait_ready([check], time.monotonic() + 1.0)
    assert not outcome.ready and outcome.service == "vllm" and outcome.reason.startswith("not")
    assert time.monotonic() - start < 10  # gave up at the 1 s deadline (slow machines: margin)
    dead = health.wait_ready([check], time.monotonic() + 30, dead=lambda: "vllm")
    assert not dead.ready and dead.reason == "exited"


def test_status_line_is_plain_and_quiet_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    line = output.StatusLine(every_s=60)
    for second in range(5):
        line.update(f"vllm: waiting ({second} s)")
    line.update("vllm: loading weights (5 s)")
    line.clear()
    assert stream.getvalue().splitlines() == ["vllm: waiting (0 s)",
                                              "vllm: loading weights (5 s)"]
    assert "\033" not in stream.getvalue()


def test_commands_import_no_heavy_module() -> None:
    code = ("import sys\nfrom qrs_cli.main import app\n"
            "heavy = [m for m in ('grpc', 'torch', 'vllm', 'jinja2', "
            "'qrs_cli.runtime', 'qrs_cli.doctor') if m in sys.modules]\nprint(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["../../x", "/etc", "a/b", ".."])
def test_a_path_is_not_a_profile_name_for_the_state_dir(name: str, state_dir: Path) -> None:
    from qrs_cli.runtime.state import profile_state_dir

    with pytest.raises(LaunchError, match="is a path") as info:
        profile_state_dir(name)
    assert info.value.exit_code == 2


def test_dry_run_environment_masks_every_secret_looking_key() -> None:
    step = Step("vllm", ("python",), env=(("QR_GRPC_API_KEY", "k1"), ("QR_X_TOKEN", "k2"),
                                          ("QR_TOP_K", "5")))
    shown = dict(step.shown_env())
    assert shown == {"QR_GRPC_API_KEY": "****", "QR_X_TOKEN": "****", "QR_TOP_K": "5"}
    assert "k1" not in step.shell() and "k2" not in step.shell()
