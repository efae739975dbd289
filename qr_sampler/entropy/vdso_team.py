"""The vDSO's getrandom run by torch's OpenMP team: a CPU host's batch of bytes drawn on every
core the engine's step owns (why: :mod:`qr_sampler.omp_team`).

The team's threads take chunks of the request in turn and write them straight into the result.
Each thread draws with a state of its own (the kernel's rule: a state serves one thread at a
time). A failure of the generator in any thread fails the whole request once the region is
over: no caller ever gets a buffer with a chunk left unwritten.

Imports numba: imported on first use, where :func:`qr_sampler.omp_team.team` found a team.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numba import carray, cfunc, types

from qr_sampler.entropy.vdso import VdsoGetrandom
from qr_sampler.numba_ext import call_getrandom, take_next
from qr_sampler.omp_team import OmpTeam

# Slots of the task's int64 parameters.
_FUNCTION, _BUFFER, _LENGTH, _CHUNK, _STATES, _STATE_STRIDE, _STATE_SIZE = range(7)
_STATE_COUNT, _NEXT_CHUNK, _NEXT_STATE, _ERROR = range(7, 11)
_SLOTS = 11
#: _ERROR when getrandom returned no bytes (it never should): no errno to report.
_NO_BYTES = -1


@cfunc(types.void(types.voidptr), cache=True, error_model="numpy")
def _fill_task(data: Any) -> None:
    p = carray(data, _SLOTS, np.int64)
    state_index = take_next(data, _NEXT_STATE)
    if state_index >= p[_STATE_COUNT]:  # more threads than states: the others fill
        return
    state = p[_STATES] + state_index * p[_STATE_STRIDE]
    length = p[_LENGTH]
    while True:
        start = take_next(data, _NEXT_CHUNK) * p[_CHUNK]
        if start >= length:
            return
        stop = min(start + p[_CHUNK], length)
        while start < stop:  # the kernel may return less than asked
            got = call_getrandom(p[_FUNCTION], p[_BUFFER] + start, stop - start, state,
                                 p[_STATE_SIZE])  # fmt: skip
            if got <= 0:
                p[_ERROR] = -got if got < 0 else _NO_BYTES
                return
            start += got


def fill(team: OmpTeam, getrandom: VdsoGetrandom, address: int, n: int, chunk: int,
         function: int | None = None) -> None:  # fmt: skip
    """Write ``n`` random bytes at ``address`` (memory the caller owns) with the team's
    threads, in chunks of ``chunk`` bytes; raises OSError when the kernel refuses.

    ``function``: the address of a stand-in with getrandom's signature (tests only)."""
    threads = team.threads
    params = np.zeros(_SLOTS, dtype=np.int64)
    params[_FUNCTION] = getrandom.address if function is None else function
    params[_BUFFER] = address
    params[_LENGTH] = n
    params[_CHUNK] = chunk
    params[_STATES] = getrandom.team_states(threads)
    params[_STATE_STRIDE] = getrandom.page
    params[_STATE_SIZE] = getrandom.state_size
    params[_STATE_COUNT] = threads
    team.run(_fill_task.address, params)
    error = int(params[_ERROR])
    if error == _NO_BYTES:
        raise OSError("vDSO getrandom returned no bytes")
    if error:
        raise OSError(error, os.strerror(error))
