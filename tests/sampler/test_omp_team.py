"""Work handed to torch's OpenMP team: it runs on torch's own threads, every thread enters the
task once, chunks tile the request exactly, and a failing generator fails the whole request.

The generator is replaced by a stand-in with getrandom's C signature (a ctypes callback), so a
test sees which chunk went where: random bytes could not show a chunk left unwritten.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading

import numpy as np
import pytest
import torch

from qr_sampler import omp_team
from qr_sampler.entropy import vdso
from qr_sampler.entropy.system import CHUNK_BYTES, PARALLEL_FROM_BYTES, SystemEntropySource
from qr_sampler.errors import EntropyUnavailableError

pytest.importorskip("numba")
team = omp_team.team()
getrandom = vdso.load()
pytestmark = pytest.mark.skipif(
    team is None or getrandom is None,
    reason="needs torch's OpenMP team (Linux, 2+ threads) and the vDSO's getrandom",
)
if team is not None and getrandom is not None:
    from qr_sampler.entropy import vdso_team

_GETRANDOM = ctypes.CFUNCTYPE(
    ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_void_p,
    ctypes.c_size_t,
)  # fmt: skip


class _StandIn:
    """getrandom's signature; writes one byte value per call and returns at most ``most``
    bytes per call (so the task's retry loop runs); fails at call ``fail_at``."""

    def __init__(self, most: int = 1 << 30, fail_at: int = -1, failure: int = -errno.EIO) -> None:
        self.most, self.fail_at, self.failure = most, fail_at, failure
        self.calls: list[tuple[int, int, int]] = []  # address, length, state
        self.threads: set[int] = set()
        self.state_of: dict[int, set[int]] = {}  # thread → the states it drew with
        self._lock = threading.Lock()
        self.function = _GETRANDOM(self._call)  # kept alive with the stand-in

    def _call(self, buffer: int, length: int, flags: int, state: int, size: int) -> int:
        with self._lock:
            index = len(self.calls)
            got = min(length, self.most)
            self.calls.append((buffer, got, state))
            self.threads.add(threading.get_native_id())
            self.state_of.setdefault(threading.get_native_id(), set()).add(state)
        if index == self.fail_at:
            return self.failure
        ctypes.memset(buffer, 1 + index % 255, got)
        return got

    @property
    def address(self) -> int:
        return int(ctypes.cast(self.function, ctypes.c_void_p).value or 0)


def _fill_with(stand_in: _StandIn, n: int, chunk: int) -> bytes:
    assert team is not None and getrandom is not None
    out, address = vdso.writable_bytes(n)
    vdso_team.fill(team, getrandom, address, n, chunk, function=stand_in.address)
    return out


def test_torchs_team_is_found_where_torch_runs_openmp() -> None:
    """This machine's torch runs GNU OpenMP with two or more threads: the team must be found
    (a silent None would send every step back to one thread)."""
    assert "parallel backend: OpenMP" in torch.__config__.parallel_info()
    assert torch.get_num_threads() >= 2 and team is not None and team.threads >= 2


def test_the_task_runs_on_torchs_own_threads_and_every_one_enters_once() -> None:
    assert team is not None and getrandom is not None
    torch.ones(4_000_000).add_(1)  # torch's workers exist now
    before = set(os.listdir("/proc/self/task"))
    stand_in = _StandIn(most=4096)
    n = 64 * CHUNK_BYTES
    _fill_with(stand_in, n, CHUNK_BYTES)
    assert set(os.listdir("/proc/self/task")) == before  # no pool of our own was started
    assert {str(t) for t in stand_in.threads} <= before
    # Every thread drew with one state of its own, from the team's states (a page apart).
    base = getrandom.team_states(team.threads)
    team_states = {base + i * getrandom.page for i in range(team.threads)}
    assert all(len(states) == 1 for states in stand_in.state_of.values())
    used = [next(iter(states)) for states in stand_in.state_of.values()]
    assert len(set(used)) == len(used) and set(used) <= team_states


@pytest.mark.parametrize(("n", "chunk", "most"), [
    (2 * PARALLEL_FROM_BYTES + 1, CHUNK_BYTES, 1 << 30),  # a short last chunk
    (100_003, 4096, 1000),  # the generator returns less than asked: the task asks again
    (100, CHUNK_BYTES, 1 << 30),  # one chunk: one thread takes it, the others none
])  # fmt: skip
def test_chunks_tile_the_request_exactly(n: int, chunk: int, most: int) -> None:
    stand_in = _StandIn(most=most)
    data = _fill_with(stand_in, n, chunk)
    assert isinstance(data, bytes) and len(data) == n
    start = min(address for address, _, _ in stand_in.calls)
    spans = sorted((address - start, length) for address, length, _ in stand_in.calls)
    position = 0
    for offset, length in spans:  # contiguous, no overlap, no gap
        assert offset == position
        position += length
    assert position == n
    # No call crossed a chunk's end (a chunk is one thread's until it is done).
    assert all(offset // chunk == (offset + length - 1) // chunk for offset, length in spans)
    assert 0 not in data  # every byte was written (the stand-in never writes 0)


@pytest.mark.parametrize("failure", [-errno.EIO, 0])
def test_a_failing_generator_fails_the_whole_request(failure: int) -> None:
    stand_in = _StandIn(fail_at=3, failure=failure)
    with pytest.raises(OSError) as raised:
        _fill_with(stand_in, 40 * 4096, 4096)
    if failure:
        assert raised.value.errno == errno.EIO
    else:
        assert "no bytes" in str(raised.value)


def test_the_engine_thread_draws_a_large_request_on_the_team(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inside ``engine_thread`` (a CPU host's step) the source hands a large draw to the team;
    with the team off it draws alone; outside it uses its helper threads. Real bytes, so the
    draw is checked for what a generator's output can be checked for: every chunk written."""
    source = SystemEntropySource(threads=2)
    if source._vdso is None:
        pytest.skip("this kernel's vDSO has no getrandom")
    used: list[int] = []
    real_fill = vdso_team.fill

    def recording_fill(*args: object, **kwargs: object) -> None:
        used.append(1)
        real_fill(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(vdso_team, "fill", recording_fill)
    n = 4 * PARALLEL_FROM_BYTES
    with omp_team.engine_thread():
        data = source.get_random_bytes(n)
    assert used == [1] and len(data) == n
    chunks = np.frombuffer(data, np.uint8).reshape(-1, CHUNK_BYTES)
    assert (chunks.max(axis=1) > 0).all()  # P(a real 32 KiB chunk is all zero) = 2^-262144
    assert 126 < chunks.mean() < 129  # ± 5 standard errors of the mean of 1 MiB
    with monkeypatch.context() as off:
        off.setattr(omp_team, "ENABLED", False)
        with omp_team.engine_thread():
            assert len(source.get_random_bytes(n)) == n
    assert used == [1]
    assert len(source.get_random_bytes(n)) == n  # not the engine thread: helpers
    assert used == [1]
    source.close()


def test_the_team_fill_is_refused_as_an_entropy_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A generator failure on the team reaches the sampler as the source's EntropyError, never
    as a raw OSError (the step turns that into a fallback or a forced stop)."""
    source = SystemEntropySource(threads=2)
    if source._vdso is None:
        pytest.skip("this kernel's vDSO has no getrandom")
    stand_in = _StandIn(fail_at=0)
    real_fill = vdso_team.fill
    monkeypatch.setattr(vdso_team, "fill", lambda *args: real_fill(*args,
                                                                   function=stand_in.address))
    with omp_team.engine_thread(), pytest.raises(EntropyUnavailableError, match="failed"):
        source.get_random_bytes(2 * PARALLEL_FROM_BYTES)
    source.close()


def test_the_host_top_k_hands_its_rows_to_the_team(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's top-k runs on the team (one region) and gives what one thread gives."""
    from qr_sampler import host_kernels

    if not host_kernels.ready():
        pytest.skip("the host kernels are off")
    logits = np.random.default_rng(5).normal(0, 3, size=(32, 20_000)).astype(np.float32)
    maxima = np.pad(logits, ((0, 0), (0, -20_000 % 64)), constant_values=-np.inf)
    maxima = maxima.reshape(32, -1, 64).max(axis=2)
    regions: list[int] = []
    real_run = omp_team.OmpTeam.run

    def counting_run(self: omp_team.OmpTeam, task: int, params: np.ndarray) -> None:
        regions.append(task)
        real_run(self, task, params)

    monkeypatch.setattr(omp_team.OmpTeam, "run", counting_run)
    on_team = host_kernels.top_k(logits, maxima, 64, 50)
    assert len(regions) == 1
    monkeypatch.setattr(omp_team, "ENABLED", False)
    alone = host_kernels.top_k(logits, maxima, 64, 50)
    assert len(regions) == 1
    assert np.array_equal(on_team[1], alone[1]) and np.array_equal(on_team[0], alone[0])
    assert np.array_equal(on_team[1], np.argsort(-logits, axis=1, kind="stable")[:, :50])


def test_a_task_numba_cannot_compile_leaves_the_work_on_the_engine_thread(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another numba that cannot compile a team task must not stop the engine: a warning, and
    the work stays where it was before the team (same results)."""
    import numba

    from qr_sampler import host_kernels
    from qr_sampler.entropy import system

    if not host_kernels.ready():
        pytest.skip("the host kernels are off")

    def refuse(*args: object, **kwargs: object) -> None:
        raise numba.core.errors.TypingError("no such intrinsic here")

    monkeypatch.setattr(numba, "cfunc", refuse)
    monkeypatch.setattr(host_kernels, "_team_task", host_kernels._team_task.__wrapped__)
    logits = np.random.default_rng(8).normal(size=(4, 6400)).astype(np.float32)
    maxima = logits.reshape(4, -1, 64).max(axis=2)
    with caplog.at_level("WARNING", logger="qr_sampler"):
        _, ids = host_kernels.top_k(logits, maxima, 64, 20)
    assert np.array_equal(ids, np.argsort(-logits, axis=1, kind="stable")[:, :20])
    assert "top-k stays off torch's threads" in caplog.text

    import sys

    caplog.clear()
    monkeypatch.setitem(sys.modules, "qr_sampler.entropy.vdso_team", None)  # import fails
    monkeypatch.delattr(sys.modules["qr_sampler.entropy"], "vdso_team", raising=False)
    with caplog.at_level("WARNING", logger="qr_sampler"):
        assert system._vdso_team.__wrapped__() is None
    assert "system bytes stay off torch's threads" in caplog.text
    monkeypatch.setattr(system, "_vdso_team", lambda: None)
    source = SystemEntropySource(threads=2)
    with omp_team.engine_thread():
        assert len(source.get_random_bytes(2 * PARALLEL_FROM_BYTES)) == 2 * PARALLEL_FROM_BYTES
    source.close()
