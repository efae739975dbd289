"""Raw entropy calls: generic gRPC unary, server-streaming and bidi calls on bytes.

Every call goes through the :class:`~qrs_cli.probe.call_budget.CallBudget` first (it may raise
BudgetSpent), has an explicit deadline, and comes back as a :class:`CallOutcome` instead of an
exception, so stages can compare status codes. Replies are decoded by :mod:`.wire` and checked:
exactly the bytes asked for, and on a bidi stream the echoed sequence ids. Every good reply is
handed to ``sink`` (the randomness stage tests what the server actually sent).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from qrs_cli.probe.call_budget import CallBudget
from qrs_cli.probe.types import Mode
from qrs_cli.probe.wire import decode_reply, encode_request

Metadata = tuple[tuple[str, str], ...]
Sink = Callable[[bytes], None]
#: How long closing a bidi session waits for its reader thread.
_READER_JOIN_S = 2.0


@dataclass(frozen=True)
class CallOutcome:
    """One exchange: the gRPC status (``code``, ``details``) and what came back.

    ``problem`` is set when the status was OK but the reply is unusable (not decodable, wrong
    length, sequence id not echoed); ``ok`` means OK *and* no problem.
    """

    code: str
    details: str = ""
    data: bytes = b""
    latency_s: float = 0.0
    problem: str = ""
    replies: int = 0

    @property
    def ok(self) -> bool:
        return self.code == "OK" and not self.problem

    def describe(self) -> str:
        """``CODE: details`` or the problem, for messages."""
        if self.code == "OK":
            return self.problem or "OK"
        return f"{self.code}: {self.details}" if self.details else self.code


def outcome_from_error(exc: grpc.RpcError, latency_s: float,
                       budget: CallBudget | None = None) -> CallOutcome:
    """The outcome of a failed call; a quota refusal is reported to ``budget`` (no more calls)."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else "") or ""
    if budget is not None and is_quota_refusal(code.name, details):
        budget.note_server_refusal(details)
    return CallOutcome(code.name, details, latency_s=latency_s)


def is_quota_refusal(code: str, details: str) -> bool:
    """RESOURCE_EXHAUSTED for a rate limit or quota — not for a message over a size limit
    (gRPC uses the same code for "received message larger than max")."""
    return code == "RESOURCE_EXHAUSTED" and "larger than" not in details.lower()


class EntropyCaller:
    """Makes raw entropy calls on one channel for one target's timeout and default metadata."""

    def __init__(self, channel: grpc.Channel, budget: CallBudget, *, timeout_s: float,
                 metadata: Metadata, sink: Sink | None = None) -> None:
        self._channel = channel
        self.budget = budget
        self.timeout_s = timeout_s
        self.metadata = metadata
        self._sink = sink
        self._lock = threading.Lock()
        self._callables: dict[tuple[str, str], Any] = {}

    def _callable(self, kind: str, path: str) -> Any:
        with self._lock:
            key = (kind, path)
            if key not in self._callables:
                factory = getattr(self._channel, kind)
                # No serializers: requests and replies stay raw bytes (see .wire).
                self._callables[key] = factory(path, request_serializer=None,
                                               response_deserializer=None)
            return self._callables[key]

    def _deliver(self, replies: Sequence[bytes]) -> None:
        if self._sink is not None:
            for data in replies:
                self._sink(data)

    # --- one request ----------------------------------------------------------------------

    def unary(self, path: str, n: int, *, metadata: Metadata | None = None) -> CallOutcome:
        """One unary call for ``n`` bytes."""
        self.budget.take(1, n)
        start = time.perf_counter()
        try:
            raw = self._callable("unary_unary", path)(
                encode_request(n), timeout=self.timeout_s,
                metadata=self.metadata if metadata is None else metadata)
        except grpc.RpcError as exc:
            self.budget.settle(n, 0)
            return outcome_from_error(exc, time.perf_counter() - start, self.budget)
        latency = time.perf_counter() - start
        return self.check_replies([raw], [n], latency, sequence_ids=None)

    def server_stream(self, path: str, n: int, *,
                      metadata: Metadata | None = None) -> CallOutcome:
        """One request on a streaming method; the replies until the server ends are joined."""
        self.budget.take(1, n)
        start = time.perf_counter()
        parts: list[bytes] = []
        received = 0
        try:
            call = self._callable("unary_stream", path)(
                encode_request(n), timeout=self.timeout_s,
                metadata=self.metadata if metadata is None else metadata)
            # Bounded: every reply must add bytes, and the deadline ends the call.
            for raw in call:
                decoded = decode_reply(raw)
                if decoded.data is None:
                    call.cancel()
                    self.budget.settle(n, 0)
                    return CallOutcome("OK", problem=decoded.problem,
                                       latency_s=time.perf_counter() - start)
                parts.append(decoded.data)
                received += len(decoded.data)
                if received > n or len(parts) > n:
                    call.cancel()  # already too long: the length check reports it
                    break
        except grpc.RpcError as exc:
            self.budget.settle(n, 0)
            return outcome_from_error(exc, time.perf_counter() - start, self.budget)
        latency = time.perf_counter() - start
        data = b"".join(parts)
        self.budget.settle(n, len(data) if len(data) == n else 0)
        if not parts:
            return CallOutcome("OK", problem="the server ended the stream without a reply",
                               latency_s=latency)
        if len(data) != n:
            return CallOutcome("OK", problem=f"the server returned {len(data)} bytes for a "
                                             f"request of {n}", latency_s=latency,
                               replies=len(parts))
        self._deliver([data])
        return CallOutcome("OK", data=data, latency_s=latency, replies=len(parts))

    def bidi(self, path: str, sizes: Sequence[int], *,
             metadata: Metadata | None = None) -> CallOutcome:
        """A fresh bidi stream carrying one request per size (sequence ids 1, 2, …)."""
        session = self.open_bidi(path, messages=len(sizes), metadata=metadata)
        try:
            return session.exchange(sizes)
        finally:
            session.close()

    def exchange(self, mode: Mode, path: str, n: int, *,
                 metadata: Metadata | None = None) -> CallOutcome:
        """One request for ``n`` bytes the way ``mode`` asks for it."""
        if mode == "unary":
            return self.unary(path, n, metadata=metadata)
        if mode == "server_streaming":
            return self.server_stream(path, n, metadata=metadata)
        return self.bidi(path, [n], metadata=metadata)

    def open_bidi(self, path: str, *, messages: int,
                  metadata: Metadata | None = None) -> BidiSession:
        """A long-lived stream for up to ``messages`` requests (its deadline allows that many)."""
        method = self._callable("stream_stream", path)
        return BidiSession(self, method, self.metadata if metadata is None else metadata,
                           deadline_s=self.timeout_s * (messages + 1))

    # --- shared checks --------------------------------------------------------------------

    def check_replies(self, raws: Sequence[bytes], sizes: Sequence[int], latency: float,
                 sequence_ids: Sequence[int] | None) -> CallOutcome:
        """Decode and check the replies of one exchange; settle the bytes with the budget."""
        reserved = sum(sizes)
        datas: list[bytes] = []
        for i, (raw, n) in enumerate(zip(raws, sizes, strict=True)):
            decoded = decode_reply(raw)
            where = f"reply {i + 1}: " if len(sizes) > 1 else ""
            problem = ""
            if decoded.data is None:
                problem = where + decoded.problem
            elif len(decoded.data) != n:
                problem = (f"{where}the server returned {len(decoded.data)} bytes for a request "
                           f"of {n}")
            elif sequence_ids is not None and decoded.sequence_id != sequence_ids[i]:
                problem = (f"{where}sequence id {decoded.sequence_id} instead of "
                           f"{sequence_ids[i]}: the server must echo sequence_id on the stream")
            if problem:
                self.budget.settle(reserved, sum(len(d) for d in datas))
                return CallOutcome("OK", problem=problem, latency_s=latency, replies=i + 1)
            assert decoded.data is not None
            datas.append(decoded.data)
        self.budget.settle(reserved, reserved)
        self._deliver(datas)
        data = datas[0] if len(datas) == 1 else b"".join(datas)
        return CallOutcome("OK", data=data, latency_s=latency, replies=len(datas))


