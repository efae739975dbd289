"""The sampler's settings schema: the one list of every ``QR_`` key, its type, range and default.

Everything else derives from this module: the plugin reads it from the environment, ``qrs profile
validate`` checks a profile's ``.env`` against it, ``qrs profile new`` renders ``.env`` comments
from the field descriptions, and per-request ``qr_*`` arguments are validated against the fields
marked ``per_request``. Do not write a second list of keys anywhere.

Precedence (highest first): per-request ``qr_*`` argument > process environment > ``.env`` file >
the defaults below.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from pydantic import (
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from qr_sampler.addresses import address_problem
from qr_sampler.envfile import read_env_file
from qr_sampler.errors import RequestArgumentError, SettingProblem, SettingsError
from qr_sampler.types import UNIFORM_BYTE_STD

ENV_PREFIX = "QR_"
REQUEST_PREFIX = "qr_"
SECRET_MASK = "****"


_METHOD_PATH_RE = re.compile(r"^/[A-Za-z_][\w.]*/[A-Za-z_]\w*$")
_HEADER_RE = re.compile(r"^[0-9a-z_.\-]+$")


def _setting(
    default: Any, description: str, *, per_request: bool = False, **constraints: Any
) -> Any:
    """Declare a field: its default, its one-line description and whether a request may set it."""
    if isinstance(default, float):
        constraints.setdefault("allow_inf_nan", False)
    return Field(
        default,
        description=description,
        json_schema_extra={"per_request": per_request},
        **constraints,
    )


class Settings(BaseSettings):
    """Every sampler setting. ``Settings()`` reads ``QR_*`` from the environment and ``./.env``.

    For strict loading (unknown keys reported with a did-you-mean, errors naming ``QR_`` keys) use
    :func:`load_settings`.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
        frozen=True,
    )

    # --- entropy source -----------------------------------------------------------------------
    entropy_source_type: str = _setting(
        "system",
        "Where entropy comes from: system, quantum_grpc, mock_uniform, timing_noise, or a plugin.",
    )
    fallback_mode: Literal["error", "system", "mock_uniform"] = _setting(
        "system", "What serves a step when the source fails; every such token is flagged."
    )
    system_getrandom: Literal["auto", "syscall"] = _setting(
        "auto",
        "How the system source reads the kernel's CSPRNG: auto = through the vDSO where the "
        "kernel offers it (Linux 6.11 or later; the same generator, about twice as fast per "
        "byte), else os.urandom; syscall = always os.urandom (one getrandom system call).",
    )
    mock_seed: int | None = _setting(
        None, "Seed of the mock_uniform source; empty draws a seed from the OS."
    )
    mock_bias: float = _setting(
        0.0,
        "Relative shift of the mock byte mean (0.001 = +0.1 %), for bias experiments.",
        ge=-0.3,
        le=0.3,
    )

    # --- gRPC entropy server ------------------------------------------------------------------
    grpc_server_address: str = _setting(
        "localhost:50051", "Entropy server: host:port, [::1]:port or unix:///path.", min_length=1
    )
    grpc_mode: Literal["unary", "server_streaming", "bidi_streaming"] = _setting(
        "unary", "How the client talks to the server."
    )
    grpc_method_path: str = _setting(
        "/qr_entropy.EntropyService/GetEntropy", "Unary method path: /package.Service/Method."
    )
    grpc_stream_method_path: str = _setting(
        "/qr_entropy.EntropyService/StreamEntropy",
        "Streaming method path; empty if the server only speaks unary.",
    )
    grpc_api_key: SecretStr = _setting(SecretStr(""), "API key sent with every call (secret).")
    grpc_api_key_header: str = _setting(
        "api-key", "Metadata header that carries the API key (lowercase)."
    )
    grpc_timeout_ms: float = _setting(5000.0, "Upper bound for one call, in milliseconds.", gt=0)
    grpc_retry_count: int = _setting(
        2, "Retries after a failed call before falling back.", ge=0, le=10
    )
    grpc_max_bytes_per_request: int = _setting(
        0,
        "Largest byte count the server accepts per call; bigger asks are chunked. 0 = no cap.",
        ge=0,
    )
    grpc_rate_limit_per_min: int = _setting(
        0, "Most calls per minute the client may make; 0 = unlimited.", ge=0
    )
    grpc_daily_byte_budget: int = _setting(
        0, "Most bytes the client may draw per UTC day; 0 = unlimited.", ge=0
    )
    grpc_keepalive_time_ms: int = _setting(
        0, "Keepalive ping interval while calls are active; 0 = off (avoids too_many_pings).", ge=0
    )
    grpc_tls: bool = _setting(False, "Use TLS for the channel.")
    grpc_tls_ca_cert: str = _setting("", "PEM file of the CA to trust; empty = system roots.")
    grpc_tls_server_name: str = _setting("", "Override the name checked in the server certificate.")
    grpc_tls_client_cert: str = _setting("", "PEM client certificate for mutual TLS.")
    grpc_tls_client_key: str = _setting("", "PEM client private key for mutual TLS.")

    # --- circuit breaker ----------------------------------------------------------------------
    cb_enabled: bool = _setting(
        True, "Stop calling a failing server for a while (circuit breaker)."
    )
    cb_window_size: int = _setting(
        100, "Latency samples kept for the adaptive timeout.", ge=10, le=10000
    )
    cb_min_timeout_ms: float = _setting(
        5.0, "Floor of the adaptive timeout, in milliseconds.", gt=0
    )
    cb_timeout_multiplier: float = _setting(
        1.5, "Adaptive timeout = P99 latency times this.", ge=1.0
    )
    cb_failure_threshold: int = _setting(
        3, "Consecutive failures that open the breaker.", ge=1, le=1000
    )
    cb_recovery_window_s: float = _setting(
        2.0,
        "Seconds open before a trial call while the server still accepts connections (one "
        "that refuses them is watched without calls and tried as soon as it accepts); short, "
        "so quantum bytes return within seconds.",
        gt=0,
    )
    cb_max_recovery_window_s: float = _setting(
        4.0,
        "Cap of the recovery window, which doubles on each failed trial; a trial is one call, "
        "so a short cap costs little and keeps the return fast.",
        gt=0,
    )

    # --- amplification ------------------------------------------------------------------------
    sample_count: int = _setting(
        20480,
        "Entropy bytes drawn per token (a request may ask up to QR_MAX_REQUEST_SAMPLE_COUNT).",
        per_request=True,
        ge=1,
        le=10_000_000,
    )
    max_request_sample_count: int = _setting(
        65536,
        "Most bytes per token a request may ask for (qr_sample_count): bounds what one request "
        "can spend of a metered source's quota.",
        ge=1,
        le=10_000_000,
    )
    population_mean: float = _setting(
        127.5, "Expected byte mean of an unbiased source.", ge=0, le=255
    )
    population_std: float = _setting(
        UNIFORM_BYTE_STD, "Byte standard deviation, sqrt((256²-1)/12).", gt=0
    )
    uniform_clamp_epsilon: float = _setting(1e-10, "u is clamped to (ε, 1-ε).", gt=0, lt=0.5)

    # --- temperature and filtering ------------------------------------------------------------
    temperature_strategy: Literal["fixed", "edt"] = _setting(
        "fixed", "fixed, or edt (entropy-dependent temperature).", per_request=True
    )
    fixed_temperature: float = _setting(
        0.7,
        "Temperature for the fixed strategy; 0 (or below 1e-5, as in vLLM) = greedy.",
        per_request=True,
        ge=0,
        le=100,
    )
    edt_base_temp: float = _setting(
        0.8, "EDT: T = base · (H / ln V)^exponent.", per_request=True, gt=0, le=100
    )
    edt_exponent: float = _setting(
        0.5, "EDT exponent applied to the normalized entropy.", per_request=True, gt=0, le=10
    )
    edt_min_temp: float = _setting(
        0.1, "EDT lower clamp of T (at least 1e-5, vLLM's greedy threshold).",
        per_request=True, ge=1e-5, le=100,
    )  # fmt: skip
    edt_max_temp: float = _setting(2.0, "EDT upper clamp of T.", per_request=True, gt=0, le=100)
    top_k: int = _setting(
        50,
        "Keep the k most probable tokens; 0 = off (values above the vocabulary keep all).",
        per_request=True,
        ge=0,
        le=2**31 - 1,
    )
    top_p: float = _setting(
        0.9,
        "Keep the smallest set with this much probability; 1 = off.",
        per_request=True,
        gt=0,
        le=1,
    )
    min_p: float = _setting(
        0.0, "Drop tokens below min_p × the top probability; 0 = off.", per_request=True, ge=0, le=1
    )
    bypass: bool = _setting(False, "Leave the request to vLLM's own sampling.", per_request=True)

    # --- engine -------------------------------------------------------------------------------
    one_hot_canvas: Literal["auto", "on", "off"] = _setting(
        "auto",
        "How the V1 adapter hands vLLM the forced rows on a CPU: auto = on a reused one-hot "
        "canvas when the logits have at least 1M elements and nothing after the plugin can write "
        "into them (no reasoning config, no speculative decoding, no other custom logits "
        "processor), else in place; on = the canvas whenever that is safe, whatever the size; "
        "off = always in place.",
    )

    host_kernels: bool = _setting(
        True,
        "On a CPU, run the top-k, the softmax, the per-row filters (min-p, top-p, cdf), the "
        "choice and the byte amplification as compiled kernels (numba, which vLLM installs; "
        "compiled at engine start), with the top-k's rows and a batch's system bytes on "
        "torch's own OpenMP threads; false = tensor operations, as on an accelerator, and the "
        "bytes drawn by the engine's thread. Same results either way.",
    )

    # --- diagnostics --------------------------------------------------------------------------
    log_level: Literal["none", "summary", "full"] = _setting(
        "summary", "none, summary (periodic totals) or full (one log line per token)."
    )
    diagnostics_path: str = _setting("", "JSONL file receiving one record per token; empty = off.")

    # --- quotas (shared by the processes of a host) -------------------------------------------
    quota_state_dir: str = _setting(
        "",
        "Folder of the rate-limit and daily-budget state shared by every process of this host "
        "(one file per server); empty = $XDG_STATE_HOME/qrs/quota or ~/.local/state/qrs/quota.",
    )

    # --- online health tests (NIST SP 800-90B 4.4) --------------------------------------------
    health_tests: bool = _setting(
        True,
        "Run the NIST repetition count and adaptive proportion tests on every block a device "
        "source (quantum_grpc, a plugin) fetches; a failing block is served by the fallback.",
    )
    health_min_entropy: float = _setting(
        7.0,
        "Claimed min-entropy of the source in bits per byte; sets the tests' cutoffs.",
        gt=0,
        le=8,
    )
    health_alpha_exponent: int = _setting(
        40,
        "False-alarm probability of each test is 2^-this (NIST advises 20 to 40).",
        ge=16,
        le=64,
    )

    # --- metrics ------------------------------------------------------------------------------
    metrics_port: int = _setting(
        0,
        "Port of the engine process's own qr_sampler_* Prometheus endpoint (/metrics); 0 = off. "
        "With PROMETHEUS_MULTIPROC_DIR set the series are on vLLM's /metrics as well.",
        ge=0,
        le=65535,
    )
    metrics_host: str = _setting(
        "127.0.0.1",
        "Address QR_METRICS_PORT binds; 0.0.0.0 or :: exposes it beyond this machine.",
        min_length=1,
    )

    # --- provenance ---------------------------------------------------------------------------
    diagnostics_max_bytes: int = _setting(
        256 * 1024 * 1024,
        "Rotate the diagnostics file when a write would take it past this size (rotated files "
        "are <name>.000000<suffix>, …; the hash chain runs through them); 0 = never.",
        ge=0,
    )
    entropy_archive_path: str = _setting(
        "",
        "Folder keeping every fetch's raw bytes, compressed, so `qrs audit verify --archive` "
        "can re-derive each token's z and u; empty = off.",
    )
    entropy_archive_max_bytes: int = _setting(
        10 * 1024**3,
        "Most bytes the entropy archive keeps; beyond it the oldest segments are dropped (and "
        "logged, with an event the verifier reads); 0 = no bound.",
        ge=0,
    )

    # --- secrets ------------------------------------------------------------------------------
    grpc_api_key_file: str = _setting(
        "",
        "File whose content is the API key (e.g. a Compose secret under /run/secrets), read when "
        "QR_GRPC_API_KEY is empty; keeps the key out of the process environment.",
    )

    @model_validator(mode="before")
    @classmethod
    def _api_key_from_file(cls, data: Any) -> Any:
        """Fill ``grpc_api_key`` from ``grpc_api_key_file`` when no key is set directly.

        Why here: every consumer (the plugin, ``qrs``) reads the key from this model, so a key
        delivered as a file (a Compose secret, which ``docker inspect`` does not show) works
        everywhere without a second code path. A key set directly wins over the file.
        """
        if not isinstance(data, dict):
            return data
        path = data.get("grpc_api_key_file")
        key = data.get("grpc_api_key")
        key_text = key.get_secret_value() if isinstance(key, SecretStr) else (key or "")
        if not isinstance(path, str) or not path.strip() or key_text:
            return data
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not text"
            problem = SettingProblem(
                env_key("grpc_api_key_file"), _clip(path), f"cannot read: {reason}"
            )
            raise _CrossFieldError([problem]) from None
        return {**data, "grpc_api_key": text.strip()}

    # --- single-field rules -------------------------------------------------------------------
    @field_validator("mock_seed", mode="before")
    @classmethod
    def _empty_seed_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("entropy_source_type")
    @classmethod
    def _known_source(cls, value: str) -> str:
        from qr_sampler.entropy.registry import available_source_names

        names = available_source_names()
        if value not in names:
            raise ValueError(f"unknown entropy source{_did_you_mean(value, names)}")
        return value

    @field_validator("grpc_method_path")
    @classmethod
    def _method_path(cls, value: str) -> str:
        if not _METHOD_PATH_RE.match(value):
            raise ValueError("must look like /package.Service/Method")
        return value

    @field_validator("grpc_stream_method_path")
    @classmethod
    def _stream_method_path(cls, value: str) -> str:
        if value and not _METHOD_PATH_RE.match(value):
            raise ValueError("must look like /package.Service/Method, or be empty")
        return value

    @field_validator("grpc_api_key_header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not _HEADER_RE.match(value):
            raise ValueError("must be a lowercase header name (a-z, 0-9, '-', '_', '.')")
        if value.startswith("grpc-") or value.endswith("-bin"):
            raise ValueError("must not start with 'grpc-' or end with '-bin' (reserved by gRPC)")
        return value

    @field_validator("grpc_server_address")
    @classmethod
    def _address(cls, value: str) -> str:
        problem = address_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    # --- cross-field rules --------------------------------------------------------------------
    @model_validator(mode="after")
    def _cross_field(self) -> Settings:
        problems = cross_field_problems(self)
        if problems:
            raise _CrossFieldError(problems)
        return self


class _CrossFieldError(ValueError):
    """Carries structured problems through pydantic's ValidationError (ctx['error'])."""

    def __init__(self, problems: list[SettingProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def cross_field_problems(s: Settings) -> list[SettingProblem]:
    """Rules that involve more than one key; also applied to per-request overrides."""
    problems: list[SettingProblem] = []
    if s.grpc_mode != "unary" and not s.grpc_stream_method_path:
        problems.append(
            SettingProblem(
                env_key("grpc_mode"),
                s.grpc_mode,
                "a streaming mode needs QR_GRPC_STREAM_METHOD_PATH; "
                "set it or use QR_GRPC_MODE=unary",
            )
        )
    if s.edt_min_temp > s.edt_max_temp:
        problems.append(
            SettingProblem(
                env_key("edt_min_temp"),
                _fmt(s.edt_min_temp),
                f"must be ≤ QR_EDT_MAX_TEMP ({_fmt(s.edt_max_temp)})",
            )
        )
    if bool(s.grpc_tls_client_cert) != bool(s.grpc_tls_client_key):
        problems.append(
            SettingProblem(
                env_key("grpc_tls_client_cert"),
                s.grpc_tls_client_cert,
                "mutual TLS needs both QR_GRPC_TLS_CLIENT_CERT and QR_GRPC_TLS_CLIENT_KEY",
            )
        )
    uses_tls_files = any((s.grpc_tls_ca_cert, s.grpc_tls_client_cert, s.grpc_tls_server_name))
    if uses_tls_files and not s.grpc_tls:
        problems.append(
            SettingProblem(
                env_key("grpc_tls"),
                "false",
                "TLS files or a server name are set but QR_GRPC_TLS is off",
            )
        )
    if s.grpc_tls and s.grpc_server_address.startswith("unix:"):
        problems.append(
            SettingProblem(
                env_key("grpc_tls"), "true", "TLS over a unix socket is not supported; turn it off"
            )
        )
    if s.sample_count > s.max_request_sample_count:
        problems.append(
            SettingProblem(
                env_key("sample_count"),
                str(s.sample_count),
                f"must be ≤ QR_MAX_REQUEST_SAMPLE_COUNT ({s.max_request_sample_count})",
            )
        )
    if s.cb_max_recovery_window_s < s.cb_recovery_window_s:
        problems.append(
            SettingProblem(
                env_key("cb_max_recovery_window_s"),
                _fmt(s.cb_max_recovery_window_s),
                "must be ≥ QR_CB_RECOVERY_WINDOW_S",
            )
        )
    return problems


# --- field metadata ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingSpec:
    """What the schema says about one key, in a form renderers (README, .env, CLI) can use."""

    name: str
    env_key: str
    type_name: str
    default: str
    allowed: str
    description: str
    per_request: bool
    secret: bool


def setting_default(name: str) -> Any:
    """The schema's default of field ``name``: for code that needs a default without loading
    settings (client configs, probe targets), so a changed default cannot drift."""
    return Settings.model_fields[name].default


def env_key(name: str) -> str:
    """Field name → environment key (``top_k`` → ``QR_TOP_K``)."""
    return ENV_PREFIX + name.upper()


def request_key(name: str) -> str:
    """Field name → per-request argument (``top_k`` → ``qr_top_k``)."""
    return REQUEST_PREFIX + name


@cache
def per_request_fields() -> tuple[str, ...]:
    """Names of the fields a request may override via ``vllm_xargs``."""
    return tuple(name for name, f in Settings.model_fields.items() if _is_per_request(f))


def setting_specs() -> list[SettingSpec]:
    """Every field described for humans, in declaration order."""
    specs = []
    for name, f in Settings.model_fields.items():
        secret = _is_secret(f)
        specs.append(
            SettingSpec(
                name=name,
                env_key=env_key(name),
                type_name=_type_name(f),
                default=format_value(f.default, secret=False),
                allowed=allowed_text(f),
                description=f.description or "",
                per_request=_is_per_request(f),
                secret=secret,
            )
        )
    return specs


def format_value(value: Any, *, secret: bool) -> str:
    """Render a value as it would be written in a ``.env`` file (secrets masked if non-empty)."""
    if isinstance(value, SecretStr):
        return SECRET_MASK if value.get_secret_value() else ""
    if secret:
        return SECRET_MASK if value else ""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _fmt(value) if isinstance(value, float) else str(value)


def allowed_text(f: FieldInfo) -> str:
    """Human description of what a field accepts: an enum, a range, or a type."""
    ann = f.annotation
    if get_origin(ann) is Literal:
        return "one of: " + ", ".join(str(a) for a in get_args(ann))
    if ann is bool:
        return "true or false"
    lower = upper = ""
    lo_incl = hi_incl = True
    for m in f.metadata:
        if isinstance(m, annotated_types.Ge):
            lower = _fmt(m.ge)
        elif isinstance(m, annotated_types.Gt):
            lower, lo_incl = _fmt(m.gt), False
        elif isinstance(m, annotated_types.Le):
            upper = _fmt(m.le)
        elif isinstance(m, annotated_types.Lt):
            upper, hi_incl = _fmt(m.lt), False
    kind = "an integer" if ann is int else "a number" if ann is float else ""
    if kind and (lower or upper):
        if lower and upper:
            return f"{kind} in {'[' if lo_incl else '('}{lower}, {upper}{']' if hi_incl else ')'}"
        if lower:
            return f"{kind} {'≥' if lo_incl else '>'} {lower}"
        return f"{kind} {'≤' if hi_incl else '<'} {upper}"
    if kind:
        return kind
    if _is_optional_int(ann):
        return "an integer, or empty"
    return "text"


def _is_optional_int(ann: Any) -> bool:
    return set(get_args(ann)) == {int, type(None)}


# --- strict loading ---------------------------------------------------------------------------


def load_settings(
    env_file: str | Path | None = ".env",
    environ: Mapping[str, str] | None = None,
    *,
    unknown_env_keys: Literal["error", "ignore"] = "ignore",
) -> Settings:
    """Load settings with precise errors.

    Reads ``env_file`` (skipped if it does not exist; ``None`` = no file) and then ``environ``
    (default: the process environment), which wins. An unknown ``QR_`` key in the file is an error
    with a did-you-mean; in the process environment it is an error only if asked, because other
    programs may export ``QR_`` variables.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    problems: list[SettingProblem] = []
    if env_file is not None and Path(env_file).is_file():
        file_values = {e.key.upper(): e.value for e in read_env_file(env_file)}
        problems += unknown_key_problems(file_values, where=str(env_file))
        values.update(file_values)
    env_values = {k.upper(): v for k, v in environ.items() if k.upper().startswith(ENV_PREFIX)}
    if unknown_env_keys == "error":
        problems += unknown_key_problems(env_values, where="environment")
    values.update(env_values)
    if problems:
        raise SettingsError(problems, hint="check the spelling; `qrs settings` lists every key")
    return settings_from_mapping(values)


def settings_from_mapping(values: Mapping[str, Any]) -> Settings:
    """Validate ``QR_KEY -> value`` pairs (unknown keys ignored); raise SettingsError on errors."""
    fields = Settings.model_fields
    data = {
        k[len(ENV_PREFIX) :].lower(): v
        for k, v in values.items()
        if k.upper().startswith(ENV_PREFIX) and k[len(ENV_PREFIX) :].lower() in fields
    }
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(
            _problems_from_validation(exc, data),
            hint="see the allowed values above; `qrs settings` lists every key",
        ) from None


def unknown_key_problems(values: Iterable[str], where: str) -> list[SettingProblem]:
    """Report ``QR_`` keys that are not in the schema, each with a did-you-mean."""
    known = [env_key(n) for n in Settings.model_fields]
    problems = []
    for key in values:
        upper = key.upper()
        if upper.startswith(ENV_PREFIX) and upper not in known:
            problems.append(
                SettingProblem(key, "", f"unknown key in {where}{_did_you_mean(upper, known)}")
            )
    return problems


def resolve_request_overrides(
    extra_args: Mapping[str, Any] | None, base: Settings
) -> dict[str, Any]:
    """Validate a request's ``qr_*`` arguments and return ``field -> typed value``.

    Keys without the ``qr_`` prefix belong to other plugins and are ignored. Raises
    RequestArgumentError (a ValueError) naming the argument and what is allowed.
    """
    if not extra_args:
        return {}
    overrides: dict[str, Any] = {}
    problems: list[SettingProblem] = []
    allowed = per_request_fields()
    for key, raw in extra_args.items():
        if not isinstance(key, str) or not key.startswith(REQUEST_PREFIX):
            continue
        name = key[len(REQUEST_PREFIX) :]
        if name not in allowed:
            if name in Settings.model_fields:
                msg = f"cannot be set per request; it is a server setting ({env_key(name)})"
            else:
                options = [request_key(n) for n in allowed]
                msg = f"unknown argument{_did_you_mean(key, options)}"
            problems.append(SettingProblem(key, "", msg))
            continue
        f = Settings.model_fields[name]
        if isinstance(raw, bool) and f.annotation is not bool:
            problems.append(SettingProblem(key, repr(raw), f"expected {allowed_text(f)}"))
            continue
        try:
            overrides[name] = _field_adapter(name).validate_python(raw)
        except ValidationError as exc:
            allowed_note = "" if allowed_text(f) == "text" else f"; allowed: {allowed_text(f)}"
            problems.append(
                SettingProblem(key, _clip(repr(raw)), f"{_first_message(exc)}{allowed_note}")
            )
    if not problems and overrides:
        merged = base.model_copy(update=overrides)
        for p in cross_field_problems(merged):
            problems.append(
                SettingProblem(request_key(p.key[len(ENV_PREFIX) :].lower()), p.value, p.message)
            )
    if problems:
        raise RequestArgumentError(
            problems, hint="per-request keys: " + ", ".join(request_key(n) for n in allowed)
        )
    return overrides


# --- helpers ----------------------------------------------------------------------------------


@cache
def _field_adapter(name: str) -> TypeAdapter[Any]:
    f = Settings.model_fields[name]
    annotation: Any = f.annotation
    if f.metadata:
        annotation = Annotated[annotation, *f.metadata]
    return TypeAdapter(annotation)


def _problems_from_validation(
    exc: ValidationError, data: Mapping[str, Any]
) -> list[SettingProblem]:
    problems = []
    for err in exc.errors():
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _CrossFieldError):
            problems.extend(ctx_error.problems)
            continue
        name = str(err["loc"][0]) if err["loc"] else ""
        f = Settings.model_fields.get(name)
        secret = f is not None and _is_secret(f)
        raw = data.get(name, "")
        shown = SECRET_MASK if secret and raw else _clip(str(raw))
        message = _clean_message(err["msg"])
        if f is not None and allowed_text(f) != "text":
            message += f"; allowed: {allowed_text(f)}"
        problems.append(SettingProblem(env_key(name) if name else "settings", shown, message))
    return problems


def _first_message(exc: ValidationError) -> str:
    errors = exc.errors()
    return _clean_message(errors[0]["msg"]) if errors else "invalid value"


def _clean_message(msg: str) -> str:
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def _is_per_request(f: FieldInfo) -> bool:
    extra = f.json_schema_extra
    return bool(isinstance(extra, dict) and extra.get("per_request"))


def _is_secret(f: FieldInfo) -> bool:
    return f.annotation is SecretStr


def _type_name(f: FieldInfo) -> str:
    ann = f.annotation
    if get_origin(ann) is Literal:
        return "enum"
    if ann is SecretStr:
        return "secret"
    if _is_optional_int(ann):
        return "int?"
    return getattr(ann, "__name__", str(ann))


def _fmt(value: Any) -> str:
    """Shortest faithful text for a number: 5000.0 → '5000', 0.7 → '0.7', 1e-10 → '1e-10'."""
    if (
        isinstance(value, float)
        and math.isfinite(value)
        and value == int(value)
        and abs(value) < 1e15
    ):
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
