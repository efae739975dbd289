"""The hand-written protocol encoding (checked against the generated classes) and the call
budget's guarantees."""

from __future__ import annotations

import pytest

from qr_sampler.proto.entropy_service_pb2 import EntropyRequest, EntropyResponse
from qrs_cli.probe.call_budget import BudgetSpent, CallBudget
from qrs_cli.probe.wire import decode_reply, encode_request


@pytest.mark.parametrize(("n", "sequence_id"), [(1, 0), (127, 0), (128, 0), (20_480, 0),
                                                (1 << 20, 7), (13_312, 1 << 40)])
def test_requests_parse_as_the_protocols_request(n: int, sequence_id: int) -> None:
    parsed = EntropyRequest.FromString(encode_request(n, sequence_id))
    assert (parsed.bytes_needed, parsed.sequence_id) == (n, sequence_id)


def test_unary_requests_carry_field_1_only() -> None:
    assert encode_request(300) == b"\x08\xac\x02"


def test_replies_are_read_by_field_number_whatever_else_they_carry() -> None:
    message = EntropyResponse(data=b"abc", sequence_id=9, generation_timestamp_ns=123,
                              device_id="dev").SerializeToString()
    decoded = decode_reply(message + b"\x29" + bytes(8))  # plus an unknown fixed64 field 5
    assert (decoded.data, decoded.sequence_id, decoded.problem) == (b"abc", 9, "")


@pytest.mark.parametrize(("message", "problem"), [
    (b"\x08\x05", "field 1 is a varint"),
    (b"\x10\x05", "no field 1"),
    (b"\x0a\x05ab", "not a valid protobuf"),
    (b"\x0f", "not a valid protobuf"),
])
def test_incompatible_replies_are_named(message: bytes, problem: str) -> None:
    decoded = decode_reply(message)
    assert decoded.data is None and problem in decoded.problem


def test_the_rate_limit_is_never_exceeded_and_calls_are_counted() -> None:
    budget = CallBudget(rate_limit_per_min=5)
    for _ in range(5):
        budget.take(1)
    with pytest.raises(BudgetSpent, match="QR_GRPC_RATE_LIMIT_PER_MIN=5"):
        budget.take(1)
    assert (budget.calls, budget.refusals, budget.calls_left()) == (5, 1, 0)


def test_the_probe_draws_at_most_one_percent_of_the_daily_budget() -> None:
    budget = CallBudget(daily_byte_budget=1_000_000)  # the probe may draw 10,000 bytes
    budget.take(1, 6_000)
    budget.settle(6_000, 2_000)  # a short reply: the unused 4,000 are refunded
    budget.take(1, 8_000)
    with pytest.raises(BudgetSpent, match="QR_GRPC_DAILY_BYTE_BUDGET"):
        budget.take(1, 1)
    assert budget.bytes_left() == 0 and budget.calls == 2


def test_a_tiny_daily_budget_still_limits() -> None:
    budget = CallBudget(daily_byte_budget=50)  # 1 % rounds down to 0 bytes: nothing allowed
    with pytest.raises(BudgetSpent):
        budget.take(1, 1)
    assert CallBudget().bytes_left() is None and CallBudget().calls_left() is None