class BidiSession:
    """One open bidi call: requests go in through a queue, a reader thread collects replies.

    Every wait for a reply is bounded by the caller's timeout; the call itself has a deadline
    long enough for the planned messages. A failure breaks the session (``broken``): later
    exchanges report it instead of reading replies that may belong to an earlier request.
    """

    def __init__(self, caller: EntropyCaller, method: Any, metadata: Metadata, *,
                 deadline_s: float) -> None:
        self._caller = caller
        self._requests: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._replies: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._next_id = 1
        self.broken: CallOutcome | None = None
        self._call = method(self._request_iterator(), timeout=deadline_s, metadata=metadata)
        self._reader = threading.Thread(target=self._read, name="qrs-probe-bidi", daemon=True)
        self._reader.start()

    def _request_iterator(self) -> Iterator[bytes]:
        while (request := self._requests.get()) is not None:
            yield request

    def _read(self) -> None:
        try:
            for raw in self._call:
                self._replies.put(("reply", raw))
            self._replies.put(("end", None))
        except grpc.RpcError as exc:
            self._replies.put(("error", exc))

    def exchange(self, sizes: Sequence[int]) -> CallOutcome:
        """Send one request per size, then read as many replies, each within the timeout."""
        if self.broken is not None:
            return self.broken
        budget = self._caller.budget
        budget.take(len(sizes), sum(sizes))
        ids = list(range(self._next_id, self._next_id + len(sizes)))
        self._next_id += len(sizes)
        start = time.perf_counter()
        for n, sequence_id in zip(sizes, ids, strict=True):
            self._requests.put(encode_request(n, sequence_id))
        raws: list[bytes] = []
        for _ in sizes:
            try:
                kind, item = self._replies.get(timeout=self._caller.timeout_s)
            except queue.Empty:
                kind, item = "timeout", None
            if kind == "reply":
                raws.append(item)
                continue
            budget.settle(sum(sizes), 0)
            self.broken = self._failure(kind, item, time.perf_counter() - start)
            return self.broken
        outcome = self._caller.check_replies(raws, sizes, time.perf_counter() - start, ids)
        if not outcome.ok:
            self.broken = outcome
        return outcome

    def _failure(self, kind: str, item: Any, latency: float) -> CallOutcome:
        if kind == "error":
            return outcome_from_error(item, latency, self._caller.budget)
        if kind == "end":
            return CallOutcome("OK", problem="the server ended the stream before replying",
                               latency_s=latency)
        return CallOutcome("DEADLINE_EXCEEDED",
                           f"no reply on the stream within {self._caller.timeout_s:g} s",
                           latency_s=latency)

    def close(self) -> None:
        """Half-close, cancel, and let the reader thread finish."""
        self._requests.put(None)
        self._call.cancel()
        if self._reader is not threading.current_thread():
            self._reader.join(_READER_JOIN_S)
