"""The operating system's CSPRNG: the default source and the usual fallback."""

from __future__ import annotations

import logging
import os
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from qr_sampler import omp_team
from qr_sampler.entropy import vdso
from qr_sampler.entropy.base import EntropySource
from qr_sampler.errors import EntropyUnavailableError
from qr_sampler.helper_threads import HelperPool, usable_cores

if TYPE_CHECKING:
    from qr_sampler.settings import Settings

#: From this size a request is split across the cores: the kernel's generator is CPU work
#: (ChaCha20, about 40–90 µs per 20 KB here) and scales with the threads that call it.
PARALLEL_FROM_BYTES = 256 * 1024
#: Through the vDSO, a large request is cut into chunks of this size that the threads take in
#: turn: a thread that gets little of its core takes fewer, and no thread waits on more than
#: one chunk of another.
CHUNK_BYTES = 32 * 1024

GetrandomMode = Literal["auto", "syscall"]
logger = logging.getLogger("qr_sampler")


class SystemEntropySource(EntropySource):
    """Bytes from the kernel's CSPRNG. Thread-safe.

    ``getrandom="auto"`` draws through the vDSO where the kernel offers it (Linux ≥ 6.11: the
    same generator, about twice as fast per byte; see :mod:`qr_sampler.entropy.vdso`), else
    through ``os.urandom``; ``"syscall"`` always uses ``os.urandom``. :attr:`backend` says which.

    A large request (a whole batch's bytes) is drawn in parallel:

    - on a CPU host's engine thread (:func:`qr_sampler.omp_team.engine_thread`), by torch's
      OpenMP team through the vDSO (:mod:`qr_sampler.entropy.vdso_team`), else by that thread
      alone: the other cores are the team's;
    - elsewhere, by the calling thread and a small pool of helper threads (one per further
      core, at most three) started on first use: through the vDSO in chunks they take in turn
      (:data:`CHUNK_BYTES`), through ``os.urandom`` in one slice each.
    """

    name = "system"
    health_tested = False  # generator output: the tests cannot fail it
    fetch_uses_cpu = True  # a cipher in the calling thread

    def __init__(self, threads: int | None = None, getrandom: GetrandomMode = "auto") -> None:
        self._threads = max(1, min(threads or usable_cores(), 4))
        self._vdso = _fast(getrandom)
        self.backend = _backend_name(self._vdso)
        self._helpers = HelperPool(self._threads - 1, "qr-sampler-urandom")

    @classmethod
    def from_settings(cls, settings: Settings) -> SystemEntropySource:
        return cls(getrandom=settings.system_getrandom)

    def get_random_bytes(self, n: int) -> bytes:
        try:
            if n >= PARALLEL_FROM_BYTES:
                if omp_team.on_engine_thread():
                    team = omp_team.team() if self._vdso is not None else None
                    if team is not None:
                        return self._on_team(team, n)
                elif self._threads > 1:
                    return self._parallel(n)
            return self._alone(n)
        except (OSError, ValueError, OverflowError) as exc:
            raise EntropyUnavailableError(f"{self.backend}({n}) failed: {exc}") from exc

    def _alone(self, n: int) -> bytes:
        """``n`` bytes drawn by the calling thread."""
        return os.urandom(n) if self._vdso is None else self._vdso.read(n)

    def _on_team(self, team: omp_team.OmpTeam, n: int) -> bytes:
        """``n`` bytes drawn by torch's OpenMP team, straight into the result; by this thread
        alone where the team's task cannot be compiled."""
        vdso_team = _vdso_team()
        if vdso_team is None or self._vdso is None:
            return self._alone(n)
        out, address = vdso.writable_bytes(n)
        vdso_team.fill(team, self._vdso, address, n, CHUNK_BYTES)
        return out

    def _parallel(self, n: int) -> bytes:
        fast = self._vdso
        if fast is None:  # os.urandom: one slice per thread, joined
            size = -(-n // self._threads)
            parts = [b""] * -(-n // size)

            def draw(i: int) -> None:
                parts[i] = os.urandom(min(size, n - i * size))

            self._helpers.share(len(parts), draw)
            return b"".join(parts)
        # Every chunk straight into its place in the one result: no slices, no join.
        out, address = vdso.writable_bytes(n)

        def fill(i: int) -> None:
            start = i * CHUNK_BYTES
            fast.fill(address + start, min(CHUNK_BYTES, n - start))

        self._helpers.share(-(-n // CHUNK_BYTES), fill)
        return out

    def close(self) -> None:
        self._helpers.close()


def warm_up_team() -> None:
    """Compile (or load from numba's cache) the team's fill before the first step needs it."""
    if omp_team.team() is not None and vdso.load() is not None:
        _vdso_team()


@cache
def _vdso_team() -> ModuleType | None:
    """:mod:`qr_sampler.entropy.vdso_team` (importing it compiles its task), or None where
    numba cannot compile it: then the engine's thread draws alone."""
    try:
        from qr_sampler.entropy import vdso_team
    except Exception as exc:  # an unexpected numba: keep serving without the team
        logger.warning("qr_sampler: system bytes stay off torch's threads (%s: %s)",
                       type(exc).__name__, exc)  # fmt: skip
        return None
    return vdso_team


def system_backend(getrandom: GetrandomMode) -> str:
    """What the system source draws with under this setting (for the start-up line)."""
    return _backend_name(_fast(getrandom))


def _fast(getrandom: GetrandomMode) -> vdso.VdsoGetrandom | None:
    return vdso.load() if getrandom == "auto" else None


def _backend_name(fast: vdso.VdsoGetrandom | None) -> str:
    return "vDSO getrandom" if fast is not None else "os.urandom"
