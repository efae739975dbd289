"""``qrs probe`` against metered servers: a call count that fits the rate-limit headroom (shared
with a running sampler on this host), ``--calls``, RESOURCE_EXHAUSTED as exit 9 with a true
hint, the ``--max-bytes-per-request`` / ``--sample-count`` flags, and marked percentiles.

Every server is the real reference server on 127.0.0.1 with its own rate limit; the quota
ledger lives in the test's private HOME (``~/.local/state/qrs/quota``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from qr_sampler.server import EntropyServer
from qrs_cli.probe.types import EXIT_QUOTA
from tests.cli.conftest import Outcome, assert_one_line_error
from tests.cli.probe.conftest import grpc_profile

Qrs = Callable[..., Outcome]
StartServer = Callable[..., EntropyServer]


@pytest.fixture(autouse=True)
def _quota_in_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)


def report(outcome: Outcome) -> dict[str, object]:
    data = json.loads(outcome.out)
    assert isinstance(data, dict)
    return data


def calls_made(outcome: Outcome) -> int:
    budget = report(outcome)["call_budget"]
    assert isinstance(budget, dict)
    return int(budget["calls"])


def test_default_call_count_fits_the_rate_limit_and_is_printed_first(
    project: Path, qrs: Qrs, start_server: StartServer
) -> None:
    server = start_server(rate_limit_per_min=500)
    grpc_profile(project, "metered", server.address, "QR_GRPC_RATE_LIMIT_PER_MIN=500\n"
                                                     "QR_SAMPLE_COUNT=4096\n")
    outcome = qrs("probe", "metered", "--json")
    assert outcome.code == 0, outcome
    first = outcome.err.splitlines()[0]
    assert "calls: at most 50 (10 % of QR_GRPC_RATE_LIMIT_PER_MIN=500" in first
    assert "500 free this minute on this host" in first
    assert 0 < calls_made(outcome) <= 50


def test_repeated_probes_share_the_minute_and_never_hit_the_server_limit(
    project: Path, qrs: Qrs, start_server: StartServer
) -> None:
    """Four default probes in one minute against a 60/min server: each plans only what is
    still free, the server never refuses, and the minute's total stays within its limit."""
    server = start_server(rate_limit_per_min=60)
    grpc_profile(project, "tight", server.address, "QR_GRPC_RATE_LIMIT_PER_MIN=60\n"
                                                   "QR_SAMPLE_COUNT=1024\n")
    total = 0
    for _ in range(4):
        outcome = qrs("probe", "tight", "--json")
        assert outcome.code == 0, outcome
        assert report(outcome)["quota_refused"] == ""
        total += calls_made(outcome)
    assert total <= 60
    assert not server.stats.rejected, server.stats.rejected
    more = qrs("probe", "tight", "--calls", "30", "--json")  # asks for more than is free
    assert more.code == 0, more
    assert f"{60 - total} free this minute" in more.err
    total += calls_made(more)
    assert total <= 60  # it shortened itself to what was free
    spent = qrs("probe", "tight", "--calls", "30")
    assert "used up for this minute on this host" in spent.out  # skipped, never sent
    assert not server.stats.rejected


def test_a_running_sampler_on_this_host_shrinks_the_probe(
    project: Path, qrs: Qrs, start_server: StartServer
) -> None:
    from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource
    from qr_sampler.settings import settings_from_mapping

    server = start_server(rate_limit_per_min=60)
    values = {"QR_ENTROPY_SOURCE_TYPE": "quantum_grpc", "QR_GRPC_SERVER_ADDRESS": server.address,
              "QR_GRPC_RATE_LIMIT_PER_MIN": "60", "QR_SAMPLE_COUNT": "1024"}
    grpc_profile(project, "shared", server.address,
                 "QR_GRPC_RATE_LIMIT_PER_MIN=60\nQR_SAMPLE_COUNT=1024\n")
    sampler = QuantumGrpcEntropySource.from_settings(settings_from_mapping(values))
    try:
        for _ in range(55):  # the engine's fetches, through the host's quota ledger
            sampler.fetch_batch((1024,))
    finally:
        sampler.close()
    outcome = qrs("probe", "shared", "--json")
    assert "calls: at most 5 " in outcome.err and "5 free this minute" in outcome.err
    assert calls_made(outcome) <= 5
    assert not server.stats.rejected


