"""EXPERIMENTAL: bytes from CPU timing jitter, whitened with SHA-256.

Each output block of 32 bytes hashes 64 measurements of ``perf_counter_ns`` deltas around a
small busy loop. The raw jitter's min-entropy on a given machine is unknown and can be low on
idle or virtualized CPUs; SHA-256 makes the output look uniform but cannot add entropy that was
not there. Use it to compare against other sources, not as a trusted physical source.
"""

from __future__ import annotations

import hashlib
import time

from qr_sampler.entropy.base import EntropySource
from qr_sampler.errors import EntropyUnavailableError

_SAMPLES_PER_BLOCK = 64


class TimingNoiseEntropySource(EntropySource):
    """Timing-jitter bytes (slow: roughly 2 µs per byte)."""

    name = "timing_noise"
    health_tested = False  # generator output: the tests cannot fail it
    experimental = True

    def get_random_bytes(self, n: int) -> bytes:
        if n < 1:
            raise EntropyUnavailableError(f"asked for {n} bytes; need at least 1")
        out = bytearray()
        counter = 0
        while len(out) < n:
            h = hashlib.sha256(counter.to_bytes(8, "little"))
            for _ in range(_SAMPLES_PER_BLOCK):
                t0 = time.perf_counter_ns()
                acc = t0
                for i in range(8):  # a little work whose duration jitters
                    acc = (acc * 31 + i) & 0xFFFFFFFF
                delta = time.perf_counter_ns() - t0
                h.update(delta.to_bytes(8, "little") + acc.to_bytes(4, "little"))
            out += h.digest()
            counter += 1
        return bytes(out[:n])
