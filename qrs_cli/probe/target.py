"""From a profile name and command-line flags to one validated :class:`ProbeTarget`.

Precedence, highest first: flags > process environment > profile files (``secrets.env`` over
``.env``) > schema defaults — the profile library layers the last three, the flags go on top.
Only the keys the probe uses are validated, through the sampler's own settings schema, so a
value the plugin would reject is rejected here with the same message (naming the flag when the
value came from one).

One translation: a profile with the co-located reference server names it
``entropy-server:50051``, a name that resolves only inside the Compose network. From the host
the probe reaches the same server on its published loopback port, ``QRS_ENTROPY_SERVER_PORT``
(and says so in the report's notes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import SecretStr

from qr_sampler.envkeys import ApiKeyVariableError, api_key_from_env
from qr_sampler.errors import SettingsError
from qr_sampler.settings import ENV_PREFIX, Settings, setting_default, settings_from_mapping
from qrs_cli.probe.errors import ProbeError
from qrs_cli.probe.types import ProbeTarget, TlsOptions

#: The keys the probe reads; every other key of a profile is irrelevant to it.
PROBE_KEYS = (
    "QR_GRPC_SERVER_ADDRESS", "QR_GRPC_MODE", "QR_GRPC_METHOD_PATH", "QR_GRPC_STREAM_METHOD_PATH",
    "QR_GRPC_API_KEY", "QR_GRPC_API_KEY_HEADER", "QR_GRPC_TIMEOUT_MS",
    "QR_GRPC_MAX_BYTES_PER_REQUEST", "QR_GRPC_RATE_LIMIT_PER_MIN", "QR_GRPC_DAILY_BYTE_BUDGET",
    "QR_GRPC_TLS", "QR_GRPC_TLS_CA_CERT", "QR_GRPC_TLS_SERVER_NAME", "QR_GRPC_TLS_CLIENT_CERT",
    "QR_GRPC_TLS_CLIENT_KEY", "QR_SAMPLE_COUNT", "QR_QUOTA_STATE_DIR",
)
#: Flag → the key it overrides (for messages that name what the user typed).
FLAG_KEYS = {
    "--address": "QR_GRPC_SERVER_ADDRESS", "--method": "QR_GRPC_METHOD_PATH",
    "--stream-method": "QR_GRPC_STREAM_METHOD_PATH", "--mode": "QR_GRPC_MODE",
    "--tls": "QR_GRPC_TLS", "--tls-ca-cert": "QR_GRPC_TLS_CA_CERT",
    "--tls-server-name": "QR_GRPC_TLS_SERVER_NAME",
    "--tls-client-cert": "QR_GRPC_TLS_CLIENT_CERT", "--tls-client-key": "QR_GRPC_TLS_CLIENT_KEY",
    "--api-key-env": "QR_GRPC_API_KEY",
    "--max-bytes-per-request": "QR_GRPC_MAX_BYTES_PER_REQUEST",
    "--sample-count": "QR_SAMPLE_COUNT",
}
#: The probe's connection deadline when no flag sets one: the schema's call timeout, as for
#: ProbeTarget (one source of defaults).
DEFAULT_CONNECT_TIMEOUT_S = ProbeTarget.connect_timeout_s
_HEADER_RE = re.compile(r"^[0-9a-z_.\-]+$")


@dataclass(frozen=True)
class TargetOverrides:
    """What the command line says; ``None`` = not given (the profile decides)."""

    address: str | None = None
    method: str | None = None
    stream_method: str | None = None
    mode: str | None = None
    api_key_env: str = ""
    headers: tuple[str, ...] = ()
    tls: bool | None = None
    tls_ca_cert: str | None = None
    tls_server_name: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    connect_timeout_s: float | None = None
    rpc_timeout_s: float | None = None
    max_bytes_per_request: int | None = None
    sample_count: int | None = None

    def as_keys(self) -> dict[str, str]:
        """The given flags as ``QR_*`` values (the API key is added separately)."""
        given = {
            "--address": self.address, "--method": self.method,
            "--stream-method": self.stream_method, "--mode": self.mode,
            "--tls": None if self.tls is None else ("true" if self.tls else "false"),
            "--tls-ca-cert": self.tls_ca_cert, "--tls-server-name": self.tls_server_name,
            "--tls-client-cert": self.tls_client_cert, "--tls-client-key": self.tls_client_key,
            "--max-bytes-per-request": _text(self.max_bytes_per_request),
            "--sample-count": _text(self.sample_count),
        }
        return {FLAG_KEYS[flag]: value for flag, value in given.items() if value is not None}


@dataclass(frozen=True)
class ResolvedTarget:
    """The target and what the user should know about how it was resolved."""

    target: ProbeTarget
    notes: tuple[str, ...] = ()


def resolve_target(profile: str | None, overrides: TargetOverrides, *,
                   root: str | None = None,
                   environ: Mapping[str, str] | None = None) -> ResolvedTarget:
    """Resolve the probe target of ``profile`` (None = schema defaults + environment + flags).

    Raises ProbeError (exit 2) for an unknown or unreadable profile, an invalid value, a bad
    ``--header`` or an ``--api-key-env`` variable that is not set.
    """
    environ = os.environ if environ is None else environ
    notes: list[str] = []
    if profile:
        values = _profile_values(profile, root, environ)
    else:
        values = {k.upper(): v for k, v in environ.items() if k.upper().startswith(ENV_PREFIX)}
    source_type = values.get("QR_ENTROPY_SOURCE_TYPE", setting_default("entropy_source_type"))
    if profile and source_type != "quantum_grpc":
        notes.append(f"profile {profile!r} uses QR_ENTROPY_SOURCE_TYPE={source_type}, not "
                     "quantum_grpc: the sampler does not call this server; probing its "
                     "QR_GRPC_* settings anyway")
    if overrides.address is None:
        notes += _compose_address_to_host(values)
    chosen = {k: v for k, v in values.items() if k in PROBE_KEYS}
    chosen.update(overrides.as_keys())
    if overrides.api_key_env:
        chosen["QR_GRPC_API_KEY"] = _key_from_env(overrides.api_key_env, environ)
    settings = _validated(chosen, overrides)
    if settings.grpc_tls:
        _check_readable(settings)
    rpc_timeout = overrides.rpc_timeout_s or settings.grpc_timeout_ms / 1000
    connect_timeout = overrides.connect_timeout_s or DEFAULT_CONNECT_TIMEOUT_S
    if rpc_timeout <= 0 or connect_timeout <= 0:
        raise ProbeError("--connect-timeout and --rpc-timeout must be > 0 seconds",
                         "e.g. --connect-timeout 3 --rpc-timeout 5")
    target = ProbeTarget(
        address=settings.grpc_server_address,
        mode=settings.grpc_mode,
        method_path=settings.grpc_method_path,
        stream_method_path=settings.grpc_stream_method_path,
        api_key=settings.grpc_api_key,
        api_key_header=settings.grpc_api_key_header,
        extra_headers=_parse_headers(overrides.headers, settings.grpc_api_key_header),
        tls=TlsOptions(
            enabled=settings.grpc_tls,
            ca_cert=settings.grpc_tls_ca_cert,
            server_name=settings.grpc_tls_server_name,
            client_cert=settings.grpc_tls_client_cert,
            client_key=settings.grpc_tls_client_key,
        ),
        connect_timeout_s=connect_timeout,
        rpc_timeout_s=rpc_timeout,
        sample_count=settings.sample_count,
        max_bytes_per_request=settings.grpc_max_bytes_per_request,
        rate_limit_per_min=settings.grpc_rate_limit_per_min,
        daily_byte_budget=settings.grpc_daily_byte_budget,
        profile=profile or "",
        quota_state_dir=settings.quota_state_dir,
    )
    return ResolvedTarget(target, tuple(notes))


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)


def _profile_values(profile: str, root: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The profile's layered values (files + process env), read by the profile library."""
    from qrs_cli.profiles.discovery import find_project
    from qrs_cli.profiles.sources import load_sources, require_readable

    sources = load_sources(find_project(root), profile, environ)
    require_readable(sources)
    return sources.merged()


