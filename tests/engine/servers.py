"""Processes and servers for the engine tests: vLLM's OpenAI server and an entropy server.

Everything binds 127.0.0.1, every wait is bounded, and teardown kills the whole process group
of the vLLM server (API server, engine core, worker), so no process outlives the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 240.0
REQUEST_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ByteSwitch:
    """The entropy server's byte source; tests switch what it serves between requests."""

    def __init__(self) -> None:
        self.mode = "urandom"
        self._lock = threading.Lock()

    def set(self, mode: str) -> None:
        with self._lock:
            self.mode = mode

    def __call__(self, n: int) -> bytes:
        with self._lock:
            mode = self.mode
        if mode == "fail":
            raise OSError("device unplugged")  # the server answers with an error status
        if mode == "zeros":
            return bytes(n)
        if mode == "ones":
            return b"\xff" * n
        return os.urandom(n)


class VllmServer:
    """``python -m vllm.entrypoints.launchers.api_server.entry`` in its own process group."""

    def __init__(
        self, model: Path, name: str, env: Mapping[str, str], log_path: Path, *extra: str
    ) -> None:
        self.port = free_port()
        self.name = name
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        cmd = [sys.executable, "-m", "vllm.entrypoints.launchers.api_server.entry",
               "--model", str(model), "--served-model-name", name,
               "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", "float32", "--max-model-len", "512", "--enforce-eager",
               "--kv-cache-memory-bytes", "256M", "--max-logprobs", "20",
               "--generation-config", "vllm", *extra]  # fmt: skip
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                    "VLLM_DO_NOT_TRACK": "1", **env}  # fmt: skip
        self._log = log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            cmd, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"vLLM not ready after {timeout_s} s:\n{self.log_tail()}")

    def __enter__(self) -> VllmServer:
        """Wait until it serves (stopping it if it never does)."""
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST JSON; return (status, decoded body) for success and HTTP errors alike."""
        data = json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def complete(self, prompt: str, **fields: Any) -> dict[str, Any]:
        status, body = self.post(
            "/v1/completions", {"model": self.name, "prompt": prompt, **fields}
        )
        assert status == 200, body
        return body

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL what is left after 20 s."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # children that ignored SIGTERM
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        self._log.close()


def read_records(
    path: Path, *, settle_s: float = 0.3, within_s: float = 10.0
) -> list[dict[str, Any]]:
    """The token records of a diagnostics file (not its manifests and events).

    The plugin writes records from a background thread just after each engine step, so a
    response can reach the client a moment before its last record reaches the file: wait
    (bounded by ``within_s``) until the file has not grown for ``settle_s``.
    """
    deadline = time.monotonic() + within_s
    size, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_size = path.stat().st_size if path.is_file() else 0
        if now_size != size:
            size, stable_since = now_size, time.monotonic()
        elif time.monotonic() - stable_since >= settle_s:
            break
        time.sleep(0.05)
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in lines if r.get("kind", "token") == "token"]
