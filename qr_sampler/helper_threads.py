"""Small per-process pools of helper threads for work that releases the GIL.

The system source draws large requests in slices, and the host top-k scans rows, on a few
helper threads next to the calling thread. A pool made before a ``fork`` has no threads in the
child, so each pool is made lazily, once per process.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
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

    def share(self, tasks: int, run: Callable[[int], None]) -> None:
        """``run(i)`` for every i in range(tasks), taken in turn by the calling thread and the
        helpers: a helper that gets little of its core takes few and holds nothing up. Returns
        once every helper is done, even when a task failed (callers write into memory that
        must not be freed under a helper); then raises the first failure."""
        taken = itertools.count()  # next() on it is atomic: each task is taken once

        def take() -> None:
            while (i := next(taken)) < tasks:
                run(i)

        pool = self.get()
        helpers = [pool.submit(take) for _ in range(self.workers)]
        try:
            take()
        finally:
            failures = [f.exception() for f in helpers]
        for failure in failures:
            if failure is not None:
                raise failure

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
