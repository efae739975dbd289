"""The operating system's CSPRNG (``os.urandom``): the default source and the usual fallback."""

from __future__ import annotations

import os

from qr_sampler.entropy.base import EntropySource
from qr_sampler.errors import EntropyUnavailableError


class SystemEntropySource(EntropySource):
    """Bytes from ``os.urandom`` (getrandom(2) on Linux). Thread-safe, no state."""

    name = "system"
    health_tested = False  # generator output: the tests cannot fail it

    def get_random_bytes(self, n: int) -> bytes:
        try:
            return os.urandom(n)
        except (OSError, ValueError, OverflowError) as exc:
            raise EntropyUnavailableError(f"os.urandom({n}) failed: {exc}") from exc
