"""The probe's call budget: every RPC it makes is counted here first, and refused if it would
break the profile's limits.

Guarantees, whatever the stages ask for:

- no window of 60 s holds more calls than ``QR_GRPC_RATE_LIMIT_PER_MIN`` (every RPC counts,
  health and reflection included, and every message on a stream) — the same strict sliding
  window the sampler's client uses, so a server counting per minute never refuses the probe;
- the calls and bytes also go through the host's shared quota ledger (the one the sampler's
  client uses, ``qr_sampler.entropy._quota``), so a probe and a running vLLM on this host that
  use the same server and key never overspend its limits together, and repeated probes within a
  minute see what the earlier ones used;
- at most ``max_calls`` calls (``--calls``; by default a share of the rate limit that fits the
  calls still free this minute, see :func:`plan_calls`);
- the probe draws at most :data:`DAILY_BUDGET_SHARE` of ``QR_GRPC_DAILY_BYTE_BUDGET`` (bytes are
  reserved before a call and refunded if it delivers fewer), leaving the rest of the day's bytes
  to the sampler;
- once the server answers RESOURCE_EXHAUSTED, no further call is made (hammering a server that
  already refuses only makes it worse);
- it never waits for a permit: a stage that cannot have one is cut short or skipped, and says so.

Thread-safe: the latency stage calls from several threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qr_sampler.entropy._rate_limit import SlidingWindowLimiter

if TYPE_CHECKING:
    from qr_sampler.entropy._quota import QuotaLedger
    from qrs_cli.probe.types import ProbeTarget

#: Share of the profile's daily byte budget the probe may draw (1 %).
DAILY_BUDGET_SHARE = 0.01
#: Share of the rate limit a default probe may use: one probe leaves the sampler 90 % of the
#: minute, and a probe repeated within the minute plans only the calls still free.
DEFAULT_RATE_SHARE = 0.1
#: The fewest calls a default probe plans (when the minute has them free): enough for every
#: stage but latency, and a few latency fetches.
MIN_DEFAULT_CALLS = 12


@dataclass(frozen=True)
class CallPlan:
    """How many calls a probe may make, and why (printed before the first call).

    ``max_calls`` None = no cap (no rate limit and no ``--calls``); ``free_now`` the calls still
    free in the current minute on this host (None when there is no rate limit).
    """

    max_calls: int | None
    free_now: int | None
    rate_limit_per_min: int
    requested: bool

    def describe(self) -> str:
        if self.max_calls is None:
            return "calls: no cap (no QR_GRPC_RATE_LIMIT_PER_MIN; --calls N sets one)"
        if self.requested:
            why = "--calls"
        else:
            why = (f"{DEFAULT_RATE_SHARE * 100:.0f} % of QR_GRPC_RATE_LIMIT_PER_MIN="
                   f"{self.rate_limit_per_min}; --calls N changes it")
        free = "" if self.free_now is None else f"; {self.free_now} free this minute on this host"
        return f"calls: at most {self.max_calls} ({why}{free})"

    def to_dict(self) -> dict[str, Any]:
        return {"max_calls": self.max_calls, "free_now": self.free_now,
                "rate_limit_per_min": self.rate_limit_per_min, "requested": self.requested}


def plan_calls(target: ProbeTarget, requested: int | None,
               ledger: QuotaLedger | None) -> CallPlan:
    """The probe's call cap: ``--calls`` when given, else a share of the rate limit that fits
    the calls still free this minute (so repeated probes never run into RESOURCE_EXHAUSTED).

    Raises ProbeError (exit 2) when ``requested`` exceeds the rate limit itself.
    """
    from qrs_cli.probe.errors import ProbeError

    rate = target.rate_limit_per_min
    free: int | None = None
    if rate:
        free = rate
        if ledger is not None:
            left = ledger.snapshot().get("calls_left")
            free = rate if left is None else int(left)
    if requested is not None:
        if requested < 1:
            raise ProbeError(f"--calls {requested}: needs at least 1", "e.g. --calls 20")
        if rate and requested > rate:
            raise ProbeError(
                f"--calls {requested} is more than QR_GRPC_RATE_LIMIT_PER_MIN={rate} allows in "
                "a minute",
                f"ask for at most {rate} calls (the probe never exceeds the rate limit)")
        return CallPlan(requested, free, rate, requested=True)
    if not rate:
        return CallPlan(None, None, 0, requested=False)
    share = min(rate, max(MIN_DEFAULT_CALLS, int(rate * DEFAULT_RATE_SHARE)))
    return CallPlan(min(share, free if free is not None else share), free, rate,
                    requested=False)


def call_plan_for(target: ProbeTarget, requested: int | None) -> CallPlan:
    """:func:`plan_calls` with the host's shared ledger read once (for the line printed before
    the probe starts)."""
    ledger = shared_ledger(target)
    try:
        return plan_calls(target, requested, ledger)
    finally:
        if ledger is not None:
            ledger.close()


def shared_ledger(target: ProbeTarget) -> QuotaLedger | None:
    """The host's quota ledger for ``target``'s server, as the sampler's client opens it (same
    identity: address, the method of the profile's mode, the key); None without limits."""
    if not (target.rate_limit_per_min or target.daily_byte_budget):
        return None
    from pathlib import Path

    from qr_sampler.entropy._quota import QuotaLedger, default_state_dir, server_identity

    folder = target.quota_state_dir
    state_dir = Path(folder).expanduser() if folder else default_state_dir()
    key = target.api_key.get_secret_value()
    path = target.active_method_path
    return QuotaLedger(limit_per_min=target.rate_limit_per_min,
                       daily_bytes=target.daily_byte_budget,
                       identity=server_identity(target.address, path, key),
                       server=f"{target.address} {path}", state_dir=state_dir)


