"""The EntropyService handlers (thin) and the request policy they apply (auth, cap, rate limit).

The policy raises :class:`Rejected`; the servicer turns it into ``context.abort`` with the status
code, so the rules are testable without gRPC and the status codes stay at the boundary:

- no API key header → UNAUTHENTICATED; a wrong key → PERMISSION_DENIED (checked once per call,
  so once per stream);
- ``bytes_needed`` < 1 or above the cap → INVALID_ARGUMENT;
- over the per-minute request limit → RESOURCE_EXHAUSTED (every stream message is a request);
- the byte source failing (OSError) → UNAVAILABLE.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import grpc

from qr_sampler.entropy._rate_limit import SlidingWindowLimiter
from qr_sampler.proto.entropy_service_pb2 import EntropyRequest, EntropyResponse

logger = logging.getLogger(__name__)

ByteSource = Callable[[int], bytes]


class Rejected(Exception):
    """A request the policy refuses, with the status code the client gets."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RequestPolicy:
    """Decides whether a call / request may be served. Thread-safe."""

    def __init__(self, *, api_key: str, api_key_header: str, max_bytes: int,
                 rate_limit_per_min: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._key = api_key.encode()
        self._header = api_key_header
        self.max_bytes = max_bytes
        self._limiter = SlidingWindowLimiter(rate_limit_per_min, clock=clock)

    def check_call(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        """Authenticate a call from its invocation metadata."""
        if not self._key:
            return
        sent = next((value for key, value in metadata if key == self._header), None)
        if sent is None:
            raise Rejected(grpc.StatusCode.UNAUTHENTICATED,
                           f"this server needs an API key in the '{self._header}' metadata header")
        sent_bytes = sent.encode() if isinstance(sent, str) else sent
        if not hmac.compare_digest(sent_bytes, self._key):
            raise Rejected(grpc.StatusCode.PERMISSION_DENIED, "the API key is not accepted")

    def check_request(self, bytes_needed: int) -> None:
        """Validate one request's size, then count it against the rate limit."""
        if not 1 <= bytes_needed <= self.max_bytes:
            raise Rejected(grpc.StatusCode.INVALID_ARGUMENT,
                           f"bytes_needed={bytes_needed}; this server serves 1 to "
                           f"{self.max_bytes} bytes per request")
        wait = self._limiter.try_acquire()
        if wait:
            raise Rejected(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"rate limit of {self._limiter.limit} requests per minute reached; "
                           f"retry in {wait:.1f} s")


class ServerStats:
    """Counters observable by tests and logged at shutdown. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests_served = 0
        self.bytes_served = 0
        self.rejected: Counter[str] = Counter()

    def served(self, n: int) -> int:
        with self._lock:
            self.requests_served += 1
            self.bytes_served += n
            return self.requests_served

    def reject(self, code: grpc.StatusCode) -> None:
        with self._lock:
            self.rejected[code.name] += 1

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {"requests_served": self.requests_served, "bytes_served": self.bytes_served,
                    "rejected": dict(self.rejected)}


class EntropyServicer:
    """GetEntropy and StreamEntropy: each request gets exactly ``bytes_needed`` fresh bytes,
    its sequence id and nonce echoed, the generation time and the device id."""

    def __init__(self, policy: RequestPolicy, source: ByteSource, device_id: str,
                 stats: ServerStats) -> None:
        self._policy = policy
        self._source = source
        self._device_id = device_id
        self._stats = stats

    def GetEntropy(self, request: EntropyRequest,  # noqa: N802 - gRPC method name
                   context: grpc.ServicerContext) -> EntropyResponse:
        try:
            self._policy.check_call(context.invocation_metadata())
            return self._serve(request)
        except Rejected as rejected:
            self._abort(context, rejected)

    def StreamEntropy(self, requests: Iterator[EntropyRequest],  # noqa: N802 - gRPC method name
                      context: grpc.ServicerContext) -> Iterator[EntropyResponse]:
        try:
            self._policy.check_call(context.invocation_metadata())
            for request in requests:  # ends when the client half-closes or cancels
                yield self._serve(request)
        except Rejected as rejected:
            self._abort(context, rejected)

    def _serve(self, request: EntropyRequest) -> EntropyResponse:
        n = request.bytes_needed
        self._policy.check_request(n)
        try:
            data = self._source(n)
        except OSError as exc:
            raise Rejected(grpc.StatusCode.UNAVAILABLE,
                           f"the entropy device failed: {exc}") from exc
        stamp = time.time_ns()
        count = self._stats.served(n)
        logger.debug("request #%d: served %d bytes (sequence id %d)", count, n,
                     request.sequence_id)
        return EntropyResponse(data=data, sequence_id=request.sequence_id,
                               generation_timestamp_ns=stamp, device_id=self._device_id,
                               nonce=request.nonce)

    def _abort(self, context: grpc.ServicerContext, rejected: Rejected) -> NoReturn:
        self._stats.reject(rejected.code)
        logger.debug("rejected a request: %s: %s", rejected.code.name, rejected.message)
        context.abort(rejected.code, rejected.message)  # raises; never returns
