"""Small per-process pools of helper threads for work that releases the GIL.

The system source draws large requests in slices, and the host top-k scans rows, on a few
helper threads next to the calling thread. A pool made before a ``fork`` has no threads in the
child, so each pool is made lazily, once per process.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

#: Never more helpers than this per pool: the work is memory- or cipher-bound, and a host
#: serving a model has its cores busy with the model's own threads between steps.
MAX_HELPERS = 3


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


class HelperPool:
    """A lazily started, fork-aware :class:`ThreadPoolExecutor` of ``workers`` threads."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers = max(1, min(workers, MAX_HELPERS))
        self._name = name
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None or self._pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pid != os.getpid():
                    self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self._name)
                    self._pid = os.getpid()
                pool = self._pool
        assert pool is not None
        return pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
