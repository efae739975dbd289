"""Reaching the server below gRPC: resolve, connect (TCP or unix socket), TLS handshake.

gRPC reports all of these as one ``UNAVAILABLE``; doing them by hand lets the probe name the
step that failed ("cannot resolve", "connection refused", "certificate signed by an unknown
CA", "the server does not speak TLS") and time the connection apart from the calls. The gRPC
channel itself is opened with the sampler's own channel builder, so the probe talks to the
server exactly as the sampler will (same options, same TLS credentials).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import grpc

from qr_sampler.addresses import unix_socket_path
from qrs_cli.probe.types import ProbeTarget, TlsOptions

#: How long a certificate must still be valid before the probe stops warning about it.
CERT_WARN_DAYS = 14


class ReachProblem(Exception):
    """The server cannot be reached at this step: ``message`` says why, ``hint`` what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class Endpoint:
    """Where to connect: a TCP host and port, or a unix socket path."""

    kind: Literal["tcp", "unix"]
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_loopback(self) -> bool:
        """True for a unix socket or a loopback host (traffic never leaves the machine)."""
        if self.kind == "unix":
            return True
        return self.host in ("localhost", "::1") or self.host.startswith("127.")


def parse_endpoint(address: str) -> Endpoint:
    """Split a validated address (``host:port``, ``[v6]:port``, ``unix:path``)."""
    if address.startswith("unix:"):
        return Endpoint("unix", path=unix_socket_path(address))
    if address.startswith("["):
        host, _, port = address[1:].partition("]:")
    else:
        host, _, port = address.rpartition(":")
    return Endpoint("tcp", host=host, port=int(port))


@dataclass(frozen=True)
class Reach:
    """A successful connection: the addresses the name resolved to and the connect time."""

    resolved: tuple[str, ...]
    connected_to: str
    connect_s: float


def reach(endpoint: Endpoint, timeout_s: float) -> Reach:
    """Resolve and open (then close) one connection within ``timeout_s``; ReachProblem if not."""
    deadline = time.monotonic() + timeout_s
    if endpoint.kind == "unix":
        return _reach_unix(endpoint.path, timeout_s)
    infos = _resolve(endpoint, timeout_s)
    resolved = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    failures: list[str] = []
    for family, socktype, proto, _name, sockaddr in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        start = time.perf_counter()
        try:
            with socket.socket(family, socktype, proto) as sock:
                sock.settimeout(left)
                sock.connect(sockaddr)
        except TimeoutError:
            failures.append(f"{sockaddr[0]}: no answer")
            continue
        except OSError as exc:
            failures.append(f"{sockaddr[0]}: {_os_reason(exc)}")
            continue
        return Reach(resolved, str(sockaddr[0]), time.perf_counter() - start)
    where = f"{endpoint.host}:{endpoint.port}"
    if failures and all("refused" in f for f in failures):
        raise ReachProblem(f"connection refused at {where}",
                           "is the entropy server running, and on this port?")
    detail = "; ".join(failures) or "no time left"
    raise ReachProblem(f"cannot connect to {where} within {timeout_s:g} s ({detail})",
                       "check the address and any firewall between here and the server; "
                       "--connect-timeout gives a slow network more time")


