"""Is a service ready? vLLM's ``GET /health`` and the entropy server's gRPC health SERVING.

Every probe has a short timeout and never raises: a refused connection or an error status is a
verdict (``starting`` while a deadline runs, ``unhealthy`` in ``qrs status``), not an
exception. The wait loop is bounded by its deadline and asks the caller, between probes,
whether the processes still live, so a crashed vLLM fails the launch at once instead of after
the full timeout.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qrs_cli.runtime.types import Health, ReadinessCheck

PROBE_TIMEOUT_S = 2.0
POLL_INTERVAL_S = 0.5


def http_health(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """``(ok, detail)`` for one GET; ok only on HTTP 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return reply.status == 200, f"HTTP {reply.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, str(reason) or type(exc).__name__


def grpc_health(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """``(ok, detail)`` for ``grpc.health.v1.Health/Check`` of the whole server ("")."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            return False, code.name if code is not None else "RPC failed"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def probe(check: ReadinessCheck, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Run one readiness check once."""
    if check.kind == "http":
        return http_health(check.target, timeout_s)
    return grpc_health(check.target, timeout_s)


def health_of(check: ReadinessCheck, timeout_s: float = 1.0) -> tuple[Health, str]:
    """The check's verdict for ``qrs status``."""
    ok, detail = probe(check, timeout_s)
    return ("healthy" if ok else "unhealthy"), detail


@dataclass(frozen=True)
class WaitOutcome:
    """How a readiness wait ended: ready, a process died, or the deadline passed."""

    ready: bool
    service: str = ""
    reason: str = ""
    elapsed_s: float = 0.0


def wait_ready(
    checks: Sequence[ReadinessCheck],
    deadline: float,
    *,
    dead: Callable[[], str] = lambda: "",
    on_wait: Callable[[ReadinessCheck, float, str], None] = lambda _c, _t, _d: None,
) -> WaitOutcome:
    """Wait until every check passes, in order, or the monotonic ``deadline`` passes.

    ``dead()`` names a service whose process exited ('' while all live); ``on_wait`` is told
    which check is pending, how long the wait has lasted and the last probe's detail.
    """
    start = time.monotonic()
    for check in checks:
        while True:
            gone = dead()
            if gone:
                return WaitOutcome(False, gone, "exited", time.monotonic() - start)
            left = deadline - time.monotonic()
            ok, detail = probe(check, max(0.2, min(PROBE_TIMEOUT_S, left)))
            if ok:
                break
            if time.monotonic() >= deadline:
                return WaitOutcome(False, check.service, f"not ready ({detail})",
                                   time.monotonic() - start)
            on_wait(check, time.monotonic() - start, detail)
            time.sleep(min(POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))
    return WaitOutcome(True, elapsed_s=time.monotonic() - start)
