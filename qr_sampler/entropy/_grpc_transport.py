"""How the client asks for bytes: the unary and server-streaming transports and what they share.

A transport turns "give me chunks of these sizes" into gRPC calls on one channel and returns
one :class:`Reply` per chunk, in order, each already length-checked, or raises
:class:`CallFailed` carrying the replies it did get. It knows nothing of retries, limits or the
circuit breaker: the entropy source decides those. The bidi transport lives in ``_grpc_bidi``.

Messages are encoded with the generated ``EntropyRequest`` / ``EntropyResponse`` classes, which
is all any compatible server needs: byte count in request field 1, bytes in reply field 1.
Unary and server-streaming requests carry only field 1 (no sequence id), so a server whose
request message declares something else at field 2 is not confused by it; a nonce travels in
field 20001, which servers built from another .proto skip as unknown.

Nonce echo: every reply carries what it echoed (``Reply.nonce``, b"" when nothing). A reply that
echoes *something other* than the nonce sent is a failure here (``kind="echo_mismatch"``, not
retried, its bytes never used); whether every reply echoed is the source's verdict.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import grpc

from qr_sampler.proto.entropy_service_pb2 import EntropyRequest, EntropyResponse

#: Codes worth another attempt: the server or the path to it may be fine a moment later.
RETRYABLE_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED,
})
Metadata = tuple[tuple[str, str], ...]


class Reply(NamedTuple):
    """One chunk's bytes and what the server said about them (a tuple: cheapest to build)."""

    data: bytes
    sequence_id: int
    generation_timestamp_ns: int
    device_id: str
    #: How long this reply took to arrive (from its call or from the previous reply on a stream).
    latency_ns: int
    #: The nonce the server echoed (b"" when it echoed none).
    nonce: bytes = b""


class CallFailed(Exception):
    """A transport call did not produce a valid reply.

    ``reason`` is a sentence for humans (it may quote the server's status details; the source
    redacts secrets before showing it); ``done`` are the chunks received before the failure;
    ``rpc_error`` is the gRPC error behind it, if any (the cause of the EntropyError raised);
    ``kind`` is the failure's category (:data:`qr_sampler.errors.ENTROPY_ERROR_KINDS`), from the
    status code unless given.
    """

    def __init__(self, reason: str, *, code: grpc.StatusCode | None = None,
                 retryable: bool = False, timed_out_after_s: float | None = None,
                 done: Sequence[Reply] = (), rpc_error: grpc.RpcError | None = None,
                 kind: str = "") -> None:
        super().__init__(reason)
        self.rpc_error = rpc_error
        self.reason = reason
        self.code = code
        self.retryable = retryable
        self.timed_out_after_s = timed_out_after_s
        self.done = tuple(done)
        self.kind = kind or _KIND_BY_CODE.get(code, "error")

    def with_done(self, done: Sequence[Reply]) -> CallFailed:
        """A copy carrying the caller's own completed replies (one failure may be shared)."""
        return CallFailed(self.reason, code=self.code, retryable=self.retryable,
                          timed_out_after_s=self.timed_out_after_s, done=done,
                          rpc_error=self.rpc_error, kind=self.kind)


#: Failure category by status code; every other code (auth, bad argument, ...) is ``error``.
_KIND_BY_CODE: dict[grpc.StatusCode | None, str] = {
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.CANCELLED: "unavailable",
    grpc.StatusCode.ABORTED: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate_limit",
}


