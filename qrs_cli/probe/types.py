"""Value types of the probe: what is probed (:class:`ProbeTarget`), how, and what came out.

Plain frozen dataclasses, so the same data drives the human output, ``--json`` and the tests. The
target holds the API key and extra header values as :class:`~pydantic.SecretStr`: its ``repr``
and :meth:`ProbeTarget.public_view` never show them, and :meth:`ProbeTarget.secret_values` lists
them so every text that leaves the probe can be redacted.

Exit codes (the first failed stage decides; ``--strict`` turns a randomness warning into 8)::

    0  every stage passed (warnings and skipped stages allowed)
    1  another stage failed (health NOT_SERVING, every latency call failed, ...)
    2  usage: bad flag, unknown profile, invalid setting
    3  connect: the address does not resolve, refuses, or no gRPC channel comes up
    4  TLS: handshake, certificate or secure channel failed
    5  auth: the API key is missing or wrong
    6  method/shape: method not implemented, wrong message shape, wrong reply length
    7  streaming: the stream method fails in the profile's streaming mode
    8  randomness warning, escalated by --strict
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import SecretStr

Status = Literal["ok", "warn", "fail", "skipped"]
Mode = Literal["unary", "server_streaming", "bidi_streaming"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_TLS = 4
EXIT_AUTH = 5
EXIT_METHOD = 6
EXIT_STREAMING = 7
EXIT_RANDOMNESS = 8

#: Exit code → what it means; the command's ``--help`` is rendered from this table.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "all stages passed (warnings and skipped stages allowed)",
    EXIT_FAILED: "another stage failed (e.g. health NOT_SERVING, every latency call failed)",
    EXIT_USAGE: "usage: bad flag, unknown profile or invalid setting",
    EXIT_CONNECT: "connect: address does not resolve, refuses, or no gRPC channel comes up",
    EXIT_TLS: "TLS: handshake, certificate or secure channel failed",
    EXIT_AUTH: "auth: the API key is missing or wrong",
    EXIT_METHOD: "method/shape: method not implemented, wrong message shape or reply length",
    EXIT_STREAMING: "streaming: the stream fails in the profile's streaming mode",
    EXIT_RANDOMNESS: "randomness warning, escalated by --strict",
}

MASK = "****"


@dataclass(frozen=True)
class TlsOptions:
    """TLS settings of the channel; file paths are PEM files, '' = not set."""

    enabled: bool = False
    ca_cert: str = ""
    server_name: str = ""
    client_cert: str = ""
    client_key: str = ""


@dataclass(frozen=True)
class ProbeTarget:
    """Everything the probe needs to know about one entropy server, resolved and validated.

    Invariants (guaranteed by :func:`qrs_cli.probe.target.resolve_target`, which validates
    through the sampler's settings schema): ``address`` is well-formed; a streaming ``mode`` has
    a ``stream_method_path``; timeouts are > 0; ``sample_count`` ≥ 1; limits ≥ 0 (0 = none);
    header names are lowercase.
    """

    address: str
    mode: Mode = "unary"
    method_path: str = "/qr_entropy.EntropyService/GetEntropy"
    stream_method_path: str = "/qr_entropy.EntropyService/StreamEntropy"
    api_key: SecretStr = field(default_factory=lambda: SecretStr(""))
    api_key_header: str = "api-key"
    extra_headers: tuple[tuple[str, SecretStr], ...] = ()
    tls: TlsOptions = field(default_factory=TlsOptions)
    connect_timeout_s: float = 5.0
    rpc_timeout_s: float = 5.0
    sample_count: int = 20480
    max_bytes_per_request: int = 0
    rate_limit_per_min: int = 0
    daily_byte_budget: int = 0
    profile: str = ""

    @property
    def has_key(self) -> bool:
        return bool(self.api_key.get_secret_value())

    @property
    def active_method_path(self) -> str:
        """The method the sampler calls in this mode."""
        return self.method_path if self.mode == "unary" else self.stream_method_path

    def metadata(self, *, key: str | None = None,
                 with_key: bool = True) -> tuple[tuple[str, str], ...]:
        """Call metadata: extra headers plus the API key (``key`` replaces the configured one)."""
        pairs = [(name, value.get_secret_value()) for name, value in self.extra_headers]
        sent = self.api_key.get_secret_value() if key is None else key
        if with_key and sent:
            pairs.append((self.api_key_header, sent))
        return tuple(pairs)

    def secret_values(self) -> list[str]:
        """Every secret the probe could leak (longest first, so redaction never leaves a tail)."""
        values = [self.api_key.get_secret_value()]
        values += [v.get_secret_value() for _n, v in self.extra_headers]
        return sorted({v for v in values if v}, key=len, reverse=True)

    def public_view(self) -> dict[str, Any]:
        """The target as shown to users: no secret value, only whether one is set."""
        return {
            "profile": self.profile,
            "address": self.address,
            "mode": self.mode,
            "method_path": self.method_path,
            "stream_method_path": self.stream_method_path,
            "api_key": MASK if self.has_key else "",
            "api_key_header": self.api_key_header,
            "extra_headers": {name: MASK for name, _v in self.extra_headers},
            "tls": {
                "enabled": self.tls.enabled,
                "ca_cert": self.tls.ca_cert,
                "server_name": self.tls.server_name,
                "client_cert": self.tls.client_cert,
                "client_key": self.tls.client_key,
            },
            "connect_timeout_s": self.connect_timeout_s,
            "rpc_timeout_s": self.rpc_timeout_s,
            "sample_count": self.sample_count,
            "max_bytes_per_request": self.max_bytes_per_request,
            "rate_limit_per_min": self.rate_limit_per_min,
            "daily_byte_budget": self.daily_byte_budget,
        }


@dataclass(frozen=True)
class ProbeOptions:
    """How hard to probe. ``total`` fetches of ``sample_count`` bytes at ``concurrency``."""

    limits: bool = False
    total: int = 50
    concurrency: int = 1
    warmup: int = 2
    strict: bool = False


@dataclass(frozen=True)
class StageResult:
    """One stage's outcome. ``exit_code`` is non-zero only when ``status == "fail"``.

    ``summary`` is one line for humans; ``details`` the numbers behind it (JSON-ready);
    ``hint`` what to do about a warning or failure. None of them ever holds a secret.
    """

    name: str
    status: Status
    duration_s: float
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    hint: str = ""
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "duration_s": round(self.duration_s, 6),
            "summary": self.summary,
            "details": self.details,
            "hint": self.hint,
            "exit_code": self.exit_code,
        }


@dataclass(frozen=True)
class ProbeReport:
    """The whole probe: target, stages in order, what it cost, and the exit code it implies."""

    target: dict[str, Any]
    stages: tuple[StageResult, ...]
    calls: int
    bytes_received: int
    duration_s: float
    strict: bool = False
    notes: tuple[str, ...] = ()
    budget: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """The first failed stage's code; else 8 for a randomness warning under ``strict``."""
        for stage in self.stages:
            if stage.status == "fail":
                return stage.exit_code or EXIT_FAILED
        if self.strict and any(s.name == "randomness" and s.status == "warn" for s in self.stages):
            return EXIT_RANDOMNESS
        return EXIT_OK

    @property
    def passed(self) -> bool:
        return self.exit_code == EXIT_OK

    def stage(self, name: str) -> StageResult:
        """The result of the stage called ``name`` (KeyError if there is none)."""
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "strict": self.strict,
            "calls": self.calls,
            "bytes_received": self.bytes_received,
            "duration_s": round(self.duration_s, 6),
            "call_budget": self.budget,
            "notes": list(self.notes),
            "stages": [s.to_dict() for s in self.stages],
        }
