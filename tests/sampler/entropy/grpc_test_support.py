"""Shared helpers of the gRPC client tests (imported by conftest.py and the test modules).

A plain module, because fixtures live in conftest.py, which tests must not import (pytest runs
with ``--import-mode=importlib``; this module is imported as ``tests.sampler.entropy.…``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The API key used everywhere in these tests; the secrecy test greps for it.
API_KEY = "qrs-test-key-3f9c1a7e5b2d"

QRNG_CAP = 13_312
QRNG_HEADER = "x-api-key"
QRNG_METHOD = "/qrng.QuantumRNG/GetRandomBytes"


class FakeClock:
    """Monotonic clock and sleep for tests: time moves only when told (or when slept)."""

    def __init__(self, start: float = 10_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class RawServer:
    """A server whose handlers get and return serialized messages; records every request."""

    address: str
    requests: list[bytes]
    peers: list[str]
    #: One entry per stream call the server accepted (its peer).
    streams: list[str]


@dataclass
class QrngServer:
    """The qrng-style server: its address, the byte strings it sent, the codes it answered."""

    address: str
    sent: list[bytes]
    rejected: list[str]


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