class BudgetSpent(Exception):
    """Raised by :meth:`CallBudget.take` when a call would exceed the limits; ``reason`` says
    which limit, naming its ``QR_`` key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallBudget:
    """Counts calls and bytes; refuses a call that would break the rate limit, the call cap,
    the shared quota or the byte allowance, or that follows the server's RESOURCE_EXHAUSTED."""

    def __init__(self, rate_limit_per_min: int = 0, daily_byte_budget: int = 0, *,
                 max_calls: int | None = None, ledger: QuotaLedger | None = None) -> None:
        self.rate_limit_per_min = rate_limit_per_min
        self.bytes_limited = daily_byte_budget > 0
        self.byte_allowance = int(daily_byte_budget * DAILY_BUDGET_SHARE)
        self.max_calls = max_calls
        self._daily_byte_budget = daily_byte_budget
        self._limiter = SlidingWindowLimiter(rate_limit_per_min)
        self._ledger = ledger
        self._ledger_day: int | None = None
        self._lock = threading.Lock()
        self.calls = 0
        self.bytes_reserved = 0
        self.bytes_received = 0
        self.refusals = 0
        #: The server's RESOURCE_EXHAUSTED details ('' until one arrives).
        self.server_refusal = ""

    def take(self, calls: int = 1, nbytes: int = 0) -> None:
        """Reserve ``calls`` permits and ``nbytes`` bytes, all or nothing; BudgetSpent if not."""
        with self._lock:
            if self.server_refusal:
                self.refusals += 1
                raise BudgetSpent("the server answered RESOURCE_EXHAUSTED: no further calls")
            if self.max_calls is not None and self.calls + calls > self.max_calls:
                self.refusals += 1
                raise BudgetSpent(f"the probe's cap of {self.max_calls} calls is reached "
                                  f"(made {self.calls}; --calls N changes the cap)")
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
            if self._ledger is not None:
                self._admit_shared(calls, nbytes)
            self.calls += calls
            self.bytes_reserved += nbytes

    def _admit_shared(self, calls: int, nbytes: int) -> None:
        from qr_sampler.entropy._quota import QuotaRefused

        assert self._ledger is not None
        try:
            self._ledger_day = self._ledger.admit(calls, nbytes)
        except QuotaRefused as refused:
            self.refusals += 1
            if refused.kind == "budget":
                left = refused.bytes_left
                raise BudgetSpent(
                    f"QR_GRPC_DAILY_BYTE_BUDGET={self._daily_byte_budget}: "
                    f"{'no' if not left else f'{left:,}'} bytes left today on this host "
                    "(shared with the sampler)") from None
            raise BudgetSpent(
                f"QR_GRPC_RATE_LIMIT_PER_MIN={self.rate_limit_per_min} is used up for this "
                "minute on this host (shared with a running vLLM and earlier probes of the "
                "same server)") from None

    def note_server_refusal(self, details: str) -> None:
        """The server answered RESOURCE_EXHAUSTED: every later :meth:`take` is refused."""
        with self._lock:
            self.server_refusal = self.server_refusal or (details or "RESOURCE_EXHAUSTED")

    def settle(self, reserved: int, received: int) -> None:
        """Record ``received`` bytes of a call that reserved ``reserved``; refund the rest."""
        with self._lock:
            self.bytes_received += received
            unused = max(reserved - received, 0)
            self.bytes_reserved -= unused
            day = self._ledger_day
        if unused and self._ledger is not None and day is not None:
            self._ledger.refund(unused, day)

    def calls_left(self) -> int | None:
        """Calls the probe may still make now; None when nothing limits them."""
        left: list[int] = []
        if self.max_calls is not None:
            left.append(max(self.max_calls - self.calls, 0))
        if self.rate_limit_per_min:
            left.append(max(self.rate_limit_per_min - self._limiter.in_window(), 0))
            if self._ledger is not None:
                shared = self._ledger.snapshot().get("calls_left")
                if shared is not None:
                    left.append(int(shared))
        return min(left) if left else None

    def close(self) -> None:
        """Release the shared ledger's lock file (its state stays for the next process)."""
        if self._ledger is not None:
            self._ledger.close()

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
            "max_calls": self.max_calls,
            "shared_quota": self._ledger is not None,
            "refusals": self.refusals,
            "server_refusal": self.server_refusal,
        }
