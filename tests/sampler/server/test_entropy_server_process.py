"""The server as a process: ``python -m qr_sampler.server`` and ``qrs serve-entropy``.

Signals, a SIGKILL mid-stream with a restart on the same port, the API key from the environment.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from qr_sampler.entropy._circuit_breaker import BreakerConfig
from qr_sampler.entropy._grpc_config import GrpcClientConfig
from qr_sampler.entropy.fallback import FallbackEntropySource
from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource
from qr_sampler.entropy.system import SystemEntropySource
from qr_sampler.errors import EntropyUnavailableError
from tests.sampler.entropy.grpc_test_support import API_KEY, FakeClock

START_TIMEOUT_S = 20.0
SERVER = [sys.executable, "-m", "qr_sampler.server"]
CLI = [sys.executable, "-m", "qrs_cli", "serve-entropy"]


class ServerProcess:
    """A server subprocess; its stderr is collected by a thread so the pipe never fills."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, **(env or {})})
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.stderr: list[str] = []
        assert self.proc.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        self._reader.start()
        self.address = self._wait_for_address()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]  # ends when the process exits
            self._lines.put(line)

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.stderr.append(line)
            if match := re.search(r"listening on (\S+)", line):
                return match.group(1)
        self.kill()
        raise AssertionError("server did not start:\n" + self.text())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def text(self) -> str:
        while not self._lines.empty():
            self.stderr.append(self._lines.get())
        return "".join(self.stderr)


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.kill()
        for stream in (process.proc.stdout, process.proc.stderr):
            if stream is not None:
                stream.close()


def _client(address: str, **config: object) -> QuantumGrpcEntropySource:
    """A client whose adaptive timeout never drops below 1 s (CI machines are busy)."""
    return QuantumGrpcEntropySource(GrpcClientConfig(
        address=address, breaker=BreakerConfig(min_timeout_s=1.0), **config))  # type: ignore[arg-type]