def _compose_address_to_host(values: dict[str, str]) -> list[str]:
    """Point the Compose-network name of the co-located server at its loopback host port."""
    from qrs_cli.profiles.stack import ENTROPY_SERVER_ADDRESS

    if values.get("QR_GRPC_SERVER_ADDRESS") != ENTROPY_SERVER_ADDRESS:
        return []
    port = values.get("QRS_ENTROPY_SERVER_PORT", "50051").strip() or "50051"
    if not port.isdigit():
        raise ProbeError(f"QRS_ENTROPY_SERVER_PORT={port!r} is not a port number",
                         "set it to the host port of the co-located entropy server, e.g. 50051")
    values["QR_GRPC_SERVER_ADDRESS"] = f"127.0.0.1:{port}"
    return [f"QR_GRPC_SERVER_ADDRESS={ENTROPY_SERVER_ADDRESS} resolves only inside the Compose "
            f"network; probing its published port 127.0.0.1:{port} (QRS_ENTROPY_SERVER_PORT) "
            "from this host"]


def _validated(values: dict[str, str], overrides: TargetOverrides) -> Settings:
    """The sampler schema's verdict on the probe's keys; errors name the flag when given."""
    try:
        return settings_from_mapping(values)
    except SettingsError as exc:
        from_flags = {key: flag for flag, key in FLAG_KEYS.items()
                      if key in overrides.as_keys() or (flag == "--api-key-env"
                                                        and overrides.api_key_env)}
        parts = []
        for problem in exc.problems:
            flag = from_flags.get(problem.key)
            parts.append(f"{flag} ({problem})" if flag else str(problem))
        raise ProbeError("; ".join(parts),
                         "fix the flag or the profile; `qrs settings` lists what each key "
                         "accepts") from None


