"""The operating system's CSPRNG: the default source and the usual fallback."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from qr_sampler.entropy import vdso
from qr_sampler.entropy.base import EntropySource
from qr_sampler.errors import EntropyUnavailableError
from qr_sampler.helper_threads import HelperPool, usable_cores

if TYPE_CHECKING:
    from qr_sampler.settings import Settings

#: From this size a request is split across the cores: the kernel's generator is CPU work
#: (ChaCha20, about 40–90 µs per 20 KB here) and scales with the threads that call it.
PARALLEL_FROM_BYTES = 256 * 1024

GetrandomMode = Literal["auto", "syscall"]


class SystemEntropySource(EntropySource):
    """Bytes from the kernel's CSPRNG. Thread-safe.

    ``getrandom="auto"`` draws through the vDSO where the kernel offers it (Linux ≥ 6.11: the
    same generator, about twice as fast per byte; see :mod:`qr_sampler.entropy.vdso`), else
    through ``os.urandom``; ``"syscall"`` always uses ``os.urandom``. :attr:`backend` says which.

    A large request (a whole batch's bytes) is drawn in parallel slices, one per core (at most
    four), by a small pool of helper threads started on first use; the calling thread draws the
    first slice itself.
    """

    name = "system"
    health_tested = False  # generator output: the tests cannot fail it

    fetch_uses_cpu = True  # a cipher in the calling thread

    def __init__(self, threads: int | None = None, getrandom: GetrandomMode = "auto") -> None:
        self._threads = max(1, min(threads or usable_cores(), 4))
        self._vdso = vdso.load() if getrandom == "auto" else None
        self._draw, self.backend = _backend(getrandom)
        self._helpers = HelperPool(self._threads - 1, "qr-sampler-urandom")

    @classmethod
    def from_settings(cls, settings: Settings) -> SystemEntropySource:
        return cls(getrandom=settings.system_getrandom)

    def get_random_bytes(self, n: int) -> bytes:
        try:
            if n < PARALLEL_FROM_BYTES or self._threads == 1:
                return self._draw(n)
            return self._parallel(n)
        except (OSError, ValueError, OverflowError) as exc:
            raise EntropyUnavailableError(f"{self.backend}({n}) failed: {exc}") from exc

    def _parallel(self, n: int) -> bytes:
        size = -(-n // self._threads)
        starts = range(0, n, size)
        pool = self._helpers.get()
        fast = self._vdso
        if fast is None:
            futures = [pool.submit(os.urandom, min(size, n - start)) for start in starts[1:]]
            first = os.urandom(size)
            return b"".join([first, *(f.result() for f in futures)])
        # Every slice straight into its place in the one result: no slices, no join.
        out, address = vdso.writable_bytes(n)
        fills = [pool.submit(fast.fill, address + start, min(size, n - start))
                 for start in starts[1:]]  # fmt: skip
        try:
            fast.fill(address, size)
        finally:
            # Even when this slice failed: no helper may still be writing into ``out`` once
            # it can be freed.
            failures = [f.exception() for f in fills]
        for failure in failures:
            if failure is not None:
                raise failure
        return out

    def close(self) -> None:
        self._helpers.close()


def _backend(getrandom: GetrandomMode) -> tuple[Callable[[int], bytes], str]:
    """The draw function under this setting, and its name."""
    fast = vdso.load() if getrandom == "auto" else None
    return (fast.read, "vDSO getrandom") if fast is not None else (os.urandom, "os.urandom")


def system_backend(getrandom: GetrandomMode) -> str:
    """What the system source draws with under this setting (for the start-up line)."""
    return _backend(getrandom)[1]
