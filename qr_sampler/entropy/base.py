"""The entropy-source interface every source implements (built-in, gRPC, or third-party).

A source hands out raw bytes. The sampler asks once per engine step for all rows at once through
:meth:`EntropySource.fetch_batch`, which returns the bytes together with their provenance (source
name, device id, server timestamp, latency, the nonce sent and whether the server echoed it) so
every token can say where its entropy came from and that it was fetched for this step.

Contract for implementers:
- ``get_random_bytes(n)`` returns exactly ``n`` bytes or raises :class:`EntropyError`; it never
  returns fewer, never pads, never raises anything else on purpose.
- ``fetch_batch(counts, nonce)`` is what the sampler calls; sources that can send a nonce to
  their device override it, the others inherit one that records the nonce and says the echo is
  unknown (``echo_verified=None``), so third-party sources keep working unchanged.
- Sources are created cheaply and lazily: no network or device I/O in ``__init__``.
- ``close()`` is idempotent; ``health()`` is cheap, never raises, and never includes secrets.
- Sources may be called from several threads; they protect their own state.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from qr_sampler.types import EntropyBatch

if TYPE_CHECKING:
    from qr_sampler.settings import Settings


class EntropySource(ABC):
    """A supplier of random bytes."""

    #: Registry name of the source (``system``, ``quantum_grpc``, …); wrappers set it per instance.
    name: str = "abstract"
    #: True for sources whose statistical quality is not established.
    experimental: ClassVar[bool] = False
    #: Whether the fallback wrapper runs the online health tests on this source's bytes: True
    #: for devices (a QRNG, a plugin's hardware) that can get stuck; False for generators whose
    #: output passes by construction (a CSPRNG, a seeded PRNG, a hash).
    health_tested: ClassVar[bool] = True
    #: Whether a fetch is CPU work in the calling thread (a generator) rather than a wait (a
    #: network or a device). The sampler overlaps a wait with the step's tensor work on a thread;
    #: on a CPU host, CPU work there would only compete with torch's threads for the same cores.
    fetch_uses_cpu: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> EntropySource:
        """Create the source from settings. Override when the source has options."""
        return cls()

    @abstractmethod
    def get_random_bytes(self, n: int) -> bytes:
        """Return exactly ``n`` random bytes (n ≥ 1) or raise EntropyError."""

    def get_random_bytes_batch(self, counts: Sequence[int]) -> EntropyBatch:
        """Fetch bytes for several rows in one call; ``counts[i]`` bytes belong to row i.

        The default draws ``sum(counts)`` bytes with one :meth:`get_random_bytes` call. Sources
        that know more (device id, server timestamp) override this.
        """
        counts = tuple(counts)
        start = time.perf_counter_ns()
        data = self.get_random_bytes(sum(counts))
        return EntropyBatch(
            data=data, counts=counts, source=self.name, latency_ns=time.perf_counter_ns() - start
        )

    def fetch_batch(self, counts: Sequence[int], nonce: bytes = b"") -> EntropyBatch:
        """The sampler's one call per step: bytes for every row, and the ``nonce`` of this step.

        The default cannot send the nonce anywhere: it fetches with
        :meth:`get_random_bytes_batch` and records the nonce with ``echo_verified=None``.
        """
        batch = self.get_random_bytes_batch(counts)
        return replace(batch, nonce=nonce, echo_verified=None)

    def close(self) -> None:  # noqa: B027 - optional hook, most sources hold nothing
        """Release channels, files or threads. Safe to call more than once."""

    def health(self) -> dict[str, Any]:
        """A small JSON-able status dict (never secrets). Override to add details."""
        return {"source": self.name, "healthy": True, "experimental": self.experimental}

    def __enter__(self) -> EntropySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