def failure_from_rpc_error(exc: grpc.RpcError, timeout_s: float | None) -> CallFailed:
    """Describe a failed call; a deadline error remembers the call's timeout for the breaker."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else "") or ""
    timed_out = timeout_s if code == grpc.StatusCode.DEADLINE_EXCEEDED else None
    reason = f"{code.name}: {details}" if details else code.name
    return CallFailed(reason, code=code, retryable=code in RETRYABLE_CODES,
                      timed_out_after_s=timed_out, rpc_error=exc)


def checked_reply(response: EntropyResponse, data: bytes, want: int, latency_ns: int,
                  done: Sequence[Reply], nonce: bytes = b"") -> Reply:
    """The reply for a chunk of ``want`` bytes; a short or long reply, or one echoing another
    nonce than the one sent, is a failure, never used."""
    if len(data) != want:
        raise CallFailed(f"the server returned {len(data)} bytes for a request of {want}",
                         done=done)
    echo = response.nonce
    if echo and echo != nonce:
        raise echo_mismatch(nonce, echo, done)
    return Reply(data, response.sequence_id, response.generation_timestamp_ns,
                 response.device_id, latency_ns, echo)


def echo_mismatch(sent: bytes, echoed: bytes, done: Sequence[Reply]) -> CallFailed:
    """The failure for a reply that echoed ``echoed`` to a request that carried ``sent``."""
    what = f"nonce {sent.hex()[:16]}…" if sent else "no nonce"
    return CallFailed(f"the server echoed nonce {echoed.hex()[:16]}… to a request with {what}; "
                      "its bytes are not used", done=done, kind="echo_mismatch")


class Transport(Protocol):
    """What the entropy source needs from a transport."""

    def fetch(self, sizes: Sequence[int], timeout_s: float, nonce: bytes = b"") -> list[Reply]:
        """One reply per size, in order; each call (or stream reply) gets ``timeout_s``; every
        request carries ``nonce`` (b"" = none)."""

    def close(self) -> None:
        """Stop any stream and thread the transport owns (the channel is closed by its owner)."""


class UnaryTransport:
    """One unary call per chunk, made on the caller's thread (gRPC's fastest sync path)."""

    def __init__(self, channel: grpc.Channel, method_path: str, metadata: Metadata) -> None:
        self._call = channel.unary_unary(
            method_path,
            request_serializer=EntropyRequest.SerializeToString,
            response_deserializer=EntropyResponse.FromString,
        )
        self._metadata = metadata

    def fetch(self, sizes: Sequence[int], timeout_s: float, nonce: bytes = b"") -> list[Reply]:
        done: list[Reply] = []
        for n in sizes:
            start = time.perf_counter_ns()
            try:
                response = self._call(EntropyRequest(bytes_needed=n, nonce=nonce),
                                      timeout=timeout_s, metadata=self._metadata)
            except grpc.RpcError as exc:
                raise failure_from_rpc_error(exc, timeout_s).with_done(done) from exc
            except ValueError as exc:  # the channel was closed under us (reset or close)
                raise CallFailed(f"channel closed: {exc}", retryable=True, done=done) from exc
            done.append(checked_reply(response, response.data, n,
                                      time.perf_counter_ns() - start, done, nonce))
        return done

    def close(self) -> None:
        """Nothing to stop: unary calls end with the call."""


class ServerStreamingTransport:
    """One call per chunk on the streaming method: one request in, replies until the server ends.

    The server may split a chunk over several messages; they are joined and the total must
    equal the size asked for, and every message must echo the same nonce. Works against a true
    server-streaming method and against a bidi method that answers each request once (the
    client half-closes after its one request).
    """

    def __init__(self, channel: grpc.Channel, method_path: str, metadata: Metadata) -> None:
        self._call = channel.unary_stream(
            method_path,
            request_serializer=EntropyRequest.SerializeToString,
            response_deserializer=EntropyResponse.FromString,
        )
        self._metadata = metadata

    def fetch(self, sizes: Sequence[int], timeout_s: float, nonce: bytes = b"") -> list[Reply]:
        done: list[Reply] = []
        for n in sizes:
            start = time.perf_counter_ns()
            try:
                first, data = self._one_chunk(n, timeout_s, nonce, done)
            except grpc.RpcError as exc:
                raise failure_from_rpc_error(exc, timeout_s).with_done(done) from exc
            except ValueError as exc:  # the channel was closed under us (reset or close)
                raise CallFailed(f"channel closed: {exc}", retryable=True, done=done) from exc
            if first is None:
                raise CallFailed("the server ended the stream without a reply", done=done)
            done.append(checked_reply(first, data, n, time.perf_counter_ns() - start, done,
                                      nonce))
        return done

    def _one_chunk(self, n: int, timeout_s: float, nonce: bytes,
                   done: Sequence[Reply]) -> tuple[EntropyResponse | None, bytes]:
        call = self._call(EntropyRequest(bytes_needed=n, nonce=nonce), timeout=timeout_s,
                          metadata=self._metadata)
        first: EntropyResponse | None = None
        parts: list[bytes] = []
        received = 0
        # Bounded: every message must add at least one byte, and the deadline ends the call.
        for count, response in enumerate(call, start=1):
            first = first or response
            if response.nonce != first.nonce:  # one echo per chunk, or it is not an echo
                call.cancel()  # type: ignore[no-untyped-call]  # stop reading a stream we reject
                raise echo_mismatch(nonce, response.nonce or first.nonce, done)
            parts.append(response.data)
            received += len(response.data)
            if received > n or count > n:
                call.cancel()  # type: ignore[no-untyped-call]  # already too long: stop reading, the length check reports it
                break
        return first, parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Nothing to stop: each call ends with its chunk."""
