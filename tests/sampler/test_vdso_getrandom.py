"""The system source's vDSO getrandom: real kernel bytes, per-thread states, fork safety.

These run against this machine's kernel. Where the vDSO has no getrandom (Linux < 6.11, other
OSes) the tests that need it skip and the fallback test still runs.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
import pytest

from qr_sampler.engine.runtime import log_startup
from qr_sampler.entropy import vdso
from qr_sampler.entropy.registry import create_source
from qr_sampler.entropy.system import SystemEntropySource, system_backend
from qr_sampler.settings import settings_from_mapping
from qr_sampler.types import UNIFORM_BYTE_STD

FAST = vdso.load()
needs_vdso = pytest.mark.skipif(FAST is None, reason="this kernel's vDSO has no getrandom")


@needs_vdso
@pytest.mark.parametrize("n", [1, 15, 4095, 4096, 4097, 1_000_003])
def test_returns_exactly_the_bytes_asked_for(n: int) -> None:
    assert FAST is not None
    assert len(FAST.read(n)) == n


@needs_vdso
def test_bytes_are_fair_and_every_draw_is_new() -> None:
    """4 MiB: the byte mean within 5 standard errors of 127.5 (p ≈ 6e-7 of a false alarm) and
    every byte value within 6 sigma of its expected count; no two 64-byte draws repeat."""
    assert FAST is not None
    data = np.frombuffer(FAST.read(4 << 20), dtype=np.uint8)
    z = (data.mean() - 127.5) / (UNIFORM_BYTE_STD / np.sqrt(data.size))
    assert abs(z) < 5
    counts = np.bincount(data, minlength=256)
    expected = data.size / 256
    assert np.all(np.abs(counts - expected) < 6 * np.sqrt(expected))
    draws = {FAST.read(64) for _ in range(1000)}
    assert len(draws) == 1000


@needs_vdso
def test_each_thread_draws_its_own_stream() -> None:
    """Threads have their own state: eight threads drawing at once get eight different streams
    (a shared state used concurrently could hand two threads the same keystream)."""
    assert FAST is not None
    results: list[bytes] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def draw() -> None:
        start.wait()
        chunk = b"".join(FAST.read(4096) for _ in range(16))
        with lock:
            results.append(chunk)

    threads = [threading.Thread(target=draw) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    blocks = {r[i : i + 4096] for r in results for i in range(0, len(r), 4096)}
    assert len(results) == 8 and len(blocks) == 8 * 16


@needs_vdso
def test_a_forked_child_never_replays_the_parents_stream() -> None:
    """The state pages are wiped on fork: a child and its parent draw different bytes after
    the fork (with a copied state both would continue the same keystream)."""
    assert FAST is not None
    FAST.read(32)  # this thread's state exists before the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: draw, report, leave without running the parent's cleanup
        try:
            os.write(write_end, FAST.read(64))
        finally:
            os._exit(0)
    os.close(write_end)
    parent = FAST.read(64)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    assert len(child) == 64 and child != parent


@needs_vdso
def test_system_source_uses_the_vdso_unless_told_to_make_syscalls() -> None:
    fast = create_source("system", settings_from_mapping({}))
    slow = create_source("system", settings_from_mapping({"QR_SYSTEM_GETRANDOM": "syscall"}))
    assert isinstance(fast, SystemEntropySource) and isinstance(slow, SystemEntropySource)
    assert (fast.backend, slow.backend) == ("vDSO getrandom", "os.urandom")
    big = fast.get_random_bytes(600_000)  # parallel slices, each thread with its own state
    assert len(big) == 600_000 and len({big[i : i + 64] for i in range(0, 600_000, 200_000)}) == 3
    assert len(slow.get_random_bytes(100)) == 100
    fast.close()


def test_without_a_vdso_getrandom_the_source_keeps_os_urandom(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vdso, "load", lambda: None)  # an older kernel, or another OS
    source = SystemEntropySource()
    assert source.backend == "os.urandom" and system_backend("auto") == "os.urandom"
    assert len(source.get_random_bytes(20480)) == 20480


def test_symbol_lookup_refuses_an_image_that_is_not_elf64() -> None:
    """Reads are bounded by the mapping and the header is checked before anything is trusted."""
    import ctypes

    fake = ctypes.create_string_buffer(b"\x7fELF\x01\x01" + bytes(58))  # 32-bit ELF header
    assert vdso._find_symbol(ctypes.addressof(fake), 64) is None
    with pytest.raises(ValueError, match="outside the vDSO"):
        vdso._find_symbol(ctypes.addressof(fake), 16)  # the header alone is larger


def test_startup_line_names_how_the_system_source_draws(caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_from_mapping({"QR_SYSTEM_GETRANDOM": "syscall"})
    with caplog.at_level(logging.INFO, logger="qr_sampler"):
        log_startup("V1 model runner", settings)
    assert "entropy system (os.urandom)" in caplog.text