def _check_readable(settings: Settings) -> None:
    """TLS files must be readable now: a typo is a usage error, not a failed handshake."""
    for key, path in (("QR_GRPC_TLS_CA_CERT", settings.grpc_tls_ca_cert),
                      ("QR_GRPC_TLS_CLIENT_CERT", settings.grpc_tls_client_cert),
                      ("QR_GRPC_TLS_CLIENT_KEY", settings.grpc_tls_client_key)):
        if not path:
            continue
        try:
            with open(os.path.expanduser(path), "rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise ProbeError(f"cannot read {key}={path}: {exc.strerror or exc}",
                             "pass a PEM file this user can read (--tls-ca-cert, "
                             "--tls-client-cert, --tls-client-key)") from None


def _key_from_env(variable: str, environ: Mapping[str, str]) -> str:
    """The API key from the named variable (keys never travel on a command line)."""
    try:
        return api_key_from_env(variable, environ)
    except ApiKeyVariableError as exc:
        raise ProbeError(exc.message, exc.hint) from None


def _parse_headers(raw: tuple[str, ...], key_header: str) -> tuple[tuple[str, SecretStr], ...]:
    """``--header name:value`` pairs; names are lowercased (gRPC metadata keys must be).

    Values are kept secret: an ``authorization`` header is as sensitive as the API key. Error
    messages name the header, never its value.
    """
    headers: list[tuple[str, SecretStr]] = []
    for item in raw:
        name, sep, value = item.partition(":")
        name, value = name.strip().lower(), value.strip()
        problem = ""
        if not sep or not name or not value:
            problem = "must look like name:value"
        elif not _HEADER_RE.match(name):
            problem = f"header {name!r}: use a-z, 0-9, '-', '_', '.'"
        elif name.startswith("grpc-") or name.endswith("-bin"):
            problem = f"header {name!r}: grpc-* and *-bin are reserved"
        elif name == key_header:
            problem = f"header {name!r} carries the API key: use --api-key-env"
        if problem:
            raise ProbeError(f"--header {problem}", "e.g. --header x-client-id:lab-7")
        headers.append((name, SecretStr(value)))
    return tuple(headers)
