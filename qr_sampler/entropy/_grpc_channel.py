"""Builds the client's gRPC channel: target, TLS / mTLS credentials and channel options.

Called lazily by the entropy source on its first fetch (and again after a reset), never at import
or construction, so a sampler configured for a server that is not up yet still starts.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from qr_sampler.entropy._grpc_config import GrpcClientConfig
from qr_sampler.errors import EntropyUnavailableError

ChannelOptions = list[tuple[str, int | str]]

#: Reconnect backoff after a failed connection: 100 ms growing (×1.6, ±20 % jitter) to at most
#: 1 s. gRPC's defaults (1 s growing to 120 s) would keep a channel dark for minutes after a
#: server restart; with these, a channel (and the breaker's readiness watcher) is connected
#: again about a second after the server accepts connections. Reconnect attempts are cheap (one
#: refused SYN on a dead server), and the circuit breaker keeps RPCs away meanwhile.
_INITIAL_RECONNECT_BACKOFF_MS = 100
_MAX_RECONNECT_BACKOFF_MS = 1000
#: How long a keepalive ping may go unanswered before the connection is considered dead.
_KEEPALIVE_TIMEOUT_MS = 10_000


def channel_options(config: GrpcClientConfig) -> ChannelOptions:
    """Options for the channel; pure, so tests can check the keepalive policy directly.

    Keepalive (off by default) is set up so it cannot provoke ``GOAWAY too_many_pings``: a server
    with gRPC's default policy tolerates two pings without data between its 5-minute minimum
    interval, so the client never pings an idle connection (``permit_without_calls=0``) and
    sends at most two pings without data frames in between (``max_pings_without_data=2``).
    """
    options: ChannelOptions = [
        ("grpc.initial_reconnect_backoff_ms", _INITIAL_RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", _MAX_RECONNECT_BACKOFF_MS),
        # gRPC uses this "minimum backoff" as the deadline of one connection attempt (TCP + TLS
        # + HTTP/2 settings), not as a pause: a slow link gets as long as one call
        # (QR_GRPC_TIMEOUT_MS), while refused attempts are still retried at the backoff above
        # (checked with grpcio 1.85: 100 ms here never connects through a 1.5 s handshake).
        ("grpc.min_reconnect_backoff_ms", max(int(config.timeout_s * 1000),
                                              _INITIAL_RECONNECT_BACKOFF_MS)),
    ]
    # A channel of its own subchannels: otherwise a fresh channel (the breaker's half-open trial)
    # inherits the old one's connection from gRPC's global pool, backoff and failure included.
    options.append(("grpc.use_local_subchannel_pool", 1))
    if config.keepalive_time_ms > 0:
        options += [
            ("grpc.keepalive_time_ms", config.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", _KEEPALIVE_TIMEOUT_MS),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 1),
        ]
    if config.mode == "server_streaming":
        # grpc.experimental.ChannelOptions.SingleThreadedUnaryStream (spelled out: that module is
        # not imported by `import grpc`): runs unary-stream calls on the caller's thread instead
        # of the channel's spin thread, about 40 % less latency per call.
        options.append(("SingleThreadedUnaryStream", 1))
    if config.tls and config.tls_server_name:
        options.append(("grpc.ssl_target_name_override", config.tls_server_name))
    return options


def open_channel(config: GrpcClientConfig) -> grpc.Channel:
    """A new channel to ``config.address`` (``host:port``, ``[v6]:port`` or ``unix:///path``)."""
    options = channel_options(config)
    if not config.tls:
        return grpc.insecure_channel(config.address, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read_pem("QR_GRPC_TLS_CA_CERT", config.tls_ca_cert),
        private_key=_read_pem("QR_GRPC_TLS_CLIENT_KEY", config.tls_client_key),
        certificate_chain=_read_pem("QR_GRPC_TLS_CLIENT_CERT", config.tls_client_cert),
    )
    return grpc.secure_channel(config.address, credentials, options=options)


def _read_pem(key: str, path: str) -> bytes | None:
    """The file's bytes, None when not configured; unreadable files name the setting."""
    if not path:
        return None
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise EntropyUnavailableError(
            f"cannot read {key}={path}: {exc.strerror or exc}") from exc
