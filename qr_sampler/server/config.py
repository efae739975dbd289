"""The reference server's options, their help text (shared by both command lines) and checks."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from qr_sampler.addresses import address_problem
from qr_sampler.errors import QRSamplerError

if TYPE_CHECKING:
    from pydantic import SecretStr

DEFAULT_ADDRESS = "127.0.0.1:50051"
#: Largest reply the server produces even without a configured cap: stays below gRPC's default
#: 4 MiB message limit, so an over-large request gets INVALID_ARGUMENT, not a broken call.
HARD_MAX_BYTES = 4_000_000


class EntropyServerError(QRSamplerError):
    """Raised when the server cannot start as configured (bad option, port taken, TLS file)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def _option(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class ServerConfig:
    """How to run the server. Defaults: plaintext on 127.0.0.1:50051, no key, no limits."""

    address: str = _option(
        DEFAULT_ADDRESS, "Where to listen: host:port, [::1]:port or unix:///path "
        "(port 0 picks a free port). Only loopback unless you name another address.")
    api_key: SecretStr = field(default_factory=lambda: _secret(""),
                               metadata={"help": "API key clients must send (secret)."})
    api_key_header: str = _option(
        "api-key", "Metadata header carrying the API key (lowercase). A call without it gets "
        "UNAUTHENTICATED, one with a wrong key PERMISSION_DENIED.")
    max_bytes_per_request: int = _option(
        0, "Largest byte count one request may ask for (INVALID_ARGUMENT above it); 0 = "
        f"{HARD_MAX_BYTES:,}.")
    rate_limit_per_min: int = _option(
        0, "Most requests per minute over all clients (RESOURCE_EXHAUSTED beyond); each message "
        "on a stream counts as one. 0 = unlimited.")
    tls_cert: str = _option("", "PEM certificate chain of the server; enables TLS.")
    tls_key: str = _option("", "PEM private key of the server certificate.")
    tls_client_ca: str = _option(
        "", "PEM CA that client certificates must chain to; requires mutual TLS.")
    device_id: str = _option("urandom", "Device id sent in every reply.")
    grace_period_s: float = _option(
        5.0, "Seconds that in-flight calls and open streams get after SIGTERM/SIGINT before "
        "they are cancelled.")
    max_workers: int = _option(
        16, "Worker threads; each open stream holds one for its lifetime.")

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):  # a plain string would show in repr(): wrap it
            object.__setattr__(self, "api_key", _secret(self.api_key))
        problems = self.problems()
        if problems:
            raise EntropyServerError("; ".join(problems),
                                     hint="see `python -m qr_sampler.server --help`")

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    @property
    def effective_max_bytes(self) -> int:
        return min(self.max_bytes_per_request or HARD_MAX_BYTES, HARD_MAX_BYTES)

    def problems(self) -> list[str]:
        """Every reason this configuration cannot run (empty when it can)."""
        problems = []
        # Port 0 asks the OS for a free port; the client-side rule (1..65535) is otherwise right.
        probe = self.address[:-2] + ":1" if self.address.endswith(":0") else self.address
        if problem := address_problem(probe):
            problems.append(f"address {self.address!r}: {problem}")
        header = self.api_key_header
        if header != header.lower() or not header or header.startswith("grpc-"):
            problems.append(f"api key header {header!r}: must be lowercase, not grpc-*")
        if bool(self.tls_cert) != bool(self.tls_key):
            problems.append("TLS needs both a certificate and its key")
        if self.tls_client_ca and not self.tls:
            problems.append("a client CA (mutual TLS) needs TLS: give a certificate and key")
        if self.tls and self.address.startswith("unix:"):
            problems.append("TLS over a unix socket is not supported")
        for name in ("max_bytes_per_request", "rate_limit_per_min"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be ≥ 0")
        if self.max_workers < 1:
            problems.append("max_workers must be ≥ 1")
        if self.grace_period_s < 0:
            problems.append("grace_period_s must be ≥ 0")
        return problems


def option_help(name: str) -> str:
    """Help text of a ServerConfig field, for the argparse and typer front ends."""
    for f in fields(ServerConfig):
        if f.name == name:
            return str(f.metadata["help"])
    raise KeyError(name)


def api_key_from_env(variable: str) -> SecretStr:
    """Read the API key from the named environment variable (keys never go on a command line)."""
    from qr_sampler.envkeys import ApiKeyVariableError
    from qr_sampler.envkeys import api_key_from_env as read_key

    try:
        return _secret(read_key(variable))
    except ApiKeyVariableError as exc:
        raise EntropyServerError(exc.message, hint=exc.hint) from None


def _secret(value: str) -> SecretStr:
    """Wrap a key so no repr shows it; pydantic is imported here, not when the module loads
    (command lines import this module for their --help)."""
    from pydantic import SecretStr

    return SecretStr(value)