def _resolve(endpoint: Endpoint, timeout_s: float) -> list[Any]:
    """getaddrinfo with a timeout (it has none of its own): run it on a daemon thread."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["infos"] = socket.getaddrinfo(endpoint.host, endpoint.port,
                                              type=socket.SOCK_STREAM)
        except OSError as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, name="qrs-probe-resolve", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if box.get("infos"):
        return list(box["infos"])
    if "error" in box:
        raise ReachProblem(f"cannot resolve {endpoint.host!r}: {_os_reason(box['error'])}",
                           "check the host name in QR_GRPC_SERVER_ADDRESS (or --address)")
    raise ReachProblem(f"resolving {endpoint.host!r} took longer than {timeout_s:g} s",
                       "check the DNS configuration, or use an IP address")


def _reach_unix(path: str, timeout_s: float) -> Reach:
    start = time.perf_counter()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(path)
    except FileNotFoundError:
        raise ReachProblem(f"no unix socket at {path}",
                           "is the entropy server running with this --address?") from None
    except OSError as exc:
        raise ReachProblem(f"cannot connect to unix socket {path}: {_os_reason(exc)}",
                           "is the entropy server running, and may this user open the "
                           "socket?") from None
    return Reach((path,), path, time.perf_counter() - start)


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return str(exc.strerror or exc)
    return str(exc.strerror or exc)


def tls_handshake(endpoint: Endpoint, tls: TlsOptions, timeout_s: float) -> dict[str, Any]:
    """Do one TLS handshake the way gRPC will (ALPN h2, same CA, name, client certificate) and
    describe the server's certificate; ReachProblem naming what failed."""
    name = tls.server_name or endpoint.host
    try:
        context = ssl.create_default_context(cafile=_expand(tls.ca_cert) or None)
        if tls.client_cert:
            context.load_cert_chain(_expand(tls.client_cert), _expand(tls.client_key) or None)
    except (OSError, ssl.SSLError) as exc:
        raise ReachProblem(f"cannot load the TLS files: {exc}",
                           "check --tls-ca-cert / --tls-client-cert / --tls-client-key "
                           "(QR_GRPC_TLS_*): PEM files this user can read") from None
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s) as raw, \
                context.wrap_socket(raw, server_hostname=name) as conn:
            cert = conn.getpeercert() or {}
            version, cipher, alpn = conn.version(), conn.cipher(), conn.selected_alpn_protocol()
    except ssl.SSLCertVerificationError as exc:
        raise _verify_problem(exc, name) from None
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        hint = ("is TLS on at the server? a plaintext server answers a handshake with garbage "
                "(then drop --tls / set QR_GRPC_TLS=false)")
        if "CERTIFICATE_REQUIRED" in str(reason).upper() or "ALERT" in str(reason).upper():
            hint = ("the server may require a client certificate (mutual TLS): pass "
                    "--tls-client-cert and --tls-client-key")
        raise ReachProblem(f"TLS handshake failed: {reason}", hint) from None
    except OSError as exc:
        raise ReachProblem(f"TLS connection failed: {_os_reason(exc)}") from None
    return _describe_certificate(cert, version, cipher[0] if cipher else "", alpn, name)


def _expand(path: str) -> str:
    return os.path.expanduser(path) if path else ""


def _verify_problem(exc: ssl.SSLCertVerificationError, name: str) -> ReachProblem:
    message = str(exc.verify_message or exc.reason or exc)
    if "hostname" in message.lower() or "ip address mismatch" in message.lower():
        return ReachProblem(f"the server certificate is not valid for {name!r}: {message}",
                            "pass --tls-server-name with a name the certificate lists "
                            "(QR_GRPC_TLS_SERVER_NAME)")
    if "expired" in message.lower():
        return ReachProblem(f"the server certificate has expired: {message}",
                            "renew the server's certificate")
    return ReachProblem(f"the server certificate is not trusted: {message}",
                        "pass --tls-ca-cert with the CA that signed it (QR_GRPC_TLS_CA_CERT)")


def _describe_certificate(cert: dict[str, Any], version: str | None, cipher: str,
                          alpn: str | None, name: str) -> dict[str, Any]:
    def flat(field: str) -> str:
        parts = [f"{k}={v}" for rdn in cert.get(field, ()) for k, v in rdn]
        return ", ".join(parts)

    not_after = str(cert.get("notAfter", ""))
    days_left = None
    if not_after:
        days_left = int((ssl.cert_time_to_seconds(not_after) - time.time()) // 86_400)
    return {
        "tls_version": version or "",
        "cipher": cipher,
        "alpn": alpn or "",
        "verified_name": name,
        "subject": flat("subject"),
        "issuer": flat("issuer"),
        "subject_alt_names": [f"{kind}:{value}" for kind, value
                              in cert.get("subjectAltName", ())],
        "not_after": not_after,
        "days_left": days_left,
    }


def open_channel(target: ProbeTarget) -> grpc.Channel:
    """A channel built exactly as the sampler's client builds it (options, TLS credentials)."""
    from qr_sampler.entropy._grpc_channel import open_channel as sampler_channel
    from qr_sampler.entropy._grpc_config import GrpcClientConfig

    config = GrpcClientConfig(
        address=target.address, mode=target.mode, method_path=target.method_path,
        stream_method_path=target.stream_method_path, api_key_header=target.api_key_header,
        timeout_s=target.rpc_timeout_s, tls=target.tls.enabled, tls_ca_cert=target.tls.ca_cert,
        tls_server_name=target.tls.server_name, tls_client_cert=target.tls.client_cert,
        tls_client_key=target.tls.client_key)
    return sampler_channel(config)


def wait_ready(channel: grpc.Channel, timeout_s: float) -> bool:
    """True when the channel reaches READY (HTTP/2 and, with TLS, the handshake) in time."""
    future = grpc.channel_ready_future(channel)
    try:
        future.result(timeout=max(timeout_s, 0.001))
    except grpc.FutureTimeoutError:
        future.cancel()
        return False
    return True
