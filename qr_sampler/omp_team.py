"""Compiled work run on torch's own OpenMP threads, the ones a CPU host's engine step owns.

On a CPU host torch's intra-op threads are an OpenMP team, and after every parallel operation
its workers spin for milliseconds, waiting for the next one (measured here: 11.6 ms of CPU
after one ``copy_`` of a batch's logits). The engine's step starts right after the model's
forward pass, so a thread of ours on those cores only takes turns with spinning workers: a
batch's 655 KB of system bytes drawn with a helper thread took 1.63 ms, alone 1.38 ms. Handed
to the team itself — through ``GOMP_parallel``, the entry point torch's own parallel loops
compile to — the work runs on those very workers: the same bytes in 0.76–0.81 ms.

A task is a C function ``void task(void *params)`` (a numba ``cfunc``). Every thread of the
team, the calling one included, calls it once with the same pointer: an int64 array of
addresses, sizes and counters. The threads take work items in turn through an atomic counter
in it (:func:`qr_sampler.numba_ext.take_next`), so a thread that starts late takes fewer.
:meth:`OmpTeam.run` returns when every thread is done (the region ends with the team's barrier).

Available where torch's parallel backend is OpenMP with ``GOMP_parallel`` among the process's
global symbols (GNU libgomp, which torch's Linux wheels ship, or Intel's libiomp5, which
provides it), torch runs more than one thread, and numba can compile the tasks. Elsewhere
:func:`team` is None and callers keep their own paths.

Call it only from the thread that runs the engine's torch operations: libgomp keeps one pool
of workers per thread that starts parallel regions, so another thread would start (and leave
spinning) a pool of its own.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

import numpy as np

_PARALLEL = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint)

#: False turns the team off (``QR_HOST_KERNELS=false`` does, with the other host kernels).
ENABLED = True

_engine_thread = threading.local()


class OmpTeam:
    """torch's OpenMP team, as the calling thread sees it."""

    def __init__(self, parallel: Callable[[int, int, int, int], None]) -> None:
        self._parallel = parallel

    @property
    def threads(self) -> int:
        """The threads a region gets: torch's intra-op thread count."""
        import torch

        return int(torch.get_num_threads())

    def run(self, task: int, params: np.ndarray) -> None:
        """Call ``task`` (a C function's address) on every thread of the team with the address
        of ``params`` (int64, contiguous; it must stay alive until this returns)."""
        if params.dtype != np.int64 or not params.flags.c_contiguous:
            raise ValueError("team task parameters must be a contiguous int64 array")
        # ctypes releases the GIL for the call: the team's threads never touch Python.
        self._parallel(task, params.ctypes.data, self.threads, 0)


def team() -> OmpTeam | None:
    """torch's team where work can go to it (see the module docstring), else None."""
    if not ENABLED:
        return None
    found = _find()
    if found is None or found.threads < 2:
        return None
    return found


def describe() -> str:
    """For the start-up line: where a CPU step's parallel work goes ("" without a team)."""
    found = team()
    return f"CPU work on torch's OpenMP team ({found.threads} threads)" if found else ""


@cache
def _find() -> OmpTeam | None:
    if sys.platform != "linux" or sys.implementation.name != "cpython":
        return None
    try:
        import numba  # noqa: F401 - the tasks are numba cfuncs
        import torch
    except ImportError:
        return None
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        address = ctypes.cast(ctypes.CDLL(None).GOMP_parallel, ctypes.c_void_p).value
    except AttributeError:
        return None
    return OmpTeam(_PARALLEL(address)) if address else None


@contextmanager
def engine_thread() -> Iterator[None]:
    """Within: the calling thread is the one that runs the engine's torch operations on a CPU
    host, so parallel work goes to torch's team (:func:`team`), or stays on this thread where
    there is none: the other cores are the team's, and a helper thread there only takes turns
    with its spinning workers."""
    previous = getattr(_engine_thread, "on", False)
    _engine_thread.on = True
    try:
        yield
    finally:
        _engine_thread.on = previous


def on_engine_thread() -> bool:
    """True inside :func:`engine_thread` (on this thread)."""
    return bool(getattr(_engine_thread, "on", False))
