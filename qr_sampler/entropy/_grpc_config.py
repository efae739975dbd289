"""The gRPC client's configuration: the ``QR_GRPC_*`` / ``QR_CB_*`` settings, checked once.

A frozen dataclass instead of the Settings object so the client (and tests, and the benchmark) can
be configured directly, and so every rule the client relies on is checked at construction, i.e.
at start-up, never at the first token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pydantic import SecretStr

from qr_sampler.entropy._circuit_breaker import BreakerConfig
from qr_sampler.errors import SettingProblem, SettingsError
from qr_sampler.settings import setting_default as _default

if TYPE_CHECKING:
    from qr_sampler.settings import Settings

Mode = Literal["unary", "server_streaming", "bidi_streaming"]
MODES: tuple[Mode, ...] = ("unary", "server_streaming", "bidi_streaming")

@dataclass(frozen=True)
class GrpcClientConfig:
    """Everything :class:`~qr_sampler.entropy.quantum_grpc.QuantumGrpcEntropySource` needs.

    ``wait_for_rate_limit``: when the call-rate limit is reached, wait for a free slot (bounded
    by ``timeout_s``) instead of failing at once so the fallback serves. True exactly when
    ``QR_FALLBACK_MODE=error`` (there is no fallback to serve).

    ``quota_state_dir``: where the shared quota state lives ("" = the XDG default); ``None``
    keeps the limits in this process's memory only (tests, benchmarks).

    Every default is the settings schema's (``setting_default``), so the two cannot drift; a
    test pins ``GrpcClientConfig() == GrpcClientConfig.from_settings(<defaults>)``.
    """

    address: str = _default("grpc_server_address")
    mode: Mode = _default("grpc_mode")  # noqa: RUF009 - a str, read once from the schema
    method_path: str = _default("grpc_method_path")
    stream_method_path: str = _default("grpc_stream_method_path")
    api_key: SecretStr = field(default_factory=lambda: _default("grpc_api_key"))
    api_key_header: str = _default("grpc_api_key_header")
    timeout_s: float = _default("grpc_timeout_ms") / 1000
    retry_count: int = _default("grpc_retry_count")
    max_bytes_per_request: int = _default("grpc_max_bytes_per_request")
    rate_limit_per_min: int = _default("grpc_rate_limit_per_min")
    daily_byte_budget: int = _default("grpc_daily_byte_budget")
    keepalive_time_ms: int = _default("grpc_keepalive_time_ms")
    tls: bool = _default("grpc_tls")
    tls_ca_cert: str = _default("grpc_tls_ca_cert")
    tls_server_name: str = _default("grpc_tls_server_name")
    tls_client_cert: str = _default("grpc_tls_client_cert")
    tls_client_key: str = _default("grpc_tls_client_key")
    wait_for_rate_limit: bool = _default("fallback_mode") == "error"
    quota_state_dir: str | None = _default("quota_state_dir")
    breaker: BreakerConfig = field(default_factory=BreakerConfig)

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):  # a plain string would show in repr(): wrap it
            object.__setattr__(self, "api_key", SecretStr(self.api_key))
        problems = config_problems(self)
        if problems:
            raise SettingsError(problems, hint="run `qrs settings` to see what each key accepts")

    @property
    def authenticated(self) -> bool:
        """True when an API key is configured (the key itself is never exposed)."""
        return bool(self.api_key.get_secret_value())

    @property
    def active_method_path(self) -> str:
        """The method path the configured mode calls."""
        return self.method_path if self.mode == "unary" else self.stream_method_path

    @classmethod
    def from_settings(cls, s: Settings) -> GrpcClientConfig:
        """Map the sampler settings (milliseconds) onto the client's configuration (seconds)."""
        return cls(
            address=s.grpc_server_address,
            mode=s.grpc_mode,
            method_path=s.grpc_method_path,
            stream_method_path=s.grpc_stream_method_path,
            api_key=s.grpc_api_key,
            api_key_header=s.grpc_api_key_header,
            timeout_s=s.grpc_timeout_ms / 1000,
            retry_count=s.grpc_retry_count,
            max_bytes_per_request=s.grpc_max_bytes_per_request,
            rate_limit_per_min=s.grpc_rate_limit_per_min,
            daily_byte_budget=s.grpc_daily_byte_budget,
            keepalive_time_ms=s.grpc_keepalive_time_ms,
            tls=s.grpc_tls,
            tls_ca_cert=s.grpc_tls_ca_cert,
            tls_server_name=s.grpc_tls_server_name,
            tls_client_cert=s.grpc_tls_client_cert,
            tls_client_key=s.grpc_tls_client_key,
            wait_for_rate_limit=s.fallback_mode == "error",
            quota_state_dir=s.quota_state_dir,
            breaker=BreakerConfig(
                enabled=s.cb_enabled,
                window_size=s.cb_window_size,
                min_timeout_s=s.cb_min_timeout_ms / 1000,
                timeout_multiplier=s.cb_timeout_multiplier,
                failure_threshold=s.cb_failure_threshold,
                recovery_window_s=s.cb_recovery_window_s,
                max_recovery_window_s=s.cb_max_recovery_window_s,
            ),
        )


def config_problems(c: GrpcClientConfig) -> list[SettingProblem]:
    """What the client cannot work with, named by ``QR_`` key.

    The settings schema checks every key in full when it loads; this repeats only the rules
    whose violation the client would otherwise discover at its first call (or never), for a
    config built directly rather than from settings.
    """
    problems: list[SettingProblem] = []

    def bad(key: str, value: object, message: str) -> None:
        problems.append(SettingProblem(f"QR_GRPC_{key}", str(value), message))

    if c.mode not in MODES:
        bad("MODE", c.mode, "must be one of: " + ", ".join(MODES))
    elif c.mode != "unary" and not c.stream_method_path:
        bad("STREAM_METHOD_PATH", "",
            f"QR_GRPC_MODE={c.mode} streams, but no streaming method is configured; set "
            "QR_GRPC_STREAM_METHOD_PATH to the server's streaming method or use QR_GRPC_MODE=unary")
    elif not c.active_method_path.startswith("/"):
        key = "METHOD_PATH" if c.mode == "unary" else "STREAM_METHOD_PATH"
        bad(key, c.active_method_path, "must look like /package.Service/Method")
    header = c.api_key_header
    if (not header or header != header.lower() or header.startswith("grpc-")
            or header.endswith("-bin")):
        bad("API_KEY_HEADER", header, "must be a lowercase metadata key, not grpc-* or *-bin")
    if not c.timeout_s > 0:
        bad("TIMEOUT_MS", c.timeout_s * 1000, "must be > 0")
    return problems
