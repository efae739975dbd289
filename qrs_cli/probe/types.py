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
    9  quota: the server answered RESOURCE_EXHAUSTED (its rate limit or quota is used up)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import SecretStr

from qr_sampler.settings import setting_default as _default

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
EXIT_QUOTA = 9

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
    EXIT_QUOTA: "quota: the server answered RESOURCE_EXHAUSTED (rate limit or quota used up)",
}

MASK = "****"


@dataclass(frozen=True)
class TlsOptions:
    """TLS settings of the channel; file paths are PEM files, '' = not set."""

    enabled: bool = _default("grpc_tls")
    ca_cert: str = _default("grpc_tls_ca_cert")
    server_name: str = _default("grpc_tls_server_name")
    client_cert: str = _default("grpc_tls_client_cert")
    client_key: str = _default("grpc_tls_client_key")


@dataclass(frozen=True)
class ProbeTarget:
    """Everything the probe needs to know about one entropy server, resolved and validated.

    Invariants (guaranteed by :func:`qrs_cli.probe.target.resolve_target`, which validates
    through the sampler's settings schema): ``address`` is well-formed; a streaming ``mode`` has
    a ``stream_method_path``; timeouts are > 0; ``sample_count`` ≥ 1; limits ≥ 0 (0 = none);
    header names are lowercase.
    """

    # Defaults are the sampler schema's (one source of defaults; a test pins them): a changed
    # default cannot drift between the plugin, its gRPC client and the probe.
    address: str
    mode: Mode = _default("grpc_mode")  # noqa: RUF009 - a str, read once from the schema
    method_path: str = _default("grpc_method_path")
    stream_method_path: str = _default("grpc_stream_method_path")
    api_key: SecretStr = field(default_factory=lambda: _default("grpc_api_key"))
    api_key_header: str = _default("grpc_api_key_header")
    extra_headers: tuple[tuple[str, SecretStr], ...] = ()
    tls: TlsOptions = field(default_factory=TlsOptions)
    #: A connection gets as long as one call (QR_GRPC_TIMEOUT_MS).
    connect_timeout_s: float = _default("grpc_timeout_ms") / 1000
    rpc_timeout_s: float = _default("grpc_timeout_ms") / 1000
    sample_count: int = _default("sample_count")
    max_bytes_per_request: int = _default("grpc_max_bytes_per_request")
    rate_limit_per_min: int = _default("grpc_rate_limit_per_min")
    daily_byte_budget: int = _default("grpc_daily_byte_budget")
    profile: str = ""
    #: QR_QUOTA_STATE_DIR: where the host's shared quota state lives ('' = the default).
    quota_state_dir: str = _default("quota_state_dir")

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
    """How hard to probe. ``total`` fetches of ``sample_count`` bytes at ``concurrency``;
    ``calls`` caps every RPC of the run (None = no cap beyond the profile's limits)."""

    limits: bool = False
    total: int = 50
    concurrency: int = 1
    warmup: int = 2
    strict: bool = False
    calls: int | None = None


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
    #: The server's RESOURCE_EXHAUSTED details, when it refused a call for its quota.
    quota_refused: str = ""

    @property
    def exit_code(self) -> int:
        """The first failed stage's code; else 9 when the server refused a call for its quota
        (the stages after it were cut short); else 8 for a randomness warning under
        ``strict``."""
        for stage in self.stages:
            if stage.status == "fail":
                return stage.exit_code or EXIT_FAILED
        if self.quota_refused:
            return EXIT_QUOTA
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
            "quota_refused": self.quota_refused,
            "notes": list(self.notes),
            "stages": [s.to_dict() for s in self.stages],
        }
