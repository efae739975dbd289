"""The reference entropy server: the qr-sampler protocol served from ``os.urandom``.

It stands in for a hardware QRNG (the ``urandom`` profile, and the tests): both RPCs, the
``grpc.health.v1`` health service, server reflection, an optional API key, per-request byte cap
and rate limit with proper status codes, TCP or unix socket, optional TLS / mutual TLS.
Run it with ``qrs serve-entropy`` or ``python -m qr_sampler.server``; embed it with
:class:`EntropyServer`.

The configuration names import without grpc (so command lines can show ``--help`` fast); the
running parts (:class:`EntropyServer`, :func:`serve`) import grpc on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qr_sampler.server.config import (
    DEFAULT_ADDRESS,
    HARD_MAX_BYTES,
    EntropyServerError,
    ServerConfig,
    api_key_from_env,
    option_help,
)

if TYPE_CHECKING:
    from qr_sampler.server.app import SERVICE_NAME, EntropyServer, serve

__all__ = [
    "DEFAULT_ADDRESS",
    "HARD_MAX_BYTES",
    "SERVICE_NAME",
    "EntropyServer",
    "EntropyServerError",
    "ServerConfig",
    "api_key_from_env",
    "option_help",
    "serve",
]

_LAZY = ("SERVICE_NAME", "EntropyServer", "serve")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from qr_sampler.server import app

        return getattr(app, name)
    raise AttributeError(f"module 'qr_sampler.server' has no attribute {name!r}")
