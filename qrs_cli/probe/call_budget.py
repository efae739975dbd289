"""The probe's call budget: every RPC it makes is counted here first, and refused if it would
break the profile's limits.

Guarantees, whatever the stages ask for:

- no window of 60 s holds more calls than ``QR_GRPC_RATE_LIMIT_PER_MIN`` (every RPC counts,
  health and reflection included, and every message on a stream) — the same strict sliding
  window the sampler's client uses, so a server counting per minute never refuses the probe;
- the probe draws at most :data:`DAILY_BUDGET_SHARE` of ``QR_GRPC_DAILY_BYTE_BUDGET`` (bytes are
  reserved before a call and refunded if it delivers fewer), leaving the rest of the day's bytes
  to the sampler;
- it never waits for a permit: a stage that cannot have one is cut short or skipped, and says so.

Thread-safe: the latency stage calls from several threads.
"""

from __future__ import annotations

import threading
from typing import Any

from qr_sampler.entropy._rate_limit import SlidingWindowLimiter

#: Share of the profile's daily byte budget the probe may draw (1 %).
DAILY_BUDGET_SHARE = 0.01


class BudgetSpent(Exception):
    """Raised by :meth:`CallBudget.take` when a call would exceed the limits; ``reason`` says
    which limit, naming its ``QR_`` key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallBudget:
    """Counts calls and bytes; refuses a call that would break the rate limit or byte allowance."""

    def __init__(self, rate_limit_per_min: int = 0, daily_byte_budget: int = 0) -> None:
        self.rate_limit_per_min = rate_limit_per_min
        self.bytes_limited = daily_byte_budget > 0
        self.byte_allowance = int(daily_byte_budget * DAILY_BUDGET_SHARE)
        self._daily_byte_budget = daily_byte_budget
        self._limiter = SlidingWindowLimiter(rate_limit_per_min)
        self._lock = threading.Lock()
        self.calls = 0
        self.bytes_reserved = 0
        self.bytes_received = 0
        self.refusals = 0

    def take(self, calls: int = 1, nbytes: int = 0) -> None:
        """Reserve ``calls`` permits and ``nbytes`` bytes, all or nothing; BudgetSpent if not."""
        with self._lock:
            if self.bytes_limited and self.bytes_reserved + nbytes > self.byte_allowance:
                self.refusals += 1
                raise BudgetSpent(
                    f"the probe may draw {self.byte_allowance:,} bytes "
                    f"({DAILY_BUDGET_SHARE:.0%} of QR_GRPC_DAILY_BYTE_BUDGET="
                    f"{self._daily_byte_budget}) and has reserved {self.bytes_reserved:,}")
            if self._limiter.try_acquire(calls) != 0.0:
                self.refusals += 1
                raise BudgetSpent(
                    f"QR_GRPC_RATE_LIMIT_PER_MIN={self.rate_limit_per_min} allows no more calls "
                    "this minute")
            self.calls += calls
            self.bytes_reserved += nbytes

    def settle(self, reserved: int, received: int) -> None:
        """Record ``received`` bytes of a call that reserved ``reserved``; refund the rest."""
        with self._lock:
            self.bytes_received += received
            self.bytes_reserved -= max(reserved - received, 0)

    def calls_left(self) -> int | None:
        """Permits free in the current window; None when there is no rate limit."""
        if not self.rate_limit_per_min:
            return None
        return max(self.rate_limit_per_min - self._limiter.in_window(), 0)

    def bytes_left(self) -> int | None:
        """Bytes the probe may still draw; None when there is no daily budget."""
        if not self.bytes_limited:
            return None
        with self._lock:
            return max(self.byte_allowance - self.bytes_reserved, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "bytes_received": self.bytes_received,
            "rate_limit_per_min": self.rate_limit_per_min,
            "byte_allowance": self.byte_allowance if self.bytes_limited else None,
            "refusals": self.refusals,
        }
