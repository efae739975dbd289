"""The bidi-streaming transport: one long-lived stream, replies matched to requests by sequence id.

Why a stream: a sampler fetches entropy every engine step, and a message on an open stream costs
about half a unary call (no new HTTP/2 stream, no per-call metadata exchange).

How it works: requests go into a queue that feeds the gRPC call's request iterator; a reader
thread takes each reply off the stream and hands it to the caller waiting for that sequence id
(each waiter blocks on its own lock, with a timeout). Several callers may share the stream at
once, and one caller's chunks are pipelined: all of them are sent before the first reply is read.

Invariants:
- Sequence ids are unique per transport, so a reply can only ever be handed to the request it
  answers. A caller that gives up (timeout, or a wrong-length reply earlier in its fetch)
  *abandons* its remaining ids: their late replies are dropped when they come, and the stream
  stays usable for everyone else sharing it.
- A reply whose id was neither asked for nor abandoned is a protocol error (e.g. a server that
  does not echo ids). That, an RPC error, the server ending the stream, or more than
  ``_MAX_ABANDONED`` replies outstanding for nobody *breaks* the stream: the call is cancelled,
  every waiter is failed, and the next fetch opens a fresh stream.
- The stream call has an explicit deadline (``STREAM_MAX_AGE_S``); it is replaced before it could
  expire in the middle of a fetch.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import grpc

from qr_sampler.entropy._grpc_transport import (
    CallFailed,
    Metadata,
    Reply,
    checked_reply,
    failure_from_rpc_error,
)
from qr_sampler.proto.entropy_service_pb2 import EntropyRequest, EntropyResponse

#: Deadline of one stream; a fresh stream replaces it before then.
STREAM_MAX_AGE_S = 3600.0
#: How long ``close`` waits for the reader thread to notice the cancelled stream.
_READER_JOIN_S = 2.0
#: Replies still owed to callers that gave up; beyond this the server is not keeping up (or not
#: answering at all) and a fresh stream is the better bet.
_MAX_ABANDONED = 64


class _Waiter:
    """One pending request: its lock is released when the reply (or a failure) is in."""

    __slots__ = ("failure", "ready", "response")

    def __init__(self) -> None:
        self.ready = threading.Lock()
        self.ready.acquire()  # held until the reader (or a failure) releases it
        self.response: EntropyResponse | None = None
        self.failure: CallFailed | None = None


class _Stream:
    """One open StreamEntropy call, its request queue and the thread reading its replies."""

    def __init__(self, method: grpc.StreamStreamMultiCallable[EntropyRequest, EntropyResponse],
                 metadata: Metadata,
                 clock: Callable[[], float]) -> None:
        self._requests: queue.SimpleQueue[EntropyRequest | None] = queue.SimpleQueue()
        self._waiters: dict[int, _Waiter] = {}
        self._abandoned: set[int] = set()
        self._lock = threading.Lock()
        self.failure: CallFailed | None = None
        self.expires_at = clock() + STREAM_MAX_AGE_S
        self._call = method(self._request_iterator(), timeout=STREAM_MAX_AGE_S,
                            metadata=metadata)
        self._reader = threading.Thread(target=self._read_replies, name="qr-grpc-bidi-reader",
                                        daemon=True)
        self._reader.start()

    def _request_iterator(self) -> Iterator[EntropyRequest]:
        """Feeds gRPC's sending thread; ``None`` in the queue ends the request stream."""
        while (request := self._requests.get()) is not None:
            yield request

    def _read_replies(self) -> None:
        try:
            for response in self._call:
                seq = response.sequence_id
                with self._lock:
                    waiter = self._waiters.pop(seq, None)
                    late = waiter is None and seq in self._abandoned
                    if late:
                        self._abandoned.discard(seq)
                if late:
                    continue  # its caller gave up; the bytes are dropped, never reused
                if waiter is None:
                    self.break_(CallFailed(
                        f"a reply carried sequence id {response.sequence_id}, which matches no "
                        "pending request; the server must echo sequence_id on the stream",
                        retryable=True))
                    return
                waiter.response = response
                waiter.ready.release()
            self.break_(CallFailed("the server ended the stream", retryable=True))
        except grpc.RpcError as exc:
            # No per-request timeout to report: the stream's own deadline is not a latency.
            self.break_(failure_from_rpc_error(exc, None))

    def break_(self, failure: CallFailed) -> None:
        """Fail every waiter and cancel the call; idempotent (the first failure is kept)."""
        with self._lock:
            if self.failure is None:
                self.failure = failure
            waiters = list(self._waiters.values())
            self._waiters.clear()
        for waiter in waiters:
            waiter.failure = self.failure
            waiter.ready.release()
        self._requests.put(None)  # lets gRPC's request-consuming thread finish
        self._call.cancel()  # type: ignore[no-untyped-call]

    def exchange(self, sizes: Sequence[int], sequence_ids: Iterator[int],
                 timeout_s: float, nonce: bytes = b"") -> list[Reply]:
        """Send one request per size (each carrying ``nonce``), then collect the replies in
        order."""
        requests = [EntropyRequest(bytes_needed=n, sequence_id=next(sequence_ids), nonce=nonce)
                    for n in sizes]
        waiters = [_Waiter() for _ in requests]
        with self._lock:
            if self.failure is not None:
                raise self.failure.with_done(())
            for request, waiter in zip(requests, waiters, strict=True):
                self._waiters[request.sequence_id] = waiter
        for request in requests:
            self._requests.put(request)
        done: list[Reply] = []
        try:
            for n, waiter in zip(sizes, waiters, strict=True):
                start = time.perf_counter_ns()
                if not waiter.ready.acquire(timeout=timeout_s):
                    raise CallFailed(
                        f"DEADLINE_EXCEEDED: no reply on the stream within "
                        f"{timeout_s * 1000:.1f} ms", code=grpc.StatusCode.DEADLINE_EXCEEDED,
                        retryable=True, timed_out_after_s=timeout_s, done=done)
                if waiter.failure is not None:
                    raise waiter.failure.with_done(done)
                response = waiter.response
                assert response is not None  # released without failure ⇒ the reader set it
                done.append(checked_reply(response, response.data, n,
                                          time.perf_counter_ns() - start, done, nonce))
        except CallFailed:
            self._abandon([r.sequence_id for r in requests[len(done):]])
            raise
        return done

    def _abandon(self, sequence_ids: Sequence[int]) -> None:
        """Give up on these requests: their replies, if any come, are dropped."""
        with self._lock:
            for seq in sequence_ids:
                if self._waiters.pop(seq, None) is not None:
                    self._abandoned.add(seq)
            overloaded = len(self._abandoned) > _MAX_ABANDONED
        if overloaded:
            self.break_(CallFailed(f"more than {_MAX_ABANDONED} replies overdue on the stream",
                                   retryable=True))

    def close(self) -> None:
        self.break_(CallFailed("the stream was closed by the client", retryable=True))
        if self._reader is not threading.current_thread():
            self._reader.join(_READER_JOIN_S)


