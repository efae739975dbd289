"""Checks for gRPC target addresses, shared by the settings schema, the server and the CLI.

Pure Python on purpose: command lines import it to validate flags without loading pydantic.
"""

from __future__ import annotations

__all__ = ["address_problem", "unix_socket_path"]


def unix_socket_path(address: str) -> str:
    """The socket path of a ``unix:PATH`` or ``unix://PATH`` address (gRPC accepts both)."""
    return address.removeprefix("unix://") if address.startswith("unix://") else address[5:]


def address_problem(address: str) -> str:
    """Return why a gRPC target address is malformed, or '' if it is fine."""
    if address.startswith("unix:"):
        return "" if unix_socket_path(address) else "unix: address needs a socket path, e.g. unix:///run/qrng.sock"
    if any(ch.isspace() for ch in address):
        return "must not contain spaces"
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
        if not sep or not host:
            return "an IPv6 address must look like [::1]:50051"
    else:
        host, sep, port = address.rpartition(":")
        if not sep or not host:
            return "must be host:port, [ipv6]:port or unix:///path"
        if ":" in host:
            return "wrap an IPv6 address in brackets: [::1]:50051"
    if not port.isdigit() or not 0 < int(port) < 65536:
        return "port must be a number from 1 to 65535"
    return ""
