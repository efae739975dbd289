"""Quotas shared by the processes of a host and kept across restarts (the state file).

Real processes (``sys.executable`` running a small client script) against a real reference
server that enforces the same limit: the server must never have to reject a call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from qr_sampler.entropy._quota import (
    WINDOW_S,
    QuotaLedger,
    QuotaRefused,
    default_state_dir,
    server_identity,
)
from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource
from qr_sampler.errors import EntropyBudgetExhaustedError
from qr_sampler.server import EntropyServer
from tests.conftest import REPO_ROOT
from tests.sampler.entropy.grpc_test_support import API_KEY, FakeClock

Start = Callable[..., EntropyServer]
Make = Callable[..., QuantumGrpcEntropySource]
DAY = 86_400.0

#: One client process: ``fetches`` fetches of ``nbytes`` as fast as it can, with the fallback;
#: prints what it got as JSON.
CLIENT = textwrap.dedent("""
    import collections, json, sys
    from qr_sampler.entropy._circuit_breaker import BreakerConfig
    from qr_sampler.entropy._grpc_config import GrpcClientConfig
    from qr_sampler.entropy.fallback import FallbackEntropySource
    from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource
    from qr_sampler.entropy.system import SystemEntropySource

    address, state_dir, rate, budget, fetches, nbytes = sys.argv[1:7]
    grpc_source = QuantumGrpcEntropySource(GrpcClientConfig(
        address=address, rate_limit_per_min=int(rate), daily_byte_budget=int(budget),
        quota_state_dir=state_dir, retry_count=0,
        breaker=BreakerConfig(min_timeout_s=2.0)))  # no timeouts on a busy test machine
    source = FallbackEntropySource(grpc_source, SystemEntropySource())
    kinds = collections.Counter()
    for _ in range(int(fetches)):
        batch = source.fetch_batch([int(nbytes)])
        kinds[batch.fallback_kind or "quantum"] += 1
    source.close()
    print(json.dumps(kinds))
""")


def _clients(address: str, state_dir: Path | list[Path], *, rate: int = 0, budget: int = 0,
             fetches: int, nbytes: int = 64, processes: int = 2,
             together: bool = True) -> list[dict[str, int]]:
    """Run client processes (together, or one after the other); return each one's counts."""
    dirs = state_dir if isinstance(state_dir, list) else [state_dir] * processes

    def start(folder: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", CLIENT, address, str(folder), str(rate), str(budget),
             str(fetches), str(nbytes)],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    results = []
    running = [start(folder) for folder in dirs] if together else []
    for i, folder in enumerate(dirs):
        proc = running[i] if together else start(folder)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


def test_two_processes_with_the_servers_limit_are_never_rejected(
        start_server: Start, tmp_path: Path) -> None:
    server = start_server(rate_limit_per_min=60)
    counts = _clients(server.address, tmp_path / "quota", rate=60, fetches=50)
    quantum = sum(c.get("quantum", 0) for c in counts)
    assert quantum == 60  # together exactly the limit: the rest waited for the fallback
    assert sum(c.get("rate_limit", 0) for c in counts) == 100 - 60
    assert server.stats.summary()["rejected"] == {}  # the server never had to say no
    assert server.requests_served == 60
    # Control: the same two processes, each with its own state, do make the server reject.
    other = start_server(rate_limit_per_min=60)
    _clients(other.address, [tmp_path / "a", tmp_path / "b"], rate=60, fetches=50)
    assert other.stats.summary()["rejected"].get("RESOURCE_EXHAUSTED", 0) > 0


def test_a_daily_budget_holds_across_processes_run_one_after_the_other(
        start_server: Start, tmp_path: Path) -> None:
    server = start_server()
    first, second = _clients(server.address, tmp_path / "quota", budget=4_000, fetches=3,
                             nbytes=1_000, together=False)
    assert first == {"quantum": 3}
    assert second == {"quantum": 1, "budget": 2}  # the restart did not renew the budget
    assert server.stats.summary()["bytes_served"] == 4_000


# --- the ledger on its own (injected wall clock) -------------------------------------------------


def _ledger(folder: Path | None, clock: FakeClock, *, limit: int = 0, budget: int = 0,
            identity: str = "a" * 64) -> QuotaLedger:
    return QuotaLedger(limit_per_min=limit, daily_bytes=budget, identity=identity,
                       server="127.0.0.1:1 /x.Y/Z", state_dir=folder, wall_clock=clock,
                       sleep=clock.sleep)


def test_no_60_s_window_ever_holds_more_than_the_limit_across_ledgers(
        tmp_path: Path, clock: FakeClock) -> None:
    ledgers = [_ledger(tmp_path, clock, limit=7) for _ in range(3)]  # three "processes"
    rng = random.Random(11)
    granted: list[float] = []
    for _ in range(2_000):
        clock.advance(rng.expovariate(1 / 2.0))  # ~30 attempts per minute against 7
        count = rng.choice([1, 1, 2, 3])
        try:
            rng.choice(ledgers).admit(count, 0)
        except QuotaRefused as refusal:
            assert refusal.kind == "rate_limit" and refusal.wait_s > 0
            continue
        granted += [clock.now] * count
    assert len(granted) > 400  # the limit was really used
    for i, start in enumerate(granted):
        assert sum(1 for t in granted[i:i + 30] if t - start < WINDOW_S) <= 7


