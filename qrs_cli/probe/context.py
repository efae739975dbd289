"""What the stages share while a probe runs, and the outcome type each stage returns.

The runner owns one :class:`ProbeContext`; stages read the target and options from it, use its
channel, caller and call budget, and leave facts for later stages (which methods reflection
found, whether the configured method works, the cap ``--limits`` discovered, the measured
throughput). Stages never build a :class:`~qrs_cli.probe.types.StageResult` themselves: they
return a :class:`StageOutcome` and the runner adds the name, the time and the redaction.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import grpc

from qrs_cli.probe.call_budget import CallBudget
from qrs_cli.probe.calls import EntropyCaller
from qrs_cli.probe.channel import Endpoint, open_channel
from qrs_cli.probe.types import ProbeOptions, ProbeTarget, StageResult, Status

#: The most reply bytes kept for the randomness stage (the rest is counted, not kept).
SAMPLE_LIMIT_BYTES = 4 << 20
#: Replies shorter than this are not compared for repeats (short replies may repeat by chance).
_REPEAT_MIN_BYTES = 8


@dataclass(frozen=True)
class StageOutcome:
    """What a stage found; ``exit_code`` 0 on a failure means the stage's default code."""

    status: Status
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    hint: str = ""
    exit_code: int = 0


def ok(summary: str, details: dict[str, Any] | None = None, hint: str = "") -> StageOutcome:
    return StageOutcome("ok", summary, details or {}, hint)


def warn(summary: str, details: dict[str, Any] | None = None, hint: str = "") -> StageOutcome:
    return StageOutcome("warn", summary, details or {}, hint)


def fail(summary: str, details: dict[str, Any] | None = None, hint: str = "",
         exit_code: int = 0) -> StageOutcome:
    return StageOutcome("fail", summary, details or {}, hint, exit_code)


def skipped(summary: str, details: dict[str, Any] | None = None, hint: str = "") -> StageOutcome:
    return StageOutcome("skipped", summary, details or {}, hint)


class ReplySample:
    """The bytes the server sent, kept for the randomness stage (bounded), and repeat counts.

    A stuck source often repeats a whole buffer; each reply is fingerprinted so identical
    replies are counted even when every single reply looks random on its own. Thread-safe.
    """

    def __init__(self, limit: int = SAMPLE_LIMIT_BYTES) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._kept = 0
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()
        self.replies = 0
        self.compared = 0
        self.repeats = 0

    def add(self, data: bytes) -> None:
        with self._lock:
            self.replies += 1
            if len(data) >= _REPEAT_MIN_BYTES:
                self.compared += 1
                digest = hashlib.blake2b(data, digest_size=16).digest()
                if digest in self._seen:
                    self.repeats += 1
                else:
                    self._seen.add(digest)
            room = self._limit - self._kept
            if room > 0:
                part = data[:room]
                self._parts.append(part)
                self._kept += len(part)

    def data(self) -> bytes:
        with self._lock:
            return b"".join(self._parts)


@dataclass
class ProbeContext:
    """Shared state of one probe run (see the module docstring)."""

    target: ProbeTarget
    options: ProbeOptions
    endpoint: Endpoint
    budget: CallBudget
    sample: ReplySample = field(default_factory=ReplySample)
    results: dict[str, StageResult] = field(default_factory=dict)
    channel: grpc.Channel | None = None
    #: ``/service/method`` paths reflection found (for "did you mean" hints).
    known_methods: list[str] = field(default_factory=list)
    #: Set by shape / streaming when the method they test works.
    unary_works: bool = False
    stream_works: bool = False
    #: A request size the sampler's method refused (shape / streaming), for ``--limits``.
    refused_size: int | None = None
    #: The largest request size ``--limits`` found the server to accept (exactly), if any.
    discovered_cap: int | None = None
    #: Throughput measured by the latency stage (fetches of sample_count bytes per second).
    fetches_per_s: float | None = None
    _caller: EntropyCaller | None = None

    def open_channel(self) -> grpc.Channel:
        """The probe's one channel, opened on first use."""
        if self.channel is None:
            self.channel = open_channel(self.target)
        return self.channel

    @property
    def caller(self) -> EntropyCaller:
        if self._caller is None:
            self._caller = EntropyCaller(self.open_channel(), self.budget,
                                         timeout_s=self.target.rpc_timeout_s,
                                         metadata=self.target.metadata(), sink=self.sample.add)
        return self._caller

    @property
    def active_works(self) -> bool:
        """Whether the method the sampler will call in this mode answered correctly."""
        return self.unary_works if self.target.mode == "unary" else self.stream_works

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        self.budget.close()


def chunk_size(target: ProbeTarget) -> int:
    """The largest chunk the sampler asks for in one request (its cap, at most 1 MiB)."""
    from qr_sampler.entropy.quantum_grpc import MAX_CHUNK_BYTES

    return min(target.max_bytes_per_request or MAX_CHUNK_BYTES, MAX_CHUNK_BYTES)


def request_size(target: ProbeTarget) -> int:
    """The size of one request the sampler makes: a token's bytes, or a full chunk of them."""
    return min(target.sample_count, chunk_size(target))


def calls_per_token(target: ProbeTarget) -> int:
    return math.ceil(target.sample_count / chunk_size(target))


def ms(seconds: float) -> str:
    """A duration for humans: '0.42 ms', '12 ms', '1.3 s'."""
    if seconds < 0.01:
        return f"{seconds * 1000:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"


def size(n: float) -> str:
    """A byte count for humans: '512 B', '20.0 KB', '1.05 MB' (decimal units)."""
    if n < 1000:
        return f"{n:.0f} B"
    if n < 1e6:
        return f"{n / 1e3:.1f} KB"
    if n < 1e9:
        return f"{n / 1e6:.2f} MB"
    return f"{n / 1e9:.2f} GB"


def service_of(method_path: str) -> str:
    """``/pkg.Service/Method`` → ``pkg.Service``."""
    return method_path.strip("/").rpartition("/")[0]
