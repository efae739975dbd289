"""The ``quantum_grpc`` entropy source: bytes from a QRNG (or any compatible) gRPC server.

Compatible means: the request has the byte count in field 1 and the reply the bytes in field 1,
whatever the server's package, service and method names (configured as method paths).

One fetch (:meth:`QuantumGrpcEntropySource.fetch_batch`), in order:

1. ask the circuit breaker (open: EntropyUnavailableError ``kind="circuit_open"``, at once;
   half-open: this fetch is the trial, gets a fresh channel and a timeout that covers a
   reconnect);
2. split the request into chunks no larger than the server's cap (``max_bytes_per_request``);
3. take one call permit per chunk and reserve the bytes from the quota ledger, shared by every
   process of the host that uses the same server (``_quota``): refused → EntropyBudgetExhaustedError
   ``kind="rate_limit"`` or ``"budget"`` (with ``QR_FALLBACK_MODE=error`` it first waits up to
   the call timeout for a permit);
4. let the transport fetch the chunks, each request carrying the nonce; the first attempt gets
   the breaker's adaptive timeout, each retry after a timeout a longer one;
5. every reply must have exactly the length asked for and echo either the nonce or nothing;
   failures are retried (transient codes only, at most ``retry_count`` times, never for a
   half-open trial; each retry takes its permits too) and otherwise raised as EntropyError with
   a ``kind``, the ``grpc.RpcError`` as the cause, and counted once by the breaker;
6. give back the reserved bytes that were not drawn; decide the echo (all replies echoed the
   nonce: ``echo_verified=True``; none did: None; a mix: a failure, ``kind="echo_mismatch"``);
   join the chunks into one EntropyBatch carrying the server's device id and timestamp.

When the breaker opens, a readiness watcher (``_grpc_readiness``) follows the server's
connectivity in the background, without calls, and ends the pause as soon as the server accepts
connections again, so quantum bytes return about a second after the server does while no step
ever waits on a dead server. This module logs only at DEBUG (and the first channel at INFO): the
fallback wrapper logs the outage once, its summaries and the recovery.

The API key travels only in call metadata: it is never logged, never part of an exception
message (server details are redacted), ``repr`` or :meth:`health`; the quota state file is named
by a hash of (address, method, hash of the key).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from qr_sampler.entropy._circuit_breaker import CircuitBreaker, CircuitOpenError
from qr_sampler.entropy._grpc_bidi import BidiTransport
from qr_sampler.entropy._grpc_channel import open_channel
from qr_sampler.entropy._grpc_config import GrpcClientConfig
from qr_sampler.entropy._grpc_readiness import ReadinessWatcher
from qr_sampler.entropy._grpc_transport import (
    CallFailed,
    Reply,
    ServerStreamingTransport,
    Transport,
    UnaryTransport,
)
from qr_sampler.entropy._quota import (
    QuotaLedger,
    QuotaRefused,
    default_state_dir,
    server_identity,
)
from qr_sampler.entropy.base import EntropySource
from qr_sampler.errors import EntropyBudgetExhaustedError, EntropyError, EntropyUnavailableError
from qr_sampler.types import EntropyBatch

if TYPE_CHECKING:
    from qr_sampler.settings import Settings

logger = logging.getLogger(__name__)

#: A retry after a timeout waits this many times longer than the attempt before it.
_RETRY_TIMEOUT_GROWTH = 4.0
#: Least timeout of a half-open trial (capped by QR_GRPC_TIMEOUT_MS): the trial runs on a fresh
#: channel, so it must cover a connection (DNS, TCP, TLS, HTTP/2 settings: a few round trips even
#: between continents) on top of the call; the adaptive timeout, learnt from calls on a warm
#: connection, can be a few milliseconds and would doom every trial.
TRIAL_TIMEOUT_FLOOR_S = 1.0
#: How long the readiness watcher lets a connection attempt run before it calls the server down
#: (and holds the breaker open). A wrong "down" costs nothing: the watcher releases the breaker
#: the moment the channel is READY.
_READINESS_VERDICT_S = 0.5
#: Largest chunk even when the server has no cap: keeps each reply far below gRPC's default
#: 4 MiB message limit on both ends.
MAX_CHUNK_BYTES = 1 << 20
_MASK = "****"
_DAY_S = 86_400

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
    if its length is exactly what was asked and it echoes the nonce or nothing; together with
    every process of the host that uses the same server (and the same quota folder), the client
    never makes more calls in any 60 s than ``rate_limit_per_min`` nor draws more than
    ``daily_byte_budget`` bytes per UTC day, across restarts.

    ``clock`` (monotonic) drives the breaker; ``wall_clock`` (Unix seconds) and ``sleep`` drive
    the quotas (they must agree between processes). Tests inject all three.
    """

    name = "quantum_grpc"

    def __init__(self, config: GrpcClientConfig, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self._breaker = CircuitBreaker(config.breaker, config.timeout_s, clock=clock)
        self._secret = config.api_key.get_secret_value()
        self._metadata = ((config.api_key_header, self._secret),) if self._secret else ()
        self._chunk = min(config.max_bytes_per_request or MAX_CHUNK_BYTES, MAX_CHUNK_BYTES)
        # No limit at all means no ledger: nothing to check (no file I/O) on the hot path.
        self._quota = self._make_quota(wall_clock, sleep) if (
            config.rate_limit_per_min or config.daily_byte_budget) else None
        self._wall_clock = wall_clock
        self._clock = clock
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._transport: Transport | None = None
        self._watcher: ReadinessWatcher | None = None
        # One "it may be back already" per outage (see _watch_server); renewed on recovery.
        self._assume_down_left = True
        self._closed = False
        self._channels_opened = 0
        self._budget_logged_day = -1
        self.calls = 0
        self.bytes_received = 0
        self.failed_calls = 0  # attempts, retries included
        self.failed_fetches = 0  # fetches that raised
        self.echo_mismatches = 0
        self.last_error = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> QuantumGrpcEntropySource:
        return cls(GrpcClientConfig.from_settings(settings))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(address={self.config.address!r}, "
                f"mode={self.config.mode!r}, authenticated={self.config.authenticated})")

    def _make_quota(self, wall_clock: Callable[[], float],
                    sleep: Callable[[float], None]) -> QuotaLedger:
        c = self.config
        folder = c.quota_state_dir
        state_dir = None if folder is None else (
            Path(folder).expanduser() if folder else default_state_dir())
        return QuotaLedger(
            limit_per_min=c.rate_limit_per_min, daily_bytes=c.daily_byte_budget,
            identity=server_identity(c.address, c.active_method_path, self._secret),
            server=f"{c.address} {c.active_method_path}", state_dir=state_dir,
            wall_clock=wall_clock, sleep=sleep)

    # --- fetching ---------------------------------------------------------------------------

    def get_random_bytes(self, n: int) -> bytes:
        return self.fetch_batch((n,)).data

    def get_random_bytes_batch(self, counts: Sequence[int]) -> EntropyBatch:
        return self.fetch_batch(counts)

    def fetch_batch(self, counts: Sequence[int], nonce: bytes = b"") -> EntropyBatch:
        """One fetch for all rows; every request carries ``nonce`` and its echo is verified."""
        counts = tuple(counts)
        n = sum(counts)
        if n < 1 or min(counts) < 0:
            raise EntropyUnavailableError(f"asked for byte counts {counts}; need a total ≥ 1",
                                          kind="error")
        start = time.perf_counter_ns()
        sizes = chunk_sizes(n, self._chunk) if n > self._chunk else [n]
        trial = self._admit_call()
        try:
            day = self._take_quota(len(sizes), n)
        except BaseException:
            if trial:
                self._breaker.cancel_trial()  # no call was made: let the next fetch try
            raise
        got: list[Reply] = []
        try:
            self._fetch(sizes, got, trial=trial, nonce=nonce)
        finally:
            if self._quota is not None:  # give back what was reserved but not drawn
                self._quota.refund(n - sum(len(r.data) for r in got), day)
        echo_verified = self._echo_verdict(got, nonce)
        self.bytes_received += n
        first = got[0]
        data = first.data if len(got) == 1 else b"".join(r.data for r in got)
        return EntropyBatch(data=data, counts=counts, source=self.name,
                            device_id=first.device_id,
                            generation_timestamp_ns=first.generation_timestamp_ns,
                            latency_ns=time.perf_counter_ns() - start,
                            nonce=nonce, echo_verified=echo_verified)

    def _fetch(self, sizes: list[int], got: list[Reply], *, trial: bool, nonce: bytes) -> None:
        """Fill ``got`` with one reply per size, retrying transient failures.

        The breaker was asked once for this fetch and is told once if it fails; a retry after a
        timeout gets ``_RETRY_TIMEOUT_GROWTH`` times the previous timeout (up to the configured
        one), so one scheduling hiccup costs a retry, not a fallback.
        """
        pending = list(sizes)
        try:
            transport = self._open_transport(fresh=trial)
        except BaseException:
            if trial:
                self._breaker.cancel_trial()
            raise
        timeout_s = self._trial_timeout() if trial else self._breaker.timeout_s()
        failures = 0
        # Bounded: every round either returns or counts a failure, and the failure that makes
        # retry_count + 1 raises.
        for _ in range(self.config.retry_count + 1):
            self.calls += len(pending)
            try:
                replies = transport.fetch(pending, timeout_s, nonce)
            except CallFailed as failure:
                self._accept(failure.done, got, pending)
                failures += 1
                self.failed_calls += 1
                if failure.timed_out_after_s is not None:
                    self._breaker.note_timeout(failure.timed_out_after_s)
                    timeout_s = min(timeout_s * _RETRY_TIMEOUT_GROWTH, self.config.timeout_s)
                if trial or not failure.retryable or failures > self.config.retry_count:
                    self._note_failure(failure.reason, failure.kind)
                    raise self._entropy_error(failure) from self._safe_cause(failure)
                self._take_quota(len(pending), 0)  # a retry's calls count as calls too
                continue
            except BaseException:
                self._breaker.record_failure()  # never leave a half-open trial hanging
                raise
            self._accept(replies, got, pending)
            return
        raise AssertionError("unreachable: the last failed attempt raises")

    def _trial_timeout(self) -> float:
        return min(self.config.timeout_s, max(self._breaker.timeout_s(), TRIAL_TIMEOUT_FLOOR_S))

    def _accept(self, replies: Sequence[Reply], got: list[Reply], pending: list[int]) -> None:
        for reply in replies:
            if self._breaker.record_success(reply.latency_ns / 1e9):
                self._assume_down_left = True
                logger.debug("entropy server %s answers again; circuit breaker closed",
                             self.config.address)
            got.append(reply)
        del pending[:len(replies)]

    def _echo_verdict(self, got: Sequence[Reply], nonce: bytes) -> bool | None:
        """True when every reply echoed ``nonce``, None when none echoed; a mix is a failure.

        (A reply echoing another value already failed in the transport.)
        """
        if not nonce:
            return None
        echoed = sum(1 for r in got if r.nonce)
        if echoed == len(got):
            return True
        if echoed == 0:
            return None
        reason = (f"{echoed} of {len(got)} replies echoed the nonce and the others did not; "
                  "their bytes are not used")
        self._note_failure(reason, "echo_mismatch")
        raise EntropyUnavailableError(
            f"entropy server {self.config.address} ({self.config.active_method_path}): {reason}",
            kind="echo_mismatch")

    def _note_failure(self, reason: str, kind: str) -> None:
        self.failed_fetches += 1
        if kind == "echo_mismatch":
            self.echo_mismatches += 1
        self.last_error = self._redact(reason)
        if self._breaker.record_failure():
            snap = self._breaker.snapshot()
            logger.debug("entropy server %s: circuit breaker opened after %d consecutive "
                         "failures (last: %s)", self.config.address,
                         snap["consecutive_failures"], self.last_error)
            self._watch_server(kind)

    def _watch_server(self, kind: str) -> None:
        """Start the readiness watcher unless one is running (the breaker just opened).

        When the calls found no server (``unavailable``), the watcher may take a connection it
        gets at once for the server's return, since it may have come back before the watcher
        looked; once per outage, so a server that accepts connections but fails its calls gets
        one early trial, then the recovery window's pace.
        """
        with self._lock:
            if self._closed:
                return
            if self._watcher is not None:  # from an earlier opening: its verdicts are stale
                self._watcher.stop(join_s=0)
            assume_down = kind == "unavailable" and self._assume_down_left
            if assume_down:
                self._assume_down_left = False
            self._watcher = ReadinessWatcher(
                lambda: open_channel(self.config), self._breaker,
                verdict_s=min(_READINESS_VERDICT_S, self.config.timeout_s),
                address=self.config.address, assume_down=assume_down)
            self._watcher.start()

    def _admit_call(self) -> bool:
        """Ask the breaker; True means this call is the half-open trial."""
        if self._closed:
            raise EntropyUnavailableError("the quantum_grpc source is closed")
        try:
            return self._breaker.before_call()
        except CircuitOpenError as exc:
            raise EntropyUnavailableError(f"entropy server {self.config.address}: {exc}",
                                          kind="circuit_open") from exc

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
                self._channels_opened += 1
                # INFO once (what the process talks to); reconnects are routine: DEBUG.
                logger.log(logging.INFO if self._channels_opened == 1 else logging.DEBUG,
                           "entropy source quantum_grpc: %s channel to %s, mode %s",
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

    # --- quotas -----------------------------------------------------------------------------

    def _take_quota(self, calls: int, nbytes: int) -> int:
        """Take call permits and reserve bytes; return the UTC day of the reservation."""
        quota = self._quota
        if quota is None:
            return 0
        max_wait = self.config.timeout_s if self.config.wait_for_rate_limit else 0.0
        try:
            return quota.admit(calls, nbytes, max_wait_s=max_wait)
        except QuotaRefused as refusal:
            raise self._quota_error(refusal, calls, nbytes, max_wait) from None

    def _quota_error(self, refusal: QuotaRefused, calls: int, nbytes: int,
                     max_wait: float) -> EntropyBudgetExhaustedError:
        c = self.config
        shared = ""
        if self._quota is not None and self._quota.shared:
            shared = " (shared by the processes of this host)"
        if refusal.kind == "budget":
            message = (f"daily byte budget spent{shared}: QR_GRPC_DAILY_BYTE_BUDGET="
                       f"{c.daily_byte_budget}, {refusal.bytes_left} bytes left today, {nbytes} "
                       "asked; it renews at 00:00 UTC")
            today = int(self._wall_clock() // _DAY_S)
            if today != self._budget_logged_day:  # once per day, not once per token
                self._budget_logged_day = today
                logger.info("entropy server %s: %s", c.address, message)
            return EntropyBudgetExhaustedError(message, kind="budget")
        if refusal.wait_s == float("inf"):
            detail = f"{calls} calls in one fetch exceed it; raise QR_GRPC_MAX_BYTES_PER_REQUEST"
        else:
            detail = f"the next call is possible in {refusal.wait_s:.2f} s"
            if max_wait:
                detail += ", longer than QR_GRPC_TIMEOUT_MS allows waiting"
        return EntropyBudgetExhaustedError(
            f"client rate limit reached{shared}: QR_GRPC_RATE_LIMIT_PER_MIN="
            f"{c.rate_limit_per_min}; {detail}", kind="rate_limit")

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
                f"{where} refused: {reason}; its rate limit or quota is reached",
                kind="rate_limit")
        hint = _HINTS.get(failure.code) if failure.code is not None else None
        return EntropyUnavailableError(f"{where}: {reason}" + (f" ({hint})" if hint else ""),
                                       kind=failure.kind)

    # --- lifecycle and status ---------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._closed = True
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
        self._drop_transport()
        if self._quota is not None:
            self._quota.close()

    def health(self) -> dict[str, Any]:
        c = self.config
        breaker = self._breaker.snapshot()
        quota = self._quota.snapshot() if self._quota is not None else None
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
            "echo_mismatches": self.echo_mismatches,
            "last_error": self.last_error,
            "max_bytes_per_request": c.max_bytes_per_request,
            "rate_limit_per_min": c.rate_limit_per_min,
            "calls_in_last_minute": quota["calls_in_window"] if quota else None,
            "quota_calls_left": quota["calls_left"] if quota else None,
            "daily_byte_budget": c.daily_byte_budget,
            "bytes_today": quota["bytes_today"] if quota else None,
            "quota_bytes_left_today": quota["bytes_left"] if quota else None,
            "quota_shared": self._quota.shared if self._quota is not None else None,
        }