def test_the_budget_is_shared_refunded_and_renewed_at_utc_midnight(
        tmp_path: Path, clock: FakeClock) -> None:
    clock.now = 20_000 * DAY + DAY - 10  # 23:59:50 UTC
    a, b = _ledger(tmp_path, clock, budget=100), _ledger(tmp_path, clock, budget=100)
    day = a.admit(0, 60)
    with pytest.raises(QuotaRefused) as info:
        b.admit(0, 41)
    assert info.value.kind == "budget" and info.value.bytes_left == 40
    b.refund(20, day)  # either process may give back what was not drawn
    assert a.snapshot()["bytes_left"] == 60
    clock.advance(20)  # past midnight: a fresh budget; yesterday's refund is not carried over
    assert b.snapshot()["bytes_left"] == 100
    a.refund(50, day)
    assert a.snapshot()["bytes_today"] == 0
    clock.advance(-DAY)  # a clock that jumps back never gives a day's bytes twice
    b.admit(0, 30)
    assert a.snapshot()["bytes_today"] == 30


def test_state_file_is_named_by_a_hash_and_holds_no_secret(
        tmp_path: Path, start_server: Start, make_source: Make) -> None:
    server = start_server(api_key=API_KEY)
    source = make_source(server.address, api_key=API_KEY, daily_byte_budget=10_000,
                         quota_state_dir=str(tmp_path / "q"))
    source.get_random_bytes(100)
    (state,) = (tmp_path / "q").glob("*.json")
    text = state.read_text()
    key_hash = hashlib.sha256(API_KEY.encode()).hexdigest()
    for secret in (API_KEY, key_hash):
        assert secret not in text and secret not in state.name
    identity = server_identity(server.address, "/qr_entropy.EntropyService/GetEntropy", API_KEY)
    assert state.name == f"{identity[:32]}.json"
    assert json.loads(text)["bytes"] == 100
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    # Another key is another account: its own file, its own budget.
    assert server_identity(server.address, "/a.B/C", API_KEY) != server_identity(
        server.address, "/a.B/C", API_KEY + "x")


def test_a_corrupt_state_file_is_replaced_and_logged_once(
        tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="qr_sampler.entropy._quota")
    ledger = _ledger(tmp_path, clock, limit=5, budget=1_000)
    ledger.admit(1, 100)
    path = ledger.path
    assert path is not None
    for garbage in ("{not json", '{"schema": 99}', '{"schema": 1, "day": "x"}'):
        path.write_text(garbage)
        clock.advance(1)
        ledger.admit(1, 100)  # served from the last state this process saw, not from zero
    assert json.loads(path.read_text())["bytes"] == 400
    assert len(caplog.records) == 1 and "unreadable" in caplog.records[0].getMessage()
    path.unlink()  # a missing file is a fresh state for a newcomer ...
    newcomer = _ledger(tmp_path, clock, limit=5, budget=1_000)
    assert newcomer.snapshot()["bytes_today"] == 0
    newcomer.admit(1, 1)
    assert path.is_file()


def test_an_unusable_state_folder_falls_back_to_this_process_and_says_so_once(
        tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="qr_sampler.entropy._quota")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    ledger = _ledger(blocker / "quota", clock, limit=2)
    ledger.admit(1, 0)
    ledger.admit(1, 0)
    with pytest.raises(QuotaRefused):
        ledger.admit(1, 0)  # the limit still holds, in this process
    assert not ledger.shared
    assert len(caplog.records) == 1 and "this process only" in caplog.records[0].getMessage()


def test_the_client_reports_the_shared_quota_in_health(
        tmp_path: Path, clock: FakeClock, start_server: Start, make_source: Make) -> None:
    server = start_server()
    folder = str(tmp_path / "shared")
    one = make_source(server.address, rate_limit_per_min=5, daily_byte_budget=1_000,
                      quota_state_dir=folder, clock=clock)
    two = make_source(server.address, rate_limit_per_min=5, daily_byte_budget=1_000,
                      quota_state_dir=folder, clock=clock)
    one.get_random_bytes(300)
    two.get_random_bytes(200)
    for source in (one, two):
        health = source.health()
        assert health["quota_calls_left"] == 3 and health["quota_bytes_left_today"] == 500
        assert health["calls_in_last_minute"] == 2 and health["quota_shared"] is True
    with pytest.raises(EntropyBudgetExhaustedError) as info:
        one.get_random_bytes(600)
    assert info.value.kind == "budget" and "shared by the processes" in str(info.value)
    unlimited = make_source(server.address)
    assert unlimited.health()["quota_calls_left"] is None
    assert unlimited.health()["quota_bytes_left_today"] is None


def test_the_default_state_folder_follows_xdg() -> None:
    assert default_state_dir({"XDG_STATE_HOME": "/srv/state"}) == Path("/srv/state/qrs/quota")
    assert default_state_dir({}) == Path.home() / ".local/state/qrs/quota"
    assert default_state_dir({"XDG_STATE_HOME": "relative"}) == (
        Path.home() / ".local/state/qrs/quota")  # the spec ignores relative paths
