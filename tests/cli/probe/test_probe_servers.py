"""``run_probe`` against real loopback servers: the reference server in its variants, the
qrng-style server from another .proto, raw servers that misbehave on purpose."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from pydantic import SecretStr

from qr_sampler.server import EntropyServer
from qrs_cli.probe import ProbeOptions, ProbeReport, ProbeTarget, run_probe
from tests.cli.probe.conftest import released_port
from tests.sampler.entropy.grpc_test_support import (
    API_KEY,
    QRNG_CAP,
    QRNG_HEADER,
    QRNG_METHOD,
    QrngServer,
    RawServer,
)

FAST = ProbeOptions(total=8)
StartServer = Callable[..., EntropyServer]


def probe(address: str, options: ProbeOptions = FAST, **target: Any) -> ProbeReport:
    if isinstance(target.get("api_key"), str):
        target["api_key"] = SecretStr(target["api_key"])
    target.setdefault("rpc_timeout_s", 3.0)
    target.setdefault("connect_timeout_s", 3.0)
    return run_probe(ProbeTarget(address=address, **target), options)


def statuses(report: ProbeReport) -> dict[str, str]:
    return {s.name: s.status for s in report.stages}


def test_the_reference_server_passes_every_stage(start_server: StartServer) -> None:
    server = start_server()
    report = probe(server.address, ProbeOptions(total=8, limits=True))
    assert report.exit_code == 0, report.to_dict()
    assert statuses(report) == {
        "connect": "ok", "tls": "skipped", "health": "ok", "reflection": "ok", "auth": "ok",
        "shape": "ok", "streaming": "ok", "limits": "ok", "latency": "ok", "randomness": "ok",
        "budget": "ok"}
    assert "no cap up to 1,048,576 bytes" in report.stage("limits").summary
    latency = report.stage("latency").details
    assert latency["ok"] == 8 and latency["warmup_fetches"] == 2 and latency["errors"] == {}
    assert report.stage("randomness").details["bytes_tested"] >= 8 * 20_480
    # Every entropy request the server served was counted (the rest are health/reflection).
    assert 0 < server.requests_served <= report.calls


@pytest.mark.parametrize("mode", ["server_streaming", "bidi_streaming"])
def test_streaming_modes_are_probed_in_the_profiles_mode(start_server: StartServer,
                                                         mode: str) -> None:
    report = probe(start_server().address, mode=mode)
    assert report.exit_code == 0, report.to_dict()
    assert report.stage("streaming").details["mode"] == mode
    assert report.stage("latency").details["mode"] == mode


@pytest.mark.parametrize("mode", ["unary", "bidi_streaming"])
def test_concurrent_latency_runs_every_fetch(start_server: StartServer, mode: str) -> None:
    report = probe(start_server().address, ProbeOptions(total=24, concurrency=4), mode=mode)
    latency = report.stage("latency").details
    assert report.exit_code == 0 and latency["ok"] == 24 and latency["concurrency"] == 4
    assert latency["warmup_fetches"] == 8  # two per worker, not measured


def test_a_unix_socket_server_passes(start_server: StartServer) -> None:
    with tempfile.TemporaryDirectory(prefix="qrs-", dir="/tmp") as folder:
        server = start_server(address=f"unix://{folder}/e.sock")
        report = probe(server.address)
        assert report.exit_code == 0, report.to_dict()
        assert "unix socket" in report.stage("connect").summary


def test_auth_enforced_and_key_accepted(start_server: StartServer) -> None:
    server = start_server(api_key=API_KEY)
    report = probe(server.address, api_key=API_KEY)
    auth = report.stage("auth")
    assert report.exit_code == 0 and auth.status == "ok", report.to_dict()
    assert (auth.details["without_key"], auth.details["wrong_key"],
            auth.details["with_key"]) == ("UNAUTHENTICATED", "PERMISSION_DENIED", "OK")


def test_missing_key_is_named_and_exits_5(start_server: StartServer) -> None:
    report = probe(start_server(api_key=API_KEY).address)
    auth = report.stage("auth")
    assert report.exit_code == 5 and auth.status == "fail"
    assert auth.summary.startswith("missing API key") and "UNAUTHENTICATED" in auth.summary
    assert statuses(report)["latency"] == "skipped"


def test_wrong_key_is_named_and_exits_5(start_server: StartServer) -> None:
    report = probe(start_server(api_key=API_KEY).address, api_key="not-the-key-1234")
    auth = report.stage("auth")
    assert report.exit_code == 5
    assert auth.summary.startswith("wrong API key") and "PERMISSION_DENIED" in auth.summary


def test_key_in_the_wrong_header_is_named(start_server: StartServer) -> None:
    report = probe(start_server(api_key=API_KEY).address, api_key=API_KEY,
                   api_key_header="x-api-key")
    assert report.exit_code == 5
    assert "'x-api-key' header" in report.stage("auth").summary
    assert "QR_GRPC_API_KEY_HEADER" in report.stage("auth").hint


def test_a_server_that_does_not_enforce_auth_is_a_warning(start_server: StartServer) -> None:
    report = probe(start_server().address, api_key=API_KEY)
    auth = report.stage("auth")
    assert auth.status == "warn" and "does not enforce auth" in auth.summary
    assert report.exit_code == 0


def test_byte_cap_and_rate_limit_are_respected_and_discovered(start_server: StartServer) -> None:
    server = start_server(max_bytes_per_request=QRNG_CAP, rate_limit_per_min=25)
    report = probe(server.address, ProbeOptions(total=50, limits=True),
                   max_bytes_per_request=QRNG_CAP, rate_limit_per_min=25)
    assert report.exit_code == 0, report.to_dict()
    limits = report.stage("limits")
    assert limits.details["largest_accepted"] == QRNG_CAP
    # shape already saw the cap accepted: one call (cap + 1, refused) settles it.
    assert limits.details["smallest_refused"] == QRNG_CAP + 1 and limits.details["calls"] == 1
    # The probe stayed under the limit: the server never answered RESOURCE_EXHAUSTED.
    assert report.calls <= 25
    assert "RESOURCE_EXHAUSTED" not in server.stats.summary()["rejected"]
    latency = report.stage("latency")
    assert latency.details["calls_per_fetch"] == 2 and latency.details["ok"] < 50
    assert "shortened to fit the call budget" in latency.summary
    assert "rate limit" in report.stage("budget").summary  # 25/min ÷ 2 calls per token


def test_an_unconfigured_cap_fails_shape_and_limits_finds_it(start_server: StartServer) -> None:
    report = probe(start_server(max_bytes_per_request=QRNG_CAP).address,
                   ProbeOptions(total=4, limits=True))
    shape = report.stage("shape")
    assert report.exit_code == 6 and shape.status == "fail"
    assert "refused a request of 20,480 bytes" in shape.summary
    assert "QR_GRPC_MAX_BYTES_PER_REQUEST" in shape.hint
    limits = report.stage("limits")
    assert limits.details["largest_accepted"] == QRNG_CAP and limits.details["calls"] <= 20
    assert f"QR_GRPC_MAX_BYTES_PER_REQUEST={QRNG_CAP}" in limits.hint


def test_the_daily_budget_share_is_never_exceeded(start_server: StartServer) -> None:
    budget = 20_000_000  # the probe may draw 1 %: 200,000 bytes ≈ 9 fetches of 20,480
    report = probe(start_server().address, ProbeOptions(total=50), daily_byte_budget=budget)
    assert report.exit_code == 0
    assert report.bytes_received <= budget // 100
    assert report.stage("latency").details["ok"] < 50


def test_constant_bytes_are_flagged_and_strict_exits_8(start_server: StartServer) -> None:
    server = start_server(source=bytes)  # bytes(n): n zero bytes
    report = probe(server.address)
    randomness = report.stage("randomness")
    assert randomness.status == "warn" and "SUSPECT" in randomness.summary
    assert {"mean", "chi2", "monobit", "runs", "repeats"} <= set(randomness.details["failed"])
    assert report.exit_code == 0
    strict = probe(server.address, ProbeOptions(total=8, strict=True))
    assert strict.exit_code == 8


def test_wrong_method_path_exits_6(start_server: StartServer) -> None:
    report = probe(start_server().address, method_path="/qr_entropy.EntropyService/GetEntrpy")
    assert report.exit_code == 6
    for stage in ("reflection", "shape"):
        assert "method not implemented: check QR_GRPC_METHOD_PATH" in report.stage(stage).summary
    assert "/qr_entropy.EntropyService/GetEntropy" in report.stage("shape").hint


def test_wrong_stream_path_in_bidi_mode_exits_7(start_server: StartServer) -> None:
    report = probe(start_server().address, mode="bidi_streaming",
                   stream_method_path="/qr_entropy.EntropyService/Stream")
    assert report.exit_code == 7
    assert "check QR_GRPC_STREAM_METHOD_PATH" in report.stage("streaming").summary


def test_unreachable_port_exits_3_within_the_connect_timeout() -> None:
    start = time.monotonic()
    report = probe(f"127.0.0.1:{released_port()}", connect_timeout_s=30.0)
    assert report.exit_code == 3 and time.monotonic() - start < 15  # refused: not the timeout
    assert "connection refused" in report.stage("connect").summary
    assert report.calls == 0
    assert all(s.status == "skipped" for s in report.stages[1:-1])


def test_the_qrng_server_from_another_proto_passes(qrng_server: QrngServer) -> None:
    report = probe(qrng_server.address, method_path=QRNG_METHOD, stream_method_path="",
                   api_key=API_KEY, api_key_header=QRNG_HEADER, max_bytes_per_request=QRNG_CAP)
    assert report.exit_code == 0, report.to_dict()
    states = statuses(report)
    assert (states["health"], states["reflection"], states["streaming"]) == ("skipped",) * 3
    assert states["auth"] == states["shape"] == states["latency"] == "ok"
    assert report.stage("latency").details["calls_per_fetch"] == 2  # 20,480 = 13,312 + 7,168


def test_a_short_reply_is_a_shape_failure(raw_server: Callable[..., RawServer]) -> None:
    server = raw_server(unary=lambda request, ctx: b"\x0a\x04abcd")
    report = probe(server.address, stream_method_path="")
    assert report.exit_code == 6
    assert "the server returned 4 bytes for a request of" in report.stage("shape").summary


def test_a_key_echoed_by_the_server_is_redacted(raw_server: Callable[..., RawServer]) -> None:
    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        sent = dict(context.invocation_metadata()).get("api-key", "none")
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad key {sent!s}")
        raise AssertionError("unreachable")

    report = probe(raw_server(unary=echo).address, api_key=API_KEY, stream_method_path="",
                   extra_headers=(("x-tenant", SecretStr("tenant-secret-42")),))
    text = str(report.to_dict())
    assert report.exit_code == 6 and "bad key ****" in text
    assert API_KEY not in text and "tenant-secret-42" not in text