def test_calls_caps_the_run_and_thin_percentiles_are_marked(
    project: Path, qrs: Qrs, start_server: StartServer
) -> None:
    server = start_server()
    grpc_profile(project, "free", server.address, "QR_SAMPLE_COUNT=1024\n")
    outcome = qrs("probe", "free", "--calls", "16", "--json")
    assert outcome.code == 0, outcome
    assert "calls: at most 16 (--calls" in outcome.err
    assert calls_made(outcome) <= 16
    stages = {s["name"]: s for s in report(outcome)["stages"]}  # type: ignore[union-attr]
    latency = stages["latency"]
    assert latency["status"] == "ok"
    assert latency["details"]["unreliable_percentiles"] == ["p90", "p99"]
    assert "p99" in latency["summary"] and "*" in latency["summary"]
    assert "needs p90 ≥ 10, p99 ≥ 100" in latency["summary"]
    uncapped = qrs("probe", "free", "--json")
    assert "no cap (no QR_GRPC_RATE_LIMIT_PER_MIN" in uncapped.err


def test_calls_above_the_rate_limit_is_a_usage_error(
    project: Path, qrs: Qrs, start_server: StartServer
) -> None:
    server = start_server()
    grpc_profile(project, "metered", server.address, "QR_GRPC_RATE_LIMIT_PER_MIN=100\n")
    outcome = qrs("probe", "metered", "--calls", "101")
    assert_one_line_error(outcome, 2, "--calls 101 is more than QR_GRPC_RATE_LIMIT_PER_MIN=100")
    assert server.requests_served == 0


def test_resource_exhausted_is_exit_9_with_a_true_hint(
    project: Path, qrs: Qrs, start_server: StartServer
) -> None:
    """The profile's limit is set (500/min) but the server allows only 3: the hint must not
    tell the user to set the limit that is already set, and the probe stops calling."""
    server = start_server(rate_limit_per_min=3)
    grpc_profile(project, "liar", server.address, "QR_GRPC_RATE_LIMIT_PER_MIN=500\n"
                                                  "QR_SAMPLE_COUNT=1024\n")
    outcome = qrs("probe", "liar")
    assert_one_line_error(outcome, EXIT_QUOTA, "RESOURCE_EXHAUSTED")
    hint = next(ln for ln in outcome.err.splitlines() if ln.startswith("Hint: "))
    assert "stayed under QR_GRPC_RATE_LIMIT_PER_MIN=500" in hint
    assert "--calls" in hint and "set QR_GRPC_RATE_LIMIT_PER_MIN to" not in hint
    assert sum(server.stats.rejected.values()) == 1  # nothing after the first refusal
    assert "Traceback" not in outcome.text


def test_resource_exhausted_without_a_limit_says_to_set_one(
    project: Path, qrs: Qrs, start_server: StartServer
) -> None:
    server = start_server(rate_limit_per_min=3)
    grpc_profile(project, "nolimit", server.address, "QR_SAMPLE_COUNT=1024\n")
    outcome = qrs("probe", "nolimit", "--json")
    assert outcome.code == EXIT_QUOTA, outcome
    data = report(outcome)
    assert data["exit_code"] == EXIT_QUOTA and data["quota_refused"]
    hint = next(ln for ln in outcome.err.splitlines() if ln.startswith("Hint: "))
    assert "set QR_GRPC_RATE_LIMIT_PER_MIN" in hint


def test_max_bytes_and_sample_count_flags_override_the_profile(
    project: Path, qrs: Qrs, start_server: StartServer
) -> None:
    server = start_server(max_bytes_per_request=1000)
    grpc_profile(project, "capped", server.address)  # no cap, 20,480 bytes a token
    refused = qrs("probe", "capped", "--total", "3")
    assert refused.code == 6, refused  # shape: the server refuses 20,480 bytes at once
    outcome = qrs("probe", "capped", "--max-bytes-per-request", "1000", "--sample-count", "3000",
                  "--total", "3", "--json")
    assert outcome.code == 0, outcome
    target = report(outcome)["target"]
    assert isinstance(target, dict)
    assert (target["max_bytes_per_request"], target["sample_count"]) == (1000, 3000)
    bad = qrs("probe", "capped", "--sample-count", "0")
    assert bad.code == 2 and "Traceback" not in bad.text
