"""Fixtures for the probe tests: real loopback servers, reused from the gRPC client tests.

The reference server (``start_server``), the qrng-style server built from another .proto
(``qrng_server``), raw-bytes servers (``raw_server``) and the throwaway TLS material
(``tls_files``) are the gRPC client tests' own fixtures, imported so both suites probe the same
servers. Every server listens on 127.0.0.1 and is stopped at teardown.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.cli.conftest import write_profile
from tests.sampler.entropy.conftest import (  # noqa: F401  (fixtures, found by name)
    qrng_modules,
    qrng_server,
    raw_server,
    start_server,
    tls_files,
)

#: Keeps every latency run short; the numbers are not what these tests check.
FAST = ("--total", "8")


def released_port() -> int:
    """A loopback port that was bound a moment ago and is now closed: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def grpc_profile(root: Path, name: str, address: str, extra: str = "", **files: str) -> Path:
    """A quantum_grpc profile aimed at ``address`` (always a loopback test server); ``files``
    as for ``write_profile`` (e.g. ``secrets=``)."""
    assert address.startswith(("127.0.0.1:", "unix:")), address
    return write_profile(root, name, "QR_ENTROPY_SOURCE_TYPE=quantum_grpc\n"
                                     f"QR_GRPC_SERVER_ADDRESS={address}\n{extra}", **files)


@pytest.fixture
def dead_port() -> int:
    return released_port()
