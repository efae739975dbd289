"""How fast quantum bytes come back after an entropy-server outage, and how loud the outage is.

Workload (issue 11): the reference server (``python -m qr_sampler.server``) in its own process on
127.0.0.1; a "sampler" thread fetching 20,480 bytes every 20 ms through the configured stack
(``QuantumGrpcEntropySource`` with the shipped defaults, wrapped in the fallback with the health
tests); the server is killed with SIGKILL (no goodbye) and, after the outage, restarted on the
same port. Measured per outage length and mode:

- *recovery*: from the moment the restarted server logs "listening" to the first fetch served by
  it (not flagged);
- *warnings*: WARNING lines the ``qr_sampler`` loggers wrote from the kill to the recovery;
- every fetch during the outage must be flagged (``fallback=True``): checked, not timed.

Baseline: the outage length itself (recovery is reported next to it). Target: recovery ≤ 5 s for
1 s, 5 s and 60 s outages; at most one warning per 10 s of outage plus one.

Run: ``python benchmarks/bench_entropy_recovery.py [--outages 1,5,60] [--modes unary,bidi_streaming]
[--json]`` (the default takes about 2.5 minutes: it really waits out each outage).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from qr_sampler.entropy._grpc_config import GrpcClientConfig
from qr_sampler.entropy.fallback import FallbackEntropySource
from qr_sampler.entropy.health import HealthTests
from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource
from qr_sampler.entropy.system import SystemEntropySource

NBYTES = 20_480
STEP_S = 0.02
START_TIMEOUT_S = 30.0
RECOVERY_LIMIT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """The reference server process; ``listening_at`` is when it logged its address."""

    def __init__(self, address: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qr_sampler.server", "--address", address,
             "--log-level", "INFO"], stderr=subprocess.PIPE, text=True)
        lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        stderr = self.proc.stderr
        assert stderr is not None

        def read() -> None:  # drains the pipe for the process's whole life
            for line in stderr:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if "listening on" in line:
                self.listening_at = time.monotonic()
                return

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class _Sampler:
    """Fetches every STEP_S on its own thread, like an engine step loop."""

    source: FallbackEntropySource
    log: list[tuple[float, bool]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            batch = self.source.fetch_batch([NBYTES])
            assert len(batch.data) == NBYTES
            self.log.append((time.monotonic(), batch.fallback))
            time.sleep(STEP_S)


def measure(outage_s: float, mode: str) -> dict[str, float]:
    address = f"127.0.0.1:{_free_port()}"
    server = _Server(address)
    counter = _Counter()
    logging.getLogger("qr_sampler").addHandler(counter)
    grpc_source = QuantumGrpcEntropySource(GrpcClientConfig(address=address, mode=mode))
    sampler = _Sampler(FallbackEntropySource(grpc_source, SystemEntropySource(),
                                             health_tests=HealthTests()))
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    restarted: _Server | None = None
    try:
        time.sleep(1.0)  # steady state
        killed_at = time.monotonic()
        server.kill()
        time.sleep(outage_s)
        restarted = _Server(address)
        deadline = time.monotonic() + RECOVERY_LIMIT_S
        back: list[float] = []
        while not back and time.monotonic() < deadline:
            time.sleep(0.01)
            back = [t for t, fallback in sampler.log if t > restarted.listening_at and not fallback]
        recovered_at = back[0] if back else float("nan")
        during = [fb for t, fb in sampler.log if killed_at + 0.2 < t < restarted.listening_at]
        warnings = [r for r in counter.records
                    if r.levelno >= logging.WARNING and killed_at <= r.created - _EPOCH_SHIFT
                    <= recovered_at]
        return {"outage_s": outage_s, "recovery_s": recovered_at - restarted.listening_at,
                "warning_lines": float(len(warnings)), "steps_during_outage": float(len(during)),
                "all_flagged": float(all(during))}
    finally:
        sampler.stop.set()
        thread.join(10)
        sampler.source.close()
        logging.getLogger("qr_sampler").removeHandler(counter)
        for proc in (server, restarted):
            if proc is not None and proc.proc.poll() is None:
                proc.stop()


#: LogRecord.created is wall-clock; the measurements are monotonic.
_EPOCH_SHIFT = time.time() - time.monotonic()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outages", default="1,5,60", help="outage lengths in seconds")
    parser.add_argument("--modes", default="unary,bidi_streaming", help="client modes")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    logging.getLogger("qr_sampler").setLevel(logging.INFO)
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    rows = [{"mode": mode, **measure(float(o), mode)}
            for mode in args.modes.split(",") for o in args.outages.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'mode':<16} {'outage s':>9} {'recovery s':>11} {'warnings':>9} {'steps down':>11} "
          f"{'all flagged':>12}")
    for row in rows:
        print(f"{row['mode']:<16} {row['outage_s']:9.0f} {row['recovery_s']:11.2f} "
              f"{row['warning_lines']:9.0f} {row['steps_during_outage']:11.0f} "
              f"{'yes' if row['all_flagged'] else 'NO':>12}")
    worst = max(float(row["recovery_s"]) for row in rows)
    print(f"target recovery <= 5 s: {'met' if worst <= 5 else 'NOT met'} (worst {worst:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