def test_module_help() -> None:
    result = subprocess.run([*SERVER, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--api-key-env VAR" in result.stdout and "--grace-period" in result.stdout
    assert "--api-key " not in result.stdout  # no flag takes the key itself


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_logs_the_counter(
        sig: signal.Signals, processes: list[ServerProcess]) -> None:
    server = ServerProcess([*SERVER, "--address", "127.0.0.1:0", "--grace-period", "1"])
    processes.append(server)
    client = _client(server.address, mode="bidi_streaming")
    try:
        client.get_random_bytes_batch([100, 200])
    finally:
        client.close()
    assert server.stop(sig) == 0
    log = server.text()
    assert f"received {sig.name}" in log
    assert "stopped" in log and "'requests_served': 1" in log


def test_killed_mid_stream_then_restarted_on_the_same_port(
        processes: list[ServerProcess]) -> None:
    first = ServerProcess([*SERVER, "--address", "127.0.0.1:0"])
    processes.append(first)
    clock = FakeClock()
    grpc_source = QuantumGrpcEntropySource(
        GrpcClientConfig(address=first.address, mode="bidi_streaming", retry_count=0,
                         breaker=BreakerConfig(failure_threshold=2, recovery_window_s=3.0,
                                               min_timeout_s=1.0)),
        clock=clock)
    source = FallbackEntropySource(grpc_source, SystemEntropySource())
    try:
        assert not source.get_random_bytes_batch([1024]).fallback
        first.stop(signal.SIGKILL)  # no goodbye: the open stream just breaks
        broken = [source.get_random_bytes_batch([1024]) for _ in range(3)]
        assert all(b.fallback and len(b.data) == 1024 for b in broken)
        assert grpc_source.health()["circuit"] == "open"
        second = ServerProcess([*SERVER, "--address", first.address])
        processes.append(second)
        # No clock advance: the readiness watcher ends the pause when the server is back.
        deadline = time.monotonic() + 10
        while source.get_random_bytes_batch([1024]).fallback:
            assert time.monotonic() < deadline, "no quantum bytes within 10 s of the restart"
            time.sleep(0.01)
        assert grpc_source.health()["circuit"] == "closed"
    finally:
        source.close()  # first: an open stream would hold the server for its grace period
    assert second.stop() == 0
    assert "'requests_served': 1" in second.text()


def test_api_key_from_the_environment(processes: list[ServerProcess]) -> None:
    server = ServerProcess([*SERVER, "--address", "127.0.0.1:0", "--api-key-env",
                            "QRS_TEST_ENTROPY_KEY", "--log-level", "DEBUG"],
                           env={"QRS_TEST_ENTROPY_KEY": API_KEY})
    processes.append(server)
    keyed, anonymous = _client(server.address, api_key=API_KEY), _client(server.address)
    try:
        assert len(keyed.get_random_bytes(32)) == 32
        with pytest.raises(EntropyUnavailableError, match="UNAUTHENTICATED"):
            anonymous.get_random_bytes(32)
    finally:
        keyed.close()
        anonymous.close()
    assert server.stop() == 0
    log = server.text()
    assert "API key required" in log and "UNAUTHENTICATED" in log
    assert API_KEY not in log


def test_missing_key_variable_is_a_usage_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "QRS_NOT_SET"}
    result = subprocess.run([*SERVER, "--api-key-env", "QRS_NOT_SET"], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 2
    assert "Error: the variable named by --api-key-env is not set or is empty" in result.stderr
    assert "Hint: export it first" in result.stderr
    assert "QRS_NOT_SET" not in result.stderr  # what was passed may be the key itself


def test_qrs_serve_entropy_runs_and_stops(processes: list[ServerProcess]) -> None:
    server = ServerProcess([*CLI, "--address", "127.0.0.1:0", "--max-bytes-per-request", "64"])
    processes.append(server)
    client = _client(server.address, max_bytes_per_request=64)
    try:
        assert len(client.get_random_bytes(100)) == 100  # two calls under the server's cap
    finally:
        client.close()
    assert server.stop() == 0
    assert "served 2 requests (100 bytes)" in server.text()


@pytest.mark.parametrize(("args", "message"), [
    (["--api-key-env", "QRS_NOT_SET"], "named by --api-key-env is not set"),
    (["--api-key-env", "sk-live-123"], "NAME of an environment variable"),
    (["--address", "localhost"], "address 'localhost'"),
    (["--log-level", "loud"], "is not a level"),
    (["--tls-client-ca", "ca.pem"], "needs TLS"),
])
def test_qrs_serve_entropy_bad_options(args: list[str], message: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from qrs_cli.main import main

    assert main(["serve-entropy", *args]) == 2
    err = capsys.readouterr().err
    assert "Error: " in err and message in err


def test_qrs_serve_entropy_help_never_offers_the_key_as_a_flag() -> None:
    from qrs_cli.main import app

    result = CliRunner().invoke(app, ["serve-entropy", "--help"])
    assert result.exit_code == 0
    assert "--api-key-env" in result.output and "--grace-period" in result.output
    assert not re.search(r"--api-key\s", result.output)


def test_the_server_package_and_client_construction_stay_light() -> None:
    probe = (
        "import sys, json\n"
        "import qr_sampler.server, qr_sampler.server.config\n"
        "light = 'grpc' not in sys.modules\n"
        "from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource\n"
        "from qr_sampler.settings import settings_from_mapping\n"
        "s = settings_from_mapping({'QR_GRPC_SERVER_ADDRESS': '127.0.0.1:9',"
        " 'QR_GRPC_MODE': 'bidi_streaming'})\n"
        "src = QuantumGrpcEntropySource.from_settings(s)\n"
        "threads = __import__('threading').active_count()\n"
        "print(json.dumps([light, src.health()['connected'], threads]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert json.loads(out) == [True, False, 1]  # no grpc import, no channel, no thread
