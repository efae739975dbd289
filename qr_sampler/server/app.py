"""Runs the reference entropy server: gRPC server, health, reflection, TLS, UDS, shutdown.

:class:`EntropyServer` is the embeddable object (tests start and stop it in-process);
:func:`serve` is what ``qrs serve-entropy`` and ``python -m qr_sampler.server`` run: start, log
the bound address, wait for SIGTERM/SIGINT, stop with a grace period, log what was served.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from qr_sampler.addresses import unix_socket_path
from qr_sampler.proto import entropy_service_pb2 as _pb2
from qr_sampler.proto.entropy_service_pb2 import EntropyRequest, EntropyResponse
from qr_sampler.server.config import EntropyServerError, ServerConfig
from qr_sampler.server.servicer import ByteSource, EntropyServicer, RequestPolicy, ServerStats

logger = logging.getLogger(__name__)

#: Full name of the service, taken from the descriptor rather than retyped.
SERVICE_NAME = _pb2.DESCRIPTOR.services_by_name["EntropyService"].full_name


class EntropyServer:
    """One server instance. ``start()`` binds and serves; ``stop()`` drains and stops.

    ``source`` produces the bytes (``os.urandom`` by default; a hardware driver or a test double
    otherwise); ``clock`` drives the rate limit (tests inject one).
    """

    def __init__(self, config: ServerConfig, *, source: ByteSource = os.urandom,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.stats = ServerStats()
        policy = RequestPolicy(api_key=config.api_key.get_secret_value(),
                               api_key_header=config.api_key_header,
                               max_bytes=config.effective_max_bytes,
                               rate_limit_per_min=config.rate_limit_per_min, clock=clock)
        self._servicer = EntropyServicer(policy, source, config.device_id, self.stats)
        self._health = health.HealthServicer()
        self._server: grpc.Server | None = None
        self.address = ""

    @property
    def requests_served(self) -> int:
        """Requests answered with bytes so far (stream messages included)."""
        return self.stats.requests_served

    def start(self) -> str:
        """Bind, start serving and return the bound address (port 0 resolved)."""
        # No SO_REUSEPORT: a second server on a port in use must fail, not silently share it
        # (the kernel would spread connections over both, including one that is shutting down).
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.config.max_workers,
                                                        thread_name_prefix="qr-entropy"),
                             options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((self._entropy_handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        self.address = self._bind(server)
        server.start()
        self._server = server
        for service in ("", SERVICE_NAME):
            self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        logger.info("entropy server listening on %s (%s%s)", self.address,
                    "TLS" if self.config.tls else "plaintext",
                    ", API key required" if self.config.api_key.get_secret_value() else "")
        return self.address

    def _entropy_handler(self) -> grpc.GenericRpcHandler[EntropyRequest, EntropyResponse]:
        s = self._servicer
        handlers = {
            "GetEntropy": grpc.unary_unary_rpc_method_handler(
                s.GetEntropy, request_deserializer=EntropyRequest.FromString,
                response_serializer=EntropyResponse.SerializeToString),
            "StreamEntropy": grpc.stream_stream_rpc_method_handler(
                s.StreamEntropy, request_deserializer=EntropyRequest.FromString,
                response_serializer=EntropyResponse.SerializeToString),
        }
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    def _bind(self, server: grpc.Server) -> str:
        address = self.config.address
        if address.startswith("unix:"):
            _remove_stale_socket(address)
        try:
            if self.config.tls:
                port = server.add_secure_port(address, self._credentials())
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise EntropyServerError(f"cannot listen on {address}",
                                     hint="is another server using it? pick another address "
                                          "or port") from exc
        if not address.startswith("unix:") and address.endswith(":0"):
            address = f"{address[:-2]}:{port}"
        return address

    def _credentials(self) -> grpc.ServerCredentials:
        c = self.config
        client_ca = _read(c.tls_client_ca) if c.tls_client_ca else None
        return grpc.ssl_server_credentials([(_read(c.tls_key), _read(c.tls_cert))],
                                           root_certificates=client_ca,
                                           require_client_auth=client_ca is not None)

    def stop(self, grace_s: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish for ``grace_s``, then stop. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._health.enter_graceful_shutdown()
        grace = self.config.grace_period_s if grace_s is None else grace_s
        server.stop(grace).wait(grace + 5)
        logger.info("entropy server on %s stopped: %s", self.address, self.stats.summary())

    def __enter__(self) -> EntropyServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(0)


def serve(config: ServerConfig, *, source: ByteSource = os.urandom) -> dict[str, Any]:
    """Run until SIGTERM or SIGINT, then stop gracefully; return the served/rejected counts.

    Must run in the main thread (signal handlers can only be installed there).
    """
    server = EntropyServer(config, source=source)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s; shutting down (grace %.1f s)", signal.Signals(signum).name,
                    config.grace_period_s)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        stop.wait()  # a signal handler runs (and sets the event) while this waits
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return server.stats.summary()


def _read(path: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise EntropyServerError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _remove_stale_socket(address: str) -> None:
    """Delete a socket file left by a killed server; refuse to touch anything else."""
    path = Path(unix_socket_path(address))
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise EntropyServerError(f"{path} exists and is not a socket",
                                 hint="remove it or choose another socket path")
    with socket.socket(socket.AF_UNIX) as probe:
        if probe.connect_ex(str(path)) == 0:
            raise EntropyServerError(f"another server is listening on {path}")
    path.unlink()