class BidiTransport:
    """All fetches share one stream, opened on the first fetch and re-opened after a failure."""

    def __init__(self, channel: grpc.Channel, method_path: str, metadata: Metadata, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._method = channel.stream_stream(
            method_path,
            request_serializer=EntropyRequest.SerializeToString,
            response_deserializer=EntropyResponse.FromString,
        )
        self._metadata = metadata
        self._clock = clock
        self._sequence_ids = itertools.count(1)  # next() is atomic under the GIL
        self._stream: _Stream | None = None
        self._lock = threading.Lock()
        self._closed = False

    def fetch(self, sizes: Sequence[int], timeout_s: float, nonce: bytes = b"") -> list[Reply]:
        return self._open_stream(timeout_s).exchange(sizes, self._sequence_ids, timeout_s,
                                                     nonce)

    def _open_stream(self, timeout_s: float) -> _Stream:
        stream = self._stream
        if (stream is not None and stream.failure is None
                and self._clock() + timeout_s < stream.expires_at):
            return stream  # hot path: the open stream is fine, no lock needed to read it
        with self._lock:
            if self._closed:
                raise CallFailed("the transport is closed")
            stream = self._stream
            stale = stream is not None and (
                stream.failure is not None or self._clock() + timeout_s >= stream.expires_at)
            if stream is not None and stale:  # no join here: the old reader exits by itself
                stream.break_(CallFailed("the stream was replaced", retryable=True))
            if stream is None or stale:
                try:
                    stream = self._stream = _Stream(self._method, self._metadata, self._clock)
                except ValueError as exc:  # the channel was closed under us
                    raise CallFailed(f"channel closed: {exc}", retryable=True) from exc
            return stream

    def close(self) -> None:
        with self._lock:
            self._closed = True
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
