"""Stage 11, budget: how many tokens per second and per day this server can feed the sampler.

Every token needs ``sample_count`` bytes, asked for in ``ceil(sample_count / chunk)`` calls. So:

- the rate limit allows ``rate_limit_per_min / 60 / calls_per_token`` tokens/s;
- the measured throughput (latency stage) is what the server actually delivered;
- the daily byte budget allows ``daily_byte_budget // sample_count`` tokens/day.

The tokens/s the server can feed is the smallest of the first two that is known; tokens/day the
smaller of that rate over 24 h and the daily budget. Pure arithmetic: no call is made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from qrs_cli.probe.context import (
    ProbeContext,
    StageOutcome,
    chunk_size,
    ok,
    size,
    warn,
)

DAY_S = 86_400
#: Below this many tokens/s the limits, not the model, set the pace of generation.
SLOW_TOKENS_PER_S = 1.0


@dataclass(frozen=True)
class Capacity:
    """What the limits and the measured throughput allow. None = no limit of that kind."""

    sample_count: int
    chunk_bytes: int
    calls_per_token: int
    by_rate_limit_per_s: float | None
    measured_per_s: float | None
    by_daily_budget_per_day: int | None
    tokens_per_s: float | None
    tokens_per_day: float | None
    limited_by: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def capacity(sample_count: int, chunk_bytes: int, rate_limit_per_min: int,
             daily_byte_budget: int, measured_fetches_per_s: float | None) -> Capacity:
    """The tokens/s and tokens/day the limits and the measured throughput allow."""
    per_token = -(-sample_count // chunk_bytes)
    by_rate = rate_limit_per_min / 60.0 / per_token if rate_limit_per_min else None
    by_day = daily_byte_budget // sample_count if daily_byte_budget else None
    candidates = [(v, why) for v, why in ((by_rate, "rate limit"),
                                          (measured_fetches_per_s, "measured throughput"))
                  if v is not None]
    per_s, why = min(candidates) if candidates else (None, "nothing")
    per_day: float | None = per_s * DAY_S if per_s is not None else None
    if by_day is not None and (per_day is None or by_day < per_day):
        per_day, why_day = float(by_day), "daily budget"
    else:
        why_day = why
    limited = why if why == why_day else f"{why} (per second), {why_day} (per day)"
    return Capacity(sample_count, chunk_bytes, per_token, by_rate, measured_fetches_per_s, by_day,
                    per_s, per_day, limited)


def run_budget(ctx: ProbeContext) -> StageOutcome:
    """Tokens/s and tokens/day from the profile's limits and the latency stage's throughput."""
    t = ctx.target
    cap = capacity(t.sample_count, chunk_size(t), t.rate_limit_per_min, t.daily_byte_budget,
                   ctx.fetches_per_s)
    details = cap.to_dict()
    details["discovered_cap"] = ctx.discovered_cap
    if cap.by_rate_limit_per_s is None and cap.by_daily_budget_per_day is None:
        measured = (f"; the server delivered ≈ {_num(cap.measured_per_s)} tokens/s to this "
                    "probe" if cap.measured_per_s else "")
        return ok(f"the profile sets no rate limit or daily budget{measured}", details)
    parts = []
    if cap.tokens_per_s is not None:
        parts.append(f"≈ {_num(cap.tokens_per_s)} tokens/s")
    if cap.tokens_per_day is not None:
        parts.append(f"{_num(cap.tokens_per_day)} tokens/day")
    per_call = (f"{cap.calls_per_token} calls of ≤ {size(cap.chunk_bytes)}"
                if cap.calls_per_token > 1 else "1 call")
    summary = (f"{', '.join(parts)} (limited by {cap.limited_by}; {size(t.sample_count)} "
               f"per token = {per_call})")
    if cap.tokens_per_s is not None and cap.tokens_per_s < SLOW_TOKENS_PER_S:
        return warn(summary, details,
                    "the limits, not the model, set the pace: a lower QR_SAMPLE_COUNT or a "
                    "higher QR_GRPC_MAX_BYTES_PER_REQUEST needs fewer calls per token")
    return ok(summary, details)


def _num(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
