"""The API key never shows: not in logs, exception messages or tracebacks, repr or health."""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable

import grpc
import pytest

from qr_sampler.entropy._grpc_config import GrpcClientConfig
from qr_sampler.entropy.fallback import FallbackEntropySource
from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource
from qr_sampler.entropy.system import SystemEntropySource
from qr_sampler.errors import EntropyError
from qr_sampler.proto.entropy_service_pb2 import EntropyRequest, EntropyResponse
from qr_sampler.server import EntropyServer
from tests.sampler.entropy.grpc_test_support import API_KEY, FakeClock, RawServer

Start = Callable[..., EntropyServer]
Make = Callable[..., QuantumGrpcEntropySource]
StartRaw = Callable[..., RawServer]


def test_api_key_never_appears_anywhere(
        clock: FakeClock, start_server: Start, make_source: Make, raw_server: StartRaw,
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level, the server's included
    seen: list[str] = []  # every text a user or an operator could see
    raised: list[BaseException] = []

    def attempt(source: object, n: int = 64) -> None:
        try:
            source.get_random_bytes_batch([n])  # type: ignore[attr-defined]
        except EntropyError as exc:
            raised.append(exc)

    # 1. Accepted: the right key, every mode.
    right = start_server(api_key=API_KEY)
    for mode in ("unary", "server_streaming", "bidi_streaming"):
        attempt(make_source(right.address, mode=mode, api_key=API_KEY))
    assert right.requests_served == 3
    # 2. Rejected: a server expecting another key (PERMISSION_DENIED), repeatedly, so the
    #    circuit breaker opens and logs, and the fallback logs.
    other = start_server(api_key="some-other-key")
    wrong = make_source(other.address, mode="bidi_streaming", api_key=API_KEY, clock=clock)
    fallback = FallbackEntropySource(wrong, SystemEntropySource())
    for _ in range(5):
        seen.append(fallback.get_random_bytes_batch([64]).fallback_reason)
    attempt(wrong)
    # 3. A hostile server that echoes the key it received into its error details.
    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        sent = dict(context.invocation_metadata()).get("api-key", "")
        context.abort(grpc.StatusCode.INTERNAL, f"bad key {sent!s}")
        return b""

    hostile = raw_server(unary=echo)
    echoing = make_source(hostile.address, api_key=API_KEY, retry_count=1)
    attempt(echoing)
    assert hostile.requests  # the key was sent, so the redaction below is what is tested
    # 4. Budget and rate-limit refusals.
    budgeted = make_source(right.address, api_key=API_KEY, daily_byte_budget=10,
                           rate_limit_per_min=1, clock=clock)
    attempt(budgeted, 100)
    attempt(budgeted, 5)
    attempt(budgeted, 5)

    assert len(raised) >= 4
    sources = [wrong, echoing, budgeted]
    for exc in raised:
        seen += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for source in sources:
        seen += [repr(source), json.dumps(source.health()), repr(source.config)]
    seen += [repr(GrpcClientConfig(api_key=wrong.config.api_key))]
    formatter = logging.Formatter("%(message)s")
    seen += [formatter.format(record) for record in caplog.records]
    out, err = capfd.readouterr()
    seen += [out, err]

    assert any("PERMISSION_DENIED" in text for text in seen)
    assert any("****" in text for text in seen)  # the echoed key was redacted, not dropped
    assert any("circuit breaker opened" in r.getMessage() for r in caplog.records)
    leaks = [text for text in seen if API_KEY in text]
    assert leaks == []
    assert all(source.health()["authenticated"] is True for source in sources)


def test_the_key_is_sent_in_the_configured_lowercase_header(raw_server: StartRaw,
                                                            make_source: Make) -> None:
    headers: list[dict[str, str | bytes]] = []

    def record(request: bytes, context: grpc.ServicerContext) -> bytes:
        headers.append(dict(context.invocation_metadata()))
        n = EntropyRequest.FromString(request).bytes_needed
        return EntropyResponse(data=os.urandom(n)).SerializeToString()

    server = raw_server(unary=record)
    make_source(server.address, api_key=API_KEY, api_key_header="x-qrng-token").get_random_bytes(1)
    make_source(server.address).get_random_bytes(1)
    assert headers[0]["x-qrng-token"] == API_KEY
    assert "x-qrng-token" not in headers[1] and "api-key" not in headers[1]
