"""The operating system's CSPRNG (``os.urandom``): the default source and the usual fallback."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from qr_sampler.entropy.base import EntropySource
from qr_sampler.errors import EntropyUnavailableError

#: From this size a request is split across the cores: getrandom(2) is CPU work (ChaCha20 in
#: the kernel, about 40–90 µs per 20 KB here) and scales with the threads that call it.
PARALLEL_FROM_BYTES = 256 * 1024


class SystemEntropySource(EntropySource):
    """Bytes from ``os.urandom`` (getrandom(2) on Linux). Thread-safe.

    A large request (a whole batch's bytes) is drawn in parallel slices, one per core (at most
    four), by a small pool of helper threads started on first use; the calling thread draws the
    first slice itself.
    """

    name = "system"
    health_tested = False  # generator output: the tests cannot fail it

    def __init__(self, threads: int | None = None) -> None:
        self._threads = max(1, min(threads or len(os.sched_getaffinity(0)), 4))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0  # a pool made before a fork has no threads in the child
        self._pool_lock = threading.Lock()

    def get_random_bytes(self, n: int) -> bytes:
        try:
            if n < PARALLEL_FROM_BYTES or self._threads == 1:
                return os.urandom(n)
            return self._parallel(n)
        except (OSError, ValueError, OverflowError) as exc:
            raise EntropyUnavailableError(f"os.urandom({n}) failed: {exc}") from exc

    def _parallel(self, n: int) -> bytes:
        size = -(-n // self._threads)
        slices = [min(size, n - start) for start in range(0, n, size)]
        pool = self._helpers()
        futures = [pool.submit(os.urandom, k) for k in slices[1:]]
        first = os.urandom(slices[0])
        return b"".join([first, *(f.result() for f in futures)])

    def _helpers(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None or self._pool_pid != os.getpid():
            with self._pool_lock:
                if self._pool is None or self._pool_pid != os.getpid():
                    self._pool = ThreadPoolExecutor(
                        self._threads - 1, thread_name_prefix="qr-sampler-urandom"
                    )
                    self._pool_pid = os.getpid()
                pool = self._pool
        assert pool is not None
        return pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
