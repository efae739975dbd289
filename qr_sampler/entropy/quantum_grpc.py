"""The ``quantum_grpc`` entropy source: bytes from a QRNG (or any compatible) gRPC server.

Compatible means: the request has the byte count in field 1 and the reply the bytes in field 1,
whatever the server's package, service and method names (configured as method paths).

One fetch (``get_random_bytes_batch``), in order:

1. reserve the bytes against the daily budget (refusal: EntropyBudgetExhaustedError, logged
   once per UTC day);
2. split the request into chunks no larger than the server's cap (``max_bytes_per_request``);
3. ask the circuit breaker (open: EntropyUnavailableError; half-open: this fetch is the trial
   and gets a fresh channel);
4. per attempt: take one rate-limit permit per call (wait up to the timeout when
   ``QR_FALLBACK_MODE=error``, otherwise refuse at once so the fallback serves), then let the
   transport fetch the chunks still missing, the first attempt with the breaker's adaptive
   timeout, each retry after a timeout with a longer one;
5. every reply must have exactly the length asked for; failures are retried (transient codes
   only, at most ``retry_count`` times, never for a half-open trial) and otherwise raised as
   EntropyError, with the ``grpc.RpcError`` as the cause, and counted once by the breaker;
6. join the chunks into one EntropyBatch carrying the server's device id and timestamp.

The API key travels only in call metadata: it is never logged, never part of an exception
message (server details are redacted), ``repr`` or :meth:`health`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from qr_sampler.entropy._circuit_breaker import CircuitBreaker, CircuitOpenError
from qr_sampler.entropy._grpc_bidi import BidiTransport
from qr_sampler.entropy._grpc_channel import open_channel
from qr_sampler.entropy._grpc_config import GrpcClientConfig
from qr_sampler.entropy._grpc_transport import (
    CallFailed,
    Reply,
    ServerStreamingTransport,
    Transport,
    UnaryTransport,
)
from qr_sampler.entropy._rate_limit import DailyByteBudget, SlidingWindowLimiter
from qr_sampler.entropy.base import EntropySource
from qr_sampler.errors import EntropyBudgetExhaustedError, EntropyError, EntropyUnavailableError
from qr_sampler.types import EntropyBatch

if TYPE_CHECKING:
    from qr_sampler.settings import Settings

logger = logging.getLogger(__name__)

#: A retry after a timeout waits this many times longer than the attempt before it.
_RETRY_TIMEOUT_GROWTH = 4.0
#: Largest chunk even when the server has no cap: keeps each reply far below gRPC's default
#: 4 MiB message limit on both ends.
MAX_CHUNK_BYTES = 1 << 20
_MASK = "****"

#: What to tell the user per status code, after the server's own words.
_HINTS = {
    grpc.StatusCode.UNAUTHENTICATED:
        "the server wants an API key: set QR_GRPC_API_KEY (and QR_GRPC_API_KEY_HEADER if it "
        "reads another header)",
    grpc.StatusCode.PERMISSION_DENIED:
        "the server rejected the API key: check QR_GRPC_API_KEY and QR_GRPC_API_KEY_HEADER",
    grpc.StatusCode.INVALID_ARGUMENT:
        "if the server caps the bytes per request, set QR_GRPC_MAX_BYTES_PER_REQUEST to its cap",
    grpc.StatusCode.UNIMPLEMENTED:
        "check QR_GRPC_MODE and the method paths (QR_GRPC_METHOD_PATH, "
        "QR_GRPC_STREAM_METHOD_PATH)",
    grpc.StatusCode.UNAVAILABLE: "is the server running and reachable at QR_GRPC_SERVER_ADDRESS?",
}


def chunk_sizes(n: int, cap: int) -> list[int]:
    """Split ``n`` bytes into chunks of ``cap`` bytes, the last one shorter (n, cap ≥ 1)."""
    full, rest = divmod(n, cap)
    return [cap] * full + ([rest] if rest else [])


class QuantumGrpcEntropySource(EntropySource):
    """Fetches bytes over gRPC: unary, server-streaming or bidi, TCP / UDS / TLS / mTLS.

    Assumptions: ``config`` was validated (it validates itself); callers may be several threads.
    Guarantees: no I/O before the first fetch; every call has a deadline; a reply is used only
    if its length is exactly what was asked; the client never makes more calls per minute than
    ``rate_limit_per_min`` nor draws more than ``daily_byte_budget`` bytes per UTC day.
    """

    name = "quantum_grpc"

    def __init__(self, config: GrpcClientConfig, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self._breaker = CircuitBreaker(config.breaker, config.timeout_s, clock=clock)
        # Unlimited (0) means no limiter object at all: nothing to check on the hot path.
        self._rate = (SlidingWindowLimiter(config.rate_limit_per_min, clock=clock, sleep=sleep)
                      if config.rate_limit_per_min else None)
        self._budget = (DailyByteBudget(config.daily_byte_budget, wall_clock=wall_clock)
                        if config.daily_byte_budget else None)
        self._secret = config.api_key.get_secret_value()
        self._metadata = ((config.api_key_header, self._secret),) if self._secret else ()
        self._chunk = min(config.max_bytes_per_request or MAX_CHUNK_BYTES, MAX_CHUNK_BYTES)
        self._clock = clock
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._transport: Transport | None = None
        self._closed = False
        self._budget_logged_day = -1
        self.calls = 0
        self.bytes_received = 0
        self.failed_calls = 0  # attempts, retries included
        self.failed_fetches = 0  # fetches that raised
        self.last_error = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> QuantumGrpcEntropySource:
        return cls(GrpcClientConfig.from_settings(settings))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(address={self.config.address!r}, "
                f"mode={self.config.mode!r}, authenticated={self.config.authenticated})")

    # --- fetching ---------------------------------------------------------------------------

    def get_random_bytes(self, n: int) -> bytes:
        return self.get_random_bytes_batch((n,)).data

    def get_random_bytes_batch(self, counts: Sequence[int]) -> EntropyBatch:
        counts = tuple(counts)
        n = sum(counts)
        if n < 1 or min(counts) < 0:
            raise EntropyUnavailableError(f"asked for byte counts {counts}; need a total ≥ 1")
        start = time.perf_counter_ns()
        budget = self._budget
        day = self._reserve_budget(budget, n) if budget is not None else 0
        got: list[Reply] = []
        try:
            self._fetch(chunk_sizes(n, self._chunk) if n > self._chunk else [n], got)
        finally:
            if budget is not None:  # give back what was reserved but not drawn
                budget.refund(n - sum(len(r.data) for r in got), day)
        self.bytes_received += n
        first = got[0]
        data = first.data if len(got) == 1 else b"".join(r.data for r in got)
        return EntropyBatch(data=data, counts=counts, source=self.name,
                            device_id=first.device_id,
                            generation_timestamp_ns=first.generation_timestamp_ns,
                            latency_ns=time.perf_counter_ns() - start)

    def _fetch(self, sizes: list[int], got: list[Reply]) -> None:
        """Fill ``got`` with one reply per size, retrying transient failures.

        The breaker is asked once per fetch and told once per failed fetch; a retry after a
        timeout gets ``_RETRY_TIMEOUT_GROWTH`` times the previous timeout (up to the configured
        one), so one scheduling hiccup costs a retry, not a fallback.
        """
        pending = list(sizes)
        trial = self._admit_call()
        try:
            transport = self._open_transport(fresh=trial)
            self._take_rate_permits(len(pending))
        except BaseException:
            if trial:
                self._breaker.cancel_trial()  # no call was made: let the next fetch try
            raise
        timeout_s = self._breaker.timeout_s()
        failures = 0
        # Bounded: every round either returns or counts a failure, and the failure that makes
        # retry_count + 1 raises.
        for _ in range(self.config.retry_count + 1):
            self.calls += len(pending)
            try:
                replies = transport.fetch(pending, timeout_s)
            except CallFailed as failure:
                self._accept(failure.done, got, pending)
                failures += 1
                self.failed_calls += 1
                if failure.timed_out_after_s is not None:
                    self._breaker.note_timeout(failure.timed_out_after_s)
                    timeout_s = min(timeout_s * _RETRY_TIMEOUT_GROWTH, self.config.timeout_s)
                if trial or not failure.retryable or failures > self.config.retry_count:
                    self._note_failure(failure)
                    raise self._entropy_error(failure) from self._safe_cause(failure)
                self._take_rate_permits(len(pending))  # a retry's calls count as calls too
                continue
            except BaseException:
                self._breaker.record_failure()  # never leave a half-open trial hanging
                raise
            self._accept(replies, got, pending)
            return
        raise AssertionError("unreachable: the last failed attempt raises")

    def _accept(self, replies: Sequence[Reply], got: list[Reply], pending: list[int]) -> None:
        for reply in replies:
            if self._breaker.record_success(reply.latency_ns / 1e9):
                logger.info("entropy server %s answers again; circuit breaker closed",
                            self.config.address)
            got.append(reply)
        del pending[:len(replies)]

    def _note_failure(self, failure: CallFailed) -> bool:
        self.failed_fetches += 1
        self.last_error = self._redact(failure.reason)
        opened = self._breaker.record_failure()
        if opened:
            snap = self._breaker.snapshot()
            logger.warning("entropy server %s: circuit breaker opened after %d consecutive "
                           "failures (last: %s); next trial in %.2f s", self.config.address,
                           snap["consecutive_failures"], self.last_error,
                           snap["next_trial_in_s"])
        return opened

    def _admit_call(self) -> bool:
        """Ask the breaker; True means this call is the half-open trial."""
        if self._closed:
            raise EntropyUnavailableError("the quantum_grpc source is closed")
        try:
            return self._breaker.before_call()
        except CircuitOpenError as exc:
            raise EntropyUnavailableError(f"entropy server {self.config.address}: {exc}") from exc

    def _open_transport(self, *, fresh: bool) -> Transport:
        """The transport, opened lazily; ``fresh`` replaces the channel first.

        A half-open trial uses a fresh channel: it connects at once instead of waiting out the
        old channel's reconnect backoff.
        """
        if fresh:
            self._drop_transport()
        transport = self._transport
        if transport is not None:  # fast path: no lock once open
            return transport
        with self._lock:
            if self._closed:
                raise EntropyUnavailableError("the quantum_grpc source is closed")
            if self._transport is None:
                self._channel = open_channel(self.config)
                self._transport = self._make_transport(self._channel)
                logger.info("entropy source quantum_grpc: %s channel to %s, mode %s",
                            "TLS" if self.config.tls else "plaintext", self.config.address,
                            self.config.mode)
            return self._transport

    def _make_transport(self, channel: grpc.Channel) -> Transport:
        path = self.config.active_method_path
        if self.config.mode == "bidi_streaming":
            return BidiTransport(channel, path, self._metadata, clock=self._clock)
        if self.config.mode == "server_streaming":
            return ServerStreamingTransport(channel, path, self._metadata)
        return UnaryTransport(channel, path, self._metadata)

    def _drop_transport(self) -> None:
        with self._lock:
            transport, channel = self._transport, self._channel
            self._transport = self._channel = None
        if transport is not None:
            transport.close()
        if channel is not None:
            channel.close()

    # --- limits -----------------------------------------------------------------------------

    def _reserve_budget(self, budget: DailyByteBudget, n: int) -> int:
        day = budget.reserve(n)
        if day is not None:
            return day
        message = (f"daily byte budget spent: QR_GRPC_DAILY_BYTE_BUDGET={budget.budget}, "
                   f"{budget.left} bytes left today, {n} asked; it renews at 00:00 UTC")
        today = budget.day
        if today != self._budget_logged_day:  # once per day, not once per token
            self._budget_logged_day = today
            logger.warning("entropy server %s: %s", self.config.address, message)
        raise EntropyBudgetExhaustedError(message)

    def _take_rate_permits(self, calls: int) -> None:
        if self._rate is None:
            return
        limit = self.config.rate_limit_per_min
        max_wait = self.config.timeout_s if self.config.wait_for_rate_limit else 0.0
        wait = self._rate.acquire(calls, max_wait_s=max_wait)
        if wait == 0.0:
            return
        if wait == float("inf"):
            detail = f"{calls} calls in one fetch exceed it; raise QR_GRPC_MAX_BYTES_PER_REQUEST"
        else:
            detail = f"the next call is possible in {wait:.2f} s"
            if max_wait:
                detail += ", longer than QR_GRPC_TIMEOUT_MS allows waiting"
        raise EntropyBudgetExhaustedError(
            f"client rate limit reached: QR_GRPC_RATE_LIMIT_PER_MIN={limit}; {detail}")

    # --- errors -----------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, _MASK) if self._secret else text

    def _safe_cause(self, failure: CallFailed) -> BaseException | None:
        """The gRPC error to chain, unless the server echoed the key into it (then none)."""
        cause: BaseException = failure.rpc_error or failure
        if self._secret and (self._secret in str(cause) or self._secret in failure.reason):
            return None  # `raise … from None`: a traceback must not print the key either
        return cause

    def _entropy_error(self, failure: CallFailed) -> EntropyError:
        where = f"entropy server {self.config.address} ({self.config.active_method_path})"
        reason = self._redact(failure.reason)
        if failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return EntropyBudgetExhaustedError(
                f"{where} refused: {reason}; its rate limit or quota is reached")
        hint = _HINTS.get(failure.code) if failure.code is not None else None
        return EntropyUnavailableError(f"{where}: {reason}" + (f" ({hint})" if hint else ""))

    # --- lifecycle and status ---------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._drop_transport()

    def health(self) -> dict[str, Any]:
        c = self.config
        breaker = self._breaker.snapshot()
        return {
            "source": self.name,
            "healthy": not self._closed and breaker["circuit"] in ("closed", "disabled"),
            "experimental": self.experimental,
            "address": c.address,
            "mode": c.mode,
            "method_path": c.active_method_path,
            "tls": c.tls,
            "mtls": bool(c.tls and c.tls_client_cert),
            "authenticated": c.authenticated,
            "connected": self._channel is not None,
            **breaker,
            "calls": self.calls,
            "bytes_received": self.bytes_received,
            "failed_calls": self.failed_calls,
            "failed_fetches": self.failed_fetches,
            "last_error": self.last_error,
            "max_bytes_per_request": c.max_bytes_per_request,
            "rate_limit_per_min": c.rate_limit_per_min,
            "calls_in_last_minute": self._rate.in_window() if self._rate else None,
            "daily_byte_budget": c.daily_byte_budget,
            "bytes_today": self._budget.used if self._budget else None,
        }
